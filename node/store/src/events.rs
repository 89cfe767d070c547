//! The team-event outbox and attention flags.
//!
//! Trees:
//! - `events`: `seq` (8 bytes, big-endian) → [`TeamEvent`]. `seq` is one
//!   global, gap-free, increasing sequence (the Watch cursor); the last one
//!   handed out is `events/last_seq` in `meta`.
//! - `events_by_practitioner`: `practitioner id \0 seq` → (), one entry per
//!   recipient, so a practitioner's events read back in order.
//! - `attention`: `person id` → [`AttentionFlag`], the person's raised flag.
//!
//! Invariants: an event is appended in the same transaction as the change
//! that causes it (an involvement written or ended, a flag raised or
//! cleared), so a crash keeps both or neither. Recipients are the other
//! practitioners with a current involvement with the person; the team is
//! read under `team_lock`, which every involvement and attention write
//! holds, so no concurrent write can change it in between. Watchers and
//! webhooks only see events up to the last flushed sequence
//! ([`Store::durable_events`]): a sequence number handed out is never reused
//! after a crash. A restore starts a new epoch (`events/epoch` in `meta`):
//! cursors name it, so one from before the restore is told apart.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sled::Transactional;
use sled::transaction::TransactionalTree;

use super::{Kind, Store, StoreError, TxResult, abort, decode, prefix_key, read_count, tx_encode};
use crate::model::{Contact, Involvement, Sensitivity};

/// `meta` key of the last sequence number handed out.
pub(super) const LAST_EVENT_SEQ: &[u8] = b"events/last_seq";
/// `meta` key of the outbox's epoch: which history its sequence numbers
/// count. Absent (0) until a restore sets a new one (`backup`), because a
/// restored store hands out again the sequence numbers that followed the
/// backup: a cursor from before the restore names a different event.
pub(super) const EVENT_EPOCH: &[u8] = b"events/epoch";
/// `meta` key prefix of each webhook's delivery cursor.
const WEBHOOK_CURSOR: &str = "webhook_cursor/";

/// What happened; `involvement_started` and so on in webhooks' JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum TeamEventKind {
    InvolvementStarted,
    InvolvementEnded,
    AttentionRaised,
    AttentionCleared,
}

/// One event in the outbox. It names the person by this node's own person
/// id: every recipient is a practitioner of this node, who can open it here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TeamEvent {
    pub seq: u64,
    pub person_id: String,
    pub kind: TeamEventKind,
    /// The practitioner who joined, left, raised or cleared.
    pub actor_id: String,
    /// A restricted involvement's gatekeeper, who stands in for the
    /// practitioner (the practitioner and service are not revealed).
    pub gatekeeper: Option<Contact>,
    /// The service (involvements, empty if restricted) or the flag's reason.
    pub reason: String,
    pub at_unix_seconds: i64,
    /// Practitioner ids the event is for, sorted, without the actor.
    pub recipients: Vec<String>,
}

/// A person's raised "increased attention" flag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttentionFlag {
    pub(crate) raised_by: String,
    pub reason: String,
    pub at_unix_seconds: i64,
}

/// What watchers of the outbox follow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// Every event up to this sequence number is on disk.
    pub durable: u64,
    /// The node is shutting down: watchers stop.
    pub closing: bool,
}

/// Current involvements by person: person id → involvement id → practitioner id.
pub(super) type Teams = BTreeMap<String, BTreeMap<String, String>>;

/// The trees an event is appended to, inside a transaction.
pub(super) struct EventTrees<'a> {
    pub events: &'a TransactionalTree,
    pub(crate) by_practitioner: &'a TransactionalTree,
    pub meta: &'a TransactionalTree,
}

pub(crate) fn seq_key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

pub(crate) fn recipient_key(practitioner_id: &str, seq: u64) -> Vec<u8> {
    let mut key = prefix_key(practitioner_id.as_bytes());
    key.extend_from_slice(&seq_key(seq));
    key
}

pub(super) fn now_unix_seconds() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// The team minus `actor`, deduplicated and sorted.
fn recipients(team: Option<&BTreeMap<String, String>>, actor: &str) -> Vec<String> {
    let mut ids: Vec<String> = team
        .into_iter()
        .flat_map(|t| t.values())
        .filter(|p| p.as_str() != actor)
        .cloned()
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

/// `meta` key prefix: `watched/<person id>` → until when (Unix seconds) a
/// peer's subscription follows the person (see `subscriptions`).
pub(super) const WATCHED: &str = "watched/";

/// Appends `event` with the next sequence number, indexed per recipient.
/// An event nobody receives is not stored, unless a peer's subscription
/// follows the person (it reads the outbox by sequence).
pub(super) fn append_event(trees: &EventTrees<'_>, mut event: TeamEvent) -> TxResult<()> {
    if event.recipients.is_empty() {
        let key = format!("{WATCHED}{}", event.person_id);
        let until = trees.meta.get(key.as_bytes())?;
        let watched = until.is_some_and(|until| {
            i64::try_from(read_count(Some(until.as_ref()))).unwrap_or(i64::MAX)
                > event.at_unix_seconds
        });
        if !watched {
            return Ok(());
        }
    }
    let seq = read_count(trees.meta.get(LAST_EVENT_SEQ)?.as_deref()) + 1;
    trees.meta.insert(LAST_EVENT_SEQ, &seq.to_be_bytes())?;
    event.seq = seq;
    for recipient in &event.recipients {
        trees
            .by_practitioner
            .insert(recipient_key(recipient, seq), &[])?;
    }
    trees
        .events
        .insert(&seq_key(seq), tx_encode(Kind::TeamEvent, &event)?)?;
    Ok(())
}

/// A restricted involvement's gatekeeper; one without (never accepted by
/// `validate`, but the store does not rely on it) stands in as a bare
/// "restricted service", never as its practitioner.
fn restricted_stand_in(involvement: &Involvement) -> Contact {
    involvement.gatekeeper.clone().unwrap_or_else(|| Contact {
        name: "a restricted service".into(),
        phone: None,
        email: None,
    })
}

fn involvement_event(
    involvement: &Involvement,
    kind: TeamEventKind,
    recipients: Vec<String>,
    now: i64,
) -> TeamEvent {
    let restricted = involvement.sensitivity == Sensitivity::Restricted;
    let reason = match (restricted, kind) {
        (true, _) => String::new(),
        (false, TeamEventKind::InvolvementEnded) => involvement
            .end_reason
            .clone()
            .unwrap_or_else(|| involvement.service.clone()),
        (false, _) => involvement.service.clone(),
    };
    TeamEvent {
        seq: 0,
        person_id: involvement.person_id.clone(),
        kind,
        actor_id: involvement.practitioner_id.clone(),
        gatekeeper: restricted.then(|| restricted_stand_in(involvement)),
        reason,
        at_unix_seconds: now,
        recipients,
    }
}

/// Appends the events an involvement write causes (`old` → `new`) and
/// updates `teams` to the state after it: a current involvement that stops
/// (ended, or moved to another person or practitioner) is a leave, one that
/// starts is a join; any other change is not an event.
pub(super) fn involvement_changed(
    trees: &EventTrees<'_>,
    teams: &mut Teams,
    old: Option<&Involvement>,
    new: &Involvement,
    now: i64,
) -> TxResult<()> {
    let was = old.filter(|o| o.is_active());
    let is = Some(new).filter(|n| n.is_active());
    let same = |a: &Involvement, b: &Involvement| {
        a.person_id == b.person_id && a.practitioner_id == b.practitioner_id
    };
    if let Some(old) = was {
        if let Some(team) = teams.get_mut(&old.person_id) {
            team.remove(&old.id);
        }
        if !is.is_some_and(|n| same(old, n)) {
            let to = recipients(teams.get(&old.person_id), &old.practitioner_id);
            // The record as it now stands carries the end reason.
            let ended = if new.id == old.id && same(old, new) {
                new
            } else {
                old
            };
            append_event(
                trees,
                involvement_event(ended, TeamEventKind::InvolvementEnded, to, now),
            )?;
        }
    }
    if let Some(new) = is {
        if !was.is_some_and(|o| same(o, new)) {
            let to = recipients(teams.get(&new.person_id), &new.practitioner_id);
            append_event(
                trees,
                involvement_event(new, TeamEventKind::InvolvementStarted, to, now),
            )?;
        }
        teams
            .entry(new.person_id.clone())
            .or_default()
            .insert(new.id.clone(), new.practitioner_id.clone());
    }
    Ok(())
}

impl Store {
    /// Held by every write that changes a team or raises an event, across
    /// reading the team and the transaction that uses it.
    pub(super) fn team_lock(&self) -> parking_lot::MutexGuard<'_, ()> {
        self.team_lock.lock()
    }

    /// The current teams of `person_ids` (call holding `team_lock`).
    pub(super) fn teams_of<'a>(
        &self,
        person_ids: impl IntoIterator<Item = &'a str>,
    ) -> Result<Teams, StoreError> {
        let mut teams = Teams::new();
        for person_id in person_ids {
            if teams.contains_key(person_id) {
                continue;
            }
            let team = self
                .involvements_of_person(person_id)?
                .into_iter()
                .filter(Involvement::is_active)
                .map(|i| (i.id, i.practitioner_id))
                .collect();
            teams.insert(person_id.to_owned(), team);
        }
        Ok(teams)
    }

    /// The teams an involvement batch may change: each involvement's person
    /// and, for one that exists, its current person.
    pub(super) fn teams_for_batch(&self, batch: &[Involvement]) -> Result<Teams, StoreError> {
        let mut persons: Vec<String> = Vec::with_capacity(batch.len());
        for involvement in batch {
            persons.push(involvement.person_id.clone());
            if let Some(old) = self.involvement(&involvement.id)? {
                persons.push(old.person_id);
            }
        }
        self.teams_of(persons.iter().map(String::as_str))
    }

    /// Raises (`Some(reason)`) or clears (`None` reason means clear) a
    /// person's attention flag and tells the rest of the team. Clearing
    /// needs a raised flag; raising again replaces the flag.
    pub fn set_attention(
        &self,
        person_id: &str,
        practitioner_id: &str,
        raise: bool,
        reason: &str,
    ) -> Result<(), StoreError> {
        let _team = self.team_lock();
        let teams = self.teams_of([person_id])?;
        let stand_in = self.stand_in(person_id, practitioner_id)?;
        let _writing = self.writing();
        let now = now_unix_seconds();
        (
            &self.persons,
            &self.practitioners,
            &self.attention,
            &self.events,
            &self.events_by_practitioner,
            &self.meta,
        )
            .transaction(
                |(persons, practitioners, attention, events, by_practitioner, meta)| {
                    if persons.get(person_id.as_bytes())?.is_none() {
                        return abort(StoreError::MissingReference {
                            field: "person_id",
                            kind: Kind::Person,
                            id: person_id.into(),
                        });
                    }
                    if practitioners.get(practitioner_id.as_bytes())?.is_none() {
                        return abort(StoreError::MissingReference {
                            field: "practitioner_id",
                            kind: Kind::Practitioner,
                            id: practitioner_id.into(),
                        });
                    }
                    let kind = if raise {
                        let flag = AttentionFlag {
                            raised_by: practitioner_id.into(),
                            reason: reason.into(),
                            at_unix_seconds: now,
                        };
                        attention
                            .insert(person_id.as_bytes(), tx_encode(Kind::TeamEvent, &flag)?)?;
                        TeamEventKind::AttentionRaised
                    } else {
                        if attention.remove(person_id.as_bytes())?.is_none() {
                            return abort(StoreError::Invalid {
                                field: "person_id",
                                message: "has no attention flag raised".into(),
                            });
                        }
                        TeamEventKind::AttentionCleared
                    };
                    let trees = EventTrees {
                        events,
                        by_practitioner,
                        meta,
                    };
                    append_event(
                        &trees,
                        TeamEvent {
                            seq: 0,
                            person_id: person_id.into(),
                            kind,
                            actor_id: practitioner_id.into(),
                            gatekeeper: stand_in.clone(),
                            reason: reason.into(),
                            at_unix_seconds: now,
                            recipients: recipients(teams.get(person_id), practitioner_id),
                        },
                    )
                },
            )
            .map_err(super::tx_error)
    }

    /// Who stands in for `actor_id` in an event about `person_id` they did
    /// not make by joining or leaving (an attention flag): the gatekeeper of
    /// their restricted involvement with the person, if they have one and no
    /// current non-restricted one. A lookup would show the rest of the team
    /// only that gatekeeper; the event must not name the practitioner behind
    /// it either. `None`: the actor's own contact may show.
    pub fn stand_in(&self, person_id: &str, actor_id: &str) -> Result<Option<Contact>, StoreError> {
        let mine: Vec<Involvement> = self
            .involvements_of_person(person_id)?
            .into_iter()
            .filter(|i| i.practitioner_id == actor_id)
            .collect();
        if mine
            .iter()
            .any(|i| i.is_active() && i.sensitivity != Sensitivity::Restricted)
        {
            return Ok(None);
        }
        // Current ones first: their gatekeeper is the one to call now.
        let restricted = mine
            .iter()
            .filter(|i| i.sensitivity == Sensitivity::Restricted)
            .max_by_key(|i| i.is_active());
        Ok(restricted.map(restricted_stand_in))
    }

    /// The person's raised attention flag, if any.
    pub fn attention(&self, person_id: &str) -> Result<Option<AttentionFlag>, StoreError> {
        self.attention
            .get(person_id.as_bytes())?
            .map(|bytes| decode(Kind::TeamEvent, &bytes))
            .transpose()
    }

    /// The last sequence number handed out (0: none yet).
    pub fn last_event_seq(&self) -> Result<u64, StoreError> {
        Ok(read_count(self.meta.get(LAST_EVENT_SEQ)?.as_deref()))
    }

    /// The outbox's epoch (see [`EVENT_EPOCH`]); 0 for a store never
    /// restored.
    pub fn event_epoch(&self) -> Result<u64, StoreError> {
        Ok(read_count(self.meta.get(EVENT_EPOCH)?.as_deref()))
    }

    /// Follows the last event sequence number known to be on disk.
    pub fn durable_events(&self) -> tokio::sync::watch::Receiver<Progress> {
        self.durable_events.subscribe()
    }

    /// Tells watchers that every event up to `seq` is on disk.
    pub(super) fn publish_durable_events(&self, seq: u64) {
        self.durable_events.send_if_modified(|current| {
            let newer = seq > current.durable;
            if newer {
                current.durable = seq;
            }
            newer
        });
    }

    /// Ends every watcher (at shutdown, so open streams do not hold the
    /// drain open).
    pub fn close_watchers(&self) {
        self.durable_events
            .send_modify(|current| current.closing = true);
    }

    /// `practitioner_id`'s events with `after < seq <= up_to`, oldest first.
    pub fn events_for(
        &self,
        practitioner_id: &str,
        after: u64,
        up_to: u64,
        limit: usize,
    ) -> Result<Vec<TeamEvent>, StoreError> {
        if after >= up_to {
            return Ok(Vec::new());
        }
        let start = recipient_key(practitioner_id, after + 1);
        let end = recipient_key(practitioner_id, up_to);
        let mut found = Vec::new();
        for entry in self.events_by_practitioner.range(start..=end).take(limit) {
            let (key, _) = entry?;
            let seq_bytes = key.get(key.len().saturating_sub(8)..).unwrap_or_default();
            match self.events.get(seq_bytes)? {
                Some(bytes) => found.push(decode(Kind::TeamEvent, &bytes)?),
                None => {
                    return Err(StoreError::Corrupt {
                        kind: Kind::TeamEvent,
                        detail: "recipient entry without an event".into(),
                    });
                }
            }
        }
        Ok(found)
    }

    /// Every event with `after < seq <= up_to`, oldest first.
    pub fn events_after(
        &self,
        after: u64,
        up_to: u64,
        limit: usize,
    ) -> Result<Vec<TeamEvent>, StoreError> {
        if after >= up_to {
            return Ok(Vec::new());
        }
        self.events
            .range(seq_key(after + 1)..=seq_key(up_to))
            .take(limit)
            .map(|entry| {
                let (_, bytes) = entry?;
                decode(Kind::TeamEvent, &bytes)
            })
            .collect()
    }

    /// A webhook's delivery cursor, `None` before its first run.
    pub fn webhook_cursor(&self, name: &str) -> Result<Option<u64>, StoreError> {
        let key = format!("{WEBHOOK_CURSOR}{name}");
        Ok(self
            .meta
            .get(key.as_bytes())?
            .map(|bytes| read_count(Some(&bytes))))
    }

    /// Records that a webhook has delivered everything up to `seq`. Not
    /// flushed: after a crash the webhook redelivers (at least once).
    pub fn set_webhook_cursor(&self, name: &str, seq: u64) -> Result<(), StoreError> {
        let _writing = self.writing();
        let key = format!("{WEBHOOK_CURSOR}{name}");
        self.meta.insert(key.as_bytes(), &seq.to_be_bytes())?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{WriteMode, fixtures};

    fn open() -> (tempfile::TempDir, Store) {
        let (dir, store) = fixtures::empty_store();
        fixtures::put_council(&store, &["A", "B", "C"]);
        store
            .put_persons(&[fixtures::person("P1", "Smith")], WriteMode::Create)
            .expect("person");
        (dir, store)
    }

    fn involvement(id: &str, practitioner: &str) -> Involvement {
        fixtures::involvement(id, "P1", practitioner)
    }

    #[test]
    fn the_rest_of_the_team_hears_of_joins_leaves_and_attention_in_order() {
        let (_dir, store) = open();
        store
            .put_involvements(&[involvement("I1", "A")], WriteMode::Create)
            .expect("first");
        assert_eq!(
            store.last_event_seq().expect("seq"),
            0,
            "nobody else to tell"
        );
        store
            .put_involvements(
                &[involvement("I2", "B"), involvement("I3", "C")],
                WriteMode::Create,
            )
            .expect("more");
        store
            .set_attention("P1", "A", true, "missed three appointments")
            .expect("raise");
        let start = crate::model::calendar_date(2024, 1, 1).expect("date");
        store.end_involvement("I2", start, None).expect("end");
        let last = store.last_event_seq().expect("seq");
        let kinds = |who: &str| -> Vec<(TeamEventKind, String)> {
            store
                .events_for(who, 0, last, 100)
                .expect("events")
                .into_iter()
                .map(|e| (e.kind, e.actor_id))
                .collect()
        };
        use TeamEventKind::*;
        assert_eq!(
            kinds("A"),
            vec![
                (InvolvementStarted, "B".into()),
                (InvolvementStarted, "C".into()),
                (InvolvementEnded, "B".into()),
            ]
        );
        assert_eq!(
            kinds("B"),
            vec![
                (InvolvementStarted, "C".into()),
                (AttentionRaised, "A".into())
            ]
        );
        assert_eq!(
            kinds("C"),
            vec![
                (AttentionRaised, "A".into()),
                (InvolvementEnded, "B".into())
            ]
        );
        assert!(store.attention("P1").expect("flag").is_some());
        store.set_attention("P1", "B", false, "").expect("clear");
        assert!(matches!(
            store.set_attention("P1", "B", false, ""),
            Err(StoreError::Invalid {
                field: "person_id",
                ..
            })
        ));
        assert_eq!(
            store.events_after(0, u64::MAX, 100).expect("all").len(),
            5,
            "every event once, in one sequence"
        );
        assert!(
            store
                .events_by_practitioner
                .contains_key(recipient_key("A", 1))
                .expect("index")
        );
    }

    #[tokio::test]
    async fn imports_restricted_services_and_reopening_keep_the_outbox_right() {
        let (dir, store) = open();
        store
            .put_involvements(&[involvement("I1", "A")], WriteMode::Upsert)
            .expect("first");
        let mut refuge = involvement("I2", "B");
        refuge.sensitivity = Sensitivity::Restricted;
        refuge.service = "Domestic-abuse refuge".into();
        refuge.gatekeeper = Some(Contact {
            name: "Refuge duty line".into(),
            phone: Some("0800 000 0000".into()),
            email: None,
        });
        store
            .put_involvements(&[refuge.clone()], WriteMode::Upsert)
            .expect("restricted");
        // An import that only re-confirms changes no team: no event.
        let mut confirmed = involvement("I1", "A");
        confirmed.last_confirmed = crate::model::calendar_date(2024, 5, 1).expect("date");
        store
            .put_involvements(&[confirmed], WriteMode::Upsert)
            .expect("confirm");
        // An import that carries an end date ends it.
        refuge.end_date = crate::model::calendar_date(2024, 6, 1);
        store
            .put_involvements(&[refuge], WriteMode::Upsert)
            .expect("end by import");
        let events = store.events_for("A", 0, u64::MAX, 10).expect("events");
        let kinds: Vec<TeamEventKind> = events.iter().map(|e| e.kind).collect();
        assert_eq!(
            kinds,
            vec![
                TeamEventKind::InvolvementStarted,
                TeamEventKind::InvolvementEnded
            ]
        );
        for event in &events {
            assert_eq!(event.reason, "", "a restricted service is not named");
            assert_eq!(
                event.gatekeeper.as_ref().map(|g| g.name.as_str()),
                Some("Refuge duty line")
            );
        }
        // Watchers see events only once flushed; a reopened store knows
        // they are on disk.
        assert_eq!(store.durable_events().borrow().durable, 0);
        store.flush().await.expect("flush");
        assert_eq!(store.durable_events().borrow().durable, 2);
        drop(store);
        let reopened = fixtures::reopen(&dir);
        assert_eq!(reopened.durable_events().borrow().durable, 2);
        assert_eq!(reopened.last_event_seq().expect("seq"), 2);
    }

    #[test]
    fn a_restricted_practitioners_attention_names_only_the_gatekeeper() {
        let (_dir, store) = open();
        let clinic = Contact {
            name: "Clinic duty line".into(),
            phone: Some("0800 555 0199".into()),
            email: None,
        };
        let mut nurse = involvement("I2", "B");
        nurse.sensitivity = Sensitivity::Restricted;
        nurse.gatekeeper = Some(clinic.clone());
        store
            .put_involvements(&[involvement("I1", "A"), nurse], WriteMode::Create)
            .expect("team");
        // B (restricted only) stands behind the gatekeeper; A (standard) and
        // C (no involvement) are themselves.
        assert_eq!(store.stand_in("P1", "B").expect("B"), Some(clinic.clone()));
        assert_eq!(store.stand_in("P1", "A").expect("A"), None);
        assert_eq!(store.stand_in("P1", "C").expect("C"), None);
        store
            .set_attention("P1", "B", true, "missed three appointments")
            .expect("raise");
        let events = store.events_for("A", 0, u64::MAX, 10).expect("events");
        let raised = events.last().expect("the flag");
        assert_eq!(raised.kind, TeamEventKind::AttentionRaised);
        assert_eq!(raised.gatekeeper, Some(clinic.clone()));

        // Once B also has a current standard involvement, B is on the team
        // openly and may show as themself.
        let mut open_work = involvement("I3", "B");
        open_work.service = "Family support".into();
        store
            .put_involvements(&[open_work], WriteMode::Create)
            .expect("standard");
        assert_eq!(store.stand_in("P1", "B").expect("B"), None);
    }
}
