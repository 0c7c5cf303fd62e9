//! A bound on how many uncompressed bytes the layers of one pull may
//! unpack: a few kilobytes of gzip can expand to terabytes (a "gzip
//! bomb"), so the decompressed stream is counted as it is read and the
//! unpack stops once the bound is crossed.

use std::cell::Cell;
use std::io::{self, Read};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// The uncompressed-bytes budget of one pull, shared by its layers (which
/// unpack in parallel).
#[derive(Debug, Clone)]
pub struct SizeBudget {
    max: u64,
    used: Arc<AtomicU64>,
}

impl SizeBudget {
    /// A budget of `max` bytes.
    pub fn new(max: u64) -> Self {
        Self {
            max,
            used: Arc::new(AtomicU64::new(0)),
        }
    }

    /// No bound.
    pub fn unlimited() -> Self {
        Self::new(u64::MAX)
    }

    /// The bound in bytes.
    pub fn max(&self) -> u64 {
        self.max
    }

    /// Takes `n` bytes; false when that crosses the bound.
    fn take(&self, n: u64) -> bool {
        let before = self.used.fetch_add(n, Ordering::Relaxed);
        before.saturating_add(n) <= self.max
    }
}

/// Counts what `inner` yields against a [`SizeBudget`]; once the budget is
/// exceeded every read fails and `tripped` is set, so the caller can tell
/// this error from a broken archive whatever wraps it on the way up.
pub(super) struct LimitReader<'a, R> {
    pub(super) inner: R,
    pub(super) budget: &'a SizeBudget,
    pub(super) tripped: &'a Cell<bool>,
}

impl<R: Read> Read for LimitReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.tripped.get() {
            return Err(exceeded());
        }
        let n = self.inner.read(buf)?;
        if !self.budget.take(n as u64) {
            self.tripped.set(true);
            return Err(exceeded());
        }
        Ok(n)
    }
}

fn exceeded() -> io::Error {
    io::Error::other("the unpacked size limit is exceeded")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_is_shared_and_trips() {
        let budget = SizeBudget::new(10);
        let tripped = Cell::new(false);
        let mut a = LimitReader {
            inner: &[1u8; 6][..],
            budget: &budget,
            tripped: &tripped,
        };
        let mut buf = Vec::new();
        a.read_to_end(&mut buf).expect("6 of 10");
        let other = Cell::new(false);
        let mut b = LimitReader {
            inner: &[1u8; 6][..],
            budget: &budget,
            tripped: &other,
        };
        assert!(b.read_to_end(&mut Vec::new()).is_err(), "12 > 10");
        assert!(other.get() && !tripped.get());
        let mut free = LimitReader {
            inner: &[0u8; 4096][..],
            budget: &SizeBudget::unlimited(),
            tripped: &tripped,
        };
        assert_eq!(free.read_to_end(&mut Vec::new()).expect("unbounded"), 4096);
    }
}
