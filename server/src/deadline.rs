//! The client's deadline (`grpc-timeout`): an RPC still running when it
//! expires is answered `DEADLINE_EXCEEDED`, as the kubelet and critest
//! expect.
//!
//! tonic's server applies the same header itself, outside every layer we
//! can add, and answers `CANCELLED` when its timer wins. This layer sits
//! inside tonic's and starts its timer first, so its deadline is never
//! later than tonic's; it also compares the clock itself whenever it is
//! polled, so it answers even when tonic's timer is the one that woke the
//! task (tonic polls the inner service before its own timer).

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

/// The header that carries the client's timeout.
const GRPC_TIMEOUT: &str = "grpc-timeout";
/// The gRPC spec allows at most 8 digits.
const MAX_DIGITS: usize = 8;

/// Parses a `grpc-timeout` value (`TimeoutValue TimeoutUnit`, e.g. `1m`,
/// `20S`) per the gRPC over HTTP/2 spec; `None` if it is malformed.
pub fn parse_timeout(value: &str) -> Option<Duration> {
    let split = value.len().checked_sub(1)?;
    if !value.is_char_boundary(split) {
        return None;
    }
    let (digits, unit) = value.split_at(split);
    if digits.is_empty() || digits.len() > MAX_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Applies the client's deadline to every RPC below it.
#[derive(Debug, Clone, Copy, Default)]
pub struct DeadlineLayer;

impl<S> tower::Layer<S> for DeadlineLayer {
    type Service = Deadline<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Deadline { inner }
    }
}

/// The service made by [`DeadlineLayer`].
#[derive(Debug, Clone)]
pub struct Deadline<S> {
    inner: S,
}

impl<S, B> tower::Service<http::Request<B>> for Deadline<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = DeadlineFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let timeout = req.headers().get(GRPC_TIMEOUT).and_then(|v| {
            let parsed = v.to_str().ok().and_then(parse_timeout);
            if parsed.is_none() {
                tracing::debug!(value = ?v, "ignoring a malformed grpc-timeout header");
            }
            parsed
        });
        // Taken before the inner call so it is never later than tonic's.
        let expiry = timeout.map(|t| {
            let at = Instant::now() + t;
            Expiry {
                timeout: t,
                at,
                sleep: Box::pin(tokio::time::sleep_until(at)),
                method: req.uri().path().to_owned(),
            }
        });
        DeadlineFuture {
            inner: Box::pin(self.inner.call(req)),
            expiry,
        }
    }
}

struct Expiry {
    timeout: Duration,
    at: Instant,
    sleep: Pin<Box<Sleep>>,
    method: String,
}

/// The answer of an RPC, or `DEADLINE_EXCEEDED` once its deadline passed.
pub struct DeadlineFuture<F> {
    inner: Pin<Box<F>>,
    expiry: Option<Expiry>,
}

impl<F, E> Future for DeadlineFuture<F>
where
    F: Future<Output = Result<http::Response<tonic::body::Body>, E>>,
{
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Poll::Ready(answer) = self.inner.as_mut().poll(cx) {
            return Poll::Ready(answer);
        }
        let Some(expiry) = self.expiry.as_mut() else {
            return Poll::Pending;
        };
        let expired = expiry.sleep.as_mut().poll(cx).is_ready() || Instant::now() >= expiry.at;
        if !expired {
            return Poll::Pending;
        }
        tracing::debug!(rpc = %expiry.method, timeout = ?expiry.timeout, "client deadline expired");
        let status = tonic::Status::deadline_exceeded(format!(
            "{} did not finish within the client's deadline of {:?} (grpc-timeout)",
            expiry.method, expiry.timeout
        ));
        Poll::Ready(Ok(status.into_http()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_unit() {
        assert_eq!(parse_timeout("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_timeout("3M"), Some(Duration::from_secs(180)));
        assert_eq!(parse_timeout("20S"), Some(Duration::from_secs(20)));
        assert_eq!(parse_timeout("1m"), Some(Duration::from_millis(1)));
        assert_eq!(parse_timeout("5u"), Some(Duration::from_micros(5)));
        assert_eq!(
            parse_timeout("99999999n"),
            Some(Duration::from_nanos(99_999_999))
        );
    }

    #[test]
    fn rejects_malformed_values() {
        for bad in [
            "",
            "m",
            "10",
            "10x",
            "-1S",
            "+1S",
            "123456789S",
            "1.5S",
            "1 S",
            "1é",
        ] {
            assert_eq!(parse_timeout(bad), None, "{bad:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_rpc_gets_deadline_exceeded() {
        use tower::{Layer, Service, ServiceExt};
        let slow = tower::service_fn(|_req: http::Request<()>| async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok::<_, std::convert::Infallible>(http::Response::new(tonic::body::Body::empty()))
        });
        let mut svc = DeadlineLayer.layer(slow);
        let req = http::Request::builder()
            .uri("/runtime.v1.ImageService/PullImage")
            .header(GRPC_TIMEOUT, "1m")
            .body(())
            .expect("request");
        let response = svc
            .ready()
            .await
            .expect("ready")
            .call(req)
            .await
            .expect("answer");
        let status = tonic::Status::from_header_map(response.headers()).expect("grpc-status");
        assert_eq!(status.code(), tonic::Code::DeadlineExceeded);
        assert!(
            status.message().contains("PullImage"),
            "{}",
            status.message()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_fast_rpc_is_answered_as_it_is() {
        use tower::{Layer, Service, ServiceExt};
        let fast = tower::service_fn(|_req: http::Request<()>| async {
            Ok::<_, std::convert::Infallible>(http::Response::new(tonic::body::Body::empty()))
        });
        let mut svc = DeadlineLayer.layer(fast);
        let req = http::Request::builder()
            .uri("/runtime.v1.RuntimeService/Version")
            .header(GRPC_TIMEOUT, "1S")
            .body(())
            .expect("request");
        let response = svc
            .ready()
            .await
            .expect("ready")
            .call(req)
            .await
            .expect("answer");
        assert!(response.headers().get("grpc-status").is_none());
    }
}
