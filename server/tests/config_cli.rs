//! `krio config` and `krio version`: configuration precedence and errors as
//! an operator sees them.

mod common;

use common::Sandbox;

fn config_output(cmd: &mut std::process::Command) -> String {
    let out = cmd.arg("config").output().expect("run krio config");
    assert!(
        out.status.success(),
        "krio config failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf8")
}

fn root_of(toml_text: &str) -> String {
    let value: toml::Table = toml_text.parse().expect("krio config prints valid TOML");
    value["root"].as_str().expect("root").to_owned()
}

#[test]
fn precedence_is_file_then_drop_in_then_env_then_flag() {
    let sandbox = Sandbox::new();
    std::fs::write(
        sandbox.path("krio.toml"),
        "root = \"/from/file\"\nrunroot = \"/from/file/run\"\n",
    )
    .expect("write");
    assert_eq!(
        root_of(&config_output(&mut sandbox.command())),
        "/from/file"
    );

    std::fs::create_dir(sandbox.path("krio.d")).expect("mkdir");
    std::fs::write(
        sandbox.path("krio.d/50-root.toml"),
        "root = \"/from/drop-in\"\n",
    )
    .expect("write");
    let out = config_output(&mut sandbox.command());
    assert_eq!(root_of(&out), "/from/drop-in");
    assert!(
        out.contains("runroot = \"/from/file/run\""),
        "untouched keys keep the file's value"
    );

    let mut cmd = sandbox.command();
    cmd.env("KRIO_ROOT", "/from/env");
    assert_eq!(root_of(&config_output(&mut cmd)), "/from/env");

    let mut cmd = sandbox.command();
    cmd.env("KRIO_ROOT", "/from/env")
        .args(["--root", "/from/flag"]);
    assert_eq!(root_of(&config_output(&mut cmd)), "/from/flag");
}

#[test]
fn config_prints_every_default() {
    let sandbox = Sandbox::new();
    let out = config_output(&mut sandbox.command());
    for key in [
        "root = \"/var/lib/krio\"",
        "runroot = \"/run/krio\"",
        "listen = \"/run/krio/krio.sock\"",
        "log_level = \"info\"",
        "cgroup_manager = \"cgroupfs\"",
        "conf_dir = \"/etc/cni/net.d\"",
        "registries_conf = ",
        "[streaming]",
        "default_handler = \"runc\"",
        "[runtime.handlers.runc]",
        "[runtime.handlers.crun]",
    ] {
        assert!(out.contains(key), "missing {key:?} in:\n{out}");
    }
}

#[test]
fn a_bad_key_names_the_file_and_the_key() {
    let sandbox = Sandbox::new();
    std::fs::create_dir(sandbox.path("krio.d")).expect("mkdir");
    std::fs::write(
        sandbox.path("krio.d/10-typo.toml"),
        "[streaming]\nadress = \"0.0.0.0\"\n",
    )
    .expect("write");
    let out = sandbox.command().arg("config").output().expect("run");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("10-typo.toml"), "{stderr}");
    assert!(stderr.contains("streaming.adress"), "{stderr}");
    assert!(
        stderr.contains("address"),
        "the allowed keys are listed: {stderr}"
    );
}

#[test]
fn a_bad_value_names_the_key_and_what_is_allowed() {
    let sandbox = Sandbox::new();
    std::fs::write(sandbox.path("krio.toml"), "[streaming]\nport = 70000\n").expect("write");
    let out = sandbox.command().arg("config").output().expect("run");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("krio.toml") && stderr.contains("streaming.port"),
        "{stderr}"
    );

    let out = sandbox
        .command()
        .args(["--log-level", "loud", "config"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--log-level") && stderr.contains("debug"),
        "{stderr}"
    );
}

#[test]
fn version_prints_krio_and_the_cri_version() {
    let out = Sandbox::new()
        .command()
        .arg("version")
        .output()
        .expect("run");
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(concat!("krio ", env!("CARGO_PKG_VERSION"))),
        "{stdout}"
    );
    assert!(
        stdout.contains("v1") && stdout.contains("k8s.io/cri-api@v0.37.2"),
        "{stdout}"
    );
}

#[test]
fn the_shipped_config_file_is_valid_and_changes_nothing() {
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/krio.toml");
    let sandbox = Sandbox::new();
    let defaults = config_output(&mut sandbox.command());
    std::fs::copy(shipped, sandbox.path("krio.toml")).expect("copy shipped config");
    let out = config_output(&mut sandbox.command());
    assert!(out.contains("# Read from: "), "{out}");
    let body = |s: &str| {
        s.lines()
            .filter(|l| !l.starts_with('#'))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(body(&out), body(&defaults));
}
