//! Our schema must stay wire-identical to the upstream CRI: compiles the
//! upstream `api.proto` from the Go module cache and compares every service,
//! method, message, field and enum with what krio was built from.

use std::path::PathBuf;
use std::process::Command;

use prost::Message;
use prost_types::{FileDescriptorProto, FileDescriptorSet};

const MODULE: &str = "k8s.io/cri-api@v0.37.2";

/// Finds (downloading through the Go module proxy if needed) the upstream module.
fn upstream_dir() -> PathBuf {
    let go = ["/usr/local/go/bin/go", "go"]
        .into_iter()
        .find(|g| Command::new(g).arg("version").output().is_ok())
        .expect("the Go toolchain is needed to fetch the upstream CRI schema (setup installs it)");
    let out = Command::new(go)
        .args(["mod", "download", "-json", MODULE])
        .current_dir(std::env::temp_dir())
        .output()
        .expect("running go mod download");
    assert!(
        out.status.success(),
        "go mod download {MODULE} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("go mod download -json output");
    PathBuf::from(json["Dir"].as_str().expect("Dir in go mod download output"))
        .join("pkg/apis/runtime/v1")
}

fn comparable(mut file: FileDescriptorProto) -> FileDescriptorProto {
    file.name = Some("cri".into());
    file.source_code_info = None;
    file
}

fn ours() -> FileDescriptorProto {
    let set = FileDescriptorSet::decode(krio_proto::FILE_DESCRIPTOR_SET)
        .expect("decode our descriptor set");
    assert_eq!(set.file.len(), 1, "our schema is one file with no imports");
    comparable(set.file.into_iter().next().expect("one file"))
}

fn upstream() -> FileDescriptorProto {
    let dir = upstream_dir();
    let set = protox::compile(["api.proto"], [&dir]).expect("compile upstream api.proto");
    comparable(set.file.into_iter().next().expect("one file"))
}

fn methods(file: &FileDescriptorProto) -> Vec<String> {
    file.service
        .iter()
        .flat_map(|s| {
            s.method.iter().map(move |m| {
                format!(
                    "{}/{}({}{}) -> {}{}",
                    s.name(),
                    m.name(),
                    if m.client_streaming() { "stream " } else { "" },
                    m.input_type(),
                    if m.server_streaming() { "stream " } else { "" },
                    m.output_type()
                )
            })
        })
        .collect()
}

#[test]
fn services_and_methods_match_upstream() {
    let ours = methods(&ours());
    let theirs = methods(&upstream());
    assert_eq!(ours, theirs, "service/method list drifted from {MODULE}");
    // Both services, every RPC: 37 RuntimeService + 6 ImageService in v0.37.
    assert_eq!(ours.len(), 43);
}

#[test]
fn every_message_field_and_enum_matches_upstream() {
    let ours = ours();
    let theirs = upstream();
    assert_eq!(ours.package(), "runtime.v1");
    let names = |f: &FileDescriptorProto| {
        f.message_type
            .iter()
            .map(|m| m.name().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(names(&ours), names(&theirs), "message list drifted");
    for (a, b) in ours.message_type.iter().zip(&theirs.message_type) {
        assert_eq!(a, b, "message {} drifted from {MODULE}", a.name());
    }
    for (a, b) in ours.enum_type.iter().zip(&theirs.enum_type) {
        assert_eq!(a, b, "enum {} drifted from {MODULE}", a.name());
    }
    assert_eq!(ours, theirs, "file options or ordering drifted");
}
