//! The errors real records carry, one function per kind, in the manner of GeCo and
//! FEBRL's generators: typing slips (insert, delete, substitute, transpose), a key's
//! neighbour on a QWERTY keyboard, OCR confusions, phonetic respellings, and the
//! formatting that differs between case systems (case, accents, apostrophes, spacing).
//! Whole-value errors (replaced, missing, swapped) are the evaluation's classes.
//!
//! Every function returns its input unchanged when it cannot apply (a one-letter name
//! has nothing to transpose); the caller counts such a query as not made.

use rand::Rng;
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;

/// Latin letters with accents, folded the way a system without them writes them.
pub fn strip_accents(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            'á' | 'à' | 'ą' | 'â' => 'a',
            'é' | 'è' | 'ë' | 'ę' | 'ê' => 'e',
            'í' | 'ì' | 'ï' => 'i',
            'ó' | 'ò' | 'ô' => 'o',
            'ú' | 'ù' | 'ü' => 'u',
            'ł' => 'l',
            'ś' => 's',
            'ń' => 'n',
            'ż' | 'ź' => 'z',
            'ć' => 'c',
            'Ó' => 'O',
            'Ł' => 'L',
            'Ś' => 'S',
            'É' => 'E',
            other => other,
        })
        .collect()
}

/// Differences of form that case-management systems introduce without any error.
pub fn formatting_noise(rng: &mut StdRng, s: &str) -> String {
    match rng.random_range(0..10) {
        0 => s.to_uppercase(),
        1 => s.to_lowercase(),
        2 => strip_accents(s),
        3 => s.replace('\'', "\u{2019}"),
        4 => s.replace('\'', ""),
        5 => s.replace('\'', " "),
        6 => s.replace('-', " "),
        7 => format!("  {s} "),
        _ => s.to_owned(),
    }
}

/// A position to corrupt: a letter, the first one rarely (a slip at the start of a
/// word is rarer than inside it).
fn letter_position(rng: &mut StdRng, chars: &[char]) -> Option<usize> {
    let letters: Vec<usize> = (0..chars.len())
        .filter(|&i| chars[i].is_alphabetic() || chars[i].is_ascii_digit())
        .collect();
    let inner: Vec<usize> = letters.iter().copied().filter(|&i| i > 0).collect();
    if !inner.is_empty() && rng.random_bool(0.9) {
        inner.choose(rng).copied()
    } else {
        letters.choose(rng).copied()
    }
}

/// The same kind of character as `c` (a letter for a letter, a digit for a digit),
/// but another one.
fn other_like(rng: &mut StdRng, c: char) -> char {
    loop {
        let replacement = if c.is_ascii_digit() {
            char::from(rng.random_range(b'0'..=b'9'))
        } else {
            char::from(rng.random_range(b'a'..=b'z'))
        };
        if replacement != c.to_ascii_lowercase() {
            return replacement;
        }
    }
}

/// One typing slip: a character inserted, deleted, replaced, or two swapped.
pub fn typo(rng: &mut StdRng, s: &str) -> String {
    let mut chars: Vec<char> = s.chars().collect();
    let Some(at) = letter_position(rng, &chars) else {
        return s.to_owned();
    };
    match rng.random_range(0..4) {
        0 => chars[at] = other_like(rng, chars[at]),
        1 if chars.len() > 2 => {
            chars.remove(at);
        }
        2 | 1 => {
            let extra = other_like(rng, chars[at]);
            chars.insert(at, extra);
        }
        _ => {
            let next = at + 1;
            if next < chars.len() && chars[next] != chars[at] && chars[next].is_alphanumeric() {
                chars.swap(at, next);
            } else if at > 0 && chars[at - 1] != chars[at] && chars[at - 1].is_alphanumeric() {
                chars.swap(at - 1, at);
            } else {
                return s.to_owned();
            }
        }
    }
    chars.into_iter().collect()
}

const QWERTY: [&str; 4] = ["1234567890", "qwertyuiop", "asdfghjkl", "zxcvbnm"];

/// The keys next to `c` on a QWERTY keyboard (same row and the rows above and below).
fn neighbours(c: char) -> Vec<char> {
    let lower = c.to_ascii_lowercase();
    let Some((row, col)) = QWERTY
        .iter()
        .enumerate()
        .find_map(|(r, keys)| keys.find(lower).map(|i| (r, i)))
    else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let rows = row.saturating_sub(1)..=(row + 1).min(QWERTY.len() - 1);
    for keys in &QWERTY[rows] {
        let keys: Vec<char> = keys.chars().collect();
        for i in col.saturating_sub(1)..=col + 1 {
            if let Some(&k) = keys.get(i)
                && k != lower
                && k.is_ascii_digit() == lower.is_ascii_digit()
            {
                out.push(k);
            }
        }
    }
    out
}

/// A key's neighbour pressed instead of it.
pub fn keyboard_slip(rng: &mut StdRng, s: &str) -> String {
    let mut chars: Vec<char> = s.chars().collect();
    let Some(at) = letter_position(rng, &chars) else {
        return s.to_owned();
    };
    let Some(&near) = neighbours(chars[at]).choose(rng) else {
        return s.to_owned();
    };
    chars[at] = if chars[at].is_uppercase() {
        near.to_ascii_uppercase()
    } else {
        near
    };
    chars.into_iter().collect()
}

/// What optical character recognition reads one shape as.
const OCR: &[(&str, &str)] = &[
    ("m", "rn"),
    ("rn", "m"),
    ("d", "cl"),
    ("cl", "d"),
    ("w", "vv"),
    ("h", "li"),
    ("u", "ii"),
    ("l", "i"),
    ("i", "l"),
    ("e", "c"),
    ("o", "c"),
    ("n", "ri"),
    ("g", "q"),
    ("0", "8"),
    ("8", "0"),
    ("1", "7"),
    ("7", "1"),
    ("5", "6"),
    ("6", "5"),
    ("3", "8"),
];

/// One OCR confusion.
pub fn ocr_error(rng: &mut StdRng, s: &str) -> String {
    replace_one_of(rng, s, OCR)
}

/// Respellings that keep the sound (both directions where both occur).
const PHONETIC: &[(&str, &str)] = &[
    ("ph", "f"),
    ("f", "ph"),
    ("ck", "k"),
    ("k", "ck"),
    ("c", "k"),
    ("k", "c"),
    ("ie", "y"),
    ("y", "ie"),
    ("ee", "ea"),
    ("ea", "ee"),
    ("ou", "ow"),
    ("s", "z"),
    ("z", "s"),
    ("th", "t"),
    ("mc", "mac"),
    ("mac", "mc"),
    ("ey", "y"),
    ("i", "y"),
    ("ai", "ay"),
    ("sh", "sch"),
    ("w", "v"),
    ("v", "w"),
    ("ll", "l"),
    ("nn", "n"),
    ("tt", "t"),
    ("ss", "s"),
];

/// One respelling that sounds the same.
pub fn phonetic_variant(rng: &mut StdRng, s: &str) -> String {
    replace_one_of(rng, s, PHONETIC)
}

/// Replaces one occurrence (case-insensitively, never the first letter of a rule that
/// would turn an initial into something unpronounceable) of one applicable rule.
fn replace_one_of(rng: &mut StdRng, s: &str, rules: &[(&str, &str)]) -> String {
    let lower = s.to_lowercase();
    if lower.len() != s.len() {
        // Multi-byte case changes: leave such names to the other corruptions.
        return s.to_owned();
    }
    let mut options: Vec<(usize, &str, &str)> = Vec::new();
    for (from, to) in rules {
        for (at, _) in lower.match_indices(from) {
            options.push((at, from, to));
        }
    }
    let Some(&(at, from, to)) = options.choose(rng) else {
        return s.to_owned();
    };
    let upper = s[at..].starts_with(|c: char| c.is_uppercase());
    let mut replacement = to.to_owned();
    if upper && let Some(head) = replacement.get(..1) {
        replacement = head.to_uppercase() + &replacement[1..];
    }
    format!("{}{}{}", &s[..at], replacement, &s[at + from.len()..])
}

/// Days in a month of the Gregorian calendar.
pub fn days_in_month(year: i32, month: u32) -> u32 {
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Whether `(year, month, day)` is a real date.
pub fn real_date((year, month, day): (i32, u32, u32)) -> bool {
    (1..=12).contains(&month) && day >= 1 && day <= days_in_month(year, month)
}

/// A uniformly random date in the given years.
pub fn random_date(rng: &mut StdRng, years: std::ops::RangeInclusive<i32>) -> (i32, u32, u32) {
    let year = rng.random_range(years);
    let month = rng.random_range(1..=12);
    let day = rng.random_range(1..=days_in_month(year, month));
    (year, month, day)
}

/// One digit of `yyyymmdd` mistyped so that the date stays real (a system refuses an
/// impossible date at entry), or `None` after a few tries.
pub fn date_typo(rng: &mut StdRng, date: (i32, u32, u32)) -> Option<(i32, u32, u32)> {
    let text = format!("{:04}{:02}{:02}", date.0, date.1, date.2);
    for _ in 0..40 {
        // The millennium and century digits are rarely wrong in a child's record.
        let at = rng.random_range(2..8);
        let mut digits: Vec<char> = text.chars().collect();
        digits[at] = if rng.random_bool(0.5) {
            neighbours(digits[at])
                .choose(rng)
                .copied()
                .unwrap_or(digits[at])
        } else {
            other_like(rng, digits[at])
        };
        let changed: String = digits.into_iter().collect();
        let (Ok(y), Ok(m), Ok(d)) = (
            changed[..4].parse::<i32>(),
            changed[4..6].parse::<u32>(),
            changed[6..].parse::<u32>(),
        ) else {
            continue;
        };
        if (y, m, d) != date && real_date((y, m, d)) && y <= 2025 {
            return Some((y, m, d));
        }
    }
    None
}

/// Day and month the wrong way round, when that is another real date.
pub fn date_swapped((year, month, day): (i32, u32, u32)) -> Option<(i32, u32, u32)> {
    (day != month && real_date((year, day, month))).then_some((year, day, month))
}

/// One digit of an identifier mistyped (a neighbouring key or any digit), or two
/// neighbouring digits swapped.
pub fn identifier_typo(rng: &mut StdRng, id: &str) -> String {
    let mut digits: Vec<char> = id.chars().collect();
    if digits.len() < 2 {
        return id.to_owned();
    }
    let at = rng.random_range(0..digits.len());
    match rng.random_range(0..3) {
        0 => {
            let next = if at + 1 < digits.len() {
                at + 1
            } else {
                at - 1
            };
            if digits[next] == digits[at] {
                digits[at] = other_like(rng, digits[at]);
            } else {
                digits.swap(at, next);
            }
        }
        1 => {
            digits[at] = neighbours(digits[at])
                .choose(rng)
                .copied()
                .unwrap_or_else(|| other_like(rng, digits[at]));
        }
        _ => digits[at] = other_like(rng, digits[at]),
    }
    digits.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn each_corruption_changes_its_input_or_says_it_cannot() {
        let mut rng = StdRng::seed_from_u64(7);
        for _ in 0..200 {
            assert_ne!(typo(&mut rng, "Amelia"), "Amelia");
            assert_ne!(keyboard_slip(&mut rng, "Amelia"), "Amelia");
            assert_ne!(ocr_error(&mut rng, "Amelia"), "Amelia");
            assert_ne!(identifier_typo(&mut rng, "4857773456"), "4857773456");
            let date = date_typo(&mut rng, (2015, 3, 14)).expect("a typo");
            assert!(real_date(date) && date != (2015, 3, 14));
        }
        assert_eq!(phonetic_variant(&mut rng, "Qqq"), "Qqq");
        assert_eq!(date_swapped((2015, 3, 14)), None);
        assert_eq!(date_swapped((2015, 3, 4)), Some((2015, 4, 3)));
        assert_eq!(
            crate::names::latin_spelling("Олександр Шевченко"),
            "Oleksandr Shevchenko"
        );
        assert_eq!(crate::names::latin_spelling("Юлія"), "Yuliia");
    }
}
