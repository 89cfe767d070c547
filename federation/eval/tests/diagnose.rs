//! Diagnoses, run by hand (`--release -- --ignored --nocapture`): the benchmark's
//! evaluation at 1,000,000 with its wrong disclosures, one query's candidates
//! scored, and the quick run's wrong disclosures.

use patchwork_federation::{KeySet, Weights};
use patchwork_linkage_eval::blinded::Scoring;
use patchwork_linkage_eval::evaluate::evaluate;
use patchwork_linkage_eval::population::{Geography, Population, PopulationSpec, Scheme};

#[test]
#[ignore = "a diagnosis: slow, prints wrong disclosures at a million"]
fn at_a_million() {
    // The benchmark's key set, so that its figures repeat here.
    let secret: Vec<u8> = (0..32)
        .map(|i| u8::from_str_radix(&BENCH_SECRET_HEX[2 * i..2 * i + 2], 16).expect("hex"))
        .collect();
    for (name, scheme, geography) in [
        ("England", Scheme::Nhs, Geography::England),
        ("Victoria", Scheme::Opaque(7), Geography::Victoria),
    ] {
        let population = Population::new(PopulationSpec {
            held: 1_000_000,
            scheme,
            geography,
            seed: 0x51ed,
        });
        let set = KeySet::new("bench", &secret).expect("key set");
        let mut answerer = Scoring::new(set, Weights::default());
        let report = evaluate(name, &population, &mut answerer, 1000, 0xa5);
        println!("{}", report.table());
        for example in &report.wrong_examples {
            println!("WRONG {example}");
        }
    }
}

/// `patchwork-bench`'s key set secret (`bench/src/main.rs`).
const BENCH_SECRET_HEX: &str = "5f1d3c0a9b8e7d6c5b4a39281706f5e4d3c2b1a09f8e7d6c5b4a392817060504";

#[test]
#[ignore = "a diagnosis of one query"]
fn one_query() {
    use patchwork_linkage_eval::evaluate::{Answerer, hold_all};
    let population = Population::new(PopulationSpec {
        held: 1_000_000,
        scheme: Scheme::Opaque(7),
        geography: Geography::Victoria,
        seed: 0x51ed,
    });
    let set = KeySet::new("eval", &[7; 32]).expect("key set");
    let mut answerer = Scoring::new(set, Weights::default());
    hold_all(&population, &mut answerer, 0xa5);
    let query = patchwork_federation::Subject {
        given_name: Some("MARIA".into()),
        family_name: Some("Papadopoulos".into()),
        date_of_birth: Some((2020, 9, 16)),
        postcode: Some("3546".into()),
        national_id: Some(("crn".into(), "7952826".into())),
    };
    let wire = answerer.ask(&query);
    let (scored, _) = answerer.scored(&wire);
    for s in scored {
        println!("{:?} {:?}", s, population.persons[s.id]);
    }
}

#[test]
#[ignore = "a diagnosis: the bench's quick run"]
fn quick_runs() {
    for (scheme, geography) in [
        (Scheme::Nhs, Geography::England),
        (Scheme::Opaque(7), Geography::Victoria),
    ] {
        let population = Population::new(PopulationSpec {
            held: 20_000,
            scheme,
            geography,
            seed: 0x51ed,
        });
        let set = KeySet::new("bench", &[7; 32]).expect("key set");
        let mut answerer = Scoring::new(set, Weights::default());
        let report = evaluate("quick", &population, &mut answerer, 100, 0xa5);
        for example in &report.wrong_examples {
            println!("{example}");
        }
    }
}
