//! The RPCs the foundation answers, through the generated client against the
//! real daemon.

mod common;

use common::{Sandbox, image_client, runtime_client};
use krio_proto::v1;

#[tokio::test]
async fn version_names_krio_and_v1() {
    let sandbox = Sandbox::new();
    let daemon = sandbox.start();
    let mut client = runtime_client(&daemon.socket).await;
    let v = client
        .version(v1::VersionRequest {
            version: "v1".into(),
        })
        .await
        .expect("Version")
        .into_inner();
    assert_eq!(v.runtime_name, "krio");
    assert_eq!(v.runtime_version, env!("CARGO_PKG_VERSION"));
    assert_eq!(v.runtime_api_version, "v1");
    assert_eq!(v.version, "0.1.0");
}

#[tokio::test]
async fn status_reports_network_not_ready_until_a_config_appears() {
    let sandbox = Sandbox::new();
    std::fs::create_dir(sandbox.path("cni")).expect("mkdir cni");
    let daemon = sandbox.start();
    let mut client = runtime_client(&daemon.socket).await;

    let status = client
        .status(v1::StatusRequest { verbose: true })
        .await
        .expect("Status")
        .into_inner();
    let conditions = status.status.expect("runtime status").conditions;
    let network = conditions
        .iter()
        .find(|c| c.r#type == "NetworkReady")
        .expect("NetworkReady");
    assert!(!network.status);
    assert_eq!(network.reason, "NetworkPluginNotReady");
    assert!(
        network.message.contains("no valid CNI network config"),
        "{}",
        network.message
    );
    assert!(conditions.iter().any(|c| c.r#type == "RuntimeReady"));
    let config: serde_json::Value =
        serde_json::from_str(&status.info["config"]).expect("config is JSON");
    assert_eq!(config["root"], sandbox.path("root").display().to_string());
    let handlers: Vec<&str> = status
        .runtime_handlers
        .iter()
        .map(|h| h.name.as_str())
        .collect();
    assert_eq!(
        handlers,
        ["", "crun", "runc"],
        "default handler first, then each configured"
    );

    // A config added later is noticed without a restart.
    std::fs::write(
        sandbox.path("cni/10-test.conflist"),
        r#"{"cniVersion":"1.0.0","name":"testnet","plugins":[{"type":"bridge"}]}"#,
    )
    .expect("write conflist");
    let status = client
        .status(v1::StatusRequest { verbose: false })
        .await
        .expect("Status")
        .into_inner();
    let conditions = status.status.expect("runtime status").conditions;
    let network = conditions
        .iter()
        .find(|c| c.r#type == "NetworkReady")
        .expect("NetworkReady");
    assert!(network.status, "{network:?}");
    assert!(status.info.is_empty(), "no verbose info unless asked");
}

#[tokio::test]
async fn runtime_ready_follows_the_default_handler_binary() {
    let sandbox = Sandbox::new();
    let fake_runtime = sandbox.path("fake-runc");
    std::fs::write(&fake_runtime, "#!/bin/sh\n").expect("write");
    std::fs::write(
        sandbox.path("krio.toml"),
        format!(
            "[runtime]\ndefault_handler = \"fake\"\n[runtime.handlers.fake]\npath = \"{}\"\n",
            fake_runtime.display()
        ),
    )
    .expect("write config");
    let daemon = sandbox.start();
    let mut client = runtime_client(&daemon.socket).await;
    let ready = |s: v1::StatusResponse| {
        s.status
            .expect("status")
            .conditions
            .into_iter()
            .find(|c| c.r#type == "RuntimeReady")
            .expect("RuntimeReady")
    };
    let cond = ready(
        client
            .status(v1::StatusRequest::default())
            .await
            .expect("Status")
            .into_inner(),
    );
    assert!(!cond.status, "a non-executable runtime is not ready");
    assert!(cond.message.contains("fake-runc"), "{}", cond.message);

    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fake_runtime, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let cond = ready(
        client
            .status(v1::StatusRequest::default())
            .await
            .expect("Status")
            .into_inner(),
    );
    assert!(cond.status, "{cond:?}");
}

#[tokio::test]
async fn runtime_config_reports_cgroupfs() {
    let sandbox = Sandbox::new();
    let daemon = sandbox.start();
    let mut client = runtime_client(&daemon.socket).await;
    let resp = client
        .runtime_config(v1::RuntimeConfigRequest {})
        .await
        .expect("RuntimeConfig")
        .into_inner();
    assert_eq!(
        resp.linux.expect("linux").cgroup_driver,
        v1::CgroupDriver::Cgroupfs as i32
    );
}

#[tokio::test]
async fn checkpointing_answers_unimplemented_naming_what_is_missing() {
    let sandbox = Sandbox::new();
    let daemon = sandbox.start();
    let mut runtime = runtime_client(&daemon.socket).await;
    let err = runtime
        .checkpoint_container(v1::CheckpointContainerRequest::default())
        .await
        .expect_err("checkpointing is not supported");
    assert_eq!(err.code(), tonic::Code::Unimplemented);
    assert!(
        err.message().contains("RuntimeService/CheckpointContainer")
            && err.message().contains("checkpoint/restore"),
        "{}",
        err.message()
    );

    let err = runtime
        .restore_pod(v1::RestorePodRequest::default())
        .await
        .expect_err("restoring is not supported");
    assert_eq!(err.code(), tonic::Code::Unimplemented);
    assert!(
        err.message().contains("RuntimeService/RestorePod"),
        "{}",
        err.message()
    );
}

#[tokio::test]
async fn metric_descriptors_describe_the_cadvisor_families() {
    let sandbox = Sandbox::new();
    let daemon = sandbox.start();
    let mut runtime = runtime_client(&daemon.socket).await;
    let descriptors = runtime
        .list_metric_descriptors(v1::ListMetricDescriptorsRequest {})
        .await
        .expect("ListMetricDescriptors")
        .into_inner()
        .descriptors;
    for name in [
        "container_cpu_usage_seconds_total",
        "container_memory_working_set_bytes",
        "container_memory_usage_bytes",
        "container_memory_rss",
        "container_memory_cache",
        "container_memory_swap",
        "container_spec_memory_limit_bytes",
        "container_network_receive_bytes_total",
        "container_network_transmit_errors_total",
        "container_processes",
        "container_fs_usage_bytes",
        "container_last_seen",
        "container_start_time_seconds",
    ] {
        let d = descriptors
            .iter()
            .find(|d| d.name == name)
            .unwrap_or_else(|| panic!("{name} is not described"));
        assert!(!d.help.is_empty(), "{name} has no help");
        assert!(
            d.label_keys.iter().any(|k| k == "pod")
                && d.label_keys.iter().any(|k| k == "container"),
            "{name}: {:?}",
            d.label_keys
        );
    }
    let net = descriptors
        .iter()
        .find(|d| d.name == "container_network_receive_bytes_total")
        .expect("network family");
    assert!(net.label_keys.iter().any(|k| k == "interface"));
    // No pods: no metrics, and no error.
    let metrics = runtime
        .list_pod_sandbox_metrics(v1::ListPodSandboxMetricsRequest {})
        .await
        .expect("ListPodSandboxMetrics")
        .into_inner()
        .pod_metrics;
    assert!(metrics.is_empty());
}

#[tokio::test]
async fn resource_updates_of_unknown_objects_are_not_found() {
    let sandbox = Sandbox::new();
    let daemon = sandbox.start();
    let mut runtime = runtime_client(&daemon.socket).await;
    let err = runtime
        .update_container_resources(v1::UpdateContainerResourcesRequest {
            container_id: "feedface".into(),
            linux: Some(v1::LinuxContainerResources {
                memory_limit_in_bytes: 64 << 20,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect_err("no such container");
    assert_eq!(err.code(), tonic::Code::NotFound, "{}", err.message());
    let err = runtime
        .update_container_resources(v1::UpdateContainerResourcesRequest::default())
        .await
        .expect_err("no container id");
    assert_eq!(
        err.code(),
        tonic::Code::InvalidArgument,
        "{}",
        err.message()
    );
    let err = runtime
        .update_pod_sandbox_resources(v1::UpdatePodSandboxResourcesRequest {
            pod_sandbox_id: "feedface".into(),
            ..Default::default()
        })
        .await
        .expect_err("no such pod");
    assert_eq!(err.code(), tonic::Code::NotFound, "{}", err.message());
}

#[tokio::test]
async fn image_fs_info_reports_the_store_filesystem() {
    let sandbox = Sandbox::new();
    let daemon = sandbox.start();
    let mut images = image_client(&daemon.socket).await;
    std::fs::create_dir_all(sandbox.path("root/images")).expect("mkdir");
    std::fs::write(sandbox.path("root/images/blob"), vec![1u8; 256 * 1024]).expect("write");
    let info = images
        .image_fs_info(v1::ImageFsInfoRequest {})
        .await
        .expect("ImageFsInfo")
        .into_inner();
    let fs = &info.image_filesystems[0];
    let mountpoint = &fs.fs_id.as_ref().expect("fs id").mountpoint;
    let root = sandbox.path("root").canonicalize().expect("canonical root");
    assert!(
        root.starts_with(mountpoint),
        "{mountpoint} holds {}",
        root.display()
    );
    assert!(fs.used_bytes.expect("bytes").value >= 256 * 1024);
    assert!(
        fs.inodes_used.expect("inodes").value >= 2,
        "at least the dir and the blob"
    );
    assert!(fs.timestamp > 0);
    assert_eq!(info.container_filesystems.len(), 1);
}
