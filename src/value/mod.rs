//! Value types shared by every part of the system: exact decimals, SQL Server temporals,
//! JSON string writing and the canonical text form that "equal" is judged in.
//!
//! They sit below the decoder, the schema model, the sinks and the reference cloud, so none of
//! those has to import another to name a date or a decimal.

pub mod canonical;
mod decimal;
mod json;
mod temporal;

pub use decimal::{Decimal, DecimalError};
pub use json::{write_json_string, write_json_string_array};
pub(crate) use temporal::validate_zoned_time;
pub use temporal::{Date, DateTime, DateTimeOffset, NANOS_PER_DAY, TemporalError, Time};
