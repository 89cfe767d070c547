//! National identifier schemes and the normal form of identifier values.
//!
//! A national identifier is a pair (scheme, value). Identifiers of different schemes never
//! match, so callers must key on both. England's NHS number (scheme [`NHS_SCHEME`]) is
//! validated: 10 digits with a modulus-11 check digit. Every other scheme is opaque: its
//! value is kept as uppercase ASCII letters and digits, because a node cannot validate a
//! scheme it does not know.
//!
//! Normal forms, which match keys depend on and which must therefore stay stable:
//!
//! - scheme: trimmed, ASCII-lowercased, 1–32 characters of `a`–`z`, `0`–`9` and `-`;
//! - NHS number: the 10 digits, with spaces and hyphens removed (`943 476 5919` →
//!   `9434765919`);
//! - opaque value: trimmed, spaces and hyphens removed, ASCII-uppercased, 1–64 characters
//!   of `A`–`Z` and `0`–`9`.
//!
//! "Spaces" means any Unicode whitespace and "hyphens" includes the Unicode dashes
//! U+2010–U+2015 and U+2212, since values are often pasted from word processors.
//!
//! Error messages never contain the value: it is personal data and errors reach logs.

use crate::normalise::is_dash;

/// The scheme name of England's NHS number.
pub const NHS_SCHEME: &str = "nhs";

const MAX_SCHEME_LEN: usize = 32;
const MAX_OPAQUE_LEN: usize = 64;
const NHS_LEN: usize = 10;

/// Why a scheme or identifier value was refused. Messages say what is wrong without
/// echoing the value.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum IdentifierError {
    /// The scheme is empty, too long or has a character outside `a`–`z`, `0`–`9`, `-`.
    #[error("scheme must be 1-32 characters of a-z, 0-9 and '-'")]
    InvalidScheme,
    /// The NHS number is not exactly 10 digits once spaces and hyphens are removed.
    #[error("nhs number must be 10 digits")]
    NhsNumberFormat,
    /// The NHS number has 10 digits but its modulus-11 check digit does not match.
    #[error("nhs number check digit is wrong")]
    NhsNumberCheckDigit,
    /// The NHS number passes the check digit but has every digit the same
    /// (`0000000000`, `1111111111`, ...), which is a data-entry placeholder.
    #[error("nhs number is a placeholder (all digits the same)")]
    NhsNumberPlaceholder,
    /// An identifier of an opaque scheme is empty, too long or has a character outside
    /// ASCII letters and digits once spaces and hyphens are removed.
    #[error(
        "identifier for scheme {scheme} must be 1-64 letters or digits (spaces and hyphens are ignored)"
    )]
    InvalidOpaque {
        /// The normalised scheme (not personal data).
        scheme: String,
    },
}

/// Whether `digits` is a valid NHS number: exactly 10 ASCII digits whose last digit is the
/// modulus-11 check digit of the first nine.
///
/// The check: multiply the first nine digits by weights 10, 9, ..., 2 and sum; the check
/// digit is `11 - (sum mod 11)`, where 11 means 0 and 10 means no valid number exists.
/// Every all-same-digit number passes that check, so those placeholders are refused too:
/// matching on one would join unrelated people.
///
/// No spaces or hyphens are accepted here; use [`normalise_national_id`] for raw input.
pub fn nhs_number_is_valid(digits: &str) -> bool {
    nhs_check(digits).is_ok()
}

/// Returns the normal form of a scheme name: trimmed and ASCII-lowercased, which must
/// leave 1 to 32 characters of `a`–`z`, `0`–`9` and `-`.
pub fn validate_scheme(scheme: &str) -> Result<String, IdentifierError> {
    let trimmed = scheme.trim();
    let well_formed = (1..=MAX_SCHEME_LEN).contains(&trimmed.len())
        && trimmed
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if well_formed {
        Ok(trimmed.to_ascii_lowercase())
    } else {
        Err(IdentifierError::InvalidScheme)
    }
}

/// Returns the normal form of an identifier `value` in `scheme` (see the module docs).
///
/// The scheme is normalised first, so `"NHS"` selects NHS validation. For
/// [`NHS_SCHEME`] the result is the 10 digits; for any other scheme it is the opaque
/// uppercase form. Errors say which rule failed and never contain the value.
pub fn normalise_national_id(scheme: &str, value: &str) -> Result<String, IdentifierError> {
    let scheme = validate_scheme(scheme)?;
    if scheme == NHS_SCHEME {
        let digits = without_separators(value, NHS_LEN).ok_or(IdentifierError::NhsNumberFormat)?;
        nhs_check(&digits)?;
        Ok(digits)
    } else {
        let Some(compact) = without_separators(value, MAX_OPAQUE_LEN) else {
            return Err(IdentifierError::InvalidOpaque { scheme });
        };
        if compact.is_empty() || !compact.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(IdentifierError::InvalidOpaque { scheme });
        }
        Ok(compact.to_ascii_uppercase())
    }
}

/// `value` with whitespace and dashes removed, or `None` if more than `max` characters
/// remain (checked as it goes, so a huge input is not copied).
fn without_separators(value: &str, max: usize) -> Option<String> {
    let mut out = String::new();
    let mut kept = 0_usize;
    for c in value.chars() {
        if c.is_whitespace() || is_dash(c) {
            continue;
        }
        kept += 1;
        if kept > max {
            return None;
        }
        out.push(c);
    }
    Some(out)
}

fn nhs_check(digits: &str) -> Result<(), IdentifierError> {
    let bytes = digits.as_bytes();
    if bytes.len() != NHS_LEN || !bytes.iter().all(u8::is_ascii_digit) {
        return Err(IdentifierError::NhsNumberFormat);
    }
    let value = |b: u8| u32::from(b - b'0');
    let sum: u32 = bytes[..9]
        .iter()
        .zip((2..=10_u32).rev())
        .map(|(&b, weight)| value(b) * weight)
        .sum();
    let expected = match 11 - sum % 11 {
        11 => 0,
        10 => return Err(IdentifierError::NhsNumberCheckDigit),
        check => check,
    };
    if value(bytes[9]) != expected {
        return Err(IdentifierError::NhsNumberCheckDigit);
    }
    if bytes.iter().all(|&b| b == bytes[0]) {
        return Err(IdentifierError::NhsNumberPlaceholder);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nhs_number_is_valid_table() {
        let cases: &[(&str, bool)] = &[
            ("9434765919", true),
            ("4010232137", true),
            // Check digit computed as 11, which means 0.
            ("9434765870", true),
            ("4857773457", true),
            // Wrong check digit.
            ("9434765918", false),
            ("4010232138", false),
            ("9434765871", false),
            // First nine digits give a check value of 10: no digit is valid.
            ("1234567890", false),
            ("1234567891", false),
            // Placeholders pass the arithmetic but are refused.
            ("0000000000", false),
            ("1111111111", false),
            ("9999999999", false),
            // Format: exact length, ASCII digits only, no separators.
            ("943476591", false),
            ("94347659190", false),
            ("943 476 5919", false),
            ("943-476-5919", false),
            (" 9434765919", false),
            ("943476591a", false),
            ("９４３４７６５９１９", false),
            ("٩٤٣٤٧٦٥٩١٩", false),
            ("+943476591", false),
            ("", false),
        ];
        for (digits, want) in cases {
            assert_eq!(nhs_number_is_valid(digits), *want, "input {digits:?}");
        }
    }

    #[test]
    fn validate_scheme_table() {
        let long_ok = "a".repeat(32);
        let too_long = "a".repeat(33);
        let cases: &[(&str, Result<&str, IdentifierError>)] = &[
            ("nhs", Ok("nhs")),
            ("NHS", Ok("nhs")),
            ("  Nhs\t", Ok("nhs")),
            ("au-ihi", Ok("au-ihi")),
            ("vic-crn-2", Ok("vic-crn-2")),
            ("x", Ok("x")),
            (long_ok.as_str(), Ok(long_ok.as_str())),
            (too_long.as_str(), Err(IdentifierError::InvalidScheme)),
            ("", Err(IdentifierError::InvalidScheme)),
            ("   ", Err(IdentifierError::InvalidScheme)),
            ("au ihi", Err(IdentifierError::InvalidScheme)),
            ("au_ihi", Err(IdentifierError::InvalidScheme)),
            ("au.ihi", Err(IdentifierError::InvalidScheme)),
            ("nhś", Err(IdentifierError::InvalidScheme)),
            // The Kelvin sign lowercases to ASCII 'k' under Unicode rules; still refused.
            ("\u{212A}", Err(IdentifierError::InvalidScheme)),
            ("ＮＨＳ", Err(IdentifierError::InvalidScheme)),
            ("nhs\u{0000}", Err(IdentifierError::InvalidScheme)),
        ];
        for (scheme, want) in cases {
            let want = want.clone().map(str::to_owned);
            assert_eq!(validate_scheme(scheme), want, "input {scheme:?}");
        }
    }

    #[test]
    fn normalise_national_id_nhs_table() {
        let cases: &[(&str, &str, Result<&str, IdentifierError>)] = &[
            ("nhs", "9434765919", Ok("9434765919")),
            ("nhs", "943 476 5870", Ok("9434765870")),
            ("nhs", "943-476-5870", Ok("9434765870")),
            ("NHS", " 401 023 2137 ", Ok("4010232137")),
            ("nhs", "401\u{00A0}023\u{2013}2137", Ok("4010232137")),
            (
                "nhs",
                "9434765918",
                Err(IdentifierError::NhsNumberCheckDigit),
            ),
            (
                "nhs",
                "123 456 7890",
                Err(IdentifierError::NhsNumberCheckDigit),
            ),
            (
                "nhs",
                "000 000 0000",
                Err(IdentifierError::NhsNumberPlaceholder),
            ),
            (
                "nhs",
                "111-111-1111",
                Err(IdentifierError::NhsNumberPlaceholder),
            ),
            ("nhs", "", Err(IdentifierError::NhsNumberFormat)),
            ("nhs", "   ", Err(IdentifierError::NhsNumberFormat)),
            ("nhs", "943476591", Err(IdentifierError::NhsNumberFormat)),
            ("nhs", "94347659190", Err(IdentifierError::NhsNumberFormat)),
            ("nhs", "943.476.5919", Err(IdentifierError::NhsNumberFormat)),
            ("nhs", "943476591X", Err(IdentifierError::NhsNumberFormat)),
            (
                "nhs",
                "９４３４７６５９１９",
                Err(IdentifierError::NhsNumberFormat),
            ),
            ("nh s", "9434765919", Err(IdentifierError::InvalidScheme)),
            ("", "9434765919", Err(IdentifierError::InvalidScheme)),
        ];
        for (scheme, value, want) in cases {
            let want = want.clone().map(str::to_owned);
            assert_eq!(
                normalise_national_id(scheme, value),
                want,
                "input {scheme:?} {value:?}"
            );
        }
    }

    #[test]
    fn normalise_national_id_opaque_table() {
        let opaque = |scheme: &str| {
            Err(IdentifierError::InvalidOpaque {
                scheme: scheme.to_owned(),
            })
        };
        let max = "a1".repeat(32);
        let max_upper = max.to_ascii_uppercase();
        let too_long = "a".repeat(65);
        let cases: &[(&str, &str, Result<&str, IdentifierError>)] = &[
            ("vic-crn", "ab 12-cd", Ok("AB12CD")),
            ("VIC-CRN", "  x  ", Ok("X")),
            ("au-ihi", "8003 6012 3456 7890", Ok("8003601234567890")),
            ("other", "a\u{2014}b", Ok("AB")),
            // An NHS-shaped value in another scheme is opaque, not checked.
            ("nhs-scotland", "943 476 5918", Ok("9434765918")),
            ("x", max.as_str(), Ok(max_upper.as_str())),
            ("x", too_long.as_str(), opaque("x")),
            ("vic-crn", "", opaque("vic-crn")),
            ("vic-crn", " - - ", opaque("vic-crn")),
            ("VIC-CRN", "ab.12", opaque("vic-crn")),
            ("vic-crn", "ab_12", opaque("vic-crn")),
            ("vic-crn", "ÅB12", opaque("vic-crn")),
            ("vic-crn", "ＡＢ１２", opaque("vic-crn")),
            ("vic-crn", "ab\u{0000}12", opaque("vic-crn")),
            ("vic crn", "ab12", Err(IdentifierError::InvalidScheme)),
        ];
        for (scheme, value, want) in cases {
            let want = want.clone().map(str::to_owned);
            assert_eq!(
                normalise_national_id(scheme, value),
                want,
                "input {scheme:?} {value:?}"
            );
        }
    }

    #[test]
    fn huge_values_are_refused_without_panicking() {
        let huge = "9".repeat(10_000_000);
        assert_eq!(
            normalise_national_id("nhs", &huge),
            Err(IdentifierError::NhsNumberFormat)
        );
        assert_eq!(
            normalise_national_id("vic-crn", &huge),
            Err(IdentifierError::InvalidOpaque {
                scheme: "vic-crn".to_owned()
            })
        );
        assert!(!nhs_number_is_valid(&huge));
        assert_eq!(validate_scheme(&huge), Err(IdentifierError::InvalidScheme));
    }

    #[test]
    fn messages_are_lowercase_and_never_echo_the_value() {
        let value = "943 476 5918";
        let errors = [
            normalise_national_id("nhs", value),
            normalise_national_id("nhs", "9434X"),
            normalise_national_id("nhs", "0000000000"),
            normalise_national_id("vic-crn", "9434X.765918"),
            normalise_national_id("NHS SCOT", value),
        ];
        let want = [
            "nhs number check digit is wrong",
            "nhs number must be 10 digits",
            "nhs number is a placeholder (all digits the same)",
            "identifier for scheme vic-crn must be 1-64 letters or digits (spaces and hyphens are ignored)",
            "scheme must be 1-32 characters of a-z, 0-9 and '-'",
        ];
        for (result, want) in errors.into_iter().zip(want) {
            let message = match result {
                Err(err) => err.to_string(),
                Ok(normal) => panic!("expected an error, got {normal:?}"),
            };
            assert_eq!(message, want);
            assert!(!message.contains("9434"), "{message}");
            assert!(!message.contains("765918"), "{message}");
            assert_eq!(message, message.to_lowercase());
            assert!(!message.ends_with('.'));
        }
    }
}
