//! The gRPC services a node serves (the top layer: handlers may call
//! everything in `work`, `transport` and `base`; nothing below calls them). Handlers
//! authorise the caller first (identity from the certificate), validate every
//! field, run store work on the blocking pool, and acknowledge a write only
//! after it is flushed to disk.

mod admin;
mod directory;
mod family;
mod federation;
mod team;

pub(crate) use admin::AdminService;
pub(crate) use directory::DirectoryService;
pub(crate) use federation::{FederationService, spawn_refusal_summaries, write_refusal_summaries};
