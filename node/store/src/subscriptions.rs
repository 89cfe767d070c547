//! Cross-border subscriptions, both sides.
//!
//! Trees (opened on first use):
//! - `subscriptions` (answering side): subscription id → [`Subscription`],
//!   what a peer subscribed to here: bound to that peer's identity, the
//!   matched person, the requester and the purpose, until it expires or is
//!   cancelled. Notifications are read from the team-event outbox
//!   (`events`) by person, after the subscription's starting sequence.
//! - `remote_subscriptions` (subscriber side): local subscription id →
//!   [`RemoteSubscription`], with the peer's subscription id and the durable
//!   poll cursor into the peer's sequence.
//! - `remote_event_details`: local event seq → [`RemoteDetail`], what the
//!   peer disclosed for an outbox event written from its notification.
//!
//! Invariant: a notification is written to the local outbox, its detail
//! stored and the subscription's cursor moved on in one transaction, so a
//! crash never loses one nor writes it twice.

use serde::{Deserialize, Serialize};
use sled::Transactional;

use super::events::{
    EventTrees, LAST_EVENT_SEQ, TeamEvent, TeamEventKind, WATCHED, append_event, now_unix_seconds,
};
use super::{Kind, Store, StoreError, abort, decode, encode, read_count, tx_encode};
use crate::model::LawfulBasis;

pub(crate) const SUBSCRIPTIONS: &str = "subscriptions";
const REMOTE_SUBSCRIPTIONS: &str = "remote_subscriptions";
const REMOTE_EVENT_DETAILS: &str = "remote_event_details";

/// A peer's subscription to one of this node's persons.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscription {
    pub id: String,
    /// The SPIFFE id from the peer's verified certificate.
    pub peer: String,
    pub person_id: String,
    pub requester_practitioner_id: String,
    pub requester_name: String,
    pub lawful_basis: LawfulBasis,
    pub reason: String,
    /// Only events after this sequence are notified.
    pub from_seq: u64,
    pub expires_at_unix_seconds: i64,
    pub cancelled: bool,
}

impl Subscription {
    pub fn is_live(&self, now: i64) -> bool {
        !self.cancelled && now < self.expires_at_unix_seconds
    }
}

/// A subscription this node made at a peer for a local practitioner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteSubscription {
    pub id: String,
    pub practitioner_id: String,
    /// The peer's SPIFFE id.
    pub peer: String,
    pub remote_id: String,
    pub expires_at_unix_seconds: i64,
    /// Everything up to this sequence of the peer's has been received.
    pub cursor: u64,
}

/// What a peer disclosed with one notification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteDetail {
    pub peer: String,
    pub subscription_id: String,
    /// The prost-encoded `DisclosedInvolvement`, empty if none.
    pub involvement: Vec<u8>,
}

/// One notification to write into the outbox.
#[derive(Debug, Clone)]
pub struct Received {
    pub remote_cursor: u64,
    pub kind: TeamEventKind,
    pub at_unix_seconds: i64,
    /// The service, for a disclosed standard involvement.
    pub reason: String,
    pub involvement: Vec<u8>,
}

impl Store {
    fn tree(&self, name: &str) -> Result<sled::Tree, StoreError> {
        Ok(self.db.open_tree(name)?)
    }

    /// Stores a peer's subscription, and marks its person followed until
    /// it expires (so even events no local practitioner receives are kept).
    pub fn put_subscription(&self, subscription: &Subscription) -> Result<(), StoreError> {
        let subscriptions = self.tree(SUBSCRIPTIONS)?;
        let key = format!("{WATCHED}{}", subscription.person_id);
        let until = u64::try_from(subscription.expires_at_unix_seconds).unwrap_or_default();
        // The person must still be here: an erasure (which holds this lock
        // while it reads and removes subscriptions) may have come between
        // the match and this write.
        let _person_writes = self.person_writes.lock();
        let _writing = self.writing();
        (&subscriptions, &self.meta, &self.persons)
            .transaction(|(subscriptions, meta, persons)| {
                if persons.get(subscription.person_id.as_bytes())?.is_none() {
                    return super::abort(StoreError::NotFound {
                        kind: Kind::Person,
                        id: subscription.person_id.clone(),
                    });
                }
                subscriptions.insert(
                    subscription.id.as_bytes(),
                    tx_encode(Kind::TeamEvent, subscription)?,
                )?;
                let longest = until.max(read_count(meta.get(key.as_bytes())?.as_deref()));
                meta.insert(key.as_bytes(), &longest.to_be_bytes())?;
                Ok(())
            })
            .map_err(super::tx_error)
    }

    pub fn subscription(&self, id: &str) -> Result<Option<Subscription>, StoreError> {
        self.tree(SUBSCRIPTIONS)?
            .get(id.as_bytes())?
            .map(|bytes| decode(Kind::TeamEvent, &bytes))
            .transpose()
    }

    /// Marks a peer's subscription cancelled (kept for the record).
    pub fn cancel_subscription(&self, id: &str) -> Result<(), StoreError> {
        if let Some(mut subscription) = self.subscription(id)? {
            subscription.cancelled = true;
            self.put_subscription(&subscription)?;
        }
        Ok(())
    }

    pub fn put_remote_subscription(
        &self,
        subscription: &RemoteSubscription,
    ) -> Result<(), StoreError> {
        let _writing = self.writing();
        self.tree(REMOTE_SUBSCRIPTIONS)?.insert(
            subscription.id.as_bytes(),
            encode(Kind::TeamEvent, subscription)?,
        )?;
        Ok(())
    }

    pub fn remote_subscription(&self, id: &str) -> Result<Option<RemoteSubscription>, StoreError> {
        self.tree(REMOTE_SUBSCRIPTIONS)?
            .get(id.as_bytes())?
            .map(|bytes| decode(Kind::TeamEvent, &bytes))
            .transpose()
    }

    /// Every subscription this node made at peers.
    pub fn remote_subscriptions(&self) -> Result<Vec<RemoteSubscription>, StoreError> {
        self.tree(REMOTE_SUBSCRIPTIONS)?
            .iter()
            .map(|entry| {
                let (_, bytes) = entry?;
                decode(Kind::TeamEvent, &bytes)
            })
            .collect()
    }

    pub fn remove_remote_subscription(&self, id: &str) -> Result<(), StoreError> {
        let _writing = self.writing();
        self.tree(REMOTE_SUBSCRIPTIONS)?.remove(id.as_bytes())?;
        Ok(())
    }

    /// What a peer disclosed with the outbox event `seq`, if it came from one.
    pub fn remote_event_detail(&self, seq: u64) -> Result<Option<RemoteDetail>, StoreError> {
        self.tree(REMOTE_EVENT_DETAILS)?
            .get(seq.to_be_bytes())?
            .map(|bytes| decode(Kind::TeamEvent, &bytes))
            .transpose()
    }

    /// Writes a peer's notification into the subscribing practitioner's
    /// outbox and moves the subscription's cursor to it, in one
    /// transaction. Returns the local sequence number, or `None` if the
    /// subscription is gone or already past that cursor.
    pub fn receive_notification(
        &self,
        subscription_id: &str,
        received: &Received,
    ) -> Result<Option<u64>, StoreError> {
        let remote = self.tree(REMOTE_SUBSCRIPTIONS)?;
        let details = self.tree(REMOTE_EVENT_DETAILS)?;
        let _writing = self.writing();
        (
            &self.events,
            &self.events_by_practitioner,
            &self.meta,
            &remote,
            &details,
        )
            .transaction(|(events, by_practitioner, meta, remote, details)| {
                let Some(bytes) = remote.get(subscription_id.as_bytes())? else {
                    return Ok(None);
                };
                let mut subscription: RemoteSubscription = match decode(Kind::TeamEvent, &bytes) {
                    Ok(s) => s,
                    Err(e) => return abort(e),
                };
                if received.remote_cursor <= subscription.cursor {
                    return Ok(None);
                }
                subscription.cursor = received.remote_cursor;
                remote.insert(
                    subscription_id.as_bytes(),
                    tx_encode(Kind::TeamEvent, &subscription)?,
                )?;
                let trees = EventTrees {
                    events,
                    by_practitioner,
                    meta,
                };
                append_event(
                    &trees,
                    TeamEvent {
                        seq: 0,
                        person_id: subscription_id.to_owned(),
                        kind: received.kind,
                        actor_id: String::new(),
                        gatekeeper: None,
                        reason: received.reason.clone(),
                        at_unix_seconds: received.at_unix_seconds,
                        recipients: vec![subscription.practitioner_id.clone()],
                    },
                )?;
                let seq = read_count(meta.get(LAST_EVENT_SEQ)?.as_deref());
                let detail = RemoteDetail {
                    peer: subscription.peer.clone(),
                    subscription_id: subscription_id.to_owned(),
                    involvement: received.involvement.clone(),
                };
                details.insert(&seq.to_be_bytes(), tx_encode(Kind::TeamEvent, &detail)?)?;
                Ok(Some(seq))
            })
            .map_err(super::tx_error)
    }

    /// Moves a subscription's cursor on past events that were not for it.
    pub fn advance_remote_cursor(&self, id: &str, cursor: u64) -> Result<(), StoreError> {
        if let Some(mut subscription) = self.remote_subscription(id)?
            && cursor > subscription.cursor
        {
            subscription.cursor = cursor;
            self.put_remote_subscription(&subscription)?;
        }
        Ok(())
    }
}

/// Now, for expiry checks.
pub fn now() -> i64 {
    now_unix_seconds()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subscription(expires_at_unix_seconds: i64, cancelled: bool) -> Subscription {
        Subscription {
            id: "SUB-1".into(),
            peer: "spiffe://england.patchwork/node/surrey".into(),
            person_id: "P1".into(),
            requester_practitioner_id: "PR-S1".into(),
            requester_name: "Sam Okafor".into(),
            lawful_basis: LawfulBasis::ChildSafeguarding,
            reason: "child protection plan".into(),
            from_seq: 0,
            expires_at_unix_seconds,
            cancelled,
        }
    }

    #[test]
    fn expired_and_cancelled_subscriptions_are_not_live() {
        assert!(subscription(200, false).is_live(100));
        assert!(!subscription(100, false).is_live(100), "expired");
        assert!(!subscription(200, true).is_live(100), "cancelled");
    }

    #[test]
    fn a_notification_is_written_once_and_moves_the_cursor() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), &super::super::StoreOptions::default()).expect("open");
        store
            .put_remote_subscription(&RemoteSubscription {
                id: "L-1".into(),
                practitioner_id: "PR-S1".into(),
                peer: "spiffe://england.patchwork/node/brighton".into(),
                remote_id: "R-1".into(),
                expires_at_unix_seconds: now() + 3600,
                cursor: 0,
            })
            .expect("subscription");
        let received = Received {
            remote_cursor: 7,
            kind: TeamEventKind::InvolvementStarted,
            at_unix_seconds: now(),
            reason: "Early help".into(),
            involvement: vec![1, 2, 3],
        };
        let seq = store
            .receive_notification("L-1", &received)
            .expect("receive")
            .expect("written");
        assert_eq!(
            store.receive_notification("L-1", &received).expect("again"),
            None,
            "a repeated notification is not written twice"
        );
        assert_eq!(
            store
                .remote_subscription("L-1")
                .expect("read")
                .expect("there")
                .cursor,
            7
        );
        let events = store.events_for("PR-S1", 0, u64::MAX, 10).expect("events");
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].person_id, "L-1");
        let detail = store
            .remote_event_detail(seq)
            .expect("detail")
            .expect("there");
        assert_eq!(detail.involvement, vec![1, 2, 3]);
        assert_eq!(
            store.receive_notification("L-9", &received).expect("gone"),
            None
        );
    }
}
