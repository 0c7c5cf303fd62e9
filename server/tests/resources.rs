//! UpdateContainerResources, UpdatePodSandboxResources and pod-level stats
//! end to end: the real daemon, krio-monitor, runc and cgroups. Root-only.

mod common;
mod pod_env;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{registry_ready, skip_unless_root};
use krio_proto::v1;
use pod_env::{cgroup_dir, env, env_in_cgroup, pure_v2};

const MIB: i64 = 1 << 20;

fn read_trimmed(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
        .trim()
        .to_owned()
}

/// The memory limit and CPU quota the kernel holds for a process's cgroup.
fn kernel_limits(pid: u32) -> (i64, String) {
    if pure_v2() {
        let dir = cgroup_dir(pid, "");
        let mem = read_trimmed(&dir.join("memory.max"))
            .parse()
            .expect("memory.max");
        let quota = read_trimmed(&dir.join("cpu.max"));
        let quota = quota
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_owned();
        (mem, quota)
    } else {
        let mem = read_trimmed(&cgroup_dir(pid, "memory").join("memory.limit_in_bytes"))
            .parse()
            .expect("memory.limit_in_bytes");
        let quota = read_trimmed(&cgroup_dir(pid, "cpu").join("cpu.cfs_quota_us"));
        (mem, quota)
    }
}

fn linux_resources(status: &v1::ContainerStatus) -> v1::LinuxContainerResources {
    status
        .resources
        .clone()
        .and_then(|r| r.linux)
        .expect("ContainerStatus.resources.linux")
}

#[tokio::test]
async fn updates_reach_the_cgroup_and_the_status_and_survive_a_restart() {
    let test = "updates_reach_the_cgroup_and_the_status_and_survive_a_restart";
    if skip_unless_root(test) || !registry_ready(test) {
        return;
    }
    let mut env = env(41, "update").await;
    let id = env
        .run_limited(
            "sleeper",
            &["sleep", "100000"],
            v1::LinuxContainerResources {
                cpu_period: 100_000,
                cpu_quota: 50_000,
                memory_limit_in_bytes: 64 * MIB,
                // No swap: on cgroup v1 memory + swap is capped at 64 MiB
                // too, so raising memory alone must move both.
                memory_swap_limit_in_bytes: 64 * MIB,
                ..Default::default()
            },
        )
        .await;
    let pid = env.pid(&id).await;
    assert_eq!(kernel_limits(pid), (64 * MIB, "50000".to_owned()));
    let before = linux_resources(&env.status(&id).await);
    assert_eq!(before.memory_limit_in_bytes, 64 * MIB, "from the config");

    env.client
        .update_container_resources(v1::UpdateContainerResourcesRequest {
            container_id: id.clone(),
            linux: Some(v1::LinuxContainerResources {
                memory_limit_in_bytes: 128 * MIB,
                cpu_quota: 20_000,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect("UpdateContainerResources");
    assert_eq!(kernel_limits(pid), (128 * MIB, "20000".to_owned()));
    let after = linux_resources(&env.status(&id).await);
    assert_eq!(after.memory_limit_in_bytes, 128 * MIB);
    assert_eq!(after.cpu_quota, 20_000);
    assert_eq!(after.cpu_period, 100_000, "left unset: kept");
    assert_eq!(
        after.memory_swap_limit_in_bytes,
        128 * MIB,
        "still no swap allowance"
    );

    // Bad input: refused, and nothing changes.
    let bad = [
        v1::LinuxContainerResources {
            memory_limit_in_bytes: -5,
            ..Default::default()
        },
        v1::LinuxContainerResources {
            memory_limit_in_bytes: 32 * MIB,
            cpuset_cpus: "0-a".into(),
            ..Default::default()
        },
        v1::LinuxContainerResources {
            memory_limit_in_bytes: 32 * MIB,
            unified: [("memory.hihg".to_owned(), "1".to_owned())].into(),
            ..Default::default()
        },
    ];
    for linux in bad {
        let err = env
            .client
            .update_container_resources(v1::UpdateContainerResourcesRequest {
                container_id: id.clone(),
                linux: Some(linux.clone()),
                ..Default::default()
            })
            .await
            .expect_err("bad resources");
        assert_eq!(
            err.code(),
            tonic::Code::InvalidArgument,
            "{linux:?}: {}",
            err.message()
        );
    }
    let err = env
        .client
        .update_container_resources(v1::UpdateContainerResourcesRequest {
            container_id: id.clone(),
            linux: None,
            windows: Some(v1::WindowsContainerResources {
                memory_limit_in_bytes: 32 * MIB,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect_err("windows resources on Linux");
    assert_eq!(
        err.code(),
        tonic::Code::InvalidArgument,
        "{}",
        err.message()
    );
    assert_eq!(kernel_limits(pid), (128 * MIB, "20000".to_owned()));
    assert_eq!(linux_resources(&env.status(&id).await), after);

    env.restart_daemon().await;
    assert_eq!(
        linux_resources(&env.status(&id).await),
        after,
        "the update survives a daemon restart"
    );
    assert_eq!(kernel_limits(pid), (128 * MIB, "20000".to_owned()));

    env.client
        .stop_container(v1::StopContainerRequest {
            container_id: id.clone(),
            timeout: 0,
        })
        .await
        .expect("stop");
    let err = env
        .client
        .update_container_resources(v1::UpdateContainerResourcesRequest {
            container_id: id.clone(),
            linux: Some(v1::LinuxContainerResources {
                memory_limit_in_bytes: 256 * MIB,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect_err("an exited container");
    assert_eq!(
        err.code(),
        tonic::Code::FailedPrecondition,
        "{}",
        err.message()
    );

    env.client
        .update_pod_sandbox_resources(v1::UpdatePodSandboxResourcesRequest {
            pod_sandbox_id: env.pod_id.clone(),
            overhead: None,
            resources: Some(v1::LinuxContainerResources {
                memory_limit_in_bytes: 256 * MIB,
                ..Default::default()
            }),
        })
        .await
        .expect("UpdatePodSandboxResources");
    let info = env
        .client
        .pod_sandbox_status(v1::PodSandboxStatusRequest {
            pod_sandbox_id: env.pod_id.clone(),
            verbose: true,
        })
        .await
        .expect("pod status")
        .into_inner()
        .info;
    let info: serde_json::Value = serde_json::from_str(&info["info"]).expect("info json");
    assert_eq!(
        info["resources"]["resources"]["memoryLimitInBytes"],
        256 * MIB,
        "recorded: {info}"
    );
    let err = env
        .client
        .update_pod_sandbox_resources(v1::UpdatePodSandboxResourcesRequest {
            pod_sandbox_id: env.pod_id.clone(),
            overhead: Some(v1::LinuxContainerResources {
                cpu_shares: -1,
                ..Default::default()
            }),
            resources: None,
        })
        .await
        .expect_err("negative shares");
    assert_eq!(
        err.code(),
        tonic::Code::InvalidArgument,
        "{}",
        err.message()
    );
    env.remove_pod().await;
}

/// A cgroup tree of the test's own under every hierarchy: whatever is left
/// in it is killed and the directories removed, even when the test fails.
struct CgroupTree(String);

impl CgroupTree {
    fn dirs(&self) -> Vec<PathBuf> {
        let mut dirs = Vec::new();
        for entry in std::fs::read_dir("/sys/fs/cgroup")
            .into_iter()
            .flatten()
            .flatten()
        {
            let dir = entry.path().join(&self.0);
            if dir.is_dir() {
                dirs.push(dir);
            }
        }
        let top = Path::new("/sys/fs/cgroup").join(&self.0);
        if pure_v2() && top.is_dir() {
            dirs.push(top);
        }
        dirs
    }
}

impl Drop for CgroupTree {
    fn drop(&mut self) {
        for top in self.dirs() {
            let mut all = vec![top.clone()];
            let mut i = 0;
            while i < all.len() {
                for e in std::fs::read_dir(&all[i]).into_iter().flatten().flatten() {
                    if e.file_type().is_ok_and(|t| t.is_dir()) {
                        all.push(e.path());
                    }
                }
                i += 1;
            }
            for dir in all.iter().rev() {
                let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
                for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
            for dir in all.iter().rev() {
                for _ in 0..50 {
                    if std::fs::remove_dir(dir).is_ok() || !dir.exists() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
    }
}

/// A child process killed and reaped on drop.
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn count_value(stats: &v1::PodSandboxStats) -> u64 {
    stats
        .linux
        .as_ref()
        .and_then(|l| l.process.as_ref())
        .and_then(|p| p.process_count.as_ref())
        .expect("process count")
        .value
}

#[tokio::test]
async fn pod_stats_read_the_pod_cgroup() {
    let test = "pod_stats_read_the_pod_cgroup";
    if skip_unless_root(test) || !registry_ready(test) {
        return;
    }
    let tree = CgroupTree(format!("krio-test-{}-res", std::process::id()));
    let parent = format!("/{}/pod42", tree.0);
    let mut env = env_in_cgroup(42, "podcg", &parent).await;
    let id = env.run("sleeper", &["sleep", "100000"]).await;
    let read = |mut client: common::RuntimeClient, pod_sandbox_id: String| async move {
        client
            .pod_sandbox_stats(v1::PodSandboxStatsRequest { pod_sandbox_id })
            .await
            .expect("PodSandboxStats")
            .into_inner()
            .stats
            .expect("stats")
    };
    let before = read(env.client.clone(), env.pod_id.clone()).await;
    assert_eq!(count_value(&before), 1, "the container's one process");

    // A process put straight into the pod cgroup: only a reading of the
    // pod cgroup itself (not the containers' sum) sees it.
    let extra = Reaped(
        std::process::Command::new("sleep")
            .arg("1000")
            .spawn()
            .expect("spawn sleep"),
    );
    let mut moved = 0;
    for dir in tree.dirs() {
        let pod_dir = dir.join("pod42");
        if pod_dir.join("cgroup.procs").exists() {
            std::fs::write(pod_dir.join("cgroup.procs"), extra.0.id().to_string())
                .unwrap_or_else(|e| panic!("move into {}: {e}", pod_dir.display()));
            moved += 1;
        }
    }
    assert!(moved > 0, "the pod cgroup exists under {parent}");
    let after = read(env.client.clone(), env.pod_id.clone()).await;
    assert_eq!(count_value(&after), 2, "the pod cgroup's processes");
    let linux = after.linux.as_ref().expect("linux");
    let container = linux.containers.first().expect("container stats");
    let pod_mem = linux
        .memory
        .as_ref()
        .and_then(|m| m.usage_bytes.as_ref())
        .expect("pod memory")
        .value;
    let ctr_mem = container
        .memory
        .as_ref()
        .and_then(|m| m.usage_bytes.as_ref())
        .expect("container memory")
        .value;
    assert!(
        pod_mem >= ctr_mem,
        "pod {pod_mem} covers container {ctr_mem}"
    );
    let cpu = |c: Option<&v1::CpuUsage>| {
        c.and_then(|c| c.usage_core_nano_seconds.as_ref())
            .expect("cpu")
            .value
    };
    assert!(cpu(linux.cpu.as_ref()) >= cpu(container.cpu.as_ref()));
    assert_eq!(container.attributes.as_ref().expect("attributes").id, id);
    drop(extra);
    env.remove_pod().await;
}
