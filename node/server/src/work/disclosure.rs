//! What a lookup may tell about a matched person's involvements: contact
//! details only, never case data, and for restricted services only that one is
//! involved and its gatekeeper. Ended involvements are never disclosed.

use patchwork_proto::v1;

use std::collections::HashMap;

use crate::base::convert;
use crate::base::validate::to_proto_date;
use patchwork_store::audit::FamilyMemberDisclosed;
use patchwork_store::model::{Involvement, Organisation, Sensitivity};
use patchwork_store::{Store, StoreError};

/// What one answer discloses about the matched person `person_id`: their
/// current involvements that `allowed` lets through (locally everything;
/// for a peer what its agreement covers), and with `include_family` the
/// family view under the same rule; with the ids of what was disclosed, for
/// the audit log. The one path for local lookups and peers' queries alike.
pub(crate) fn disclose(
    store: &Store,
    person_id: &str,
    include_family: bool,
    allowed: impl Fn(&Involvement) -> bool,
) -> Result<(Vec<v1::DisclosedInvolvement>, DisclosedIds), StoreError> {
    let mut contacts = Contacts::new(store);
    let mut disclosed = Vec::new();
    let mut ids = DisclosedIds::default();
    for involvement in store.involvements_of_person(person_id)? {
        if !involvement.is_active() || !allowed(&involvement) {
            continue;
        }
        disclosed.push(contacts.disclose(&involvement)?);
        ids.involvement_ids.push(involvement.id);
    }
    if include_family {
        // Family members' ids go to the audit log with the rest, and each
        // member is named for their own subject-access report.
        let family = disclose_family(&mut contacts, person_id, allowed)?;
        ids.involvement_ids.extend(family.ids());
        disclosed.extend(family.involvements);
        ids.family = family.members;
    }
    Ok((disclosed, ids))
}

/// What one answer disclosed, as the audit log records it: every
/// involvement id (the matched person's and the family's) and, per family
/// member, theirs.
#[derive(Debug, Default)]
pub(crate) struct DisclosedIds {
    pub(crate) involvement_ids: Vec<String>,
    pub family: Vec<FamilyMemberDisclosed>,
}

/// What a family lookup disclosed about the matched person's linked
/// members.
#[derive(Debug, Default)]
struct FamilyDisclosure {
    involvements: Vec<v1::DisclosedInvolvement>,
    /// Per member, the ids disclosed: for the audit log, whose
    /// `FamilyDisclosed` entry puts the lookup in each member's own
    /// subject-access report.
    members: Vec<FamilyMemberDisclosed>,
}

impl FamilyDisclosure {
    /// Every involvement id disclosed, member by member.
    fn ids(&self) -> impl Iterator<Item = String> + '_ {
        self.members
            .iter()
            .flat_map(|m| m.disclosed_involvement_ids.iter().cloned())
    }
}

/// The family view: the current involvements of every person linked to
/// `person_id` that `allowed` lets through (locally everything, for a peer
/// what its agreement covers), each disclosed like the person's own and
/// marked with the member's relationship ("sibling"), never their name; with
/// what was disclosed about whom, for the audit log (a member nothing was
/// disclosed about is not named).
fn disclose_family(
    contacts: &mut Contacts<'_>,
    person_id: &str,
    allowed: impl Fn(&Involvement) -> bool,
) -> Result<FamilyDisclosure, StoreError> {
    let store = contacts.store;
    let mut family = FamilyDisclosure::default();
    for (member_id, relationship) in store.links_of(person_id)? {
        let mut ids = Vec::new();
        for involvement in store.involvements_of_person(&member_id)? {
            if !involvement.is_active() || !allowed(&involvement) {
                continue;
            }
            let mut one = contacts.disclose(&involvement)?;
            one.family_member = relationship.label().into();
            family.involvements.push(one);
            ids.push(involvement.id);
        }
        if !ids.is_empty() {
            family.members.push(FamilyMemberDisclosed {
                person_id: member_id,
                disclosed_involvement_ids: ids,
            });
        }
    }
    Ok(family)
}

/// One involvement as disclosed: the practitioner's contact details, or for
/// a restricted service only its gatekeeper.
pub(crate) fn disclose_one(
    store: &Store,
    involvement: &Involvement,
) -> Result<v1::DisclosedInvolvement, StoreError> {
    Contacts::new(store).disclose(involvement)
}

/// Discloses several involvements for one answer, reading each organisation
/// once: a person's practitioners mostly work for the same few.
pub(crate) struct Contacts<'s> {
    store: &'s Store,
    organisations: HashMap<String, Option<Organisation>>,
}

impl<'s> Contacts<'s> {
    pub(crate) fn new(store: &'s Store) -> Self {
        Contacts {
            store,
            organisations: HashMap::new(),
        }
    }

    fn organisation(&mut self, id: &str) -> Result<Option<&Organisation>, StoreError> {
        if !self.organisations.contains_key(id) {
            let organisation = self.store.organisation(id)?;
            self.organisations.insert(id.to_owned(), organisation);
        }
        Ok(self.organisations.get(id).and_then(Option::as_ref))
    }

    /// See [`disclose_one`].
    pub(crate) fn disclose(
        &mut self,
        involvement: &Involvement,
    ) -> Result<v1::DisclosedInvolvement, StoreError> {
        let contact = match involvement.sensitivity {
            Sensitivity::Restricted => involvement
                .gatekeeper
                .as_ref()
                .map(|g| v1::disclosed_involvement::Contact::Gatekeeper(convert::contact(g))),
            Sensitivity::Standard | Sensitivity::AlwaysFindable => {
                match self.store.practitioner(&involvement.practitioner_id)? {
                    Some(practitioner) => {
                        let organisation = self.organisation(&practitioner.organisation_id)?;
                        Some(v1::disclosed_involvement::Contact::Practitioner(
                            convert::practitioner_contact(practitioner, organisation),
                        ))
                    }
                    None => None,
                }
            }
        };
        // For a restricted service even its name and start date say too much
        // ("sexual health clinic since March"): only that one is involved.
        let restricted = involvement.sensitivity == Sensitivity::Restricted;
        Ok(v1::DisclosedInvolvement {
            service: if restricted {
                String::new()
            } else {
                involvement.service.clone()
            },
            sensitivity: v1::Sensitivity::from(involvement.sensitivity) as i32,
            start_date: if restricted {
                None
            } else {
                Some(to_proto_date(involvement.start_date))
            },
            contact,
            family_member: String::new(),
        })
    }
}
