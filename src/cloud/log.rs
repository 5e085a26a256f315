//! The reference cloud's event log: Kafka-like topics of partitions of records with offsets.
//!
//! Each record is kept as the exact line the Replication Service streams
//! (`{"topic","partition","offset","key","value"}`), built once when it is appended, so a fetch
//! only copies bytes. Retention drops records older than a configurable age and moves the
//! partition's start offset forward, which is how a client that was away too long is told its
//! offset is gone. With a data directory every partition is an append-only file that survives a
//! restart; without one the log lives in memory (tests).

use std::collections::{BTreeMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;

/// One stored record.
#[derive(Debug, Clone)]
pub struct Record {
    /// Its offset in the partition.
    pub offset: i64,
    /// When it was appended (milliseconds since the Unix epoch), for retention.
    pub appended_ms: i64,
    /// The record line, without the trailing newline.
    pub line: Bytes,
}

/// Why a read or write failed.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The topic or partition does not exist.
    #[error("unknown topic or partition {topic}/{partition}")]
    Unknown {
        /// Topic.
        topic: String,
        /// Partition.
        partition: i32,
    },
    /// The offset was removed by retention: the reader was away too long.
    #[error("offset {requested} of {topic}/{partition} was purged; the earliest kept is {earliest}")]
    Purged {
        /// Topic.
        topic: String,
        /// Partition.
        partition: i32,
        /// What was asked for.
        requested: i64,
        /// The first offset still kept.
        earliest: i64,
    },
    /// The offset is beyond the end of the partition (the log was reset under the reader).
    #[error("offset {requested} of {topic}/{partition} is beyond its end ({end})")]
    OutOfRange {
        /// Topic.
        topic: String,
        /// Partition.
        partition: i32,
        /// What was asked for.
        requested: i64,
        /// The next offset to be written.
        end: i64,
    },
    /// The data directory could not be read or written.
    #[error("event log storage {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// One partition: records in offset order, and where it starts and ends.
#[derive(Debug)]
struct Partition {
    records: VecDeque<Record>,
    /// The first offset still kept (equals `end` when empty).
    start: i64,
    /// The next offset to write.
    end: i64,
    file: Option<(PathBuf, File)>,
}

impl Partition {
    fn io(path: &Path) -> impl FnOnce(std::io::Error) -> LogError + '_ {
        move |source| LogError::Io { path: path.to_owned(), source }
    }

    /// Opens (or creates) a partition file: lines of `offset \t appended_ms \t record line`,
    /// and a first line `start \t <offset>` saying where the kept records begin.
    fn open(path: PathBuf) -> Result<Self, LogError> {
        let mut records = VecDeque::new();
        let mut start = 0;
        let mut torn = false;
        if path.exists() {
            let reader = BufReader::new(File::open(&path).map_err(Self::io(&path))?);
            for line in reader.lines() {
                let line = line.map_err(Self::io(&path))?;
                let mut parts = line.splitn(3, '\t');
                let (a, b, c) = (parts.next(), parts.next(), parts.next());
                match (a, b, c) {
                    (Some("start"), Some(s), None) => start = s.parse().unwrap_or(0),
                    (Some(o), Some(t), Some(l)) => {
                        // A torn last line (a crash mid-append) is dropped; the rest is intact.
                        let (Ok(offset), Ok(appended_ms)) = (o.parse(), t.parse()) else {
                            torn = true;
                            continue;
                        };
                        records.push_back(Record { offset, appended_ms, line: Bytes::from(l.to_owned()) });
                    }
                    _ => torn = true,
                }
            }
        }
        let end = records.back().map_or(start, |r| r.offset + 1);
        let file = OpenOptions::new().create(true).append(true).open(&path).map_err(Self::io(&path))?;
        let mut partition = Partition { records, start, end, file: Some((path, file)) };
        if torn {
            // Rewrite without the torn tail, so the next append starts on a fresh line.
            partition.rewrite()?;
        } else if partition.end == 0 && partition.start == 0 {
            partition.write_header()?;
        }
        Ok(partition)
    }

    fn memory() -> Self {
        Partition { records: VecDeque::new(), start: 0, end: 0, file: None }
    }

    fn write_header(&mut self) -> Result<(), LogError> {
        if let Some((path, file)) = &mut self.file {
            writeln!(file, "start\t{}", self.start).map_err(Self::io(path))?;
        }
        Ok(())
    }

    fn append(&mut self, appended_ms: i64, line: Bytes) -> Result<i64, LogError> {
        let offset = self.end;
        if let Some((path, file)) = &mut self.file {
            let mut text = format!("{offset}\t{appended_ms}\t").into_bytes();
            text.extend_from_slice(&line);
            text.push(b'\n');
            file.write_all(&text).map_err(Self::io(path))?;
        }
        self.records.push_back(Record { offset, appended_ms, line });
        self.end += 1;
        Ok(offset)
    }

    /// Drops records appended before `cutoff_ms`; rewrites the file when anything went.
    fn purge(&mut self, cutoff_ms: i64) -> Result<usize, LogError> {
        let mut dropped = 0;
        while self.records.front().is_some_and(|r| r.appended_ms < cutoff_ms) {
            self.records.pop_front();
            dropped += 1;
        }
        if dropped > 0 {
            self.start = self.records.front().map_or(self.end, |r| r.offset);
            self.rewrite()?;
        }
        Ok(dropped)
    }

    fn rewrite(&mut self) -> Result<(), LogError> {
        let Some((path, _)) = &self.file else { return Ok(()) };
        let path = path.clone();
        let tmp = path.with_extension("tmp");
        let mut out = File::create(&tmp).map_err(Self::io(&tmp))?;
        let mut text = format!("start\t{}\n", self.start).into_bytes();
        for r in &self.records {
            text.extend_from_slice(format!("{}\t{}\t", r.offset, r.appended_ms).as_bytes());
            text.extend_from_slice(&r.line);
            text.push(b'\n');
        }
        out.write_all(&text).and_then(|()| out.sync_all()).map_err(Self::io(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(Self::io(&path))?;
        let file = OpenOptions::new().append(true).open(&path).map_err(Self::io(&path))?;
        self.file = Some((path, file));
        Ok(())
    }
}

/// Topics of partitions, in memory or in a directory.
#[derive(Debug)]
pub struct EventLog {
    dir: Option<PathBuf>,
    topics: BTreeMap<String, Vec<Partition>>,
    /// Records older than this are purged by [`EventLog::enforce_retention`].
    pub retention: Duration,
}

/// What a fetch returns for one partition.
#[derive(Debug, Default)]
pub struct Fetched {
    /// Records from the requested offset on, in order.
    pub records: Vec<Record>,
    /// The partition's end (the next offset to be written), for lag.
    pub end: i64,
}

impl EventLog {
    /// A log kept in memory only.
    pub fn in_memory(retention: Duration) -> Self {
        EventLog { dir: None, topics: BTreeMap::new(), retention }
    }

    /// A log kept in `dir`, reloading any topics already there.
    pub fn open(dir: &Path, retention: Duration) -> Result<Self, LogError> {
        std::fs::create_dir_all(dir).map_err(|source| LogError::Io { path: dir.to_owned(), source })?;
        let mut log = EventLog { dir: Some(dir.to_owned()), topics: BTreeMap::new(), retention };
        let entries = std::fs::read_dir(dir).map_err(|source| LogError::Io { path: dir.to_owned(), source })?;
        let mut found: BTreeMap<String, i32> = BTreeMap::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let parsed = name.strip_suffix(".log").and_then(|n| n.rsplit_once('.'));
            if let Some((topic, Ok(p))) = parsed.map(|(t, p)| (t, p.parse::<i32>())) {
                let count = found.entry(topic.to_owned()).or_default();
                *count = (*count).max(p + 1);
            }
        }
        for (topic, partitions) in found {
            log.create_topic(&topic, partitions)?;
        }
        Ok(log)
    }

    /// Creates a topic with `partitions` partitions if it does not exist yet.
    pub fn create_topic(&mut self, topic: &str, partitions: i32) -> Result<(), LogError> {
        if self.topics.contains_key(topic) {
            return Ok(());
        }
        let parts = (0..partitions)
            .map(|p| match &self.dir {
                Some(dir) => Partition::open(dir.join(format!("{topic}.{p}.log"))),
                None => Ok(Partition::memory()),
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.topics.insert(topic.to_owned(), parts);
        Ok(())
    }

    /// The number of partitions of a topic (0 if it does not exist).
    pub fn partitions(&self, topic: &str) -> i32 {
        self.topics.get(topic).map_or(0, |p| p.len() as i32)
    }

    fn partition_mut(&mut self, topic: &str, partition: i32) -> Result<&mut Partition, LogError> {
        self.topics
            .get_mut(topic)
            .and_then(|p| p.get_mut(usize::try_from(partition).ok()?))
            .ok_or_else(|| LogError::Unknown { topic: topic.to_owned(), partition })
    }

    fn partition(&self, topic: &str, partition: i32) -> Result<&Partition, LogError> {
        self.topics
            .get(topic)
            .and_then(|p| p.get(usize::try_from(partition).ok()?))
            .ok_or_else(|| LogError::Unknown { topic: topic.to_owned(), partition })
    }

    /// The offset the next record of a partition will get.
    pub fn next_offset(&self, topic: &str, partition: i32) -> Result<i64, LogError> {
        Ok(self.partition(topic, partition)?.end)
    }

    /// The next offset to be written, per partition of `topic` (where a snapshot appended
    /// now starts, or where one just appended ends).
    pub fn ends(&self, topic: &str) -> BTreeMap<i32, i64> {
        self.topics.get(topic).into_iter().flatten().enumerate().map(|(p, part)| (p as i32, part.end)).collect()
    }

    /// `(start, end)` of a partition: the first kept offset and the next to be written.
    pub fn bounds(&self, topic: &str, partition: i32) -> Result<(i64, i64), LogError> {
        let p = self.partition(topic, partition)?;
        Ok((p.start, p.end))
    }

    /// Appends a record line built by `line(offset)` and returns its offset.
    pub fn append(
        &mut self,
        topic: &str,
        partition: i32,
        now_ms: i64,
        line: impl FnOnce(i64) -> String,
    ) -> Result<i64, LogError> {
        let p = self.partition_mut(topic, partition)?;
        let text = line(p.end);
        p.append(now_ms, Bytes::from(text))
    }

    /// Reads up to `max_records` records (and roughly `max_bytes`, but at least one) from
    /// `offset` on.
    pub fn fetch(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Fetched, LogError> {
        let p = self.partition(topic, partition)?;
        if offset < p.start {
            return Err(LogError::Purged { topic: topic.to_owned(), partition, requested: offset, earliest: p.start });
        }
        if offset > p.end {
            return Err(LogError::OutOfRange { topic: topic.to_owned(), partition, requested: offset, end: p.end });
        }
        let first = p.records.front().map_or(p.end, |r| r.offset);
        let skip = usize::try_from(offset - first).unwrap_or(0);
        let mut bytes = 0;
        let records = p
            .records
            .iter()
            .skip(skip)
            .take(max_records)
            .take_while(|r| {
                let fits = bytes == 0 || bytes + r.line.len() <= max_bytes;
                bytes += r.line.len() + 1;
                fits
            })
            .cloned()
            .collect();
        Ok(Fetched { records, end: p.end })
    }

    /// Purges every record older than the retention; returns how many went. Schema-history
    /// topics are kept whole, as Debezium requires: a new consumer needs every table's schema.
    pub fn enforce_retention(&mut self, now_ms: i64) -> Result<usize, LogError> {
        let cutoff = now_ms - i64::try_from(self.retention.as_millis()).unwrap_or(i64::MAX);
        let mut dropped = 0;
        let topics = self.topics.iter_mut().filter(|(t, _)| !t.ends_with(crate::protocol::SCHEMA_HISTORY_TOPIC_SUFFIX));
        for (_, partitions) in topics {
            for p in partitions {
                dropped += p.purge(cutoff)?;
            }
        }
        Ok(dropped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(offset: i64) -> String {
        format!("{{\"topic\":\"t\",\"partition\":0,\"offset\":{offset},\"key\":null,\"value\":null}}")
    }

    #[test]
    fn appends_fetches_limits_and_purges() {
        let mut log = EventLog::in_memory(Duration::from_secs(10));
        log.create_topic("t", 2).unwrap();
        for i in 0..5 {
            assert_eq!(log.append("t", 0, i * 1000, line).unwrap(), i);
        }
        let f = log.fetch("t", 0, 1, 2, usize::MAX).unwrap();
        assert_eq!((f.records.len(), f.records[0].offset, f.end), (2, 1, 5));
        // The byte limit is soft: at least one record comes back.
        assert_eq!(log.fetch("t", 0, 0, 10, 1).unwrap().records.len(), 1);
        assert!(log.fetch("t", 0, 5, 10, usize::MAX).unwrap().records.is_empty());
        assert!(matches!(log.fetch("t", 0, 6, 10, 100), Err(LogError::OutOfRange { end: 5, .. })));
        assert!(matches!(log.fetch("t", 2, 0, 10, 100), Err(LogError::Unknown { .. })));
        assert_eq!(log.enforce_retention(12_500).unwrap(), 3);
        assert!(matches!(log.fetch("t", 0, 2, 10, 100), Err(LogError::Purged { earliest: 3, .. })));
        assert_eq!(log.bounds("t", 0).unwrap(), (3, 5));
    }

    #[test]
    fn a_directory_log_survives_a_restart_and_a_torn_line() {
        let dir = std::env::temp_dir().join(format!("dbmirror-log-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        {
            let mut log = EventLog::open(&dir, Duration::from_secs(10)).unwrap();
            log.create_topic("c-cdc", 3).unwrap();
            for i in 0..4 {
                log.append("c-cdc", 1, i * 1000, line).unwrap();
            }
            log.enforce_retention(11_500).unwrap();
        }
        // A crash in the middle of an append leaves a partial line behind.
        let mut f = OpenOptions::new().append(true).open(dir.join("c-cdc.1.log")).unwrap();
        f.write_all(b"4\t40").unwrap();
        let mut log = EventLog::open(&dir, Duration::from_secs(10)).unwrap();
        assert_eq!(log.partitions("c-cdc"), 3);
        assert_eq!(log.bounds("c-cdc", 1).unwrap(), (2, 4));
        assert_eq!(log.append("c-cdc", 1, 5000, line).unwrap(), 4);
        let f = log.fetch("c-cdc", 1, 2, 10, usize::MAX).unwrap();
        assert_eq!(f.records.iter().map(|r| r.offset).collect::<Vec<_>>(), [2, 3, 4]);
        assert_eq!(&f.records[0].line[..], line(2).as_bytes());
        std::fs::remove_dir_all(&dir).ok();
    }
}
