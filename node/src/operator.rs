//! The trust operator's commands: a region's certificate authority on disk
//! (`patchwork ca ...`) and a node's own key, requests and certificates
//! (`patchwork cert ...`).

use std::process::ExitCode;

use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum CaCommand {}

#[derive(Debug, Subcommand)]
pub enum CertCommand {}

pub fn run_ca(command: CaCommand) -> anyhow::Result<ExitCode> {
    match command {}
}

pub fn run_cert(command: CertCommand) -> anyhow::Result<ExitCode> {
    match command {}
}
