//! `patchwork-linkage-eval`: how well a node finds the person asked about despite the
//! errors real records carry, and how rarely it finds someone else. It owns a seeded
//! synthetic population (`population`, with its `names`), a corruption model in the
//! manner of GeCo and FEBRL (`corrupt`), and the evaluation that asks an answering node
//! about each error class and about people it does not hold (`evaluate`). `blinded` is
//! the answering node of the federation's matching, in memory.
//!
//! It sits on `federation` (and `proto` for the kinds); the federation's own tests, the
//! CI evaluation at 20,000 persons and the benchmark at 1,000,000 sit on it. Nothing in
//! a node depends on it.
#![forbid(unsafe_code)]

pub mod blinded;
pub mod corrupt;
pub mod evaluate;
pub mod names;
pub mod population;
