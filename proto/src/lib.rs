//! The `patchwork.v1` gRPC API: the `.proto` files under `proto/patchwork/v1`
//! and the prost/tonic code generated from them at build time. This crate has
//! no I/O and no logic; it sits at the bottom of the workspace next to `certs`
//! and knows nothing of it. Everything above speaks these types on the wire and
//! converts them to its own domain types at its edge.
#![forbid(unsafe_code)]

/// Generated code for the `patchwork.v1` package.
pub mod v1 {
    #![allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
    tonic::include_proto!("patchwork.v1");
}

/// The encoded `FileDescriptorSet` of every patchwork.v1 file, for gRPC server
/// reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/patchwork_descriptor.bin"));

/// The API package name as peers report it in `NodeInfo`.
pub const API_VERSION: &str = "patchwork.v1";
