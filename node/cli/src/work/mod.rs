//! What the commands do beyond running a node: speak to one as a client
//! (`client`), answer an operator's questions offline (`operator`), write a
//! first configuration (`config_init`), read and write CSV rows
//! (`csv_rows`) and make synthetic councils (`synth`). May call `base`,
//! never `cli` or `demo`.

pub mod client;
pub(crate) mod config_init;
pub mod csv_rows;
pub(crate) mod operator;
pub mod synth;
