//! Synthetic, realistic-looking records for demos, load tests and
//! benchmarks: names with accents, hyphens and apostrophes, valid NHS numbers,
//! UK-shaped postcodes. Deterministic for a seed, so runs are comparable.
//! None of it is anyone's real data.

use std::io::Write;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const GIVEN: &[&str] = &[
    "Amelia", "Olivia", "Isla", "Ava", "Mia", "Ivy", "Lily", "Isabella", "Rosie", "Sophia",
    "Grace", "Freya", "Zoë", "Chloé", "Aoife", "Siobhan", "Niamh", "Priya", "Aisha", "Fatima",
    "Maryam", "Zainab", "Amara", "Chidi", "Oliver", "George", "Noah", "Arthur", "Muhammad", "Leo",
    "Harry", "Oscar", "Archie", "Henry", "Theo", "Jack", "Charlie", "Finley", "Freddie", "Alfie",
    "Jacob", "Thomas", "William", "Joshua", "Reuben", "Kai", "Ethan", "Mason", "Dylan", "Logan",
    "Seán", "Ciarán", "Rhys", "Dafydd", "Eilidh", "Mairi", "Callum", "Lachlan", "Hamish", "Aarav",
    "Rohan", "Arjun", "Ibrahim", "Yusuf", "Omar", "Tomasz", "Zofia", "Jakub", "Wiktoria", "Ana",
    "Mateo", "Lucía", "José", "Björn", "Anaïs", "Noémie", "Kwame", "Ama", "Kofi", "Thandiwe",
];

const FAMILY: &[&str] = &[
    "Smith",
    "Jones",
    "Taylor",
    "Brown",
    "Williams",
    "Wilson",
    "Johnson",
    "Davies",
    "Robinson",
    "Wright",
    "Thompson",
    "Evans",
    "Walker",
    "White",
    "Roberts",
    "Green",
    "Hall",
    "Wood",
    "Jackson",
    "Clarke",
    "Patel",
    "Khan",
    "Ahmed",
    "Ali",
    "Hussain",
    "Begum",
    "Singh",
    "Kaur",
    "Shah",
    "O'Brien",
    "O'Connor",
    "McDonald",
    "MacLeod",
    "Murphy",
    "Kelly",
    "Byrne",
    "Nowak",
    "Kowalski",
    "Wiśniewska",
    "Okafor",
    "Adeyemi",
    "Mensah",
    "Owusu",
    "Nguyen",
    "Tran",
    "Chen",
    "Wang",
    "Li",
    "García",
    "Fernández",
    "Müller",
    "Dubois",
    "Lefèvre",
    "Rossi",
    "Papadopoulos",
    "Smith-Jones",
    "Hughes",
    "Edwards",
    "Lewis",
    "Harris",
    "Martin",
    "Cooper",
    "King",
    "Baker",
    "Turner",
    "Hill",
    "Scott",
    "Ward",
    "Morris",
    "Moore",
    "Price",
    "Bennett",
    "Carter",
    "Phillips",
    "Mitchell",
];

const STREETS: &[&str] = &[
    "High Street",
    "Station Road",
    "Church Lane",
    "Victoria Road",
    "Park Avenue",
    "London Road",
    "The Crescent",
    "Mill Lane",
    "Queen's Road",
    "King Street",
    "Manor Way",
    "Elm Grove",
];

const TOWNS: &[(&str, &str)] = &[
    ("Guildford", "GU"),
    ("Woking", "GU"),
    ("Redhill", "RH"),
    ("Epsom", "KT"),
    ("Brighton", "BN"),
    ("Hove", "BN"),
    ("Crawley", "RH"),
    ("Croydon", "CR"),
    ("Staines", "TW"),
    ("Farnham", "GU"),
];

fn pick<'a>(rng: &mut StdRng, items: &[&'a str]) -> &'a str {
    items[rng.random_range(0..items.len())]
}

/// A random NHS number with a valid mod-11 check digit.
pub fn nhs_number(rng: &mut StdRng) -> String {
    loop {
        let digits: Vec<u32> = (0..9).map(|_| rng.random_range(0..10)).collect();
        let sum: u32 = digits
            .iter()
            .enumerate()
            .map(|(i, d)| d * (10 - i as u32))
            .sum();
        let check = (11 - sum % 11) % 11;
        if check == 10 || digits.iter().all(|d| *d == digits[0]) {
            continue;
        }
        return digits
            .iter()
            .chain(std::iter::once(&check))
            .map(|d| char::from(b'0' + *d as u8))
            .collect();
    }
}

fn postcode(rng: &mut StdRng, area: &str) -> String {
    let letter = |rng: &mut StdRng| char::from(b'A' + rng.random_range(0..26u8));
    format!(
        "{area}{} {}{}{}",
        rng.random_range(1..30),
        rng.random_range(0..10),
        letter(rng),
        letter(rng)
    )
}

/// Writes `count` persons as a persons CSV (the import format) to `out`.
pub fn write_persons(out: &mut impl Write, count: u64, seed: u64) -> std::io::Result<()> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut csv = csv::Writer::from_writer(out);
    csv.write_record([
        "id",
        "given_name",
        "family_name",
        "date_of_birth",
        "postcode",
        "address",
        "national_id",
    ])?;
    for n in 0..count {
        let (town, area) = TOWNS[rng.random_range(0..TOWNS.len())];
        let given = pick(&mut rng, GIVEN);
        let family = pick(&mut rng, FAMILY);
        let dob = format!(
            "{}-{:02}-{:02}",
            rng.random_range(1940..2025),
            rng.random_range(1..13),
            rng.random_range(1..29)
        );
        // Most records carry an NHS number; some never had one recorded.
        let nhs = if rng.random_bool(0.8) {
            nhs_number(&mut rng)
        } else {
            String::new()
        };
        let address = format!(
            "{} {}, {town}",
            rng.random_range(1..200),
            pick(&mut rng, STREETS)
        );
        csv.write_record([
            format!("P{n:08}"),
            given.to_owned(),
            family.to_owned(),
            dob,
            postcode(&mut rng, area),
            address,
            nhs,
        ])?;
    }
    csv.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_nhs_numbers_are_valid() {
        let mut rng = StdRng::seed_from_u64(7);
        for _ in 0..1000 {
            assert!(patchwork_federation::nhs_number_is_valid(&nhs_number(
                &mut rng
            )));
        }
    }

    #[test]
    fn synthetic_persons_import_cleanly() {
        let mut bytes = Vec::new();
        write_persons(&mut bytes, 500, 1).expect("write");
        let mut rows =
            crate::csv_rows::CsvRows::new(crate::csv_rows::CsvKind::Persons, bytes.as_slice())
                .expect("header");
        let rules = crate::validate::Rules::new("nhs");
        let mut count = 0;
        while let Some((line, row)) = rows.next_row() {
            let Ok(patchwork_proto::v1::import_row::Record::Person(person)) = row else {
                panic!("line {line}: {row:?}")
            };
            crate::validate::person(&person, "", &rules)
                .unwrap_or_else(|e| panic!("line {line}: {e}"));
            count += 1;
        }
        assert_eq!(count, 500);
    }
}
