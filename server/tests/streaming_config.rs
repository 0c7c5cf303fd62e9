//! The `[streaming]` settings: durations as text, and a TLS certificate or
//! key that cannot be used stops krio at start with the file named.

mod common;

use std::time::Duration;

use common::{Sandbox, wait_bounded};

fn config(sandbox: &Sandbox, toml: &str) -> std::process::Output {
    std::fs::write(sandbox.path("krio.toml"), toml).expect("write config");
    sandbox
        .command()
        .arg("config")
        .output()
        .expect("run krio config")
}

#[test]
fn timeouts_are_durations_with_the_kubelet_defaults() {
    let sandbox = Sandbox::new();
    let out = config(&sandbox, "");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("stream_idle_timeout = \"4h\""), "{stdout}");
    assert!(
        stdout.contains("stream_creation_timeout = \"30s\""),
        "{stdout}"
    );

    let out = config(&sandbox, "[streaming]\nstream_idle_timeout = \"90m\"\n");
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("stream_idle_timeout = \"1h 30m\""),
        "{stdout}"
    );

    let out = config(
        &sandbox,
        "[streaming]\nstream_creation_timeout = \"soon\"\n",
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("streaming.stream_creation_timeout") && stderr.contains("\"30s\""),
        "{stderr}"
    );
}

#[test]
fn unusable_tls_files_stop_the_daemon_with_their_name() {
    let sandbox = Sandbox::new();
    // A key without a certificate.
    let out = config(&sandbox, "[streaming]\ntls_key = \"/etc/krio/none.key\"\n");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("tls_cert"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A certificate file that does not exist (the daemon gets that far
    // only as root).
    if common::skip_unless_root("unusable_tls_files_stop_the_daemon_with_their_name") {
        return;
    }
    let missing = sandbox.path("missing-cert.pem");
    let key = sandbox.path("key.pem");
    std::fs::write(&key, "not a key").expect("write key");
    std::fs::write(
        sandbox.path("krio.toml"),
        format!(
            "[streaming]\ntls_cert = \"{}\"\ntls_key = \"{}\"\n",
            missing.display(),
            key.display()
        ),
    )
    .expect("write config");
    let child = sandbox
        .serve_command()
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn krio");
    let out = wait_bounded(child, Duration::from_secs(30));
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("streaming") && stderr.contains("missing-cert.pem"),
        "{stderr}"
    );
    assert!(!sandbox.socket().exists(), "krio must not serve the CRI");
}
