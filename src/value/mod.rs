//! Value types shared by every part of the system: exact decimals, SQL Server temporals and
//! JSON string writing. (The canonical text form that "equal" is judged in is
//! [`crate::canonical`], which also knows rows and column types.)
//!
//! They sit below the decoder, the schema model, the sinks and the reference cloud, so none of
//! those has to import another to name a date or a decimal.

mod decimal;
mod json;
mod temporal;

pub use decimal::{Decimal, DecimalError, Shape};
pub use json::{write_json_string, write_json_string_array};
pub(crate) use temporal::validate_zoned_time;
pub use temporal::{Date, DateTime, DateTimeOffset, NANOS_PER_DAY, TemporalError, Time};
