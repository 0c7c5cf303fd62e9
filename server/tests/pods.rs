//! Pod sandboxes end to end: the real daemon, real namespaces, the real
//! Debian CNI plugins (bridge, host-local, portmap, loopback). Root-only.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::time::Duration;

use common::{BridgeGuard, MountGuard, Sandbox, runtime_client, skip_unless_root};
use krio_proto::v1;

fn pod_config(name: &str) -> v1::PodSandboxConfig {
    v1::PodSandboxConfig {
        metadata: Some(v1::PodSandboxMetadata {
            name: name.into(),
            uid: format!("uid-{name}"),
            namespace: "test".into(),
            attempt: 0,
        }),
        hostname: name.into(),
        labels: [("app".to_owned(), name.to_owned())].into(),
        ..Default::default()
    }
}

fn run_request(config: v1::PodSandboxConfig) -> v1::RunPodSandboxRequest {
    v1::RunPodSandboxRequest {
        config: Some(config),
        runtime_handler: String::new(),
    }
}

async fn status(client: &mut common::RuntimeClient, id: &str) -> v1::PodSandboxStatus {
    client
        .pod_sandbox_status(v1::PodSandboxStatusRequest {
            pod_sandbox_id: id.into(),
            verbose: true,
        })
        .await
        .expect("PodSandboxStatus")
        .into_inner()
        .status
        .expect("status")
}

fn nsenter_net(pin: &str, args: &[&str]) -> std::process::Output {
    Command::new("nsenter")
        .arg(format!("--net={pin}"))
        .args(args)
        .output()
        .expect("nsenter")
}

/// The IPs host-local holds on test network `net` (its lease files).
fn leases(sandbox: &Sandbox, net: u8) -> Vec<String> {
    std::fs::read_dir(sandbox.path(&format!("ipam/krio-test-{net}")))
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Starts the daemon and runs pod `name`; its id and IP.
async fn daemon_with_pod(sandbox: &Sandbox, name: &str) -> (common::Daemon, String, String) {
    let daemon = sandbox.start();
    let mut client = runtime_client(&daemon.socket).await;
    let id = client
        .run_pod_sandbox(run_request(pod_config(name)))
        .await
        .expect("run")
        .into_inner()
        .pod_sandbox_id;
    let ip = status(&mut client, &id).await.network.expect("network").ip;
    (daemon, id, ip)
}

/// kill -9 of the daemon: no chance to clean up.
fn sigkill(mut daemon: common::Daemon) {
    let mut child = daemon.child.take().expect("running");
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
}

fn netns_pin(sandbox: &Sandbox, id: &str) -> String {
    sandbox
        .path(&format!("run/ns/net/{id}"))
        .display()
        .to_string()
}

#[tokio::test]
async fn two_pods_get_ips_reach_each_other_and_leave_nothing_behind() {
    if skip_unless_root("two_pods_get_ips_reach_each_other_and_leave_nothing_behind") {
        return;
    }
    let sandbox = Sandbox::new();
    let _mounts = MountGuard(sandbox.dir.path().to_path_buf());
    let _bridge = BridgeGuard(sandbox.write_bridge_network(1));
    let daemon = sandbox.start();
    let mut client = runtime_client(&daemon.socket).await;

    let mut dns = pod_config("a");
    dns.dns_config = Some(v1::DnsConfig {
        servers: vec!["10.96.0.10".into()],
        searches: vec!["test.svc.cluster.local".into()],
        options: vec!["ndots:5".into()],
    });
    dns.linux = Some(v1::LinuxPodSandboxConfig {
        sysctls: [(
            "net.ipv4.ip_unprivileged_port_start".to_owned(),
            "79".to_owned(),
        )]
        .into(),
        ..Default::default()
    });
    let a = client
        .run_pod_sandbox(run_request(dns))
        .await
        .expect("run a")
        .into_inner()
        .pod_sandbox_id;
    let b = client
        .run_pod_sandbox(run_request(pod_config("b")))
        .await
        .expect("run b")
        .into_inner()
        .pod_sandbox_id;
    assert_eq!(a.len(), 64);

    let sa = status(&mut client, &a).await;
    let sb = status(&mut client, &b).await;
    assert_eq!(sa.state, v1::PodSandboxState::SandboxReady as i32);
    assert_eq!(sa.metadata.as_ref().expect("md").name, "a");
    assert_eq!(sa.labels["app"], "a");
    let ip_a = sa.network.expect("network a").ip;
    let ip_b = sb.network.expect("network b").ip;
    assert!(ip_a.starts_with("10.201.1."), "{ip_a}");
    assert_ne!(ip_a, ip_b);

    // a reaches b over the bridge.
    let ping = nsenter_net(&netns_pin(&sandbox, &a), &["ping", "-c1", "-W2", &ip_b]);
    assert!(
        ping.status.success(),
        "ping {ip_b}: {}",
        String::from_utf8_lossy(&ping.stdout)
    );

    // DNS options, hostname and sysctls landed in the pod.
    let resolv = std::fs::read_to_string(sandbox.path(&format!("root/sandboxes/{a}/resolv.conf")))
        .expect("resolv.conf");
    assert_eq!(
        resolv,
        "search test.svc.cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n"
    );
    let sysctl = nsenter_net(
        &netns_pin(&sandbox, &a),
        &["cat", "/proc/sys/net/ipv4/ip_unprivileged_port_start"],
    );
    assert_eq!(String::from_utf8_lossy(&sysctl.stdout).trim(), "79");
    let hostname = Command::new("nsenter")
        .arg(format!(
            "--uts={}",
            sandbox.path(&format!("run/ns/uts/{a}")).display()
        ))
        .arg("hostname")
        .output()
        .expect("nsenter uts");
    assert_eq!(String::from_utf8_lossy(&hostname.stdout).trim(), "a");

    // Listing with filters.
    let list = |filter: v1::PodSandboxFilter| {
        let mut client = client.clone();
        async move {
            client
                .list_pod_sandbox(v1::ListPodSandboxRequest {
                    filter: Some(filter),
                })
                .await
                .expect("list")
                .into_inner()
                .items
        }
    };
    assert_eq!(list(v1::PodSandboxFilter::default()).await.len(), 2);
    let by_label = list(v1::PodSandboxFilter {
        label_selector: [("app".to_owned(), "b".to_owned())].into(),
        ..Default::default()
    })
    .await;
    assert_eq!(
        by_label.iter().map(|p| p.id.as_str()).collect::<Vec<_>>(),
        [b.as_str()]
    );
    let by_prefix = list(v1::PodSandboxFilter {
        id: a[..12].to_owned(),
        ..Default::default()
    })
    .await;
    assert_eq!(by_prefix.len(), 1);

    // Stop releases the IP; the pod stays, NotReady; stop again is fine.
    for id in [&a, &b] {
        client
            .stop_pod_sandbox(v1::StopPodSandboxRequest {
                pod_sandbox_id: id.clone(),
            })
            .await
            .expect("stop");
    }
    client
        .stop_pod_sandbox(v1::StopPodSandboxRequest {
            pod_sandbox_id: a.clone(),
        })
        .await
        .expect("stop is idempotent");
    assert_eq!(
        status(&mut client, &a).await.state,
        v1::PodSandboxState::SandboxNotready as i32
    );
    let leases: Vec<_> = std::fs::read_dir(sandbox.path("ipam/krio-test-1"))
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    assert!(
        !leases.iter().any(|l| l.starts_with("10.")),
        "IP leases left after stop: {leases:?}"
    );

    for id in [&a, &b] {
        client
            .remove_pod_sandbox(v1::RemovePodSandboxRequest {
                pod_sandbox_id: id.clone(),
            })
            .await
            .expect("remove");
    }
    client
        .remove_pod_sandbox(v1::RemovePodSandboxRequest {
            pod_sandbox_id: a.clone(),
        })
        .await
        .expect("remove is idempotent");
    let err = client
        .pod_sandbox_status(v1::PodSandboxStatusRequest {
            pod_sandbox_id: a.clone(),
            verbose: false,
        })
        .await
        .expect_err("gone");
    assert_eq!(err.code(), tonic::Code::NotFound);
    assert!(
        sandbox.mounts().is_empty(),
        "mounts left: {:?}",
        sandbox.mounts()
    );
    assert_eq!(
        std::fs::read_dir(sandbox.path("root/sandboxes"))
            .expect("dir")
            .count(),
        0
    );
    let rules = String::from_utf8_lossy(
        &Command::new("iptables-save")
            .output()
            .expect("iptables-save")
            .stdout,
    )
    .into_owned();
    assert!(
        !rules.contains(&a) && !rules.contains(&b),
        "iptables rules left behind"
    );
}

#[tokio::test]
async fn a_host_port_reaches_a_listener_in_the_pod() {
    if skip_unless_root("a_host_port_reaches_a_listener_in_the_pod") {
        return;
    }
    let sandbox = Sandbox::new();
    let _mounts = MountGuard(sandbox.dir.path().to_path_buf());
    let _bridge = BridgeGuard(sandbox.write_bridge_network(2));
    let daemon = sandbox.start();
    let mut client = runtime_client(&daemon.socket).await;
    let host_port = 20000 + (std::process::id() % 10000) as i32;
    let mut config = pod_config("web");
    config.port_mappings = vec![v1::PortMapping {
        protocol: v1::Protocol::Tcp as i32,
        container_port: 8080,
        host_port,
        host_ip: String::new(),
    }];
    let id = client
        .run_pod_sandbox(run_request(config))
        .await
        .expect("run")
        .into_inner()
        .pod_sandbox_id;
    let pod_ip = status(&mut client, &id).await.network.expect("network").ip;

    // A listener inside the pod's network namespace, from a dedicated thread.
    let pin = sandbox.path(&format!("run/ns/net/{id}"));
    let server = std::thread::spawn(move || {
        let ns = std::fs::File::open(&pin).expect("open netns");
        nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        let listener = TcpListener::bind("0.0.0.0:8080").expect("bind in pod");
        let (mut conn, _) = listener.accept().expect("accept");
        conn.write_all(b"hello from the pod").expect("write");
    });
    std::thread::sleep(Duration::from_millis(200));
    // Through the node's address on the bridge (portmap's DNAT).
    let gateway = pod_ip
        .rsplit_once('.')
        .map(|(net, _)| format!("{net}.1"))
        .expect("ipv4");
    let mut conn =
        TcpStream::connect((gateway.as_str(), host_port as u16)).expect("connect to host port");
    conn.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut reply = String::new();
    conn.read_to_string(&mut reply).expect("read");
    assert_eq!(reply, "hello from the pod");
    server.join().expect("server thread");

    client
        .remove_pod_sandbox(v1::RemovePodSandboxRequest {
            pod_sandbox_id: id.clone(),
        })
        .await
        .expect("remove");
    let rules = String::from_utf8_lossy(
        &Command::new("iptables-save")
            .output()
            .expect("iptables-save")
            .stdout,
    )
    .into_owned();
    assert!(!rules.contains(&id), "portmap rules left behind");
}

#[tokio::test]
async fn host_network_pods_skip_cni_and_see_the_node() {
    if skip_unless_root("host_network_pods_skip_cni_and_see_the_node") {
        return;
    }
    let sandbox = Sandbox::new();
    let _mounts = MountGuard(sandbox.dir.path().to_path_buf());
    // No CNI config at all: host-network pods don't need one.
    let daemon = sandbox.start();
    let mut client = runtime_client(&daemon.socket).await;
    let mut config = pod_config("hostnet");
    config.linux = Some(v1::LinuxPodSandboxConfig {
        security_context: Some(v1::LinuxSandboxSecurityContext {
            namespace_options: Some(v1::NamespaceOption {
                network: v1::NamespaceMode::Node as i32,
                ipc: v1::NamespaceMode::Node as i32,
                pid: v1::NamespaceMode::Node as i32,
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    let id = client
        .run_pod_sandbox(run_request(config))
        .await
        .expect("run")
        .into_inner()
        .pod_sandbox_id;
    let st = status(&mut client, &id).await;
    assert_eq!(
        st.network.expect("network").ip,
        "",
        "no pod IP on the host network"
    );
    assert!(!sandbox.path(&format!("run/ns/net/{id}")).exists());
    assert!(
        sandbox.mounts().is_empty(),
        "nothing mounted for a host-network, host-IPC pod"
    );
    client
        .remove_pod_sandbox(v1::RemovePodSandboxRequest { pod_sandbox_id: id })
        .await
        .expect("remove");
}

#[tokio::test]
async fn bad_requests_are_invalid_argument_and_create_nothing() {
    if skip_unless_root("bad_requests_are_invalid_argument_and_create_nothing") {
        return;
    }
    let sandbox = Sandbox::new();
    let _mounts = MountGuard(sandbox.dir.path().to_path_buf());
    let _bridge = BridgeGuard(sandbox.write_bridge_network(3));
    let daemon = sandbox.start();
    let mut client = runtime_client(&daemon.socket).await;

    let mut unsafe_sysctl = pod_config("x");
    unsafe_sysctl.linux = Some(v1::LinuxPodSandboxConfig {
        sysctls: [("kernel.panic".to_owned(), "1".to_owned())].into(),
        ..Default::default()
    });
    let mut bad_mode = pod_config("y");
    bad_mode.linux = Some(v1::LinuxPodSandboxConfig {
        security_context: Some(v1::LinuxSandboxSecurityContext {
            namespace_options: Some(v1::NamespaceOption {
                pid: 42,
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    let mut no_metadata = pod_config("z");
    no_metadata.metadata = None;
    let cases = [
        (run_request(unsafe_sysctl), "kernel.panic"),
        (run_request(bad_mode), "unknown mode 42"),
        (run_request(no_metadata), "metadata is required"),
        (
            v1::RunPodSandboxRequest {
                config: Some(pod_config("h")),
                runtime_handler: "no-such-handler".into(),
            },
            "no-such-handler",
        ),
    ];
    for (req, needle) in cases {
        let err = client.run_pod_sandbox(req).await.expect_err("invalid");
        assert_eq!(
            err.code(),
            tonic::Code::InvalidArgument,
            "{}",
            err.message()
        );
        assert!(
            err.message().contains(needle),
            "{} lacks {needle}",
            err.message()
        );
    }
    let listed = client
        .list_pod_sandbox(v1::ListPodSandboxRequest::default())
        .await
        .expect("list")
        .into_inner()
        .items;
    assert!(listed.is_empty());
    assert!(sandbox.mounts().is_empty());
    assert!(
        !sandbox.path("root/sandboxes").exists()
            || std::fs::read_dir(sandbox.path("root/sandboxes"))
                .expect("dir")
                .count()
                == 0
    );
}

#[tokio::test]
async fn a_killed_daemon_restarts_with_its_pods_and_still_cleans_up() {
    if skip_unless_root("a_killed_daemon_restarts_with_its_pods_and_still_cleans_up") {
        return;
    }
    let sandbox = Sandbox::new();
    let _mounts = MountGuard(sandbox.dir.path().to_path_buf());
    let _bridge = BridgeGuard(sandbox.write_bridge_network(4));
    let (daemon, id, ip) = daemon_with_pod(&sandbox, "survivor").await;

    sigkill(daemon);

    let daemon = sandbox.start();
    let mut client = runtime_client(&daemon.socket).await;
    let st = status(&mut client, &id).await;
    assert_eq!(
        st.state,
        v1::PodSandboxState::SandboxReady as i32,
        "namespaces survived the daemon"
    );
    assert_eq!(st.network.expect("network").ip, ip);
    client
        .remove_pod_sandbox(v1::RemovePodSandboxRequest {
            pod_sandbox_id: id.clone(),
        })
        .await
        .expect("remove after restart");
    assert!(
        sandbox.mounts().is_empty(),
        "mounts left: {:?}",
        sandbox.mounts()
    );
    let leases = leases(&sandbox, 4);
    assert!(!leases.contains(&ip), "lease {ip} left: {leases:?}");
}

#[tokio::test]
async fn a_shared_pid_namespace_gets_an_infra_pid_1_that_dies_with_the_pod() {
    if skip_unless_root("a_shared_pid_namespace_gets_an_infra_pid_1_that_dies_with_the_pod") {
        return;
    }
    let sandbox = Sandbox::new();
    let _mounts = MountGuard(sandbox.dir.path().to_path_buf());
    let _bridge = BridgeGuard(sandbox.write_bridge_network(5));
    let daemon = sandbox.start();
    let mut client = runtime_client(&daemon.socket).await;
    // No namespace options: PID mode POD, the pod shares one PID namespace.
    let id = client
        .run_pod_sandbox(run_request(pod_config("shared")))
        .await
        .expect("run")
        .into_inner()
        .pod_sandbox_id;
    let pin = sandbox.path(&format!("run/ns/pid/{id}"));
    let pid: i32 = std::fs::read_to_string(sandbox.path(&format!("run/sandboxes/{id}/infra.pid")))
        .expect("infra pid file")
        .trim()
        .parse()
        .expect("pid");
    use std::os::unix::fs::MetadataExt;
    let ns_of = |p: &str| std::fs::metadata(p).expect("ns").ino();
    assert_eq!(
        ns_of(&pin.display().to_string()),
        ns_of(&format!("/proc/{pid}/ns/pid")),
        "the pin is the infra's PID namespace"
    );
    assert_eq!(
        ns_of(&format!("/proc/{pid}/ns/net")),
        ns_of(
            &sandbox
                .path(&format!("run/ns/net/{id}"))
                .display()
                .to_string()
        ),
        "the infra lives in the pod's network namespace"
    );
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let nspid = status
        .lines()
        .find(|l| l.starts_with("NSpid:"))
        .expect("NSpid");
    assert!(nspid.trim_end().ends_with("\t1"), "PID 1 inside: {nspid}");
    let ppid = status
        .lines()
        .find(|l| l.starts_with("PPid:"))
        .expect("PPid");
    assert!(
        !ppid.contains(&daemon.pid().to_string()),
        "not the daemon's child: {ppid}"
    );

    client
        .remove_pod_sandbox(v1::RemovePodSandboxRequest { pod_sandbox_id: id })
        .await
        .expect("remove");
    let gone = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("State:") && l.contains('Z'))
        })
        .unwrap_or(true);
    assert!(gone, "infra process {pid} still running after remove");
    assert!(!pin.exists());
    assert!(sandbox.mounts().is_empty());
}

/// Every tbf qdisc on the node: (device, rate in bits per second).
fn tbf_qdiscs() -> Vec<(String, u64)> {
    let out = Command::new("tc")
        .args(["-j", "qdisc", "show"])
        .output()
        .expect("tc");
    let all: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).expect("tc json");
    all.iter()
        .filter(|q| q["kind"] == "tbf")
        .map(|q| {
            (
                q["dev"].as_str().unwrap_or_default().to_owned(),
                q["options"]["rate"].as_u64().unwrap_or_default() * 8,
            )
        })
        .collect()
}

#[tokio::test]
async fn bandwidth_annotations_shape_the_pod_and_bad_ones_are_refused() {
    if skip_unless_root("bandwidth_annotations_shape_the_pod_and_bad_ones_are_refused") {
        return;
    }
    let sandbox = Sandbox::new();
    let _mounts = MountGuard(sandbox.dir.path().to_path_buf());
    let _bridge = BridgeGuard(sandbox.write_bridge_network(6));
    // The same chain plus the bandwidth plugin.
    let path = sandbox.path("cni/10-test.conflist");
    let mut conf: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).expect("conflist")).expect("json");
    conf["plugins"]
        .as_array_mut()
        .expect("plugins")
        .push(serde_json::json!({"type": "bandwidth", "capabilities": {"bandwidth": true}}));
    std::fs::write(&path, conf.to_string()).expect("write conflist");
    let daemon = sandbox.start();
    let mut client = runtime_client(&daemon.socket).await;

    let mut bad = pod_config("bw-bad");
    bad.annotations
        .insert("kubernetes.io/ingress-bandwidth".into(), "lots".into());
    let err = client
        .run_pod_sandbox(run_request(bad))
        .await
        .expect_err("a bad quantity");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("ingress-bandwidth"), "{err:?}");

    let before = tbf_qdiscs();
    let mut config = pod_config("bw");
    config
        .annotations
        .insert("kubernetes.io/ingress-bandwidth".into(), "10M".into());
    config
        .annotations
        .insert("kubernetes.io/egress-bandwidth".into(), "20M".into());
    let id = client
        .run_pod_sandbox(run_request(config))
        .await
        .expect("run")
        .into_inner()
        .pod_sandbox_id;
    let added: Vec<(String, u64)> = tbf_qdiscs()
        .into_iter()
        .filter(|q| !before.contains(q))
        .collect();
    let rates: Vec<u64> = added.iter().map(|(_, r)| *r).collect();
    assert!(rates.contains(&10_000_000), "ingress shaping: {added:?}");
    assert!(rates.contains(&20_000_000), "egress shaping: {added:?}");

    client
        .remove_pod_sandbox(v1::RemovePodSandboxRequest { pod_sandbox_id: id })
        .await
        .expect("remove");
    let left: Vec<(String, u64)> = tbf_qdiscs()
        .into_iter()
        .filter(|q| added.contains(q))
        .collect();
    assert!(left.is_empty(), "shaping left behind: {left:?}");
}

#[tokio::test]
async fn the_network_of_a_pod_krio_forgot_is_released_at_start() {
    if skip_unless_root("the_network_of_a_pod_krio_forgot_is_released_at_start") {
        return;
    }
    let sandbox = Sandbox::new();
    let _mounts = MountGuard(sandbox.dir.path().to_path_buf());
    let _bridge = BridgeGuard(sandbox.write_bridge_network(7));
    let (daemon, id, ip) = daemon_with_pod(&sandbox, "forgotten").await;
    let leases = || leases(&sandbox, 7);
    assert!(leases().contains(&ip), "the pod holds its lease");

    // kill -9, then lose the state database: krio no longer knows the pod,
    // but the CNI cache still says what was attached.
    sigkill(daemon);
    std::fs::remove_file(sandbox.path("root/krio.redb")).expect("remove the state database");

    let daemon = sandbox.start();
    let mut client = runtime_client(&daemon.socket).await;
    let pods = client
        .list_pod_sandbox(v1::ListPodSandboxRequest::default())
        .await
        .expect("list")
        .into_inner()
        .items;
    assert!(pods.is_empty(), "{pods:?}");
    assert!(
        !leases().contains(&ip),
        "lease {ip} of the forgotten pod left: {:?}",
        leases()
    );
    let cache: Vec<_> = std::fs::read_dir(sandbox.path("root/cni-cache"))
        .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(
        cache.iter().all(|p| !p.display().to_string().contains(&id)),
        "cache entry left: {cache:?}"
    );
    drop(daemon);
}
