//! The Kubernetes Container Runtime Interface, `runtime.v1`, as krio speaks it.
//!
//! `schema/cri.proto` is wire-compatible with `k8s.io/cri-api` v0.37.2; the
//! Rust types, the tonic servers (`runtime_service_server`,
//! `image_service_server`) and clients are generated from it at build time.

/// The generated `runtime.v1` package: messages, enums, clients and servers.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod runtime {
    /// `runtime.v1`.
    pub mod v1 {
        tonic::include_proto!("runtime.v1");
    }
}

pub use runtime::v1;

/// The upstream module and version this schema matches.
pub const UPSTREAM: &str = "k8s.io/cri-api@v0.37.2";

/// The encoded `FileDescriptorSet` of the compiled schema.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/cri_descriptor.bin"));
