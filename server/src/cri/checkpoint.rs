//! `CheckpointContainer`, `CheckpointPod`, `RestorePod`: not offered.
//! Checkpointing needs CRIU and an OCI runtime driving it; krio has no
//! checkpoint/restore path, so these answer `Unimplemented` with what is
//! missing (the kubelet reads that code as "not supported").

use std::path::PathBuf;

use crate::error::Error;

/// Where `criu` is on `PATH`, if anywhere.
fn criu_on_path() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("criu"))
        .find(|candidate| candidate.is_file())
}

/// The answer to checkpoint/restore RPC `rpc`.
pub fn unsupported(rpc: &str) -> Error {
    let missing = match criu_on_path() {
        None => "CRIU (criu) was not found in PATH, and krio does not implement checkpoint/restore"
            .to_owned(),
        Some(criu) => format!(
            "krio does not implement checkpoint/restore (CRIU is present at {})",
            criu.display()
        ),
    };
    Error::Unsupported(format!("RuntimeService/{rpc} is not supported: {missing}"))
}
