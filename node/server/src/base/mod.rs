//! The bottom layer of the server: the node's configuration, its error
//! type, the conversions between wire messages and domain records, and the
//! blocking pool's entry. Calls only the crates below (`store`, `federation`,
//! `certs`, `proto`), never `transport`, `work` or `service`.

pub mod config;
pub(crate) mod convert;
pub mod error;
pub(crate) mod pool;
pub mod validate;
