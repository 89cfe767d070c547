//! Blinded match keys: the keyed hashes a node sends instead of a person's demographics,
//! and the same keys an answering node indexes its own persons by.
//!
//! A key is HMAC-SHA256, under the secret of a [`KeySet`] (shared by the group of nodes
//! that agreed on it), of a *pre-image*: a versioned string built from normalised
//! identifiers. A peer without the secret learns nothing readable from a key; a peer with
//! it learns only whether it holds someone whose identifiers give the same string.
//!
//! # The contract
//!
//! Two nodes find the same person only if they build byte-identical pre-images, so
//! everything below is part of the federation wire contract. **Changing any rule (a
//! normal form, the given-name table, the particle list, the phonetic algorithm or its
//! code length, a field order) changes keys and needs a new version prefix (`v2|...`)
//! and a period in which nodes index under both.** A quiet edit silently stops matches
//! between nodes running different versions.
//!
//! ## Normal forms of the fields
//!
//! - `given`: the first word of [`normalise_name`](crate::normalise::normalise_name) of the given name, replaced by the
//!   formal name if the table below lists it. Empty means absent.
//! - `family`: the words of [`normalise_name`](crate::normalise::normalise_name) of the family name (see [`name_tokens`])
//!   concatenated without spaces: `Smith-Jones`, `Smith Jones` and `SmithJones` all give
//!   `smithjones`; `O'Brien` and `O Brien` give `obrien`. Empty means absent.
//! - family *tokens* (for the per-token keys): the words of the family name, leaving out
//!   the particles `al ap bin da das de del della den der di do dos du el ibn la le van
//!   von` unless nothing else is left, duplicates removed, at most the first 4; then,
//!   when the name has two or more words, the concatenated `family` too. So `Smith-Jones`
//!   has tokens `smith`, `jones`, `smithjones`, and `de Souza` has `souza`, `desouza`.
//! - `dob`: `yyyy-mm-dd` (four-digit zero-padded year). Only real Gregorian dates in years
//!   1 to 9999 count; any other date is absent.
//! - `postcode`: [`normalise_postcode`], used only with 3 to 10 characters and when it is
//!   not a "no fixed abode" placeholder (starting `ZZ99`, or exactly `NFA`), which would
//!   join unrelated people.
//! - national id: `(scheme, value)` through [`normalise_national_id`]: lowercase scheme,
//!   value in its normal form; an id that fails it is absent.
//! - `phon(x)`: the primary Double Metaphone code of `x` (Philips' algorithm as in Apache
//!   commons-codec, from the `rphonetic` crate), at most [`PHONETIC_CODE_LEN`]
//!   characters. It tells `sam` (`SM`) from `sean` (`SN`), unlike Soundex. A token whose
//!   code is empty gives no phonetic key.
//!
//! The given-name table maps each of these to the first name of its line (only forms that
//! stand for a single name; `alex`, `sam`, `chris`, `jo`, `jon`, `pat`, `ed`, `charlie`,
//! `beth`, `nicky`, `jamie`, `harry` and `liam` are deliberately absent):
//! andrew: andy · anthony: tony · benjamin: ben · daniel: dan danny · david: dave davy ·
//! elizabeth: liz lizzie lizzy betsy · james: jim jimmy · jennifer: jenny · joseph: joe joey ·
//! margaret: maggie peggy · matthew: matt · michael: mike mikey mick · nicholas: nick ·
//! rebecca: becky becca · robert: bob bobby rob robbie · susan: sue · thomas: tom tommy ·
//! victoria: vicky · william: bill billy will willy · barbara: basia · bartosz: bartek ·
//! jakub: kuba · katarzyna: kasia · malgorzata: gosia · tomasz: tomek · wojciech: wojtek ·
//! aidan: aiden · ahmed: ahmad · aisha: ayesha aysha · hannah: hanna · hussain: hussein
//! husain · isabel: isabelle isobel · jayden: jaden jaiden · katherine: kate katie kathryn
//! catherine katharine catharine cathy kathy · lily: lilly lillie · mohammed: muhammad muhammed
//! mohammad mohamed mohamad · sean: shaun shawn · sophie: sofie · stephen: steve stevie
//! steven · zoe: zoey.
//!
//! ## Pre-images
//!
//! Fields are joined with `|`, which no normalised field can contain.
//!
//! | kind | pre-image | for |
//! |---|---|---|
//! | `NATIONAL_ID` | `v1\|nid\|{scheme}\|{value}` | the id |
//! | `NAMES_DOB` | `v1\|nd\|{given}\|{family}\|{dob}` | given, family and dob |
//! | `PHONETIC_FAMILY_DOB` | `v1\|pfd\|{phon(token)}\|{dob}` | each family token, with dob |
//! | `PHONETIC_NAMES_POSTCODE` | `v1\|pnp\|{given}\|{phon(token)}\|{postcode}` | each family token, with given and postcode |
//! | `SWAPPED_NAMES_DOB` (query only) | `v1\|nd\|{given of the family field}\|{family of the given field}\|{dob}` | both names and dob, when it differs from `NAMES_DOB` |
//! | `PHONETIC_NAMES_POSTCODE` (query only, swapped) | `v1\|pnp\|{given of the family field}\|{phon(token of the given field)}\|{postcode}` | as above, with the fields swapped |
//! | `NAMES_DOB_TRANSPOSED` (query only) | `v1\|nd\|{given}\|{family}\|{yyyy-dd-mm}` | as `NAMES_DOB`, when day ≠ month and the swap is a real date |
//! | `POSTCODE_DOB` (version 2) | `v2\|pd\|{postcode}\|{dob}` | postcode and dob, no name |
//!
//! `PHONETIC_NAMES_POSTCODE` keeps the *given* name exact and only the family name
//! phonetic. A phonetic given name would make twins with sound-alike names (Jack and
//! Jake, Hassan and Hussain, Daniel and Danielle: identical in Double Metaphone) look like
//! one child with a typo, and the first evaluation measured exactly that: 17 of 669
//! same-birthday look-alike siblings disclosed as the indexed twin.
//!
//! The four stored kinds are domain-separated by their tags (`nid`, `nd`, `pfd`, `pnp`,
//! each followed by `|`, and no normalised field contains `|`), so a digest of one kind
//! never equals a digest of another. The query-only keys deliberately reuse the `nd` and
//! `pnp` tags: their digest collides with the key an answering node indexed for a person
//! whose record holds the names the other way round, or the day and month swapped. The
//! answering node counts a hit under the kind *it stored*; a query's label may only
//! weaken it (a transposed date), never strengthen it
//! ([`effective_kind`](crate::decide::effective_kind)).
//!
//! Keys come in the order of the table, tokens in token order; each digest appears once
//! (the first kind that produced it wins). A kind may appear several times (one key per
//! family token), which the "at most one per kind" note on `FindInvolvementsRequest` in
//! the proto does not yet allow for. A query has at most 1 + 1 + 5 + 5 + 1 + 5 + 1 = 19
//! keys in version 1 and 20 in version 2, within [`MAX_QUERY_KEYS`]; a person at most 12
//! index entries in version 1 and 13 in version 2.

use std::fmt;

use patchwork_proto::v1::MatchKeyKind;
use ring::hmac;
use rphonetic::{DoubleMetaphone, Encoder};

use crate::identifiers::{normalise_national_id, validate_scheme};
use crate::normalise::{name_tokens, normalise_postcode};

/// An HMAC-SHA256 output: one blinded match key.
pub type Digest = [u8; 32];

/// The version prefix of every pre-image.
pub const MATCH_KEY_VERSION: &str = "v1";

/// The most keys [`query_keys`] returns (the wire limit of a request).
pub const MAX_QUERY_KEYS: usize = 32;

/// The shortest secret a [`KeySet`] accepts, in bytes (the HMAC-SHA256 output size).
pub const MIN_SECRET_LEN: usize = 32;

/// What a key set's [`KeySet::fingerprint`] is the MAC of (part of the
/// federation contract: peers compare fingerprints).
pub const FINGERPRINT_LABEL: &str = "patchwork key-set fingerprint v1";

/// The length a Double Metaphone code is capped at (part of the contract).
pub const PHONETIC_CODE_LEN: usize = 4;

const MAX_KEY_SET_NAME_LEN: usize = 64;

/// The shortest normalised postcode that names a street rather than a suburb
/// (`RH11AA`, not `3056`): only those are selective enough to block on with a
/// given name alone, and to have a district.
pub const UNIT_POSTCODE_LEN: usize = 5;
const MAX_FAMILY_TOKENS: usize = 4;

/// Family-name words that are not distinctive on their own.
const PARTICLES: &[&str] = &[
    "al", "ap", "bin", "da", "das", "de", "del", "della", "den", "der", "di", "do", "dos", "du",
    "el", "ibn", "la", "le", "van", "von",
];

/// Unambiguous nicknames and spelling variants of given names, after the formal name
/// they stand for (the formal name maps to itself).
const CANONICAL_GIVEN: &[(&str, &[&str])] = &[
    // Nicknames.
    ("andrew", &["andy"]),
    ("anthony", &["tony"]),
    ("benjamin", &["ben"]),
    ("daniel", &["dan", "danny"]),
    ("david", &["dave", "davy"]),
    ("elizabeth", &["liz", "lizzie", "lizzy", "betsy"]),
    ("james", &["jim", "jimmy"]),
    ("jennifer", &["jenny"]),
    ("joseph", &["joe", "joey"]),
    ("margaret", &["maggie", "peggy"]),
    ("matthew", &["matt"]),
    ("michael", &["mike", "mikey", "mick"]),
    ("nicholas", &["nick"]),
    ("rebecca", &["becky", "becca"]),
    ("robert", &["bob", "bobby", "rob", "robbie"]),
    ("susan", &["sue"]),
    ("thomas", &["tom", "tommy"]),
    ("victoria", &["vicky"]),
    ("william", &["bill", "billy", "will", "willy"]),
    // Polish diminutives.
    ("barbara", &["basia"]),
    ("bartosz", &["bartek"]),
    ("jakub", &["kuba"]),
    ("katarzyna", &["kasia"]),
    ("malgorzata", &["gosia"]),
    ("tomasz", &["tomek"]),
    ("wojciech", &["wojtek"]),
    // Spellings of one name.
    ("aidan", &["aiden"]),
    ("ahmed", &["ahmad"]),
    ("aisha", &["ayesha", "aysha"]),
    ("hannah", &["hanna"]),
    ("hussain", &["hussein", "husain"]),
    ("isabel", &["isabelle", "isobel"]),
    ("jayden", &["jaden", "jaiden"]),
    (
        "katherine",
        &[
            "kate",
            "katie",
            "kathryn",
            "catherine",
            "katharine",
            "catharine",
            "cathy",
            "kathy",
        ],
    ),
    ("lily", &["lilly", "lillie"]),
    (
        "mohammed",
        &["muhammad", "muhammed", "mohammad", "mohamed", "mohamad"],
    ),
    ("sean", &["shaun", "shawn"]),
    ("sophie", &["sofie"]),
    ("stephen", &["steve", "stevie", "steven"]),
    ("zoe", &["zoey"]),
];

/// The identifiers of one person, as a node holds them (raw; this module normalises).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Subject {
    /// Given name(s) as entered.
    pub given_name: Option<String>,
    /// Family name as entered.
    pub family_name: Option<String>,
    /// `(year, month, day)`.
    pub date_of_birth: Option<(i32, u32, u32)>,
    /// Postcode as entered.
    pub postcode: Option<String>,
    /// `(scheme, value)`; normalised again here, and dropped if invalid.
    pub national_id: Option<(String, String)>,
}

/// Why a [`KeySet`] was refused.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum MatchKeyError {
    /// The name is empty, too long, or has a character outside `a`–`z`, `0`–`9`, `-`.
    #[error("key set name must be 1-64 characters of a-z, 0-9 and '-'")]
    InvalidName,
    /// The secret is shorter than [`MIN_SECRET_LEN`].
    #[error("key set {name} secret must be at least 32 bytes, got {len}")]
    SecretTooShort {
        /// The key set's name (not secret).
        name: String,
        /// The length given.
        len: usize,
    },
}

/// A named match-key secret shared by a group of nodes. Its `Debug` never shows the secret.
#[derive(Clone)]
pub struct KeySet {
    name: String,
    key: hmac::Key,
}

impl KeySet {
    /// A key set called `name` (1-64 of `a`–`z`, `0`–`9`, `-`) with `secret` (at least
    /// [`MIN_SECRET_LEN`] bytes).
    pub fn new(name: &str, secret: &[u8]) -> Result<Self, MatchKeyError> {
        let name_ok = (1..=MAX_KEY_SET_NAME_LEN).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !name_ok {
            return Err(MatchKeyError::InvalidName);
        }
        if secret.len() < MIN_SECRET_LEN {
            return Err(MatchKeyError::SecretTooShort {
                name: name.to_owned(),
                len: secret.len(),
            });
        }
        Ok(Self {
            name: name.to_owned(),
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
        })
    }

    /// The key set's name, as carried in a request's `key_set` field.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Identifies the secret without revealing it, for two nodes to compare:
    /// the first 8 bytes, hex, of HMAC-SHA256 of [`FINGERPRINT_LABEL`] under
    /// the secret. The label starts with no version prefix, so it is never a
    /// match-key pre-image, and 64 bits of one MAC help no one guess a
    /// secret of 256 random bits.
    pub fn fingerprint(&self) -> String {
        let tag = hmac::sign(&self.key, FINGERPRINT_LABEL.as_bytes());
        hex::encode(&tag.as_ref()[..8])
    }

    fn digest(&self, preimage: &str) -> Digest {
        let tag = hmac::sign(&self.key, preimage.as_bytes());
        let mut out = [0_u8; 32];
        // HMAC-SHA256 tags are exactly 32 bytes.
        out.copy_from_slice(tag.as_ref());
        out
    }
}

impl fmt::Debug for KeySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeySet")
            .field("name", &self.name)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// The keys an answering node stores for one of its persons: `NATIONAL_ID`, `NAMES_DOB`,
/// and `PHONETIC_FAMILY_DOB` and `PHONETIC_NAMES_POSTCODE` per family token.
pub fn index_keys(set: &KeySet, subject: &Subject) -> Vec<(MatchKeyKind, Digest)> {
    digests(set, preimages(subject, Side::Index, Version::V1))
}

/// The keys an answering node stores for one of its persons in version 2: the
/// [`index_keys`] and `POSTCODE_DOB`, the blocking key without a name.
pub fn index_keys_v2(set: &KeySet, subject: &Subject) -> Vec<(MatchKeyKind, Digest)> {
    digests(set, preimages(subject, Side::Index, Version::V2))
}

/// The keys an asking node sends in version 2: [`query_keys`] and the blocking keys
/// of [`index_keys_v2`]. At most 20.
pub fn query_keys_v2(set: &KeySet, subject: &Subject) -> Vec<(MatchKeyKind, Digest)> {
    let mut keys = digests(set, preimages(subject, Side::Query, Version::V2));
    keys.truncate(MAX_QUERY_KEYS);
    keys
}

/// The keys an asking node sends for a subject: the index keys plus
/// `SWAPPED_NAMES_DOB`, `PHONETIC_NAMES_POSTCODE` of the swapped names, and
/// `NAMES_DOB_TRANSPOSED`. At most [`MAX_QUERY_KEYS`] (19 in the worst case).
pub fn query_keys(set: &KeySet, subject: &Subject) -> Vec<(MatchKeyKind, Digest)> {
    let mut keys = digests(set, preimages(subject, Side::Query, Version::V1));
    keys.truncate(MAX_QUERY_KEYS);
    keys
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Index,
    Query,
}

/// Version 1 keys alone, or with version 2's blocking keys.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Version {
    V1,
    V2,
}

fn digests(set: &KeySet, preimages: Vec<(MatchKeyKind, String)>) -> Vec<(MatchKeyKind, Digest)> {
    let mut out: Vec<(MatchKeyKind, Digest)> = Vec::with_capacity(preimages.len());
    for (kind, preimage) in preimages {
        let digest = set.digest(&preimage);
        // Each digest once (peers refuse a repeated digest); the first kind wins.
        if !out.iter().any(|(_, seen)| *seen == digest) {
            out.push((kind, digest));
        }
    }
    out
}

/// The pre-images of a subject, in contract order, possibly with duplicates.
fn preimages(subject: &Subject, side: Side, version: Version) -> Vec<(MatchKeyKind, String)> {
    let v = MATCH_KEY_VERSION;
    let given = subject.given_name.as_deref().and_then(given_form);
    let family = subject.family_name.as_deref().and_then(family_form);
    let dob = subject
        .date_of_birth
        .and_then(|(y, m, d)| date_form(y, m, d));
    let postcode = subject.postcode.as_deref().and_then(postcode_form);
    let national_id = subject.national_id.as_ref().and_then(|(scheme, value)| {
        let value = normalise_national_id(scheme, value).ok()?;
        Some((validate_scheme(scheme).ok()?, value))
    });

    let mut out = Vec::new();
    if let Some((scheme, value)) = &national_id {
        out.push((
            MatchKeyKind::NationalId,
            format!("{v}|nid|{scheme}|{value}"),
        ));
    }
    let names_dob = match (&given, &family, &dob) {
        (Some(given), Some(family), Some(dob)) => Some(format!("{v}|nd|{given}|{family}|{dob}")),
        _ => None,
    };
    if let Some(names_dob) = &names_dob {
        out.push((MatchKeyKind::NamesDob, names_dob.clone()));
    }
    let family_codes = subject
        .family_name
        .as_deref()
        .map(family_token_codes)
        .unwrap_or_default();
    if let Some(dob) = &dob {
        for code in &family_codes {
            out.push((
                MatchKeyKind::PhoneticFamilyDob,
                format!("{v}|pfd|{code}|{dob}"),
            ));
        }
    }
    if let (Some(given), Some(postcode)) = (&given, &postcode) {
        for code in &family_codes {
            out.push((
                MatchKeyKind::PhoneticNamesPostcode,
                format!("{v}|pnp|{given}|{code}|{postcode}"),
            ));
        }
    }
    // Version 2's blocking key leaves out what every key above needs: a name.
    // The evaluation measured the others tried (a phonetic given name with the
    // birth date; names with the birth year, or with the month and day; a given
    // name with a unit postcode): none found anyone this one and the scoring's
    // guards did not, and each cost import time.
    let v2 = version == Version::V2;
    if let (true, Some(postcode), Some(dob)) = (v2, &postcode, &dob) {
        out.push((MatchKeyKind::PostcodeDob, format!("v2|pd|{postcode}|{dob}")));
    }
    if side == Side::Index {
        return out;
    }

    // The names as they would read had the other node's record swapped them.
    let swapped_given = subject.family_name.as_deref().and_then(given_form);
    let swapped_family = subject.given_name.as_deref().and_then(family_form);
    if let (Some(g), Some(f), Some(dob)) = (&swapped_given, &swapped_family, &dob) {
        let swapped = format!("{v}|nd|{g}|{f}|{dob}");
        if names_dob.as_ref() != Some(&swapped) {
            out.push((MatchKeyKind::SwappedNamesDob, swapped));
        }
    }
    if let (Some(g), Some(postcode)) = (&swapped_given, &postcode) {
        let codes = subject
            .given_name
            .as_deref()
            .map(family_token_codes)
            .unwrap_or_default();
        for code in codes {
            out.push((
                MatchKeyKind::PhoneticNamesPostcode,
                format!("{v}|pnp|{g}|{code}|{postcode}"),
            ));
        }
    }
    if let (Some(given), Some(family), Some((y, m, d))) = (&given, &family, subject.date_of_birth)
        && names_dob.is_some()
        && m != d
        && let Some(transposed) = date_form(y, d, m)
    {
        out.push((
            MatchKeyKind::NamesDobTransposed,
            format!("{v}|nd|{given}|{family}|{transposed}"),
        ));
    }
    out
}

/// The `given` normal form: first word, then the given-name table.
pub(crate) fn given_form(raw: &str) -> Option<String> {
    let first = name_tokens(raw).into_iter().next()?;
    Some(canonical_given(&first).to_owned())
}

fn canonical_given(word: &str) -> &str {
    CANONICAL_GIVEN
        .iter()
        .find(|(_, others)| others.contains(&word))
        .map_or(word, |(formal, _)| formal)
}

/// The `family` normal form: all words, concatenated.
pub(crate) fn family_form(raw: &str) -> Option<String> {
    let joined = name_tokens(raw).concat();
    (!joined.is_empty()).then_some(joined)
}

/// The phonetic codes of the family tokens, in token order, empty codes left out.
fn family_token_codes(raw: &str) -> Vec<String> {
    family_tokens(&name_tokens(raw))
        .iter()
        .map(|token| phonetic(token))
        .filter(|code| !code.is_empty())
        .collect()
}

fn family_tokens(words: &[String]) -> Vec<String> {
    let distinctive: Vec<&String> = words
        .iter()
        .filter(|w| !PARTICLES.contains(&w.as_str()))
        .collect();
    let chosen: Vec<&String> = if distinctive.is_empty() {
        words.iter().collect()
    } else {
        distinctive
    };
    let mut tokens: Vec<String> = Vec::new();
    for word in chosen {
        if tokens.len() == MAX_FAMILY_TOKENS {
            break;
        }
        if !tokens.contains(word) {
            tokens.push(word.clone());
        }
    }
    if words.len() >= 2 {
        let joined = words.concat();
        if !tokens.contains(&joined) {
            tokens.push(joined);
        }
    }
    tokens
}

pub(crate) fn phonetic(word: &str) -> String {
    DoubleMetaphone::new(Some(PHONETIC_CODE_LEN)).encode(word)
}

pub(crate) fn postcode_form(raw: &str) -> Option<String> {
    let postcode = normalise_postcode(raw);
    let placeholder = postcode.starts_with("ZZ99") || postcode == "NFA";
    ((3..=10).contains(&postcode.len()) && !placeholder).then_some(postcode)
}

/// `yyyy-mm-dd` for a real calendar date in years 1 to 9999.
pub(crate) fn date_form(year: i32, month: u32, day: u32) -> Option<String> {
    if !(1..=9999).contains(&year) || !(1..=12).contains(&month) {
        return None;
    }
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let days_in_month = match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    };
    (1..=days_in_month)
        .contains(&day)
        .then(|| format!("{year:04}-{month:02}-{day:02}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set() -> KeySet {
        KeySet::new("test-set", &[7_u8; 32]).expect("a valid key set")
    }

    #[test]
    fn a_fingerprint_is_16_hex_digits_equal_for_equal_secrets_only() {
        let same = KeySet::new("other-name", &[7_u8; 32]).expect("set");
        let other = KeySet::new("test-set", &[8_u8; 32]).expect("set");
        let fingerprint = set().fingerprint();
        assert_eq!(fingerprint.len(), 16);
        assert!(fingerprint.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(fingerprint, same.fingerprint());
        assert_ne!(fingerprint, other.fingerprint());
        // Not the prefix of any match key the set makes.
        let keys = index_keys(&set(), &subject("Ann", "Smith", (2010, 1, 2), "SW1A 1AA"));
        for (_, digest) in keys {
            let hex = hex::encode(&digest[..8]);
            assert_ne!(hex, fingerprint);
        }
    }

    fn subject(given: &str, family: &str, dob: (i32, u32, u32), postcode: &str) -> Subject {
        Subject {
            given_name: Some(given.to_owned()),
            family_name: Some(family.to_owned()),
            date_of_birth: Some(dob),
            postcode: Some(postcode.to_owned()),
            national_id: None,
        }
    }

    fn strings(subject: &Subject, side: Side) -> Vec<String> {
        strings_of(subject, side, Version::V1)
    }

    fn strings_of(subject: &Subject, side: Side, version: Version) -> Vec<String> {
        preimages(subject, side, version)
            .into_iter()
            .map(|(kind, p)| format!("{}:{p}", kind.as_str_name()))
            .collect()
    }

    #[test]
    fn stored_kinds_are_domain_separated_by_tag() {
        // Every index pre-image of a kind starts with that kind's tag and only that one,
        // so no digest of one stored kind can equal a digest of another (the answering
        // node trusts the stored kind, not the query's label).
        let tag = |kind: MatchKeyKind| match kind {
            MatchKeyKind::NationalId => "v1|nid|",
            MatchKeyKind::NamesDob => "v1|nd|",
            MatchKeyKind::PhoneticFamilyDob => "v1|pfd|",
            MatchKeyKind::PhoneticNamesPostcode => "v1|pnp|",
            MatchKeyKind::PostcodeDob => "v2|pd|",
            other => panic!("{other:?} is never stored"),
        };
        let mut full = subject("Amelia", "Smith-Jones", (2015, 3, 14), "GU1 1AA");
        full.national_id = Some(("nhs".into(), "943 476 5919".into()));
        // Field values made of the other kinds' tags cannot forge a tag either:
        // normalisation drops `|`.
        let forged = subject("pfd|x", "nid|nhs|9434765919", (2015, 3, 14), "nd|1");
        for s in [&full, &forged] {
            for (kind, preimage) in preimages(s, Side::Index, Version::V2) {
                assert!(preimage.starts_with(tag(kind)), "{kind:?}: {preimage}");
                let rest = &preimage[tag(kind).len()..];
                assert_eq!(
                    rest.matches('|').count(),
                    match kind {
                        MatchKeyKind::NationalId => 1,
                        MatchKeyKind::NamesDob | MatchKeyKind::PhoneticNamesPostcode => 2,
                        _ => 1,
                    },
                    "{kind:?}: fields never contain the separator: {preimage}"
                );
            }
        }
    }

    #[test]
    fn key_set_validation() {
        assert!(KeySet::new("surrey-brighton-2025", &[1; 32]).is_ok());
        assert!(KeySet::new(&"a".repeat(64), &[1; 64]).is_ok());
        for bad in ["", "Surrey", "a b", "a_b", "é", &"a".repeat(65)] {
            assert_eq!(
                KeySet::new(bad, &[1; 32]).map(|_| ()),
                Err(MatchKeyError::InvalidName),
                "{bad:?}"
            );
        }
        let err = KeySet::new("s", &[1; 31]).map(|_| ());
        assert_eq!(
            err,
            Err(MatchKeyError::SecretTooShort {
                name: "s".to_owned(),
                len: 31
            })
        );
        assert_eq!(
            err.expect_err("a short secret is refused").to_string(),
            "key set s secret must be at least 32 bytes, got 31"
        );
    }

    #[test]
    fn debug_hides_the_secret() {
        let set = KeySet::new("s", b"super-secret-value-that-is-long!").expect("valid");
        let shown = format!("{set:?}");
        assert_eq!(shown, r#"KeySet { name: "s", secret: "<redacted>" }"#);
        assert_eq!(set.name(), "s");
    }

    /// The pre-images are the cross-node contract: this table pins them.
    #[test]
    fn preimage_contract() {
        let mut s = subject("Bill", "O'Brien-Kowalski", (2014, 3, 7), " rh1 1aa");
        s.national_id = Some(("NHS".to_owned(), "943 476 5919".to_owned()));
        assert_eq!(
            strings(&s, Side::Query),
            [
                "MATCH_KEY_KIND_NATIONAL_ID:v1|nid|nhs|9434765919",
                "MATCH_KEY_KIND_NAMES_DOB:v1|nd|william|obrienkowalski|2014-03-07",
                "MATCH_KEY_KIND_PHONETIC_FAMILY_DOB:v1|pfd|APRN|2014-03-07",
                "MATCH_KEY_KIND_PHONETIC_FAMILY_DOB:v1|pfd|KLSK|2014-03-07",
                "MATCH_KEY_KIND_PHONETIC_FAMILY_DOB:v1|pfd|APRN|2014-03-07",
                "MATCH_KEY_KIND_PHONETIC_NAMES_POSTCODE:v1|pnp|william|APRN|RH11AA",
                "MATCH_KEY_KIND_PHONETIC_NAMES_POSTCODE:v1|pnp|william|KLSK|RH11AA",
                "MATCH_KEY_KIND_PHONETIC_NAMES_POSTCODE:v1|pnp|william|APRN|RH11AA",
                "MATCH_KEY_KIND_SWAPPED_NAMES_DOB:v1|nd|obrien|bill|2014-03-07",
                "MATCH_KEY_KIND_PHONETIC_NAMES_POSTCODE:v1|pnp|obrien|PL|RH11AA",
                "MATCH_KEY_KIND_NAMES_DOB_TRANSPOSED:v1|nd|william|obrienkowalski|2014-07-03",
            ]
        );
        // The index side has no query-only kinds, and duplicates are removed.
        let set = set();
        let index = index_keys(&set, &s);
        let kinds: Vec<_> = index.iter().map(|(k, _)| k.as_str_name()).collect();
        assert_eq!(
            kinds,
            [
                "MATCH_KEY_KIND_NATIONAL_ID",
                "MATCH_KEY_KIND_NAMES_DOB",
                "MATCH_KEY_KIND_PHONETIC_FAMILY_DOB",
                "MATCH_KEY_KIND_PHONETIC_FAMILY_DOB",
                "MATCH_KEY_KIND_PHONETIC_NAMES_POSTCODE",
                "MATCH_KEY_KIND_PHONETIC_NAMES_POSTCODE",
            ]
        );
    }

    /// A digest test vector, for implementations in other languages.
    #[test]
    fn digest_test_vector() {
        let set = KeySet::new("test-set", &[0x0b_u8; 32]).expect("valid");
        let digest = set.digest("v1|nd|william|smith|2014-03-07");
        let hex = hex::encode(digest);
        assert_eq!(hex, TEST_VECTOR_HEX);
    }

    /// HMAC-SHA256 with key 32 × 0x0b of the pre-image above (checked with Python's `hmac`).
    const TEST_VECTOR_HEX: &str =
        "49a636488f4b7b12a61fb16d154ae3bb331fa7db305b7c540256a2fa2f879c02";

    #[test]
    fn phonetic_codes_tell_similar_names_apart() {
        assert_ne!(phonetic("sam"), phonetic("sean"));
        assert_eq!(phonetic("smith"), phonetic("smyth"));
        assert_eq!(phonetic("mohammed"), phonetic("muhammad"));
        assert!(phonetic("").is_empty());
    }

    #[test]
    fn names_are_normalised_before_hashing() {
        let set = set();
        let a = subject("  WILLIAM ", "O’Brien", (2010, 12, 1), "RH1 1AA");
        let b = subject("bill", "obrien", (2010, 12, 1), "rh11aa");
        assert_eq!(index_keys(&set, &a), index_keys(&set, &b));
        let c = subject("Zoë", "Smith-Jones", (2010, 12, 1), "RH1 1AA");
        let d = subject("zoe", "Smith Jones", (2010, 12, 1), "RH1 1AA");
        assert_eq!(query_keys(&set, &c), query_keys(&set, &d));
    }

    #[test]
    fn either_half_of_a_double_barrelled_name_matches() {
        let set = set();
        let index = index_keys(
            &set,
            &subject("Amy", "Smith-Jones", (2012, 5, 9), "BN1 1AA"),
        );
        for half in ["Jones", "Smith", "SmithJones"] {
            let query = query_keys(&set, &subject("Amy", half, (2012, 5, 9), "BN1 1AA"));
            let hits: Vec<_> = query
                .iter()
                .filter(|q| index.iter().any(|i| i.1 == q.1))
                .map(|q| q.0)
                .collect();
            assert!(hits.contains(&MatchKeyKind::PhoneticFamilyDob), "{half}");
            assert!(
                hits.contains(&MatchKeyKind::PhoneticNamesPostcode),
                "{half}"
            );
        }
    }

    #[test]
    fn swapped_and_transposed_keys_collide_with_the_index() {
        let set = set();
        let index = index_keys(&set, &subject("Tom", "Walsh", (2011, 4, 9), ""));
        let nd = index
            .iter()
            .find(|(k, _)| *k == MatchKeyKind::NamesDob)
            .map(|(_, d)| *d);
        let swapped = query_keys(&set, &subject("Walsh", "Thomas", (2011, 4, 9), ""));
        let hit = swapped
            .iter()
            .find(|(k, _)| *k == MatchKeyKind::SwappedNamesDob)
            .map(|(_, d)| *d);
        assert_eq!(hit, nd);
        let transposed = query_keys(&set, &subject("Tom", "Walsh", (2011, 9, 4), ""));
        let hit = transposed
            .iter()
            .find(|(k, _)| *k == MatchKeyKind::NamesDobTransposed)
            .map(|(_, d)| *d);
        assert_eq!(hit, nd);
    }

    #[test]
    fn missing_or_unusable_fields_give_no_keys() {
        let set = set();
        assert!(query_keys(&set, &Subject::default()).is_empty());
        // Names in a non-Latin script normalise to nothing.
        let s = subject("Иван", "李", (2011, 2, 30), "ZZ99 3VZ");
        assert!(query_keys(&set, &s).is_empty());
        let mut s = subject("", "", (2011, 2, 28), "N");
        s.national_id = Some(("nhs".to_owned(), "9434765918".to_owned()));
        assert!(query_keys(&set, &s).is_empty(), "bad check digit");
        // No transposed key when day equals month or the swap is not a date.
        for dob in [(2011, 3, 3), (2011, 3, 13)] {
            let keys = query_keys(&set, &subject("Ann", "Lee", dob, ""));
            assert!(
                keys.iter()
                    .all(|(k, _)| *k != MatchKeyKind::NamesDobTransposed),
                "{dob:?}"
            );
        }
        // No swapped key when it would equal the names key.
        let keys = query_keys(&set, &subject("Thomas", "Thomas", (2011, 3, 3), ""));
        assert!(
            keys.iter()
                .all(|(k, _)| *k != MatchKeyKind::SwappedNamesDob)
        );
    }

    #[test]
    fn date_forms() {
        assert_eq!(date_form(2024, 2, 29).as_deref(), Some("2024-02-29"));
        assert_eq!(date_form(2000, 2, 29).as_deref(), Some("2000-02-29"));
        assert_eq!(date_form(1900, 2, 29), None);
        assert_eq!(date_form(2023, 2, 29), None);
        assert_eq!(date_form(2023, 4, 31), None);
        assert_eq!(date_form(2023, 13, 1), None);
        assert_eq!(date_form(2023, 0, 1), None);
        assert_eq!(date_form(0, 1, 1), None);
        assert_eq!(date_form(812, 1, 1).as_deref(), Some("0812-01-01"));
    }

    #[test]
    fn key_count_stays_under_the_wire_limit() {
        // Many distinct words in both name fields: the worst case.
        let mut s = subject(
            "Ann Bell Cole Dunn Eve Ford",
            "de la Smith Jones Brown Green White Black",
            (2011, 3, 4),
            "RH1 1AA",
        );
        s.national_id = Some(("vic-crn".to_owned(), "ab12".to_owned()));
        let keys = query_keys(&set(), &s);
        assert_eq!(keys.len(), 19);
        assert!(keys.len() <= MAX_QUERY_KEYS);
        let distinct: std::collections::HashSet<_> = keys.iter().map(|(_, d)| d).collect();
        assert_eq!(distinct.len(), keys.len(), "peers refuse a repeated digest");
        let index = index_keys(&set(), &s);
        assert_eq!(index.len(), 12);
        assert_eq!(query_keys_v2(&set(), &s).len(), 20);
        assert_eq!(index_keys_v2(&set(), &s).len(), 13);
    }
}
