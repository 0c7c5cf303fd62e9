//! krio's own Prometheus metrics: the families, how the daemon records into
//! them, and their text encoding. The HTTP endpoint is in [`http`], the
//! per-RPC measuring in [`rpc`].

pub mod http;
pub mod rpc;

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

/// Labels of the per-RPC families.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    /// The RPC's name (`PullImage`), without its service.
    method: String,
}

/// Labels of the per-RPC error family.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    method: String,
    /// The gRPC code's name as the gRPC spec spells it (`NOT_FOUND`).
    code: String,
}

/// Labels of the container census.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    /// `created`, `running` or `exited`.
    state: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// A snapshot of the daemon's containers, taken at scrape time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Census {
    /// Containers per CRI state name (`created`, `running`, `exited`).
    pub containers: Vec<(&'static str, i64)>,
    /// Live `krio-monitor` processes.
    pub monitors: i64,
}

/// Every metric krio exports, registered once at start.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<MethodLabels, Counter>,
    errors: Family<ErrorLabels, Counter>,
    latency: HistogramFamily<MethodLabels>,
    pull_bytes: Counter,
    pull_duration: Histogram,
    containers: Family<StateLabels, Gauge>,
    monitors: Gauge,
}

/// RPC latency buckets: 1 ms to about 65 s.
fn rpc_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every family under the `krio_` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("krio");
        let requests = Family::<MethodLabels, Counter>::default();
        registry.register(
            "grpc_requests",
            "CRI RPCs handled, by method",
            requests.clone(),
        );
        let errors = Family::<ErrorLabels, Counter>::default();
        registry.register(
            "grpc_errors",
            "CRI RPCs that ended with a non-OK gRPC code, by method and code",
            errors.clone(),
        );
        let latency: HistogramFamily<MethodLabels> =
            Family::new_with_constructor(rpc_buckets as fn() -> Histogram);
        registry.register_with_unit(
            "grpc_request_duration",
            "Time from a CRI request's arrival to the end of its answer, by method",
            Unit::Seconds,
            latency.clone(),
        );
        let pull_bytes = Counter::default();
        registry.register_with_unit(
            "image_pull",
            "Size of the images pulled (compressed layers and config)",
            Unit::Bytes,
            pull_bytes.clone(),
        );
        // 100 ms to about 27 min: pulls range from cached to very large.
        let pull_duration = Histogram::new(exponential_buckets(0.1, 2.0, 15));
        registry.register_with_unit(
            "image_pull_duration",
            "Duration of successful image pulls",
            Unit::Seconds,
            pull_duration.clone(),
        );
        let containers = Family::<StateLabels, Gauge>::default();
        registry.register(
            "containers",
            "Containers known to krio, by CRI state",
            containers.clone(),
        );
        let monitors = Gauge::default();
        registry.register(
            "monitors",
            "Live krio-monitor processes (one per created or running container)",
            monitors.clone(),
        );
        Self {
            registry,
            requests,
            errors,
            latency,
            pull_bytes,
            pull_duration,
            containers,
            monitors,
        }
    }

    /// Records one finished RPC: `code` is the gRPC status code (0 is OK).
    pub fn record_rpc(&self, method: &str, code: tonic::Code, elapsed: Duration) {
        let labels = MethodLabels {
            method: method.to_owned(),
        };
        self.requests.get_or_create(&labels).inc();
        self.latency
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
        if code != tonic::Code::Ok {
            self.errors
                .get_or_create(&ErrorLabels {
                    method: labels.method,
                    code: code_name(code).to_owned(),
                })
                .inc();
        }
    }

    /// Records one successful image pull.
    pub fn record_pull(&self, bytes: u64, elapsed: Duration) {
        self.pull_bytes.inc_by(bytes);
        self.pull_duration.observe(elapsed.as_secs_f64());
    }

    /// The registry in the Prometheus/OpenMetrics text format, with the
    /// container census set from `census`.
    pub fn encode(&self, census: &Census) -> Result<String, std::fmt::Error> {
        self.containers.clear();
        for (state, count) in &census.containers {
            self.containers
                .get_or_create(&StateLabels {
                    state: (*state).to_owned(),
                })
                .set(*count);
        }
        self.monitors.set(census.monitors);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// The gRPC spec's name of a status code, as other runtimes label it.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_are_encoded_with_their_labels() {
        let m = Metrics::new();
        m.record_rpc("Version", tonic::Code::Ok, Duration::from_millis(3));
        m.record_rpc("Version", tonic::Code::Ok, Duration::from_millis(3));
        m.record_rpc("PullImage", tonic::Code::NotFound, Duration::from_secs(1));
        m.record_pull(1000, Duration::from_secs(2));
        let text = m
            .encode(&Census {
                containers: vec![("running", 2), ("exited", 1)],
                monitors: 2,
            })
            .expect("encode");
        assert!(
            text.contains("krio_grpc_requests_total{method=\"Version\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("krio_grpc_errors_total{method=\"PullImage\",code=\"NOT_FOUND\"} 1"),
            "{text}"
        );
        assert!(
            !text.contains("krio_grpc_errors_total{method=\"Version\""),
            "{text}"
        );
        assert!(
            text.contains("krio_grpc_request_duration_seconds_count{method=\"PullImage\"} 1"),
            "{text}"
        );
        assert!(text.contains("krio_image_pull_bytes_total 1000"), "{text}");
        assert!(
            text.contains("krio_containers{state=\"running\"} 2"),
            "{text}"
        );
        assert!(text.contains("krio_monitors 2"), "{text}");
    }

    #[test]
    fn census_replaces_states_that_are_gone() {
        let m = Metrics::new();
        m.encode(&Census {
            containers: vec![("created", 1)],
            monitors: 1,
        })
        .expect("encode");
        let text = m.encode(&Census::default()).expect("encode");
        assert!(!text.contains("state=\"created\""), "{text}");
        assert!(text.contains("krio_monitors 0"), "{text}");
    }
}
