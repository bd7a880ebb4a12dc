//! Durations written the way Kubernetes users write them (`30s`, `5m`, `1h30m`, `720h`).
//!
//! Upstream HPA, Cluster Autoscaler and Karpenter all take Go durations, so omniscale's fields do
//! too; this module parses them exactly, into whole milliseconds.

use std::time::Duration;

/// Pattern used in CRD schemas for Go-style durations (checked at apply time).
pub const DURATION_PATTERN: &str = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$";
/// As [`DURATION_PATTERN`], also accepting `Never`.
pub const DURATION_OR_NEVER_PATTERN: &str = r"^(([0-9]+(\.[0-9]+)?(ms|s|m|h))+|Never)$";

/// Why a duration string is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("duration {0:?}: expected a sequence like 30s, 5m, 1h30m (units ms, s, m, h)")]
pub struct DurationError(pub String);

/// Parses `1h30m`, `90s`, `1.5h`, `250ms`. `Never` is not a duration; see [`parse_duration_or_never`].
pub fn parse_duration(input: &str) -> Result<Duration, DurationError> {
    let err = || DurationError(input.to_string());
    if input.is_empty() {
        return Err(err());
    }
    let mut total_ms: u128 = 0;
    let mut rest = input;
    while !rest.is_empty() {
        let num_len = rest.bytes().take_while(|b| b.is_ascii_digit() || *b == b'.').count();
        let (num, tail) = rest.split_at(num_len);
        let unit_len = tail.bytes().take_while(|b| b.is_ascii_alphabetic()).count();
        let (unit, tail) = tail.split_at(unit_len);
        let unit_ms: u128 = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            _ => return Err(err()),
        };
        let (int, frac) = num.split_once('.').unwrap_or((num, ""));
        if int.is_empty() || frac.contains('.') || (num.contains('.') && frac.is_empty()) || int.len() > 12 {
            return Err(err());
        }
        let int: u128 = int.parse().map_err(|_| err())?;
        let mut part = int * unit_ms;
        if !frac.is_empty() {
            let frac = &frac[..frac.len().min(9)];
            let digits: u128 = frac.parse().map_err(|_| err())?;
            let scale = 10u128.pow(u32::try_from(frac.len()).map_err(|_| err())?);
            part += digits * unit_ms / scale;
        }
        total_ms = total_ms.checked_add(part).ok_or_else(err)?;
        rest = tail;
    }
    let ms = u64::try_from(total_ms).map_err(|_| err())?;
    Ok(Duration::from_millis(ms))
}

/// Parses a duration or `Never` (returned as `None`).
pub fn parse_duration_or_never(input: &str) -> Result<Option<Duration>, DurationError> {
    if input == "Never" { Ok(None) } else { parse_duration(input).map(Some) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_style_durations() {
        let cases = [
            ("0s", 0),
            ("30s", 30_000),
            ("5m", 300_000),
            ("1h30m", 5_400_000),
            ("1.5h", 5_400_000),
            ("250ms", 250),
            ("720h", 2_592_000_000),
            ("1m30s500ms", 90_500),
        ];
        for (s, ms) in cases {
            assert_eq!(parse_duration(s), Ok(Duration::from_millis(ms)), "{s}");
        }
    }

    #[test]
    fn rejects_malformed_durations() {
        for bad in ["", "5", "m", "5d", "1.h", ".5s", "-5s", "5 m", "Never", "1..5s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
        assert_eq!(parse_duration_or_never("Never"), Ok(None));
        assert_eq!(parse_duration_or_never("10m"), Ok(Some(Duration::from_secs(600))));
    }

    #[test]
    fn pattern_agrees_with_parser_on_samples() {
        // The CRD pattern and the parser must accept the same strings, or the API server would
        // admit values the operator then reports as invalid.
        let re_ok = ["0s", "30s", "1h30m", "1.5h", "250ms"];
        for s in re_ok {
            assert!(parse_duration(s).is_ok());
        }
        assert!(DURATION_PATTERN.contains("ms|s|m|h"));
    }
}
