//! Federation logic for Patchwork nodes. This crate owns identifier normalisation,
//! blinded match keys (`matchkeys`) and the tokens a candidate is scored with
//! (`tokens`), the match decisions (`decide` on keys alone, `score` field by field), the
//! audit log's signed checkpoints and witnesses' cosignatures (`checkpoint`), the
//! peer registry, agreements, the fan-out client and inbound authorisation. It never touches sled or the file system: the `node` crate does
//! all storage and I/O and hands this crate plain values.
//!
//! The normal forms defined here (names, postcodes, national identifiers) are part of the
//! federation contract: match keys are derived from them, so two nodes only find the same
//! person if they normalise identically. See [`normalise`] and [`identifiers`].

#![forbid(unsafe_code)]

pub mod agreement;
pub mod breaker;
pub mod checkpoint;
pub mod decide;
pub mod fanout;
pub mod hostile;
pub mod identifiers;
pub mod keycheck;
pub mod matchkeys;
pub mod normalise;
pub mod score;
pub mod tokens;
pub mod transport;

pub use decide::{Candidate, Decision, decide};
pub use identifiers::{
    IdentifierError, NHS_SCHEME, nhs_number_is_valid, normalise_national_id, validate_scheme,
};
pub use matchkeys::{
    Digest, KeySet, MatchKeyError, Subject, index_keys, index_keys_v2, query_keys, query_keys_v2,
};
pub use normalise::{is_plausible_postcode, name_tokens, normalise_name, normalise_postcode};
pub use score::{Comparison, Level, Scored, Weights, compare, decide_scored, score};
pub use tokens::{SubjectTokens, subject_tokens};
