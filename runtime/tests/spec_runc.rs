//! Root-only: generated specs run under the real runc, with a busybox rootfs.
//!
//! Each case writes a bundle (busybox + its libraries when it is not static,
//! `/etc/passwd`, `/etc/group`), generates the spec with the real host facts,
//! runs it with `runc run` and checks what the container printed. Prints
//! SKIPPED (and passes) when not root, or runc or busybox is missing, unless
//! `KRIO_REQUIRE_ROOT_TESTS=1`, which turns a skip into a failure. The
//! container, runc's state and the test's cgroups are removed even when an
//! assertion fails.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use krio_proto::v1;
use krio_runtime::spec::{CapabilitySet, HostInfo, PidNamespace, SandboxInfo, SpecInput, generate};
use oci_spec::image::ImageConfiguration;
use oci_spec::runtime::{LinuxNamespace, LinuxNamespaceType};

const RUNC_CANDIDATES: [&str; 3] = ["/usr/sbin/runc", "/usr/bin/runc", "/usr/local/sbin/runc"];
const BUSYBOX_CANDIDATES: [&str; 3] =
    ["/bin/busybox", "/usr/bin/busybox", "/usr/local/bin/busybox"];

fn is_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

/// The runc and busybox to use, or why the test cannot run.
fn prerequisites() -> Option<(PathBuf, PathBuf)> {
    let reason = if !is_root() {
        "not root".to_owned()
    } else {
        let find = |c: &[&str]| c.iter().map(PathBuf::from).find(|p| p.is_file());
        match (find(&RUNC_CANDIDATES), find(&BUSYBOX_CANDIDATES)) {
            (Some(runc), Some(busybox)) => return Some((runc, busybox)),
            (None, _) => "runc not found".to_owned(),
            (_, None) => "busybox not found (apt-get install busybox-static)".to_owned(),
        }
    };
    if std::env::var("KRIO_REQUIRE_ROOT_TESTS").as_deref() == Ok("1") {
        panic!("spec_runc: {reason}, but KRIO_REQUIRE_ROOT_TESTS=1");
    }
    println!("SKIPPED spec_runc: {reason}");
    None
}

/// Copies busybox into `rootfs/bin` with its applet links, plus the shared
/// libraries it needs when it is dynamically linked.
fn install_busybox(busybox: &Path, rootfs: &Path) {
    for dir in ["bin", "etc", "proc", "sys", "dev", "tmp"] {
        fs::create_dir_all(rootfs.join(dir)).expect("mkdir rootfs dir");
    }
    fs::copy(busybox, rootfs.join("bin/busybox")).expect("copy busybox");
    for applet in [
        "sh", "cat", "id", "grep", "wc", "echo", "hostname", "unshare", "true",
    ] {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet))
            .expect("applet link");
    }
    let ldd = Command::new("ldd").arg(busybox).output().expect("ldd");
    for line in String::from_utf8_lossy(&ldd.stdout).lines() {
        let lib = line
            .split_whitespace()
            .find(|w| w.starts_with('/'))
            .map(PathBuf::from);
        if let Some(lib) = lib {
            let target = rootfs.join(lib.strip_prefix("/").expect("absolute"));
            fs::create_dir_all(target.parent().expect("parent")).expect("mkdir lib dir");
            fs::copy(&lib, &target).expect("copy library");
        }
    }
    fs::write(
        rootfs.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n",
    )
    .expect("passwd");
    fs::write(
        rootfs.join("etc/group"),
        "root:x:0:\napp:x:1000:\nextra:x:50000:app\n",
    )
    .expect("group");
}

/// A bundle with its own runc state dir; removes container, state and cgroups on drop.
struct Bundle {
    dir: tempfile::TempDir,
    runc: PathBuf,
    id: String,
    cgroup_parent: String,
}

impl Bundle {
    fn new(runc: &Path, busybox: &Path, name: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        install_busybox(busybox, &dir.path().join("rootfs"));
        for file in ["hosts", "resolv.conf", "hostname"] {
            fs::write(dir.path().join(file), format!("# {file}\n")).expect("pod file");
        }
        let id = format!("krio-spec-{name}-{}", std::process::id());
        Self {
            cgroup_parent: format!("/krio-spec-test-{}", std::process::id()),
            dir,
            runc: runc.to_owned(),
            id,
        }
    }

    fn runc(&self) -> Command {
        let mut cmd = Command::new(&self.runc);
        cmd.arg("--root").arg(self.dir.path().join("state"));
        cmd
    }

    /// Generates the spec for `config`, runs it, returns (exit ok, stdout, stderr).
    fn run(&self, config: &v1::ContainerConfig) -> (bool, String, String) {
        let privileged = config
            .linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref())
            .is_some_and(|s| s.privileged);
        let sandbox = SandboxInfo {
            id: "sandbox".into(),
            config: v1::PodSandboxConfig {
                linux: Some(v1::LinuxPodSandboxConfig {
                    cgroup_parent: self.cgroup_parent.clone(),
                    security_context: Some(v1::LinuxSandboxSecurityContext {
                        privileged,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            },
            hostname: "spec-test".into(),
            network_ns: None,
            ipc_ns: None,
            uts_ns: None,
            user_ns: None,
            pid_ns: PidNamespace::Container,
            resolv_conf: Some(self.dir.path().join("resolv.conf")),
            hosts: Some(self.dir.path().join("hosts")),
            hostname_file: Some(self.dir.path().join("hostname")),
            shm: None,
        };
        let host = HostInfo::detect();
        let rootfs = self.dir.path().join("rootfs");
        let mut generated = generate(&SpecInput {
            container_id: &self.id,
            config,
            sandbox: &sandbox,
            image: &ImageConfiguration::default(),
            rootfs: &rootfs,
            host: &host,
        })
        .expect("generate");
        // The test has no pinned pod namespaces: give the container fresh ones.
        let linux = generated.spec.linux_mut().as_mut().expect("linux");
        let namespaces = linux.namespaces_mut().as_mut().expect("namespaces");
        for typ in [
            LinuxNamespaceType::Network,
            LinuxNamespaceType::Ipc,
            LinuxNamespaceType::Uts,
        ] {
            let mut ns = LinuxNamespace::default();
            ns.set_typ(typ);
            namespaces.push(ns);
        }
        let file = fs::File::create(self.dir.path().join("config.json")).expect("config.json");
        serde_json::to_writer_pretty(file, &generated.spec).expect("write config.json");
        let out = self
            .runc()
            .arg("run")
            .arg("--bundle")
            .arg(self.dir.path())
            .arg(&self.id)
            .stdin(std::process::Stdio::null())
            .output()
            .expect("runc run");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

impl Drop for Bundle {
    fn drop(&mut self) {
        let _ = self.runc().args(["delete", "--force", &self.id]).output();
        let Ok(controllers) = fs::read_dir("/sys/fs/cgroup") else {
            return;
        };
        let parent = self.cgroup_parent.trim_start_matches('/');
        let mut dirs: Vec<PathBuf> = vec![Path::new("/sys/fs/cgroup").join(parent)];
        for c in controllers.flatten() {
            dirs.push(c.path().join(parent));
        }
        for dir in dirs {
            let _ = fs::remove_dir(dir.join(format!("krio-{}", self.id)));
            let _ = fs::remove_dir(&dir);
        }
    }
}

fn config(command: &str) -> v1::ContainerConfig {
    v1::ContainerConfig {
        command: vec!["sh".into(), "-c".into(), command.into()],
        ..Default::default()
    }
}

fn security(config: &mut v1::ContainerConfig) -> &mut v1::LinuxContainerSecurityContext {
    config
        .linux
        .get_or_insert_with(Default::default)
        .security_context
        .get_or_insert_with(Default::default)
}

fn status_field(output: &str, key: &str) -> String {
    output
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .map(|v| v.trim().to_owned())
        .unwrap_or_default()
}

/// Named `spec` so that `cargo test -p krio-runtime spec` selects these tests.
mod spec {
    use super::*;

    #[test]
    fn runc_runs_the_resolved_user_and_groups() {
        let Some((runc, busybox)) = prerequisites() else {
            return;
        };
        let bundle = Bundle::new(&runc, &busybox, "user");
        let mut cfg = config("id -u; id -g; id -G; echo HOME=$HOME");
        security(&mut cfg).run_as_user = Some(v1::Int64Value { value: 1000 });
        security(&mut cfg).supplemental_groups = vec![1234];
        let (ok, stdout, stderr) = bundle.run(&cfg);
        assert!(ok, "runc run failed: {stderr}");
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(lines[0], "1000", "{stdout}");
        assert_eq!(lines[1], "1000", "{stdout}");
        let mut groups: Vec<&str> = lines[2].split_whitespace().collect();
        groups.sort_unstable();
        assert_eq!(groups, vec!["1000", "1234", "50000"], "{stdout}");
        assert_eq!(lines[3], "HOME=/home/app");
    }

    #[test]
    fn runc_grants_the_expected_capabilities() {
        let Some((runc, busybox)) = prerequisites() else {
            return;
        };
        let host = HostInfo::detect().capabilities;
        let bundle = Bundle::new(&runc, &busybox, "caps");
        let (ok, stdout, stderr) = bundle.run(&config("grep Cap /proc/self/status"));
        assert!(ok, "runc run failed: {stderr}");
        let want = format!("{:016x}", CapabilitySet::defaults().bits() & host.bits());
        assert_eq!(status_field(&stdout, "CapBnd:"), want, "{stdout}");
        assert_eq!(status_field(&stdout, "CapEff:"), want, "{stdout}");
        assert_eq!(status_field(&stdout, "CapPrm:"), want, "{stdout}");
        assert_eq!(
            status_field(&stdout, "CapInh:"),
            "0000000000000000",
            "{stdout}"
        );

        let bundle = Bundle::new(&runc, &busybox, "dropall");
        let mut cfg = config("grep Cap /proc/self/status");
        security(&mut cfg).capabilities = Some(v1::Capability {
            drop_capabilities: vec!["ALL".into()],
            ..Default::default()
        });
        let (ok, stdout, stderr) = bundle.run(&cfg);
        assert!(ok, "runc run failed: {stderr}");
        assert_eq!(
            status_field(&stdout, "CapBnd:"),
            "0000000000000000",
            "{stdout}"
        );
    }

    #[test]
    fn runc_masks_and_confines() {
        let Some((runc, busybox)) = prerequisites() else {
            return;
        };
        let bundle = Bundle::new(&runc, &busybox, "masked");
        // /proc/kcore is absent on some kernels (runc skips masking what does
        // not exist): use the first default masked file this host has.
        let masked = ["/proc/kcore", "/proc/keys", "/proc/timer_list"]
            .into_iter()
            .find(|p| Path::new(p).is_file())
            .expect("a default masked file exists on the host");
        let mut cfg = config(&format!(
            "wc -c < {masked}; \
             (echo x > /proc/sysrq-trigger) 2>/dev/null && echo sysrq-writable || echo sysrq-readonly; \
             grep Seccomp: /proc/self/status; \
             hostname other 2>/dev/null && echo hostname-set || echo hostname-denied; \
             unshare -U true 2>/dev/null && echo unshare-allowed || echo unshare-denied; \
             cat /etc/hosts"
        ));
        security(&mut cfg).seccomp = Some(v1::SecurityProfile::default());
        let (ok, stdout, stderr) = bundle.run(&cfg);
        assert!(ok, "runc run failed: {stderr}");
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(
            lines[0].trim(),
            "0",
            "{masked} must read as empty: {stdout} {stderr}"
        );
        assert_eq!(lines[1], "sysrq-readonly", "{stdout}");
        assert_eq!(status_field(&stdout, "Seccomp:"), "2", "{stdout}");
        assert!(stdout.contains("hostname-denied"), "{stdout}");
        assert!(stdout.contains("unshare-denied"), "{stdout}");

        // Without the profile the same unshare works (where user namespaces
        // are enabled): the denial above is the seccomp profile's.
        let userns_enabled =
            fs::read_to_string("/proc/sys/user/max_user_namespaces").is_ok_and(|v| v.trim() != "0");
        if userns_enabled {
            let bundle = Bundle::new(&runc, &busybox, "unconfined");
            let cfg = config("unshare -U true && echo unshare-allowed || echo unshare-denied");
            let (ok, stdout, stderr) = bundle.run(&cfg);
            assert!(ok, "runc run failed: {stderr}");
            assert!(stdout.contains("unshare-allowed"), "{stdout} {stderr}");
        }
        assert!(stdout.contains("# hosts"), "{stdout}");
    }

    #[test]
    fn runc_runs_privileged_with_all_host_capabilities_and_devices() {
        let Some((runc, busybox)) = prerequisites() else {
            return;
        };
        let host = HostInfo::detect();
        let bundle = Bundle::new(&runc, &busybox, "privileged");
        // A host device runc would not create by itself.
        let defaults = [
            "/dev/null",
            "/dev/zero",
            "/dev/full",
            "/dev/random",
            "/dev/urandom",
            "/dev/tty",
        ];
        let device = host
            .devices
            .iter()
            .map(|d| d.path.display().to_string())
            .find(|p| !defaults.contains(&p.as_str()))
            .unwrap_or_else(|| "/dev/null".to_owned());
        let mut cfg = config(&format!(
            "grep CapBnd /proc/self/status; test -e {device} && echo device-present"
        ));
        security(&mut cfg).privileged = true;
        let (ok, stdout, stderr) = bundle.run(&cfg);
        assert!(ok, "runc run failed: {stderr}");
        let want = format!("{:016x}", host.capabilities.bits());
        assert_eq!(status_field(&stdout, "CapBnd:"), want, "{stdout}");
        assert!(stdout.contains("device-present"), "{device}: {stdout}");
    }
}
