//! CNI version strings: comparison by semantic version.

use std::cmp::Ordering;

/// Parses `major.minor.patch`; missing parts count as 0, and anything that is
/// not a number makes the whole version unparseable.
fn parse(v: &str) -> Option<[u64; 3]> {
    let mut out = [0u64; 3];
    let mut parts = v.split('.');
    for slot in &mut out {
        match parts.next() {
            Some(p) => *slot = p.parse().ok()?,
            None => break,
        }
    }
    if parts.next().is_some() {
        return None;
    }
    Some(out)
}

/// Orders two versions; an unparseable version sorts before every valid one.
pub(crate) fn compare(a: &str, b: &str) -> Ordering {
    parse(a).cmp(&parse(b))
}

/// Whether `v` is at least `min`.
pub(crate) fn at_least(v: &str, min: &str) -> bool {
    matches!(parse(v), Some(p) if Some(p) >= parse(min))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compares_numerically() {
        assert!(at_least("1.0.0", "0.4.0"));
        assert!(at_least("0.4.0", "0.4.0"));
        assert!(!at_least("0.3.1", "0.4.0"));
        assert!(at_least("0.10.0", "0.4.0"));
        assert!(!at_least("garbage", "0.4.0"));
        assert_eq!(compare("1.1.0", "1.0.0"), Ordering::Greater);
        assert_eq!(compare("1.0", "1.0.0"), Ordering::Equal);
    }
}
