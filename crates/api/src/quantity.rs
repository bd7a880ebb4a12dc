//! Exact Kubernetes quantities.
//!
//! Every engine compares resources as integers (upstream HPA/VPA compare int64 milli-values), so
//! this module parses a quantity string into an exact count of milli-units and formats it back in
//! the canonical form the API server would print. No floating point is involved anywhere, which
//! is what lets the engines reproduce upstream decisions bit for bit.
//!
//! Semantics follow `k8s.io/apimachinery/pkg/api/resource`:
//! - grammar `<sign><digits>[.<digits>]<suffix>` with suffixes `n u m "" k M G T P E`,
//!   `Ki Mi Gi Ti Pi Ei` and exponents `e<int>` / `E<int>`;
//! - precision finer than a milli-unit is rounded away from zero (`0.1m` → `1m`), as upstream
//!   does when it reports milli-values;
//! - the suffix family is remembered (binary, decimal, exponent) and used when formatting;
//! - canonical output never has fractional digits and uses the largest suffix that keeps the
//!   value exact (`1.5Gi` → `1536Mi`, `1.5` → `1500m`, `262144000` with a decimal suffix → `262144k`).
//!
//! Deviation: magnitudes above 2^63-1 units are rejected with [`QuantityError::OutOfRange`]
//! instead of being silently capped.

use std::{cmp::Ordering, fmt, str::FromStr};

use k8s_openapi::apimachinery::pkg::api::resource::Quantity as K8sQuantity;

/// Largest magnitude a quantity may have, in whole units (upstream's int64 limit).
const MAX_UNITS: i128 = i64::MAX as i128;
/// Largest magnitude in milli-units.
const MAX_MILLI: i128 = MAX_UNITS * 1000;

/// Why a string is not a Kubernetes quantity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    /// Nothing to parse.
    #[error("empty quantity")]
    Empty,
    /// The numeric part is malformed.
    #[error("quantity {0:?}: expected a number such as 100, 1.5 or .5 before the suffix")]
    BadNumber(String),
    /// The suffix is not one Kubernetes knows.
    #[error(
        "quantity {input:?}: unknown suffix {suffix:?} (expected one of n u m k M G T P E Ki Mi Gi Ti Pi Ei or e<exponent>)"
    )]
    BadSuffix {
        /// The whole input.
        input: String,
        /// The part after the number.
        suffix: String,
    },
    /// The value does not fit the range upstream allows.
    #[error("quantity {0:?} is out of range (magnitude must be below 2^63 units)")]
    OutOfRange(String),
}

/// How a quantity prints: the suffix family it was written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Format {
    /// `Ki`, `Mi`, … (powers of 1024).
    BinarySi,
    /// `m`, `k`, `M`, … (powers of 1000).
    #[default]
    DecimalSi,
    /// `e3`, `e6`, … (powers of ten, multiples of three).
    DecimalExponent,
}

/// An exact quantity: a signed count of milli-units plus the suffix family to print it with.
///
/// Equality and ordering look at the value only, so `1Ki == 1024`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Quantity {
    milli: i128,
    format: Format,
}

impl PartialEq for Quantity {
    fn eq(&self, other: &Self) -> bool {
        self.milli == other.milli
    }
}
impl Eq for Quantity {}
impl PartialOrd for Quantity {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Quantity {
    fn cmp(&self, other: &Self) -> Ordering {
        self.milli.cmp(&other.milli)
    }
}
impl std::hash::Hash for Quantity {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.milli.hash(state);
    }
}

impl Quantity {
    /// Zero, printed as `0`.
    pub const ZERO: Quantity = Quantity { milli: 0, format: Format::DecimalSi };

    /// A quantity of `milli` thousandths of a unit (cpu millicores, for instance).
    ///
    /// Values beyond the upstream range are clamped to it.
    pub fn from_milli(milli: i128, format: Format) -> Self {
        Quantity { milli: milli.clamp(-MAX_MILLI, MAX_MILLI), format }
    }

    /// A quantity of whole units (bytes, pods, cores).
    pub fn from_units(units: i128, format: Format) -> Self {
        Self::from_milli(units.saturating_mul(1000), format)
    }

    /// The exact value in milli-units.
    pub fn milli(&self) -> i128 {
        self.milli
    }

    /// The value in whole units, rounded away from zero as upstream's `Value()` does
    /// (a request of `100m` cpu is one whole core when counted in cores).
    pub fn units_ceil(&self) -> i128 {
        div_away_from_zero(self.milli, 1000)
    }

    /// The suffix family this quantity prints with.
    pub fn format(&self) -> Format {
        self.format
    }

    /// The same value printed in another suffix family.
    pub fn with_format(self, format: Format) -> Self {
        Quantity { format, ..self }
    }

    /// True for negative values; requests, limits and capacities must never be.
    pub fn is_negative(&self) -> bool {
        self.milli < 0
    }

    /// Parses a Kubernetes quantity string.
    pub fn parse(input: &str) -> Result<Self, QuantityError> {
        parse(input)
    }
}

impl FromStr for Quantity {
    type Err = QuantityError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse(s)
    }
}

impl TryFrom<&K8sQuantity> for Quantity {
    type Error = QuantityError;
    fn try_from(q: &K8sQuantity) -> Result<Self, Self::Error> {
        parse(&q.0)
    }
}

impl From<Quantity> for K8sQuantity {
    fn from(q: Quantity) -> Self {
        K8sQuantity(q.to_string())
    }
}

/// Integer division rounding away from zero.
fn div_away_from_zero(n: i128, d: i128) -> i128 {
    let q = n / d;
    if n % d == 0 {
        q
    } else if n < 0 {
        q - 1
    } else {
        q + 1
    }
}

fn pow10(exp: u32) -> Option<i128> {
    10i128.checked_pow(exp)
}

fn parse(input: &str) -> Result<Quantity, QuantityError> {
    if input.is_empty() {
        return Err(QuantityError::Empty);
    }
    let out_of_range = || QuantityError::OutOfRange(input.to_string());
    let bytes = input.as_bytes();
    let (negative, rest) = match bytes[0] {
        b'-' => (true, &input[1..]),
        b'+' => (false, &input[1..]),
        _ => (false, input),
    };
    let number_len = rest.bytes().take_while(|b| b.is_ascii_digit() || *b == b'.').count();
    let (number, suffix) = rest.split_at(number_len);
    let (int_part, frac_part) = match number.split_once('.') {
        Some((i, f)) => (i, f),
        None => (number, ""),
    };
    if (int_part.is_empty() && frac_part.is_empty()) || frac_part.contains('.') {
        return Err(QuantityError::BadNumber(input.to_string()));
    }
    let (base_pow10, binary_pow) = match suffix_scale(suffix) {
        Some(s) => s,
        None => {
            return Err(QuantityError::BadSuffix { input: input.to_string(), suffix: suffix.to_string() });
        }
    };
    let format = if binary_pow > 0 {
        Format::BinarySi
    } else if suffix.starts_with(['e', 'E']) && suffix.len() > 1 {
        Format::DecimalExponent
    } else {
        Format::DecimalSi
    };

    // The mantissa as an integer: all significant digits, with the decimal point moved to the
    // right by `frac_len` places. Digits beyond what i128 can hold only matter as "non-zero
    // remainder", which rounds the result away from zero.
    let int_part = int_part.trim_start_matches('0');
    if int_part.len() > 30 {
        return Err(out_of_range());
    }
    let frac_kept: &str = &frac_part[..frac_part.len().min(30)];
    let frac_dropped_nonzero = frac_part[frac_kept.len()..].bytes().any(|b| b != b'0');
    let mut mantissa: i128 = 0;
    for b in int_part.bytes().chain(frac_kept.bytes()) {
        mantissa = mantissa * 10 + i128::from(b - b'0');
    }
    let frac_len = frac_kept.len() as i64;

    // value in milli = mantissa * 1024^binary_pow * 10^(base_pow10 + 3 - frac_len)
    let mut scaled = mantissa;
    for _ in 0..binary_pow {
        scaled = scaled.checked_mul(1024).ok_or_else(out_of_range)?;
    }
    let exp = base_pow10 + 3 - frac_len;
    let milli = if exp >= 0 {
        if scaled == 0 {
            0
        } else {
            let factor = u32::try_from(exp).ok().and_then(pow10).ok_or_else(out_of_range)?;
            let v = scaled.checked_mul(factor).ok_or_else(out_of_range)?;
            if frac_dropped_nonzero { v + 1 } else { v }
        }
    } else {
        match u32::try_from(-exp).ok().and_then(pow10) {
            Some(divisor) => {
                let q = scaled / divisor;
                if scaled % divisor != 0 || frac_dropped_nonzero { q + 1 } else { q }
            }
            // Smaller than any representable fraction: a non-zero value rounds up to 1m.
            None => i128::from(scaled != 0 || frac_dropped_nonzero),
        }
    };
    if milli > MAX_MILLI {
        return Err(out_of_range());
    }
    Ok(Quantity { milli: if negative { -milli } else { milli }, format })
}

/// Power of ten and power of 1024 a suffix stands for.
fn suffix_scale(suffix: &str) -> Option<(i64, u32)> {
    Some(match suffix {
        "" => (0, 0),
        "n" => (-9, 0),
        "u" => (-6, 0),
        "m" => (-3, 0),
        "k" => (3, 0),
        "M" => (6, 0),
        "G" => (9, 0),
        "T" => (12, 0),
        "P" => (15, 0),
        "E" => (18, 0),
        "Ki" => (0, 1),
        "Mi" => (0, 2),
        "Gi" => (0, 3),
        "Ti" => (0, 4),
        "Pi" => (0, 5),
        "Ei" => (0, 6),
        s if s.starts_with(['e', 'E']) => {
            let digits = &s[1..];
            let unsigned = digits.strip_prefix(['+', '-']).unwrap_or(digits);
            if unsigned.is_empty() || unsigned.len() > 4 || !unsigned.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            (digits.parse::<i64>().ok()?, 0)
        }
        _ => return None,
    })
}

const DECIMAL_SUFFIXES: [&str; 7] = ["", "k", "M", "G", "T", "P", "E"];
const BINARY_SUFFIXES: [&str; 7] = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"];

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let milli = self.milli;
        if milli == 0 {
            return f.write_str("0");
        }
        let whole = milli % 1000 == 0;
        let units = milli / 1000;
        // Binary form only for whole values of at least 1Ki, like upstream.
        if self.format == Format::BinarySi && whole && units.abs() >= 1024 {
            let mut mantissa = units;
            let mut i = 0;
            while i + 1 < BINARY_SUFFIXES.len() && mantissa % 1024 == 0 {
                mantissa /= 1024;
                i += 1;
            }
            return write!(f, "{mantissa}{}", BINARY_SUFFIXES[i]);
        }
        if !whole {
            return match self.format {
                Format::DecimalExponent => write!(f, "{milli}e-3"),
                _ => write!(f, "{milli}m"),
            };
        }
        let mut mantissa = units;
        let mut i = 0;
        while i + 1 < DECIMAL_SUFFIXES.len() && mantissa % 1000 == 0 {
            mantissa /= 1000;
            i += 1;
        }
        match self.format {
            Format::DecimalExponent if i > 0 => write!(f, "{mantissa}e{}", i * 3),
            _ => write!(f, "{mantissa}{}", DECIMAL_SUFFIXES[i]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn q(s: &str) -> Quantity {
        match Quantity::parse(s) {
            Ok(q) => q,
            Err(e) => panic!("{s}: {e}"),
        }
    }

    #[test]
    fn parses_to_exact_milli_values() {
        let cases: &[(&str, i128)] = &[
            ("0", 0),
            ("100m", 100),
            ("1", 1000),
            ("1.5", 1500),
            (".5", 500),
            ("5.", 5000),
            ("+2", 2000),
            ("-2", -2000),
            ("1k", 1_000_000),
            ("1Ki", 1_024_000),
            ("512Mi", 512 * 1024 * 1024 * 1000),
            ("1.5Gi", 1_610_612_736_000),
            ("262144k", 262_144_000_000),
            ("1e3", 1_000_000),
            ("1E3", 1_000_000),
            ("1.5e3", 1_500_000),
            ("2e-3", 2),
            ("1M", 1_000_000_000),
            ("1Ei", 1_152_921_504_606_846_976_000),
            ("250n", 1),
            ("1u", 1),
            ("0.1m", 1),
            ("1500u", 2),
            ("0.0001", 1),
            ("-0.1m", -1),
            ("0.000000000000000000000000000000000001", 1),
            ("000123", 123_000),
            ("0.5Ki", 512_000),
            ("0.1Ki", 102_400),
        ];
        for (s, milli) in cases {
            assert_eq!(q(s).milli(), *milli, "{s}");
        }
    }

    #[test]
    fn remembers_the_suffix_family() {
        assert_eq!(q("1Gi").format(), Format::BinarySi);
        assert_eq!(q("1G").format(), Format::DecimalSi);
        assert_eq!(q("1e9").format(), Format::DecimalExponent);
        assert_eq!(q("1E").format(), Format::DecimalSi, "E alone is exa, not an exponent");
        assert_eq!(q("1E").milli(), 1_000_000_000_000_000_000_000);
    }

    #[test]
    fn formats_canonically_like_the_api_server() {
        let cases: &[(&str, &str)] = &[
            ("0", "0"),
            ("100m", "100m"),
            ("1000m", "1"),
            ("1.5", "1500m"),
            ("1.5Gi", "1536Mi"),
            ("1024Mi", "1Gi"),
            ("512Mi", "512Mi"),
            ("1.5Ki", "1536"),
            ("1023Ki", "1023Ki"),
            ("0.5Ki", "512"),
            ("0.1Ki", "102400m"),
            ("262144k", "262144k"),
            ("262144000", "262144k"),
            ("1000k", "1M"),
            ("1e3", "1e3"),
            ("1.5e3", "1500"),
            ("1500e-3", "1500e-3"),
            ("2000e-3", "2"),
            ("-1.5Gi", "-1536Mi"),
            ("-100m", "-100m"),
            ("0.1m", "1m"),
            ("9E", "9E"),
            ("1000000M", "1T"),
        ];
        for (input, canonical) in cases {
            assert_eq!(q(input).to_string(), *canonical, "{input}");
        }
    }

    #[test]
    fn rejects_what_is_not_a_quantity_with_a_reason() {
        for bad in ["", "Mi", "1.2.3", "1 Mi", "1i", "--1", "1e", "1e+", "abc", "1mm", "1KiB", ".", "+", "1e99999"] {
            assert!(Quantity::parse(bad).is_err(), "{bad:?} should be rejected");
        }
        assert!(matches!(Quantity::parse("9Ei"), Err(QuantityError::OutOfRange(_))));
        assert!(matches!(Quantity::parse("1e30"), Err(QuantityError::OutOfRange(_))));
        assert!(matches!(Quantity::parse("1x"), Err(QuantityError::BadSuffix { .. })));
        assert_eq!(Quantity::parse("8Ei").map(|q| q.units_ceil()), Err(QuantityError::OutOfRange("8Ei".into())));
        assert_eq!(Quantity::parse("7Ei").map(|q| q.units_ceil()), Ok(7 * (1i128 << 60)));
    }

    #[test]
    fn units_round_away_from_zero() {
        assert_eq!(q("100m").units_ceil(), 1);
        assert_eq!(q("-100m").units_ceil(), -1);
        assert_eq!(q("2").units_ceil(), 2);
        assert_eq!(q("1.5Gi").units_ceil(), 1_610_612_736);
    }

    #[test]
    fn converts_to_and_from_k8s_openapi() {
        let k = K8sQuantity("1.5Gi".into());
        let ours = Quantity::try_from(&k).map_err(|e| e.to_string());
        assert_eq!(ours.map(K8sQuantity::from), Ok(K8sQuantity("1536Mi".into())));
    }

    fn any_format() -> impl Strategy<Value = Format> {
        prop_oneof![Just(Format::BinarySi), Just(Format::DecimalSi), Just(Format::DecimalExponent)]
    }

    fn any_suffix() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec!["", "m", "k", "M", "G", "Ki", "Mi", "Gi", "Ti", "e3", "e-3", "e6", "E2", "u", "n"])
    }

    proptest! {
        #[test]
        fn format_then_parse_is_identity(milli in -(1i128 << 70)..(1i128 << 70), format in any_format()) {
            let original = Quantity::from_milli(milli, format);
            let text = original.to_string();
            let back = Quantity::parse(&text);
            prop_assert_eq!(back.clone().map(|b| b.milli()), Ok(milli), "{}", text);
            // Formatting is a fixed point: the canonical text prints as itself.
            prop_assert_eq!(back.map(|b| b.to_string()), Ok(text));
        }

        #[test]
        fn parsing_preserves_order(a in 0u64..1_000_000, b in 0u64..1_000_000,
                                   fa in 0u32..4, sa in any_suffix(), sb in any_suffix()) {
            // The same digits with the same suffix compare like the digits.
            let text_a = format!("{a}.{fa}{sa}");
            let text_b = format!("{b}.{fa}{sa}");
            let (qa, qb) = (q(&text_a), q(&text_b));
            // Rounding up to whole milli-units keeps order monotone; with a suffix of at least one
            // unit nothing is rounded and order is exact.
            if a <= b {
                prop_assert!(qa <= qb);
            }
            if q(&format!("1{sa}")).milli() >= 1000 {
                prop_assert_eq!(qa.cmp(&qb), a.cmp(&b));
            }
            // And a larger suffix never makes a positive value smaller.
            let bigger = format!("{a}{sb}");
            let smaller = format!("{a}{sa}");
            let (qbig, qsmall) = (q(&bigger), q(&smaller));
            let scale = |s: &str| { let one = q(&format!("1{s}")); one.milli() };
            if a > 0 && scale(sb) > scale(sa) {
                prop_assert!(qbig >= qsmall, "{} < {}", bigger, smaller);
            }
        }

        #[test]
        fn parse_never_panics(s in "\\PC{0,24}") {
            let _ = Quantity::parse(&s);
        }

        #[test]
        fn decimal_text_matches_integer_arithmetic(units in 0i64..i64::MAX / 1024, suffix in prop::sample::select(vec![("", 1i128), ("Ki", 1024), ("k", 1000)])) {
            let (s, mult) = suffix;
            let text = format!("{units}{s}");
            if let Ok(parsed) = Quantity::parse(&text) {
                prop_assert_eq!(parsed.milli(), i128::from(units) * mult * 1000);
            } else {
                prop_assert!(i128::from(units) * mult > MAX_UNITS);
            }
        }
    }
}
