//! `generate` end to end, without root: process, namespaces, security,
//! resources, annotations. Mounts and the hostile rootfs have their own files.

mod spec_support;

use std::collections::HashMap;
use std::path::PathBuf;

use krio_proto::v1;
use krio_runtime::spec::{
    CapabilitySet, CgroupMode, DEFAULT_CAPABILITIES, ErrorCode, PidNamespace, SpecError,
};
use oci_spec::runtime::{Capability, LinuxNamespaceType, LinuxSeccompAction};
use spec_support::{Fixture, env, image, namespace};

fn caps(names: &[Capability]) -> std::collections::HashSet<Capability> {
    names.iter().copied().collect()
}

/// Named `spec` so that `cargo test -p krio-runtime spec` selects these tests.
mod spec {
    use super::*;

    #[test]
    fn a_plain_container() {
        let mut f = Fixture::new();
        f.image = image(&["/entry"], &["serve"]);
        f.config.tty = true;
        f.config.annotations = HashMap::from([
            ("app".to_owned(), "x".to_owned()),
            (
                "org.systemd.property.ExecStartPre".to_owned(),
                "/evil".to_owned(),
            ),
            ("run.oci.keep_original_groups".to_owned(), "1".to_owned()),
        ]);
        let generated = f.generate();
        let spec = &generated.spec;
        assert_eq!(spec.version(), "1.0.2");
        let process = spec.process().as_ref().expect("process");
        assert_eq!(
            process.args().as_ref().expect("args"),
            &vec!["/entry", "serve"]
        );
        assert_eq!(process.cwd(), &PathBuf::from("/"));
        assert_eq!(process.terminal(), Some(true));
        assert_eq!(process.no_new_privileges(), Some(false));
        assert_eq!(process.apparmor_profile(), &None);
        assert_eq!(process.user().uid(), 0);
        assert_eq!(
            process.user().additional_gids().as_ref().expect("gids"),
            &vec![0, 10]
        );
        let env = env(spec);
        assert!(env.contains(&"HOSTNAME=pod-host".to_owned()));
        assert!(env.contains(&"HOME=/root".to_owned()));
        assert!(env.contains(&"TERM=xterm".to_owned()));
        assert_eq!(spec.hostname().as_deref(), Some("pod-host"));
        let root = spec.root().as_ref().expect("root");
        assert_eq!(root.path(), &f.rootfs);
        assert_eq!(root.readonly(), Some(false));
        let linux = spec.linux().as_ref().expect("linux");
        assert_eq!(
            linux.cgroups_path().as_deref(),
            Some(std::path::Path::new("/kubepods/pod1/krio-ctr1"))
        );
        assert!(linux.seccomp().is_none(), "no profile asked → unconfined");
        let annotations = spec.annotations().as_ref().expect("annotations");
        assert_eq!(annotations.len(), 1);
        assert_eq!(annotations["app"], "x");
        assert_eq!(generated.stop_signal, 15);
        assert_eq!(generated.user.uid, 0);

        let json = serde_json::to_value(spec).expect("json");
        assert_eq!(json["ociVersion"], "1.0.2");
        assert_eq!(json["process"]["rlimits"][0]["type"], "RLIMIT_NOFILE");
    }

    #[test]
    fn an_empty_command_is_invalid() {
        let mut f = Fixture::new();
        f.image = image(&[], &[]);
        let err = f.try_generate().expect_err("no command");
        assert_eq!(err.code(), ErrorCode::InvalidArgument);
        assert!(err.to_string().contains("no command"), "{err}");
    }

    #[test]
    fn run_as_user_sets_identity_and_home() {
        let mut f = Fixture::new();
        f.security().run_as_user = Some(v1::Int64Value { value: 1000 });
        f.security().supplemental_groups = vec![1234];
        let generated = f.generate();
        let user = generated
            .spec
            .process()
            .as_ref()
            .expect("process")
            .user()
            .clone();
        assert_eq!((user.uid(), user.gid()), (1000, 1000));
        assert_eq!(
            user.additional_gids().as_ref().expect("gids"),
            &vec![1000, 50000, 1234]
        );
        assert!(env(&generated.spec).contains(&"HOME=/home/app".to_owned()));
        assert_eq!(generated.user.username.as_deref(), Some("app"));

        f.security().run_as_user = None;
        f.security().run_as_group = Some(v1::Int64Value { value: 5 });
        let err = f.try_generate().expect_err("group without user");
        assert_eq!(err.code(), ErrorCode::InvalidArgument);
    }

    #[test]
    fn default_capabilities_are_containerds() {
        let f = Fixture::new();
        let spec = f.generate().spec;
        let c = spec
            .process()
            .as_ref()
            .expect("process")
            .capabilities()
            .clone()
            .expect("caps");
        let bounding = c.bounding().clone().expect("bounding");
        assert_eq!(bounding.len(), DEFAULT_CAPABILITIES.len());
        assert!(bounding.contains(&Capability::Mknod));
        assert!(bounding.contains(&Capability::NetRaw));
        assert!(!bounding.contains(&Capability::NetAdmin));
        assert_eq!(c.effective().as_ref(), Some(&bounding));
        assert_eq!(c.permitted().as_ref(), Some(&bounding));
        assert!(c.inheritable().as_ref().expect("inheritable").is_empty());
        assert!(c.ambient().as_ref().expect("ambient").is_empty());
    }

    #[test]
    fn add_and_drop_capabilities() {
        let bounding = |add: &[&str], drop: &[&str]| {
            let mut f = Fixture::new();
            f.security().capabilities = Some(v1::Capability {
                add_capabilities: add.iter().map(|s| s.to_string()).collect(),
                drop_capabilities: drop.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            });
            let spec = f.generate().spec;
            let process = spec.process().clone().expect("process");
            process
                .capabilities()
                .clone()
                .and_then(|c| c.bounding().clone())
                .expect("bounding")
        };
        let b = bounding(&["NET_ADMIN"], &[]);
        assert!(b.contains(&Capability::NetAdmin) && b.len() == 15);
        let b = bounding(&[], &["cap_net_raw"]);
        assert!(!b.contains(&Capability::NetRaw) && b.len() == 13);
        assert_eq!(bounding(&["ALL"], &[]).len(), 41);
        assert!(bounding(&[], &["ALL"]).is_empty());
        assert_eq!(
            bounding(&["Net_Admin"], &["ALL"]),
            caps(&[Capability::NetAdmin])
        );
        assert_eq!(bounding(&["ALL"], &["ALL"]).len(), 0);
        assert_eq!(bounding(&["ALL"], &["CHOWN"]).len(), 40);
    }

    #[test]
    fn ambient_capabilities_are_inheritable_too() {
        let mut f = Fixture::new();
        f.security().capabilities = Some(v1::Capability {
            add_ambient_capabilities: vec!["NET_BIND_SERVICE".into(), "CAP_SYS_TIME".into()],
            ..Default::default()
        });
        let spec = f.generate().spec;
        let c = spec
            .process()
            .as_ref()
            .expect("process")
            .capabilities()
            .clone()
            .expect("caps");
        let want = caps(&[Capability::NetBindService, Capability::SysTime]);
        assert_eq!(c.ambient().as_ref(), Some(&want));
        assert_eq!(c.inheritable().as_ref(), Some(&want));
        assert!(
            c.bounding()
                .as_ref()
                .expect("bounding")
                .contains(&Capability::SysTime)
        );
    }

    #[test]
    fn unknown_capability_is_invalid() {
        let mut f = Fixture::new();
        f.security().capabilities = Some(v1::Capability {
            add_capabilities: vec!["CAP_MAKE_COFFEE".into()],
            ..Default::default()
        });
        let err = f.try_generate().expect_err("unknown cap");
        assert_eq!(err.code(), ErrorCode::InvalidArgument);
        assert!(err.to_string().contains("CAP_MAKE_COFFEE"), "{err}");
    }

    #[test]
    fn nothing_beyond_what_krio_holds() {
        let mut f = Fixture::new();
        // This host: everything but SYS_RESOURCE.
        f.host.capabilities = CapabilitySet::from_bits(0x0000_01ff_feff_ffff);
        f.security().capabilities = Some(v1::Capability {
            add_capabilities: vec!["ALL".into()],
            ..Default::default()
        });
        let spec = f.generate().spec;
        let c = spec
            .process()
            .as_ref()
            .expect("process")
            .capabilities()
            .clone()
            .expect("caps");
        let bounding = c.bounding().clone().expect("bounding");
        assert_eq!(bounding.len(), 40);
        assert!(!bounding.contains(&Capability::SysResource));
    }

    #[test]
    fn privileged_gets_host_capabilities_and_no_confinement() {
        let mut f = Fixture::new();
        f.host.capabilities = CapabilitySet::from_names(&["CHOWN", "SYS_ADMIN"]).expect("caps");
        f.privileged();
        f.security().seccomp = Some(v1::SecurityProfile::default());
        f.security().masked_paths = vec!["/proc/kcore".into()];
        let spec = f.generate().spec;
        let c = spec
            .process()
            .as_ref()
            .expect("process")
            .capabilities()
            .clone()
            .expect("caps");
        assert_eq!(
            c.bounding().as_ref(),
            Some(&caps(&[Capability::Chown, Capability::SysAdmin]))
        );
        let linux = spec.linux().as_ref().expect("linux");
        assert!(linux.seccomp().is_none());
        assert!(linux.masked_paths().as_ref().expect("masked").is_empty());
        assert!(
            linux
                .readonly_paths()
                .as_ref()
                .expect("readonly")
                .is_empty()
        );
        let rules = linux
            .resources()
            .as_ref()
            .expect("resources")
            .devices()
            .clone()
            .expect("rules");
        assert_eq!(rules.len(), 1);
        assert!(rules[0].allow());
    }

    #[test]
    fn privileged_needs_a_privileged_pod() {
        let mut f = Fixture::new();
        f.security().privileged = true;
        assert_eq!(
            f.try_generate().expect_err("unprivileged pod").code(),
            ErrorCode::InvalidArgument
        );
        f.privileged();
        assert!(f.try_generate().is_ok());
    }

    #[test]
    fn masked_and_readonly_paths() {
        let mut f = Fixture::new();
        let spec = f.generate().spec;
        let linux = spec.linux().as_ref().expect("linux");
        assert!(
            linux
                .masked_paths()
                .as_ref()
                .expect("masked")
                .contains(&"/proc/kcore".to_owned())
        );
        assert!(
            linux
                .readonly_paths()
                .as_ref()
                .expect("ro")
                .contains(&"/proc/sys".to_owned())
        );

        f.security().masked_paths = vec!["/bin/ls".into()];
        f.security().readonly_paths = vec!["/tmp".into()];
        let spec = f.generate().spec;
        let linux = spec.linux().as_ref().expect("linux");
        assert_eq!(
            linux.masked_paths().as_ref().expect("masked"),
            &vec!["/bin/ls".to_owned()]
        );
        assert_eq!(
            linux.readonly_paths().as_ref().expect("ro"),
            &vec!["/tmp".to_owned()]
        );
    }

    #[test]
    fn seccomp_runtime_default_and_no_new_privs() {
        let mut f = Fixture::new();
        f.security().seccomp = Some(v1::SecurityProfile::default());
        f.security().no_new_privs = true;
        f.security().readonly_rootfs = true;
        let spec = f.generate().spec;
        let seccomp = spec
            .linux()
            .as_ref()
            .expect("linux")
            .seccomp()
            .clone()
            .expect("seccomp");
        assert_eq!(seccomp.default_action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(
            spec.process()
                .as_ref()
                .expect("process")
                .no_new_privileges(),
            Some(true)
        );
        assert_eq!(spec.root().as_ref().expect("root").readonly(), Some(true));
    }

    #[test]
    fn apparmor_localhost_without_apparmor_fails() {
        let mut f = Fixture::new();
        f.security().apparmor = Some(v1::SecurityProfile {
            profile_type: v1::security_profile::ProfileType::Localhost as i32,
            localhost_ref: "k8s-deny-write".into(),
        });
        let err = f.try_generate().expect_err("no apparmor");
        assert_eq!(err.code(), ErrorCode::FailedPrecondition);
        assert!(
            err.to_string().contains("AppArmor is not available"),
            "{err}"
        );
        f.security().apparmor = Some(v1::SecurityProfile::default());
        assert!(
            f.try_generate().is_ok(),
            "RuntimeDefault without AppArmor is no profile"
        );
    }

    #[test]
    fn pod_namespaces_are_joined_and_host_ones_left_out() {
        let mut f = Fixture::new();
        let spec = f.generate().spec;
        assert_eq!(
            namespace(&spec, LinuxNamespaceType::Network),
            Some(Some("/run/krio/ns/net/sandbox1".into()))
        );
        assert_eq!(
            namespace(&spec, LinuxNamespaceType::Ipc),
            Some(Some("/run/krio/ns/ipc/sandbox1".into()))
        );
        assert_eq!(
            namespace(&spec, LinuxNamespaceType::Uts),
            Some(Some("/run/krio/ns/uts/sandbox1".into()))
        );
        assert_eq!(namespace(&spec, LinuxNamespaceType::Mount), Some(None));
        assert_eq!(namespace(&spec, LinuxNamespaceType::Pid), Some(None));
        assert_eq!(
            namespace(&spec, LinuxNamespaceType::Cgroup),
            None,
            "hybrid host"
        );
        assert_eq!(namespace(&spec, LinuxNamespaceType::User), None);

        f.sandbox.network_ns = None;
        f.sandbox.ipc_ns = None;
        f.sandbox.uts_ns = None;
        f.host.cgroup_mode = CgroupMode::Unified;
        let spec = f.generate().spec;
        assert_eq!(namespace(&spec, LinuxNamespaceType::Network), None);
        assert_eq!(namespace(&spec, LinuxNamespaceType::Ipc), None);
        assert_eq!(namespace(&spec, LinuxNamespaceType::Uts), None);
        assert_eq!(namespace(&spec, LinuxNamespaceType::Cgroup), Some(None));
        assert_eq!(
            spec.hostname(),
            &None,
            "no hostname with the host's UTS namespace"
        );
    }

    #[test]
    fn pid_namespace_modes() {
        let mut f = Fixture::new();
        let pid = |f: &mut Fixture, mode: v1::NamespaceMode| {
            f.security().namespace_options = Some(v1::NamespaceOption {
                pid: mode as i32,
                target_id: "target".into(),
                ..Default::default()
            });
            f.try_generate()
                .map(|g| namespace(&g.spec, LinuxNamespaceType::Pid))
        };
        f.sandbox.pid_ns = PidNamespace::Pod("/proc/42/ns/pid".into());
        assert_eq!(
            pid(&mut f, v1::NamespaceMode::Pod).expect("pod"),
            Some(Some("/proc/42/ns/pid".into()))
        );
        assert_eq!(
            pid(&mut f, v1::NamespaceMode::Container).expect("container"),
            Some(None)
        );
        assert_eq!(pid(&mut f, v1::NamespaceMode::Node).expect("node"), None);
        let err = pid(&mut f, v1::NamespaceMode::Target).expect_err("unresolved target");
        assert!(matches!(err, SpecError::Namespace(_)));
        f.sandbox.pid_ns = PidNamespace::Target("/proc/77/ns/pid".into());
        assert_eq!(
            pid(&mut f, v1::NamespaceMode::Target).expect("target"),
            Some(Some("/proc/77/ns/pid".into()))
        );
        f.sandbox.pid_ns = PidNamespace::Node;
        assert_eq!(
            pid(&mut f, v1::NamespaceMode::Pod).expect("host pid pod"),
            None
        );
    }

    #[test]
    fn user_namespace_mappings() {
        let mut f = Fixture::new();
        let mapping = vec![v1::IdMapping {
            host_id: 100_000,
            container_id: 0,
            length: 65536,
        }];
        let set_userns = |f: &mut Fixture, mode: v1::NamespaceMode| {
            f.sandbox
                .config
                .linux
                .as_mut()
                .expect("linux")
                .security_context = Some(v1::LinuxSandboxSecurityContext {
                namespace_options: Some(v1::NamespaceOption {
                    userns_options: Some(v1::UserNamespace {
                        mode: mode as i32,
                        uids: mapping.clone(),
                        gids: mapping.clone(),
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            });
        };
        set_userns(&mut f, v1::NamespaceMode::Pod);
        f.sandbox.user_ns = Some("/run/krio/ns/user/sandbox1".into());
        let spec = f.generate().spec;
        assert_eq!(
            namespace(&spec, LinuxNamespaceType::User),
            Some(Some("/run/krio/ns/user/sandbox1".into()))
        );
        let linux = spec.linux().as_ref().expect("linux");
        let uids = linux.uid_mappings().clone().expect("uid mappings");
        assert_eq!(
            (uids[0].host_id(), uids[0].container_id(), uids[0].size()),
            (100_000, 0, 65536)
        );
        assert!(linux.gid_mappings().is_some());

        set_userns(&mut f, v1::NamespaceMode::Node);
        assert_eq!(
            namespace(&f.generate().spec, LinuxNamespaceType::User),
            None
        );
        set_userns(&mut f, v1::NamespaceMode::Container);
        assert_eq!(
            f.try_generate().expect_err("container userns").code(),
            ErrorCode::InvalidArgument
        );
    }

    #[test]
    fn sysctls_are_validated_against_the_pods_namespaces() {
        let mut f = Fixture::new();
        f.sandbox.config.linux.as_mut().expect("linux").sysctls = HashMap::from([(
            "net.ipv4.ip_unprivileged_port_start".to_owned(),
            "0".to_owned(),
        )]);
        let spec = f.generate().spec;
        let sysctl = spec
            .linux()
            .as_ref()
            .expect("linux")
            .sysctl()
            .clone()
            .expect("sysctl");
        assert_eq!(sysctl["net.ipv4.ip_unprivileged_port_start"], "0");

        f.sandbox.network_ns = None;
        assert_eq!(
            f.try_generate().expect_err("host net").code(),
            ErrorCode::InvalidArgument
        );
        f.sandbox.config.linux.as_mut().expect("linux").sysctls =
            HashMap::from([("kernel.core_pattern".to_owned(), "|/evil".to_owned())]);
        assert_eq!(
            f.try_generate().expect_err("host-wide").code(),
            ErrorCode::InvalidArgument
        );
    }

    #[test]
    fn resources_and_oom_score_adj() {
        let mut f = Fixture::new();
        f.host.min_oom_score_adj = 0;
        f.resources().oom_score_adj = -997;
        f.resources().memory_limit_in_bytes = 64 << 20;
        f.resources().cpu_shares = 2;
        let spec = f.generate().spec;
        assert_eq!(
            spec.process().as_ref().expect("process").oom_score_adj(),
            Some(0)
        );
        let resources = spec
            .linux()
            .as_ref()
            .expect("linux")
            .resources()
            .clone()
            .expect("resources");
        assert_eq!(
            resources.memory().as_ref().and_then(|m| m.limit()),
            Some(64 << 20)
        );
        assert_eq!(resources.cpu().as_ref().and_then(|c| c.shares()), Some(2));
        let rules = resources.devices().clone().expect("device rules");
        assert!(!rules[0].allow(), "deny all devices first");

        f.resources().oom_score_adj = 1000;
        let spec = f.generate().spec;
        assert_eq!(
            spec.process().as_ref().expect("process").oom_score_adj(),
            Some(1000)
        );

        f.resources().unified = HashMap::from([("memory.high".to_owned(), "1G".to_owned())]);
        let err = f.try_generate().expect_err("unified on v1");
        assert!(err.to_string().contains("memory.high"), "{err}");
    }

    #[test]
    fn nofile_rlimit_is_capped_by_krios_own() {
        let mut f = Fixture::new();
        f.host.nofile_limit = 20_000;
        let spec = f.generate().spec;
        let rlimits = spec
            .process()
            .as_ref()
            .expect("process")
            .rlimits()
            .clone()
            .expect("rlimits");
        assert_eq!((rlimits[0].soft(), rlimits[0].hard()), (20_000, 20_000));
    }

    #[test]
    fn systemd_cgroup_path() {
        let mut f = Fixture::new();
        f.host.systemd_cgroup = true;
        f.sandbox
            .config
            .linux
            .as_mut()
            .expect("linux")
            .cgroup_parent = "kubepods-pod1.slice".into();
        let spec = f.generate().spec;
        assert_eq!(
            spec.linux()
                .as_ref()
                .expect("linux")
                .cgroups_path()
                .as_deref(),
            Some(std::path::Path::new("kubepods-pod1.slice:krio:ctr1"))
        );
    }

    #[test]
    fn devices_are_added() {
        let mut f = Fixture::new();
        f.config.devices = vec![v1::Device {
            host_path: "/dev/zero".into(),
            container_path: "/dev/myzero".into(),
            permissions: "r".into(),
        }];
        let spec = f.generate().spec;
        let linux = spec.linux().as_ref().expect("linux");
        let devices = linux.devices().clone().expect("devices");
        assert_eq!(devices.len(), 1);
        assert_eq!((devices[0].major(), devices[0].minor()), (1, 5));
        f.config.devices[0].host_path = "/dev/no-such-device".into();
        assert_eq!(
            f.try_generate().expect_err("missing").code(),
            ErrorCode::NotFound
        );
    }
}
