//! What the node does, whichever service asked: matching and disclosure,
//! local and cross-border lookups, peers and their key sets, live reload,
//! imports, team events and webhooks, cross-border subscriptions, and the
//! state every handler shares (`state`: the one read and write path). Calls
//! `transport`, `base` and the crates below; never `service`.

pub mod disclosure;
pub mod import;
pub mod lookup;
pub mod matching;
pub mod peers;
pub mod reload;
pub mod state;
pub mod subscriptions;
pub mod team;
