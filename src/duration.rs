//! Go's `time.Duration` syntax, parsed and printed: `"1h2m3.5s"`, `"300ms"`,
//! `"-2m"`, `"0"`.
//!
//! One parser serves `service.json` ([`crate::config::GoDuration`], which
//! refuses negative values), the REST API's `expire-in` pin option and the
//! client's `--expire-in`. Its error messages are Go's `time.ParseDuration`
//! errors, which the REST API passes on.

use std::time::Duration;

use chrono::TimeDelta;

/// A string that is not a Go duration (or is a negative one where only
/// non-negative durations make sense).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("time: invalid duration {}", go_quote(.0))]
    Invalid(String),
    #[error("time: missing unit in duration {}", go_quote(.0))]
    MissingUnit(String),
    #[error("time: unknown unit {} in duration {}", go_quote(.unit), go_quote(.input))]
    UnknownUnit { unit: String, input: String },
    /// A valid but negative duration, from [`parse_std_duration`] only.
    #[error("invalid duration {0:?}: negative durations are not allowed")]
    Negative(String),
}

/// Go's `time.ParseDuration`, returning nanoseconds: an optional sign, then
/// one or more decimal numbers (fractions allowed) each with a unit among
/// `ns us µs ms s m h`, e.g. `"1h30m"`, `"1.5s"`, `"-2m"`; a bare `"0"` is
/// zero. Values beyond the range of Go's int64 nanoseconds are rejected as in
/// Go, and fractions use Go's float arithmetic, so `"0.3333333333333333333h"`
/// is exactly 20 minutes as in Go.
pub fn parse_go_duration(input: &str) -> Result<i64, DurationError> {
    const LIMIT: u64 = 1 << 63;
    let invalid = || DurationError::Invalid(input.to_owned());

    let (negative, mut s) = match input.as_bytes().first() {
        Some(b'-') => (true, &input[1..]),
        Some(b'+') => (false, &input[1..]),
        _ => (false, input),
    };
    if s == "0" {
        return Ok(0);
    }
    if s.is_empty() {
        return Err(invalid());
    }
    let mut total: u64 = 0;
    while !s.is_empty() {
        let starts_number = s.starts_with('.') || s.starts_with(|c: char| c.is_ascii_digit());
        if !starts_number {
            return Err(invalid());
        }
        // The integer part; overflow is an error.
        let digits = s.bytes().take_while(u8::is_ascii_digit).count();
        let mut whole: u64 = 0;
        for b in s[..digits].bytes() {
            whole = whole
                .checked_mul(10)
                .and_then(|w| w.checked_add(u64::from(b - b'0')))
                .filter(|w| *w <= LIMIT)
                .ok_or_else(invalid)?;
        }
        s = &s[digits..];
        // The fraction; digits past what fits are ignored, as in Go's
        // leadingFraction.
        let mut fraction: u64 = 0;
        let mut scale: f64 = 1.0;
        let mut fraction_digits = 0;
        if let Some(rest) = s.strip_prefix('.') {
            fraction_digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            let mut overflow = false;
            for b in rest[..fraction_digits].bytes() {
                if overflow {
                    continue;
                }
                match fraction
                    .checked_mul(10)
                    .and_then(|f| f.checked_add(u64::from(b - b'0')))
                    .filter(|f| *f <= LIMIT)
                {
                    Some(f) => {
                        fraction = f;
                        scale *= 10.0;
                    }
                    None => overflow = true,
                }
            }
            s = &rest[fraction_digits..];
        }
        if digits == 0 && fraction_digits == 0 {
            return Err(invalid());
        }
        // The unit runs until the next number; it stops at ASCII bytes only,
        // so slicing there keeps `µ` whole.
        let unit_len = s
            .bytes()
            .take_while(|b| *b != b'.' && !b.is_ascii_digit())
            .count();
        if unit_len == 0 {
            return Err(DurationError::MissingUnit(input.to_owned()));
        }
        let unit = &s[..unit_len];
        s = &s[unit_len..];
        let nanos_per_unit: u64 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => {
                return Err(DurationError::UnknownUnit {
                    unit: unit.to_owned(),
                    input: input.to_owned(),
                });
            }
        };
        if whole > LIMIT / nanos_per_unit {
            return Err(invalid());
        }
        let mut value = whole * nanos_per_unit;
        if fraction > 0 {
            // Float, as in Go, to stay exact to the nanosecond for fractions
            // of an hour; truncating like Go's uint64(float64).
            value += (fraction as f64 * (nanos_per_unit as f64 / scale)) as u64;
            if value > LIMIT {
                return Err(invalid());
            }
        }
        total = total
            .checked_add(value)
            .filter(|t| *t <= LIMIT)
            .ok_or_else(invalid)?;
    }
    let nanos = if negative {
        -i128::from(total)
    } else {
        i128::from(total)
    };
    i64::try_from(nanos).map_err(|_| invalid())
}

/// [`parse_go_duration`] as a [`TimeDelta`] (for `expire-in`).
pub fn parse_time_delta(input: &str) -> Result<TimeDelta, DurationError> {
    parse_go_duration(input).map(TimeDelta::nanoseconds)
}

/// [`parse_go_duration`] for settings, which cannot be negative: a negative
/// value (`"-1s"`) is [`DurationError::Negative`]; `"-0s"` is zero.
pub fn parse_std_duration(input: &str) -> Result<Duration, DurationError> {
    let nanos = parse_go_duration(input)?;
    u64::try_from(nanos)
        .map(Duration::from_nanos)
        .map_err(|_| DurationError::Negative(input.to_owned()))
}

/// Go's `time.Duration.String()`: `"0s"`, `"1.5µs"`, `"300ms"`, `"2m0.5s"`,
/// `"1h0m0s"`.
pub fn format_go_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".to_owned();
    }
    if nanos < 1_000_000_000 {
        let (precision, unit) = if nanos < 1_000 {
            (0, "ns")
        } else if nanos < 1_000_000 {
            (3, "µs")
        } else {
            (6, "ms")
        };
        let scale = 10u128.pow(precision);
        return format!(
            "{}{}{unit}",
            nanos / scale,
            fraction_digits(nanos % scale, precision)
        );
    }
    let seconds = nanos / 1_000_000_000;
    let fraction = fraction_digits(nanos % 1_000_000_000, 9);
    let minutes = seconds / 60;
    let hours = minutes / 60;
    let mut out = String::new();
    if hours > 0 {
        out.push_str(&format!("{hours}h"));
    }
    if minutes > 0 {
        out.push_str(&format!("{}m", minutes % 60));
    }
    out.push_str(&format!("{}{fraction}s", seconds % 60));
    out
}

/// `.` and the digits of `value / 10^precision`, trailing zeros trimmed; empty for 0.
fn fraction_digits(value: u128, precision: u32) -> String {
    if value == 0 {
        return String::new();
    }
    let digits = format!("{value:0width$}", width = precision as usize);
    format!(".{}", digits.trim_end_matches('0'))
}

/// Go's `time` package quoting for error messages: double quotes, `"` and
/// `\` escaped, control and non-ASCII bytes as `\xNN`.
fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c.is_ascii() && !c.is_ascii_control() {
            if c == '"' || c == '\\' {
                out.push('\\');
            }
            out.push(c);
        } else {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("\\x{b:02x}"));
            }
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const NS: i64 = 1;
    const US: i64 = 1_000;
    const MS: i64 = 1_000_000;
    const S: i64 = 1_000_000_000;
    const M: i64 = 60 * S;
    const H: i64 = 60 * M;

    fn nanos(text: &str) -> i64 {
        parse_go_duration(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn durations_parse_like_go() {
        // Cases from Go's time_test.go, plus our own.
        let cases: &[(&str, i64)] = &[
            ("0", 0),
            ("5s", 5 * S),
            ("30s", 30 * S),
            ("1478s", 1478 * S),
            ("-5s", -5 * S),
            ("+5s", 5 * S),
            ("-0", 0),
            ("+0", 0),
            ("5.0s", 5 * S),
            ("5.6s", 5 * S + 600 * MS),
            ("5.s", 5 * S),
            ("1.s", S),
            (".5s", 500 * MS),
            ("1.0s", S),
            ("1.00s", S),
            ("1.004s", S + 4 * MS),
            ("1.0040s", S + 4 * MS),
            ("100.00100s", 100 * S + MS),
            ("1.5s", 1500 * MS),
            ("1ns", NS),
            ("10ns", 10 * NS),
            ("1us", US),
            ("11us", 11 * US),
            ("1µs", US),
            ("12µs", 12 * US),
            ("1μs", US),
            ("12μs", 12 * US),
            ("13ms", 13 * MS),
            ("300ms", 300 * MS),
            ("14s", 14 * S),
            ("15m", 15 * M),
            ("-2m", -2 * M),
            ("2m0s", 2 * M),
            ("16h", 16 * H),
            ("0.1h", 6 * M),
            ("1h30m", H + 30 * M),
            ("3h30m", 3 * H + 30 * M),
            ("10.5s4m", 4 * M + 10 * S + 500 * MS),
            ("-2m3.4s", -(2 * M + 3 * S + 400 * MS)),
            ("1h1m1s1ms1us1ns", H + M + S + MS + US + NS),
            (
                "1h2m3s4ms5us6ns",
                H + 2 * M + 3 * S + 4 * MS + 5 * US + 6 * NS,
            ),
            ("39h9m14.425s", 39 * H + 9 * M + 14 * S + 425 * MS),
            ("52763797000ns", 52763797000 * NS),
            ("0.3333333333333333333h", 20 * M),
            ("9007199254740993ns", (1 << 53) + 1),
            ("9223372036854775807ns", i64::MAX),
            ("9223372036854775.807us", i64::MAX),
            ("9223372036s854ms775us807ns", i64::MAX),
            ("-9223372036854775808ns", i64::MIN),
            ("0.100000000000000000000h", 6 * M),
            ("0.830103483285477580700h", 49 * M + 48 * S + 372_539_827),
        ];
        for (text, expected) in cases {
            assert_eq!(nanos(text), *expected, "{text}");
        }
    }

    #[test]
    fn bad_durations_are_refused() {
        for text in [
            "",
            "3",
            "-",
            "s",
            ".",
            "-.",
            ".s",
            "+.s",
            "1d",
            "9223372036854775810ns",
            "9223372036854775808ns",
            "1h-5m",
            "15 s",
        ] {
            assert!(parse_go_duration(text).is_err(), "{text:?} parsed");
        }
    }

    #[test]
    fn errors_are_gos() {
        let err = |s: &str| parse_go_duration(s).unwrap_err().to_string();
        assert_eq!(err(""), r#"time: invalid duration """#);
        assert_eq!(err("-"), r#"time: invalid duration "-""#);
        assert_eq!(err("1"), r#"time: missing unit in duration "1""#);
        assert_eq!(err("1d"), r#"time: unknown unit "d" in duration "1d""#);
        assert_eq!(err(".s"), r#"time: invalid duration ".s""#);
        assert_eq!(
            err("1s 2m"),
            r#"time: unknown unit "s " in duration "1s 2m""#
        );
        assert_eq!(
            err("9223372036854775808ns"),
            r#"time: invalid duration "9223372036854775808ns""#
        );
        assert_eq!(
            err("1é"),
            r#"time: unknown unit "\xc3\xa9" in duration "1\xc3\xa9""#
        );
        assert_eq!(err("3000000h"), r#"time: invalid duration "3000000h""#);
    }

    #[test]
    fn time_deltas_keep_the_sign() {
        assert_eq!(parse_time_delta("1h30m"), Ok(TimeDelta::minutes(90)));
        assert_eq!(parse_time_delta("-2m"), Ok(TimeDelta::minutes(-2)));
        assert_eq!(
            parse_time_delta("-9223372036854775808ns"),
            Ok(TimeDelta::nanoseconds(i64::MIN))
        );
        assert_eq!(
            parse_time_delta("soon"),
            Err(DurationError::Invalid("soon".to_owned()))
        );
    }

    #[test]
    fn std_durations_refuse_negatives() {
        assert_eq!(
            parse_std_duration("1h2m3.5s"),
            Ok(Duration::from_millis(3_723_500))
        );
        for zero in ["0", "-0", "+0", "-0s"] {
            assert_eq!(parse_std_duration(zero), Ok(Duration::ZERO), "{zero}");
        }
        assert_eq!(
            parse_std_duration("9223372036854775807ns"),
            Ok(Duration::from_nanos(i64::MAX as u64))
        );
        for text in ["-5s", "-2m3.4s", "-1ns", "-9223372036854775808ns"] {
            assert_eq!(
                parse_std_duration(text),
                Err(DurationError::Negative(text.to_owned())),
                "{text}"
            );
        }
        assert_eq!(
            parse_std_duration("-1s").unwrap_err().to_string(),
            r#"invalid duration "-1s": negative durations are not allowed"#
        );
        // Other errors are the parser's.
        assert_eq!(
            parse_std_duration("-1d"),
            Err(DurationError::UnknownUnit {
                unit: "d".to_owned(),
                input: "-1d".to_owned()
            })
        );
    }

    #[test]
    fn durations_print_like_go() {
        // Go's Duration.String() outputs, from time_test.go and the reference's files.
        let cases: &[(i64, &str)] = &[
            (0, "0s"),
            (1, "1ns"),
            (1100, "1.1µs"),
            (2_200_000, "2.2ms"),
            (300 * MS, "300ms"),
            (50 * MS, "50ms"),
            (3300 * MS, "3.3s"),
            (1500 * MS, "1.5s"),
            (15 * S, "15s"),
            (M, "1m0s"),
            (90 * S, "1m30s"),
            (2 * M + 500 * MS, "2m0.5s"),
            (4 * M + 5 * S, "4m5s"),
            (4 * M + 5001 * MS, "4m5.001s"),
            (H, "1h0m0s"),
            (24 * H, "24h0m0s"),
            (5 * H + 6 * M + 7001 * MS, "5h6m7.001s"),
            (8 * M + 1, "8m0.000000001s"),
            (i64::MAX, "2562047h47m16.854775807s"),
        ];
        for (n, text) in cases {
            let d = Duration::from_nanos(*n as u64);
            assert_eq!(format_go_duration(d), *text);
            assert_eq!(parse_std_duration(text), Ok(d), "{text} reparsed");
        }
    }
}
