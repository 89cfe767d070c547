//! The Patchwork node: everything that touches the disk, the network, the
//! environment and the command line. It holds one council's records in its
//! store (the only code that knows sled), validates every request at its
//! edge, serves the local `Directory` and `Admin` gRPC services over TLS with
//! client certificates (and, later, `Federation` to peers), and is the
//! `patchwork` binary. It sits on top of `proto`, `certs` and `federation`;
//! only `tests` depends on it.
//!
//! Entry points: [`server::run`] runs a node; [`cli::main`] is the binary.
#![forbid(unsafe_code)]

pub mod access;
pub mod cli;
pub mod client;
pub mod config;
pub mod config_init;
pub mod convert;
pub mod csv_rows;
pub mod demo;
pub mod disclosure;
pub mod health;
pub mod import;
pub mod lookup;
pub mod matching;
pub mod metrics;
pub mod model;
pub mod operator;
pub mod peers;
pub mod quickstart;
pub mod reload;
pub mod server;
pub mod service;
pub mod store;
pub mod subscriptions;
pub mod synth;
pub mod team;
pub mod tls;
pub mod validate;

pub use config::NodeConfig;
pub use server::{Listeners, NodeError, run, run_with};
