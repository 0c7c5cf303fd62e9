//! Pod traffic shaping from the Kubernetes annotations
//! `kubernetes.io/ingress-bandwidth` and `kubernetes.io/egress-bandwidth`,
//! handed to CNI as the `bandwidth` capability (bits per second).

use krio_network::cni::Bandwidth;

use crate::error::Error;

/// The annotation for traffic into the pod.
pub const INGRESS: &str = "kubernetes.io/ingress-bandwidth";
/// The annotation for traffic out of the pod.
pub const EGRESS: &str = "kubernetes.io/egress-bandwidth";

/// The kubelet's sanity bounds: below 1 kbit/s or above 1 Pbit/s is a typo.
const MIN_BITS: u64 = 1_000;
const MAX_BITS: u64 = 1_000_000_000_000_000;

/// Bursts are not annotated; the largest the plugin accepts (as other
/// runtimes do) means "shape the rate only".
const BURST: u64 = u32::MAX as u64;

/// The pod's shaping, `None` when neither annotation is set. A value that
/// is not a quantity, or is out of bounds, is an `InvalidArgument` naming
/// the annotation.
pub fn from_annotations(
    annotations: &std::collections::HashMap<String, String>,
) -> Result<Option<Bandwidth>, Error> {
    let read = |key: &str| -> Result<Option<u64>, Error> {
        let Some(text) = annotations.get(key) else {
            return Ok(None);
        };
        let bits = parse_quantity(text).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "annotation {key} = {text:?} is not a quantity (e.g. 10M)"
            ))
        })?;
        if !(MIN_BITS..=MAX_BITS).contains(&bits) {
            return Err(Error::InvalidArgument(format!(
                "annotation {key} = {text:?} is out of range (1k to 1P bits per second)"
            )));
        }
        Ok(Some(bits))
    };
    let ingress = read(INGRESS)?;
    let egress = read(EGRESS)?;
    if ingress.is_none() && egress.is_none() {
        return Ok(None);
    }
    Ok(Some(Bandwidth {
        ingress_rate: ingress.unwrap_or_default(),
        ingress_burst: if ingress.is_some() { BURST } else { 0 },
        egress_rate: egress.unwrap_or_default(),
        egress_burst: if egress.is_some() { BURST } else { 0 },
    }))
}

/// A Kubernetes resource quantity (`10M`, `1.5Gi`, `100k`, `1e6`) as a whole
/// number, rounded up like the API's `Value()`. `None` for anything else
/// (negative values included).
pub fn parse_quantity(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    if number.is_empty() || number == "." || number.matches('.').count() > 1 {
        return None;
    }
    let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
    // Scale by a power of 10 and/or of 2; exact integer arithmetic.
    let (pow10, pow2): (i32, u32) = match suffix {
        "" => (0, 0),
        "m" => (-3, 0),
        "k" => (3, 0),
        "M" => (6, 0),
        "G" => (9, 0),
        "T" => (12, 0),
        "P" => (15, 0),
        "E" => (18, 0),
        "Ki" => (0, 10),
        "Mi" => (0, 20),
        "Gi" => (0, 30),
        "Ti" => (0, 40),
        "Pi" => (0, 50),
        "Ei" => (0, 60),
        exp if exp.starts_with(['e', 'E']) => (exp[1..].parse::<i32>().ok()?, 0),
        _ => return None,
    };
    // value = digits / 10^frac_len * 10^pow10 * 2^pow2
    let digits: u128 = format!("{int_part}{frac_part}").parse().ok()?;
    let exp10 = pow10 - i32::try_from(frac_part.len()).ok()?;
    let mut numerator = digits.checked_mul(1u128.checked_shl(pow2)?)?;
    let mut denominator: u128 = 1;
    if exp10 >= 0 {
        numerator = numerator.checked_mul(10u128.checked_pow(exp10.unsigned_abs())?)?;
    } else {
        denominator = 10u128.checked_pow(exp10.unsigned_abs())?;
    }
    u64::try_from(numerator.div_ceil(denominator)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn quantities_parse_like_the_kubernetes_api() {
        assert_eq!(parse_quantity("10M"), Some(10_000_000));
        assert_eq!(parse_quantity("1.5k"), Some(1_500));
        assert_eq!(parse_quantity("1Ki"), Some(1_024));
        assert_eq!(parse_quantity("2Mi"), Some(2 * 1024 * 1024));
        assert_eq!(parse_quantity("1e6"), Some(1_000_000));
        assert_eq!(parse_quantity("1500m"), Some(2), "rounded up");
        assert_eq!(parse_quantity("42"), Some(42));
        for bad in [
            "",
            "M",
            "-1M",
            "1.2.3",
            "10X",
            "1 0",
            "1e",
            ".",
            "99999999999E",
        ] {
            assert_eq!(parse_quantity(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn annotations_give_rates_and_bounds_are_checked() {
        let mut a = HashMap::new();
        assert_eq!(from_annotations(&a).expect("none"), None);
        a.insert(INGRESS.to_owned(), "10M".to_owned());
        let bw = from_annotations(&a).expect("ok").expect("some");
        assert_eq!(bw.ingress_rate, 10_000_000);
        assert_eq!(bw.ingress_burst, BURST);
        assert_eq!((bw.egress_rate, bw.egress_burst), (0, 0));
        a.insert(EGRESS.to_owned(), "500".to_owned());
        let err = from_annotations(&a).expect_err("too small");
        assert!(
            matches!(&err, Error::InvalidArgument(m) if m.contains(EGRESS)),
            "{err}"
        );
        a.insert(EGRESS.to_owned(), "fast".to_owned());
        let err = from_annotations(&a).expect_err("not a quantity");
        assert!(
            matches!(&err, Error::InvalidArgument(m) if m.contains("fast")),
            "{err}"
        );
    }
}
