//! RFC 3339 timestamps (`metadata.creationTimestamp`), as Kubernetes writes them
//! (`2024-05-01T12:00:00Z`) and as RFC 3339 allows (fractions, offsets).

use crate::model::Timestamp;

/// Parses `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`; the error says what is wrong.
pub(crate) fn parse_rfc3339(s: &str) -> Result<Timestamp, String> {
    let bytes = s.as_bytes();
    let invalid = |why: &str| {
        Err(format!(
            "invalid RFC 3339 timestamp {s:?} ({why}); expected e.g. \"2024-05-01T12:00:00Z\""
        ))
    };
    let digits = |from: usize, len: usize| -> Option<i64> {
        let part = bytes.get(from..from + len)?;
        if !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(part).ok()?.parse().ok()
    };
    let sep = |at: usize, allowed: &[u8]| bytes.get(at).is_some_and(|b| allowed.contains(b));

    let (Some(year), Some(month), Some(day)) = (digits(0, 4), digits(5, 2), digits(8, 2)) else {
        return invalid("bad date");
    };
    if !sep(4, b"-") || !sep(7, b"-") || !sep(10, b"Tt ") {
        return invalid("bad date separators");
    }
    let (Some(hour), Some(minute), Some(second)) = (digits(11, 2), digits(14, 2), digits(17, 2))
    else {
        return invalid("bad time");
    };
    if !sep(13, b":") || !sep(16, b":") {
        return invalid("bad time separators");
    }
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return invalid("day or month out of range");
    }
    // 60 is a leap second, which RFC 3339 allows; it is counted as :59 plus a second.
    if hour > 23 || minute > 59 || second > 60 {
        return invalid("time out of range");
    }

    let mut pos = 19;
    let mut nanos: u32 = 0;
    if sep(pos, b".") {
        pos += 1;
        let start = pos;
        while bytes.get(pos).is_some_and(u8::is_ascii_digit) {
            if pos - start < 9 {
                let d = bytes.get(pos).map_or(0, |b| u32::from(b - b'0'));
                nanos = nanos * 10 + d;
            }
            pos += 1;
        }
        let n = pos - start;
        if n == 0 {
            return invalid("empty fraction");
        }
        for _ in n..9 {
            nanos *= 10;
        }
    }

    let offset_seconds = match bytes.get(pos) {
        Some(b'Z' | b'z') if pos + 1 == bytes.len() => 0,
        Some(sign @ (b'+' | b'-')) if pos + 6 == bytes.len() => {
            let (Some(oh), Some(om)) = (digits(pos + 1, 2), digits(pos + 4, 2)) else {
                return invalid("bad offset");
            };
            if !sep(pos + 3, b":") || oh > 23 || om > 59 {
                return invalid("bad offset");
            }
            let off = oh * 3600 + om * 60;
            if *sign == b'-' {
                -off
            } else {
                off
            }
        }
        _ => return invalid("missing or bad time zone (Z or ±HH:MM)"),
    };

    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offset_seconds;
    Ok(Timestamp { seconds, nanos })
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Formats `t` as Kubernetes writes it (`2024-05-01T12:00:00Z`; a fraction only when there are
/// nanoseconds). [`parse_rfc3339`] reads it back to the same value.
pub(crate) fn format_rfc3339(t: Timestamp) -> String {
    let days = t.seconds.div_euclid(86_400);
    let secs = t.seconds.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    let (hour, minute, second) = (secs / 3600, secs / 60 % 60, secs % 60);
    let fraction = if t.nanos == 0 {
        String::new()
    } else {
        format!(".{:09}", t.nanos)
    };
    format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}{fraction}Z")
}

/// The date of a day count since 1970-01-01 (Howard Hinnant's algorithm, inverse of
/// [`days_from_civil`]).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Days since 1970-01-01 (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kubernetes_timestamps() {
        assert_eq!(
            parse_rfc3339("1970-01-01T00:00:00Z").unwrap(),
            Timestamp {
                seconds: 0,
                nanos: 0
            }
        );
        assert_eq!(
            parse_rfc3339("2024-05-01T12:00:00Z").unwrap().seconds,
            1_714_564_800
        );
        assert_eq!(
            parse_rfc3339("2024-05-01T14:00:00+02:00").unwrap().seconds,
            1_714_564_800
        );
        assert_eq!(
            parse_rfc3339("2024-05-01T12:00:00.5Z").unwrap(),
            Timestamp {
                seconds: 1_714_564_800,
                nanos: 500_000_000
            }
        );
        assert_eq!(parse_rfc3339("1969-12-31T23:59:59Z").unwrap().seconds, -1);
        assert_eq!(
            parse_rfc3339("2024-02-29T00:00:00Z").unwrap().seconds,
            1_709_164_800
        );
    }

    #[test]
    fn formats_what_it_parses() {
        for text in [
            "1970-01-01T00:00:00Z",
            "2024-05-01T12:00:00Z",
            "2024-02-29T23:59:59.000000001Z",
            "1969-12-31T23:59:59.500000000Z",
            "0001-01-01T00:00:00Z",
            "9999-12-31T23:59:59Z",
        ] {
            let t = parse_rfc3339(text).unwrap();
            assert_eq!(format_rfc3339(t), text);
            assert_eq!(parse_rfc3339(&format_rfc3339(t)).unwrap(), t);
        }
        let offset = parse_rfc3339("2024-05-01T14:00:00.5+02:00").unwrap();
        assert_eq!(format_rfc3339(offset), "2024-05-01T12:00:00.500000000Z");
    }

    #[test]
    fn rejects_malformed_timestamps() {
        for bad in [
            "",
            "yesterday",
            "2024-05-01",
            "2024-05-01T12:00:00",
            "2024-13-01T12:00:00Z",
            "2023-02-29T12:00:00Z",
            "2024-05-01T25:00:00Z",
            "2024-05-01T12:00:00.Z",
            "2024-05-01T12:00:00Zjunk",
            "2024-05-01T12:00:00+0200",
        ] {
            assert!(parse_rfc3339(bad).is_err(), "{bad:?} should be rejected");
        }
        assert!(parse_rfc3339("x")
            .unwrap_err()
            .contains("invalid RFC 3339 timestamp \"x\""));
    }
}
