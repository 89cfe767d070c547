//! `patchwork-cli`: the `patchwork` binary and what it needs beyond a
//! running node. It sits on `server` (which it runs for `serve` and the
//! demo), `store` (offline backup, restore and audit reads), `federation`,
//! `certs` and `proto`; only the tests and the benchmark sit on it.
//!
//! Its folders are layers; a file may call those below it, never above:
//! - `cli` (the command line: serve, import, lookup, backup, trust,
//!   certificates, reload...) and `demo` (two or three councils on this
//!   machine) are the top;
//! - `work/`: the gRPC client the commands speak as, the offline operator
//!   answers, first-run configuration, CSV rows and synthetic data;
//! - `base/`: private files and folders, operator output, signals.
#![forbid(unsafe_code)]

pub mod base;
pub mod cli;
pub mod demo;
pub mod work;
