//! Layers that pulls in progress rely on: garbage collection never removes
//! a pinned layer, and pinning and collecting take the same lock.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// Pin counts by chain ID.
#[derive(Debug, Default)]
pub struct LayerPins {
    counts: Mutex<HashMap<String, usize>>,
}

impl LayerPins {
    /// Pins `chains` until the guard drops.
    pub fn pin(self: &Arc<Self>, chains: &[String]) -> PinGuard {
        let mut m = self.lock();
        for c in chains {
            *m.entry(c.clone()).or_default() += 1;
        }
        PinGuard {
            pins: Arc::clone(self),
            chains: chains.to_vec(),
        }
    }

    /// The pin table, locked: collectors hold this while they decide and
    /// move a layer away.
    pub fn lock(&self) -> MutexGuard<'_, HashMap<String, usize>> {
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Unpins on drop.
#[derive(Debug)]
pub struct PinGuard {
    pins: Arc<LayerPins>,
    chains: Vec<String>,
}

impl Drop for PinGuard {
    fn drop(&mut self) {
        let mut m = self.pins.lock();
        for c in &self.chains {
            if let Some(n) = m.get_mut(c) {
                *n -= 1;
                if *n == 0 {
                    m.remove(c);
                }
            }
        }
    }
}

/// One async lock per key (a chain ID): pulls of different images that
/// share a layer download and unpack it once; the second waits, then
/// finds it in place.
#[derive(Debug, Default)]
pub struct KeyedLocks {
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl KeyedLocks {
    /// Locks `key` until the guard drops.
    pub async fn lock(self: &Arc<Self>, key: &str) -> KeyedGuard {
        let m = {
            let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
            Arc::clone(locks.entry(key.to_owned()).or_default())
        };
        let guard = Arc::clone(&m).lock_owned().await;
        KeyedGuard {
            locks: Arc::clone(self),
            key: key.to_owned(),
            guard: Some(guard),
        }
    }
}

/// Holds one key of [`KeyedLocks`].
#[derive(Debug)]
pub struct KeyedGuard {
    locks: Arc<KeyedLocks>,
    key: String,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Drop for KeyedGuard {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut locks = self.locks.locks.lock().unwrap_or_else(|p| p.into_inner());
        // Forget the lock when nobody else holds or waits for it.
        if locks
            .get(&self.key)
            .is_some_and(|m| Arc::strong_count(m) == 1)
        {
            locks.remove(&self.key);
        }
    }
}
