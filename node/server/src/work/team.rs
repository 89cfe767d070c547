//! Delivering team events from the store's outbox (`store/events`): the
//! `Directory.Watch` stream and webhooks.
//!
//! Both read only events up to the last flushed sequence number
//! ([`Store::durable_events`]), so a cursor a client saw is never reused
//! after a crash. A watcher reads its practitioner's events after its
//! cursor, then waits for the next flush. A webhook has its own cursor in
//! the store's `meta`: it POSTs each event (in sequence order) until the
//! receiver answers 2xx, backing off exponentially (`backon`), then moves
//! its cursor on. Delivery is at least once: a receiver deduplicates by
//! `X-Patchwork-Event-Id`. The client is `reqwest` (HTTP/1.1, rustls with
//! ring): https by default against the public web PKI or the webhook's own
//! `ca_file`, plain http only to loopback (`allow_http`).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use patchwork_proto::v1;
use ring::hmac;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tonic::Status;

use crate::base::config::{WebhookEntry, WebhookPractitioners};
use crate::base::error::{NodeError, read_private_key};
use patchwork_store::{Store, StoreError, TeamEvent, TeamEventKind};

/// Events read from the store at once.
const BATCH: usize = 256;
/// How long a closing watch waits to tell a slow client why it ends.
const CLOSING_NOTICE: Duration = Duration::from_millis(500);
/// The first retry waits this long; each further one twice as long.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Connecting, TLS handshake included.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// One delivery attempt, connect to the end of the answer's head.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

fn kind(kind: TeamEventKind) -> v1::team_event::Kind {
    match kind {
        TeamEventKind::InvolvementStarted => v1::team_event::Kind::InvolvementStarted,
        TeamEventKind::InvolvementEnded => v1::team_event::Kind::InvolvementEnded,
        TeamEventKind::AttentionRaised => v1::team_event::Kind::AttentionRaised,
        TeamEventKind::AttentionCleared => v1::team_event::Kind::AttentionCleared,
    }
}

/// The wire form of an event, for the Watch stream and webhooks alike: the
/// actor's contact as it stands now, or for a restricted involvement (and
/// an attention flag raised by its practitioner) only its gatekeeper. The
/// person reference is this node's person id, which only this node's
/// practitioners can open.
pub(crate) fn to_proto(store: &Store, event: &TeamEvent) -> Result<v1::TeamEvent, StoreError> {
    if event.actor_id.is_empty()
        && let Some(detail) = store.remote_event_detail(event.seq)?
    {
        // A peer's notification for a cross-border subscription.
        return Ok(crate::work::subscriptions::remote_to_proto(
            event,
            kind(event.kind),
            detail,
        ));
    }
    // Attention events written before they carried a stand-in are checked
    // as they go: a restricted practitioner shows only as the gatekeeper.
    let stand_in = match (&event.gatekeeper, event.kind) {
        (None, TeamEventKind::AttentionRaised | TeamEventKind::AttentionCleared) => {
            store.stand_in(&event.person_id, &event.actor_id)?
        }
        (gatekeeper, _) => gatekeeper.clone(),
    };
    let by = match &stand_in {
        Some(gatekeeper) => v1::PractitionerContact {
            name: gatekeeper.name.clone(),
            phone: gatekeeper.phone.clone().unwrap_or_default(),
            email: gatekeeper.email.clone().unwrap_or_default(),
            ..Default::default()
        },
        None => match store.practitioner(&event.actor_id)? {
            Some(practitioner) => {
                let organisation = store.organisation(&practitioner.organisation_id)?;
                crate::base::convert::practitioner_contact(practitioner, organisation.as_ref())
            }
            None => v1::PractitionerContact::default(),
        },
    };
    Ok(v1::TeamEvent {
        cursor: Cursor {
            epoch: store.event_epoch()?,
            seq: event.seq,
        }
        .to_string(),
        person_reference: event.person_id.clone(),
        kind: kind(event.kind) as i32,
        by: Some(by),
        reason: event.reason.clone(),
        at_unix_seconds: event.at_unix_seconds,
        from_node: String::new(),
    })
}

/// A place in the outbox: the epoch of the store's history (changed by a
/// restore, see `store/events`) and the sequence number in it. On the wire
/// `epoch:seq`, or plain `seq` in epoch 0, so a store never restored keeps
/// the decimal cursors it always handed out and old ones stay valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cursor {
    pub epoch: u64,
    pub seq: u64,
}

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.epoch == 0 {
            write!(f, "{}", self.seq)
        } else {
            write!(f, "{}:{}", self.epoch, self.seq)
        }
    }
}

/// Parses a Watch cursor: empty means "from now on"; a plain number is in
/// epoch 0 (cursors from before epochs existed).
pub(crate) fn parse_cursor(text: &str, field: &str) -> Result<Option<Cursor>, Status> {
    if text.is_empty() {
        return Ok(None);
    }
    let parsed = match text.split_once(':') {
        None => text.parse::<u64>().ok().map(|seq| Cursor { epoch: 0, seq }),
        Some((epoch, seq)) => epoch
            .parse::<u64>()
            .ok()
            .zip(seq.parse::<u64>().ok())
            .map(|(epoch, seq)| Cursor { epoch, seq }),
    };
    parsed.map(Some).ok_or_else(|| {
        Status::invalid_argument(format!(
            "{field}: must be a cursor from a previous event (decimal digits, or epoch:sequence)"
        ))
    })
}

/// Where a watch may resume, given the store's `epoch` and its last
/// durable event: a cursor from another epoch (before a restore) or from
/// beyond the last event is refused, each saying what to do.
pub(crate) fn check_cursor(
    cursor: Cursor,
    epoch: u64,
    durable: u64,
    field: &str,
) -> Result<u64, Status> {
    if cursor.epoch != epoch {
        return Err(Status::failed_precondition(format!(
            "{field}: {cursor} is from an earlier history of this node's events (its store was \
             restored from a backup since, and events after the backup are numbered again); \
             resynchronise: re-read the team (ListInvolvements), then watch from now on with \
             an empty {field}"
        )));
    }
    if cursor.seq > durable {
        return Err(Status::out_of_range(format!(
            "{field}: {cursor} is ahead of this node's last event ({}); use a cursor from an \
             event this node sent, or an empty {field} for new events",
            Cursor {
                epoch,
                seq: durable
            }
        )));
    }
    Ok(cursor.seq)
}

/// Streams `practitioner_id`'s events after `after` into `sender` until
/// the receiver goes away or the node shuts down.
pub(crate) fn spawn_watch(
    store: Store,
    practitioner_id: String,
    after: u64,
    sender: mpsc::Sender<Result<v1::TeamEvent, Status>>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut durable = store.durable_events();
        let mut cursor = after;
        loop {
            let progress = *durable.borrow_and_update();
            if progress.closing {
                // UNAVAILABLE, not OK: a client's retry policy reconnects
                // (to this node restarted) and resumes from its cursor. A
                // client not reading gets the end of the stream without it,
                // so it cannot hold the drain.
                let _ = tokio::time::timeout(
                    CLOSING_NOTICE,
                    sender.send(Err(Status::unavailable(
                        "the node is shutting down; reconnect and resume from the last cursor",
                    ))),
                )
                .await;
                return;
            }
            let up_to = progress.durable;
            let reader = store.clone();
            let who = practitioner_id.clone();
            let batch = tokio::task::spawn_blocking(move || {
                reader
                    .events_for(&who, cursor, up_to, BATCH)?
                    .iter()
                    .map(|event| Ok((event.seq, to_proto(&reader, event)?)))
                    .collect::<Result<Vec<_>, StoreError>>()
            })
            .await;
            let batch = match batch {
                Ok(Ok(batch)) => batch,
                Ok(Err(error)) => {
                    let _ = sender
                        .send(Err(crate::base::convert::store_status(error, "")))
                        .await;
                    return;
                }
                Err(_) => return,
            };
            let full = batch.len() == BATCH;
            for (seq, event) in batch {
                if sender.send(Ok(event)).await.is_err() {
                    return;
                }
                cursor = seq;
            }
            if full {
                continue;
            }
            if up_to > cursor {
                cursor = up_to; // nothing more for this practitioner up to here
            }
            tokio::select! {
                changed = durable.changed() => if changed.is_err() { return },
                () = sender.closed() => return,
            }
        }
    })
}

/// A webhook ready to run: its target, HTTP client and key.
pub struct Webhook {
    /// As configured: the key of its cursor in the store, and what logs show.
    url: String,
    target: url::Url,
    client: reqwest::Client,
    key: hmac::Key,
    practitioners: WebhookPractitioners,
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhook").field("url", &self.url).finish()
    }
}

/// `sha256=<hex HMAC-SHA256 of body>`, the `X-Patchwork-Signature` value.
pub(crate) fn signature(key: &hmac::Key, body: &[u8]) -> String {
    format!("sha256={}", hex::encode(hmac::sign(key, body)))
}

fn webhook_error(key: String, message: impl Into<String>) -> NodeError {
    NodeError::Webhook {
        key,
        message: message.into(),
    }
}

/// The roots a webhook trusts: its `ca_file`'s certificates alone, or the
/// public web PKI (Mozilla's roots, compiled in: a container has no CA store).
fn webhook_roots(key: String, ca_file: Option<&Path>) -> Result<rustls::RootCertStore, NodeError> {
    let Some(path) = ca_file else {
        return Ok(rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        });
    };
    let pem = std::fs::read(path)
        .map_err(|e| webhook_error(key.clone(), format!("cannot read {}: {e}", path.display())))?;
    let certs = patchwork_certs::certs_from_pem(&pem)
        .map_err(|e| webhook_error(key.clone(), format!("{}: {e}", path.display())))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs {
        roots
            .add(cert)
            .map_err(|e| webhook_error(key.clone(), format!("{}: {e}", path.display())))?;
    }
    if roots.is_empty() {
        return Err(webhook_error(
            key,
            format!("{} holds no CA certificate", path.display()),
        ));
    }
    Ok(roots)
}

/// One webhook's HTTP client: HTTP/1.1, rustls with the ring provider and
/// the webhook's roots, no proxy from the environment, no redirects (a
/// redirect would carry the signed events elsewhere: it counts as a
/// refusal and is retried), a bound on connecting and on each attempt.
fn webhook_client(index: usize, entry: &WebhookEntry) -> Result<reqwest::Client, NodeError> {
    let roots = webhook_roots(
        format!("webhooks[{index}].ca_file"),
        entry.ca_file.as_deref(),
    )?;
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| webhook_error(format!("webhooks[{index}].url"), e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .http1_only()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(ATTEMPT_TIMEOUT)
        .user_agent(concat!("patchwork/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| webhook_error(format!("webhooks[{index}].url"), error_chain(&e)))
}

/// Reads every webhook's secret (hex, at least 32 bytes, mode 0600) and CA
/// file, and builds its client. The config checked each URL already; it is
/// checked again here so a `Webhook` never exists with an unchecked one.
pub(crate) fn load_webhooks(entries: &[WebhookEntry]) -> Result<Vec<Webhook>, NodeError> {
    entries
        .iter()
        .enumerate()
        .map(|(index, entry)| {
            let bytes = read_private_key("webhooks.secret_file", &entry.secret_file)?;
            let secret = std::str::from_utf8(&bytes)
                .ok()
                .and_then(|text| hex::decode(text.trim()).ok())
                .filter(|secret| secret.len() >= 32)
                .ok_or_else(|| NodeError::KeyMaterial {
                    key: "webhooks.secret_file",
                    message: format!(
                        "{} must hold at least 64 hex digits (32 random bytes)",
                        entry.secret_file.display()
                    ),
                })?;
            let target = crate::base::config::parse_webhook_url(&entry.url, entry.allow_http)
                .map_err(|message| webhook_error(format!("webhooks[{index}].url"), message))?;
            Ok(Webhook {
                url: entry.url.clone(),
                target,
                client: webhook_client(index, entry)?,
                key: hmac::Key::new(hmac::HMAC_SHA256, &secret),
                practitioners: entry.practitioners.clone(),
            })
        })
        .collect()
}

/// The JSON body POSTed for one event.
fn body(store: &Store, event: &TeamEvent, recipients: &[&String]) -> Result<Vec<u8>, StoreError> {
    let wire = to_proto(store, event)?;
    let by = wire.by.unwrap_or_default();
    let json = serde_json::json!({
        "id": wire.cursor,
        "cursor": wire.cursor,
        "kind": <&'static str>::from(event.kind),
        "person_reference": wire.person_reference,
        "recipients": recipients,
        "by": {
            "name": by.name,
            "role": by.role,
            "team": by.team,
            "organisation_name": by.organisation_name,
            "phone": by.phone,
            "email": by.email,
        },
        "reason": wire.reason,
        "at_unix_seconds": wire.at_unix_seconds,
    });
    Ok(json.to_string().into_bytes())
}

/// Starts one delivery task per webhook, each from its stored cursor. A
/// webhook seen for the first time (by url) starts after the last event
/// stored now; its cursor is saved before this returns, so nothing written
/// after start-up is missed.
pub(crate) fn spawn_webhooks(
    store: &Store,
    webhooks: Vec<Webhook>,
) -> Result<Vec<JoinHandle<()>>, StoreError> {
    let mut tasks = Vec::with_capacity(webhooks.len());
    for hook in webhooks {
        let cursor = match store.webhook_cursor(&hook.url)? {
            Some(cursor) => cursor,
            None => {
                let now = store.last_event_seq()?;
                store.set_webhook_cursor(&hook.url, now)?;
                now
            }
        };
        tasks.push(tokio::spawn(deliver(store.clone(), hook, cursor)));
    }
    Ok(tasks)
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, String> {
    match tokio::task::spawn_blocking(work).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err("store worker stopped".into()),
    }
}

/// One webhook's delivery loop; runs until the node stops.
async fn deliver(store: Store, hook: Webhook, mut cursor: u64) {
    let mut durable = store.durable_events();
    loop {
        let up_to = durable.borrow_and_update().durable;
        let reader = store.clone();
        let batch = blocking(move || reader.events_after(cursor, up_to, BATCH)).await;
        let batch = match batch {
            Ok(batch) => batch,
            Err(error) => {
                tracing::error!(url = %hook.url, error = %error, "webhook cannot read the outbox");
                tokio::time::sleep(MAX_BACKOFF).await;
                continue;
            }
        };
        let full = batch.len() == BATCH;
        for event in batch {
            let recipients: Vec<&String> = event
                .recipients
                .iter()
                .filter(|r| hook.practitioners.includes(r))
                .collect();
            if !recipients.is_empty() {
                let reader = store.clone();
                let owned: Vec<String> = recipients.into_iter().cloned().collect();
                let event_copy = event.clone();
                let payload = blocking(move || {
                    let refs: Vec<&String> = owned.iter().collect();
                    body(&reader, &event_copy, &refs)
                })
                .await;
                match payload {
                    Ok(payload) => post_until_accepted(&hook, event.seq, &payload).await,
                    Err(error) => {
                        tracing::error!(url = %hook.url, event = event.seq, error = %error, "webhook event unreadable; skipped");
                    }
                }
            }
            cursor = event.seq;
            let (writer, name) = (store.clone(), hook.url.clone());
            if let Err(error) = blocking(move || writer.set_webhook_cursor(&name, cursor)).await {
                tracing::warn!(url = %hook.url, error = %error, "webhook cursor not saved");
            }
        }
        if full {
            continue;
        }
        if durable.changed().await.is_err() {
            return;
        }
    }
}

/// Why one delivery attempt failed.
#[derive(Debug, thiserror::Error)]
enum AttemptError {
    #[error("answered {0}")]
    Refused(reqwest::StatusCode),
    #[error("{0}")]
    Unreachable(String),
}

/// The error and its causes on one line (reqwest's own message alone says
/// only "error sending request").
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// POSTs until the receiver answers 2xx, backing off exponentially from
/// 0.1 s up to a minute between attempts, with jitter; never gives up, so
/// events stay in order behind the one being delivered.
async fn post_until_accepted(hook: &Webhook, seq: u64, payload: &[u8]) {
    let signature = signature(&hook.key, payload);
    let backoff = ExponentialBuilder::default()
        .with_min_delay(FIRST_BACKOFF)
        .with_max_delay(MAX_BACKOFF)
        .with_jitter()
        .without_max_times();
    let mut failed = 0u32;
    let delivered = (|| post(hook, seq, &signature, payload))
        .retry(backoff)
        .notify(|error: &AttemptError, wait: Duration| {
            failed = failed.saturating_add(1);
            let wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
            match error {
                AttemptError::Refused(status) => {
                    tracing::warn!(url = %hook.url, event = seq, attempt = failed, status = status.as_u16(), wait_ms, "webhook refused; retrying")
                }
                AttemptError::Unreachable(error) => {
                    tracing::warn!(url = %hook.url, event = seq, attempt = failed, error = %error, wait_ms, "webhook unreachable; retrying")
                }
            }
        })
        .await;
    match delivered {
        Ok(()) => {
            tracing::debug!(url = %hook.url, event = seq, attempts = failed + 1, "webhook delivered")
        }
        // Unreachable with unbounded retries; logged should that change.
        Err(error) => {
            tracing::error!(url = %hook.url, event = seq, error = %error, "webhook delivery given up")
        }
    }
}

/// One signed POST; accepted on any 2xx.
async fn post(
    hook: &Webhook,
    seq: u64,
    signature: &str,
    payload: &[u8],
) -> Result<(), AttemptError> {
    let response = hook
        .client
        .post(hook.target.clone())
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header("X-Patchwork-Event-Id", seq.to_string())
        .header("X-Patchwork-Signature", signature)
        .body(payload.to_vec())
        .send()
        .await
        .map_err(|e| AttemptError::Unreachable(error_chain(&e)))?;
    let status = response.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(AttemptError::Refused(status))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_hex_hmac_sha256() {
        // RFC 4231 test case 2.
        let key = hmac::Key::new(hmac::HMAC_SHA256, b"Jefe");
        assert_eq!(
            signature(&key, b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(hex::decode("0aFf").ok(), Some(vec![0x0a, 0xff]));
        assert_eq!(hex::decode("0g").ok(), None);
    }

    #[test]
    fn cursors_are_decimal_or_empty() {
        assert_eq!(parse_cursor("", "after_cursor").expect("empty"), None);
        assert_eq!(
            parse_cursor("42", "after_cursor").expect("n"),
            Some(Cursor { epoch: 0, seq: 42 })
        );
        assert_eq!(
            parse_cursor("7:42", "after_cursor").expect("epoch:n"),
            Some(Cursor { epoch: 7, seq: 42 })
        );
        assert_eq!(Cursor { epoch: 7, seq: 42 }.to_string(), "7:42");
        assert_eq!(Cursor { epoch: 0, seq: 42 }.to_string(), "42");
        for bad in ["7:", ":1", "1:2:3", "-1"] {
            assert!(parse_cursor(bad, "after_cursor").is_err(), "{bad}");
        }
        let error = parse_cursor("x1", "after_cursor").expect_err("bad");
        assert!(error.message().starts_with("after_cursor:"));
    }

    /// An attention event stored before events carried the stand-in goes
    /// out as the gatekeeper too (moved from the store's events tests: the
    /// wire form is this crate's).
    #[test]
    fn an_old_attention_event_of_a_restricted_practitioner_names_only_the_gatekeeper() {
        use patchwork_store::WriteMode;
        use patchwork_store::fixtures::{self, involvement};
        use patchwork_store::model::{Contact, Sensitivity};

        let (_dir, store) = fixtures::empty_store();
        fixtures::put_council(&store, &["A", "B"]);
        store
            .put_persons(&[fixtures::person("P1", "Smith")], WriteMode::Create)
            .expect("person");
        let clinic = Contact {
            name: "Clinic duty line".into(),
            phone: Some("0800 555 0199".into()),
            email: None,
        };
        let mut nurse = involvement("I2", "P1", "B");
        nurse.sensitivity = Sensitivity::Restricted;
        nurse.gatekeeper = Some(clinic);
        store
            .put_involvements(&[involvement("I1", "P1", "A"), nurse], WriteMode::Create)
            .expect("team");
        store
            .set_attention("P1", "B", true, "missed three appointments")
            .expect("raise");
        let events = store.events_for("A", 0, u64::MAX, 10).expect("events");
        let raised = events.last().expect("the flag");
        assert_eq!(raised.kind, TeamEventKind::AttentionRaised);

        let mut old = raised.clone();
        old.gatekeeper = None;
        let wire = to_proto(&store, &old).expect("wire");
        let by = wire.by.expect("by");
        assert_eq!(by.name, "Clinic duty line");
        assert_eq!((by.role.as_str(), by.organisation_name.as_str()), ("", ""));
    }
}
