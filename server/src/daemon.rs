//! Serving: the root lock, the CRI socket, systemd readiness and a clean
//! stop on SIGTERM or SIGINT.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use tokio::net::UnixListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio_stream::wrappers::UnixListenerStream;

use crate::config::{Config, Live};
use crate::container::Containers;
use crate::cri::{Daemon, HandlerFeatures};
use crate::deadline::DeadlineLayer;
use crate::metrics::Metrics;
use crate::metrics::http::MetricsServer;
use crate::metrics::rpc::RpcMetricsLayer;
use crate::reload::Reloader;
use crate::sandbox::Sandboxes;
use crate::state::Store;
use crate::streaming::Streaming;
use krio_image::{ImageStore, ImageStoreOptions};

/// Mode of the CRI socket: the kubelet runs as root; a group may be let in.
const SOCKET_MODE: u32 = 0o660;
/// How long in-flight RPCs may run on after SIGTERM.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(2);
/// Mode of directories krio creates for itself.
const PRIVATE_DIR_MODE: u32 = 0o700;

/// Runs the daemon until SIGTERM or SIGINT; SIGHUP reloads the config.
pub async fn run(
    config: Config,
    config_files: Vec<PathBuf>,
    reloader: Reloader,
) -> anyhow::Result<()> {
    // First, so a signal during start-up stops krio cleanly (and a SIGHUP
    // does not kill it).
    let mut sigterm = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    let mut sighup = signal(SignalKind::hangup()).context("installing SIGHUP handler")?;

    create_private_dir(&config.root)?;
    create_private_dir(&config.runroot)?;
    // Traversable (not listable): runc reaches the root filesystem of a pod
    // with its own user namespace as that pod's unprivileged root.
    std::fs::set_permissions(&config.runroot, std::fs::Permissions::from_mode(0o711))
        .with_context(|| format!("setting the mode of {}", config.runroot.display()))?;
    let _lock = RootLock::acquire(&config.root)?;

    let live = Live::new(config, config_files);
    let config = live.get();
    let (events, event_queue) = crate::events::channel();
    let (sandboxes, images, containers, handler_features) = {
        let config = config.clone();
        let live = live.clone();
        let events = events.clone();
        tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
            let store = Store::open(&config.root)?;
            let mut options = ImageStoreOptions::new(config.root.join("images"));
            options
                .registries_conf
                .clone_from(&config.image.registries_conf);
            options.auth_file.clone_from(&config.image.auth_file);
            options.certs_dir.clone_from(&config.image.certs_dir);
            options.max_unpacked_bytes = config.image.max_unpacked_bytes;
            let images =
                ImageStore::open(store.database(), options).context("opening the image store")?;
            // The runtimes' log dir must exist before the first probe.
            create_private_dir(&config.runroot.join("runtime-logs"))?;
            let handler_features =
                probe_handlers(&config, config.runtime.handlers.keys().map(String::as_str));
            let containers = Containers::recover(
                live.clone(),
                store.clone(),
                images.clone(),
                &handler_features,
                events,
            )?;
            Ok((
                Sandboxes::recover(live, store)?,
                images,
                containers,
                handler_features,
            ))
        })
        .await
        .context("recovering state")??
    };
    let containers = Arc::new(containers);
    containers.start_exit_watcher();
    let streaming = Streaming::start(&config.streaming, containers.clone())
        .await
        .context("starting the streaming server")?;
    let metrics = config.metrics.enable.then(|| Arc::new(Metrics::new()));
    let _metrics_server = match &metrics {
        Some(metrics) => Some(start_metrics(&config, metrics.clone(), containers.clone()).await?),
        None => None,
    };
    let daemon = Arc::new(Daemon {
        config: live,
        sandboxes: Arc::new(sandboxes),
        images,
        containers,
        handler_features: std::sync::RwLock::new(handler_features),
        streaming,
        events,
        metrics: metrics.clone(),
    });
    tokio::spawn(crate::events::dispatch(daemon.clone(), event_queue));
    let (runtime_service, image_service) = daemon.services();

    // Bound last: a client that can connect finds krio ready.
    let socket = config.listen.clone();
    let listener = bind_socket(&socket)?;
    let _socket_guard = RemoveOnDrop(socket.clone());

    let (stopping_tx, mut stopping) = tokio::sync::watch::channel(false);
    let reloading = daemon.clone();
    let shutdown = async move {
        let name = loop {
            tokio::select! {
                _ = sigterm.recv() => break "SIGTERM",
                _ = sigint.recv() => break "SIGINT",
                _ = sighup.recv() => {
                    tracing::info!(signal = "SIGHUP", "reloading the configuration");
                    notify(&[sd_notify::NotifyState::Reloading]);
                    reloader.reload(&reloading).await;
                    notify(&[sd_notify::NotifyState::Ready]);
                }
            }
        };
        tracing::info!(signal = name, "stopping");
        let _ = stopping_tx.send(true);
    };
    // In-flight RPCs get a grace period; idle client connections (the
    // kubelet keeps one open) must not hold the daemon up.
    let grace = async move {
        let _ = stopping.wait_for(|s| *s).await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };

    tracing::info!(
        socket = %socket.display(),
        root = %config.root.display(),
        runroot = %config.runroot.display(),
        version = env!("CARGO_PKG_VERSION"),
        "krio is serving the CRI"
    );
    notify(&[sd_notify::NotifyState::Ready]);

    let server = tonic::transport::Server::builder()
        .trace_fn(|req| tracing::info_span!("cri", rpc = %req.uri().path()))
        // Measured outermost, so an expired deadline is counted with its code.
        .layer(
            tower::ServiceBuilder::new()
                .layer(RpcMetricsLayer::new(metrics))
                .layer(DeadlineLayer),
        )
        .add_service(runtime_service.into_server())
        .add_service(image_service.into_server())
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown);
    tokio::select! {
        served = server => served.context("serving the CRI")?,
        () = grace => tracing::info!(grace = ?SHUTDOWN_GRACE, "closing connections still open after the grace period"),
    }
    tracing::info!("stopped");
    Ok(())
}

/// Starts the `/metrics` endpoint; its census reads the containers.
async fn start_metrics(
    config: &Config,
    metrics: Arc<Metrics>,
    containers: Arc<Containers>,
) -> anyhow::Result<MetricsServer> {
    let address = config.metrics.address;
    let server = MetricsServer::start(address, metrics, Arc::new(move || containers.census()))
        .await
        .with_context(|| format!("starting the metrics endpoint on {address}"))?;
    tracing::info!(address = %server.address(), "serving metrics on /metrics");
    Ok(server)
}

/// Asks each named handler's runtime what it supports (`runc features`);
/// a runtime without the command supports none of the optional features.
/// Blocking.
pub fn probe_handlers<'a>(
    config: &Config,
    names: impl Iterator<Item = &'a str>,
) -> HandlerFeatures {
    // Just the kernel checks: a whole HostInfo::detect (devices, mounts)
    // is the containers' business, done once at their recovery.
    let kernel_rro = krio_runtime::spec::rro_kernel();
    names
        .filter_map(|name| config.runtime.handlers.get(name).map(|h| (name, h)))
        .map(|(name, handler)| {
            let cli = krio_runtime::oci::OciCli::new(handler.path.clone())
                .with_root(handler.root.clone())
                .with_log_dir(config.runroot.join("runtime-logs"));
            let features = match krio_runtime::oci::OciRuntime::features(&cli) {
                Ok(f) => f,
                Err(e) => {
                    tracing::info!(handler = %name, error = %e, "runtime reports no features");
                    krio_runtime::oci::Features::default()
                }
            };
            let probed = crate::cri::HandlerFeature {
                recursive_read_only_mounts: features.recursive_read_only_mounts && kernel_rro,
                // krio id-maps the mounts itself; the runtime only has to
                // join a user namespace.
                user_namespaces: features.user_namespaces && krio_runtime::spec::idmapped_overlay(),
            };
            (name.to_owned(), probed)
        })
        .collect()
}

/// Creates `dir` (and parents) with mode 0700 if it does not exist; an
/// existing directory keeps the mode its operator gave it.
fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(PRIVATE_DIR_MODE)
        .create(dir)
        .with_context(|| format!("creating directory {}", dir.display()))
}

/// An exclusive lock on the root dir: two daemons on one root would corrupt
/// each other's state.
struct RootLock {
    _file: File,
}

impl RootLock {
    fn acquire(root: &Path) -> anyhow::Result<Self> {
        let path = root.join("krio.lock");
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("opening lock file {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                let who = if holder.is_empty() {
                    "another krio".to_owned()
                } else {
                    format!("another krio (pid {holder})")
                };
                bail!(
                    "{who} is already running with root {}; lock file {} is held",
                    root.display(),
                    path.display()
                );
            }
            Err(TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("locking {}", path.display()));
            }
        }
        file.set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| writeln!(file, "{}", std::process::id()))
            .with_context(|| format!("writing pid to {}", path.display()))?;
        Ok(Self { _file: file })
    }
}

/// Binds the CRI socket, replacing a stale one but never a live one or a
/// file that is not a socket.
fn bind_socket(path: &Path) -> anyhow::Result<UnixListener> {
    if let Some(parent) = path.parent() {
        create_private_dir(parent)?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                bail!("socket {} is in use by another process", path.display());
            }
            std::fs::remove_file(path)
                .with_context(|| format!("removing stale socket {}", path.display()))?;
            tracing::info!(socket = %path.display(), "removed stale socket");
        }
        Ok(_) => bail!(
            "{} exists and is not a socket; refusing to replace it",
            path.display()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("checking {}", path.display())),
    }
    let listener =
        UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(SOCKET_MODE))
        .with_context(|| format!("setting mode of {}", path.display()))?;
    Ok(listener)
}

/// Removes the socket when serving ends, however it ends.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.0)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(socket = %self.0.display(), error = %e, "could not remove socket");
        }
    }
}

/// Tells systemd (`Type=notify`) how krio is doing, when it is watching.
fn notify(state: &[sd_notify::NotifyState]) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    match sd_notify::notify(false, state) {
        Ok(()) => tracing::debug!(?state, "notified systemd"),
        Err(e) => tracing::warn!(error = %e, "could not notify systemd"),
    }
}
