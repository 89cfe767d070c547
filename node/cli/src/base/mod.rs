//! The bottom of the crate: private files and folders (`quickstart`),
//! printing for an operator (`output`) and shutdown signals (`signals`).
//! Calls nothing else in the crate.

pub(crate) mod output;
pub mod quickstart;
pub(crate) mod signals;
