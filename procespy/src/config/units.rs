//! Sizes (`"1.5GiB"`, `"10%"`, bare bytes) and durations (`"250ms"`, `"5s"`).
//!
//! Numbers are parsed as exact decimals, never through floating point, so
//! `"1.5GiB"` is exactly 1610612736 bytes. Fractions that fall between two
//! bytes (or nanoseconds) are rounded down.

use std::time::Duration;

/// Binary and decimal size units, with their multipliers in bytes.
const SIZE_UNITS: &[(&str, u128)] = &[
    ("B", 1),
    ("KiB", 1 << 10),
    ("MiB", 1 << 20),
    ("GiB", 1 << 30),
    ("TiB", 1 << 40),
    ("KB", 1_000),
    ("MB", 1_000_000),
    ("GB", 1_000_000_000),
    ("TB", 1_000_000_000_000),
];

/// Duration units, with their lengths in nanoseconds.
const DURATION_UNITS: &[(&str, u128)] = &[
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60_000_000_000),
    ("h", 3_600_000_000_000),
    ("d", 86_400_000_000_000),
];

const SIZE_UNIT_LIST: &str = "B, KiB, MiB, GiB, TiB, KB, MB, GB, TB or %";
const DURATION_UNIT_LIST: &str = "ms, s, m, h or d";

/// A non-negative decimal number `mantissa / 10^scale`.
#[derive(Debug, Clone, Copy)]
struct Decimal {
    mantissa: u128,
    scale: u32,
}

impl Decimal {
    fn is_zero(self) -> bool {
        self.mantissa == 0
    }

    /// The same number with at most `places` decimal places, rounded down.
    fn truncated(self, places: u32) -> Decimal {
        if self.scale <= places {
            return self;
        }
        Decimal {
            mantissa: self.mantissa / 10u128.pow(self.scale - places),
            scale: places,
        }
    }

    /// `self * factor`, rounded down; `None` on overflow.
    fn times(self, factor: u128) -> Option<u128> {
        Some(self.mantissa.checked_mul(factor)? / 10u128.pow(self.scale))
    }
}

/// Splits `text` into a decimal number and the unit that follows it
/// (optionally after spaces). `what` names the kind of value in messages.
fn split_number<'a>(text: &'a str, what: &str) -> Result<(Decimal, &'a str), String> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(format!("empty {what}"));
    }
    if trimmed.starts_with('-') {
        return Err(format!("{what} \"{text}\" is negative"));
    }
    let end = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(end);
    let (whole, fraction) = match number.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (number, None),
    };
    let well_formed =
        !whole.is_empty() && fraction.is_none_or(|f| !f.is_empty() && !f.contains('.'));
    if !well_formed {
        return Err(format!(
            "{what} \"{text}\" does not start with a number such as 5 or 1.5"
        ));
    }
    let digits: String = whole
        .chars()
        .chain(fraction.unwrap_or("").chars())
        .collect();
    let digits = digits.trim_start_matches('0');
    // 30 significant digits leave room for the largest multiplier in a u128.
    if digits.len() > 30 {
        return Err(format!("{what} \"{text}\" is too large"));
    }
    let mantissa = if digits.is_empty() {
        0
    } else {
        digits.parse::<u128>().map_err(|e| e.to_string())?
    };
    let scale = fraction.map_or(0, str::len) as u32;
    if scale > 30 {
        return Err(format!("{what} \"{text}\" has too many decimal places"));
    }
    Ok((Decimal { mantissa, scale }, unit.trim_start()))
}

/// Parses a size written as a string: a number with a unit (`"512MiB"`,
/// `"1.5GiB"`, `"100KB"`, `"4096B"`) or a percentage of `mem_total`
/// (`"10%"`, `"2.5%"`), and returns it in bytes.
///
/// Units are case-sensitive: `B`, `KiB`, `MiB`, `GiB`, `TiB` (powers of 1024)
/// and `KB`, `MB`, `GB`, `TB` (powers of 1000). A space between the number and
/// the unit is allowed. Zero, negative sizes, percentages above 100, sizes
/// that do not fit in 64 bits and sizes that round down to 0 bytes are
/// errors, as is a percentage when `mem_total` is 0 (unknown).
///
/// The error is a sentence for the user, without position.
///
/// For example `"1.5GiB"` is 1,610,612,736 bytes, `"10%"` of 1000 bytes is
/// 100, and `"150%"` is an error.
pub(crate) fn parse_size(text: &str, mem_total: u64) -> Result<u64, String> {
    let (number, unit) = split_number(text, "size")?;
    let bytes = if unit == "%" {
        // Digits beyond the ninth decimal place cannot matter for any real
        // amount of memory; dropping them keeps the product below in range.
        let number = number.truncated(9);
        if number.mantissa > 100 * 10u128.pow(number.scale) {
            return Err(format!("size \"{text}\" is more than 100% of the memory"));
        }
        if number.is_zero() {
            return Err(format!("size \"{text}\" is zero"));
        }
        if mem_total == 0 {
            return Err(format!(
                "size \"{text}\" is a percentage, but the total memory (MemTotal) is unknown"
            ));
        }
        // mantissa <= 100 * 10^9, so the product with a u64 fits in a u128.
        number
            .times(u128::from(mem_total))
            .map(|b| b / 100)
            .ok_or_else(|| format!("size \"{text}\" is too large"))?
    } else {
        if unit.is_empty() {
            return Err(format!(
                "size \"{text}\" has no unit; write a bare integer for bytes, or add one of {SIZE_UNIT_LIST}"
            ));
        }
        let Some(&(_, multiplier)) = SIZE_UNITS.iter().find(|(name, _)| *name == unit) else {
            return Err(format!(
                "size \"{text}\" has an unknown unit \"{unit}\" (use {SIZE_UNIT_LIST})"
            ));
        };
        if number.is_zero() {
            return Err(format!("size \"{text}\" is zero"));
        }
        number
            .times(multiplier)
            .ok_or_else(|| format!("size \"{text}\" is too large"))?
    };
    if bytes == 0 {
        return Err(format!("size \"{text}\" rounds down to 0 bytes"));
    }
    u64::try_from(bytes).map_err(|_| format!("size \"{text}\" is too large (more than 2^64 bytes)"))
}

/// Checks a size written as a bare TOML integer, which counts bytes: it must
/// be more than 0.
pub(crate) fn size_from_integer(value: i64) -> Result<u64, String> {
    match u64::try_from(value) {
        Ok(0) => Err("size 0 is zero; a limit must be more than 0 bytes".to_string()),
        Ok(bytes) => Ok(bytes),
        Err(_) => Err(format!("size {value} is negative")),
    }
}

/// Parses a duration: a number with one of the units `ms`, `s`, `m`, `h`, `d`
/// (`"250ms"`, `"5s"`, `"1.5m"`, `"1h"`, `"7d"`). A space before the unit is allowed.
/// Zero is accepted here (callers that need a positive duration check it);
/// negative durations, missing or unknown units and durations beyond
/// `u64::MAX` nanoseconds are errors.
///
/// For example `"250ms"` is 250 milliseconds, `"1.5m"` 90 seconds, and
/// `"5"` an error.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = split_number(text, "duration")?;
    if unit.is_empty() {
        return Err(format!(
            "duration \"{text}\" has no unit (use {DURATION_UNIT_LIST}, e.g. \"5s\")"
        ));
    }
    let Some(&(_, nanos_per_unit)) = DURATION_UNITS.iter().find(|(name, _)| *name == unit) else {
        return Err(format!(
            "duration \"{text}\" has an unknown unit \"{unit}\" (use {DURATION_UNIT_LIST})"
        ));
    };
    let nanos = number
        .times(nanos_per_unit)
        .and_then(|n| u64::try_from(n).ok())
        .ok_or_else(|| format!("duration \"{text}\" is too long"))?;
    Ok(Duration::from_nanos(nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    #[test]
    fn sizes() {
        let good: &[(&str, u64)] = &[
            ("1B", 1),
            ("4096B", 4096),
            ("1KiB", 1024),
            ("1 KiB", 1024),
            ("512MiB", 512 << 20),
            ("1GiB", GIB),
            ("1.5GiB", GIB + GIB / 2),
            ("0.5GiB", GIB / 2),
            ("2TiB", 2 << 40),
            ("1KB", 1000),
            ("1.5MB", 1_500_000),
            ("3GB", 3_000_000_000),
            ("1TB", 1_000_000_000_000),
            ("007MiB", 7 << 20),
            ("1.0000000001KB", 1000),
            ("16777215TiB", 16_777_215 << 40),
        ];
        for &(text, bytes) in good {
            assert_eq!(parse_size(text, 0), Ok(bytes), "{text}");
        }
        let bad: &[(&str, &str)] = &[
            ("", "empty"),
            ("GiB", "does not start with a number"),
            (".5GiB", "does not start with a number"),
            ("5.GiB", "does not start with a number"),
            ("1.2.3GiB", "does not start with a number"),
            ("-1GiB", "negative"),
            ("0", "no unit"),
            ("1024", "no unit"),
            ("0GiB", "zero"),
            ("0.0MiB", "zero"),
            ("0.1B", "rounds down to 0 bytes"),
            ("1gib", "unknown unit \"gib\""),
            ("1 GB2", "unknown unit"),
            ("1K", "unknown unit"),
            ("16777216TiB", "too large"),
            ("99999999999999999999999999999999999TB", "too large"),
        ];
        for &(text, fragment) in bad {
            let err = parse_size(text, GIB).expect_err(text);
            assert!(err.contains(fragment), "{text}: {err}");
        }
    }

    #[test]
    fn percentages() {
        let mem = 16 * GIB;
        assert_eq!(parse_size("10%", mem), Ok(mem / 10));
        assert_eq!(parse_size("100%", mem), Ok(mem));
        assert_eq!(parse_size("100.0%", mem), Ok(mem));
        assert_eq!(parse_size("2.5%", mem), Ok(mem / 40));
        assert_eq!(parse_size("50 %", 3), Ok(1));
        assert_eq!(
            parse_size("10.000000000000000000000000001%", mem),
            Ok(mem / 10)
        );
        for (text, fragment) in [
            ("150%", "more than 100%"),
            ("100.5%", "more than 100%"),
            ("100.01%", "more than 100%"),
            ("0%", "zero"),
            ("-5%", "negative"),
        ] {
            let err = parse_size(text, mem).expect_err(text);
            assert!(err.contains(fragment), "{text}: {err}");
        }
        assert!(parse_size("1%", 0).unwrap_err().contains("MemTotal"));
        assert!(
            parse_size("0.0001%", 100)
                .unwrap_err()
                .contains("rounds down to 0")
        );
    }

    #[test]
    fn integer_sizes() {
        assert_eq!(size_from_integer(1), Ok(1));
        assert_eq!(size_from_integer(i64::MAX), Ok(i64::MAX as u64));
        assert!(size_from_integer(0).unwrap_err().contains("zero"));
        assert!(size_from_integer(-1).unwrap_err().contains("negative"));
    }

    #[test]
    fn durations() {
        let good: &[(&str, Duration)] = &[
            ("250ms", Duration::from_millis(250)),
            ("0ms", Duration::ZERO),
            ("0.5ms", Duration::from_micros(500)),
            ("5s", Duration::from_secs(5)),
            ("5 s", Duration::from_secs(5)),
            ("1.5s", Duration::from_millis(1500)),
            ("2m", Duration::from_secs(120)),
            ("1.5m", Duration::from_secs(90)),
            ("7d", Duration::from_secs(7 * 86_400)),
            ("1h", Duration::from_secs(3600)),
            ("0.25h", Duration::from_secs(900)),
            ("60s", Duration::from_secs(60)),
        ];
        for &(text, expected) in good {
            assert_eq!(parse_duration(text), Ok(expected), "{text}");
        }
        let bad: &[(&str, &str)] = &[
            ("", "empty"),
            ("5", "no unit"),
            ("s", "does not start with a number"),
            ("-1s", "negative"),
            ("5sec", "unknown unit \"sec\""),
            ("1w", "unknown unit"),
            ("5S", "unknown unit"),
            ("1m30s", "unknown unit"),
            ("9999999999h", "too long"),
            ("999999999d", "too long"),
        ];
        for &(text, fragment) in bad {
            let err = parse_duration(text).expect_err(text);
            assert!(err.contains(fragment), "{text}: {err}");
        }
    }
}
