//! Federation logic for Patchwork nodes. This crate owns identifier normalisation and,
//! later, blinded match keys, the peer registry, agreements, the fan-out client and
//! inbound authorisation. It never touches sled or the file system: the `node` crate does
//! all storage and I/O and hands this crate plain values.
//!
//! The normal forms defined here (names, postcodes, national identifiers) are part of the
//! federation contract: match keys are derived from them, so two nodes only find the same
//! person if they normalise identically. See [`normalise`] and [`identifiers`].

#![forbid(unsafe_code)]

pub mod agreement;
pub mod breaker;
pub mod decide;
pub mod fanout;
pub mod hostile;
pub mod identifiers;
pub mod keycheck;
pub mod matchkeys;
pub mod normalise;
pub mod transport;

pub use decide::{Candidate, Decision, decide};
pub use identifiers::{
    IdentifierError, NHS_SCHEME, nhs_number_is_valid, normalise_national_id, validate_scheme,
};
pub use matchkeys::{Digest, KeySet, MatchKeyError, Subject, index_keys, query_keys};
pub use normalise::{is_plausible_postcode, name_tokens, normalise_name, normalise_postcode};
