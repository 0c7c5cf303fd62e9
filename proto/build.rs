//! Compiles `schema/cri.proto` with protox (a pure-Rust protobuf compiler, so
//! no `protoc` has to be installed) and generates the tonic client and server.

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=schema/cri.proto");
    let fds = protox::compile(["schema/cri.proto"], ["schema"])?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    // The encoded descriptor set lets tests (and later gRPC reflection) see
    // exactly what was compiled.
    std::fs::write(out.join("cri_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
