//! Match-key normalisation: names, postcodes and national identifiers in
//! any Unicode normalise without panicking, idempotently, and blind into
//! keys.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use patchwork_federation::{
    KeySet, Subject, is_plausible_postcode, name_tokens, normalise_name, normalise_national_id,
    normalise_postcode, query_keys,
};

fn key_set() -> &'static KeySet {
    static SET: OnceLock<KeySet> = OnceLock::new();
    SET.get_or_init(|| KeySet::new("fuzz", &[7u8; 32]).expect("key set"))
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut parts = text.splitn(5, '\u{1f}');
    let given = parts.next().unwrap_or_default();
    let family = parts.next().unwrap_or_default();
    let postcode = parts.next().unwrap_or_default();
    let scheme = parts.next().unwrap_or_default();
    let value = parts.next().unwrap_or_default();

    let name = normalise_name(family);
    assert_eq!(
        normalise_name(&name),
        name,
        "normalising a name is idempotent"
    );
    let _ = name_tokens(given);
    let code = normalise_postcode(postcode);
    assert_eq!(
        normalise_postcode(&code),
        code,
        "normalising a postcode is idempotent"
    );
    let _ = is_plausible_postcode(postcode);
    let national_id = normalise_national_id(scheme, value)
        .ok()
        .map(|v| (scheme.to_owned(), v));
    let subject = Subject {
        given_name: Some(given.to_owned()),
        family_name: Some(family.to_owned()),
        date_of_birth: data.first().map(|b| {
            (
                2000 + i32::from(*b % 30),
                1 + u32::from(*b % 12),
                1 + u32::from(*b % 28),
            )
        }),
        postcode: Some(postcode.to_owned()),
        national_id,
    };
    let _ = query_keys(key_set(), &subject);
});
