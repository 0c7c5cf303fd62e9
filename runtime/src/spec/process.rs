//! The container's process: argv, environment, working directory, rlimits,
//! `oom_score_adj` and the stop signal.
//!
//! - argv merges the CRI command/args with the image's Entrypoint/Cmd the way
//!   the kubelet expects: a CRI `command` replaces both Entrypoint and Cmd;
//!   CRI `args` alone replace Cmd; neither → Entrypoint + Cmd.
//! - env: image `Env`, then the CRI envs (the CRI wins per key, in the
//!   image's position), then defaults for what is still missing: `PATH`,
//!   `HOSTNAME`, `HOME` (from the image's passwd entry, else `/`), and
//!   `TERM=xterm` for a tty.
//! - `RLIMIT_NOFILE` is 1048576 (containerd's and Docker's common choice),
//!   capped at krio's own hard limit: without `CAP_SYS_RESOURCE` runc cannot
//!   raise a hard limit.
//! - `oom_score_adj` is clamped to krio's own value when it asks for less:
//!   lowering it needs `CAP_SYS_RESOURCE`, which krio may not have.

use std::sync::Once;

use krio_proto::v1;
use oci_spec::image::Config as ImageConfig;
use oci_spec::runtime::{PosixRlimit, PosixRlimitBuilder, PosixRlimitType};

use super::BuildError;

/// `PATH` when neither the image nor the CRI config sets one.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The `RLIMIT_NOFILE` krio aims for (capped at what krio itself may grant).
pub const DEFAULT_NOFILE: u64 = 1_048_576;

/// The process part of the config is wrong.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// Neither the CRI config nor the image gives a command.
    #[error(
        "no command to run: the container config has no command or args and the image has no Entrypoint or Cmd"
    )]
    NoCommand,
    /// An environment variable cannot be passed to a process.
    #[error("envs: variable {key:?} is invalid: {reason}")]
    BadEnv {
        /// The variable's name (lossy).
        key: String,
        /// Why.
        reason: &'static str,
    },
    /// The working directory is not an absolute path, or points into /proc.
    #[error("{field}: working directory {path:?} {reason}")]
    BadWorkingDir {
        /// Where it came from.
        field: &'static str,
        /// The value.
        path: String,
        /// Why.
        reason: &'static str,
    },
    /// `oom_score_adj` outside -1000..=1000.
    #[error("resources.oom_score_adj: {0} is outside -1000..=1000")]
    BadOomScoreAdj(i64),
    /// The image's `StopSignal` names no signal.
    #[error("image StopSignal {0:?} is not a signal name or number")]
    BadStopSignal(String),
    /// An OCI value could not be built (a bug).
    #[error(transparent)]
    Build(#[from] BuildError),
}

/// argv: CRI command/args merged with the image Entrypoint/Cmd.
pub(crate) fn args(
    config: &v1::ContainerConfig,
    image: Option<&ImageConfig>,
) -> Result<Vec<String>, ProcessError> {
    let entrypoint = image
        .and_then(|c| c.entrypoint().as_deref())
        .unwrap_or_default();
    let cmd = image.and_then(|c| c.cmd().as_deref()).unwrap_or_default();
    let argv: Vec<String> = if !config.command.is_empty() {
        config.command.iter().chain(&config.args).cloned().collect()
    } else if !config.args.is_empty() {
        entrypoint.iter().chain(&config.args).cloned().collect()
    } else {
        entrypoint.iter().chain(cmd).cloned().collect()
    };
    if argv.is_empty() {
        return Err(ProcessError::NoCommand);
    }
    Ok(argv)
}

/// What the environment needs beyond the image and the CRI config.
pub(crate) struct EnvDefaults<'a> {
    pub hostname: &'a str,
    pub home: Option<&'a str>,
    pub tty: bool,
}

/// The environment, as `KEY=value` strings.
pub(crate) fn env(
    config: &v1::ContainerConfig,
    image: Option<&ImageConfig>,
    defaults: &EnvDefaults<'_>,
) -> Result<Vec<String>, ProcessError> {
    let mut vars: Vec<(String, String)> = Vec::new();
    let mut set = |key: &str, value: &str| match vars.iter_mut().find(|(k, _)| k == key) {
        Some(slot) => slot.1 = value.to_owned(),
        None => vars.push((key.to_owned(), value.to_owned())),
    };
    for entry in image.and_then(|c| c.env().as_deref()).unwrap_or_default() {
        // Image metadata is hostile: skip what no process could receive.
        match entry.split_once('=') {
            Some((key, value)) if !key.is_empty() && !entry.contains('\0') => set(key, value),
            _ => {
                tracing::warn!(entry = %entry.escape_debug(), "skipping a malformed image Env entry")
            }
        }
    }
    for kv in &config.envs {
        let bad = |reason| ProcessError::BadEnv {
            key: kv.key.escape_debug().to_string(),
            reason,
        };
        if kv.key.is_empty() {
            return Err(bad("the name is empty"));
        }
        if kv.key.contains(['=', '\0']) {
            return Err(bad("the name contains '=' or a NUL byte"));
        }
        let value = std::str::from_utf8(&kv.value).map_err(|_| bad("the value is not UTF-8"))?;
        if value.contains('\0') {
            return Err(bad("the value contains a NUL byte"));
        }
        set(&kv.key, value);
    }
    let mut default = |key: &str, value: &str| {
        if !vars.iter().any(|(k, _)| k == key) {
            vars.push((key.to_owned(), value.to_owned()));
        }
    };
    default("PATH", DEFAULT_PATH);
    if !defaults.hostname.is_empty() {
        default("HOSTNAME", defaults.hostname);
    }
    default("HOME", defaults.home.unwrap_or("/"));
    if defaults.tty {
        default("TERM", "xterm");
    }
    Ok(vars.into_iter().map(|(k, v)| format!("{k}={v}")).collect())
}

/// The working directory: CRI `working_dir`, else the image's, else `/`.
pub(crate) fn cwd(
    config: &v1::ContainerConfig,
    image: Option<&ImageConfig>,
) -> Result<String, ProcessError> {
    let (field, path) = if !config.working_dir.is_empty() {
        ("working_dir", config.working_dir.as_str())
    } else {
        match image.and_then(|c| c.working_dir().as_deref()) {
            Some(dir) if !dir.is_empty() => ("image WorkingDir", dir),
            _ => return Ok("/".to_owned()),
        }
    };
    let bad = |reason| ProcessError::BadWorkingDir {
        field,
        path: path.to_owned(),
        reason,
    };
    if !path.starts_with('/') {
        return Err(bad("is not an absolute path"));
    }
    if path.contains('\0') {
        return Err(bad("contains a NUL byte"));
    }
    // CVE-2024-21626: a cwd under /proc (/proc/self/fd/N) can reach host fds.
    if path.split('/').find(|c| !c.is_empty() && *c != ".") == Some("proc") {
        return Err(bad("is inside /proc"));
    }
    Ok(path.to_owned())
}

/// Resource limits: `RLIMIT_NOFILE` at [`DEFAULT_NOFILE`], capped at `host_hard`.
pub(crate) fn rlimits(host_hard: u64) -> Result<Vec<PosixRlimit>, ProcessError> {
    let limit = DEFAULT_NOFILE.min(host_hard);
    let nofile = PosixRlimitBuilder::default()
        .typ(PosixRlimitType::RlimitNofile)
        .soft(limit)
        .hard(limit)
        .build()
        .map_err(|e| BuildError::new("rlimit", e))?;
    Ok(vec![nofile])
}

static OOM_CLAMP_WARNING: Once = Once::new();

/// `oom_score_adj`: validated, then raised to `host_min` if lower (logged once).
pub(crate) fn oom_score_adj(requested: i64, host_min: i32) -> Result<i32, ProcessError> {
    let value = i32::try_from(requested)
        .ok()
        .filter(|v| (-1000..=1000).contains(v))
        .ok_or(ProcessError::BadOomScoreAdj(requested))?;
    if value < host_min {
        OOM_CLAMP_WARNING.call_once(|| {
            tracing::warn!(
                requested = value,
                used = host_min,
                "oom_score_adj below krio's own needs CAP_SYS_RESOURCE; using krio's value instead (logged once)"
            );
        });
        return Ok(host_min);
    }
    Ok(value)
}

/// Linux signal numbers by name (x86, arm, arm64, riscv, s390x numbering).
const SIGNALS: [(&str, i32); 33] = [
    ("HUP", 1),
    ("INT", 2),
    ("QUIT", 3),
    ("ILL", 4),
    ("TRAP", 5),
    ("ABRT", 6),
    ("IOT", 6),
    ("BUS", 7),
    ("FPE", 8),
    ("KILL", 9),
    ("USR1", 10),
    ("SEGV", 11),
    ("USR2", 12),
    ("PIPE", 13),
    ("ALRM", 14),
    ("TERM", 15),
    ("STKFLT", 16),
    ("CHLD", 17),
    ("CLD", 17),
    ("CONT", 18),
    ("STOP", 19),
    ("TSTP", 20),
    ("TTIN", 21),
    ("TTOU", 22),
    ("URG", 23),
    ("XCPU", 24),
    ("XFSZ", 25),
    ("VTALRM", 26),
    ("PROF", 27),
    ("WINCH", 28),
    ("IO", 29),
    ("POLL", 29),
    ("PWR", 30),
];

const SIGRTMIN: i32 = 34;
const SIGRTMAX: i32 = 64;

/// A signal number from `SIGTERM`, `TERM`, `15`, `SIGRTMIN+3`, `RTMAX-1`
/// (any case) or the CRI enum's `SIGRTMINPLUS3` / `SIGRTMAXMINUS1` spelling.
pub fn parse_signal(value: &str) -> Option<i32> {
    let upper = value.trim().to_ascii_uppercase();
    if let Ok(n) = upper.parse::<i32>() {
        return (1..=SIGRTMAX).contains(&n).then_some(n);
    }
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    if name == "SYS" {
        return Some(31);
    }
    if let Some(n) = SIGNALS.iter().find(|(s, _)| *s == name).map(|(_, n)| *n) {
        return Some(n);
    }
    let offset = |rest: &str| -> Option<i32> {
        if rest.is_empty() {
            Some(0)
        } else {
            rest.parse::<i32>().ok().filter(|n| (0..=30).contains(n))
        }
    };
    let rt = |base: i32, sign: i32, rest: &str| {
        offset(rest)
            .map(|n| base + sign * n)
            .filter(|n| (SIGRTMIN..=SIGRTMAX).contains(n))
    };
    if let Some(rest) = name.strip_prefix("RTMIN") {
        let rest = rest
            .strip_prefix("PLUS")
            .or(rest.strip_prefix('+'))
            .unwrap_or(rest);
        return rt(SIGRTMIN, 1, rest);
    }
    if let Some(rest) = name.strip_prefix("RTMAX") {
        let rest = rest
            .strip_prefix("MINUS")
            .or(rest.strip_prefix('-'))
            .unwrap_or(rest);
        return rt(SIGRTMAX, -1, rest);
    }
    None
}

/// The stop signal: the CRI config's, else the image's `StopSignal`, else SIGTERM.
pub(crate) fn stop_signal(
    config: &v1::ContainerConfig,
    image: Option<&ImageConfig>,
) -> Result<i32, ProcessError> {
    if let Ok(signal) = v1::Signal::try_from(config.stop_signal)
        && signal != v1::Signal::RuntimeDefault
    {
        let name = signal.as_str_name().trim_start_matches("SIGNAL_");
        if let Some(n) = parse_signal(name) {
            return Ok(n);
        }
    }
    match image.and_then(|c| c.stop_signal().as_deref()) {
        Some(s) if !s.trim().is_empty() => {
            parse_signal(s).ok_or_else(|| ProcessError::BadStopSignal(s.to_owned()))
        }
        _ => Ok(15),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::image::ConfigBuilder;

    fn image(entrypoint: &[&str], cmd: &[&str]) -> ImageConfig {
        let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        ConfigBuilder::default()
            .entrypoint(strings(entrypoint))
            .cmd(strings(cmd))
            .build()
            .expect("image config")
    }

    fn config(command: &[&str], args: &[&str]) -> v1::ContainerConfig {
        v1::ContainerConfig {
            command: command.iter().map(|s| s.to_string()).collect(),
            args: args.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn argv_merge_rules() {
        let img = image(&["/entry"], &["default-arg"]);
        let cases: [(&[&str], &[&str], &[&str]); 4] = [
            (&["/bin/cmd"], &["a"], &["/bin/cmd", "a"]),
            (&["/bin/cmd"], &[], &["/bin/cmd"]),
            (&[], &["a", "b"], &["/entry", "a", "b"]),
            (&[], &[], &["/entry", "default-arg"]),
        ];
        for (command, args_, want) in cases {
            assert_eq!(
                args(&config(command, args_), Some(&img)).expect("args"),
                want.to_vec()
            );
        }
        assert!(matches!(
            args(&config(&[], &[]), None),
            Err(ProcessError::NoCommand)
        ));
        assert_eq!(
            args(&config(&[], &[]), Some(&image(&[], &["sh"]))).expect("args"),
            vec!["sh"]
        );
    }

    #[test]
    fn env_order_and_defaults() {
        let img = ConfigBuilder::default()
            .env(vec![
                "A=image".to_string(),
                "PATH=/img/bin".to_string(),
                "NOEQUALS".to_string(),
                "B=x=y".to_string(),
            ])
            .build()
            .expect("image config");
        let mut cfg = config(&["x"], &[]);
        cfg.envs = vec![
            v1::KeyValue {
                key: "A".into(),
                value: b"cri".to_vec(),
            },
            v1::KeyValue {
                key: "C".into(),
                value: b"".to_vec(),
            },
        ];
        let defaults = EnvDefaults {
            hostname: "pod-host",
            home: Some("/home/app"),
            tty: true,
        };
        let got = env(&cfg, Some(&img), &defaults).expect("env");
        assert_eq!(
            got,
            vec![
                "A=cri",
                "PATH=/img/bin",
                "B=x=y",
                "C=",
                "HOSTNAME=pod-host",
                "HOME=/home/app",
                "TERM=xterm"
            ]
        );
        let plain = env(
            &config(&["x"], &[]),
            None,
            &EnvDefaults {
                hostname: "",
                home: None,
                tty: false,
            },
        )
        .expect("env");
        assert_eq!(plain, vec![format!("PATH={DEFAULT_PATH}"), "HOME=/".into()]);
    }

    #[test]
    fn env_rejects_what_execve_cannot_take() {
        let defaults = EnvDefaults {
            hostname: "",
            home: None,
            tty: false,
        };
        for (key, value) in [
            ("", b"v".to_vec()),
            ("A=B", b"v".to_vec()),
            ("A", b"v\0".to_vec()),
            ("A", vec![0xff, 0xfe]),
        ] {
            let mut cfg = config(&["x"], &[]);
            cfg.envs = vec![v1::KeyValue {
                key: key.into(),
                value,
            }];
            assert!(matches!(
                env(&cfg, None, &defaults),
                Err(ProcessError::BadEnv { .. })
            ));
        }
    }

    #[test]
    fn working_dir_rules() {
        let img = ConfigBuilder::default()
            .working_dir("/srv")
            .build()
            .expect("image config");
        let mut cfg = config(&["x"], &[]);
        assert_eq!(cwd(&cfg, None).expect("cwd"), "/");
        assert_eq!(cwd(&cfg, Some(&img)).expect("cwd"), "/srv");
        cfg.working_dir = "/work".into();
        assert_eq!(cwd(&cfg, Some(&img)).expect("cwd"), "/work");
        for bad in ["relative", "/proc/self/fd/7", "//proc/1/cwd"] {
            cfg.working_dir = bad.into();
            assert!(cwd(&cfg, None).is_err(), "{bad}");
        }
    }

    #[test]
    fn nofile_is_capped_by_the_host() {
        assert_eq!(rlimits(20_000).expect("rlimits")[0].hard(), 20_000);
        assert_eq!(
            rlimits(u64::MAX).expect("rlimits")[0].soft(),
            DEFAULT_NOFILE
        );
    }

    #[test]
    fn oom_score_adj_is_clamped_not_refused() {
        assert_eq!(oom_score_adj(-998, 0).expect("adj"), 0);
        assert_eq!(oom_score_adj(-998, -999).expect("adj"), -998);
        assert_eq!(oom_score_adj(1000, 0).expect("adj"), 1000);
        assert!(oom_score_adj(1001, 0).is_err());
        assert!(oom_score_adj(-1001, -1000).is_err());
    }

    #[test]
    fn signals() {
        assert_eq!(parse_signal("SIGTERM"), Some(15));
        assert_eq!(parse_signal("kill"), Some(9));
        assert_eq!(parse_signal("3"), Some(3));
        assert_eq!(parse_signal("SIGRTMIN+3"), Some(37));
        assert_eq!(parse_signal("SIGRTMINPLUS1"), Some(35));
        assert_eq!(parse_signal("SIGRTMAXMINUS1"), Some(63));
        assert_eq!(parse_signal("SIGNOPE"), None);
        assert_eq!(parse_signal("0"), None);

        let mut cfg = config(&["x"], &[]);
        let img = ConfigBuilder::default()
            .stop_signal("SIGQUIT")
            .build()
            .expect("image config");
        assert_eq!(stop_signal(&cfg, None).expect("signal"), 15);
        assert_eq!(stop_signal(&cfg, Some(&img)).expect("signal"), 3);
        cfg.stop_signal = v1::Signal::Sigkill as i32;
        assert_eq!(stop_signal(&cfg, Some(&img)).expect("signal"), 9);
        cfg.stop_signal = v1::Signal::Sigrtminplus2 as i32;
        assert_eq!(stop_signal(&cfg, Some(&img)).expect("signal"), 36);
    }
}
