//! Measures how well blinded match keys and `decide` find the right person, and how
//! rarely they find the wrong one, on a synthetic but realistic population.
//!
//! A seeded generator builds households (English, Irish, South-Asian, Polish and
//! West-African names, accents, apostrophes, double-barrelled names, twins with
//! sound-alike names), indexes 20,000 persons the way an answering node would, then asks
//! about them with the errors real records carry, and about people who are *not* indexed
//! (strangers, and look-alike siblings sharing surname, postcode and sometimes the date of
//! birth). Both the answering and the asking record hold the national id 80% of the time,
//! independently. Run with `--nocapture` to see the table.
//!
//! The assertions are the product's promises: wrong-person disclosures at most 0.05% of
//! queries, and recall at least 0.85 over queries for indexed persons (every error class
//! weighted equally). A stress row outside the totals shows the residual risk the rules
//! accept: a namesake elsewhere (same names and birthday), asked about without a postcode.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt::Write as _;
use std::time::Instant;

use patchwork_federation::{
    Candidate, Decision, Digest, KeySet, Subject, decide, index_keys, query_keys,
};
use patchwork_proto::v1::MatchKeyKind;
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};

const POPULATION: usize = 20_000;
const QUERIES_PER_CLASS: usize = 1_000;
const NON_INDEXED_PER_CLASS: usize = 2_000;
const SEED: u64 = 0x9a7c_4b0e;

// ---------------------------------------------------------------------------------------
// Names
// ---------------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq)]
enum Group {
    English,
    Irish,
    SouthAsian,
    Polish,
    WestAfrican,
}

/// Comma-separated name lists, most common first.
struct Names {
    boys: &'static str,
    girls: &'static str,
    families: &'static str,
}

fn list(names: &'static str) -> Vec<&'static str> {
    names.split(',').map(str::trim).collect()
}

fn names(group: Group) -> Names {
    match group {
        Group::English => Names {
            boys: "Oliver, George, Harry, Jack, Noah, Charlie, Thomas, Oscar, William, James, Leo, \
                Alfie, Henry, Joshua, Freddie, Archie, Ethan, Isaac, Alexander, Joseph, Edward, \
                Samuel, Max, Daniel, Arthur, Lucas, Logan, Theo, Harrison, Benjamin, Mason, \
                Sebastian, Finley, Adam, Dylan, Zachary, Riley, Teddy, David, Elijah, Jake, Toby, \
                Louis, Reuben, Matthew, Michael, Robert, Stephen, Anthony, Nicholas, Andrew, Sam, \
                Lewis, Kai, Tyler, Callum, Kyle, Jayden, Luke, Ryan, Liam, Aaron, Jordan, Jamie, \
                Bradley, Nathan, Connor, Owen, Leon, Aiden",
            girls: "Olivia, Amelia, Isla, Ava, Mia, Isabella, Sophia, Grace, Lily, Freya, Emily, Ivy, \
                Ella, Rosie, Evie, Florence, Poppy, Charlotte, Willow, Isabelle, Elsie, Sienna, \
                Daisy, Sophie, Alice, Jessica, Phoebe, Ruby, Matilda, Elizabeth, Katherine, \
                Catherine, Margaret, Rebecca, Jennifer, Victoria, Susan, Chloé, Zoë, Renée, Hannah, \
                Megan, Lauren, Amy, Holly, Ellie, Leah, Abigail, Bethany, Courtney, Jade, Paige, \
                Shannon, Kayleigh, Danielle, Louise, Emma, Maya, Nicola, Harriet",
            families: "Smith, Jones, Williams, Taylor, Brown, Davies, Evans, Wilson, Thomas, Johnson, \
                Roberts, Robinson, Thompson, Wright, Walker, White, Edwards, Hughes, Green, Hall, \
                Lewis, Harris, Clarke, Jackson, Wood, Turner, Martin, Cooper, Hill, Ward, Morris, \
                Moore, Clark, Lee, King, Baker, Harrison, Morgan, Allen, James, Scott, Phillips, \
                Watson, Davis, Parker, Price, Bennett, Young, Griffiths, Mitchell, Kelly, Cook, \
                Carter, Richardson, Bailey, Collins, Bell, Shaw, Miller, Cox, Richards, Marshall, \
                Anderson, Simpson, Ellis, Adams, Wilkinson, Foster, Chapman, Lloyd, Webb, Powell, \
                Holmes, Mason, Rogers, Stevens, Palmer, Thomson, McDonald, St. John, Fox, Ashworth, \
                Pennington",
        },
        Group::Irish => Names {
            boys: "Seán, Oisín, Cian, Darragh, Eoin, Pádraig, Ciarán, Fionn, Conor, Declan, Liam, \
                Patrick, Aidan, Niall, Ronan, Cathal, Tadhg, Shane",
            girls: "Siobhán, Niamh, Aoife, Ciara, Caoimhe, Saoirse, Orla, Róisín, Sinéad, Aisling, \
                Clodagh, Gráinne, Méabh, Éabha, Mary, Bridget",
            families: "O'Brien, O'Connor, O'Sullivan, Murphy, Kelly, Walsh, Byrne, Ryan, O'Neill, Doyle, \
                McCarthy, Gallagher, Ó Súilleabháin, McLaughlin, Quinn, Kennedy, Lynch, Murray, \
                Fitzgerald, Mac Giolla Phádraig, O'Donnell, Ó Briain, Nic Aodha, Brennan, Ó \
                Ceallaigh",
        },
        Group::SouthAsian => Names {
            boys: "Mohammed, Muhammad, Ahmed, Ali, Hassan, Hussain, Ibrahim, Yusuf, Zain, Ayaan, Arjun, \
                Aarav, Rohan, Vikram, Rahul, Amir, Imran, Bilal, Hamza, Omar, Abdul Rahman, \
                Mohammad, Ismail, Harpreet, Gurpreet",
            girls: "Aisha, Ayesha, Fatima, Maryam, Zainab, Amira, Priya, Ananya, Aanya, Saanvi, Anika, \
                Simran, Noor, Hafsa, Sana, Mehreen, Riya, Isha, Khadija, Amna, Nur",
            families: "Patel, Khan, Singh, Begum, Ahmed, Ali, Hussain, Shah, Sharma, Kaur, Iqbal, Rahman, \
                Chaudhry, Malik, Akhtar, Mahmood, Qureshi, Bibi, Mistry, Gupta, Das, Islam, Uddin, \
                Miah, D'Souza, Fernandes, Choudhury, Siddiqui",
        },
        Group::Polish => Names {
            boys: "Jakub, Kacper, Szymon, Mateusz, Filip, Michał, Bartosz, Wojciech, Łukasz, Tomasz, \
                Piotr, Krzysztof, Paweł, Jan, Antoni, Igor",
            girls: "Zuzanna, Julia, Maja, Zofia, Hanna, Lena, Alicja, Małgorzata, Katarzyna, Agnieszka, \
                Wiktoria, Natalia, Aleksandra, Magdalena, Oliwia, Jana",
            families: "Nowak, Kowalski, Wiśniewski, Wójcik, Kowalczyk, Kamiński, Lewandowski, Zieliński, \
                Szymański, Woźniak, Dąbrowski, Kozłowski, Jankowski, Mazur, Kwiatkowski, Krawczyk, \
                Piotrowski, Grabowski, Nowakowski, Pawłowski",
        },
        Group::WestAfrican => Names {
            boys: "Chidi, Chinedu, Emeka, Obinna, Tunde, Femi, Kwame, Kofi, Kwabena, Oluwaseun, \
                Ayodele, Babajide, Chukwuemeka, Ikenna, Ifeanyi, Yaw, Daniel, David, Samuel, \
                Emmanuel",
            girls: "Adaeze, Chiamaka, Ngozi, Funmilayo, Abena, Ama, Akosua, Folake, Temitope, Blessing, \
                Precious, Chioma, Nneka, Adwoa, Efua, Yetunde, Chidera, Grace, Esther",
            families: "Okafor, Okonkwo, Adeyemi, Mensah, Owusu, Boateng, Asante, Adebayo, Okeke, Nwosu, \
                Eze, Oyelaran, Olawale, Babatunde, Afolabi, Ogunleye, Appiah, Osei, Danso, Agyeman, \
                N'Diaye, Diallo, Obi, Nwachukwu",
        },
    }
}

/// Sibling or twin names that look or sound alike (some identical in Double Metaphone).
const LOOK_ALIKES: &[(&str, &str)] = &[
    ("Sam", "Sean"),
    ("Jack", "Jake"),
    ("Hassan", "Hussain"),
    ("Mia", "Maya"),
    ("Daniel", "Danielle"),
    ("Louis", "Louise"),
    ("Leo", "Leon"),
    ("Amir", "Amira"),
    ("Chidi", "Chidera"),
    ("Jan", "Jana"),
    ("Nicholas", "Nicola"),
    ("Harry", "Harriet"),
    ("Oliver", "Olivia"),
    ("Ella", "Emma"),
    ("Zain", "Zainab"),
    ("Kyle", "Kayleigh"),
];

/// Whether two given names are the same name to a person: equal but for case and
/// accents, spelling variants, or a nickname and its formal name. Parents do not give two
/// children the same name, so the look-alike generator must not either.
fn same_name(a: &str, b: &str) -> bool {
    let plain = |s: &str| strip_accents(s).to_lowercase();
    let (a, b) = (plain(a), plain(b));
    if a == b {
        return true;
    }
    let variants = VARIANTS.iter().any(|group| {
        let group: Vec<String> = group.iter().map(|v| plain(v)).collect();
        group.contains(&a) && group.contains(&b)
    });
    let nicknames = NICKNAMES_IN_USE.iter().any(|(formal, nicks)| {
        let mut names: Vec<String> = nicks.iter().map(|n| plain(n)).collect();
        names.push(plain(formal));
        names.contains(&a) && names.contains(&b)
    });
    variants || nicknames
}

/// Nicknames used in practice: some in the key table, some deliberately not.
const NICKNAMES_IN_USE: &[(&str, &[&str])] = &[
    ("William", &["Bill", "Will", "Billy", "Liam"]),
    ("Robert", &["Rob", "Bob", "Robbie"]),
    ("Elizabeth", &["Liz", "Lizzie", "Beth", "Betsy"]),
    ("James", &["Jim", "Jimmy", "Jamie"]),
    ("Michael", &["Mike", "Mick", "Mikey"]),
    ("Thomas", &["Tom", "Tommy"]),
    ("David", &["Dave", "Davy"]),
    ("Katherine", &["Kate", "Katie"]),
    ("Catherine", &["Kate", "Katie", "Cathy"]),
    ("Daniel", &["Dan", "Danny"]),
    ("Matthew", &["Matt"]),
    ("Benjamin", &["Ben"]),
    ("Joseph", &["Joe", "Joey"]),
    ("Anthony", &["Tony", "Ant"]),
    ("Andrew", &["Andy", "Drew"]),
    ("Rebecca", &["Becky", "Becca"]),
    ("Jennifer", &["Jenny", "Jen"]),
    ("Victoria", &["Vicky", "Tori"]),
    ("Margaret", &["Maggie", "Peggy"]),
    ("Stephen", &["Steve", "Stevie"]),
    ("Nicholas", &["Nick"]),
    ("Alexander", &["Alex", "Xander"]),
    ("Samuel", &["Sam", "Sammy"]),
    ("Edward", &["Ed", "Eddie", "Ted"]),
    ("Isabella", &["Izzy", "Bella"]),
    ("Jakub", &["Kuba"]),
    ("Katarzyna", &["Kasia"]),
    ("Małgorzata", &["Gosia"]),
    ("Tomasz", &["Tomek"]),
    ("Bartosz", &["Bartek"]),
    ("Wojciech", &["Wojtek"]),
];

/// Spellings of the same name that different systems hold.
const VARIANTS: &[&[&str]] = &[
    &["Mohammed", "Muhammad", "Mohammad", "Mohamed"],
    &["Aisha", "Ayesha"],
    &["Katherine", "Catherine", "Kathryn"],
    &["Stephen", "Steven"],
    &["Seán", "Shaun", "Shawn"],
    &["Zoë", "Zoey"],
    &["Isabelle", "Isabel", "Isobel"],
    &["Hannah", "Hanna"],
    &["Ahmed", "Ahmad"],
    &["Hussain", "Hussein", "Husain"],
    &["Chloé", "Chloe"],
    &["Sophie", "Sofie"],
    &["Aidan", "Aiden", "Aden"],
    &["Lily", "Lilly"],
    &["Jayden", "Jaden"],
    &["Chaudhry", "Choudhury", "Chowdhury"],
    &["McDonald", "MacDonald"],
    &["Thomson", "Thompson"],
    &["Siobhán", "Shevaun"],
    &["Oluwaseun", "Seun"],
    &["Fatima", "Fatimah"],
    &["Maryam", "Mariam"],
    &["Yusuf", "Yousef", "Yusef"],
    &["Zofia", "Sofia"],
    &["Oliwia", "Olivia"],
    &["Wiktoria", "Victoria"],
    &["Aleksandra", "Alexandra"],
    &["Ayaan", "Ayan"],
    &["Kwame", "Kwami"],
];

// ---------------------------------------------------------------------------------------
// Population
// ---------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct Person {
    given: String,
    family: String,
    dob: (i32, u32, u32),
    postcode: String,
    nhs: String,
    household: usize,
}

struct Household {
    group: Group,
    family: String,
    postcode: String,
    members: Vec<usize>,
}

struct World {
    rng: StdRng,
    persons: Vec<Person>,
    households: Vec<Household>,
    postcodes: Vec<String>,
    nhs_used: HashSet<String>,
}

fn skewed<'a>(rng: &mut StdRng, items: &[&'a str]) -> &'a str {
    // Roughly Zipf-like: early entries are much more common, as with real names.
    let u: f64 = rng.random();
    let index = ((u * u) * items.len() as f64) as usize;
    items[index.min(items.len() - 1)]
}

fn days_in_month(year: i32, month: u32) -> u32 {
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

fn random_date(rng: &mut StdRng, years: std::ops::RangeInclusive<i32>) -> (i32, u32, u32) {
    let year = rng.random_range(years);
    let month = rng.random_range(1..=12);
    let day = rng.random_range(1..=days_in_month(year, month));
    (year, month, day)
}

impl World {
    fn new(seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let areas = ["RH", "BN", "GU", "KT", "CR", "SM", "TN", "ME"];
        let mut postcodes = Vec::new();
        for _ in 0..4_000 {
            let area = areas.choose(&mut rng).copied().unwrap_or("RH");
            let district = rng.random_range(1..=20);
            let sector = rng.random_range(1..=9);
            let a = char::from(rng.random_range(b'A'..=b'Z'));
            let b = char::from(rng.random_range(b'A'..=b'Z'));
            postcodes.push(format!("{area}{district} {sector}{a}{b}"));
        }
        Self {
            rng,
            persons: Vec::new(),
            households: Vec::new(),
            postcodes,
            nhs_used: HashSet::new(),
        }
    }

    fn nhs_number(&mut self) -> String {
        loop {
            let digits: Vec<u32> = (0..9).map(|_| self.rng.random_range(0..10)).collect();
            let sum: u32 = digits.iter().zip((2..=10).rev()).map(|(d, w)| d * w).sum();
            let check = match 11 - sum % 11 {
                11 => 0,
                10 => continue,
                c => c,
            };
            let number: String = digits
                .iter()
                .chain(std::iter::once(&check))
                .map(|d| char::from_digit(*d, 10).unwrap_or('0'))
                .collect();
            if self.nhs_used.insert(number.clone()) {
                return number;
            }
        }
    }

    fn postcode(&mut self) -> String {
        let index = self.rng.random_range(0..self.postcodes.len());
        self.postcodes[index].clone()
    }

    fn group(&mut self) -> Group {
        match self.rng.random_range(0..100) {
            0..55 => Group::English,
            55..65 => Group::Irish,
            65..80 => Group::SouthAsian,
            80..88 => Group::Polish,
            _ => Group::WestAfrican,
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

    fn add(&mut self, household: usize, given: String, family: String, dob: (i32, u32, u32)) {
        let id = self.persons.len();
        let postcode = self.households[household].postcode.clone();
        let nhs = self.nhs_number();
        self.persons.push(Person {
            given,
            family,
            dob,
            postcode,
            nhs,
            household,
        });
        self.households[household].members.push(id);
    }

    /// A household of one or two adults and one to four children, twins included.
    fn household(&mut self) -> usize {
        let group = self.group();
        let family = self.family(group);
        let postcode = self.postcode();
        let id = self.households.len();
        self.households.push(Household {
            group,
            family: family.clone(),
            postcode,
            members: Vec::new(),
        });
        let mother_family = if self.rng.random_bool(0.3) {
            self.family(group)
        } else {
            family.clone()
        };
        let mother = self.given(group, true);
        let dob = random_date(&mut self.rng, 1970..=2000);
        self.add(id, mother, mother_family, dob);
        if self.rng.random_bool(0.5) {
            let father = self.given(group, false);
            let dob = random_date(&mut self.rng, 1965..=2000);
            self.add(id, father, family.clone(), dob);
        }
        let children = self.rng.random_range(1..=4);
        let mut year = self.rng.random_range(2006..=2020);
        let mut taken: HashSet<String> = HashSet::new();
        for _ in 0..children {
            let dob = random_date(&mut self.rng, year..=year);
            let girl = self.rng.random_bool(0.5);
            let given = self.given(group, girl);
            if !taken.insert(given.clone()) {
                continue;
            }
            self.add(id, given.clone(), family.clone(), dob);
            // Twins: about 3% of births, often with alike names.
            if self.rng.random_bool(0.03) {
                let twin = LOOK_ALIKES
                    .iter()
                    .find_map(|(a, b)| {
                        (*a == given)
                            .then_some(*b)
                            .or_else(|| (*b == given).then_some(*a))
                    })
                    .map(str::to_owned)
                    .unwrap_or_else(|| {
                        let girl = self.rng.random_bool(0.5);
                        self.given(group, girl)
                    });
                if taken.insert(twin.clone()) {
                    self.add(id, twin, family.clone(), dob);
                }
            }
            year += self.rng.random_range(1..=4);
            if year > 2024 {
                break;
            }
        }
        id
    }
}

// ---------------------------------------------------------------------------------------
// Record noise and errors
// ---------------------------------------------------------------------------------------

fn strip_accents(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            'á' | 'ą' => 'a',
            'é' | 'ë' | 'ę' => 'e',
            'í' => 'i',
            'ó' => 'o',
            'ú' => 'u',
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

/// Formatting differences that different case-management systems introduce.
fn formatting_noise(rng: &mut StdRng, s: &str) -> String {
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

/// One keyboard error somewhere after the first letter.
fn typo(rng: &mut StdRng, s: &str) -> String {
    let mut chars: Vec<char> = s.chars().collect();
    let letters: Vec<usize> = (1..chars.len())
        .filter(|&i| chars[i].is_alphabetic())
        .collect();
    let Some(&at) = letters.choose(rng) else {
        return s.to_owned();
    };
    match rng.random_range(0..4) {
        0 => chars[at] = char::from(rng.random_range(b'a'..=b'z')),
        1 => {
            chars.remove(at);
        }
        2 => chars.insert(at, chars[at]),
        _ => {
            if at + 1 < chars.len() && chars[at + 1].is_alphabetic() {
                chars.swap(at, at + 1);
            } else {
                chars.swap(at - 1, at);
            }
        }
    }
    chars.into_iter().collect()
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Class {
    Exact,
    FamilyTypo,
    GivenTypo,
    Nickname,
    Variant,
    Swapped,
    Transposed,
    NoDob,
    NoPostcode,
    NoNationalId,
    Moved,
    HyphenHalf,
    Stranger,
    LookAlike,
    LookAlikeTwin,
    Namesake,
    NamesakeNoPostcode,
}

impl Class {
    const INDEXED: [Class; 12] = [
        Class::Exact,
        Class::FamilyTypo,
        Class::GivenTypo,
        Class::Nickname,
        Class::Variant,
        Class::Swapped,
        Class::Transposed,
        Class::NoDob,
        Class::NoPostcode,
        Class::NoNationalId,
        Class::Moved,
        Class::HyphenHalf,
    ];

    fn label(self) -> &'static str {
        match self {
            Class::Exact => "exact (formatting only)",
            Class::FamilyTypo => "typo in family name",
            Class::GivenTypo => "typo in given name",
            Class::Nickname => "nickname",
            Class::Variant => "variant spelling",
            Class::Swapped => "names swapped",
            Class::Transposed => "day/month transposed",
            Class::NoDob => "missing date of birth",
            Class::NoPostcode => "missing postcode",
            Class::NoNationalId => "missing national id",
            Class::Moved => "postcode moved",
            Class::HyphenHalf => "one half of double name",
            Class::Stranger => "NOT indexed: stranger",
            Class::LookAlike => "NOT indexed: look-alike sibling",
            Class::LookAlikeTwin => "  of which same DOB (twin)",
            Class::Namesake => "stress: namesake elsewhere",
            Class::NamesakeNoPostcode => "  same, query without postcode",
        }
    }

    fn indexed(self) -> bool {
        Class::INDEXED.contains(&self)
    }

    /// Rows outside the totals: a subset of another row, or a stress case.
    fn in_totals(self) -> bool {
        !matches!(
            self,
            Class::LookAlikeTwin | Class::Namesake | Class::NamesakeNoPostcode
        )
    }
}

/// What the asking node's record looks like: its own copy of the person, which carries
/// the national id 80% of the time, plus the class's error.
fn query_record(rng: &mut StdRng, person: &Person, class: Class) -> Option<Subject> {
    let mut given = formatting_noise(rng, &person.given);
    let mut family = formatting_noise(rng, &person.family);
    let mut dob = Some(person.dob);
    let mut postcode = Some(person.postcode.clone());
    let mut nid = rng.random_bool(0.8);
    match class {
        Class::Exact
        | Class::Stranger
        | Class::LookAlike
        | Class::LookAlikeTwin
        | Class::Namesake => {}
        Class::NamesakeNoPostcode => postcode = None,
        Class::FamilyTypo => family = typo(rng, &person.family),
        Class::GivenTypo => given = typo(rng, &person.given),
        Class::Nickname => {
            let first = person.given.split(' ').next().unwrap_or_default();
            let (_, nicks) = NICKNAMES_IN_USE
                .iter()
                .find(|(formal, _)| *formal == first)?;
            given = (*nicks.choose(rng)?).to_owned();
        }
        Class::Variant => {
            let first = person.given.split(' ').next().unwrap_or_default();
            let swap = |name: &str, rng: &mut StdRng| -> Option<String> {
                let group = VARIANTS.iter().find(|g| g.contains(&name))?;
                let others: Vec<&&str> = group.iter().filter(|v| **v != name).collect();
                others.choose(rng).map(|v| (**v).to_owned())
            };
            if let Some(other) = swap(first, rng) {
                given = other;
            } else {
                family = swap(&person.family, rng)?;
            }
        }
        Class::Swapped => std::mem::swap(&mut given, &mut family),
        Class::Transposed => {
            let (y, m, d) = person.dob;
            if d > 12 || d == m {
                return None;
            }
            dob = Some((y, d, m));
        }
        Class::NoDob => dob = None,
        Class::NoPostcode => postcode = None,
        Class::NoNationalId => nid = false,
        Class::Moved => {
            postcode = Some(format!(
                "SE{} {}ZZ",
                rng.random_range(1..=28),
                rng.random_range(1..=9)
            ))
        }
        Class::HyphenHalf => {
            let halves: Vec<&str> = person.family.split('-').collect();
            if halves.len() < 2 {
                return None;
            }
            family = (*halves.choose(rng)?).to_owned();
        }
    }
    let nhs = if rng.random_bool(0.3) {
        format!(
            "{} {} {}",
            &person.nhs[..3],
            &person.nhs[3..6],
            &person.nhs[6..]
        )
    } else {
        person.nhs.clone()
    };
    Some(Subject {
        given_name: Some(given),
        family_name: Some(family),
        date_of_birth: dob,
        postcode,
        national_id: nid.then(|| ("nhs".to_owned(), nhs)),
    })
}

/// The answering node's record: the person as held, with the national id 80% of the time.
fn index_record(person: &Person, has_nid: bool) -> Subject {
    Subject {
        given_name: Some(person.given.clone()),
        family_name: Some(person.family.clone()),
        date_of_birth: Some(person.dob),
        postcode: Some(person.postcode.clone()),
        national_id: has_nid.then(|| ("nhs".to_owned(), person.nhs.clone())),
    }
}

// ---------------------------------------------------------------------------------------
// The answering node, in memory
// ---------------------------------------------------------------------------------------

struct Index {
    by_digest: HashMap<Digest, Vec<(usize, MatchKeyKind)>>,
    has_nid: Vec<bool>,
}

impl Index {
    fn answer(&self, set: &KeySet, query: &Subject) -> Decision<usize> {
        let keys = query_keys(set, query);
        let kinds: BTreeSet<MatchKeyKind> = keys.iter().map(|(k, _)| *k).collect();
        let mut hits: BTreeMap<usize, BTreeSet<MatchKeyKind>> = BTreeMap::new();
        for (kind, digest) in &keys {
            for (person, _) in self.by_digest.get(digest).into_iter().flatten() {
                hits.entry(*person).or_default().insert(*kind);
            }
        }
        let candidates: Vec<Candidate<usize>> = hits
            .into_iter()
            .map(|(id, matched)| Candidate {
                id,
                matched,
                has_national_id: self.has_nid[id],
            })
            .collect();
        decide(&kinds, &candidates)
    }
}

#[derive(Default, Clone, Copy)]
struct Tally {
    n: usize,
    correct: usize,
    wrong: usize,
    ambiguous: usize,
    no_match: usize,
}

impl Tally {
    fn add(&mut self, decision: &Decision<usize>, truth: Option<usize>) {
        self.n += 1;
        match decision {
            Decision::Matched(id) if Some(*id) == truth => self.correct += 1,
            Decision::Matched(_) => self.wrong += 1,
            Decision::Ambiguous { .. } => self.ambiguous += 1,
            Decision::NoMatch => self.no_match += 1,
        }
    }

    fn merge(&mut self, other: &Tally) {
        self.n += other.n;
        self.correct += other.correct;
        self.wrong += other.wrong;
        self.ambiguous += other.ambiguous;
        self.no_match += other.no_match;
    }

    fn precision(&self) -> f64 {
        let matched = self.correct + self.wrong;
        if matched == 0 {
            1.0
        } else {
            self.correct as f64 / matched as f64
        }
    }

    fn recall(&self) -> f64 {
        self.correct as f64 / self.n.max(1) as f64
    }

    fn row(&self, out: &mut String, label: &str, show_recall: bool) {
        let recall = if show_recall {
            format!("{:.3}", self.recall())
        } else {
            "-".to_owned()
        };
        let _ = writeln!(
            out,
            "| {label:<31} | {:>5} | {:>5} | {:>5} | {:>5} | {:>5} | {:>9.4} | {recall:>6} | {:>5.1}% |",
            self.n,
            self.correct,
            self.wrong,
            self.ambiguous,
            self.no_match,
            self.precision(),
            100.0 * self.ambiguous as f64 / self.n.max(1) as f64,
        );
    }
}

#[test]
fn match_quality_on_a_synthetic_population() {
    let set = KeySet::new("quality-test", &[42_u8; 32]).expect("a valid key set");
    let mut world = World::new(SEED);
    while world.persons.len() < POPULATION {
        world.household();
    }
    world.persons.truncate(POPULATION);
    let indexed = world.persons.len();

    // Index every person, as the answering node would.
    let mut by_digest: HashMap<Digest, Vec<(usize, MatchKeyKind)>> = HashMap::new();
    let mut has_nid = Vec::with_capacity(indexed);
    let mut keys_total = 0_usize;
    let started = Instant::now();
    for (id, person) in world.persons.iter().enumerate() {
        let holds_nid = world.rng.random_bool(0.8);
        has_nid.push(holds_nid);
        let keys = index_keys(&set, &index_record(person, holds_nid));
        keys_total += keys.len();
        for (kind, digest) in keys {
            by_digest.entry(digest).or_default().push((id, kind));
        }
    }
    let index_elapsed = started.elapsed();
    let index = Index { by_digest, has_nid };

    let mut rng = StdRng::seed_from_u64(SEED ^ 0xffff);
    let mut tallies: BTreeMap<Class, Tally> = BTreeMap::new();
    let mut query_keys_total = 0_usize;
    let mut query_keys_max = 0_usize;
    let mut query_time = std::time::Duration::ZERO;

    // Queries for indexed persons, with each kind of error.
    for class in Class::INDEXED {
        let mut done = 0;
        let mut attempts = 0;
        while done < QUERIES_PER_CLASS && attempts < 1_000_000 {
            attempts += 1;
            let id = rng.random_range(0..indexed);
            let Some(query) = query_record(&mut rng, &world.persons[id], class) else {
                continue;
            };
            let started = Instant::now();
            let keys = query_keys(&set, &query);
            query_time += started.elapsed();
            query_keys_total += keys.len();
            query_keys_max = query_keys_max.max(keys.len());
            let decision = index.answer(&set, &query);
            tallies.entry(class).or_default().add(&decision, Some(id));
            done += 1;
        }
    }

    // Strangers: new households that were never indexed.
    let first_fresh = world.persons.len();
    while world.persons.len() < first_fresh + NON_INDEXED_PER_CLASS {
        world.household();
    }
    for id in first_fresh..first_fresh + NON_INDEXED_PER_CLASS {
        let query = query_record(&mut rng, &world.persons[id], Class::Stranger)
            .expect("exact queries always exist");
        let decision = index.answer(&set, &query);
        tallies
            .entry(Class::Stranger)
            .or_default()
            .add(&decision, None);
    }

    // Look-alike siblings of indexed children, not indexed themselves: same surname and
    // postcode, an alike given name, and a third of the time the same date of birth.
    let mut made = 0;
    while made < NON_INDEXED_PER_CLASS {
        let id = rng.random_range(0..indexed);
        let person = world.persons[id].clone();
        if person.dob.0 < 2006 {
            continue;
        }
        let household = &world.households[person.household];
        let first = person
            .given
            .split(' ')
            .next()
            .unwrap_or_default()
            .to_owned();
        let alike = LOOK_ALIKES.iter().find_map(|(a, b)| {
            (*a == first)
                .then_some(*b)
                .or_else(|| (*b == first).then_some(*a))
        });
        let group = household.group;
        let given = match alike {
            Some(name) => name.to_owned(),
            None => {
                // Otherwise a name from the family's tradition starting with the same letter.
                let n = names(group);
                let pool: Vec<&str> = list(n.boys)
                    .into_iter()
                    .chain(list(n.girls))
                    .filter(|g| g.chars().next() == first.chars().next() && !same_name(g, &first))
                    .collect();
                match pool.choose(&mut rng) {
                    Some(name) => (*name).to_owned(),
                    None => continue,
                }
            }
        };
        let twin = rng.random_bool(1.0 / 3.0);
        let dob = if twin {
            person.dob
        } else {
            let (y, m, d) = person.dob;
            let y = y + if rng.random_bool(0.5) { 1 } else { -1 } * rng.random_range(1..=4);
            (y, m, d.min(days_in_month(y, m)))
        };
        // Never a sibling who is, in fact, an indexed member of the household.
        let clash = household.members.iter().any(|m| {
            let other = world.persons[*m]
                .given
                .split(' ')
                .next()
                .unwrap_or_default();
            *m < indexed && same_name(other, &given)
        });
        if clash {
            continue;
        }
        let family = household.family.clone();
        let hh = person.household;
        world.add(hh, given, family, dob);
        let sibling = world.persons.last().cloned().expect("just added");
        let query =
            query_record(&mut rng, &sibling, Class::LookAlike).expect("exact queries always exist");
        let decision = index.answer(&set, &query);
        tallies
            .entry(Class::LookAlike)
            .or_default()
            .add(&decision, None);
        if twin {
            tallies
                .entry(Class::LookAlikeTwin)
                .or_default()
                .add(&decision, None);
        }
        made += 1;
    }

    // Stress, outside the totals: a namesake elsewhere, with the same names and date of
    // birth as an indexed child but another postcode and national id. Within one node
    // this is rare; across a national fan-out it is common for common names.
    for _ in 0..QUERIES_PER_CLASS {
        let id = loop {
            let id = rng.random_range(0..indexed);
            if world.persons[id].dob.0 >= 2006 {
                break id;
            }
        };
        let twin_of = world.persons[id].clone();
        let household = world.household();
        let postcode = world.households[household].postcode.clone();
        if postcode == twin_of.postcode {
            continue;
        }
        world.add(
            household,
            twin_of.given.clone(),
            twin_of.family.clone(),
            twin_of.dob,
        );
        let namesake = world.persons.last().cloned().expect("just added");
        for class in [Class::Namesake, Class::NamesakeNoPostcode] {
            let query = query_record(&mut rng, &namesake, class).expect("always exists");
            let decision = index.answer(&set, &query);
            tallies.entry(class).or_default().add(&decision, None);
        }
    }

    // The table.
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| class                           |     n |    ok | WRONG |  ambg |  none | precision | recall |  ambg% |"
    );
    let _ = writeln!(
        out,
        "|---------------------------------|------:|------:|------:|------:|------:|----------:|-------:|-------:|"
    );
    let mut on_indexed = Tally::default();
    let mut overall = Tally::default();
    for (class, tally) in &tallies {
        if !matches!(class, Class::Namesake | Class::NamesakeNoPostcode) {
            tally.row(&mut out, class.label(), class.indexed());
        }
        if class.indexed() {
            on_indexed.merge(tally);
        }
        if class.in_totals() {
            overall.merge(tally);
        }
    }
    on_indexed.row(&mut out, "ALL queries for indexed persons", true);
    overall.row(&mut out, "ALL queries", false);
    for class in [Class::Namesake, Class::NamesakeNoPostcode] {
        if let Some(tally) = tallies.get(&class) {
            tally.row(&mut out, class.label(), false);
        }
    }
    let wrong_rate = overall.wrong as f64 / overall.n as f64;
    let _ = writeln!(
        out,
        "\nwrong-person disclosures: {} of {} queries ({:.3}%); precision {:.4}; recall {:.3}",
        overall.wrong,
        overall.n,
        100.0 * wrong_rate,
        overall.precision(),
        on_indexed.recall()
    );
    let _ = writeln!(
        out,
        "index: {indexed} persons, {:.2} keys/person, {:.1} µs/person; query: {:.2} keys avg, {query_keys_max} max, {:.1} µs/query",
        keys_total as f64 / indexed as f64,
        index_elapsed.as_secs_f64() * 1e6 / indexed as f64,
        query_keys_total as f64 / (on_indexed.n as f64),
        query_time.as_secs_f64() * 1e6 / (on_indexed.n as f64),
    );
    println!("{out}");

    assert!(
        wrong_rate <= 0.0005,
        "wrong-person disclosures {} of {} exceed 0.05%\n{out}",
        overall.wrong,
        overall.n
    );
    assert!(
        on_indexed.recall() >= 0.85,
        "recall {:.3} below 0.85\n{out}",
        on_indexed.recall()
    );
    assert!(query_keys_max <= 32);
}
