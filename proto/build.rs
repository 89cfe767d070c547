//! Compiles `patchwork/v1/*.proto` with protox (pure Rust, so no `protoc` is
//! needed on any machine) and generates prost messages and tonic services.

use std::path::PathBuf;

const PROTO_FILES: &[&str] = &[
    "patchwork/v1/common.proto",
    "patchwork/v1/records.proto",
    "patchwork/v1/directory.proto",
    "patchwork/v1/federation.proto",
    "patchwork/v1/admin.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for file in PROTO_FILES {
        println!("cargo:rerun-if-changed={file}");
    }
    let descriptors = protox::compile(PROTO_FILES, ["."])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    // Keep the encoded descriptor set: server reflection serves it.
    let descriptor_path = out_dir.join("patchwork_descriptor.bin");
    std::fs::write(
        &descriptor_path,
        prost::Message::encode_to_vec(&descriptors),
    )?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(descriptors)?;
    Ok(())
}
