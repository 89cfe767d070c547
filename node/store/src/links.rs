//! Family and household links between a node's own persons (the family
//! view). Tree `links`: `person id \0 other person id` → one byte, the
//! relationship of the other person to the first. Every link is stored both
//! ways (`Parent` one way is `Child` the other) in one transaction that also
//! checks both persons exist, so a crash never leaves half a link.

use sled::Transactional;

use super::{Kind, Store, StoreError, abort, child_of, pair_key, prefix_key, tx_error};
use crate::model::Relationship;

fn relationship_byte(relationship: Relationship) -> u8 {
    match relationship {
        Relationship::Household => 1,
        Relationship::Parent => 2,
        Relationship::Child => 3,
        Relationship::Sibling => 4,
        Relationship::Other => 5,
    }
}

fn relationship_of(bytes: &[u8]) -> Result<Relationship, StoreError> {
    Ok(match bytes {
        [1] => Relationship::Household,
        [2] => Relationship::Parent,
        [3] => Relationship::Child,
        [4] => Relationship::Sibling,
        [5] => Relationship::Other,
        _ => {
            return Err(StoreError::Corrupt {
                kind: Kind::Person,
                detail: "unreadable person link".into(),
            });
        }
    })
}

impl Store {
    /// Links `person_id` and `other_id` both ways; `relationship` is what
    /// the other person is to the first. Replaces an existing link.
    pub fn link_persons(
        &self,
        person_id: &str,
        other_id: &str,
        relationship: Relationship,
    ) -> Result<(), StoreError> {
        if person_id == other_id {
            return Err(StoreError::Invalid {
                field: "other_person_id",
                message: "a person cannot be linked to themselves".into(),
            });
        }
        // Erasure reads a person's links before its transaction, under this
        // lock: a link made in between would outlive the person.
        let _person_writes = self.person_writes.lock();
        let _writing = self.writing();
        (&self.persons, &self.links)
            .transaction(|(persons, links)| {
                for (field, id) in [("person_id", person_id), ("other_person_id", other_id)] {
                    if persons.get(id.as_bytes())?.is_none() {
                        return abort(StoreError::MissingReference {
                            field,
                            kind: Kind::Person,
                            id: id.into(),
                        });
                    }
                }
                links.insert(
                    pair_key(person_id, other_id),
                    &[relationship_byte(relationship)],
                )?;
                links.insert(
                    pair_key(other_id, person_id),
                    &[relationship_byte(relationship.inverse())],
                )?;
                Ok(())
            })
            .map_err(tx_error)
    }

    /// Removes the link both ways; false if there was none.
    pub fn unlink_persons(&self, person_id: &str, other_id: &str) -> Result<bool, StoreError> {
        let _writing = self.writing();
        self.links
            .transaction(|links| {
                let had = links.remove(pair_key(person_id, other_id))?.is_some();
                let had_back = links.remove(pair_key(other_id, person_id))?.is_some();
                Ok(had || had_back)
            })
            .map_err(tx_error)
    }

    /// The persons linked to `person_id`, in id order, each with what they
    /// are to `person_id`.
    pub fn links_of(&self, person_id: &str) -> Result<Vec<(String, Relationship)>, StoreError> {
        let prefix = prefix_key(person_id.as_bytes());
        let mut links = Vec::new();
        for entry in self.links.scan_prefix(&prefix) {
            let (key, value) = entry?;
            links.push((child_of(&key, prefix.len()), relationship_of(&value)?));
        }
        Ok(links)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::WriteMode;

    fn person(id: &str) -> crate::model::Person {
        crate::fixtures::person(id, "Smith")
    }

    #[test]
    fn links_are_symmetric_and_need_both_persons() {
        let (_dir, store) = crate::fixtures::empty_store();
        store
            .put_persons(&[person("C1"), person("M1")], WriteMode::Create)
            .expect("persons");
        assert!(matches!(
            store.link_persons("C1", "nobody", Relationship::Sibling),
            Err(StoreError::MissingReference {
                field: "other_person_id",
                ..
            })
        ));
        assert!(store.links_of("C1").expect("links").is_empty());
        store
            .link_persons("C1", "M1", Relationship::Parent)
            .expect("link");
        assert_eq!(
            store.links_of("C1").expect("links"),
            vec![("M1".to_string(), Relationship::Parent)]
        );
        assert_eq!(
            store.links_of("M1").expect("links"),
            vec![("C1".to_string(), Relationship::Child)]
        );
        assert!(store.unlink_persons("M1", "C1").expect("unlink"));
        assert!(store.links_of("C1").expect("links").is_empty());
        assert!(!store.unlink_persons("M1", "C1").expect("unlink again"));
    }
}
