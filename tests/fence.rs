//! The writer fence (`state::fence`): two runs that both believe they own a replica — the
//! first's claim was lost to a database restart while it held a fetched batch — never let an
//! older batch land after a newer one, on every target. Each write proves the run's epoch in
//! its own transaction; a run that lost it writes nothing and ends.

use std::time::Instant;

use dbmirror::coalesce::{Batch, Coalescer, FlushPolicy};
use dbmirror::owner::columns::ColumnRules;
use dbmirror::schema::{TableId, TableSchema};
use dbmirror::sink::{Replica, SinkError, SinkOptions};
use dbmirror::state::{SessionValue, TableState};
use proptest::prelude::*;

use crate::sink_contract::{create_all, model_rows, replica_rows};
use crate::support::targets::{TestDb, fresh_databases};
use crate::support::{GenOp, Model, apply_one, event, gen_op, registry};

/// One run's view: its handle, where it resumes, and a batch fetched but not yet committed.
struct Run {
    handle: Option<Box<dyn Replica>>,
    cursor: usize,
    pending: Option<(Batch, usize)>,
}

/// The batch of `ops[from..to]`, as the pipeline would coalesce it.
fn batch_of(ops: &[GenOp], from: usize, to: usize) -> Batch {
    let schemas = registry();
    let mut coalescer = Coalescer::new(FlushPolicy::default());
    for (i, op) in ops.iter().enumerate().take(to).skip(from) {
        coalescer.push(&event(op, i as i64), &schemas, Instant::now()).unwrap();
    }
    coalescer.take()
}

/// The source after `ops[..n]`.
fn model_after(ops: &[GenOp], n: usize) -> Model {
    let mut model: Model = Default::default();
    ops.iter().take(n).for_each(|op| apply_one(&mut model, op));
    model
}

/// Where a run resumes: one past the highest committed offset (offsets are the ops' indexes).
fn resume_point(replica: &mut dyn Replica) -> usize {
    replica.offsets().unwrap().values().max().map_or(0, |last| *last as usize + 1)
}

/// The replica holds exactly the source up to what its offsets say: no batch older than the
/// committed progress was applied after it.
fn assert_consistent(db: &TestDb, ops: &[GenOp]) -> Result<(), TestCaseError> {
    let schemas = registry();
    let mut reader = db.open(SinkOptions::default());
    let n = resume_point(reader.as_mut());
    prop_assert_eq!(
        replica_rows(reader.as_mut()),
        model_rows(&model_after(ops, n), &schemas, &ColumnRules::default()),
        "{:?} after {} ops",
        db.kind,
        n
    );
    Ok(())
}

/// Steps of two runs, interleaved: 0 claims (a fresh handle, as a new pass opens one), 1
/// fetches up to `size` changes from the run's cursor, 2 commits the fetched batch.
fn step() -> impl Strategy<Value = (usize, u8, usize)> {
    (0usize..2, 0u8..3, 1usize..6)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Any interleaving of two runs' claims, fetches and commits: after every commit the
    /// replica equals the source up to its stored offsets; a commit by a run that another
    /// claimed after fails with `Superseded` and writes nothing; a last run then catches up
    /// and the replica equals the whole source.
    #[test]
    fn no_interleaving_applies_an_older_batch_after_a_newer_one(
        ops in proptest::collection::vec(gen_op(), 1..30),
        steps in proptest::collection::vec(step(), 1..40),
    ) {
        for db in fresh_databases() {
            create_all(db.open(SinkOptions::default()).as_mut(), &registry());
            let mut runs: [Run; 2] = std::array::from_fn(|_| Run { handle: None, cursor: 0, pending: None });
            let mut epochs = Vec::new();
            for &(who, action, size) in &steps {
                let run = &mut runs[who];
                match (action, run.handle.as_mut()) {
                    (0, _) => {
                        let mut handle = db.open(SinkOptions::default());
                        epochs.push(handle.claim_writer(&format!("run {who}")).unwrap().epoch);
                        run.cursor = resume_point(handle.as_mut());
                        *run = Run { handle: Some(handle), cursor: run.cursor, pending: None };
                    }
                    (1, Some(_)) if run.pending.is_none() => {
                        let to = (run.cursor + size).min(ops.len());
                        run.pending = Some((batch_of(&ops, run.cursor, to), to));
                    }
                    (2, Some(handle)) => {
                        let Some((batch, to)) = run.pending.take() else { continue };
                        match handle.apply(&batch) {
                            Ok(()) => run.cursor = to,
                            Err(SinkError::Superseded { ours, stored, .. }) => {
                                prop_assert!(stored > Some(ours), "{:?}: {ours} vs {stored:?}", db.kind);
                                run.handle = None;
                            }
                            Err(e) => panic!("{:?}: {e}", db.kind),
                        }
                        assert_consistent(&db, &ops)?;
                    }
                    _ => {}
                }
            }
            prop_assert!(epochs.windows(2).all(|w| w[1] == w[0] + 1), "{:?}: epochs {epochs:?}", db.kind);
            let mut last = db.open(SinkOptions::default());
            last.claim_writer("the last run").unwrap();
            let from = resume_point(last.as_mut());
            last.apply(&batch_of(&ops, from, ops.len())).unwrap();
            prop_assert_eq!(
                replica_rows(last.as_mut()),
                model_rows(&model_after(&ops, ops.len()), &registry(), &ColumnRules::default()),
                "{:?}", db.kind
            );
        }
    }
}

/// Every kind of write a superseded run could make — a batch, a table's state, session facts
/// (tokens), a schema change, a resync swap, an owner's SQL — is refused, names who writes
/// the replica now, and changes nothing; the run that claimed last writes, and so does a
/// handle that never claimed (an owner's command).
#[test]
fn a_superseded_run_writes_nothing_of_any_kind() {
    let schemas = registry();
    for db in fresh_databases() {
        create_all(db.open(SinkOptions::default()).as_mut(), &schemas);
        let mut old = db.open(SinkOptions::default());
        let mut old_data = db.open(SinkOptions::default());
        let fence = old.claim_writer("host-a/1").unwrap();
        old_data.hold_fence(fence);
        let ops: Vec<GenOp> = crate::support::scripted_ops(20, 7);
        old_data.apply(&batch_of(&ops, 0, 10)).unwrap();
        let mut new = db.open(SinkOptions::default());
        let newer = new.claim_writer("host-b/2").unwrap();
        assert_eq!(newer.epoch, fence.epoch + 1, "{:?}", db.kind);

        let person = TableId::new("crm7", "person");
        let superseded = |result: Result<(), SinkError>, what: &str| match result {
            Err(e @ SinkError::Superseded { .. }) => {
                let message = e.to_string();
                assert!(message.contains("host-b/2") && message.contains("nothing was written"), "{message}");
            }
            other => panic!("{:?}: {what}: {other:?}", db.kind),
        };
        superseded(old_data.apply(&batch_of(&ops, 10, 20)), "a batch");
        superseded(old.set_table_state(&person, TableState::Ready), "a table state");
        superseded(old.write_facts(&[("access_token", SessionValue::Sealed(vec![1, 2, 3]))]), "tokens");
        let changed = TableSchema::clone(schemas.get("crm7", "link").unwrap());
        let change = dbmirror::schema::TableChange { kind: dbmirror::schema::SchemaChangeKind::Drop, table: changed };
        superseded(old_data.apply_schema(&change).map(drop), "a schema change");
        superseded(old_data.run_script("DELETE FROM _ReplicationErrors"), "an owner's SQL");

        let mut reader = db.open(SinkOptions::default());
        assert_eq!(resume_point(reader.as_mut()), 10, "{:?}", db.kind);
        assert_eq!(reader.table(&person).unwrap().state, TableState::Snapshotting, "{:?}", db.kind);
        assert!(!reader.read_facts().unwrap().contains_key("access_token"), "{:?}", db.kind);
        assert!(reader.table(&TableId::new("crm7", "link")).is_some(), "{:?}", db.kind);
        new.apply(&batch_of(&ops, 10, 20)).unwrap();
        assert_eq!(resume_point(new.as_mut()), 20, "{:?}", db.kind);
        reader.set_table_state(&person, TableState::Ready).unwrap();
    }
}
