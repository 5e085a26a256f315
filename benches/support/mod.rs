//! Shared bench inputs. Each bench uses a part of them.
#![allow(dead_code)]

pub mod events;
pub mod ingest_common;
pub mod serde_baseline;
