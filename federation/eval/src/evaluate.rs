//! The evaluation: the answering node holds a population's records; an asking node
//! asks about each error class's corrupted copies of held persons, and about people the
//! answering node does not hold (strangers and look-alikes). It counts, per class, the
//! right person found, a wrong person disclosed, "ambiguous" and "no match".

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use patchwork_federation::Subject;
use patchwork_proto::v1;
use prost::Message;
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};

use crate::corrupt::{
    date_swapped, date_typo, formatting_noise, identifier_typo, keyboard_slip, ocr_error,
    phonetic_variant, random_date, typo,
};
use crate::names::{Group, NICKNAMES_IN_USE, VARIANTS, latin_spelling};
use crate::population::{Person, Population, Scheme};

/// What the answering node said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It disclosed the team around this person.
    Matched(usize),
    NoMatch,
    Ambiguous,
}

/// An answering node under evaluation.
pub trait Answerer {
    /// Takes in one held person's record, as its own systems hold it.
    fn hold(&mut self, id: usize, record: &Subject);
    /// The asking node's side: what it sends for its record of someone.
    fn ask(&self, query: &Subject) -> Vec<v1::MatchKey>;
    /// The answering node's side: its answer to what was sent.
    fn answer(&self, wire: &[v1::MatchKey]) -> Outcome;
    /// Index entries and their bytes, over all held persons.
    fn footprint(&self) -> Footprint;
}

/// The size of an answering node's index.
#[derive(Debug, Clone, Copy, Default)]
pub struct Footprint {
    pub entries: usize,
    pub bytes: usize,
}

/// The fields a record has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Given,
    Family,
    Dob,
    Postcode,
    Id,
}

/// One kind of query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Exact,
    GivenTypo,
    GivenKeyboard,
    GivenOcr,
    GivenPhonetic,
    Nickname,
    GivenVariant,
    GivenReplaced,
    GivenMissing,
    FamilyTypo,
    FamilyKeyboard,
    FamilyOcr,
    FamilyPhonetic,
    FamilyReplaced,
    FamilyMissing,
    FamilyHalf,
    NamesSwapped,
    DobTypo,
    DobSwapped,
    DobReplaced,
    DobMissing,
    PostcodeMoved,
    PostcodeTypo,
    PostcodeMissing,
    IdTypo,
    IdReplaced,
    IdMissing,
    OtherScript,
    Confusable,
    HeldWithoutGiven,
    HeldWithoutFamily,
    TwoFields,
    Stranger,
    Sibling,
    Twin,
    TwinWithoutId,
    Namesake,
    NamesakeWithoutId,
    NamesakeWithoutPostcode,
}

impl Class {
    /// Every class, in the table's order.
    pub const ALL: [Class; 39] = [
        Class::Exact,
        Class::GivenTypo,
        Class::GivenKeyboard,
        Class::GivenOcr,
        Class::GivenPhonetic,
        Class::Nickname,
        Class::GivenVariant,
        Class::GivenReplaced,
        Class::GivenMissing,
        Class::FamilyTypo,
        Class::FamilyKeyboard,
        Class::FamilyOcr,
        Class::FamilyPhonetic,
        Class::FamilyReplaced,
        Class::FamilyMissing,
        Class::FamilyHalf,
        Class::NamesSwapped,
        Class::DobTypo,
        Class::DobSwapped,
        Class::DobReplaced,
        Class::DobMissing,
        Class::PostcodeMoved,
        Class::PostcodeTypo,
        Class::PostcodeMissing,
        Class::IdTypo,
        Class::IdReplaced,
        Class::IdMissing,
        Class::OtherScript,
        Class::Confusable,
        Class::HeldWithoutGiven,
        Class::HeldWithoutFamily,
        Class::TwoFields,
        Class::Stranger,
        Class::Sibling,
        Class::Twin,
        Class::TwinWithoutId,
        Class::Namesake,
        Class::NamesakeWithoutId,
        Class::NamesakeWithoutPostcode,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Class::Exact => "no error (formatting only)",
            Class::GivenTypo => "given: typing slip",
            Class::GivenKeyboard => "given: neighbouring key",
            Class::GivenOcr => "given: OCR confusion",
            Class::GivenPhonetic => "given: phonetic respelling",
            Class::Nickname => "given: nickname",
            Class::GivenVariant => "given: other spelling",
            Class::GivenReplaced => "given: replaced",
            Class::GivenMissing => "given: missing",
            Class::FamilyTypo => "family: typing slip",
            Class::FamilyKeyboard => "family: neighbouring key",
            Class::FamilyOcr => "family: OCR confusion",
            Class::FamilyPhonetic => "family: phonetic respelling",
            Class::FamilyReplaced => "family: replaced",
            Class::FamilyMissing => "family: missing",
            Class::FamilyHalf => "family: one half of a double name",
            Class::NamesSwapped => "given and family swapped",
            Class::DobTypo => "date of birth: digit typo",
            Class::DobSwapped => "date of birth: day/month swapped",
            Class::DobReplaced => "date of birth: replaced",
            Class::DobMissing => "date of birth: missing",
            Class::PostcodeMoved => "postcode: moved",
            Class::PostcodeTypo => "postcode: typo",
            Class::PostcodeMissing => "postcode: missing",
            Class::IdTypo => "identifier: typo",
            Class::IdReplaced => "identifier: replaced",
            Class::IdMissing => "identifier: missing",
            Class::OtherScript => "names in another script, no id",
            Class::Confusable => "held name, a look-alike letter, no id",
            Class::HeldWithoutGiven => "held without a given name",
            Class::HeldWithoutFamily => "held without a family name",
            Class::TwoFields => "two fields wrong",
            Class::Stranger => "NOT held: stranger",
            Class::Sibling => "NOT held: sibling",
            Class::Twin => "NOT held: twin",
            Class::TwinWithoutId => "NOT held: twin, asked without id",
            Class::Namesake => "NOT held: namesake, same birthday",
            Class::NamesakeWithoutId => "NOT held: namesake, asked without id",
            Class::NamesakeWithoutPostcode => "stress: namesake, no id, no postcode",
        }
    }

    /// Whether the answering node holds the person asked about.
    pub fn held(self) -> bool {
        !matches!(
            self,
            Class::Stranger
                | Class::Sibling
                | Class::Twin
                | Class::TwinWithoutId
                | Class::Namesake
                | Class::NamesakeWithoutId
                | Class::NamesakeWithoutPostcode
        )
    }

    /// The one field this class corrupts, for the classes that corrupt one.
    pub fn field(self) -> Option<Field> {
        use Class as C;
        match self {
            C::GivenTypo
            | C::GivenKeyboard
            | C::GivenOcr
            | C::GivenPhonetic
            | C::Nickname
            | C::GivenVariant
            | C::GivenReplaced
            | C::GivenMissing
            | C::HeldWithoutGiven => Some(Field::Given),
            C::FamilyTypo
            | C::FamilyKeyboard
            | C::FamilyOcr
            | C::FamilyPhonetic
            | C::FamilyReplaced
            | C::FamilyMissing
            | C::FamilyHalf
            | C::HeldWithoutFamily => Some(Field::Family),
            C::DobTypo | C::DobSwapped | C::DobReplaced | C::DobMissing => Some(Field::Dob),
            C::PostcodeMoved | C::PostcodeTypo | C::PostcodeMissing => Some(Field::Postcode),
            C::IdTypo | C::IdReplaced | C::IdMissing => Some(Field::Id),
            _ => None,
        }
    }

    /// Rows outside the totals: a stress case whose risk the rules accept.
    pub fn in_totals(self) -> bool {
        self != Class::NamesakeWithoutPostcode
    }

    /// The single-field classes a two-field query draws from.
    pub const SINGLE: [Class; 24] = [
        Class::GivenTypo,
        Class::GivenKeyboard,
        Class::GivenOcr,
        Class::GivenPhonetic,
        Class::Nickname,
        Class::GivenVariant,
        Class::GivenReplaced,
        Class::GivenMissing,
        Class::FamilyTypo,
        Class::FamilyKeyboard,
        Class::FamilyOcr,
        Class::FamilyPhonetic,
        Class::FamilyReplaced,
        Class::FamilyMissing,
        Class::DobTypo,
        Class::DobSwapped,
        Class::DobReplaced,
        Class::DobMissing,
        Class::PostcodeMoved,
        Class::PostcodeTypo,
        Class::PostcodeMissing,
        Class::IdTypo,
        Class::IdReplaced,
        Class::IdMissing,
    ];
}

/// One side's record of a person, before it becomes a [`Subject`].
#[derive(Debug, Clone)]
struct Record {
    given: Option<String>,
    family: Option<String>,
    dob: Option<(i32, u32, u32)>,
    postcode: Option<String>,
    id: Option<String>,
}

impl Record {
    /// The person as a system holds them: Latin letters, its own formatting.
    fn of(rng: &mut StdRng, person: &Person) -> Record {
        let latin = |name: &str| {
            if person.group == Group::Ukrainian {
                latin_spelling(name)
            } else {
                name.to_owned()
            }
        };
        Record {
            given: Some(formatting_noise(rng, &latin(&person.given))),
            family: Some(formatting_noise(rng, &latin(&person.family))),
            dob: Some(person.dob),
            postcode: Some(person.postcode.clone()),
            id: Some(person.national_id.clone()),
        }
    }

    fn subject(self, scheme: Scheme, rng: &mut StdRng) -> Subject {
        let id = self.id.map(|id| match scheme {
            // Systems print NHS numbers in groups of 3, 3 and 4.
            Scheme::Nhs if id.len() == 10 && rng.random_bool(0.3) => {
                format!("{} {} {}", &id[..3], &id[3..6], &id[6..])
            }
            _ => id,
        });
        Subject {
            given_name: self.given,
            family_name: self.family,
            date_of_birth: self.dob,
            postcode: self.postcode,
            national_id: id.map(|id| (scheme.name().to_owned(), id)),
        }
    }
}

/// Applies `class`'s error to the asking node's record, or says it cannot apply to this
/// person (`None`).
fn corrupt(
    rng: &mut StdRng,
    population: &Population,
    person: &Person,
    class: Class,
    record: &mut Record,
) -> Option<()> {
    let changed = |before: &Option<String>, after: String| -> Option<String> {
        (before.as_deref() != Some(after.as_str())).then_some(after)
    };
    let given = record.given.clone();
    let family = record.family.clone();
    match class {
        Class::Exact => {}
        Class::GivenTypo => record.given = Some(changed(&given, typo(rng, given.as_deref()?))?),
        Class::GivenKeyboard => {
            record.given = Some(changed(&given, keyboard_slip(rng, given.as_deref()?))?)
        }
        Class::GivenOcr => record.given = Some(changed(&given, ocr_error(rng, given.as_deref()?))?),
        Class::GivenPhonetic => {
            record.given = Some(changed(&given, phonetic_variant(rng, given.as_deref()?))?)
        }
        Class::Nickname => {
            let first = person.given.split(' ').next().unwrap_or_default();
            let (_, nicks) = NICKNAMES_IN_USE
                .iter()
                .find(|(formal, _)| *formal == first)?;
            record.given = Some((*nicks.choose(rng)?).to_owned());
        }
        Class::GivenVariant => {
            let first = person.given.split(' ').next().unwrap_or_default();
            let group = VARIANTS.iter().find(|g| g.contains(&first))?;
            let others: Vec<&&str> = group.iter().filter(|v| **v != first).collect();
            record.given = Some((**others.choose(rng)?).to_owned());
        }
        Class::GivenReplaced => record.given = Some(population.other_given(rng, person)),
        Class::GivenMissing => record.given = None,
        Class::FamilyTypo => record.family = Some(changed(&family, typo(rng, family.as_deref()?))?),
        Class::FamilyKeyboard => {
            record.family = Some(changed(&family, keyboard_slip(rng, family.as_deref()?))?)
        }
        Class::FamilyOcr => {
            record.family = Some(changed(&family, ocr_error(rng, family.as_deref()?))?)
        }
        Class::FamilyPhonetic => {
            record.family = Some(changed(&family, phonetic_variant(rng, family.as_deref()?))?)
        }
        Class::FamilyReplaced => record.family = Some(population.other_family(rng, person)),
        Class::FamilyMissing => record.family = None,
        Class::FamilyHalf => {
            let halves: Vec<&str> = person.family.split('-').collect();
            if halves.len() < 2 {
                return None;
            }
            record.family = Some((*halves.choose(rng)?).to_owned());
        }
        Class::NamesSwapped => std::mem::swap(&mut record.given, &mut record.family),
        Class::DobTypo => record.dob = Some(date_typo(rng, person.dob)?),
        Class::DobSwapped => record.dob = Some(date_swapped(person.dob)?),
        Class::DobReplaced => {
            let (year, _, _) = person.dob;
            loop {
                let other = random_date(rng, year - 3..=(year + 3).min(2024));
                if other != person.dob {
                    record.dob = Some(other);
                    break;
                }
            }
        }
        Class::DobMissing => record.dob = None,
        Class::PostcodeMoved => {
            record.postcode = Some(population.other_postcode(rng, &person.postcode))
        }
        Class::PostcodeTypo => {
            let typoed = typo(rng, &person.postcode);
            record.postcode = Some(changed(&record.postcode, typoed)?);
        }
        Class::PostcodeMissing => record.postcode = None,
        Class::IdTypo => {
            record.id = Some(changed(
                &record.id,
                identifier_typo(rng, &person.national_id),
            )?)
        }
        Class::IdReplaced => {
            // Half the time another member of the household's identifier (records
            // mixed up at a desk), otherwise a well-formed number of nobody's.
            let household = &population.households[person.household];
            let other = household
                .members
                .iter()
                .map(|&m| &population.persons[m])
                .find(|p| p.national_id != person.national_id)
                .filter(|_| rng.random_bool(0.5))
                .map(|p| p.national_id.clone());
            record.id = Some(other.unwrap_or_else(|| population.spec.scheme.random(rng)));
        }
        Class::IdMissing => record.id = None,
        Class::OtherScript => {
            if person.group != Group::Ukrainian {
                return None;
            }
            record.given = Some(person.given.clone());
            record.family = Some(person.family.clone());
            // Without the identifier, which would find the person on its own.
            record.id = None;
        }
        Class::TwoFields => {
            let first = *Class::SINGLE.choose(rng)?;
            let second = loop {
                let second = *Class::SINGLE.choose(rng)?;
                if second.field() != first.field() {
                    break second;
                }
            };
            corrupt(rng, population, person, first, record)?;
            corrupt(rng, population, person, second, record)?;
        }
        // These corrupt the held record, or ask about someone else.
        Class::Confusable
        | Class::HeldWithoutGiven
        | Class::HeldWithoutFamily
        | Class::Stranger
        | Class::Sibling
        | Class::Twin
        | Class::TwinWithoutId
        | Class::Namesake
        | Class::NamesakeWithoutId
        | Class::NamesakeWithoutPostcode => {}
    }
    Some(())
}

/// A Latin letter replaced by the Cyrillic letter drawn the same (`A` by `А`).
fn with_confusable(rng: &mut StdRng, name: &str) -> Option<String> {
    const HOMOGLYPHS: &[(char, char)] = &[
        ('A', 'А'),
        ('a', 'а'),
        ('E', 'Е'),
        ('e', 'е'),
        ('O', 'О'),
        ('o', 'о'),
        ('C', 'С'),
        ('c', 'с'),
        ('P', 'Р'),
        ('p', 'р'),
        ('H', 'Н'),
        ('K', 'К'),
        ('M', 'М'),
        ('T', 'Т'),
        ('x', 'х'),
        ('y', 'у'),
        ('i', 'і'),
    ];
    let chars: Vec<char> = name.chars().collect();
    let places: Vec<usize> = (0..chars.len())
        .filter(|&i| HOMOGLYPHS.iter().any(|(latin, _)| *latin == chars[i]))
        .collect();
    let &at = places.choose(rng)?;
    let cyrillic = HOMOGLYPHS.iter().find(|(l, _)| *l == chars[at])?.1;
    let mut out = chars;
    out[at] = cyrillic;
    Some(out.into_iter().collect())
}

/// One class's counts.
#[derive(Debug, Clone, Copy, Default)]
pub struct Tally {
    pub asked: usize,
    pub right: usize,
    pub wrong: usize,
    pub ambiguous: usize,
    pub no_match: usize,
}

impl Tally {
    /// The share of queries about held persons that found them.
    pub fn recall(&self) -> f64 {
        if self.asked == 0 {
            return 1.0;
        }
        self.right as f64 / self.asked as f64
    }

    fn add(&mut self, other: &Tally) {
        self.asked += other.asked;
        self.right += other.right;
        self.wrong += other.wrong;
        self.ambiguous += other.ambiguous;
        self.no_match += other.no_match;
    }
}

/// What one evaluation measured.
#[derive(Debug)]
pub struct Report {
    pub name: String,
    pub held: usize,
    pub rows: Vec<(Class, Tally)>,
    pub footprint: Footprint,
    pub query_bytes: usize,
    pub queries: usize,
    pub answering: Duration,
    pub indexing: Duration,
    /// A few wrong-person disclosures of each class: the query, who was asked
    /// about, and who was disclosed.
    pub wrong_examples: Vec<String>,
    /// A few queries of each class about held persons that did not find them.
    pub missed_examples: Vec<String>,
}

impl Report {
    /// All queries about held persons, classes in the totals.
    pub fn held_total(&self) -> Tally {
        let mut total = Tally::default();
        for (class, tally) in &self.rows {
            if class.held() && class.in_totals() {
                total.add(tally);
            }
        }
        total
    }

    /// Wrong-person disclosures over every row in the totals.
    pub fn wrong_total(&self) -> usize {
        self.rows
            .iter()
            .filter(|(class, _)| class.in_totals())
            .map(|(_, t)| t.wrong)
            .sum()
    }

    /// The lowest recall of a single-field class, with the class.
    pub fn weakest_single_field(&self) -> Option<(Class, f64)> {
        self.rows
            .iter()
            .filter(|(class, t)| class.field().is_some() && t.asked > 0)
            .map(|(class, t)| (*class, t.recall()))
            .min_by(|a, b| a.1.total_cmp(&b.1))
    }

    pub fn micros_per_query(&self) -> f64 {
        self.answering.as_secs_f64() * 1e6 / self.queries.max(1) as f64
    }

    /// The table, for a person to read.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "\n{} — {} persons held", self.name, self.held);
        let _ = writeln!(
            out,
            "{:<38} {:>6} {:>7} {:>6} {:>7} {:>7} {:>7}",
            "class", "asked", "recall", "wrong", "ambig.", "no m.", ""
        );
        let row = |out: &mut String, label: &str, t: &Tally, held: bool| {
            let recall = if held {
                format!("{:.4}", t.recall())
            } else {
                "-".to_owned()
            };
            let _ = writeln!(
                out,
                "{:<38} {:>6} {:>7} {:>6} {:>7} {:>7}",
                label, t.asked, recall, t.wrong, t.ambiguous, t.no_match
            );
        };
        for (class, tally) in &self.rows {
            row(&mut out, class.label(), tally, class.held());
        }
        let total = self.held_total();
        row(&mut out, "ALL queries about held persons", &total, true);
        let ambiguous_rate = total.ambiguous as f64 / total.asked.max(1) as f64;
        let _ = writeln!(
            out,
            "wrong-person disclosures (all rows in totals): {}; ambiguous rate (held): {:.4}",
            self.wrong_total(),
            ambiguous_rate
        );
        if let Some((class, recall)) = self.weakest_single_field() {
            let _ = writeln!(
                out,
                "weakest single-field class: {} ({recall:.4})",
                class.label()
            );
        }
        let held = self.held.max(1) as f64;
        let _ = writeln!(
            out,
            "index: {:.1} entries and {:.0} bytes per person; a query: {:.0} bytes on average",
            self.footprint.entries as f64 / held,
            self.footprint.bytes as f64 / held,
            self.query_bytes as f64 / self.queries.max(1) as f64,
        );
        let _ = writeln!(
            out,
            "answering node: {:.1} µs per query ({} queries; sled reads not included); indexing: {:.1} µs per person",
            self.micros_per_query(),
            self.queries,
            self.indexing.as_secs_f64() * 1e6 / held
        );
        out
    }
}

/// Holds `population`'s held persons in `answerer`, then asks `per_class` queries of
/// each class.
pub fn evaluate(
    name: &str,
    population: &Population,
    answerer: &mut dyn Answerer,
    per_class: usize,
    seed: u64,
) -> Report {
    let mut rng = StdRng::seed_from_u64(seed);
    let scheme = population.spec.scheme;
    let held: Vec<usize> = population.held().map(|(i, _)| i).collect();
    let started = Instant::now();
    let held_as = hold_all(population, answerer, seed);
    let indexing = started.elapsed();

    let not_held: Vec<usize> = population
        .persons
        .iter()
        .enumerate()
        .filter(|(_, p)| !p.held)
        .map(|(i, _)| i)
        .collect();
    let mut rows = Vec::new();
    let mut answering = Duration::ZERO;
    let mut queries = 0;
    let mut query_bytes = 0;
    let mut wrong_examples = Vec::new();
    let mut missed_examples = Vec::new();
    for class in Class::ALL {
        let mut tally = Tally::default();
        let mut attempts = 0;
        while tally.asked < per_class && attempts < per_class * 200 {
            attempts += 1;
            let Some((target, query)) =
                query_for(&mut rng, population, &held, &held_as, &not_held, class)
            else {
                continue;
            };
            let subject = query.subject(scheme, &mut rng);
            let wire = answerer.ask(&subject);
            let started = Instant::now();
            let outcome = answerer.answer(&wire);
            answering += started.elapsed();
            queries += 1;
            query_bytes += wire.iter().map(Message::encoded_len).sum::<usize>();
            tally.asked += 1;
            match outcome {
                Outcome::Matched(found) if Some(found) == target => tally.right += 1,
                Outcome::Matched(found) => {
                    tally.wrong += 1;
                    if tally.wrong <= 3 {
                        wrong_examples.push(format!(
                            "{}: asked {subject:?} about {:?}, disclosed {:?}",
                            class.label(),
                            target.map(|t| &population.persons[t]),
                            population.persons[found],
                        ));
                    }
                }
                Outcome::Ambiguous => tally.ambiguous += 1,
                Outcome::NoMatch => tally.no_match += 1,
            }
            let missed = tally.asked - tally.right - tally.wrong;
            if class.held()
                && outcome != Outcome::Matched(target.unwrap_or(usize::MAX))
                && missed <= 3
            {
                missed_examples.push(format!(
                    "{}: {outcome:?} for {subject:?} about {:?}",
                    class.label(),
                    target.map(|t| &population.persons[t]),
                ));
            }
        }
        rows.push((class, tally));
    }
    Report {
        name: name.to_owned(),
        held: held.len(),
        rows,
        footprint: answerer.footprint(),
        query_bytes,
        queries,
        answering,
        indexing,
        wrong_examples,
        missed_examples,
    }
}

/// Gives `answerer` every held person's record, as the answering node's systems hold
/// them: mostly as they are, a few with a name unknown or written with a look-alike
/// letter (the classes that ask about those). Returns which persons are held so.
pub fn hold_all(
    population: &Population,
    answerer: &mut dyn Answerer,
    seed: u64,
) -> Vec<Option<Class>> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x401d);
    let scheme = population.spec.scheme;
    let held: Vec<usize> = population.held().map(|(i, _)| i).collect();
    let per_class = held.len() / 40;
    let mut held_as: Vec<Option<Class>> = vec![None; population.persons.len()];
    for special in [
        Class::Confusable,
        Class::HeldWithoutGiven,
        Class::HeldWithoutFamily,
    ] {
        let mut chosen = 0;
        while chosen < per_class {
            let &id = held.choose(&mut rng).unwrap_or(&0);
            if held_as[id].is_none() {
                held_as[id] = Some(special);
                chosen += 1;
            }
        }
    }
    for &id in &held {
        let person = &population.persons[id];
        let mut record = Record::of(&mut rng, person);
        match held_as[id] {
            Some(Class::Confusable) => {
                record.given = record
                    .given
                    .as_deref()
                    .and_then(|g| with_confusable(&mut rng, g))
                    .or(record.given);
            }
            Some(Class::HeldWithoutGiven) => record.given = None,
            Some(Class::HeldWithoutFamily) => record.family = None,
            _ => {}
        }
        answerer.hold(id, &record.subject(scheme, &mut rng));
    }
    held_as
}

/// A query of `class`: the held person it is about (`None` when it is about someone
/// not held) and the asking node's record.
fn query_for(
    rng: &mut StdRng,
    population: &Population,
    held: &[usize],
    held_as: &[Option<Class>],
    not_held: &[usize],
    class: Class,
) -> Option<(Option<usize>, Record)> {
    if class.held() {
        let &id = held.choose(rng)?;
        let wanted_as = match class {
            Class::Confusable | Class::HeldWithoutGiven | Class::HeldWithoutFamily => Some(class),
            _ => None,
        };
        if held_as[id] != wanted_as {
            return None;
        }
        let person = &population.persons[id];
        let mut record = Record::of(rng, person);
        corrupt(rng, population, person, class, &mut record)?;
        if class == Class::Confusable {
            record.id = None;
        }
        return Some((Some(id), record));
    }
    let &id = not_held.choose(rng)?;
    let person = &population.persons[id];
    let mut record = Record::of(rng, person);
    let held_twin = person.twin.is_some_and(|t| population.persons[t].held);
    let held_sibling = population.households[person.household]
        .members
        .iter()
        .any(|&m| m != id && population.persons[m].held && person.twin != Some(m));
    match class {
        Class::Stranger if person.twin.is_none() && person.namesake_of.is_none() => {}
        Class::Sibling if held_sibling && person.twin.is_none() => {}
        Class::Twin if held_twin => {}
        Class::TwinWithoutId if held_twin => record.id = None,
        Class::Namesake if person.namesake_of.is_some() => {}
        Class::NamesakeWithoutId if person.namesake_of.is_some() => record.id = None,
        Class::NamesakeWithoutPostcode if person.namesake_of.is_some() => {
            record.id = None;
            record.postcode = None;
        }
        _ => return None,
    }
    Some((None, record))
}

/// Asks `n` queries with both `first` and `second`'s errors (a diagnosis of the
/// two-field class); `answerer` must already hold the population.
pub fn ask_pair(
    population: &Population,
    answerer: &dyn Answerer,
    (first, second): (Class, Class),
    n: usize,
    seed: u64,
) -> Tally {
    let mut rng = StdRng::seed_from_u64(seed);
    let scheme = population.spec.scheme;
    let held: Vec<usize> = population.held().map(|(i, _)| i).collect();
    let mut tally = Tally::default();
    let mut attempts = 0;
    while tally.asked < n && attempts < n * 200 {
        attempts += 1;
        let Some(&id) = held.choose(&mut rng) else {
            break;
        };
        let person = &population.persons[id];
        let mut record = Record::of(&mut rng, person);
        if corrupt(&mut rng, population, person, first, &mut record).is_none()
            || corrupt(&mut rng, population, person, second, &mut record).is_none()
        {
            continue;
        }
        tally.asked += 1;
        let wire = answerer.ask(&record.subject(scheme, &mut rng));
        match answerer.answer(&wire) {
            Outcome::Matched(found) if found == id => tally.right += 1,
            Outcome::Matched(_) => tally.wrong += 1,
            Outcome::Ambiguous => tally.ambiguous += 1,
            Outcome::NoMatch => tally.no_match += 1,
        }
    }
    tally
}
