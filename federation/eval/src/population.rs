//! A seeded synthetic population: households of one or two adults and their children,
//! twins (about 3 % of births, often with look-alike names), namesakes elsewhere with
//! the same date of birth, names from nine groups (one written in Cyrillic by some
//! systems), and a national identifier for everyone in one of three schemes.
//!
//! The answering node holds most persons; the rest are the people it does *not* hold:
//! strangers, one twin of some pairs, and every constructed namesake. Asking about those
//! must never disclose anyone.

use std::collections::HashSet;

use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};

use crate::corrupt::random_date;
use crate::names::{Group, LOOK_ALIKES, list, names};

/// How a population's national identifiers are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// NHS numbers: ten digits, the last a modulus-11 check digit, which catches every
    /// single mistyped digit and every swap of two neighbours.
    Nhs,
    /// An opaque number of this many digits without a check digit: a typo gives
    /// another well-formed number.
    Opaque(usize),
}

impl Scheme {
    /// The scheme's name as a node's configuration and a query carry it.
    pub fn name(self) -> &'static str {
        match self {
            Scheme::Nhs => "nhs",
            Scheme::Opaque(_) => "crn",
        }
    }

    /// Whether a mistyped identifier is caught at entry.
    pub fn has_check_digit(self) -> bool {
        self == Scheme::Nhs
    }

    /// A random well-formed identifier of the scheme.
    pub fn random(self, rng: &mut StdRng) -> String {
        match self {
            Scheme::Nhs => loop {
                let digits: Vec<u32> = (0..9).map(|_| rng.random_range(0..10)).collect();
                let sum: u32 = digits.iter().zip((2..=10).rev()).map(|(d, w)| d * w).sum();
                let check = match 11 - sum % 11 {
                    11 => 0,
                    10 => continue,
                    c => c,
                };
                return digits
                    .iter()
                    .chain(std::iter::once(&check))
                    .map(|d| char::from_digit(*d, 10).unwrap_or('0'))
                    .collect();
            },
            Scheme::Opaque(len) => (0..len)
                .map(|i| {
                    let low = u8::from(i == 0);
                    char::from(b'0' + rng.random_range(low..10))
                })
                .collect(),
        }
    }
}

/// How a population's postcodes look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Geography {
    /// Unit postcodes (`RH1 1AA`): about fifteen households each.
    England,
    /// Four-digit postcodes (`3056`): a whole suburb each.
    Victoria,
}

/// What a population is built from.
#[derive(Debug, Clone, Copy)]
pub struct PopulationSpec {
    /// How many persons the answering node holds.
    pub held: usize,
    pub scheme: Scheme,
    pub geography: Geography,
    pub seed: u64,
}

/// One real person, as the truth has them (before any system's errors).
#[derive(Debug, Clone)]
pub struct Person {
    pub given: String,
    pub family: String,
    pub dob: (i32, u32, u32),
    pub postcode: String,
    pub national_id: String,
    pub group: Group,
    pub girl: bool,
    pub household: usize,
    /// The other twin, for a twin.
    pub twin: Option<usize>,
    /// The person this one shares names and birthday with, for a constructed namesake.
    pub namesake_of: Option<usize>,
    /// Whether the answering node holds this person.
    pub held: bool,
}

/// A household: its members share a postcode and usually the family name.
#[derive(Debug, Clone)]
pub struct Household {
    pub group: Group,
    pub members: Vec<usize>,
}

/// Everyone, with the households they live in.
#[derive(Debug)]
pub struct Population {
    pub spec: PopulationSpec,
    pub persons: Vec<Person>,
    pub households: Vec<Household>,
    postcodes: Vec<String>,
}

/// Picks roughly Zipf-like: early entries are much more common, as with real names.
fn skewed<'a>(rng: &mut StdRng, items: &[&'a str]) -> &'a str {
    let u: f64 = rng.random();
    let index = ((u * u) * items.len() as f64) as usize;
    items[index.min(items.len() - 1)]
}

/// Whether no child of the household is already called `given`'s first name (or a
/// form of it): parents do not give two children one name.
fn first_name_free(taken: &HashSet<String>, given: &str) -> bool {
    let first = |name: &str| name.split(' ').next().unwrap_or_default().to_owned();
    !taken
        .iter()
        .any(|other| crate::names::same_name(&first(other), &first(given)))
}

struct Builder {
    rng: StdRng,
    spec: PopulationSpec,
    persons: Vec<Person>,
    households: Vec<Household>,
    postcodes: Vec<String>,
    ids: HashSet<String>,
}

impl Population {
    /// Builds the population `spec` describes; the same spec always gives the same one.
    pub fn new(spec: PopulationSpec) -> Population {
        let mut rng = StdRng::seed_from_u64(spec.seed);
        let postcodes = postcode_pool(&mut rng, spec);
        let mut builder = Builder {
            rng,
            spec,
            persons: Vec::with_capacity(spec.held + spec.held / 8),
            households: Vec::new(),
            postcodes,
            ids: HashSet::new(),
        };
        let mut held = 0;
        while held < spec.held {
            let household = builder.household();
            held += builder.households[household]
                .members
                .iter()
                .filter(|&&p| builder.persons[p].held)
                .count();
        }
        builder.namesakes();
        Population {
            spec,
            persons: builder.persons,
            households: builder.households,
            postcodes: builder.postcodes,
        }
    }

    /// Another postcode of the population, not `than`: a move.
    pub fn other_postcode(&self, rng: &mut StdRng, than: &str) -> String {
        loop {
            let postcode = self.postcodes.choose(rng).cloned().unwrap_or_default();
            if postcode != than {
                return postcode;
            }
        }
    }

    /// Another plausible given name for `person` (same group and sex, not a name they
    /// could be called by).
    pub fn other_given(&self, rng: &mut StdRng, person: &Person) -> String {
        let n = names(person.group);
        let pool = list(if person.girl { n.girls } else { n.boys });
        loop {
            let name = skewed(rng, &pool);
            if !crate::names::same_name(name, &person.given) {
                return name.to_owned();
            }
        }
    }

    /// Another plausible family name for `person` (same group).
    pub fn other_family(&self, rng: &mut StdRng, person: &Person) -> String {
        let pool = list(names(person.group).families);
        loop {
            let name = skewed(rng, &pool);
            if name != person.family {
                return name.to_owned();
            }
        }
    }

    /// The persons the answering node holds.
    pub fn held(&self) -> impl Iterator<Item = (usize, &Person)> {
        self.persons.iter().enumerate().filter(|(_, p)| p.held)
    }
}

fn postcode_pool(rng: &mut StdRng, spec: PopulationSpec) -> Vec<String> {
    match spec.geography {
        // About forty persons to a unit postcode, as in England.
        Geography::England => {
            let areas = ["RH", "BN", "GU", "KT", "CR", "SM", "TN", "ME", "SE", "SW"];
            let count = (spec.held / 40).max(200);
            let mut seen = HashSet::new();
            let mut out = Vec::with_capacity(count);
            while out.len() < count {
                let area = areas.choose(rng).copied().unwrap_or("RH");
                let district = rng.random_range(1..=30);
                let sector = rng.random_range(0..=9);
                let a = char::from(rng.random_range(b'A'..=b'Z'));
                let b = char::from(rng.random_range(b'A'..=b'Z'));
                let postcode = format!("{area}{district} {sector}{a}{b}");
                if seen.insert(postcode.clone()) {
                    out.push(postcode);
                }
            }
            out
        }
        // Victoria's suburbs: 3000-3999, some much bigger than others.
        Geography::Victoria => (3000..4000)
            .filter(|_| rng.random_bool(0.7))
            .map(|n: u32| n.to_string())
            .collect(),
    }
}

impl Builder {
    fn national_id(&mut self) -> String {
        loop {
            let id = self.spec.scheme.random(&mut self.rng);
            if self.ids.insert(id.clone()) {
                return id;
            }
        }
    }

    fn group(&mut self) -> Group {
        let england = self.spec.geography == Geography::England;
        let roll = self.rng.random_range(0..100);
        match (england, roll) {
            (true, 0..50) | (false, 0..45) => Group::English,
            (true, 50..60) | (false, 45..52) => Group::Irish,
            (true, 60..72) | (false, 52..60) => Group::SouthAsian,
            (true, 72..80) | (false, 60..64) => Group::Polish,
            (true, 80..88) | (false, 64..68) => Group::WestAfrican,
            (true, 88..92) | (false, 68..78) => Group::Italian,
            (true, 92..94) | (false, 78..86) => Group::Greek,
            (true, 94..96) | (false, 86..95) => Group::Vietnamese,
            _ => Group::Ukrainian,
        }
    }

    fn given(&mut self, group: Group, girl: bool) -> String {
        let n = names(group);
        let pool = list(if girl { n.girls } else { n.boys });
        let mut name = skewed(&mut self.rng, &pool).to_owned();
        // Some records carry a middle name.
        if self.rng.random_bool(0.12) {
            let middle = skewed(&mut self.rng, &pool);
            if middle != name {
                name = format!("{name} {middle}");
            }
        }
        name
    }

    fn family(&mut self, group: Group) -> String {
        let families = list(names(group).families);
        let first = skewed(&mut self.rng, &families);
        if group == Group::English && self.rng.random_bool(0.05) {
            let second = skewed(&mut self.rng, &families);
            if second != first {
                return format!("{first}-{second}");
            }
        }
        first.to_owned()
    }

    #[allow(clippy::too_many_arguments)]
    fn add(
        &mut self,
        household: usize,
        given: String,
        family: String,
        dob: (i32, u32, u32),
        girl: bool,
        postcode: &str,
    ) -> usize {
        let id = self.persons.len();
        let national_id = self.national_id();
        // A few persons the answering node has never met.
        let held = !self.rng.random_bool(0.04);
        self.persons.push(Person {
            given,
            family,
            dob,
            postcode: postcode.to_owned(),
            national_id,
            group: self.households[household].group,
            girl,
            household,
            twin: None,
            namesake_of: None,
            held,
        });
        self.households[household].members.push(id);
        id
    }

    /// A household of one or two adults and one to four children, twins included.
    fn household(&mut self) -> usize {
        let group = self.group();
        let family = self.family(group);
        let postcode = self
            .postcodes
            .choose(&mut self.rng)
            .cloned()
            .unwrap_or_default();
        let id = self.households.len();
        self.households.push(Household {
            group,
            members: Vec::new(),
        });
        let mother_family = if self.rng.random_bool(0.3) {
            self.family(group)
        } else {
            family.clone()
        };
        let mother = self.given(group, true);
        let dob = random_date(&mut self.rng, 1970..=2000);
        self.add(id, mother, mother_family, dob, true, &postcode);
        if self.rng.random_bool(0.5) {
            let father = self.given(group, false);
            let dob = random_date(&mut self.rng, 1965..=2000);
            self.add(id, father, family.clone(), dob, false, &postcode);
        }
        let children = self.rng.random_range(1..=4);
        let mut year = self.rng.random_range(2006..=2020);
        let mut taken: HashSet<String> = HashSet::new();
        for _ in 0..children {
            let dob = random_date(&mut self.rng, year..=year);
            let girl = self.rng.random_bool(0.5);
            let given = self.given(group, girl);
            if !first_name_free(&taken, &given) {
                continue;
            }
            taken.insert(given.clone());
            let child = self.add(id, given.clone(), family.clone(), dob, girl, &postcode);
            if self.rng.random_bool(0.03) {
                self.twin(child, &mut taken);
            }
            year += self.rng.random_range(1..=4);
            if year > 2024 {
                break;
            }
        }
        id
    }

    /// A twin of `child`, with a look-alike name when there is one; half the time the
    /// answering node holds only one of the two.
    fn twin(&mut self, child: usize, taken: &mut HashSet<String>) {
        let first = self.persons[child].clone();
        let alike = LOOK_ALIKES.iter().find_map(|(a, b)| {
            (*a == first.given)
                .then_some(*b)
                .or_else(|| (*b == first.given).then_some(*a))
        });
        let (given, girl) = match alike {
            Some(name) => {
                let girl = list(names(first.group).girls).contains(&name) || first.girl;
                (name.to_owned(), girl)
            }
            None => {
                let girl = self.rng.random_bool(0.5);
                (self.given(first.group, girl), girl)
            }
        };
        if !first_name_free(taken, &given) {
            return;
        }
        taken.insert(given.clone());
        let twin = self.add(
            first.household,
            given,
            first.family.clone(),
            first.dob,
            girl,
            &first.postcode,
        );
        self.persons[twin].twin = Some(child);
        self.persons[child].twin = Some(twin);
        if self.rng.random_bool(0.5) {
            self.persons[twin].held = false;
            self.persons[child].held = true;
        }
    }

    /// For about one child in two hundred, someone elsewhere with the same names and
    /// birthday whom the answering node does not hold.
    fn namesakes(&mut self) {
        let count = self.persons.len();
        for original in 0..count {
            let person = self.persons[original].clone();
            if !person.held || person.dob.0 < 2006 || !self.rng.random_bool(0.005) {
                continue;
            }
            let household = self.households.len();
            self.households.push(Household {
                group: person.group,
                members: Vec::new(),
            });
            let postcode = loop {
                let postcode = self
                    .postcodes
                    .choose(&mut self.rng)
                    .cloned()
                    .unwrap_or_default();
                if postcode != person.postcode {
                    break postcode;
                }
            };
            let namesake = self.add(
                household,
                person.given.clone(),
                person.family.clone(),
                person.dob,
                person.girl,
                &postcode,
            );
            self.persons[namesake].namesake_of = Some(original);
            self.persons[namesake].held = false;
        }
    }
}
