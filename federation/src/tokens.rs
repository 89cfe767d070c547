//! A subject's fields as keyed tokens, for scoring a candidate field by field without a
//! raw value crossing the border (version 2 of matching).
//!
//! The asking node sends, with each blocking key, the subject's tokens *under that
//! key's digest*: each token is the first four bytes of HMAC-SHA256, keyed with the
//! 32-byte digest, of a labelled normal form. The answering node computes the same
//! tokens for a person the key found (it indexed that digest for that person, so it
//! holds the key) and compares. A node that holds nobody under the digest cannot compute
//! a single token it could compare: it would first have to invert the blocking key, a
//! joint dictionary of several fields, as today. PRIVACY.md says what the tokens reveal
//! to a node that does hold someone under the key.
//!
//! # The contract (labels, fields, order)
//!
//! Every label starts `v2|`, then a field letter, then `|s|` and the value:
//!
//! | field | value | deletions |
//! |---|---|---|
//! | given name (`n`) | the `given` normal form of [`matchkeys`](crate::matchkeys) | of the form |
//! | family name (`n`) | the `family` normal form | of the form |
//! | date of birth (`d`) | `yyyy-mm-dd`; also `y` year (and each year within five either way), `md` with `mm-dd` and with `dd-mm` | of `yyyymmdd` |
//! | postcode (`p`) | the postcode's normal form; `o` district (all but the last three characters, unit postcodes only) | of the form |
//! | national id (`i`) | `scheme|value` | of the value, only for schemes without a check digit |
//!
//! Both names share the label `n`, so a given name recorded as the family name still
//! compares; each also carries the token of all its words joined (its `family` normal
//! form, which for a given name of several words is longer than its `given` one),
//! `v2|n|p|{code}`, its Double Metaphone code, and a token
//! (label `n`) for each of its words (of [`normalise_name`](crate::normalise_name)), in
//! order, for a middle name or a second family name one record holds and the other
//! does not. A deletion
//! token is the value with its i-th character left out, under the same label as the
//! value, for i = 0, 1, ... (at most [`MAX_DELETIONS`]): equal tokens at the same i
//! mean one substituted character; one side's value equal to one of the other's
//! deletions means one inserted or dropped character; tokens equal crosswise at i and
//! i + 1 mean two swapped neighbours. A token that comes out 0 is sent as 1, so 0 can
//! mean "none".

use patchwork_proto::v1;
use ring::hmac;

use crate::identifiers::{NHS_SCHEME, normalise_national_id, validate_scheme};
use crate::matchkeys::{
    Digest, KeySet, Subject, UNIT_POSTCODE_LEN, date_form, family_form, given_form, phonetic,
    postcode_form, query_keys_v2,
};
use crate::normalise::{is_transliterated, name_tokens};

/// The most deletion tokens one field carries (a longer value's tail gets none).
pub const MAX_DELETIONS: usize = 24;

/// A name's tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameTokens {
    pub exact: u32,
    /// Every word, joined (`cianliam` of `Cian Liam`, whose `exact` is `cian`):
    /// what a name recorded in the other field is compared by.
    pub full: u32,
    /// 0 when the name has no phonetic code.
    pub phonetic: u32,
    pub deletions: Vec<u32>,
    /// Each word of the name (at most [`MAX_WORDS`]), for a name that one record
    /// holds with a middle name or a second family name and the other without.
    pub words: Vec<u32>,
    /// The record wrote the name in another script, so its Latin form is a
    /// transliteration, which systems spell differently by a letter.
    pub transliterated: bool,
    /// The normal form as an optical reader sees it ([`ocr_folded`]); 0 when a
    /// peer did not send it.
    pub reading: u32,
}

/// Letter groups that optical character recognition reads for one letter, and
/// the letter: folding both records' names this way makes a misread form agree
/// with the name it was scanned from. Single-letter confusions (l and i, e and
/// c) are typing slips already. Some real names fold together too (Marion and
/// Manon, Julia and Juha, Claire and Daire), so a reading that agrees makes two
/// names alike, not one slip apart (`score`).
const OCR_GROUPS: &[(&str, &str)] = &[
    ("rn", "m"),
    ("cl", "d"),
    ("vv", "w"),
    ("li", "h"),
    ("ii", "u"),
    ("ri", "n"),
];

/// `form` (a name's normal form) with every OCR letter group folded to its letter,
/// left to right.
pub fn ocr_folded(form: &str) -> String {
    let lower = form.to_lowercase();
    let mut out = String::with_capacity(lower.len());
    let mut rest = lower.as_str();
    'next: while let Some(c) = rest.chars().next() {
        for (group, letter) in OCR_GROUPS {
            if let Some(after) = rest.strip_prefix(group) {
                out.push_str(letter);
                rest = after;
                continue 'next;
            }
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

/// The most word tokens one name carries.
pub const MAX_WORDS: usize = 4;

/// A date of birth's tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DateTokens {
    pub exact: u32,
    pub year: u32,
    pub month_day: u32,
    pub day_month: u32,
    pub deletions: Vec<u32>,
    /// The years within [`NEAR_YEARS`] either way, without the year itself: a birth
    /// date that is wrong but of the same generation, told from a parent's.
    pub years_near: Vec<u32>,
}

/// How many years either way a wrong birth date may be and still be "near".
pub const NEAR_YEARS: i32 = 5;

/// A postcode's tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostcodeTokens {
    pub exact: u32,
    /// 0 for a postcode too short to have a district (a whole suburb).
    pub district: u32,
    pub deletions: Vec<u32>,
}

/// A national identifier's tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentifierTokens {
    pub exact: u32,
    /// Empty for a scheme with a check digit.
    pub deletions: Vec<u32>,
}

/// Every field's tokens under one key; `None` for a field the record lacks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubjectTokens {
    pub given_name: Option<NameTokens>,
    pub family_name: Option<NameTokens>,
    pub date_of_birth: Option<DateTokens>,
    pub postcode: Option<PostcodeTokens>,
    pub national_id: Option<IdentifierTokens>,
}

/// Whether a scheme's identifiers carry a check digit that catches typing slips (so a
/// well-formed identifier that differs is another person's, or a wrong one).
pub fn has_check_digit(scheme: &str) -> bool {
    scheme == NHS_SCHEME
}

struct Tokeniser {
    key: hmac::Key,
}

impl Tokeniser {
    fn token(&self, label: &str, value: &str) -> u32 {
        let mut context = hmac::Context::with_key(&self.key);
        context.update(label.as_bytes());
        context.update(value.as_bytes());
        let tag = context.sign();
        let bytes = tag.as_ref();
        let token = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        token.max(1)
    }

    fn deletions(&self, label: &str, value: &str) -> Vec<u32> {
        let chars: Vec<char> = value.chars().collect();
        (0..chars.len().min(MAX_DELETIONS))
            .map(|i| {
                let without: String = chars
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| *j != i)
                    .map(|(_, c)| *c)
                    .collect();
                self.token(label, &without)
            })
            .collect()
    }

    /// Both names under one label, so that names swapped between the fields still
    /// compare.
    fn name(&self, form: &str, raw: &str) -> NameTokens {
        let code = phonetic(form);
        let mut words: Vec<u32> = Vec::new();
        for word in name_tokens(raw) {
            let token = self.token("v2|n|s|", &word);
            if words.len() < MAX_WORDS && !words.contains(&token) {
                words.push(token);
            }
        }
        let joined = family_form(raw).unwrap_or_else(|| form.to_owned());
        NameTokens {
            exact: self.token("v2|n|s|", form),
            full: self.token("v2|n|s|", &joined),
            phonetic: if code.is_empty() {
                0
            } else {
                self.token("v2|n|p|", &code)
            },
            deletions: self.deletions("v2|n|s|", form),
            words,
            transliterated: is_transliterated(raw),
            reading: self.token("v2|n|r|", &ocr_folded(form)),
        }
    }
}

/// `subject`'s tokens under the match key `key` (see the module's docs).
pub fn subject_tokens(key: &Digest, subject: &Subject) -> SubjectTokens {
    let tokeniser = Tokeniser {
        key: hmac::Key::new(hmac::HMAC_SHA256, key),
    };
    let t = &tokeniser;
    let given_name = subject
        .given_name
        .as_deref()
        .and_then(|raw| Some(t.name(&given_form(raw)?, raw)));
    let family_name = subject
        .family_name
        .as_deref()
        .and_then(|raw| Some(t.name(&family_form(raw)?, raw)));
    let date_of_birth = subject.date_of_birth.and_then(|(y, m, d)| {
        let form = date_form(y, m, d)?;
        let digits: String = form.chars().filter(char::is_ascii_digit).collect();
        Some(DateTokens {
            exact: t.token("v2|d|s|", &form),
            year: t.token("v2|d|y|", &form[..4]),
            month_day: t.token("v2|d|md|", &form[5..]),
            day_month: t.token("v2|d|md|", &format!("{}-{}", &form[8..], &form[5..7])),
            deletions: t.deletions("v2|d|s|", &digits),
            years_near: (y - NEAR_YEARS..=y + NEAR_YEARS)
                .filter(|near| *near != y && (1..=9999).contains(near))
                .map(|near| t.token("v2|d|y|", &format!("{near:04}")))
                .collect(),
        })
    });
    let postcode = subject
        .postcode
        .as_deref()
        .and_then(postcode_form)
        .map(|form| PostcodeTokens {
            exact: t.token("v2|p|s|", &form),
            district: if form.len() >= UNIT_POSTCODE_LEN {
                t.token("v2|p|o|", &form[..form.len() - 3])
            } else {
                0
            },
            deletions: t.deletions("v2|p|s|", &form),
        });
    let national_id = subject.national_id.as_ref().and_then(|(scheme, value)| {
        let value = normalise_national_id(scheme, value).ok()?;
        let scheme = validate_scheme(scheme).ok()?;
        let label = format!("v2|i|s|{scheme}|");
        Some(IdentifierTokens {
            exact: t.token(&label, &value),
            deletions: if has_check_digit(&scheme) {
                Vec::new()
            } else {
                t.deletions(&label, &value)
            },
        })
    });
    SubjectTokens {
        given_name,
        family_name,
        date_of_birth,
        postcode,
        national_id,
    }
}

/// What an asking node sends for `subject` (version 2): each of
/// [`query_keys_v2`]'s keys with the subject's tokens under it.
pub fn query_match_keys(set: &KeySet, subject: &Subject) -> Vec<v1::MatchKey> {
    query_keys_v2(set, subject)
        .into_iter()
        .map(|(kind, digest)| v1::MatchKey {
            kind: kind as i32,
            digest: digest.to_vec(),
            tokens: Some(v1::SubjectTokens::from(&subject_tokens(&digest, subject))),
        })
        .collect()
}

/// Whether two values are one typing slip apart, from their exact and deletion
/// tokens: one character substituted (a deletion equal at the same place), inserted or
/// dropped (one's value among the other's deletions), or two neighbours swapped
/// (deletions equal crosswise).
pub fn one_slip_apart(a_exact: u32, a: &[u32], b_exact: u32, b: &[u32]) -> bool {
    let substituted = a.iter().zip(b).any(|(x, y)| x == y);
    let indel = a.contains(&b_exact) || b.contains(&a_exact);
    let swapped =
        (0..a.len().min(b.len()).saturating_sub(1)).any(|i| a[i] == b[i + 1] && a[i + 1] == b[i]);
    substituted || indel || swapped
}

impl From<&NameTokens> for v1::NameTokens {
    fn from(t: &NameTokens) -> Self {
        v1::NameTokens {
            exact: t.exact,
            full: t.full,
            phonetic: t.phonetic,
            deletions: t.deletions.clone(),
            words: t.words.clone(),
            transliterated: t.transliterated,
            reading: t.reading,
        }
    }
}

impl From<&SubjectTokens> for v1::SubjectTokens {
    fn from(t: &SubjectTokens) -> Self {
        v1::SubjectTokens {
            given_name: t.given_name.as_ref().map(Into::into),
            family_name: t.family_name.as_ref().map(Into::into),
            date_of_birth: t.date_of_birth.as_ref().map(|d| v1::DateTokens {
                exact: d.exact,
                year: d.year,
                month_day: d.month_day,
                day_month: d.day_month,
                deletions: d.deletions.clone(),
                years_near: d.years_near.clone(),
            }),
            postcode: t.postcode.as_ref().map(|p| v1::PostcodeTokens {
                exact: p.exact,
                district: p.district,
                deletions: p.deletions.clone(),
            }),
            national_id: t.national_id.as_ref().map(|i| v1::IdentifierTokens {
                exact: i.exact,
                deletions: i.deletions.clone(),
            }),
        }
    }
}

/// Why a peer's tokens were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct TokensError {
    /// The field, relative to `tokens` (`given_name.deletions`).
    pub field: &'static str,
    pub problem: &'static str,
}

fn checked_deletions(deletions: &[u32], field: &'static str) -> Result<Vec<u32>, TokensError> {
    if deletions.len() > MAX_DELETIONS {
        return Err(TokensError {
            field,
            problem: "holds more than 24 tokens",
        });
    }
    if deletions.contains(&0) {
        return Err(TokensError {
            field,
            problem: "holds a 0 token",
        });
    }
    Ok(deletions.to_vec())
}

fn nonzero(token: u32, field: &'static str) -> Result<u32, TokensError> {
    if token == 0 {
        Err(TokensError {
            field,
            problem: "must not be 0",
        })
    } else {
        Ok(token)
    }
}

fn name_from_wire(
    t: &v1::NameTokens,
    [exact, deletions, words]: [&'static str; 3],
) -> Result<NameTokens, TokensError> {
    if t.words.len() > MAX_WORDS || t.words.contains(&0) {
        return Err(TokensError {
            field: words,
            problem: "must hold 0-4 non-zero tokens",
        });
    }
    Ok(NameTokens {
        exact: nonzero(t.exact, exact)?,
        full: t.full,
        phonetic: t.phonetic,
        deletions: checked_deletions(&t.deletions, deletions)?,
        words: t.words.clone(),
        transliterated: t.transliterated,
        reading: t.reading,
    })
}

impl TryFrom<&v1::SubjectTokens> for SubjectTokens {
    type Error = TokensError;

    /// A peer's tokens, checked: every present field has a non-zero exact token and at
    /// most [`MAX_DELETIONS`] non-zero deletions.
    fn try_from(t: &v1::SubjectTokens) -> Result<Self, TokensError> {
        Ok(SubjectTokens {
            given_name: t
                .given_name
                .as_ref()
                .map(|n| {
                    name_from_wire(
                        n,
                        [
                            "given_name.exact",
                            "given_name.deletions",
                            "given_name.words",
                        ],
                    )
                })
                .transpose()?,
            family_name: t
                .family_name
                .as_ref()
                .map(|n| {
                    name_from_wire(
                        n,
                        [
                            "family_name.exact",
                            "family_name.deletions",
                            "family_name.words",
                        ],
                    )
                })
                .transpose()?,
            date_of_birth: t
                .date_of_birth
                .as_ref()
                .map(|d| {
                    Ok(DateTokens {
                        exact: nonzero(d.exact, "date_of_birth.exact")?,
                        year: nonzero(d.year, "date_of_birth.year")?,
                        month_day: nonzero(d.month_day, "date_of_birth.month_day")?,
                        day_month: nonzero(d.day_month, "date_of_birth.day_month")?,
                        deletions: checked_deletions(&d.deletions, "date_of_birth.deletions")?,
                        years_near: checked_deletions(&d.years_near, "date_of_birth.years_near")?,
                    })
                })
                .transpose()?,
            postcode: t
                .postcode
                .as_ref()
                .map(|p| {
                    Ok(PostcodeTokens {
                        exact: nonzero(p.exact, "postcode.exact")?,
                        district: p.district,
                        deletions: checked_deletions(&p.deletions, "postcode.deletions")?,
                    })
                })
                .transpose()?,
            national_id: t
                .national_id
                .as_ref()
                .map(|i| {
                    Ok(IdentifierTokens {
                        exact: nonzero(i.exact, "national_id.exact")?,
                        deletions: checked_deletions(&i.deletions, "national_id.deletions")?,
                    })
                })
                .transpose()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subject(given: &str, family: &str) -> Subject {
        Subject {
            given_name: Some(given.into()),
            family_name: Some(family.into()),
            date_of_birth: Some((2015, 3, 4)),
            postcode: Some("RH1 1AA".into()),
            national_id: Some(("crn".into(), "1234567".into())),
        }
    }

    fn slip(a: &NameTokens, b: &NameTokens) -> bool {
        one_slip_apart(a.exact, &a.deletions, b.exact, &b.deletions)
    }

    #[test]
    fn one_typing_slip_is_told_from_another_name() {
        let key = [9_u8; 32];
        let given = |name: &str| {
            subject_tokens(&key, &subject(name, "Smith"))
                .given_name
                .expect("a name")
        };
        let oliver = given("Oliver");
        for typo in ["Olivr", "Oliiver", "Olvier", "Olivar", "Pliver"] {
            assert!(slip(&oliver, &given(typo)), "{typo}");
        }
        for other in ["Olivia", "Oscar", "Livero"] {
            assert!(!slip(&oliver, &given(other)), "{other}");
        }
        // Twins' names that sound alike are not one slip apart.
        assert!(!slip(&given("Jack"), &given("Jake")));
        assert_eq!(given("Jack").phonetic, given("Jake").phonetic);
        // Nicknames and case are the normal form's business.
        assert_eq!(given("BILL").exact, given("William").exact);
    }

    #[test]
    fn tokens_depend_on_the_key_and_survive_the_wire() {
        let a = subject_tokens(&[1_u8; 32], &subject("Amelia", "Smith"));
        let b = subject_tokens(&[2_u8; 32], &subject("Amelia", "Smith"));
        assert_ne!(a.given_name, b.given_name);
        let dates = a.date_of_birth.as_ref().expect("date");
        // 2015-03-04 swapped is 2015-04-03: its month_day is this day_month.
        let swapped = Subject {
            date_of_birth: Some((2015, 4, 3)),
            ..subject("Amelia", "Smith")
        };
        let other = subject_tokens(&[1_u8; 32], &swapped);
        assert_eq!(
            other.date_of_birth.expect("date").month_day,
            dates.day_month
        );
        let wire = v1::SubjectTokens::from(&a);
        assert_eq!(SubjectTokens::try_from(&wire).as_ref(), Ok(&a));
        let nhs = Subject {
            national_id: Some(("nhs".into(), "943 476 5919".into())),
            ..subject("Amelia", "Smith")
        };
        let id = subject_tokens(&[1_u8; 32], &nhs).national_id.expect("id");
        assert!(id.deletions.is_empty(), "a check digit catches slips");
    }

    #[test]
    fn a_peer_cannot_send_zero_or_too_many_tokens() {
        let mut wire =
            v1::SubjectTokens::from(&subject_tokens(&[1_u8; 32], &subject("Amelia", "Smith")));
        let mut zero = wire.clone();
        if let Some(g) = zero.given_name.as_mut() {
            g.exact = 0;
        }
        assert_eq!(
            SubjectTokens::try_from(&zero).map_err(|e| e.to_string()),
            Err("given_name.exact: must not be 0".to_owned())
        );
        if let Some(f) = wire.family_name.as_mut() {
            f.deletions = vec![5; 25];
        }
        assert_eq!(
            SubjectTokens::try_from(&wire).map_err(|e| e.field),
            Err("family_name.deletions")
        );
    }
}
