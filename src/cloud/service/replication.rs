//! The Replication Service's data endpoints: fetch (what is available now), commit, status,
//! the published schema and the ground truth `verify` compares with.

use super::*;

impl State {
    /// Records acknowledged offsets (never moving backwards).
    pub fn commit(&mut self, session_id: &str, offsets: &[Position]) -> Result<(), ApiError> {
        let ends: Vec<i64> =
            offsets.iter().map(|p| self.log.bounds(&p.topic, p.partition).map(|(_, e)| e)).collect::<Result<_, _>>()?;
        let s = self
            .sessions
            .get_mut(session_id)
            .ok_or_else(|| ApiError::new(404, ErrorCode::SessionNotFound, "no such session"))?;
        for (p, end) in offsets.iter().zip(ends) {
            if p.offset >= end {
                return Err(ApiError::new(
                    409,
                    ErrorCode::OffsetOutOfRange,
                    format!("{}/{} has no offset {}", p.topic, p.partition, p.offset),
                ));
            }
            let slot = s.committed.entry((p.topic.clone(), p.partition)).or_insert(p.offset);
            *slot = (*slot).max(p.offset);
        }
        self.save();
        Ok(())
    }

    /// The published schema: tables, exact column types, keys and a hash per table.
    pub fn schema(&self, ctx: &str) -> Result<SchemaReply, ApiError> {
        let tenant = self.tenant(ctx)?;
        let tables = tenant
            .schemas()
            .into_iter()
            .map(|t| PublishedTable {
                table: t.id.to_string(),
                primary_key: t.primary_key.clone(),
                columns: t
                    .columns
                    .iter()
                    .map(|c| PublishedColumn {
                        name: c.name.clone(),
                        sql_type: column_type_text(c),
                        nullable: c.nullable,
                        default: c.default_expression.clone(),
                    })
                    .collect(),
                schema_hash: t.fingerprint(),
                approx_rows: tenant.rows(&t.id).map_or(0, |r| r.len() as u64),
            })
            .collect();
        Ok(SchemaReply { tables })
    }

    /// Ends, committed offsets and lag per partition, and the tenant's state.
    pub fn status(&self, session_id: &str) -> Result<StatusReply, ApiError> {
        let s = self
            .sessions
            .get(session_id)
            .ok_or_else(|| ApiError::new(404, ErrorCode::SessionNotFound, "no such session"))?;
        let tenant = self.tenant(&s.ctx)?;
        let mut partitions = Vec::new();
        for topic in [tenant.cdc_topic(), tenant.history_topic()] {
            for partition in 0..self.log.partitions(&topic) {
                let (start, end) = self.log.bounds(&topic, partition)?;
                let committed = s.committed.get(&(topic.clone(), partition)).copied();
                let lag = end - committed.map_or(start, |c| c + 1);
                partitions.push(PartitionStatus { topic: topic.clone(), partition, start, end, committed, lag });
            }
        }
        Ok(StatusReply {
            session: self.session_info(session_id),
            tenant_suspended: self.tenants.get(&s.ctx).is_some_and(|(_, x)| *x),
            minimum_client_version: self.min_client_version.clone(),
            partitions,
        })
    }

    /// Row counts and checksums of the tenant's tables (the ground truth for `verify`).
    pub fn ground_truth(&self, ctx: &str) -> Result<GroundTruth, ApiError> {
        let tenant = self.tenant(ctx)?;
        let topic = tenant.cdc_topic();
        let tables = tenant
            .checksums()
            .into_iter()
            .map(|(id, (rows, sum))| {
                let last_change = tenant
                    .last_changes(&id)
                    .into_iter()
                    .map(|(partition, offset)| crate::protocol::OwnedPosition {
                        topic: topic.clone(),
                        partition,
                        offset,
                    })
                    .collect();
                TableTruth { table: id.to_string(), rows, checksum: format!("{sum:016x}"), last_change }
            })
            .collect();
        Ok(GroundTruth { tables })
    }

    /// Reads what is available now for a fetch (possibly nothing). Checks resets and
    /// retention first, so an error is reported before any record is sent.
    pub fn fetch_now(&mut self, session_id: &str, req: &FetchRequest) -> Result<Vec<bytes::Bytes>, ApiError> {
        let s = self
            .sessions
            .get_mut(session_id)
            .ok_or_else(|| ApiError::new(404, ErrorCode::SessionNotFound, "no such session"))?;
        // A reset is reported until the client says (with `reset_epoch`) that it reloaded
        // from it: its stored epoch moves in the same replica transaction as the cleared
        // tables, so a crash in between is told again.
        if req.reset_epoch < s.reset_epoch {
            let positions = s.reset.as_ref().map(to_list).unwrap_or_default();
            // The snapshot was appended when the offsets were reset: today's ends are past it.
            let ends: BTreeMap<(String, i32), i64> = s
                .reset
                .iter()
                .flatten()
                .map(|((t, p), _)| Ok(((t.clone(), *p), self.log.next_offset(t, *p)?)))
                .collect::<Result<_, LogError>>()?;
            return Err(ApiError::new(409, ErrorCode::OffsetsReset, "the tenant's offsets were reset: a fresh snapshot starts at the given positions; reload every table from there")
                .with(serde_json::to_value(ResetDetails { positions, until: to_list(&ends), reset_epoch: s.reset_epoch }).unwrap_or_default()));
        }
        let rewind = std::mem::take(&mut s.faults.redeliver);
        let mut lines = Vec::new();
        let (max_events, max_bytes) = (req.max_events as usize, usize::try_from(req.max_bytes).unwrap_or(usize::MAX));
        let mut bytes = 0;
        for p in &req.positions {
            let (start, _) = self.log.bounds(&p.topic, p.partition)?;
            let from = if rewind > 0 { (p.offset - rewind).max(start) } else { p.offset };
            let budget = max_events.saturating_sub(lines.len());
            if budget == 0 || bytes >= max_bytes {
                break;
            }
            let fetched = self.log.fetch(&p.topic, p.partition, from, budget, max_bytes - bytes)?;
            for r in fetched.records {
                bytes += r.line.len() + 1;
                lines.push(r.line);
            }
        }
        Ok(lines)
    }
}
