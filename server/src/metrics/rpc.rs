//! Per-RPC measuring: a tower layer around the CRI services that notes
//! each RPC's gRPC code and latency once its answer is complete, counts them
//! in the metrics when those are on, and logs them at debug level.
//!
//! The code of a failed unary RPC is in the response headers (a
//! trailers-only answer); otherwise it arrives in the trailers at the end of
//! the body, so the body is wrapped and the RPC recorded when it is dropped.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use hyper::body::{Body, Frame, SizeHint};

use super::Metrics;

/// The services whose methods are labelled by name; any other path (a
/// client's typo) is counted as `unknown` so labels stay bounded.
const SERVICES: [&str; 2] = ["/runtime.v1.RuntimeService/", "/runtime.v1.ImageService/"];

/// A boxed future, as the wrapped service's futures differ per route.
type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Wraps a service in [`RpcMetrics`].
#[derive(Debug, Clone)]
pub struct RpcMetricsLayer {
    metrics: Option<Arc<Metrics>>,
}

impl RpcMetricsLayer {
    /// Records into `metrics` (when on) and the debug log.
    pub fn new(metrics: Option<Arc<Metrics>>) -> Self {
        Self { metrics }
    }
}

impl<S> tower::Layer<S> for RpcMetricsLayer {
    type Service = RpcMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RpcMetrics {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

/// The service made by [`RpcMetricsLayer`].
#[derive(Debug, Clone)]
pub struct RpcMetrics<S> {
    inner: S,
    metrics: Option<Arc<Metrics>>,
}

impl<S, B> tower::Service<http::Request<B>> for RpcMetrics<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let metrics = self.metrics.clone();
        let method = method_label(req.uri().path()).to_owned();
        let started = Instant::now();
        let answer = self.inner.call(req);
        Box::pin(async move {
            let response = answer.await?;
            let code = response
                .headers()
                .get("grpc-status")
                .map(|v| tonic::Code::from_bytes(v.as_bytes()));
            let (parts, body) = response.into_parts();
            let body = MeteredBody {
                inner: body,
                record: Record {
                    metrics,
                    method,
                    started,
                    code,
                },
            };
            Ok(http::Response::from_parts(
                parts,
                tonic::body::Body::new(body),
            ))
        })
    }
}

/// The method label for a request path.
fn method_label(path: &str) -> &str {
    SERVICES
        .iter()
        .find_map(|service| path.strip_prefix(service))
        .filter(|m| !m.is_empty() && !m.contains('/'))
        .unwrap_or("unknown")
}

/// What is recorded when the answer's body goes away.
struct Record {
    metrics: Option<Arc<Metrics>>,
    method: String,
    started: Instant,
    /// The gRPC code, once the headers or trailers have carried it.
    code: Option<tonic::Code>,
}

/// A response body that records its RPC when dropped.
struct MeteredBody {
    inner: tonic::body::Body,
    record: Record,
}

impl Body for MeteredBody {
    type Data = <tonic::body::Body as Body>::Data;
    type Error = <tonic::body::Body as Body>::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(status) = frame.trailers_ref().and_then(|t| t.get("grpc-status"))
        {
            self.record.code = Some(tonic::Code::from_bytes(status.as_bytes()));
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for MeteredBody {
    fn drop(&mut self) {
        // No code by the time the body is dropped: the client went away
        // before the answer ended.
        let code = self.record.code.unwrap_or(tonic::Code::Cancelled);
        let elapsed = self.record.started.elapsed();
        tracing::debug!(
            method = %self.record.method,
            code = super::code_name(code),
            elapsed_us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
            "rpc finished"
        );
        if let Some(metrics) = &self.record.metrics {
            metrics.record_rpc(&self.record.method, code, elapsed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_labels_are_bounded_to_the_cri_services() {
        assert_eq!(
            method_label("/runtime.v1.RuntimeService/Version"),
            "Version"
        );
        assert_eq!(
            method_label("/runtime.v1.ImageService/PullImage"),
            "PullImage"
        );
        assert_eq!(method_label("/other.Service/Version"), "unknown");
        assert_eq!(method_label("/runtime.v1.ImageService/"), "unknown");
        assert_eq!(method_label("/runtime.v1.ImageService/a/b"), "unknown");
    }
}
