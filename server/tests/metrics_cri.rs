//! ListPodSandboxMetrics end to end: a busy container's CPU counter rises,
//! memory follows an allocation, labels match the descriptors. Root-only.

mod common;
mod pod_env;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use common::{RuntimeClient, registry_ready, skip_unless_root};
use krio_proto::v1;
use pod_env::{env, poll};

const MIB: u64 = 1 << 20;

async fn list(client: &mut RuntimeClient) -> Vec<v1::PodSandboxMetrics> {
    client
        .list_pod_sandbox_metrics(v1::ListPodSandboxMetricsRequest {})
        .await
        .expect("ListPodSandboxMetrics")
        .into_inner()
        .pod_metrics
}

fn value(metrics: &[v1::Metric], name: &str) -> Option<u64> {
    metrics
        .iter()
        .find(|m| m.name == name)
        .and_then(|m| m.value.as_ref())
        .map(|v| v.value)
}

fn container_metrics<'a>(
    pods: &'a [v1::PodSandboxMetrics],
    pod_id: &str,
    id: &str,
) -> Option<&'a [v1::Metric]> {
    pods.iter()
        .find(|p| p.pod_sandbox_id == pod_id)?
        .container_metrics
        .iter()
        .find(|c| c.container_id == id)
        .map(|c| c.metrics.as_slice())
}

#[tokio::test]
async fn pod_metrics_track_cpu_and_memory_with_described_labels() {
    let test = "pod_metrics_track_cpu_and_memory_with_described_labels";
    if skip_unless_root(test) || !registry_ready(test) {
        return;
    }
    let mut env = env(43, "metrics").await;
    // Holds ~30 MiB in a shell variable, then burns CPU.
    let burner = env
        .run_limited(
            "burner",
            &[
                "sh",
                "-c",
                "x=$(head -c 30000000 /dev/zero | tr '\\0' a); while :; do :; done",
            ],
            v1::LinuxContainerResources {
                memory_limit_in_bytes: 256 * MIB as i64,
                ..Default::default()
            },
        )
        .await;
    let idle = env.run("idle", &["sleep", "100000"]).await;
    let started_at = env.status(&burner).await.started_at;

    let descriptors: HashMap<String, usize> = env
        .client
        .list_metric_descriptors(v1::ListMetricDescriptorsRequest {})
        .await
        .expect("descriptors")
        .into_inner()
        .descriptors
        .into_iter()
        .map(|d| (d.name, d.label_keys.len()))
        .collect();

    // Wait until the allocation is done.
    let pod_id = env.pod_id.clone();
    let ready = poll(Duration::from_secs(60), || {
        let mut client = env.client.clone();
        let (pod_id, burner) = (pod_id.clone(), burner.clone());
        async move {
            let pods = list(&mut client).await;
            let m = container_metrics(&pods, &pod_id, &burner)?;
            (value(m, "container_memory_working_set_bytes")? > 25 * MIB).then_some(pods)
        }
    })
    .await
    .expect("the burner's working set reaches its 30 MiB allocation");

    let m = container_metrics(&ready, &pod_id, &burner).expect("burner metrics");
    let idle_m = container_metrics(&ready, &pod_id, &idle).expect("idle metrics");
    let idle_ws = value(idle_m, "container_memory_working_set_bytes").expect("idle working set");
    assert!(idle_ws < 10 * MIB, "idle container working set {idle_ws}");
    assert!(value(m, "container_memory_usage_bytes").expect("usage") > 25 * MIB);
    assert!(value(m, "container_memory_rss").expect("rss") > 20 * MIB);
    assert_eq!(
        value(m, "container_spec_memory_limit_bytes"),
        Some(256 * MIB),
        "the limit it was created with"
    );
    assert_eq!(value(idle_m, "container_spec_memory_limit_bytes"), Some(0));
    assert!(value(m, "container_processes").expect("processes") >= 1);
    assert_eq!(
        value(m, "container_start_time_seconds"),
        Some(u64::try_from(started_at).expect("positive") / 1_000_000_000)
    );
    assert!(
        value(m, "container_last_seen").expect("last seen")
            >= value(m, "container_start_time_seconds").expect("start")
    );
    assert!(
        value(m, "container_fs_usage_bytes").is_some(),
        "writable layer usage"
    );

    // Labels: as many values as the descriptor has keys; base labels name
    // the container and the pod; no two metrics share name and labels.
    let pod = ready
        .iter()
        .find(|p| p.pod_sandbox_id == pod_id)
        .expect("pod");
    let mut seen = HashSet::new();
    let all = pod
        .metrics
        .iter()
        .chain(pod.container_metrics.iter().flat_map(|c| c.metrics.iter()));
    for metric in all {
        let keys = descriptors
            .get(&metric.name)
            .unwrap_or_else(|| panic!("{} is not described", metric.name));
        assert_eq!(metric.label_values.len(), *keys, "{}", metric.name);
        assert_eq!(
            &metric.label_values[3..5],
            ["test", "metrics"],
            "{}",
            metric.name
        );
        assert!(
            seen.insert((metric.name.clone(), metric.label_values.clone())),
            "duplicate {} {:?}",
            metric.name,
            metric.label_values
        );
    }
    let burner_cpu = m
        .iter()
        .find(|x| x.name == "container_cpu_usage_seconds_total")
        .expect("cpu metric");
    assert_eq!(
        burner_cpu.label_values[..2],
        ["burner".to_owned(), burner.clone()]
    );
    assert_eq!(burner_cpu.metric_type, v1::MetricType::Counter as i32);
    let rx = pod
        .metrics
        .iter()
        .find(|x| x.name == "container_network_receive_bytes_total")
        .expect("pod network metrics");
    assert_eq!(rx.label_values[0], "POD");
    assert_eq!(rx.label_values.last().map(String::as_str), Some("eth0"));

    // CPU: the counter (whole seconds) rises while the loop burns.
    let first = value(m, "container_cpu_usage_seconds_total").expect("cpu seconds");
    let risen = poll(Duration::from_secs(120), || {
        let mut client = env.client.clone();
        let (pod_id, burner) = (pod_id.clone(), burner.clone());
        async move {
            let pods = list(&mut client).await;
            let now = value(
                container_metrics(&pods, &pod_id, &burner)?,
                "container_cpu_usage_seconds_total",
            )?;
            (now >= first + 2).then_some(now)
        }
    })
    .await;
    assert!(
        risen.is_some(),
        "CPU seconds rise from {first} while burning"
    );

    // The stream form sends the same pods, each once.
    let mut stream = env
        .client
        .stream_pod_sandbox_metrics(v1::StreamPodSandboxMetricsRequest {})
        .await
        .expect("stream")
        .into_inner();
    let mut streamed = Vec::new();
    while let Some(item) = stream.message().await.expect("stream item") {
        streamed.extend(
            item.pod_sandbox_metrics
                .into_iter()
                .map(|p| p.pod_sandbox_id),
        );
    }
    assert_eq!(streamed, vec![pod_id.clone()]);

    // An exited container is left out.
    env.client
        .stop_container(v1::StopContainerRequest {
            container_id: idle.clone(),
            timeout: 0,
        })
        .await
        .expect("stop idle");
    let pods = list(&mut env.client).await;
    assert!(container_metrics(&pods, &pod_id, &idle).is_none());
    assert!(container_metrics(&pods, &pod_id, &burner).is_some());
    env.remove_pod().await;
}
