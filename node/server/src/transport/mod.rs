//! How bytes reach the node and how it reports on itself: the TLS acceptor
//! and the material in force (`tls`), who may call what (`access`), health
//! (`health`) and metrics (`metrics`). Calls `base` and the crates below;
//! never `work` or `service`.

pub(crate) mod access;
pub(crate) mod health;
pub mod metrics;
pub(crate) mod scrape;
pub mod tls;
