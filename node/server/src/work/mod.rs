//! What the node does, whichever service asked: matching and disclosure,
//! local and cross-border lookups, peers and their key sets, live reload,
//! imports (mirror imports included), team events and webhooks,
//! cross-border subscriptions, witnessing peers' audit logs (and signing
//! this node's checkpoints), erasure, the retention schedule, subject-access
//! reports and their offline proof, and the
//! state every handler shares (`state`: the one read and write path). Calls
//! `transport`, `base` and the crates below; never `service`.

pub(crate) mod disclosure;
pub(crate) mod erasure;
pub(crate) mod import;
pub(crate) mod lookup;
pub(crate) mod matching;
pub mod peers;
pub(crate) mod reload;
pub(crate) mod retention;
pub(crate) mod state;
pub mod subject_access;
pub(crate) mod subscriptions;
pub(crate) mod team;
pub mod witness;
