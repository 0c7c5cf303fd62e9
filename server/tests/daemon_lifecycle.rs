//! Starting and stopping: the root lock, the socket, signals.

mod common;

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::process::Stdio;
use std::time::Duration;

use common::{Sandbox, wait_bounded};

#[test]
fn socket_has_mode_0660_and_sigterm_removes_it() {
    let sandbox = Sandbox::new();
    let daemon = sandbox.start();
    let socket = sandbox.socket();
    let meta = std::fs::metadata(&socket).expect("socket exists");
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    let out = daemon.terminate();
    assert!(out.status.success(), "clean exit on SIGTERM: {out:?}");
    assert!(!socket.exists(), "socket removed on SIGTERM");
}

#[test]
fn sigint_stops_cleanly_too() {
    let sandbox = Sandbox::new();
    let mut daemon = sandbox.start();
    let child = daemon.child.take().expect("running");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .expect("SIGINT");
    let out = wait_bounded(child, Duration::from_secs(10));
    assert!(out.status.success(), "{out:?}");
    assert!(!sandbox.socket().exists());
}

#[test]
fn a_second_daemon_on_the_same_root_refuses() {
    let sandbox = Sandbox::new();
    let first = sandbox.start();
    // Another socket, same root: only the lock can stop it.
    let mut second = sandbox.serve_command_at(&sandbox.path("other/krio.sock"));
    let child = second
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let out = wait_bounded(child, Duration::from_secs(10));
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("already running with root"), "{stderr}");
    assert!(stderr.contains(&format!("pid {}", first.pid())), "{stderr}");
    assert!(
        !sandbox.path("other/krio.sock").exists(),
        "the refused daemon bound nothing"
    );
    drop(first);
}

#[test]
fn a_stale_socket_is_replaced() {
    let sandbox = Sandbox::new();
    std::fs::create_dir_all(sandbox.path("run")).expect("mkdir");
    // A socket file nobody listens on, as a killed daemon leaves behind.
    drop(std::os::unix::net::UnixListener::bind(sandbox.socket()).expect("bind stale"));
    assert!(sandbox.socket().exists());
    let daemon = sandbox.start();
    assert!(std::os::unix::net::UnixStream::connect(&daemon.socket).is_ok());
}

#[test]
fn a_live_socket_of_another_process_is_not_stolen() {
    let sandbox = Sandbox::new();
    std::fs::create_dir_all(sandbox.path("run")).expect("mkdir");
    let _other = std::os::unix::net::UnixListener::bind(sandbox.socket()).expect("bind");
    let child = sandbox
        .serve_command()
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let out = wait_bounded(child, Duration::from_secs(10));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("in use by another process"));
}

#[test]
fn sends_ready_to_systemd_when_notify_socket_is_set() {
    let sandbox = Sandbox::new();
    let notify_path = sandbox.path("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).expect("bind notify socket");
    notify
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let child = sandbox
        .serve_command()
        .env("NOTIFY_SOCKET", &notify_path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let mut daemon = common::Daemon {
        child: Some(child),
        socket: sandbox.socket(),
    };
    let mut buf = [0u8; 256];
    let n = notify.recv(&mut buf).expect("READY=1 within 20s");
    assert_eq!(String::from_utf8_lossy(&buf[..n]).trim_end(), "READY=1");
    assert!(daemon.socket.exists(), "socket is bound before READY");
    let out = daemon.child.take().map(|c| {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(c.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        wait_bounded(c, Duration::from_secs(10))
    });
    assert!(out.expect("output").status.success());
}
