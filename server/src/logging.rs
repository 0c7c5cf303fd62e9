//! The tracing subscriber: text to stderr, filtered by the configured level
//! (`RUST_LOG` refines it per module when set). The filter can be swapped
//! while the daemon runs, so a reload can change the level.

use std::io::IsTerminal;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry, reload};

use crate::config::LogLevel;

/// Changes the level of the installed subscriber.
#[derive(Debug, Clone)]
pub struct LogHandle {
    handle: reload::Handle<EnvFilter, Registry>,
    /// `RUST_LOG` was set: it wins over the configured level.
    from_env: bool,
}

/// Installs the global subscriber.
pub fn init(level: LogLevel) -> anyhow::Result<LogHandle> {
    let (filter, from_env) = match std::env::var("RUST_LOG") {
        Ok(spec) if !spec.is_empty() => (EnvFilter::try_new(spec)?, true),
        _ => (filter_for(level), false),
    };
    let (filter, handle) = reload::Layer::new(filter);
    tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::stderr().is_terminal())
                .with_target(false),
        )
        .try_init()
        .map_err(|e| anyhow::anyhow!(e))?;
    Ok(LogHandle { handle, from_env })
}

/// The filter for a configured level; the HTTP/2 stack stays quiet below
/// warnings, as its debug output is about frames, not krio.
fn filter_for(level: LogLevel) -> EnvFilter {
    EnvFilter::new(format!("{},h2=warn,hyper=warn,tower=warn", level.as_str()))
}

impl LogHandle {
    /// Logs at `level` from now on; a no-op (reported) under `RUST_LOG`.
    pub fn set_level(&self, level: LogLevel) -> anyhow::Result<()> {
        if self.from_env {
            tracing::warn!(
                level = level.as_str(),
                "RUST_LOG is set and keeps precedence over log_level"
            );
            return Ok(());
        }
        self.handle
            .reload(filter_for(level))
            .map_err(|e| anyhow::anyhow!("changing the log filter: {e}"))
    }
}
