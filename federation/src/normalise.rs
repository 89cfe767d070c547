//! Normal forms of names and postcodes, shared by the store's search index and by blinded
//! match keys.
//!
//! These functions define what "the same name" and "the same postcode" mean across the
//! federation: two nodes derive equal match keys only if they normalise identically. The
//! rules below are therefore part of the wire contract. Changing any of them changes every
//! key derived from them, so a change needs a new match-key version, not a quiet edit.
//!
//! # Name rules (`normalise_name`), applied in this order
//!
//! 0. Letters of other scripts become Latin, word by word (a word is a run of letters
//!    and combining marks). In a word that mixes Latin letters with others, each other
//!    letter becomes the Latin letter it is drawn like, by Unicode's confusables table
//!    (UTS #39, `unicode-security`): a Cyrillic `А` in `Аmelia` is an `A`, so a name
//!    cannot be hidden from lookups by one look-alike letter. A word with no Latin
//!    letter is transliterated (`deunicode`; a Cyrillic word with a letter only
//!    Ukrainian has, `і ї є ґ`, by Ukraine's national table instead): `Мария` is
//!    `Mariia`, `Сергій` is `Serhii`, `李小龙` is `Li Xiao Long`.
//! 1. Apostrophes and quotation marks are removed, so `O'Brien` and `O’Brien` both become
//!    `obrien`. The set is: `'` `’` `‘` `‛` `` ` `` `´` `ʹ` `ʻ` `ʼ` `′` `"` `“` `”` `„`.
//!    (`´` is removed before step 2 because NFKD would otherwise turn it into a space.)
//! 2. Unicode NFKD, then every combining mark is dropped (`é` → `e`, `Zoë` → `zoe`,
//!    `ﬁ` → `fi`, full-width letters → ASCII).
//! 3. Lowercase.
//! 4. Letters that do not decompose are transliterated: `ß` → `ss`, `æ` → `ae`,
//!    `œ` → `oe`, `ø` → `o`, `ł` → `l`, `đ` → `d`, `ð` → `d`, `þ` → `th`, `ı` → `i`.
//!    Umlauts are *not* expanded (`ü` → `u`, never `ue`).
//! 5. Hyphens and dashes (`-` and U+2010–U+2015, U+2212), underscores, dots, commas,
//!    slashes (`/`, `\`) and all Unicode whitespace become a word break.
//! 6. Any remaining character outside `a`–`z` is dropped, including digits and letters of
//!    non-Latin scripts.
//! 7. Word breaks are collapsed to a single space and trimmed from both ends.
//!
//! A name with no letter at all normalises to the empty string. Callers must treat an
//! empty normal form as "no usable name" and never derive a match key from it.
//!
//! # Postcode rules (`normalise_postcode`)
//!
//! Keep ASCII letters and digits, uppercase them, drop everything else: `" rh1 1aa"` →
//! `"RH11AA"`, `"3000"` → `"3000"`. No country-specific format is imposed, because nodes
//! sit in different jurisdictions.

use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::is_combining_mark;

/// Returns the normal form of a personal name (see the module docs for the exact rules).
///
/// The result contains only `a`–`z` and single spaces between words, with no leading or
/// trailing space. It may be empty.
pub fn normalise_name(raw: &str) -> String {
    fn push_letters(out: &mut String, letters: &str, pending_break: &mut bool) {
        if *pending_break && !out.is_empty() {
            out.push(' ');
        }
        *pending_break = false;
        out.push_str(letters);
    }

    let mut out = String::with_capacity(raw.len());
    // A word break is only written when the next letter arrives, which both collapses runs
    // of separators and trims the ends.
    let mut pending_break = false;

    let latin = in_latin_letters(raw);
    for decomposed in latin.chars().filter(|c| !is_quote(*c)).nfkd() {
        if is_combining_mark(decomposed) {
            continue;
        }
        for c in decomposed.to_lowercase() {
            if is_combining_mark(c) || is_quote(c) {
                continue;
            }
            if let Some(letters) = transliterate(c) {
                push_letters(&mut out, letters, &mut pending_break);
            } else if c.is_ascii_lowercase() {
                let mut buf = [0_u8; 4];
                push_letters(&mut out, c.encode_utf8(&mut buf), &mut pending_break);
            } else if is_name_separator(c) {
                pending_break = true;
            }
            // Anything else (digits, symbols, other scripts) is dropped without a break.
        }
    }
    out
}

/// Returns the words of the normalised name, in order (empty if the name normalises to
/// the empty string).
pub fn name_tokens(raw: &str) -> Vec<String> {
    normalise_name(raw)
        .split(' ')
        .filter(|word| !word.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Returns the normal form of a postcode: its ASCII letters and digits, uppercased, with
/// everything else removed.
pub fn normalise_postcode(raw: &str) -> String {
    raw.chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

/// Whether `raw` looks like a postcode in some jurisdiction: it consists only of ASCII
/// letters, digits, spaces and hyphens, and its normal form has 3 to 10 characters.
pub fn is_plausible_postcode(raw: &str) -> bool {
    if !raw
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == ' ' || c == '-')
    {
        return false;
    }
    // Only ASCII alphanumerics survive normalisation, so counting them is enough and
    // avoids allocating for a huge input.
    let kept = raw.chars().filter(char::is_ascii_alphanumeric).count();
    (3..=10).contains(&kept)
}

/// Whether `c` is a hyphen or dash, which separates words in names and is ignored in
/// identifiers.
pub(crate) fn is_dash(c: char) -> bool {
    matches!(c, '-' | '\u{2010}'..='\u{2015}' | '\u{2212}')
}

fn is_quote(c: char) -> bool {
    matches!(
        c,
        '\'' | '\u{2019}' // ’
            | '\u{2018}' // ‘
            | '\u{201B}' // ‛
            | '`'
            | '\u{00B4}' // ´
            | '\u{02B9}' // ʹ
            | '\u{02BB}' // ʻ
            | '\u{02BC}' // ʼ
            | '\u{2032}' // ′
            | '"'
            | '\u{201C}' // “
            | '\u{201D}' // ”
            | '\u{201E}' // „
    )
}

/// Rule 0: every word of `raw` in Latin letters (see the module's docs). Borrows
/// `raw` when it has nothing to change, which is nearly always.
fn in_latin_letters(raw: &str) -> std::borrow::Cow<'_, str> {
    if raw
        .chars()
        .all(|c| !c.is_alphabetic() || is_latin_letter(c))
    {
        return std::borrow::Cow::Borrowed(raw);
    }
    let mut out = String::with_capacity(raw.len() * 2);
    let mut word = String::new();
    for c in raw.chars() {
        if c.is_alphabetic() || is_combining_mark(c) {
            word.push(c);
        } else {
            push_word_in_latin(&mut out, &word);
            word.clear();
            out.push(c);
        }
    }
    push_word_in_latin(&mut out, &word);
    std::borrow::Cow::Owned(out)
}

fn push_word_in_latin(out: &mut String, word: &str) {
    let foreign = |c: char| c.is_alphabetic() && !is_latin_letter(c);
    if !word.chars().any(foreign) {
        out.push_str(word);
    } else if word.chars().any(is_latin_letter) {
        for c in word.chars() {
            if foreign(c) {
                let mut one = [0_u8; 4];
                let drawn_like: String =
                    unicode_security::skeleton(c.encode_utf8(&mut one)).collect();
                if drawn_like.chars().all(|l| l.is_ascii_alphabetic()) && !drawn_like.is_empty() {
                    out.push_str(&drawn_like);
                } else {
                    out.push_str(deunicode::deunicode_char(c).unwrap_or(""));
                }
            } else {
                out.push(c);
            }
        }
    } else if word
        .chars()
        .any(|c| matches!(c, 'і' | 'ї' | 'є' | 'ґ' | 'І' | 'Ї' | 'Є' | 'Ґ'))
    {
        out.push_str(&ukrainian_in_latin(word));
    } else {
        // Separate the word from a neighbour: CJK transliterates to several.
        out.push(' ');
        out.push_str(&deunicode::deunicode(word));
        out.push(' ');
    }
}

/// Whether rule 0 transliterates a word of `raw` (a word with no Latin letter, in
/// another script): two systems may then spell it a letter apart (`Mariia`, `Maria`).
pub fn is_transliterated(raw: &str) -> bool {
    raw.split(|c: char| !(c.is_alphabetic() || is_combining_mark(c)))
        .any(|word| {
            word.chars()
                .any(|c| c.is_alphabetic() && !is_latin_letter(c))
                && !word.chars().any(is_latin_letter)
        })
}

/// Whether `c` is a letter of the Latin script (ASCII, Latin-1 and the Latin
/// Extended blocks, full-width Latin).
fn is_latin_letter(c: char) -> bool {
    c.is_ascii_alphabetic()
        || (c.is_alphabetic()
            && matches!(u32::from(c),
                0x00C0..=0x024F | 0x1E00..=0x1EFF | 0x2C60..=0x2C7F | 0xA720..=0xA7FF
                | 0xAB30..=0xAB6F | 0xFF21..=0xFF3A | 0xFF41..=0xFF5A | 0x0250..=0x02AF
                | 0xFB00..=0xFB06))
}

/// Ukraine's national transliteration (2010), as passports write names.
fn ukrainian_in_latin(word: &str) -> String {
    let mut out = String::with_capacity(word.len());
    for (i, c) in word.chars().enumerate() {
        let first = i == 0;
        let lower = c.to_lowercase().next().unwrap_or(c);
        let latin = match lower {
            'а' => "a",
            'б' => "b",
            'в' => "v",
            'г' => "h",
            'ґ' => "g",
            'д' => "d",
            'е' => "e",
            'є' if first => "ye",
            'є' => "ie",
            'ж' => "zh",
            'з' => "z",
            'и' => "y",
            'і' => "i",
            'ї' if first => "yi",
            'ї' => "i",
            'й' if first => "y",
            'й' => "i",
            'к' => "k",
            'л' => "l",
            'м' => "m",
            'н' => "n",
            'о' => "o",
            'п' => "p",
            'р' => "r",
            'с' => "s",
            'т' => "t",
            'у' => "u",
            'ф' => "f",
            'х' => "kh",
            'ц' => "ts",
            'ч' => "ch",
            'ш' => "sh",
            'щ' => "shch",
            'ю' if first => "yu",
            'ю' => "iu",
            'я' if first => "ya",
            'я' => "ia",
            'ь' => "",
            other => deunicode::deunicode_char(other).unwrap_or(""),
        };
        out.push_str(latin);
    }
    out
}

fn is_name_separator(c: char) -> bool {
    is_dash(c) || matches!(c, '_' | '.' | ',' | '/' | '\\') || c.is_whitespace()
}

fn transliterate(c: char) -> Option<&'static str> {
    Some(match c {
        'ß' => "ss",
        'æ' => "ae",
        'œ' => "oe",
        'ø' => "o",
        'ł' => "l",
        'đ' | 'ð' => "d",
        'þ' => "th",
        'ı' => "i",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalise_name_table() {
        let cases: &[(&str, &str)] = &[
            // The examples from the specification.
            ("  José  Smith-Jones ", "jose smith jones"),
            ("Zoë", "zoe"),
            ("O'Brien", "obrien"),
            // Plain input, case and spacing.
            ("john smith", "john smith"),
            ("JOHN SMITH", "john smith"),
            ("John\tSmith\n", "john smith"),
            ("John\u{00A0}Smith", "john smith"),
            ("John\u{3000}Smith", "john smith"),
            // Apostrophes and quotes are removed, not turned into breaks.
            ("O’Brien", "obrien"),
            ("O‘Brien", "obrien"),
            ("O`Brien", "obrien"),
            ("O´Brien", "obrien"),
            ("Oʼ Brien", "o brien"),
            ("D'Angelo", "dangelo"),
            ("John \"Jack\" Smith", "john jack smith"),
            ("“Jack”", "jack"),
            ("O\u{FF07}Brien", "obrien"),
            // Separators become a single space.
            ("Smith-Jones", "smith jones"),
            ("Smith--Jones", "smith jones"),
            ("Smith – Jones", "smith jones"),
            ("Smith\u{2010}Jones", "smith jones"),
            ("Smith_Jones", "smith jones"),
            ("St. John", "st john"),
            ("Smith,John", "smith john"),
            ("Smith/Jones", "smith jones"),
            ("Smith\\Jones", "smith jones"),
            ("-Smith-", "smith"),
            ("...", ""),
            // Diacritics via NFKD.
            ("Élodie Müller", "elodie muller"),
            ("Ångström", "angstrom"),
            ("Nuñez", "nunez"),
            ("Dvořák", "dvorak"),
            ("Şükrü", "sukru"),
            ("İlker", "ilker"),
            // Decomposed input equals precomposed input.
            ("Jose\u{0301}", "jose"),
            ("Zoe\u{0308}", "zoe"),
            // Compatibility forms.
            ("\u{FB01}ona", "fiona"),
            ("ＪＯＨＮ", "john"),
            ("\u{0132}sbrand", "ijsbrand"),
            // Non-decomposing letters are transliterated, in either case.
            ("Straße", "strasse"),
            ("STRAẞE", "strasse"),
            ("Ærø", "aero"),
            ("Œuvre", "oeuvre"),
            ("Søren Kierkegaard", "soren kierkegaard"),
            ("Łukasz", "lukasz"),
            ("Đorđe", "dorde"),
            ("Guðrún", "gudrun"),
            ("Þór", "thor"),
            ("Yıldız", "yildiz"),
            // Everything else outside a-z is dropped, without a break.
            ("Smith3", "smith"),
            ("J0hn", "jhn"),
            ("Smith & Jones", "smith jones"),
            ("Smith(Jones)", "smithjones"),
            ("Jo\u{200B}hn", "john"),
            // Other scripts are transliterated, look-alike letters folded.
            ("Иван Smith", "ivan smith"),
            ("Иван", "ivan"),
            ("Мария Иванова", "mariia ivanova"),
            ("Сергій Коваленко", "serhii kovalenko"),
            ("Юлія", "yuliia"),
            ("\u{0410}melia", "amelia"),
            ("\u{0421}harlotte", "charlotte"),
            ("Sm\u{0456}th", "smith"),
            ("\u{0391}lex", "alex"),
            ("Σοφία", "sophia"),
            ("李小龙", "li xiao long"),
            ("🙂", ""),
            ("", ""),
            ("   ", ""),
            ("\u{0301}\u{0308}", ""),
        ];
        for (raw, want) in cases {
            assert_eq!(normalise_name(raw), *want, "input {raw:?}");
        }
    }

    #[test]
    fn normalise_name_output_shape_holds_for_odd_input() {
        let inputs = [
            "\u{0000}\u{FFFF}\u{10FFFF}",
            "\u{FDFA}",
            "\u{1E9E}\u{0130}\u{212A}",
            "a\u{0301}\u{0301}\u{0301}\u{0301}\u{0301}b",
            " - . , _ / \\ ",
            "\u{D7A3}\u{1100}\u{1161}",
        ];
        for raw in inputs {
            let out = normalise_name(raw);
            assert!(
                out.chars().all(|c| c.is_ascii_lowercase() || c == ' '),
                "input {raw:?} gave {out:?}"
            );
            assert!(!out.starts_with(' ') && !out.ends_with(' '), "{out:?}");
            assert!(!out.contains("  "), "{out:?}");
        }
    }

    #[test]
    fn every_scalar_value_is_handled() {
        let all: String = (0..=u32::from(char::MAX))
            .filter_map(char::from_u32)
            .collect();
        let out = normalise_name(&all);
        assert!(out.chars().all(|c| c.is_ascii_lowercase() || c == ' '));
        assert!(!out.starts_with(' ') && !out.ends_with(' ') && !out.contains("  "));
        assert_eq!(name_tokens(&all).join(" "), out);
        assert!(!is_plausible_postcode(&all));
        assert!(
            normalise_postcode(&all)
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
        );
    }

    #[test]
    fn normalise_name_is_idempotent() {
        for raw in ["  José  Smith-Jones ", "Straße", "O'Brien", "Þór Ærø", ""] {
            let once = normalise_name(raw);
            assert_eq!(normalise_name(&once), once, "input {raw:?}");
        }
    }

    #[test]
    fn normalise_name_handles_huge_input() {
        let raw = "Zoë-O'Brien ".repeat(100_000);
        let out = normalise_name(&raw);
        assert!(out.starts_with("zoe obrien zoe obrien"));
        assert!(!out.ends_with(' '));
        assert_eq!(out.len(), "zoe obrien ".len() * 100_000 - 1);
    }

    #[test]
    fn name_tokens_table() {
        let cases: &[(&str, &[&str])] = &[
            ("  José  Smith-Jones ", &["jose", "smith", "jones"]),
            ("O'Brien", &["obrien"]),
            (
                "Mary-Jane van der Berg",
                &["mary", "jane", "van", "der", "berg"],
            ),
            ("Zoë", &["zoe"]),
            ("", &[]),
            ("  - ", &[]),
            ("Иван", &["ivan"]),
            ("🙂", &[]),
        ];
        for (raw, want) in cases {
            assert_eq!(name_tokens(raw), *want, "input {raw:?}");
        }
    }

    #[test]
    fn normalise_postcode_table() {
        let cases: &[(&str, &str)] = &[
            (" rh1 1aa", "RH11AA"),
            ("RH1 1AA", "RH11AA"),
            ("rh11aa", "RH11AA"),
            ("SW1A 1AA", "SW1A1AA"),
            ("3000", "3000"),
            ("VIC-3000", "VIC3000"),
            ("rh1\t1aa\n", "RH11AA"),
            ("RH1.1AA", "RH11AA"),
            ("ＲＨ１", ""),
            ("é1", "1"),
            ("", ""),
            ("   ", ""),
        ];
        for (raw, want) in cases {
            assert_eq!(normalise_postcode(raw), *want, "input {raw:?}");
        }
    }

    #[test]
    fn is_plausible_postcode_table() {
        let long = "A".repeat(1_000_000);
        let cases: &[(&str, bool)] = &[
            (" rh1 1aa", true),
            ("RH1 1AA", true),
            ("SW1A 1AA", true),
            ("3000", true),
            ("VIC-3000", true),
            ("ABC", true),
            ("ABCDE12345", true),
            ("ABCDE 12345", true),
            // Too short or too long once normalised.
            ("", false),
            ("   ", false),
            ("AB", false),
            ("A - B", false),
            ("ABCDE123456", false),
            (long.as_str(), false),
            // Characters other than ASCII alphanumerics, spaces and hyphens.
            ("RH1.1AA", false),
            ("RH1\t1AA", false),
            ("RH1,1AA", false),
            ("ＲＨ１ １ＡＡ", false),
            ("RÉ1 1AA", false),
            ("RH1 1AA\u{0000}", false),
        ];
        for (raw, want) in cases {
            let shown: String = raw.chars().take(20).collect();
            assert_eq!(is_plausible_postcode(raw), *want, "input {shown:?}");
        }
    }

    #[test]
    fn is_dash_table() {
        let cases: &[(char, bool)] = &[
            ('-', true),
            ('\u{2010}', true),
            ('\u{2013}', true),
            ('\u{2014}', true),
            ('\u{2015}', true),
            ('\u{2212}', true),
            ('_', false),
            (' ', false),
            ('a', false),
        ];
        for (c, want) in cases {
            assert_eq!(is_dash(*c), *want, "char {c:?}");
        }
    }
}
