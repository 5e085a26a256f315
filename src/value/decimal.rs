//! Exact decimals: an unscaled integer and a scale, never a float.
//!
//! SQL Server's widest `decimal(38,s)` needs 127 bits, so `i128` holds every value the source
//! can produce without a big-number library or an allocation.

use std::fmt;

/// Largest magnitude with 38 digits: SQL Server's maximum precision.
const MAX_38_DIGITS: i128 = 99_999_999_999_999_999_999_999_999_999_999_999_999;

/// Highest scale accepted (SQL Server allows up to 38).
pub const MAX_SCALE: u8 = 38;

/// An exact decimal number `unscaled * 10^-scale`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Decimal {
    unscaled: i128,
    scale: u8,
}

/// Why a decimal could not be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecimalError {
    /// More than 38 significant digits.
    #[error("decimal value has more than 38 digits")]
    Overflow,
    /// Scale outside 0..=38.
    #[error("decimal scale {0} is outside 0..=38")]
    Scale(i64),
    /// Not a decimal literal.
    #[error("not a decimal number")]
    Syntax,
    /// Rescaling would drop non-zero digits.
    #[error("value has more fraction digits than the column's scale {0}")]
    Inexact(u8),
    /// More integer digits than the column holds.
    #[error("value has more digits than the column's {0}")]
    Precision(Shape),
}

/// A column's `decimal(precision, scale)`: what every value in it must fit exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Shape {
    /// Significant digits in all.
    pub precision: u8,
    /// Digits after the point.
    pub scale: u8,
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "precision {} and scale {}", self.precision, self.scale)
    }
}

impl Decimal {
    /// Builds a decimal from its parts, checking the 38-digit limit.
    pub fn new(unscaled: i128, scale: i64) -> Result<Self, DecimalError> {
        if !(0..=i64::from(MAX_SCALE)).contains(&scale) {
            return Err(DecimalError::Scale(scale));
        }
        if unscaled.unsigned_abs() > MAX_38_DIGITS as u128 {
            return Err(DecimalError::Overflow);
        }
        Ok(Self { unscaled, scale: scale as u8 })
    }

    /// The unscaled integer.
    pub fn unscaled(self) -> i128 {
        self.unscaled
    }

    /// Digits after the decimal point.
    pub fn scale(self) -> u8 {
        self.scale
    }

    /// Decodes Kafka Connect's `Decimal`: big-endian two's complement bytes plus a scale.
    pub fn from_be_bytes(bytes: &[u8], scale: i64) -> Result<Self, DecimalError> {
        if bytes.is_empty() {
            return Self::new(0, scale);
        }
        let negative = bytes[0] & 0x80 != 0;
        let fill = if negative { 0xff } else { 0x00 };
        // Leading sign-extension bytes beyond 16 are harmless; anything else is too wide.
        let mut start = 0;
        while bytes.len() - start > 16 {
            if bytes[start] != fill {
                return Err(DecimalError::Overflow);
            }
            start += 1;
        }
        let mut buf = [fill; 16];
        let digits = &bytes[start..];
        buf[16 - digits.len()..].copy_from_slice(digits);
        let unscaled = i128::from_be_bytes(buf);
        // A positive number must not have lost its sign bit when sign bytes were dropped.
        if (unscaled < 0) != negative {
            return Err(DecimalError::Overflow);
        }
        Self::new(unscaled, scale)
    }

    /// Parses a plain or exponent decimal literal (`-12.340`, `1E+3`) exactly.
    pub fn parse(text: &str) -> Result<Self, DecimalError> {
        let bytes = text.as_bytes();
        let (negative, mut i) = match bytes.first() {
            Some(b'-') => (true, 1),
            Some(b'+') => (false, 1),
            _ => (false, 0),
        };
        let mut unscaled: i128 = 0;
        let mut scale: i64 = 0;
        let mut digits = 0usize;
        let mut seen_point = false;
        while let Some(&b) = bytes.get(i) {
            match b {
                b'0'..=b'9' => {
                    unscaled = unscaled
                        .checked_mul(10)
                        .and_then(|v| v.checked_add(i128::from(b - b'0')))
                        .ok_or(DecimalError::Overflow)?;
                    digits += 1;
                    if seen_point {
                        scale += 1;
                    }
                }
                b'.' if !seen_point => seen_point = true,
                b'e' | b'E' => break,
                _ => return Err(DecimalError::Syntax),
            }
            i += 1;
        }
        if digits == 0 {
            return Err(DecimalError::Syntax);
        }
        if i < bytes.len() {
            let exp: i64 = text[i + 1..].parse().map_err(|_| DecimalError::Syntax)?;
            scale = scale.checked_sub(exp).ok_or(DecimalError::Overflow)?;
            while scale < 0 {
                unscaled = unscaled.checked_mul(10).ok_or(DecimalError::Overflow)?;
                scale += 1;
            }
        }
        if negative {
            unscaled = -unscaled;
        }
        Self::new(unscaled, scale)
    }

    /// The shortest decimal that round-trips `value` (how `decimal.handling.mode=double`
    /// values read back), or an error for NaN and infinities.
    pub fn from_f64(value: f64) -> Result<Self, DecimalError> {
        if !value.is_finite() {
            return Err(DecimalError::Syntax);
        }
        let mut buf = ryu::Buffer::new();
        Self::parse(buf.format_finite(value))
    }

    /// The same number with exactly `scale` fraction digits; fails rather than round.
    pub fn rescale(self, scale: u8) -> Result<Self, DecimalError> {
        if scale == self.scale {
            return Ok(self);
        }
        if scale > self.scale {
            let factor = pow10(scale - self.scale).ok_or(DecimalError::Overflow)?;
            let unscaled = self.unscaled.checked_mul(factor).ok_or(DecimalError::Overflow)?;
            return Self::new(unscaled, i64::from(scale));
        }
        let factor = pow10(self.scale - scale).ok_or(DecimalError::Overflow)?;
        if self.unscaled % factor != 0 {
            return Err(DecimalError::Inexact(scale));
        }
        Self::new(self.unscaled / factor, i64::from(scale))
    }
}

impl Decimal {
    /// The same number as the column stores it: exactly the column's fraction digits, and
    /// refused (never rounded or truncated) when it has more fraction or integer digits than
    /// the column holds. A variable-scale value carries its own scale, so without this a
    /// `numeric(10,4)` replica column would see `12.345` where the source shows `12.3450`.
    pub fn fit(self, shape: Shape) -> Result<Self, DecimalError> {
        let d = self.rescale(shape.scale)?;
        match pow10(shape.precision) {
            Some(limit) if d.unscaled.unsigned_abs() >= limit.unsigned_abs() => Err(DecimalError::Precision(shape)),
            _ => Ok(d),
        }
    }
}

fn pow10(exp: u8) -> Option<i128> {
    10i128.checked_pow(u32::from(exp))
}

impl fmt::Display for Decimal {
    /// Plain notation with exactly `scale` fraction digits, as SQL Server prints it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut digits = itoa::Buffer::new();
        let text = digits.format(self.unscaled.unsigned_abs());
        if self.unscaled < 0 {
            f.write_str("-")?;
        }
        let scale = usize::from(self.scale);
        if scale == 0 {
            return f.write_str(text);
        }
        if text.len() > scale {
            let (int, frac) = text.split_at(text.len() - scale);
            write!(f, "{int}.{frac}")
        } else {
            f.write_str("0.")?;
            for _ in 0..scale - text.len() {
                f.write_str("0")?;
            }
            f.write_str(text)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_bytes_round_trip() {
        // 12.34 with scale 2 is unscaled 1234 = 0x04D2.
        assert_eq!(Decimal::from_be_bytes(&[0x04, 0xD2], 2).unwrap().to_string(), "12.34");
        // -1 with scale 0 is 0xFF.
        assert_eq!(Decimal::from_be_bytes(&[0xFF], 0).unwrap().to_string(), "-1");
        // 128 needs a leading zero byte so it is not read as negative.
        assert_eq!(Decimal::from_be_bytes(&[0x00, 0x80], 0).unwrap().to_string(), "128");
        assert_eq!(Decimal::from_be_bytes(&[], 3).unwrap().to_string(), "0.000");
        assert_eq!(Decimal::from_be_bytes(&[0x01], 4).unwrap().to_string(), "0.0001");
    }

    #[test]
    fn widest_sql_server_decimal_is_exact() {
        let max = "99999999999999999999999999999999999999";
        let d = Decimal::parse(max).unwrap();
        assert_eq!(d.to_string(), max);
        let bytes = d.unscaled().to_be_bytes();
        assert_eq!(Decimal::from_be_bytes(&bytes, 0).unwrap(), d);
        let neg = Decimal::parse("-9999999999999999999999999999.9999999999").unwrap();
        assert_eq!(neg.to_string(), "-9999999999999999999999999999.9999999999");
        assert_eq!(Decimal::parse("999999999999999999999999999999999999999"), Err(DecimalError::Overflow));
    }

    #[test]
    fn oversized_bytes_are_rejected_not_truncated() {
        let mut bytes = vec![0x01];
        bytes.extend([0u8; 16]);
        assert_eq!(Decimal::from_be_bytes(&bytes, 0), Err(DecimalError::Overflow));
        // Sign extension beyond 16 bytes is fine.
        let mut neg = vec![0xFF; 4];
        neg.extend((-5i128).to_be_bytes());
        assert_eq!(Decimal::from_be_bytes(&neg, 1).unwrap().to_string(), "-0.5");
    }

    #[test]
    fn parse_and_rescale() {
        assert_eq!(Decimal::parse("1E+3").unwrap().to_string(), "1000");
        assert_eq!(Decimal::parse("1.5e-2").unwrap().to_string(), "0.015");
        assert_eq!(Decimal::parse("12.34").unwrap().rescale(4).unwrap().to_string(), "12.3400");
        assert_eq!(Decimal::parse("12.3400").unwrap().rescale(2).unwrap().to_string(), "12.34");
        assert_eq!(Decimal::parse("12.345").unwrap().rescale(2), Err(DecimalError::Inexact(2)));
        assert_eq!(Decimal::from_f64(9999999.1).unwrap().to_string(), "9999999.1");
        assert!(Decimal::parse("").is_err());
        assert!(Decimal::parse("1.2.3").is_err());
        assert!(Decimal::parse("abc").is_err());
    }

    #[test]
    fn fit_pads_refuses_and_never_rounds() {
        let col = Shape { precision: 10, scale: 4 };
        let fit = |t: &str| Decimal::parse(t).unwrap().fit(col).map(|d| d.to_string());
        assert_eq!(fit("12.345").unwrap(), "12.3450");
        assert_eq!(fit("-7").unwrap(), "-7.0000");
        assert_eq!(fit("999999.9999").unwrap(), "999999.9999");
        assert_eq!(fit("12.34567"), Err(DecimalError::Inexact(4)));
        assert_eq!(fit("1000000"), Err(DecimalError::Precision(col)));
        assert_eq!(fit("-1000000.0000"), Err(DecimalError::Precision(col)));
        let widest = Shape { precision: 38, scale: 0 };
        assert!(Decimal::parse("99999999999999999999999999999999999999").unwrap().fit(widest).is_ok());
    }
}
