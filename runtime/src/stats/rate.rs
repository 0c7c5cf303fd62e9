//! CPU usage rate (`usage_nano_cores`) from cumulative usage samples.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Keeps the previous CPU sample of each container (or pod) and computes
/// `usage_nano_cores` the way the kubelet defines it: CPU nanoseconds used
/// per second of wall time over the window since that sample.
///
/// Calls closer together than the minimum window return the rate of the
/// previous window and keep the older sample, so that two RPCs a
/// millisecond apart (`ListContainerStats` then `ListPodSandboxStats`)
/// do not produce a rate from noise. Safe to share between threads.
#[derive(Debug)]
pub struct CpuRate {
    min_window: Duration,
    samples: Mutex<HashMap<String, Entry>>,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    at: Instant,
    usage_ns: u64,
    rate: Option<u64>,
}

impl Default for CpuRate {
    fn default() -> Self {
        Self::new()
    }
}

impl CpuRate {
    /// The default minimum window between the samples a rate is computed
    /// from.
    pub const DEFAULT_MIN_WINDOW: Duration = Duration::from_millis(500);

    /// An empty tracker with [`CpuRate::DEFAULT_MIN_WINDOW`].
    pub fn new() -> Self {
        Self::with_min_window(Self::DEFAULT_MIN_WINDOW)
    }

    /// An empty tracker that recomputes the rate only when at least
    /// `min_window` has passed since the kept sample.
    pub fn with_min_window(min_window: Duration) -> Self {
        Self {
            min_window,
            samples: Mutex::new(HashMap::new()),
        }
    }

    /// Records cumulative usage `usage_core_ns` of `id` taken at `at` and
    /// returns `usage_nano_cores` over the window since the kept sample.
    ///
    /// `None` for the first sample of an `id`, and when the counter went
    /// backwards (the cgroup was recreated); the new sample is kept either
    /// way. A sample older than the kept one is ignored.
    pub fn sample(&self, id: &str, at: Instant, usage_core_ns: u64) -> Option<u64> {
        let mut samples = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
        let fresh = Entry {
            at,
            usage_ns: usage_core_ns,
            rate: None,
        };
        let Some(prev) = samples.get_mut(id) else {
            samples.insert(id.to_owned(), fresh);
            return None;
        };
        let Some(window) = at.checked_duration_since(prev.at) else {
            return prev.rate;
        };
        if window < self.min_window || window.is_zero() {
            return prev.rate;
        }
        let Some(used) = usage_core_ns.checked_sub(prev.usage_ns) else {
            *prev = fresh;
            return None;
        };
        let rate = nano_cores(used, window);
        *prev = Entry {
            rate: Some(rate),
            ..fresh
        };
        Some(rate)
    }

    /// The rate computed by the last [`CpuRate::sample`] of `id` that
    /// closed a window, without recording anything.
    pub fn last(&self, id: &str) -> Option<u64> {
        let samples = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
        samples.get(id).and_then(|e| e.rate)
    }

    /// Forgets `id` (its container or pod was removed).
    pub fn remove(&self, id: &str) {
        let mut samples = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
        samples.remove(id);
    }

    /// Forgets every id for which `keep` returns false.
    pub fn retain(&self, mut keep: impl FnMut(&str) -> bool) {
        let mut samples = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
        samples.retain(|id, _| keep(id));
    }

    /// How many ids have a kept sample.
    pub fn len(&self) -> usize {
        self.samples
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether no id has a kept sample.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// `used_ns / window_seconds`, in integer arithmetic without overflow.
fn nano_cores(used_ns: u64, window: Duration) -> u64 {
    let window_ns = window.as_nanos().max(1);
    let rate = u128::from(used_ns) * 1_000_000_000 / window_ns;
    u64::try_from(rate).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_over_window() {
        let r = CpuRate::with_min_window(Duration::ZERO);
        let t0 = Instant::now();
        assert_eq!(r.sample("c", t0, 1_000), None);
        // 0.5 s of CPU in 2 s: a quarter core.
        let t1 = t0 + Duration::from_secs(2);
        assert_eq!(r.sample("c", t1, 1_000 + 500_000_000), Some(250_000_000));
        assert_eq!(r.last("c"), Some(250_000_000));
        // Two full cores for 100 ms.
        let t2 = t1 + Duration::from_millis(100);
        assert_eq!(r.sample("c", t2, 1_000 + 700_000_000), Some(2_000_000_000));
    }

    #[test]
    fn short_window_keeps_previous_rate_and_sample() {
        let r = CpuRate::with_min_window(Duration::from_secs(1));
        let t0 = Instant::now();
        r.sample("c", t0, 0);
        assert_eq!(r.sample("c", t0 + Duration::from_millis(10), 5), None);
        assert_eq!(
            r.sample("c", t0 + Duration::from_secs(1), 1_000_000_000),
            Some(1_000_000_000)
        );
        assert_eq!(
            r.sample("c", t0 + Duration::from_millis(1001), 9_000_000_000),
            Some(1_000_000_000)
        );
        // The window is measured from the kept sample at 1 s.
        assert_eq!(
            r.sample("c", t0 + Duration::from_secs(3), 2_000_000_000),
            Some(500_000_000)
        );
    }

    #[test]
    fn counter_reset_and_stale_sample() {
        let r = CpuRate::with_min_window(Duration::ZERO);
        let t0 = Instant::now() + Duration::from_secs(10);
        r.sample("c", t0, 5_000);
        assert_eq!(r.sample("c", t0 + Duration::from_secs(1), 10), None);
        assert_eq!(
            r.sample("c", t0 + Duration::from_secs(2), 1_000_000_010),
            Some(1_000_000_000)
        );
        // Older than the kept sample: ignored, last rate returned.
        assert_eq!(r.sample("c", t0, 0), Some(1_000_000_000));
        assert_eq!(
            r.sample("c", t0 + Duration::from_secs(2), 1_000_000_010),
            Some(1_000_000_000)
        );
    }

    #[test]
    fn remove_and_retain() {
        let r = CpuRate::new();
        let t = Instant::now();
        for id in ["a", "b", "c"] {
            r.sample(id, t, 1);
        }
        assert_eq!(r.len(), 3);
        r.remove("a");
        r.retain(|id| id != "b");
        assert_eq!(r.len(), 1);
        assert_eq!(r.last("c"), None);
        r.remove("c");
        assert!(r.is_empty());
    }

    #[test]
    fn huge_values_do_not_overflow() {
        assert_eq!(nano_cores(u64::MAX, Duration::from_nanos(1)), u64::MAX);
        assert_eq!(nano_cores(0, Duration::ZERO), 0);
    }
}
