//! Tests of [`super::Cni`] against a fake plugin executor.

use serde_json::{Value, json};

use super::*;
use crate::cni::fake::{Answer, FakeExec};

struct Env {
    _dir: tempfile::TempDir,
    conf_dir: PathBuf,
    cache_dir: PathBuf,
    fake: FakeExec,
    cni: Cni,
}

fn env_with(conflist: &Value) -> Env {
    let dir = tempfile::tempdir().expect("tempdir");
    let conf_dir = dir.path().join("net.d");
    let cache_dir = dir.path().join("cache");
    std::fs::create_dir(&conf_dir).expect("mkdir");
    std::fs::write(conf_dir.join("10-pod.conflist"), conflist.to_string()).expect("write");
    let fake = FakeExec::new();
    let cni = Cni::with_exec(
        CniOptions {
            conf_dir: conf_dir.clone(),
            bin_dirs: vec!["/fake".into()],
            cache_dir: cache_dir.clone(),
            plugin_timeout: Duration::from_secs(5),
        },
        Box::new(fake.clone()),
    );
    Env {
        _dir: dir,
        conf_dir,
        cache_dir,
        fake,
        cni,
    }
}

fn conflist(version: &str) -> Value {
    json!({
        "cniVersion": version,
        "name": "podnet",
        "plugins": [
            {"type": "bridge", "bridge": "cni0", "ipam": {"type": "host-local"},
             "capabilities": {"ips": true}},
            {"type": "portmap", "capabilities": {"portMappings": true, "bandwidth": false},
             "cni.dev/reserved": 1},
            {"type": "bandwidth", "capabilities": {"bandwidth": true}},
        ]
    })
}

fn pod() -> PodNetwork {
    PodNetwork {
        sandbox_id: "sb1".into(),
        netns: "/proc/self/ns/net".into(),
        ifname: "eth0".into(),
        pod_name: "web-0".into(),
        pod_namespace: "default".into(),
        pod_uid: "uid-1".into(),
        port_mappings: vec![
            PortMapping {
                host_port: 8080,
                container_port: 80,
                protocol: "TCP".into(),
                host_ip: String::new(),
            },
            PortMapping {
                host_port: 0,
                container_port: 9090,
                protocol: "TCP".into(),
                host_ip: String::new(),
            },
        ],
        bandwidth: Some(Bandwidth {
            ingress_rate: 1,
            ingress_burst: 2,
            egress_rate: 3,
            egress_burst: 4,
        }),
        dns: None,
        ip_ranges: Vec::new(),
    }
}

#[test]
fn cni_can_be_shared_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Cni>();
}

#[test]
fn add_chains_prev_results_and_caches() {
    let e = env_with(&conflist("1.0.0"));
    let status = e.cni.add(&pod()).expect("add");
    assert_eq!(
        e.fake.trace(),
        ["bridge:ADD", "portmap:ADD", "bandwidth:ADD"]
    );
    let calls = e.fake.calls();
    assert!(calls[0].config.get("prevResult").is_none());
    // Each plugin got its predecessor's output exactly.
    let first_out = &calls[1].config["prevResult"];
    assert_eq!(first_out["interfaces"][1]["name"], "host-bridge");
    let second_out = &calls[2].config["prevResult"];
    assert_eq!(second_out["interfaces"][2]["name"], "host-portmap");
    for c in &calls {
        assert_eq!(c.config["name"], "podnet");
        assert_eq!(c.config["cniVersion"], "1.0.0");
        assert!(c.config.get("capabilities").is_none());
        assert!(c.config.get("cni.dev/reserved").is_none());
    }
    assert_eq!(status.ips, vec!["10.88.0.2".parse::<IpAddr>().expect("ip")]);
    assert_eq!(status.result.interfaces.len(), 4);

    let cached = e
        .cni
        .cached_status("sb1", "eth0")
        .expect("cache")
        .expect("entry");
    assert_eq!(cached, status);
    assert_eq!(
        e.cni.cached_attachments().expect("list"),
        vec![CachedAttachment {
            sandbox_id: "sb1".into(),
            ifname: "eth0".into(),
            network: "podnet".into()
        }]
    );
}

#[test]
fn cni_env_and_args() {
    let e = env_with(&conflist("1.0.0"));
    e.cni.add(&pod()).expect("add");
    let call = &e.fake.calls()[0];
    let env: Vec<(&str, &str)> = call
        .env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        env,
        [
            (
                "CNI_ARGS",
                "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;\
                 K8S_POD_INFRA_CONTAINER_ID=sb1;K8S_POD_UID=uid-1"
            ),
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "sb1"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_NETNS", "/proc/self/ns/net"),
        ]
    );
}

#[test]
fn runtime_config_is_filtered_by_capabilities() {
    let e = env_with(&conflist("1.0.0"));
    e.cni.add(&pod()).expect("add");
    let calls = e.fake.calls();
    // bridge declares only "ips", which krio does not pass.
    assert!(calls[0].config.get("runtimeConfig").is_none());
    // portmap declares portMappings (and bandwidth: false).
    assert_eq!(
        calls[1].config["runtimeConfig"],
        json!({"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]})
    );
    assert_eq!(
        calls[2].config["runtimeConfig"],
        json!({"bandwidth": {"ingressRate": 1, "ingressBurst": 2, "egressRate": 3, "egressBurst": 4}})
    );
}

#[test]
fn failed_add_is_rolled_back_with_del() {
    let e = env_with(&conflist("1.0.0"));
    e.fake.answer(
        "portmap",
        "ADD",
        Answer::Fail {
            code: 1,
            stdout:
                r#"{"cniVersion":"1.0.0","code":11,"msg":"iptables busy","details":"try later"}"#
                    .into(),
        },
    );
    let err = e.cni.add(&pod()).expect_err("add fails");
    let msg = err.to_string();
    assert!(
        msg.contains("network podnet: CNI plugin portmap ADD failed: error code 11"),
        "{msg}"
    );
    assert!(
        msg.contains("iptables busy; try later (stderr: fake stderr) (rolled back)"),
        "{msg}"
    );
    assert!(err.plugin_error().is_some_and(|p| p.is_try_again_later()));
    assert_eq!(
        e.fake.trace(),
        [
            "bridge:ADD",
            "portmap:ADD",
            "bandwidth:DEL",
            "portmap:DEL",
            "bridge:DEL"
        ]
    );
    // The rollback passes the last good result.
    let del = &e.fake.calls()[2];
    assert_eq!(
        del.config["prevResult"]["interfaces"][1]["name"],
        "host-bridge"
    );
    assert!(e.cni.cached_attachments().expect("list").is_empty());
}

#[test]
fn failed_rollback_keeps_the_cache_entry_for_a_later_del() {
    let e = env_with(&conflist("1.0.0"));
    e.fake.answer(
        "bandwidth",
        "ADD",
        Answer::Fail {
            code: 1,
            stdout: "{}".into(),
        },
    );
    e.fake.answer(
        "bridge",
        "DEL",
        Answer::Fail {
            code: 1,
            stdout: r#"{"code":5,"msg":"disk"}"#.into(),
        },
    );
    let err = e.cni.add(&pod()).expect_err("add fails");
    assert!(
        err.to_string()
            .contains("rollback failed too: CNI plugin bridge DEL failed"),
        "{err}"
    );
    assert_eq!(e.cni.cached_attachments().expect("list").len(), 1);
    assert_eq!(e.cni.cached_status("sb1", "eth0").expect("cache"), None);
}

#[test]
fn missing_plugin_fails_add_before_anything_runs() {
    let e = env_with(&conflist("1.0.0"));
    e.fake.remove_plugin("bandwidth");
    let err = e.cni.add(&pod()).expect_err("add fails");
    assert!(
        err.to_string()
            .contains("CNI plugin \"bandwidth\" not found"),
        "{err}"
    );
    assert!(e.fake.trace().is_empty());
    assert!(e.cni.cached_attachments().expect("list").is_empty());
}

#[test]
fn del_uses_cached_result_and_config_then_forgets() {
    let e = env_with(&conflist("1.0.0"));
    let status = e.cni.add(&pod()).expect("add");
    // The config changes after ADD: DEL still uses the cached one.
    std::fs::write(
        e.conf_dir.join("10-pod.conflist"),
        json!({"cniVersion": "1.0.0", "name": "podnet", "plugins": [{"type": "other"}]})
            .to_string(),
    )
    .expect("rewrite");
    e.fake.clear();
    e.cni.del(&pod()).expect("del");
    assert_eq!(
        e.fake.trace(),
        ["bandwidth:DEL", "portmap:DEL", "bridge:DEL"]
    );
    for call in e.fake.calls() {
        assert_eq!(call.config["prevResult"], status.result.raw);
        assert_eq!(call.env["CNI_NETNS"], "/proc/self/ns/net");
    }
    assert_eq!(
        e.fake.calls()[1].config["runtimeConfig"]["portMappings"][0]["hostPort"],
        8080
    );
    assert!(e.cni.cached_attachments().expect("list").is_empty());
    assert!(
        std::fs::read_dir(&e.cache_dir)
            .expect("cache dir")
            .next()
            .is_none()
    );

    // Again: no cache now, so the current config is used, no prevResult.
    e.fake.clear();
    e.cni.del(&pod()).expect("second del");
    assert_eq!(e.fake.trace(), ["other:DEL"]);
    assert!(e.fake.calls()[0].config.get("prevResult").is_none());
}

#[test]
fn del_without_cache_or_config_is_ok() {
    let e = env_with(&conflist("1.0.0"));
    std::fs::remove_file(e.conf_dir.join("10-pod.conflist")).expect("rm");
    e.cni.del(&pod()).expect("del");
    assert!(e.fake.trace().is_empty());
}

#[test]
fn del_with_gone_netns_passes_none_and_still_releases() {
    let e = env_with(&conflist("1.0.0"));
    let mut p = pod();
    e.cni.add(&p).expect("add");
    p.netns = "/run/krio-test/ns/net/gone".into();
    e.fake.clear();
    e.cni.del(&p).expect("del");
    assert_eq!(e.fake.trace().len(), 3);
    for call in e.fake.calls() {
        assert!(!call.env.contains_key("CNI_NETNS"), "{:?}", call.env);
    }
}

#[test]
fn del_treats_unknown_container_as_done() {
    let e = env_with(&conflist("1.0.0"));
    e.fake.answer(
        "portmap",
        "DEL",
        Answer::Fail {
            code: 1,
            stdout: r#"{"code":3,"msg":"unknown"}"#.into(),
        },
    );
    e.cni.del(&pod()).expect("del");
    assert_eq!(
        e.fake.trace(),
        ["bandwidth:DEL", "portmap:DEL", "bridge:DEL"]
    );
}

#[test]
fn failed_del_keeps_the_cache_entry() {
    let e = env_with(&conflist("1.0.0"));
    e.cni.add(&pod()).expect("add");
    e.fake.answer(
        "bridge",
        "DEL",
        Answer::Fail {
            code: 1,
            stdout: r#"{"code":5,"msg":"busy"}"#.into(),
        },
    );
    let err = e.cni.del(&pod()).expect_err("del fails");
    assert!(
        err.to_string()
            .contains("network podnet: CNI plugin bridge DEL failed: error code 5"),
        "{err}"
    );
    assert_eq!(e.cni.cached_attachments().expect("list").len(), 1);
}

#[test]
fn pre_0_4_0_del_gets_no_prev_result_and_check_is_skipped() {
    let e = env_with(&conflist("0.3.1"));
    e.cni.add(&pod()).expect("add");
    e.cni.check(&pod()).expect("check is a no-op");
    e.fake.clear();
    e.cni.del(&pod()).expect("del");
    for call in e.fake.calls() {
        assert!(call.config.get("prevResult").is_none());
    }
}

#[test]
fn check_runs_in_order_with_cached_result() {
    let e = env_with(&conflist("0.4.0"));
    let err = e.cni.check(&pod()).expect_err("not added");
    assert!(matches!(err, CniError::NotAdded { .. }), "{err}");
    let status = e.cni.add(&pod()).expect("add");
    e.fake.clear();
    e.cni.check(&pod()).expect("check");
    assert_eq!(
        e.fake.trace(),
        ["bridge:CHECK", "portmap:CHECK", "bandwidth:CHECK"]
    );
    assert_eq!(e.fake.calls()[2].config["prevResult"], status.result.raw);

    let mut disabled = conflist("1.0.0");
    disabled["disableCheck"] = json!(true);
    let e = env_with(&disabled);
    e.cni.add(&pod()).expect("add");
    e.fake.clear();
    e.cni.check(&pod()).expect("check");
    assert!(e.fake.trace().is_empty());
}

#[test]
fn add_over_a_cached_attachment_deletes_it_first() {
    let e = env_with(&conflist("1.0.0"));
    e.cni.add(&pod()).expect("add");
    e.fake.clear();
    e.cni.add(&pod()).expect("add again");
    assert_eq!(
        e.fake.trace(),
        [
            "bandwidth:DEL",
            "portmap:DEL",
            "bridge:DEL",
            "bridge:ADD",
            "portmap:ADD",
            "bandwidth:ADD"
        ]
    );
}

#[test]
fn add_picks_up_a_config_written_later() {
    let e = env_with(&conflist("1.0.0"));
    std::fs::remove_file(e.conf_dir.join("10-pod.conflist")).expect("rm");
    let err = e.cni.add(&pod()).expect_err("no config");
    assert!(matches!(err, CniError::Config(_)), "{err}");
    std::fs::write(
        e.conf_dir.join("20-late.conflist"),
        conflist("1.0.0").to_string(),
    )
    .expect("write");
    e.cni.add(&pod()).expect("add");
}

#[test]
fn invalid_requests_are_refused_before_any_plugin_runs() {
    let e = env_with(&conflist("1.0.0"));
    for (id, ifname) in [("../../etc", "eth0"), ("", "eth0"), ("sb1", "eth/0")] {
        let mut p = pod();
        p.sandbox_id = id.into();
        p.ifname = ifname.into();
        assert!(matches!(e.cni.add(&p), Err(CniError::InvalidRequest(_))));
        assert!(matches!(e.cni.del(&p), Err(CniError::InvalidRequest(_))));
    }
    let mut p = pod();
    p.pod_name = "a;IP=10.0.0.9".into();
    assert!(matches!(e.cni.add(&p), Err(CniError::Args(_))));
    assert!(e.fake.trace().is_empty());
}

#[test]
fn status_and_gc_only_for_1_1_0() {
    let e = env_with(&conflist("1.0.0"));
    e.cni.plugin_status().expect("status");
    e.cni.gc(&[]).expect("gc");
    assert!(e.fake.trace().is_empty());

    let e = env_with(&conflist("1.1.0"));
    e.fake.answer(
        "portmap",
        "STATUS",
        Answer::Fail {
            code: 1,
            stdout: r#"{"code":50,"msg":"no iptables"}"#.into(),
        },
    );
    let err = e.cni.plugin_status().expect_err("not ready");
    assert!(
        err.to_string()
            .contains("error code 50 (plugin not available): no iptables"),
        "{err}"
    );
    assert_eq!(e.fake.trace(), ["bridge:STATUS", "portmap:STATUS"]);
    let status_env = &e.fake.calls()[0].env;
    assert_eq!(status_env.keys().collect::<Vec<_>>(), ["CNI_COMMAND"]);

    e.fake.clear();
    e.fake.answer(
        "bridge",
        "GC",
        Answer::Fail {
            code: 1,
            stdout: r#"{"code":5,"msg":"oops"}"#.into(),
        },
    );
    let err = e
        .cni
        .gc(&[("sb1".into(), "eth0".into())])
        .expect_err("gc error");
    assert!(
        err.to_string()
            .contains("CNI GC failed: CNI plugin bridge GC failed"),
        "{err}"
    );
    // GC carries on past the failure.
    assert_eq!(e.fake.trace(), ["bridge:GC", "portmap:GC", "bandwidth:GC"]);
    assert_eq!(
        e.fake.calls()[1].config["cni.dev/valid-attachments"],
        json!([{"containerID": "sb1", "ifname": "eth0"}])
    );
    assert!(e.fake.calls()[1].config.get("runtimeConfig").is_none());

    let mut no_gc = conflist("1.1.0");
    no_gc["disableGC"] = json!(true);
    let e = env_with(&no_gc);
    e.cni.gc(&[]).expect("gc");
    assert!(e.fake.trace().is_empty());
}

#[test]
fn malformed_add_result_is_an_error_naming_the_plugin() {
    let e = env_with(&conflist("1.0.0"));
    e.fake
        .answer("bridge", "ADD", Answer::Stdout("not json".into()));
    let err = e.cni.add(&pod()).expect_err("bad result");
    assert!(
        err.to_string()
            .contains("CNI plugin bridge ADD: malformed CNI result"),
        "{err}"
    );
    assert_eq!(
        e.fake.trace(),
        ["bridge:ADD", "bandwidth:DEL", "portmap:DEL", "bridge:DEL"]
    );
}
