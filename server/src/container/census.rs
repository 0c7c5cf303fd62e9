//! The container census for krio's metrics: containers by state and the
//! monitors still alive.

use std::path::Path;

use krio_runtime::monitor::MONITOR_PID_FILE;

use super::Containers;
use crate::metrics::Census;
use crate::state::ContainerState;

/// The process name a live monitor has in `/proc/PID/comm`.
const MONITOR_COMM: &str = "krio-monitor";

impl Containers {
    /// Counts containers by CRI state (exits read first) and live monitors.
    /// Blocking: reads exit files and `/proc`.
    pub fn census(&self) -> Census {
        let (mut created, mut running, mut exited, mut monitors) = (0, 0, 0, 0);
        for record in self.snapshot("", "") {
            match record.state {
                ContainerState::Created => created += 1,
                ContainerState::Running => running += 1,
                ContainerState::Exited => exited += 1,
            }
            if monitor_alive(&record.state_dir) {
                monitors += 1;
            }
        }
        Census {
            containers: vec![
                ("created", created),
                ("running", running),
                ("exited", exited),
            ],
            monitors,
        }
    }
}

/// Whether the monitor recorded in `state_dir` is still running (checked
/// by name, so a reused PID is not mistaken for it).
fn monitor_alive(state_dir: &Path) -> bool {
    let Ok(pid) = std::fs::read_to_string(state_dir.join(MONITOR_PID_FILE)) else {
        return false;
    };
    let Ok(pid) = pid.trim().parse::<u32>() else {
        return false;
    };
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .is_ok_and(|comm| comm.trim_end() == MONITOR_COMM)
}
