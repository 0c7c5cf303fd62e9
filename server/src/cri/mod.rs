//! The CRI services: thin tonic impls that call one handler per RPC.

mod checkpoint;
mod image_service;
mod images;
mod pod_metrics;
mod pod_stats;
mod runtime_info;
mod runtime_service;

use std::pin::Pin;
use std::sync::Arc;

pub use image_service::ImageService;
pub use runtime_service::RuntimeService;

use crate::config::Live;

/// The CRI API version krio serves.
pub const CRI_API_VERSION: &str = "v1";

/// The name krio reports as `runtime_name`.
pub const RUNTIME_NAME: &str = "krio";

/// A boxed stream of responses, for the server-streaming RPCs.
pub type ResponseStream<T> =
    Pin<Box<dyn tokio_stream::Stream<Item = Result<T, tonic::Status>> + Send + 'static>>;

/// What every RPC handler can reach.
#[derive(Debug)]
pub struct Daemon {
    /// The configuration in effect and the files it was read from (a
    /// reload on SIGHUP may swap it).
    pub config: Live,
    /// Pod sandboxes.
    pub sandboxes: Arc<crate::sandbox::Sandboxes>,
    /// Images and container root filesystems.
    pub images: krio_image::ImageStore,
    /// Containers.
    pub containers: Arc<crate::container::Containers>,
    /// What each runtime handler supports, probed at start (and for
    /// handlers a reload adds).
    pub handler_features: std::sync::RwLock<HandlerFeatures>,
    /// The streaming server for exec, attach and port-forward.
    pub streaming: crate::streaming::Streaming,
    /// Lifecycle events for `GetContainerEvents`.
    pub events: crate::events::EventSink,
    /// krio's own metrics, when `[metrics]` is enabled.
    pub metrics: Option<Arc<crate::metrics::Metrics>>,
}

/// The optional CRI features of one runtime handler.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HandlerFeature {
    /// `rro` mounts: the runtime has them and the kernel can (5.12+).
    pub recursive_read_only_mounts: bool,
    /// Pods with user namespaces.
    pub user_namespaces: bool,
}

/// Handler name → its features.
pub type HandlerFeatures = std::collections::BTreeMap<String, HandlerFeature>;

impl Daemon {
    /// Both services, sharing one daemon state.
    pub fn services(self: &Arc<Self>) -> (RuntimeService, ImageService) {
        (
            RuntimeService::new(self.clone()),
            ImageService::new(self.clone()),
        )
    }
}

/// A stream that sends each item exactly once, then ends (what the CRI asks
/// of the `Stream*` RPCs).
pub fn stream_each<T, R>(items: Vec<T>, wrap: impl Fn(T) -> R + Send + 'static) -> ResponseStream<R>
where
    T: Send + 'static,
    R: Send + 'static,
{
    Box::pin(tokio_stream::iter(
        items.into_iter().map(move |item| Ok(wrap(item))),
    ))
}

/// Runs blocking work (disk, the store, the OCI runtime) off the reactor,
/// mapping its error into the RPC error.
pub async fn blocking<T, E>(
    what: &'static str,
    f: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> crate::error::Result<T>
where
    T: Send + 'static,
    E: Into<crate::error::Error> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| crate::error::Error::internal(what, e))?
        .map_err(Into::into)
}
