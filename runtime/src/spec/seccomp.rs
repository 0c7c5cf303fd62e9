//! Seccomp: which profile a container gets, and krio's own default profile.
//!
//! Selection (containerd's rules, which critest checks):
//! - privileged → no filter, whatever was asked (the CRI says seccomp
//!   restrictions are not applied to privileged containers);
//! - `seccomp` set: `RuntimeDefault` → krio's default profile, `Unconfined`
//!   → none, `Localhost` → the JSON profile at `localhost_ref`;
//! - else the deprecated `seccomp_profile_path`: `runtime/default` and
//!   `docker/default` → default, `unconfined` → none, `localhost/<path>` →
//!   the file;
//! - neither → none (the CRI's "nil is unconfined").
//!
//! The default profile is written here as Rust data. Its approach is the one
//! of the widely used container default: deny by default with `EPERM`, allow
//! a list of ordinary syscalls, and allow the syscalls that are only useful
//! with a capability (`mount`, `unshare`, `setns`, `sethostname`, `bpf`,
//! `reboot`, module loading, clock setting…) only when the container holds
//! that capability. `clone` is allowed without namespace flags unless the
//! container has `CAP_SYS_ADMIN`, and `clone3` (whose flags seccomp cannot
//! inspect) then fails with `ENOSYS` so libc falls back to `clone`. Never
//! allowed: `keyctl`/`add_key`/`request_key` (the kernel keyring is not
//! namespaced), `io_uring_*`, `userfaultfd`, `kexec_*`, `open_by_handle_at`
//! without `CAP_DAC_READ_SEARCH`, `personality` other than the harmless
//! values, and anything not listed. `ptrace` is allowed, as in the current
//! upstream default (kernels since 4.8 re-check seccomp after a tracer's
//! changes).

use std::path::{Path, PathBuf};

use krio_proto::v1;
use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArgBuilder, LinuxSeccompOperator,
    LinuxSyscall,
};

use super::BuildError;
use super::capabilities::CapabilitySet;
use super::rootfs::MAX_ETC_FILE_BYTES;

/// The seccomp part of the config cannot be honoured.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// A localhost profile could not be read.
    #[error("{field}: cannot read seccomp profile {path}: {source}")]
    Read {
        /// The CRI field.
        field: &'static str,
        /// The profile's path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A localhost profile is not valid OCI seccomp JSON.
    #[error("{field}: seccomp profile {path} is not a valid profile: {source}")]
    Parse {
        /// The CRI field.
        field: &'static str,
        /// The profile's path.
        path: PathBuf,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// A localhost profile path that is not absolute, or a profile too large.
    #[error("{field}: seccomp profile {value:?} {reason}")]
    BadProfile {
        /// The CRI field.
        field: &'static str,
        /// The value given.
        value: String,
        /// Why.
        reason: &'static str,
    },
    /// A profile was asked for but the kernel has no seccomp.
    #[error("{field}: a seccomp profile was requested but this kernel does not support seccomp")]
    Unsupported {
        /// The CRI field.
        field: &'static str,
    },
    /// An OCI value could not be built (a bug).
    #[error(transparent)]
    Build(#[from] BuildError),
}

/// The most krio reads of a localhost profile.
const MAX_PROFILE_BYTES: u64 = MAX_ETC_FILE_BYTES;

enum Choice {
    Unconfined,
    Default,
    Localhost(String),
}

/// The seccomp filter for a container; `caps` is its bounding set.
pub(crate) fn seccomp(
    sc: Option<&v1::LinuxContainerSecurityContext>,
    privileged: bool,
    caps: CapabilitySet,
    host_has_seccomp: bool,
) -> Result<Option<LinuxSeccomp>, SeccompError> {
    if privileged {
        return Ok(None);
    }
    let (field, choice) = match sc.and_then(|s| s.seccomp.as_ref()) {
        Some(profile) => ("security_context.seccomp", from_profile(profile)),
        None => {
            // Deprecated in the CRI, still sent by older kubelets.
            #[allow(deprecated)]
            let path = sc
                .map(|s| s.seccomp_profile_path.as_str())
                .unwrap_or_default();
            (
                "security_context.seccomp_profile_path",
                from_deprecated(path)?,
            )
        }
    };
    if !matches!(choice, Choice::Unconfined) && !host_has_seccomp {
        return Err(SeccompError::Unsupported { field });
    }
    match choice {
        Choice::Unconfined => Ok(None),
        Choice::Default => Ok(Some(default_profile(caps)?)),
        Choice::Localhost(path) => load(field, &path).map(Some),
    }
}

fn from_profile(profile: &v1::SecurityProfile) -> Choice {
    match v1::security_profile::ProfileType::try_from(profile.profile_type) {
        Ok(v1::security_profile::ProfileType::Unconfined) => Choice::Unconfined,
        Ok(v1::security_profile::ProfileType::Localhost) => {
            Choice::Localhost(profile.localhost_ref.clone())
        }
        // RuntimeDefault, and unknown future types get the safe default.
        _ => Choice::Default,
    }
}

fn from_deprecated(value: &str) -> Result<Choice, SeccompError> {
    match value {
        "" | "unconfined" => Ok(Choice::Unconfined),
        "runtime/default" | "docker/default" => Ok(Choice::Default),
        _ => match value.strip_prefix("localhost/") {
            Some(path) => Ok(Choice::Localhost(path.to_owned())),
            None => Err(SeccompError::BadProfile {
                field: "security_context.seccomp_profile_path",
                value: value.to_owned(),
                reason: "is not runtime/default, docker/default, unconfined or localhost/<path>",
            }),
        },
    }
}

fn load(field: &'static str, path: &str) -> Result<LinuxSeccomp, SeccompError> {
    let bad = |reason| SeccompError::BadProfile {
        field,
        value: path.to_owned(),
        reason,
    };
    let file_path = Path::new(path);
    if !file_path.is_absolute() {
        return Err(bad("is not an absolute path"));
    }
    let read_err = |source| SeccompError::Read {
        field,
        path: file_path.to_owned(),
        source,
    };
    let meta = std::fs::metadata(file_path).map_err(read_err)?;
    if !meta.is_file() {
        return Err(bad("is not a regular file"));
    }
    if meta.len() > MAX_PROFILE_BYTES {
        return Err(bad("is larger than 4 MiB"));
    }
    let text = std::fs::read(file_path).map_err(read_err)?;
    serde_json::from_slice(&text).map_err(|source| SeccompError::Parse {
        field,
        path: file_path.to_owned(),
        source,
    })
}

/// Syscalls every container may make.
#[rustfmt::skip]
const ALLOWED: &[&str] = &[
    // files and directories
    "access", "chdir", "chmod", "chown", "chown32", "close", "close_range", "copy_file_range",
    "creat", "dup", "dup2", "dup3", "faccessat", "faccessat2", "fadvise64", "fadvise64_64",
    "fallocate", "fanotify_mark", "fchdir", "fchmod", "fchmodat", "fchmodat2", "fchown",
    "fchown32", "fchownat", "fcntl", "fcntl64", "fdatasync", "fgetxattr", "flistxattr", "flock",
    "fremovexattr", "fsetxattr", "fstat", "fstat64", "fstatat64", "fstatfs", "fstatfs64", "fsync",
    "ftruncate", "ftruncate64", "futimesat", "getcwd", "getdents", "getdents64", "getxattr",
    "getxattrat", "inotify_add_watch", "inotify_init", "inotify_init1", "inotify_rm_watch",
    "lchown", "lchown32", "lgetxattr", "link", "linkat", "listxattr", "listxattrat", "llistxattr",
    "_llseek", "lremovexattr", "lseek", "lsetxattr", "lstat", "lstat64", "mkdir", "mkdirat",
    "mknod", "mknodat", "newfstatat", "open", "openat", "openat2", "pread64", "preadv", "preadv2",
    "pwrite64", "pwritev", "pwritev2", "read", "readahead", "readlink", "readlinkat", "readv",
    "removexattr", "removexattrat", "rename", "renameat", "renameat2", "rmdir", "sendfile",
    "sendfile64", "setxattr", "setxattrat", "splice", "stat", "stat64", "statfs", "statfs64",
    "statx", "symlink", "symlinkat", "sync", "sync_file_range", "syncfs", "tee", "truncate",
    "truncate64", "umask", "unlink", "unlinkat", "utime", "utimensat", "utimensat_time64",
    "utimes", "vmsplice", "write", "writev", "cachestat",
    // memory
    "brk", "madvise", "membarrier", "memfd_create", "memfd_secret", "mincore", "mlock", "mlock2",
    "mlockall", "mmap", "mmap2", "mprotect", "mremap", "mseal", "msync", "munlock", "munlockall",
    "munmap", "pkey_alloc", "pkey_free", "pkey_mprotect", "process_madvise", "process_mrelease",
    "remap_file_pages", "map_shadow_stack",
    // processes, threads, credentials, signals
    "capget", "capset", "execve", "execveat", "exit", "exit_group", "fork", "vfork",
    "get_robust_list", "set_robust_list", "get_thread_area", "set_thread_area", "getcpu",
    "getegid", "getegid32", "geteuid", "geteuid32", "getgid", "getgid32", "getgroups",
    "getgroups32", "getpgid", "getpgrp", "getpid", "getppid", "getpriority", "getresgid",
    "getresgid32", "getresuid", "getresuid32", "getrlimit", "getrusage", "getsid", "gettid",
    "getuid", "getuid32", "ioprio_get", "ioprio_set", "kill", "pidfd_open", "pidfd_send_signal",
    "prctl", "prlimit64", "process_vm_readv", "process_vm_writev", "ptrace", "restart_syscall",
    "rseq", "rt_sigaction", "rt_sigpending", "rt_sigprocmask", "rt_sigqueueinfo",
    "rt_sigreturn", "rt_sigsuspend", "rt_sigtimedwait", "rt_sigtimedwait_time64",
    "rt_tgsigqueueinfo", "sched_get_priority_max", "sched_get_priority_min", "sched_getaffinity",
    "sched_getattr", "sched_getparam", "sched_getscheduler", "sched_rr_get_interval",
    "sched_rr_get_interval_time64", "sched_setaffinity", "sched_setattr", "sched_setparam",
    "sched_setscheduler", "sched_yield", "seccomp", "set_tid_address", "setfsgid", "setfsgid32",
    "setfsuid", "setfsuid32", "setgid", "setgid32", "setgroups", "setgroups32", "setpgid",
    "setpriority", "setregid", "setregid32", "setresgid", "setresgid32", "setresuid",
    "setresuid32", "setreuid", "setreuid32", "setrlimit", "setsid", "setuid", "setuid32",
    "sigaltstack", "signal", "signalfd", "signalfd4", "sigpending", "sigprocmask", "sigreturn",
    "sigsuspend", "tgkill", "tkill", "ugetrlimit", "uname", "wait4", "waitid", "waitpid",
    "landlock_add_rule", "landlock_create_ruleset", "landlock_restrict_self",
    // time
    "alarm", "clock_getres", "clock_getres_time64", "clock_gettime", "clock_gettime64",
    "clock_nanosleep", "clock_nanosleep_time64", "getitimer", "gettimeofday", "nanosleep",
    "setitimer", "time", "timer_create", "timer_delete", "timer_getoverrun", "timer_gettime",
    "timer_gettime64", "timer_settime", "timer_settime64", "timerfd_create", "timerfd_gettime",
    "timerfd_gettime64", "timerfd_settime", "timerfd_settime64", "times",
    // waiting and events
    "epoll_create", "epoll_create1", "epoll_ctl", "epoll_ctl_old", "epoll_pwait", "epoll_pwait2",
    "epoll_wait", "epoll_wait_old", "eventfd", "eventfd2", "futex", "futex_requeue",
    "futex_time64", "futex_wait", "futex_waitv", "futex_wake", "io_cancel", "io_destroy",
    "io_getevents", "io_pgetevents", "io_pgetevents_time64", "io_setup", "io_submit", "pause",
    "poll", "ppoll", "ppoll_time64", "pselect6", "pselect6_time64", "select", "_newselect",
    // System V and POSIX IPC (namespaced)
    "ipc", "mq_getsetattr", "mq_notify", "mq_open", "mq_timedreceive", "mq_timedreceive_time64",
    "mq_timedsend", "mq_timedsend_time64", "mq_unlink", "msgctl", "msgget", "msgrcv", "msgsnd",
    "semctl", "semget", "semop", "semtimedop", "semtimedop_time64", "shmat", "shmctl", "shmdt",
    "shmget",
    // sockets
    "accept", "accept4", "bind", "connect", "getpeername", "getsockname", "getsockopt", "listen",
    "recv", "recvfrom", "recvmmsg", "recvmmsg_time64", "recvmsg", "send", "sendmmsg", "sendmsg",
    "sendto", "setsockopt", "shutdown", "socket", "socketcall", "socketpair",
    // misc
    "getrandom", "ioctl", "sysinfo",
];

/// Architecture-specific syscalls every container may make.
#[cfg(target_arch = "x86_64")]
#[rustfmt::skip]
const ALLOWED_ARCH: &[&str] = &["arch_prctl", "modify_ldt"];
#[cfg(target_arch = "aarch64")]
#[rustfmt::skip]
const ALLOWED_ARCH: &[&str] = &[
    "arm_fadvise64_64", "arm_sync_file_range", "sync_file_range2", "breakpoint", "cacheflush",
    "set_tls",
];
#[cfg(target_arch = "s390x")]
const ALLOWED_ARCH: &[&str] = &[
    "s390_pci_mmio_read",
    "s390_pci_mmio_write",
    "s390_runtime_instr",
];
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64", target_arch = "s390x")))]
const ALLOWED_ARCH: &[&str] = &[];

/// Syscalls allowed only with a capability.
#[rustfmt::skip]
const BY_CAPABILITY: &[(&str, &[&str])] = &[
    (
        "SYS_ADMIN",
        &[
            "bpf", "clone", "clone3", "fanotify_init", "fsconfig", "fsmount", "fsopen", "fspick",
            "lookup_dcookie", "mount", "mount_setattr", "move_mount", "name_to_handle_at",
            "open_tree", "perf_event_open", "quotactl", "quotactl_fd", "setdomainname",
            "sethostname", "setns", "syslog", "umount", "umount2", "unshare",
        ],
    ),
    ("BPF", &["bpf"]),
    ("PERFMON", &["perf_event_open"]),
    ("SYSLOG", &["syslog"]),
    ("DAC_READ_SEARCH", &["open_by_handle_at"]),
    ("SYS_BOOT", &["reboot"]),
    ("SYS_CHROOT", &["chroot"]),
    ("SYS_MODULE", &["delete_module", "init_module", "finit_module"]),
    ("SYS_PACCT", &["acct"]),
    ("SYS_PTRACE", &["kcmp", "pidfd_getfd"]),
    ("SYS_RAWIO", &["iopl", "ioperm"]),
    (
        "SYS_TIME",
        &[
            "adjtimex", "clock_adjtime", "clock_adjtime64", "clock_settime", "clock_settime64",
            "settimeofday", "stime",
        ],
    ),
    ("SYS_TTY_CONFIG", &["vhangup"]),
    ("SYS_NICE", &["get_mempolicy", "mbind", "set_mempolicy", "set_mempolicy_home_node"]),
];

/// `CLONE_NEWNS | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET | NEWCGROUP`.
const CLONE_NAMESPACE_FLAGS: u64 = 0x7E02_0000;

/// `personality(2)` values that change nothing dangerous: `PER_LINUX`,
/// `PER_LINUX32`, `UNAME26`, `PER_LINUX32|UNAME26`, and the query `0xffffffff`.
const SAFE_PERSONALITIES: [u64; 5] = [0x0, 0x8, 0x20000, 0x20008, 0xffff_ffff];

const EPERM: u32 = 1;
const ENOSYS: u32 = 38;

fn rule(names: &[&str], action: LinuxSeccompAction) -> LinuxSyscall {
    let mut syscall = LinuxSyscall::default();
    syscall.set_names(names.iter().map(|s| (*s).to_owned()).collect());
    syscall.set_action(action);
    syscall
}

fn arg(
    index: usize,
    value: u64,
    value_two: Option<u64>,
    op: LinuxSeccompOperator,
) -> Result<oci_spec::runtime::LinuxSeccompArg, BuildError> {
    let mut builder = LinuxSeccompArgBuilder::default()
        .index(index)
        .value(value)
        .op(op);
    if let Some(two) = value_two {
        builder = builder.value_two(two);
    }
    builder
        .build()
        .map_err(|e| BuildError::new("seccomp argument", e))
}

fn architectures() -> Vec<Arch> {
    if cfg!(target_arch = "x86_64") {
        vec![Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32]
    } else if cfg!(target_arch = "aarch64") {
        vec![Arch::ScmpArchAarch64, Arch::ScmpArchArm]
    } else if cfg!(target_arch = "s390x") {
        vec![Arch::ScmpArchS390x, Arch::ScmpArchS390]
    } else if cfg!(target_arch = "riscv64") {
        vec![Arch::ScmpArchRiscv64]
    } else {
        Vec::new()
    }
}

/// krio's default profile for a container whose bounding set is `caps`.
pub fn default_profile(caps: CapabilitySet) -> Result<LinuxSeccomp, BuildError> {
    let mut syscalls = vec![rule(ALLOWED, LinuxSeccompAction::ScmpActAllow)];
    if !ALLOWED_ARCH.is_empty() {
        syscalls.push(rule(ALLOWED_ARCH, LinuxSeccompAction::ScmpActAllow));
    }
    for value in SAFE_PERSONALITIES {
        let mut personality = rule(&["personality"], LinuxSeccompAction::ScmpActAllow);
        personality.set_args(Some(vec![arg(
            0,
            value,
            None,
            LinuxSeccompOperator::ScmpCmpEq,
        )?]));
        syscalls.push(personality);
    }

    let mut granted: Vec<&str> = Vec::new();
    for (cap, names) in BY_CAPABILITY {
        if caps.contains(cap) {
            for name in *names {
                if !granted.contains(name) {
                    granted.push(name);
                }
            }
        }
    }
    if !granted.is_empty() {
        syscalls.push(rule(&granted, LinuxSeccompAction::ScmpActAllow));
    }
    if !caps.contains("SYS_ADMIN") {
        // clone without namespace flags (the flags are argument 1 on s390x).
        let flags_index = if cfg!(target_arch = "s390x") { 1 } else { 0 };
        let mut clone = rule(&["clone"], LinuxSeccompAction::ScmpActAllow);
        clone.set_args(Some(vec![arg(
            flags_index,
            CLONE_NAMESPACE_FLAGS,
            Some(0),
            LinuxSeccompOperator::ScmpCmpMaskedEq,
        )?]));
        syscalls.push(clone);
        // clone3 passes its flags in memory, out of seccomp's sight: ENOSYS
        // makes libc fall back to clone, which the rule above checks.
        let mut clone3 = rule(&["clone3"], LinuxSeccompAction::ScmpActErrno);
        clone3.set_errno_ret(Some(ENOSYS));
        syscalls.push(clone3);
    }

    let mut profile = LinuxSeccomp::default();
    profile.set_default_action(LinuxSeccompAction::ScmpActErrno);
    profile.set_default_errno_ret(Some(EPERM));
    profile.set_architectures(Some(architectures()));
    profile.set_syscalls(Some(syscalls));
    Ok(profile)
}

#[cfg(test)]
#[allow(deprecated)] // the deprecated CRI fields are still sent and tested
mod tests {
    use super::*;

    fn allowed_unconditionally(profile: &LinuxSeccomp, name: &str) -> bool {
        profile.syscalls().iter().flatten().any(|s| {
            s.action() == LinuxSeccompAction::ScmpActAllow
                && s.args().as_ref().is_none_or(Vec::is_empty)
                && s.names().iter().any(|n| n == name)
        })
    }

    fn mentioned(profile: &LinuxSeccomp, name: &str) -> bool {
        profile
            .syscalls()
            .iter()
            .flatten()
            .any(|s| s.names().iter().any(|n| n == name))
    }

    #[test]
    fn default_profile_denies_by_default() {
        let profile = default_profile(CapabilitySet::defaults()).expect("profile");
        assert_eq!(profile.default_action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(profile.default_errno_ret(), Some(EPERM));
        for allowed in [
            "read", "write", "execve", "chmod", "socket", "ptrace", "openat2",
        ] {
            assert!(allowed_unconditionally(&profile, allowed), "{allowed}");
        }
        for denied in [
            "unshare",
            "mount",
            "umount2",
            "setns",
            "sethostname",
            "keyctl",
            "add_key",
            "request_key",
            "bpf",
            "reboot",
            "init_module",
            "kexec_load",
            "io_uring_setup",
            "userfaultfd",
            "open_by_handle_at",
            "settimeofday",
            "chroot_not_a_syscall",
        ] {
            assert!(!allowed_unconditionally(&profile, denied), "{denied}");
        }
        // chroot comes with the default SYS_CHROOT.
        assert!(allowed_unconditionally(&profile, "chroot"));
        // clone only without namespace flags; clone3 → ENOSYS.
        let clone = profile
            .syscalls()
            .iter()
            .flatten()
            .find(|s| s.names() == &["clone"])
            .expect("clone rule");
        let args = clone.args().as_ref().expect("clone args");
        assert_eq!(args[0].value(), CLONE_NAMESPACE_FLAGS);
        assert_eq!(args[0].op(), LinuxSeccompOperator::ScmpCmpMaskedEq);
        let clone3 = profile
            .syscalls()
            .iter()
            .flatten()
            .find(|s| s.names() == &["clone3"])
            .expect("clone3 rule");
        assert_eq!(clone3.errno_ret(), Some(ENOSYS));
    }

    #[test]
    fn capabilities_unlock_their_syscalls() {
        let caps = CapabilitySet::from_names(&["SYS_ADMIN", "SYS_TIME"]).expect("caps");
        let profile = default_profile(caps).expect("profile");
        for name in [
            "mount",
            "unshare",
            "setns",
            "sethostname",
            "clone",
            "clone3",
            "settimeofday",
        ] {
            assert!(allowed_unconditionally(&profile, name), "{name}");
        }
        assert!(!mentioned(&profile, "reboot"));
        assert!(!allowed_unconditionally(&profile, "chroot"));
    }

    #[test]
    fn selection_rules() {
        let caps = CapabilitySet::defaults();
        let with =
            |profile: Option<v1::SecurityProfile>, path: &str| v1::LinuxContainerSecurityContext {
                seccomp: profile,
                seccomp_profile_path: path.to_owned(),
                ..Default::default()
            };
        let runtime_default = v1::SecurityProfile::default();
        let unconfined = v1::SecurityProfile {
            profile_type: v1::security_profile::ProfileType::Unconfined as i32,
            ..Default::default()
        };
        // nil → unconfined; RuntimeDefault → filter; privileged → never.
        assert!(seccomp(None, false, caps, true).expect("none").is_none());
        assert!(
            seccomp(Some(&with(None, "")), false, caps, true)
                .expect("none")
                .is_none()
        );
        assert!(
            seccomp(
                Some(&with(Some(runtime_default.clone()), "")),
                false,
                caps,
                true
            )
            .expect("default")
            .is_some()
        );
        assert!(
            seccomp(
                Some(&with(Some(runtime_default.clone()), "")),
                true,
                caps,
                true
            )
            .expect("privileged")
            .is_none()
        );
        assert!(
            seccomp(
                Some(&with(Some(unconfined), "runtime/default")),
                false,
                caps,
                true
            )
            .expect("unconfined")
            .is_none()
        );
        for path in ["runtime/default", "docker/default"] {
            assert!(
                seccomp(Some(&with(None, path)), false, caps, true)
                    .expect(path)
                    .is_some()
            );
        }
        assert!(
            seccomp(Some(&with(None, "unconfined")), false, caps, true)
                .expect("u")
                .is_none()
        );
        assert!(matches!(
            seccomp(Some(&with(None, "bogus")), false, caps, true),
            Err(SeccompError::BadProfile { .. })
        ));
        assert!(matches!(
            seccomp(Some(&with(Some(runtime_default), "")), false, caps, false),
            Err(SeccompError::Unsupported { .. })
        ));
    }

    #[test]
    fn localhost_profiles() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("block-chmod.json");
        std::fs::write(
            &path,
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["chmod","fchmodat"],"action":"SCMP_ACT_ERRNO"}]}"#,
        )
        .expect("write");
        let caps = CapabilitySet::defaults();
        let sc = v1::LinuxContainerSecurityContext {
            seccomp: Some(v1::SecurityProfile {
                profile_type: v1::security_profile::ProfileType::Localhost as i32,
                localhost_ref: path.display().to_string(),
            }),
            ..Default::default()
        };
        let profile = seccomp(Some(&sc), false, caps, true)
            .expect("load")
            .expect("profile");
        assert_eq!(profile.default_action(), LinuxSeccompAction::ScmpActAllow);
        assert!(mentioned(&profile, "fchmodat"));

        let deprecated = v1::LinuxContainerSecurityContext {
            seccomp_profile_path: format!("localhost/{}", path.display()),
            ..Default::default()
        };
        assert!(
            seccomp(Some(&deprecated), false, caps, true)
                .expect("load")
                .is_some()
        );

        let missing = v1::LinuxContainerSecurityContext {
            seccomp_profile_path: "localhost//nonexistent/profile.json".into(),
            ..Default::default()
        };
        assert!(matches!(
            seccomp(Some(&missing), false, caps, true),
            Err(SeccompError::Read { .. })
        ));
        std::fs::write(&path, "not json").expect("write");
        assert!(matches!(
            seccomp(Some(&sc), false, caps, true),
            Err(SeccompError::Parse { .. })
        ));
        let relative = v1::LinuxContainerSecurityContext {
            seccomp_profile_path: "localhost/relative.json".into(),
            ..Default::default()
        };
        assert!(matches!(
            seccomp(Some(&relative), false, caps, true),
            Err(SeccompError::BadProfile { .. })
        ));
    }
}
