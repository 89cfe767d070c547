//! The matching evaluation at 20,000 held persons (see the crate's docs).

use patchwork_federation::KeySet;
use patchwork_federation::Weights;
use patchwork_linkage_eval::blinded::{KeysOnly, Scoring};
use patchwork_linkage_eval::evaluate::evaluate;
use patchwork_linkage_eval::population::{Geography, Population, PopulationSpec, Scheme};

#[test]
fn keys_only_baseline() {
    for (name, scheme, geography) in [
        ("England, NHS numbers", Scheme::Nhs, Geography::England),
        ("Victoria, 7-digit numbers", Scheme::Opaque(7), Geography::Victoria),
    ] {
        let population = Population::new(PopulationSpec {
            held: 20_000,
            scheme,
            geography,
            seed: 0x51ed,
        });
        let set = KeySet::new("eval", &[7; 32]).expect("key set");
        let mut answerer = KeysOnly::new(set.clone());
        let report = evaluate(name, &population, &mut answerer, 500, 0xa5);
        println!("{}", report.table());
        let mut answerer = Scoring::new(set, Weights::default());
        let report = evaluate(name, &population, &mut answerer, 500, 0xa5);
        println!("{}", report.table());
        for example in &report.wrong_examples {
            println!("{example}");
        }
    }
}
