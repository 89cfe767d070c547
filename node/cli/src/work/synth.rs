//! Synthetic, realistic-looking records for demos, load tests and
//! benchmarks: names with accents, hyphens and apostrophes, valid NHS numbers,
//! UK-shaped postcodes; and whole councils (organisations, practitioners,
//! persons, involvements of every sensitivity) for `patchwork demo`.
//! Deterministic for a seed, so runs are comparable. None of it is anyone's
//! real data: council persons' NHS numbers are in the NHS's own test range
//! (999...), phone numbers in the ranges regulators keep for fiction, email
//! domains under `.example`.

use std::collections::{HashMap, HashSet};
use std::io::Write;

use patchwork_proto::v1;
use patchwork_store::model::{Date, calendar_date};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use patchwork_server::base::validate::to_proto_date;

use v1::Sensitivity::{AlwaysFindable, Restricted, Standard};

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
    csv.write_record(crate::work::csv_rows::CsvKind::Persons.columns().0)?;
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

// ---------------------------------------------------------------- councils

/// Which country's conventions a synthetic council follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Jurisdiction {
    /// NHS numbers (from the NHS's test range), UK postcodes and service names.
    England,
    /// No NHS numbers (some persons carry an opaque [`VICTORIA_ID_SCHEME`]
    /// identifier), four-digit postcodes, Victorian service names.
    Victoria,
}

/// The identifier scheme synthetic Victorian persons carry (an Individual
/// Healthcare Identifier; kept opaque by the node).
pub(crate) const VICTORIA_ID_SCHEME: &str = "ihi";

/// Where a synthetic council is: what makes its records look local.
#[derive(Debug, Clone, Copy)]
pub struct Area {
    /// Starts every record id, e.g. "SCC" (ids look like `SCC-P-00042`).
    pub(crate) id_prefix: &'static str,
    /// The short name organisations are named after, e.g. "Surrey".
    pub name: &'static str,
    pub jurisdiction: Jurisdiction,
    /// Towns (or suburbs) with their postcode district (England, e.g. "GU")
    /// or postcode (Victoria, e.g. "3051").
    pub(crate) towns: &'static [(&'static str, &'static str)],
    /// Every phone number is this stem and `phone_digits` random digits.
    pub(crate) phone_stem: &'static str,
    pub(crate) phone_digits: u32,
    /// Practitioners' email domain (under `.example`: never a real mailbox).
    pub(crate) email_domain: &'static str,
}

/// The kinds of organisation every synthetic council has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OrgKind {
    Children,
    Adults,
    Health,
    SexualHealth,
    Drugs,
    DomesticAbuse,
    Police,
    Youth,
    Housing,
    Probation,
    FamilySupport,
    School,
}

/// Kind, name (England, Victoria; `{area}` is the area's name) and sector.
const ORGANISATIONS: &[(OrgKind, [&str; 2], v1::Sector)] = &[
    (
        OrgKind::Children,
        [
            "{area} Children's Services",
            "{area} Child and Family Services",
        ],
        v1::Sector::SocialCare,
    ),
    (
        OrgKind::Adults,
        [
            "{area} Adult Social Care",
            "{area} Aged and Disability Services",
        ],
        v1::Sector::SocialCare,
    ),
    (
        OrgKind::Health,
        [
            "{area} Community Health NHS Trust",
            "{area} Community Health",
        ],
        v1::Sector::Health,
    ),
    (
        OrgKind::SexualHealth,
        [
            "{area} Sexual Health Service",
            "{area} Sexual Health Centre",
        ],
        v1::Sector::Health,
    ),
    (
        OrgKind::Drugs,
        [
            "{area} Drug and Alcohol Service",
            "{area} Alcohol and Other Drugs Service",
        ],
        v1::Sector::Health,
    ),
    (
        OrgKind::DomesticAbuse,
        [
            "{area} Domestic Abuse Refuge",
            "{area} Family Violence Service",
        ],
        v1::Sector::Voluntary,
    ),
    (
        OrgKind::Police,
        ["{area} Police", "Victoria Police, {area} Division"],
        v1::Sector::Police,
    ),
    (
        OrgKind::Youth,
        ["{area} Youth Service", "{area} Youth Services"],
        v1::Sector::Youth,
    ),
    (
        OrgKind::Housing,
        [
            "{area} Housing Options",
            "{area} Housing and Homelessness Support",
        ],
        v1::Sector::Housing,
    ),
    (
        OrgKind::Probation,
        [
            "{area} Probation Delivery Unit",
            "Community Correctional Services, {area}",
        ],
        v1::Sector::Probation,
    ),
    (
        OrgKind::FamilySupport,
        [
            "{area} Family Support Trust",
            "{area} Family Support Network",
        ],
        v1::Sector::Voluntary,
    ),
];

/// Schools: a primary and a secondary in each of the first few towns.
const SCHOOL_TOWNS: usize = 3;
const SCHOOLS: [[&str; 2]; 2] = [
    ["{town} Primary School", "{town} Primary School"],
    ["{town} Academy", "{town} Secondary College"],
];

/// The services a synthetic council's practitioners work in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Service {
    ChildProtection,
    ChildInNeed,
    EarlyHelp,
    HealthVisiting,
    SchoolNursing,
    Education,
    MentalHealth,
    YouthWork,
    YouthJustice,
    SexualHealth,
    SubstanceMisuse,
    DomesticAbuse,
    AdultSafeguarding,
    AdultSocialCare,
    DistrictNursing,
    HousingSupport,
    Probation,
    Policing,
}

struct ServiceLine {
    service: Service,
    /// England, Victoria.
    name: [&'static str; 2],
    role: [&'static str; 2],
    team: &'static str,
    organisation: OrgKind,
    sensitivity: v1::Sensitivity,
    /// Ages (in whole years) the service works with.
    ages: (i32, i32),
    /// How common it is; also how many practitioners (two per weight) it has.
    weight: u32,
}

const SERVICES: &[ServiceLine] = &[
    ServiceLine {
        service: Service::ChildProtection,
        name: ["Child protection", "Child protection"],
        role: ["Social worker", "Child protection practitioner"],
        team: "Child Protection",
        organisation: OrgKind::Children,
        sensitivity: AlwaysFindable,
        ages: (0, 17),
        weight: 3,
    },
    ServiceLine {
        service: Service::ChildInNeed,
        name: ["Child in need", "Family services"],
        role: ["Social worker", "Case manager"],
        team: "Children in Need",
        organisation: OrgKind::Children,
        sensitivity: Standard,
        ages: (0, 17),
        weight: 4,
    },
    ServiceLine {
        service: Service::EarlyHelp,
        name: ["Early help", "Early intervention"],
        role: ["Family support worker", "Family support worker"],
        team: "Early Help",
        organisation: OrgKind::FamilySupport,
        sensitivity: Standard,
        ages: (0, 17),
        weight: 4,
    },
    ServiceLine {
        service: Service::HealthVisiting,
        name: ["Health visiting", "Maternal and child health"],
        role: ["Health visitor", "Maternal and child health nurse"],
        team: "0-5 Years",
        organisation: OrgKind::Health,
        sensitivity: Standard,
        ages: (0, 4),
        weight: 5,
    },
    ServiceLine {
        service: Service::SchoolNursing,
        name: ["School nursing", "Secondary school nursing"],
        role: ["School nurse", "School nurse"],
        team: "School Health",
        organisation: OrgKind::Health,
        sensitivity: Standard,
        ages: (5, 17),
        weight: 5,
    },
    // One practitioner per school, whatever the weight.
    ServiceLine {
        service: Service::Education,
        name: ["Education", "Education"],
        role: ["Designated safeguarding lead", "Wellbeing coordinator"],
        team: "Pastoral Care",
        organisation: OrgKind::School,
        sensitivity: Standard,
        ages: (4, 17),
        weight: 6,
    },
    ServiceLine {
        service: Service::MentalHealth,
        name: ["Children's mental health", "Youth mental health"],
        role: [
            "Mental health practitioner",
            "Youth mental health clinician",
        ],
        team: "Mental Health",
        organisation: OrgKind::Health,
        sensitivity: Standard,
        ages: (5, 17),
        weight: 3,
    },
    ServiceLine {
        service: Service::YouthWork,
        name: ["Youth work", "Youth services"],
        role: ["Youth worker", "Youth worker"],
        team: "Youth Support",
        organisation: OrgKind::Youth,
        sensitivity: Standard,
        ages: (11, 24),
        weight: 4,
    },
    ServiceLine {
        service: Service::YouthJustice,
        name: ["Youth justice", "Youth justice"],
        role: ["Youth justice officer", "Youth justice worker"],
        team: "Youth Justice",
        organisation: OrgKind::Children,
        sensitivity: Standard,
        ages: (10, 17),
        weight: 2,
    },
    ServiceLine {
        service: Service::SexualHealth,
        name: ["Sexual health", "Sexual health"],
        role: ["Sexual health nurse", "Sexual health nurse"],
        team: "Clinic",
        organisation: OrgKind::SexualHealth,
        sensitivity: Restricted,
        ages: (13, 70),
        weight: 3,
    },
    ServiceLine {
        service: Service::SubstanceMisuse,
        name: [
            "Drug and alcohol support",
            "Alcohol and other drugs support",
        ],
        role: ["Recovery worker", "AOD clinician"],
        team: "Recovery",
        organisation: OrgKind::Drugs,
        sensitivity: Restricted,
        ages: (14, 80),
        weight: 3,
    },
    ServiceLine {
        service: Service::DomesticAbuse,
        name: ["Domestic abuse support", "Family violence support"],
        role: [
            "Independent domestic violence adviser",
            "Family violence case manager",
        ],
        team: "Refuge",
        organisation: OrgKind::DomesticAbuse,
        sensitivity: Restricted,
        ages: (16, 80),
        weight: 2,
    },
    ServiceLine {
        service: Service::AdultSafeguarding,
        name: ["Adult safeguarding", "Adult protection"],
        role: ["Social worker", "Senior practitioner"],
        team: "Adult Safeguarding",
        organisation: OrgKind::Adults,
        sensitivity: AlwaysFindable,
        ages: (18, 100),
        weight: 2,
    },
    ServiceLine {
        service: Service::AdultSocialCare,
        name: ["Adult social care", "Aged and disability support"],
        role: ["Care manager", "Care coordinator"],
        team: "Locality Team",
        organisation: OrgKind::Adults,
        sensitivity: Standard,
        ages: (18, 100),
        weight: 4,
    },
    ServiceLine {
        service: Service::DistrictNursing,
        name: ["District nursing", "Community nursing"],
        role: ["District nurse", "Community nurse"],
        team: "Community Nursing",
        organisation: OrgKind::Health,
        sensitivity: Standard,
        ages: (60, 100),
        weight: 3,
    },
    ServiceLine {
        service: Service::HousingSupport,
        name: ["Housing support", "Housing support"],
        role: ["Housing officer", "Housing support worker"],
        team: "Housing Options",
        organisation: OrgKind::Housing,
        sensitivity: Standard,
        ages: (18, 100),
        weight: 3,
    },
    ServiceLine {
        service: Service::Probation,
        name: ["Probation", "Community corrections"],
        role: ["Probation officer", "Community corrections officer"],
        team: "Offender Management",
        organisation: OrgKind::Probation,
        sensitivity: Standard,
        ages: (18, 80),
        weight: 2,
    },
    ServiceLine {
        service: Service::Policing,
        name: ["Neighbourhood policing", "Community policing"],
        role: ["Police officer", "Police officer"],
        team: "Safeguarding Hub",
        organisation: OrgKind::Police,
        sensitivity: Standard,
        ages: (10, 100),
        weight: 2,
    },
];

const VICTORIAN_STREETS: &[&str] = &[
    "Swanston Street",
    "Elizabeth Street",
    "Flinders Lane",
    "Lygon Street",
    "Queensberry Street",
    "Errol Street",
    "Macaulay Road",
    "Racecourse Road",
    "Royal Parade",
    "Rathdowne Street",
];

const END_REASONS: &[&str] = &[
    "Case closed",
    "Moved out of area",
    "Goals met",
    "Transferred to another team",
];

/// The latest date any synthetic record mentions, so the same seed gives the
/// same records on any day (and none is ever in the future).
fn latest_date() -> Date {
    calendar_date(2025, 6, 30).unwrap_or(Date::MIN)
}

/// A synthetic council: everything it imports, and who works in which service.
#[derive(Debug, Clone)]
pub struct CouncilRecords {
    pub area: Area,
    pub organisations: Vec<v1::Organisation>,
    pub practitioners: Vec<v1::Practitioner>,
    pub persons: Vec<v1::Person>,
    pub involvements: Vec<v1::Involvement>,
    /// Indexes into `practitioners`, by service.
    staff: HashMap<Service, Vec<usize>>,
}

impl CouncilRecords {
    fn service_line(service: Service) -> &'static ServiceLine {
        SERVICES
            .iter()
            .find(|l| l.service == service)
            .unwrap_or(&SERVICES[0])
    }

    fn jurisdiction_index(&self) -> usize {
        match self.area.jurisdiction {
            Jurisdiction::England => 0,
            Jurisdiction::Victoria => 1,
        }
    }

    /// What this council calls `service`, e.g. "Health visiting".
    pub fn service_name(&self, service: Service) -> &'static str {
        Self::service_line(service).name[self.jurisdiction_index()]
    }

    /// The first practitioner working in `service`.
    pub(crate) fn practitioner_for(&self, service: Service) -> Option<&v1::Practitioner> {
        let index = *self.staff.get(&service)?.first()?;
        self.practitioners.get(index)
    }

    /// The organisation a practitioner works for.
    pub(crate) fn organisation_of(
        &self,
        practitioner: &v1::Practitioner,
    ) -> Option<&v1::Organisation> {
        self.organisations
            .iter()
            .find(|o| o.id == practitioner.organisation_id)
    }

    /// Whom peers are told to contact about any of this council's restricted
    /// services: one desk for all of them, so the contact itself gives away
    /// nothing about which service is involved.
    pub fn gatekeeper(&self) -> v1::Contact {
        v1::Contact {
            name: "Confidential services duty desk".into(),
            phone: phone(self.area, 0),
            email: format!("gatekeeper@{}", self.area.email_domain),
        }
    }

    /// The id the next person added gets.
    pub(crate) fn next_person_id(&self) -> String {
        format!("{}-P-{:05}", self.area.id_prefix, self.persons.len() + 1)
    }

    /// Records that the first practitioner of `service` works with
    /// `person_id` from `start` (until `end`, if it ended). `None` if nobody
    /// here works in that service.
    pub(crate) fn add_involvement(
        &mut self,
        person_id: &str,
        service: Service,
        start: Date,
        end: Option<Date>,
    ) -> Option<&v1::Involvement> {
        let practitioner = self.staff.get(&service)?.first().copied()?;
        let end = end.map(|date| (date, END_REASONS[0]));
        self.push_involvement(person_id, service, practitioner, start, end);
        self.involvements.last()
    }

    fn push_involvement(
        &mut self,
        person_id: &str,
        service: Service,
        practitioner: usize,
        start: Date,
        end: Option<(Date, &str)>,
    ) {
        let line = Self::service_line(service);
        let restricted = line.sensitivity == Restricted;
        let involvement = v1::Involvement {
            id: format!(
                "{}-INV-{:06}",
                self.area.id_prefix,
                self.involvements.len() + 1
            ),
            person_id: person_id.to_owned(),
            practitioner_id: self.practitioners[practitioner].id.clone(),
            service: line.name[self.jurisdiction_index()].to_owned(),
            start_date: Some(to_proto_date(start)),
            end_date: end.map(|(date, _)| to_proto_date(date)),
            sensitivity: line.sensitivity as i32,
            gatekeeper: restricted.then(|| self.gatekeeper()),
            last_confirmed: None,
            end_reason: end.map(|(_, why)| why.to_owned()).unwrap_or_default(),
        };
        self.involvements.push(involvement);
    }
}

fn phone(area: Area, n: u64) -> String {
    let width = area.phone_digits as usize;
    format!(
        "{}{:0width$}",
        area.phone_stem,
        n % 10u64.pow(area.phone_digits)
    )
}

/// The ASCII letters of a name for an email address: "Zoë O'Brien" → "zoe", "obrien".
fn mailbox_part(name: &str) -> String {
    name.chars()
        .filter_map(|c| {
            let c = match c {
                'à' | 'á' | 'â' | 'ä' | 'ã' => 'a',
                'è' | 'é' | 'ê' | 'ë' => 'e',
                'ì' | 'í' | 'î' | 'ï' => 'i',
                'ò' | 'ó' | 'ô' | 'ö' => 'o',
                'ù' | 'ú' | 'û' | 'ü' => 'u',
                'ñ' | 'ń' => 'n',
                'ś' => 's',
                'ç' => 'c',
                other => other,
            };
            (c.is_ascii_alphanumeric() || c == '-').then(|| c.to_ascii_lowercase())
        })
        .collect()
}

/// An NHS number in the range the NHS keeps for testing (999 ...), with a
/// valid check digit: it can never be a real person's.
pub(crate) fn nhs_test_number(rng: &mut StdRng) -> String {
    loop {
        let mut digits = vec![9, 9, 9];
        digits.extend((0..6).map(|_| rng.random_range(0..10u32)));
        let sum: u32 = digits
            .iter()
            .enumerate()
            .map(|(i, d)| d * (10 - i as u32))
            .sum();
        let check = (11 - sum % 11) % 11;
        if check == 10 {
            continue;
        }
        digits.push(check);
        return digits.iter().map(|d| char::from(b'0' + *d as u8)).collect();
    }
}

fn random_date(rng: &mut StdRng, from: Date, to: Date) -> Date {
    let days = (to - from).whole_days().max(0);
    from + time::Duration::days(rng.random_range(0..=days))
}

fn synth_organisations(area: Area, j: usize) -> (Vec<v1::Organisation>, Vec<(OrgKind, usize)>) {
    let mut organisations = Vec::new();
    let mut kinds = Vec::new();
    let mut push = |kind: OrgKind, name: String, sector: v1::Sector| {
        kinds.push((kind, organisations.len()));
        organisations.push(v1::Organisation {
            id: format!("{}-ORG-{:02}", area.id_prefix, organisations.len() + 1),
            name,
            sector: sector as i32,
        });
    };
    for (kind, names, sector) in ORGANISATIONS {
        push(*kind, names[j].replace("{area}", area.name), *sector);
    }
    for (town, _) in area.towns.iter().take(SCHOOL_TOWNS) {
        for names in SCHOOLS {
            push(
                OrgKind::School,
                names[j].replace("{town}", town),
                v1::Sector::Education,
            );
        }
    }
    (organisations, kinds)
}

/// Generates a council in `area`: its organisations, about two practitioners
/// per unit of each service's weight (one per school for education),
/// `persons` persons (most of them children) and their involvements — about
/// 1.4 a person, every sensitivity, some ended. The same area, count and seed
/// always give the same records.
pub fn council(area: Area, persons: usize, seed: u64) -> CouncilRecords {
    let mut rng = StdRng::seed_from_u64(seed);
    let j = match area.jurisdiction {
        Jurisdiction::England => 0,
        Jurisdiction::Victoria => 1,
    };
    let (organisations, kinds) = synth_organisations(area, j);
    let organisations_of = |kind: OrgKind| -> Vec<usize> {
        kinds
            .iter()
            .filter(|(k, _)| *k == kind)
            .map(|(_, i)| *i)
            .collect()
    };

    let mut practitioners = Vec::new();
    let mut staff: HashMap<Service, Vec<usize>> = HashMap::new();
    let mut mailboxes = HashSet::new();
    for line in SERVICES {
        let homes = organisations_of(line.organisation);
        let count = if line.organisation == OrgKind::School {
            homes.len()
        } else {
            2 * line.weight as usize
        };
        for k in 0..count {
            let organisation = &organisations[homes[k % homes.len()]];
            let given = pick(&mut rng, GIVEN);
            let family = pick(&mut rng, FAMILY);
            let stem = format!("{}.{}", mailbox_part(given), mailbox_part(family));
            let mut mailbox = stem.clone();
            let mut n = 2;
            while !mailboxes.insert(mailbox.clone()) {
                mailbox = format!("{stem}{n}");
                n += 1;
            }
            staff
                .entry(line.service)
                .or_default()
                .push(practitioners.len());
            practitioners.push(v1::Practitioner {
                id: format!("{}-PR-{:04}", area.id_prefix, practitioners.len() + 1),
                name: format!("{given} {family}"),
                role: line.role[j].to_owned(),
                team: line.team.to_owned(),
                organisation_id: organisation.id.clone(),
                phone: phone(area, rng.random_range(1..10u64.pow(area.phone_digits))),
                email: format!("{mailbox}@{}", area.email_domain),
            });
        }
    }

    let mut records = CouncilRecords {
        area,
        organisations,
        practitioners,
        persons: Vec::with_capacity(persons),
        involvements: Vec::new(),
        staff,
    };
    let latest = latest_date();
    let mut national_ids = HashSet::new();
    for _ in 0..persons {
        let birth_year = if rng.random_bool(0.65) {
            rng.random_range(2008..=2024)
        } else {
            rng.random_range(1940..=2007)
        };
        let dob = calendar_date(
            birth_year,
            rng.random_range(1..=12),
            rng.random_range(1..=28),
        )
        .unwrap_or(latest);
        let (town, district) = area.towns[rng.random_range(0..area.towns.len())];
        let given = pick(&mut rng, GIVEN);
        let family = pick(&mut rng, FAMILY);
        let (postcode, address, national_id) = match area.jurisdiction {
            Jurisdiction::England => {
                let nhs = loop {
                    let n = nhs_test_number(&mut rng);
                    if national_ids.insert(n.clone()) {
                        break n;
                    }
                };
                let address = format!(
                    "{} {}, {town}",
                    rng.random_range(1..200),
                    pick(&mut rng, STREETS)
                );
                (
                    postcode(&mut rng, district),
                    address,
                    // Most carry an NHS number; some never had one recorded.
                    rng.random_bool(0.85).then(|| v1::NationalId {
                        scheme: patchwork_federation::NHS_SCHEME.into(),
                        value: nhs,
                    }),
                )
            }
            Jurisdiction::Victoria => {
                let address = format!(
                    "{} {}, {town} VIC",
                    rng.random_range(1..300),
                    pick(&mut rng, VICTORIAN_STREETS)
                );
                let ihi = format!("800360{:010}", rng.random_range(0..10_000_000_000u64));
                let ihi = rng
                    .random_bool(0.5)
                    .then_some(ihi)
                    .filter(|ihi| national_ids.insert(ihi.clone()));
                (
                    district.to_owned(),
                    address,
                    ihi.map(|value| v1::NationalId {
                        scheme: VICTORIA_ID_SCHEME.into(),
                        value,
                    }),
                )
            }
        };
        let id = records.next_person_id();
        records.persons.push(v1::Person {
            id: id.clone(),
            given_name: given.to_owned(),
            family_name: family.to_owned(),
            date_of_birth: Some(to_proto_date(dob)),
            postcode,
            address,
            national_id,
        });

        let age = latest.year() - dob.year();
        let mut open: Vec<&ServiceLine> = SERVICES
            .iter()
            .filter(|l| (l.ages.0..=l.ages.1).contains(&age))
            .collect();
        let wanted = match rng.random_range(0..100) {
            0..8 => 0,
            8..58 => 1,
            58..86 => 2,
            _ => 3,
        };
        for _ in 0..wanted {
            let total: u32 = open.iter().map(|l| l.weight).sum();
            if total == 0 {
                break;
            }
            let mut ticket = rng.random_range(0..total);
            let Some(at) = open.iter().position(|l| {
                if ticket < l.weight {
                    true
                } else {
                    ticket -= l.weight;
                    false
                }
            }) else {
                break;
            };
            let line = open.swap_remove(at);
            let team = &records.staff[&line.service];
            let practitioner = team[rng.random_range(0..team.len())];
            let earliest = dob.max(latest - time::Duration::days(6 * 365));
            let start = random_date(&mut rng, earliest, latest);
            let end = if rng.random_bool(0.2) {
                let end = start + time::Duration::days(rng.random_range(14..=400));
                (end < latest).then(|| (end, pick(&mut rng, END_REASONS)))
            } else {
                None
            };
            records.push_involvement(&id, line.service, practitioner, start, end);
        }
    }
    records
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
        let mut rows = crate::work::csv_rows::CsvRows::new(
            crate::work::csv_rows::CsvKind::Persons,
            bytes.as_slice(),
        )
        .expect("header");
        let rules = patchwork_server::base::validate::Rules::new("nhs");
        let mut count = 0;
        while let Some((line, row)) = rows.next_row() {
            let Ok(patchwork_proto::v1::import_row::Record::Person(person)) = row else {
                panic!("line {line}: {row:?}")
            };
            patchwork_server::base::validate::person(&person, "", &rules)
                .unwrap_or_else(|e| panic!("line {line}: {e}"));
            count += 1;
        }
        assert_eq!(count, 500);
    }

    const ENGLAND: Area = Area {
        id_prefix: "T",
        name: "Testshire",
        jurisdiction: Jurisdiction::England,
        towns: &[
            ("Guildford", "GU"),
            ("Woking", "GU"),
            ("Epsom", "KT"),
            ("Redhill", "RH"),
        ],
        phone_stem: "01632 960",
        phone_digits: 3,
        email_domain: "testshire.example",
    };
    const VICTORIA: Area = Area {
        id_prefix: "V",
        name: "Testville",
        jurisdiction: Jurisdiction::Victoria,
        towns: &[("Carlton", "3053"), ("Parkville", "3052")],
        phone_stem: "03 5550 ",
        phone_digits: 4,
        email_domain: "testville.example",
    };

    #[test]
    fn synthetic_councils_validate_and_hold_every_sensitivity() {
        use patchwork_server::base::validate::{self, InvolvementSource, Rules};
        use std::collections::HashSet;
        for (area, scheme) in [(ENGLAND, "nhs"), (VICTORIA, VICTORIA_ID_SCHEME)] {
            let records = council(area, 300, 5);
            let rules = Rules::new(scheme);
            for o in &records.organisations {
                validate::organisation(o, "").unwrap_or_else(|e| panic!("{o:?}: {e}"));
            }
            for p in &records.practitioners {
                validate::practitioner(p, "").unwrap_or_else(|e| panic!("{p:?}: {e}"));
                assert!(
                    records
                        .organisations
                        .iter()
                        .any(|o| o.id == p.organisation_id)
                );
            }
            for p in &records.persons {
                validate::person(p, "", &rules).unwrap_or_else(|e| panic!("{p:?}: {e}"));
            }
            let persons: HashSet<_> = records.persons.iter().map(|p| &p.id).collect();
            let practitioners: HashSet<_> = records.practitioners.iter().map(|p| &p.id).collect();
            assert_eq!(persons.len(), 300);
            assert_eq!(practitioners.len(), records.practitioners.len());
            let mut ids = HashSet::new();
            for i in &records.involvements {
                validate::involvement(i, "", InvolvementSource::Import, &rules)
                    .unwrap_or_else(|e| panic!("{i:?}: {e}"));
                assert!(ids.insert(&i.id), "{} twice", i.id);
                assert!(
                    persons.contains(&i.person_id) && practitioners.contains(&i.practitioner_id)
                );
            }
            assert!(
                records.involvements.len() > 300,
                "{}",
                records.involvements.len()
            );
            for sensitivity in [
                v1::Sensitivity::Standard,
                v1::Sensitivity::Restricted,
                v1::Sensitivity::AlwaysFindable,
            ] {
                assert!(
                    records
                        .involvements
                        .iter()
                        .any(|i| i.sensitivity == sensitivity as i32),
                    "{sensitivity:?}"
                );
            }
            assert!(records.involvements.iter().any(|i| i.end_date.is_some()));
            let again = council(area, 300, 5);
            assert_eq!(
                (again.persons, again.involvements),
                (records.persons, records.involvements)
            );
        }
    }

    #[test]
    fn council_persons_carry_only_test_range_nhs_numbers() {
        let records = council(ENGLAND, 500, 9);
        for person in &records.persons {
            if let Some(id) = &person.national_id {
                assert!(
                    id.value.starts_with("999")
                        && patchwork_federation::nhs_number_is_valid(&id.value)
                );
            }
        }
    }

    #[test]
    fn an_added_restricted_involvement_names_the_gatekeeper_not_who() {
        let mut records = council(ENGLAND, 10, 1);
        let start = calendar_date(2024, 2, 1).expect("date");
        let involvement = records
            .add_involvement("T-P-00001", Service::SexualHealth, start, None)
            .expect("someone works there")
            .clone();
        assert_eq!(involvement.sensitivity, v1::Sensitivity::Restricted as i32);
        assert_eq!(involvement.gatekeeper, Some(records.gatekeeper()));
        assert_eq!(
            Some(&involvement.practitioner_id),
            records
                .practitioner_for(Service::SexualHealth)
                .map(|p| &p.id)
        );
    }
}
