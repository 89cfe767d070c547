//! `patchwork-cli`: the `patchwork` binary and what it needs beyond a
//! running node: the command line (`cli`: serve, import, lookup, backup,
//! trust, certificates, reload...), the gRPC client it speaks as
//! (`client`), CSV rows and synthetic data (`csv_rows`, `synth`), first-run
//! set-up (`quickstart`, `config_init`, `operator`) and the demo (`demo`).
//! It sits on `server` (which it runs for `serve` and the demo), `store`
//! (offline backup, restore and audit reads), `federation`, `certs` and
//! `proto`; only the tests and the benchmark sit on it.
//!
//! Within the crate, `cli` and `demo` are the top; `client`, `operator`,
//! `config_init`, `output`, `signals`, `synth` and `csv_rows` are below
//! them; `quickstart` (private files and folders) is at the bottom.
#![forbid(unsafe_code)]

pub mod cli;
pub mod client;
pub(crate) mod config_init;
pub mod csv_rows;
pub mod demo;
pub(crate) mod operator;
pub(crate) mod output;
pub mod quickstart;
pub(crate) mod signals;
pub mod synth;
