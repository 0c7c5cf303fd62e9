//! The `/metrics` endpoint: plain HTTP/1.1 on the configured address.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use super::{Census, Metrics};

/// The OpenMetrics text format, which `prometheus-client` writes.
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Takes the container census at scrape time (blocking: it reads exit files).
pub type CensusFn = Arc<dyn Fn() -> Census + Send + Sync>;

/// The running endpoint; stops serving when dropped.
#[derive(Debug)]
pub struct MetricsServer {
    address: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl MetricsServer {
    /// Binds `address` and serves `/metrics` until dropped.
    pub async fn start(
        address: SocketAddr,
        metrics: Arc<Metrics>,
        census: CensusFn,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind(address).await?;
        let address = listener.local_addr()?;
        let task = tokio::spawn(accept_loop(listener, metrics, census));
        Ok(Self { address, task })
    }

    /// The bound address (the port is resolved when 0 was asked for).
    pub fn address(&self) -> SocketAddr {
        self.address
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        // Ends the accept loop; its JoinSet aborts open connections.
        self.task.abort();
    }
}

async fn accept_loop(listener: TcpListener, metrics: Arc<Metrics>, census: CensusFn) {
    let mut connections = JoinSet::new();
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "metrics endpoint: accept failed");
                continue;
            }
        };
        // Reap finished connections so the set does not grow.
        while connections.try_join_next().is_some() {}
        let metrics = metrics.clone();
        let census = census.clone();
        connections.spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let metrics = metrics.clone();
                let census = census.clone();
                async move { Ok::<_, Infallible>(answer(&req, &metrics, census).await) }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%peer, error = %e, "metrics connection ended with an error");
            }
        });
    }
}

async fn answer<B>(
    req: &http::Request<B>,
    metrics: &Metrics,
    census: CensusFn,
) -> http::Response<Full<Bytes>> {
    if req.uri().path() != "/metrics" {
        return plain(
            http::StatusCode::NOT_FOUND,
            "only /metrics is served here\n",
        );
    }
    if req.method() != http::Method::GET && req.method() != http::Method::HEAD {
        return plain(
            http::StatusCode::METHOD_NOT_ALLOWED,
            "/metrics answers GET and HEAD\n",
        );
    }
    let census = match tokio::task::spawn_blocking(move || census()).await {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "metrics: taking the container census failed");
            return plain(
                http::StatusCode::INTERNAL_SERVER_ERROR,
                "taking the container census failed\n",
            );
        }
    };
    match metrics.encode(&census) {
        Ok(text) => http::Response::builder()
            .header(http::header::CONTENT_TYPE, CONTENT_TYPE)
            .body(Full::new(Bytes::from(text)))
            .unwrap_or_else(|_| plain(http::StatusCode::INTERNAL_SERVER_ERROR, "")),
        Err(e) => {
            tracing::error!(error = %e, "metrics: encoding failed");
            plain(
                http::StatusCode::INTERNAL_SERVER_ERROR,
                "encoding the metrics failed\n",
            )
        }
    }
}

fn plain(status: http::StatusCode, text: &'static str) -> http::Response<Full<Bytes>> {
    let mut response = http::Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *response.status_mut() = status;
    response
}
