//! The CSV import row parser: any bytes, any of the four file kinds. It may
//! refuse a header or a row, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use patchwork_cli::work::csv_rows::{CsvKind, CsvRows};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, input)) = data.split_first() else {
        return;
    };
    let kind = match selector % 4 {
        0 => CsvKind::Persons,
        1 => CsvKind::Practitioners,
        2 => CsvKind::Organisations,
        _ => CsvKind::Involvements,
    };
    let Ok(mut rows) = CsvRows::new(kind, input) else {
        return;
    };
    for _ in 0..1_000 {
        if rows.next_row().is_none() {
            break;
        }
    }
});
