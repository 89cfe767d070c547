//! `patchwork-server`: a Patchwork node at work. It serves the local
//! `Directory` and `Admin` gRPC services and `Federation` to peers over its
//! own TLS acceptor with client certificates, checks every request (identity
//! from the certificate, deny by default, every field validated), answers
//! lookups locally and across the border, keeps team events and webhooks,
//! imports, health and metrics, and reloads its TLS material and federation
//! live. It sits on `store` (the only crate that names sled), `federation`,
//! `certs` and `proto`; only the `cli` crate and the tests sit on it.
//!
//! Folders are layers, each calling only the ones listed after it:
//! `server` (start and stop: wires everything) → `service` (the gRPC
//! handlers) → `work` (what the node does) → `transport` (TLS, access,
//! health, metrics) → `base` (config, errors, wire conversions).
//!
//! Entry points: [`run`] and [`run_with`] run a node; [`preflight`] makes
//! every check `serve` makes before it listens.
#![forbid(unsafe_code)]

pub mod base;
pub mod server;
pub(crate) mod service;
pub mod transport;
pub mod work;

pub use base::config::NodeConfig;
pub use base::error::{NodeError, read_private_key};
pub use server::{Listeners, Preflight, preflight, run, run_with};
