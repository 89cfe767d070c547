use patchwork_federation::{KeySet, Weights};
use patchwork_linkage_eval::blinded::Scoring;
use patchwork_linkage_eval::evaluate::{Answerer, Class, ask_pair};
use patchwork_linkage_eval::population::{Geography, Population, PopulationSpec, Scheme};
use patchwork_federation::Subject;

#[test]
#[ignore]
fn two_field_pairs() {
    let population = Population::new(PopulationSpec {
        held: 20_000,
        scheme: Scheme::Opaque(7),
        geography: Geography::Victoria,
        seed: 0x51ed,
    });
    let set = KeySet::new("eval", &[7; 32]).expect("key set");
    let mut answerer = Scoring::new(set, Weights::default());
    for (id, person) in population.held() {
        let record = Subject {
            given_name: Some(patchwork_linkage_eval::names::latin_spelling(&person.given)),
            family_name: Some(patchwork_linkage_eval::names::latin_spelling(&person.family)),
            date_of_birth: Some(person.dob),
            postcode: Some(person.postcode.clone()),
            national_id: Some(("crn".into(), person.national_id.clone())),
        };
        answerer.hold(id, &record);
    }
    for (i, a) in Class::SINGLE.iter().enumerate() {
        for b in &Class::SINGLE[i + 1..] {
            if a.field() == b.field() {
                continue;
            }
            let t = ask_pair(&population, &answerer, (*a, *b), 40, 3);
            if t.recall() < 0.95 {
                println!("{:<34} + {:<34} {:.2} wrong {} amb {} none {}", a.label(), b.label(), t.recall(), t.wrong, t.ambiguous, t.no_match);
            }
        }
    }
}
