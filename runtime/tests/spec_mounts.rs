//! Mount generation: defaults, pod files, CRI binds, propagation, rro.

mod spec_support;

use std::path::{Path, PathBuf};

use krio_proto::v1;
use krio_runtime::spec::{ErrorCode, HostMount};
use oci_spec::image::Config;
use spec_support::{Fixture, mount_at, options};

fn cri_mount(host: &Path, container: &str) -> v1::Mount {
    v1::Mount {
        host_path: host.display().to_string(),
        container_path: container.into(),
        ..Default::default()
    }
}

fn destinations(spec: &oci_spec::runtime::Spec) -> Vec<String> {
    spec.mounts()
        .as_ref()
        .expect("mounts")
        .iter()
        .map(|m| m.destination().display().to_string())
        .collect()
}

/// Named `spec` so that `cargo test -p krio-runtime spec` selects these tests.
mod spec {
    use super::*;

    #[test]
    fn defaults_then_pod_files_in_order() {
        let f = Fixture::new();
        let spec = f.generate().spec;
        assert_eq!(
            destinations(&spec),
            vec![
                "/proc",
                "/dev",
                "/dev/pts",
                "/dev/shm",
                "/dev/mqueue",
                "/sys",
                "/sys/fs/cgroup",
                "/etc/hosts",
                "/etc/resolv.conf",
                "/etc/hostname",
            ]
        );
        let dev = mount_at(&spec, "/dev").expect("/dev");
        assert_eq!(dev.typ().as_deref(), Some("tmpfs"));
        assert!(options(dev).contains(&"mode=755".to_owned()));
        let shm = mount_at(&spec, "/dev/shm").expect("/dev/shm");
        assert_eq!(shm.typ().as_deref(), Some("bind"));
        assert_eq!(shm.source().as_deref(), Some(f.path("shm").as_path()));
        assert!(options(mount_at(&spec, "/sys").expect("/sys")).contains(&"ro".to_owned()));
        let cgroup = mount_at(&spec, "/sys/fs/cgroup").expect("cgroup");
        assert_eq!(cgroup.typ().as_deref(), Some("cgroup"));
        assert!(options(cgroup).contains(&"ro".to_owned()));
        let hosts = mount_at(&spec, "/etc/hosts").expect("/etc/hosts");
        assert_eq!(hosts.source().as_deref(), Some(f.path("hosts").as_path()));
        assert!(options(hosts).contains(&"rw".to_owned()));
    }

    #[test]
    fn private_shm_without_a_pod_shm() {
        let mut f = Fixture::new();
        f.sandbox.shm = None;
        let spec = f.generate().spec;
        let shm = mount_at(&spec, "/dev/shm").expect("/dev/shm");
        assert_eq!(shm.typ().as_deref(), Some("tmpfs"));
        assert!(options(shm).contains(&"size=65536k".to_owned()));
    }

    #[test]
    fn privileged_gets_rw_sysfs() {
        let mut f = Fixture::new();
        f.privileged();
        let spec = f.generate().spec;
        assert!(options(mount_at(&spec, "/sys").expect("/sys")).contains(&"rw".to_owned()));
        assert!(
            options(mount_at(&spec, "/sys/fs/cgroup").expect("cgroup")).contains(&"rw".to_owned())
        );
    }

    #[test]
    fn readonly_rootfs_makes_pod_files_ro() {
        let mut f = Fixture::new();
        f.security().readonly_rootfs = true;
        let spec = f.generate().spec;
        assert!(
            options(mount_at(&spec, "/etc/resolv.conf").expect("resolv"))
                .contains(&"ro".to_owned())
        );
    }

    #[test]
    fn cri_binds_with_options_sorted_by_depth() {
        let mut f = Fixture::new();
        let data = f.path("data");
        std::fs::create_dir_all(data.join("sub")).expect("mkdir");
        let log = f.path("termination-log");
        std::fs::write(&log, "").expect("write");
        f.config.mounts = vec![
            v1::Mount {
                readonly: true,
                ..cri_mount(&data.join("sub"), "/data/sub")
            },
            cri_mount(&data, "/data"),
            cri_mount(&log, "/dev/termination-log"),
            v1::Mount {
                mount_options: vec!["noexec".into(), "nosuid".into()],
                ..cri_mount(&data, "/etc/hosts")
            },
        ];
        let spec = f.generate().spec;
        let order = destinations(&spec);
        let pos = |d: &str| order.iter().position(|x| x == d).expect(d);
        assert!(pos("/data") < pos("/data/sub"));
        assert_eq!(
            order.iter().filter(|d| *d == "/etc/hosts").count(),
            1,
            "the CRI mount replaces the pod's"
        );

        let sub = mount_at(&spec, "/data/sub").expect("/data/sub");
        assert_eq!(sub.typ().as_deref(), Some("bind"));
        assert_eq!(options(sub), vec!["rbind", "rprivate", "ro"]);
        assert_eq!(
            options(mount_at(&spec, "/data").expect("/data")),
            vec!["rbind", "rprivate"]
        );
        let hosts = mount_at(&spec, "/etc/hosts").expect("/etc/hosts");
        assert_eq!(hosts.source().as_deref(), Some(data.as_path()));
        assert_eq!(
            options(hosts),
            vec!["rbind", "rprivate", "noexec", "nosuid"]
        );
        assert!(mount_at(&spec, "/dev/termination-log").is_some());
        assert!(
            spec.linux()
                .as_ref()
                .expect("linux")
                .rootfs_propagation()
                .is_none()
        );
    }

    #[test]
    fn missing_host_paths_are_to_be_created() {
        let mut f = Fixture::new();
        let missing = f.path("not/yet/there");
        f.config.mounts = vec![cri_mount(&missing, "/vol")];
        let generated = f.generate();
        assert_eq!(generated.mounts_to_create, vec![missing.clone()]);
        let vol = mount_at(&generated.spec, "/vol").expect("/vol");
        assert_eq!(vol.source().as_deref(), Some(missing.as_path()));
    }

    #[test]
    fn symlinked_host_paths_mount_their_target() {
        let mut f = Fixture::new();
        let real = f.path("real");
        std::fs::create_dir(&real).expect("mkdir");
        let link = f.path("link");
        std::os::unix::fs::symlink(&real, &link).expect("symlink");
        f.config.mounts = vec![cri_mount(&link, "/vol")];
        let generated = f.generate();
        let vol = mount_at(&generated.spec, "/vol").expect("/vol");
        assert_eq!(
            vol.source().as_deref(),
            Some(real.canonicalize().expect("real").as_path())
        );
        assert!(generated.mounts_to_create.is_empty());

        let dangling = f.path("dangling");
        std::os::unix::fs::symlink(f.path("nowhere"), &dangling).expect("symlink");
        f.config.mounts = vec![cri_mount(&dangling, "/vol")];
        assert_eq!(
            f.try_generate().expect_err("dangling").code(),
            ErrorCode::NotFound
        );
    }

    #[test]
    fn bad_container_paths_are_invalid() {
        for bad in ["relative", "/a/../../etc", "", "/", "/x\0y"] {
            let mut f = Fixture::new();
            f.config.mounts = vec![cri_mount(&f.path("."), bad)];
            let err = f.try_generate().expect_err(bad);
            assert_eq!(err.code(), ErrorCode::InvalidArgument, "{bad}: {err}");
        }
        let mut f = Fixture::new();
        f.config.mounts = vec![cri_mount(Path::new("relative/host"), "/x")];
        assert_eq!(
            f.try_generate().expect_err("relative host").code(),
            ErrorCode::InvalidArgument
        );
        f.config.mounts = vec![
            cri_mount(&f.path("."), "/x"),
            cri_mount(&f.path("."), "/x/"),
        ];
        assert_eq!(
            f.try_generate().expect_err("duplicate").code(),
            ErrorCode::InvalidArgument
        );
        f.config.mounts = vec![v1::Mount {
            mount_options: vec!["suid,dev".into()],
            ..cri_mount(&f.path("."), "/x")
        }];
        assert_eq!(
            f.try_generate().expect_err("option").code(),
            ErrorCode::InvalidArgument
        );
    }

    #[test]
    fn recursive_read_only_rules() {
        let mut f = Fixture::new();
        let rro = |f: &Fixture, readonly: bool, propagation: v1::MountPropagation| v1::Mount {
            readonly,
            recursive_read_only: true,
            propagation: propagation as i32,
            ..cri_mount(&f.path("."), "/mnt")
        };
        f.config.mounts = vec![rro(&f, true, v1::MountPropagation::PropagationPrivate)];
        let spec = f.generate().spec;
        assert_eq!(
            options(mount_at(&spec, "/mnt").expect("/mnt")),
            vec!["rbind", "rprivate", "ro", "rro"]
        );

        for (readonly, propagation) in [
            (false, v1::MountPropagation::PropagationPrivate),
            (true, v1::MountPropagation::PropagationHostToContainer),
            (true, v1::MountPropagation::PropagationBidirectional),
        ] {
            f.config.mounts = vec![rro(&f, readonly, propagation)];
            assert_eq!(
                f.try_generate().expect_err("rro").code(),
                ErrorCode::InvalidArgument
            );
        }
        f.host.rro_mounts = false;
        f.config.mounts = vec![rro(&f, true, v1::MountPropagation::PropagationPrivate)];
        assert_eq!(
            f.try_generate().expect_err("unsupported").code(),
            ErrorCode::FailedPrecondition
        );
    }

    #[test]
    fn propagation_needs_a_shared_host_mount() {
        let mut f = Fixture::new();
        let dir = f.path("vol");
        std::fs::create_dir(&dir).expect("mkdir");
        let real = dir.canonicalize().expect("canonical");
        let with_propagation = |p: v1::MountPropagation| v1::Mount {
            propagation: p as i32,
            ..cri_mount(&dir, "/vol")
        };
        let host_mounts = |shared: bool, slave: bool| {
            vec![
                HostMount {
                    mount_point: "/".into(),
                    shared: false,
                    slave: false,
                },
                HostMount {
                    mount_point: real.clone(),
                    shared,
                    slave,
                },
            ]
        };

        f.host.mounts = host_mounts(true, false);
        f.config.mounts = vec![with_propagation(
            v1::MountPropagation::PropagationBidirectional,
        )];
        let spec = f.generate().spec;
        assert_eq!(
            options(mount_at(&spec, "/vol").expect("/vol")),
            vec!["rbind", "rshared"]
        );
        assert_eq!(
            spec.linux()
                .as_ref()
                .expect("linux")
                .rootfs_propagation()
                .as_deref(),
            Some("rshared")
        );

        f.config.mounts = vec![with_propagation(
            v1::MountPropagation::PropagationHostToContainer,
        )];
        let spec = f.generate().spec;
        assert_eq!(
            options(mount_at(&spec, "/vol").expect("/vol")),
            vec!["rbind", "rslave"]
        );
        assert_eq!(
            spec.linux()
                .as_ref()
                .expect("linux")
                .rootfs_propagation()
                .as_deref(),
            Some("rslave")
        );

        f.host.mounts = host_mounts(false, true);
        assert!(f.try_generate().is_ok(), "rslave from a slave mount");
        f.config.mounts = vec![with_propagation(
            v1::MountPropagation::PropagationBidirectional,
        )];
        let err = f.try_generate().expect_err("rshared from a slave mount");
        assert_eq!(err.code(), ErrorCode::FailedPrecondition);
        assert!(err.to_string().contains("make-rshared"), "{err}");

        f.host.mounts = host_mounts(false, false);
        f.config.mounts = vec![with_propagation(
            v1::MountPropagation::PropagationHostToContainer,
        )];
        assert_eq!(
            f.try_generate().expect_err("private").code(),
            ErrorCode::FailedPrecondition
        );
        f.config.mounts = vec![with_propagation(v1::MountPropagation::PropagationPrivate)];
        assert!(f.try_generate().is_ok());
    }

    #[test]
    fn image_volumes_are_listed_not_mounted() {
        let mut f = Fixture::new();
        let mut config: Config = f.image.config().clone().expect("config");
        config.set_volumes(Some(vec![
            "/var/lib/data".into(),
            "/cache".into(),
            "/var/lib/data/".into(),
        ]));
        f.image.set_config(Some(config.clone()));
        f.config.mounts = vec![cri_mount(&f.path("."), "/cache")];
        let generated = f.generate();
        assert_eq!(
            generated.image_volumes,
            vec![PathBuf::from("/var/lib/data")]
        );
        assert!(mount_at(&generated.spec, "/var/lib/data").is_none());

        config.set_volumes(Some(vec!["../../etc".into()]));
        f.image.set_config(Some(config));
        assert_eq!(
            f.try_generate().expect_err("hostile volume").code(),
            ErrorCode::InvalidArgument
        );
    }

    #[test]
    fn image_mounts_are_not_implemented_yet() {
        let mut f = Fixture::new();
        f.config.mounts = vec![v1::Mount {
            container_path: "/img".into(),
            image: Some(v1::ImageSpec {
                image: "sha256:abc".into(),
                ..Default::default()
            }),
            ..Default::default()
        }];
        assert_eq!(
            f.try_generate().expect_err("image mount").code(),
            ErrorCode::Unimplemented
        );
    }
}
