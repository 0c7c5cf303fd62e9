//! The configuration in effect, shared by every part of the daemon and
//! swapped whole when a reload (SIGHUP) accepts a new one.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use super::schema::Config;

/// A cheap handle on the configuration in effect and the files it came from.
#[derive(Debug, Clone)]
pub struct Live {
    inner: Arc<RwLock<Effective>>,
}

#[derive(Debug)]
struct Effective {
    config: Arc<Config>,
    files: Vec<PathBuf>,
}

impl Live {
    /// Starts with `config`, read from `files`.
    pub fn new(config: Config, files: Vec<PathBuf>) -> Self {
        Self {
            inner: Arc::new(RwLock::new(Effective {
                config: Arc::new(config),
                files,
            })),
        }
    }

    /// The configuration now (a snapshot: later reloads do not change it).
    pub fn get(&self) -> Arc<Config> {
        Arc::clone(&self.read().config)
    }

    /// The files the configuration now in effect was read from.
    pub fn files(&self) -> Vec<PathBuf> {
        self.read().files.clone()
    }

    /// Puts `config` (read from `files`) in effect.
    pub fn set(&self, config: Config, files: Vec<PathBuf>) {
        let mut effective = self.inner.write().unwrap_or_else(|p| p.into_inner());
        *effective = Effective {
            config: Arc::new(config),
            files,
        };
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Effective> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }
}
