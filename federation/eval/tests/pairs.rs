//! A diagnosis, run by hand (`--ignored --nocapture`): recall for each pair of
//! single-field errors, to see which combinations the two-field class loses.

use patchwork_federation::{KeySet, Weights};
use patchwork_linkage_eval::blinded::Scoring;
use patchwork_linkage_eval::evaluate::{Class, ask_pair, hold_all};
use patchwork_linkage_eval::population::{Geography, Population, PopulationSpec, Scheme};

#[test]
#[ignore = "a diagnosis: prints the weakest pairs of errors"]
fn two_field_pairs() {
    let population = Population::new(PopulationSpec {
        held: 20_000,
        scheme: Scheme::Opaque(7),
        geography: Geography::Victoria,
        seed: 0x51ed,
    });
    let set = KeySet::new("eval", &[7; 32]).expect("key set");
    let mut answerer = Scoring::new(set, Weights::default());
    hold_all(&population, &mut answerer, 0xa5);
    for (i, a) in Class::SINGLE.iter().enumerate() {
        for b in &Class::SINGLE[i + 1..] {
            if a.field() == b.field() {
                continue;
            }
            let t = ask_pair(&population, &answerer, (*a, *b), 40, 3);
            if t.recall() < 0.95 {
                println!(
                    "{:<34} + {:<34} {:.2} wrong {} ambiguous {} no match {}",
                    a.label(),
                    b.label(),
                    t.recall(),
                    t.wrong,
                    t.ambiguous,
                    t.no_match
                );
            }
        }
    }
}
