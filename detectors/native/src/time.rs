//! Event time of the common timestamp shapes, computed exactly as
//! `detectors.event.parse_timestamp` does; anything else is `Unsure`
//! (the event then goes to Python, which reads it with the one parser).

#[derive(Clone, Copy)]
pub enum Read {
    /// Epoch seconds.
    At(f64),
    /// Not a timestamp for Python either (booleans, objects, lists): try the next field.
    Not,
    /// A shape this reader does not handle.
    Unsure,
}

pub const EPOCH_MS_THRESHOLD: f64 = 1e11;
pub const MAX_TS: f64 = 253402300799.0;

pub fn number(value: f64) -> Read {
    if !value.is_finite() || value < 0.0 {
        return Read::Not;
    }
    let ts = if value > EPOCH_MS_THRESHOLD {
        value / 1000.0
    } else {
        value
    };
    if ts > MAX_TS {
        Read::Not
    } else {
        Read::At(ts)
    }
}

fn digits(bytes: &[u8]) -> Option<i64> {
    let mut out = 0i64;
    for b in bytes {
        if !b.is_ascii_digit() {
            return None;
        }
        out = out * 10 + i64::from(b - b'0');
    }
    Some(out)
}

fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn month_days(year: i64, month: i64) -> i64 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// `YYYY-MM-DD[T ]HH:MM:SS[.fff|.ffffff][Z|z|+HH:MM|-HH:MM]`; no offset means UTC.
pub fn iso(text: &str) -> Read {
    let b = text.as_bytes();
    if b.len() < 19
        || b[4] != b'-'
        || b[7] != b'-'
        || !(b[10] == b'T' || b[10] == b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return Read::Unsure;
    }
    let (Some(year), Some(month), Some(day), Some(hour), Some(minute), Some(second)) = (
        digits(&b[0..4]),
        digits(&b[5..7]),
        digits(&b[8..10]),
        digits(&b[11..13]),
        digits(&b[14..16]),
        digits(&b[17..19]),
    ) else {
        return Read::Unsure;
    };
    if year < 1
        || !(1..=12).contains(&month)
        || day < 1
        || day > month_days(year, month)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return Read::Unsure;
    }
    let mut rest = &b[19..];
    let mut micros = 0i64;
    if rest.first() == Some(&b'.') {
        let len = rest[1..].iter().take_while(|c| c.is_ascii_digit()).count();
        let Some(frac) = digits(&rest[1..1 + len]) else {
            return Read::Unsure;
        };
        micros = match len {
            3 => frac * 1000,
            6 => frac,
            _ => return Read::Unsure,
        };
        rest = &rest[1 + len..];
    }
    let offset = match rest {
        [] | [b'Z'] | [b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let (Some(h), Some(m)) = (digits(&[*h1, *h2]), digits(&[*m1, *m2])) else {
                return Read::Unsure;
            };
            if h > 23 || m > 59 {
                return Read::Unsure;
            }
            let seconds = h * 3600 + m * 60;
            if *sign == b'+' {
                seconds
            } else {
                -seconds
            }
        }
        _ => return Read::Unsure,
    };
    let seconds =
        days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second - offset;
    let total = seconds * 1_000_000 + micros;
    // Python divides the exact integer of microseconds: one rounding, the same here below 2**53.
    if !(0..(1i64 << 53)).contains(&total) {
        return Read::Unsure;
    }
    Read::At(total as f64 / 1e6)
}

/// A JSON string value as Python's parser would read it.
pub fn string(text: &str) -> Read {
    if text.len() >= 10 && text.as_bytes()[4] == b'-' {
        return iso(text);
    }
    Read::Unsure
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(read: Read) -> Option<f64> {
        match read {
            Read::At(ts) => Some(ts),
            _ => None,
        }
    }

    #[test]
    fn numbers_are_seconds_or_milliseconds_within_range() {
        assert_eq!(at(number(1_704_067_200.0)), Some(1_704_067_200.0));
        assert_eq!(at(number(1_704_067_200_500.0)), Some(1_704_067_200.5));
        assert_eq!(at(number(EPOCH_MS_THRESHOLD)), Some(EPOCH_MS_THRESHOLD)); // at it: seconds
        assert_eq!(at(number(0.0)), Some(0.0));
        assert_eq!(at(number(MAX_TS * 1000.0)), Some(MAX_TS));
        for not in [-1.0, f64::NAN, f64::INFINITY, MAX_TS * 1000.0 + 1000.0] {
            assert!(matches!(number(not), Read::Not), "{not}");
        }
    }

    #[test]
    fn iso_timestamps_of_the_common_shapes() {
        for (text, ts) in [
            ("2024-01-01T00:00:00Z", 1_704_067_200.0),
            ("2024-01-01 00:00:00", 1_704_067_200.0),
            ("2024-01-01T00:00:00z", 1_704_067_200.0),
            ("2024-01-01T01:30:00+01:30", 1_704_067_200.0),
            ("2023-12-31T23:00:00-01:00", 1_704_067_200.0),
            ("2024-02-29T00:00:00Z", 1_709_164_800.0),
            ("1970-01-01T00:00:00.123Z", 0.123),
            ("1970-01-01T00:00:00.000001", 0.000_001),
        ] {
            assert_eq!(at(string(text)), Some(ts), "{text}");
        }
    }

    #[test]
    fn other_shapes_are_left_to_python() {
        for text in [
            "2024-01-01",             // a date alone
            "2024-01-01T00:00:00.5Z", // neither milliseconds nor microseconds
            "2024-01-01T00:00:00.1234Z",
            "2023-02-29T00:00:00Z", // no such day
            "2024-13-01T00:00:00Z",
            "2024-01-01T24:00:00Z",
            "2024-01-01T00:00:60Z",
            "2024-01-01T00:00:00+0100", // offset without a colon
            "2024-01-01T00:00:00+24:00",
            "2024-01-01T00:00:00 UTC",
            "1969-12-31T23:59:59Z", // before the epoch
            "0000-01-01T00:00:00Z",
            "Jan  1 00:00:00 2024",
            "１９７０-01-01T00:00:00Z",
            "9999-12-31T23:59:59Z", // past 2**53 microseconds: Python's one rounding may differ
        ] {
            assert!(matches!(string(text), Read::Unsure), "{text}");
        }
    }
}
