//! Notices container exits as they happen: an inotify watch on each live
//! container's monitor state dir fires when the monitor renames its exit
//! file into place. Without it exits would be seen only when somebody asks
//! (and `GetContainerEvents` would never report them).

use std::collections::HashMap;
use std::ffi::OsStr;
use std::path::Path;
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use krio_runtime::monitor::EXIT_FILE;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};

/// Wakes threads waiting for some container to exit (StopContainer),
/// instead of having them poll the exit file.
#[derive(Debug, Default)]
pub struct ExitBell {
    rings: Mutex<u64>,
    rung: Condvar,
}

impl ExitBell {
    /// How often it has rung so far.
    pub fn rings(&self) -> u64 {
        *self.rings.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Some exit was recorded.
    pub fn ring(&self) {
        *self.rings.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        self.rung.notify_all();
    }

    /// Waits until it rings after `seen` rings, or `limit` passes.
    pub fn wait_after(&self, seen: u64, limit: Duration) {
        let guard = self.rings.lock().unwrap_or_else(|p| p.into_inner());
        let _ = self
            .rung
            .wait_timeout_while(guard, limit, |rings| *rings == seen);
    }
}

/// The watches and the inotify instance that reports them.
pub struct ExitWatcher {
    inotify: Inotify,
    watches: Mutex<HashMap<WatchDescriptor, String>>,
}

impl std::fmt::Debug for ExitWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExitWatcher").finish_non_exhaustive()
    }
}

impl ExitWatcher {
    /// A watcher with no watches yet.
    pub fn new() -> std::io::Result<Self> {
        let inotify = Inotify::init(InitFlags::IN_CLOEXEC).map_err(std::io::Error::from)?;
        Ok(Self {
            inotify,
            watches: Mutex::new(HashMap::new()),
        })
    }

    /// Watches a container's state dir for its exit file. The caller checks
    /// for an exit file already there after this returns (it may have been
    /// written before the watch existed).
    pub fn watch(&self, container_id: &str, state_dir: &Path) -> std::io::Result<()> {
        // The monitor writes a temp file and renames it to `exit`.
        let wd = self
            .inotify
            .add_watch(
                state_dir,
                AddWatchFlags::IN_MOVED_TO | AddWatchFlags::IN_CLOSE_WRITE,
            )
            .map_err(std::io::Error::from)?;
        self.lock().insert(wd, container_id.to_owned());
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<WatchDescriptor, String>> {
        self.watches.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Blocks reading events for ever, calling `on_exit` with the id of each
    /// container whose exit file appeared. Run it on its own thread.
    pub fn run(&self, on_exit: impl Fn(&str)) {
        loop {
            let events = match self.inotify.read_events() {
                Ok(events) => events,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    tracing::error!(error = %e, "the exit watcher stopped: exits are now seen only on demand");
                    return;
                }
            };
            for event in events {
                if event.mask.contains(AddWatchFlags::IN_IGNORED) {
                    // The dir is gone (container removed): the kernel dropped the watch.
                    self.lock().remove(&event.wd);
                    continue;
                }
                if event.name.as_deref() != Some(OsStr::new(EXIT_FILE)) {
                    continue;
                }
                let id = self.lock().get(&event.wd).cloned();
                if let Some(id) = id {
                    on_exit(&id);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::mpsc;

    #[test]
    fn reports_an_exit_file_renamed_into_place_and_nothing_else() {
        let dir = tempfile::tempdir().expect("tempdir");
        let watcher = Arc::new(ExitWatcher::new().expect("inotify"));
        watcher.watch("c1", dir.path()).expect("watch");
        let (tx, rx) = mpsc::channel();
        let w = watcher.clone();
        std::thread::spawn(move || {
            w.run(move |id| {
                let _ = tx.send(id.to_owned());
            })
        });
        std::fs::write(dir.path().join("other"), b"x").expect("write");
        std::fs::write(dir.path().join("exit.tmp"), b"{}").expect("write");
        std::fs::rename(dir.path().join("exit.tmp"), dir.path().join(EXIT_FILE)).expect("rename");
        let id = rx.recv_timeout(Duration::from_secs(10)).expect("an exit");
        assert_eq!(id, "c1");
        // Only the one relevant event (the temp file and `other` are ignored).
        assert!(rx.recv_timeout(Duration::from_millis(200)).is_err());
    }

    #[test]
    fn the_bell_wakes_a_waiter_and_a_missed_ring_is_not_waited_for() {
        let bell = Arc::new(ExitBell::default());
        let seen = bell.rings();
        bell.ring();
        // Rang since `seen`: returns at once (a long limit would hang the test).
        bell.wait_after(seen, Duration::from_secs(3600));
        let seen = bell.rings();
        let b = bell.clone();
        let ringer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            b.ring();
        });
        bell.wait_after(seen, Duration::from_secs(3600));
        assert_eq!(bell.rings(), seen + 1);
        ringer.join().expect("ringer");
    }
}
