//! The team around the person: joins, leaves and attention flags reach the
//! other practitioners involved, through `Directory.Watch` (in order, and
//! resumed from a cursor across a restart) and through signed webhooks that
//! are retried until the receiver accepts them.

use patchwork_server::base::config::WebhookEntry;
use patchwork_server::base::config::WebhookPractitioners;
use std::time::Duration;

use patchwork_tests::{
    ClientCert, ClientGrant, NodeOptions, Records, TRUST_DOMAIN, TestCa, TestNode, date,
    involvement, organisation, person, practitioner, v1,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tonic::Code;
use v1::team_event::Kind;

const WAIT: Duration = Duration::from_secs(10);

/// A person P1 and practitioners A, B and C, none involved yet.
async fn seed(node: &TestNode, portal: &ClientCert) {
    let records = Records {
        organisations: vec![organisation("O1", "Surrey CC", v1::Sector::SocialCare)],
        practitioners: ["A", "B", "C"]
            .map(|id| practitioner(id, &format!("Practitioner {id}"), "Social worker", "O1"))
            .to_vec(),
        persons: vec![person("P1", "Amelia", "Smith", date(2015, 3, 14), "")],
        ..Records::default()
    };
    patchwork_tests::seed(node, portal, records).await;
}

/// Records `id` for practitioner `who` with P1.
async fn join(node: &TestNode, portal: &ClientCert, id: &str, who: &str) {
    let mut record = involvement("P1", who, "Child protection", v1::Sensitivity::Standard);
    record.id = id.into();
    node.directory(portal)
        .await
        .record_involvement(v1::RecordInvolvementRequest {
            involvement: Some(record),
        })
        .await
        .expect("record involvement");
}

async fn leave(node: &TestNode, portal: &ClientCert, id: &str) {
    node.directory(portal)
        .await
        .end_involvement(v1::EndInvolvementRequest {
            id: id.into(),
            end_date: date(2024, 6, 1),
            reason: "moved out of area".into(),
        })
        .await
        .expect("end involvement");
}

async fn attention(node: &TestNode, portal: &ClientCert, who: &str, raise: bool) {
    let mut directory = node.directory(portal).await;
    if raise {
        directory
            .raise_attention(v1::RaiseAttentionRequest {
                person_id: "P1".into(),
                practitioner_id: who.into(),
                reason: "missed three appointments".into(),
            })
            .await
            .expect("raise attention");
    } else {
        directory
            .clear_attention(v1::ClearAttentionRequest {
                person_id: "P1".into(),
                practitioner_id: who.into(),
                reason: String::new(),
            })
            .await
            .expect("clear attention");
    }
}

async fn watch(
    node: &TestNode,
    client: &ClientCert,
    who: &str,
    after: &str,
) -> tonic::Streaming<v1::TeamEvent> {
    node.directory(client)
        .await
        .watch(v1::WatchRequest {
            practitioner_id: who.into(),
            after_cursor: after.into(),
        })
        .await
        .expect("watch")
        .into_inner()
}

/// The next `n` events, each within the deadline, as (kind, by, cursor).
async fn next(stream: &mut tonic::Streaming<v1::TeamEvent>, n: usize) -> Vec<(Kind, String, u64)> {
    let mut events = Vec::new();
    for _ in 0..n {
        let event = tokio::time::timeout(WAIT, stream.next())
            .await
            .expect("an event within the deadline")
            .expect("stream open")
            .expect("event");
        assert_eq!(event.person_reference, "P1");
        events.push((
            event.kind(),
            event.by.unwrap_or_default().name,
            event.cursor.parse().expect("decimal cursor"),
        ));
    }
    events
}

fn by(id: &str) -> String {
    format!("Practitioner {id}")
}

#[tokio::test]
async fn a_watcher_hears_joins_leaves_and_attention_in_order_across_a_restart() {
    let ca = TestCa::new(TRUST_DOMAIN);
    let portal = ca.client("portal");
    let watcher = ca.client("watcher");
    let stranger = ca.client("stranger");
    let mut node = TestNode::start(
        &ca,
        "surrey",
        &[
            ClientGrant {
                client: &portal,
                roles: &["records"],
            },
            ClientGrant {
                client: &watcher,
                roles: &["watch"],
            },
            ClientGrant {
                client: &stranger,
                roles: &["admin"],
            },
        ],
    )
    .await;
    seed(&node, &portal).await;
    join(&node, &portal, "I-A", "A").await;

    // A follows from now on; B joins and C (not involved) raises attention.
    let mut stream = watch(&node, &watcher, "A", "").await;
    join(&node, &portal, "I-B", "B").await;
    attention(&node, &portal, "C", true).await;
    let before = next(&mut stream, 2).await;
    assert_eq!(
        before
            .iter()
            .map(|(kind, who, _)| (*kind, who.clone()))
            .collect::<Vec<_>>(),
        vec![
            (Kind::InvolvementStarted, by("B")),
            (Kind::AttentionRaised, by("C")),
        ]
    );
    let last_seen = before[1].2;

    // The node restarts; while nobody watches, B leaves and C clears.
    node.restart().await;
    leave(&node, &portal, "I-B").await;
    attention(&node, &portal, "C", false).await;

    // Resumed from the last cursor: the missed events, then live ones.
    let mut resumed = watch(&node, &watcher, "A", &last_seen.to_string()).await;
    join(&node, &portal, "I-C", "C").await;
    let after = next(&mut resumed, 3).await;
    assert_eq!(
        after
            .iter()
            .map(|(kind, who, _)| (*kind, who.clone()))
            .collect::<Vec<_>>(),
        vec![
            (Kind::InvolvementEnded, by("B")),
            (Kind::AttentionCleared, by("C")),
            (Kind::InvolvementStarted, by("C")),
        ]
    );

    // From the beginning: the same five events, same cursors, same order.
    let mut replay = watch(&node, &watcher, "A", "0").await;
    let all = next(&mut replay, 5).await;
    let expected: Vec<_> = before.iter().chain(after.iter()).cloned().collect();
    assert_eq!(all, expected);
    assert!(
        all.windows(2).all(|pair| pair[0].2 < pair[1].2),
        "cursors increase: {all:?}"
    );

    // B's own view: A was there first, so B hears of C, not of itself.
    let mut b_stream = watch(&node, &watcher, "B", "0").await;
    let b_events = next(&mut b_stream, 1).await;
    assert_eq!(b_events[0].0, Kind::AttentionRaised);

    // Refusals name the field; a client without the watch role is refused.
    let mut directory = node.directory(&watcher).await;
    let bad_cursor = directory
        .watch(v1::WatchRequest {
            practitioner_id: "A".into(),
            after_cursor: "yesterday".into(),
        })
        .await
        .expect_err("bad cursor");
    assert_eq!(bad_cursor.code(), Code::InvalidArgument);
    assert!(bad_cursor.message().starts_with("after_cursor:"));
    let unknown = directory
        .watch(v1::WatchRequest {
            practitioner_id: "nobody".into(),
            after_cursor: String::new(),
        })
        .await
        .expect_err("unknown practitioner");
    assert_eq!(unknown.code(), Code::NotFound);
    let denied = node
        .directory(&stranger)
        .await
        .watch(v1::WatchRequest {
            practitioner_id: "A".into(),
            after_cursor: String::new(),
        })
        .await
        .expect_err("no role");
    assert_eq!(denied.code(), Code::PermissionDenied);
    let short = node
        .directory(&portal)
        .await
        .raise_attention(v1::RaiseAttentionRequest {
            person_id: "P1".into(),
            practitioner_id: "A".into(),
            reason: "worried".into(),
        })
        .await
        .expect_err("short reason");
    assert_eq!(short.code(), Code::InvalidArgument);
    assert!(short.message().starts_with("reason:"));

    // An open stream does not hold shutdown.
    node.stop().await;
}

/// One request the webhook receiver got.
struct Delivery {
    event_id: String,
    signature: String,
    body: String,
    status: u16,
}

/// Answers 500 to the first `failures` requests, then 200; reports each.
async fn receiver(listener: TcpListener, failures: usize, report: mpsc::Sender<Delivery>) {
    let mut seen = 0;
    loop {
        let Ok((mut socket, _)) = listener.accept().await else {
            return;
        };
        let mut data = Vec::new();
        let mut chunk = [0u8; 4096];
        let (head, body) = loop {
            let read = socket.read(&mut chunk).await.expect("read request");
            assert!(read > 0, "request cut short");
            data.extend_from_slice(&chunk[..read]);
            let text = String::from_utf8_lossy(&data).into_owned();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length: usize = header(head, "content-length")
                    .parse()
                    .expect("content length");
                if body.len() >= length {
                    break (head.to_owned(), body[..length].to_owned());
                }
            }
        };
        seen += 1;
        let status = if seen <= failures { 500 } else { 200 };
        let reply =
            format!("HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        socket.write_all(reply.as_bytes()).await.expect("reply");
        let _ = socket.shutdown().await;
        assert!(
            head.starts_with("POST /hooks/patchwork HTTP/1.1\r\n"),
            "{head}"
        );
        let _ = report
            .send(Delivery {
                event_id: header(&head, "x-patchwork-event-id"),
                signature: header(&head, "x-patchwork-signature"),
                body,
                status,
            })
            .await;
    }
}

fn header(head: &str, name: &str) -> String {
    head.lines()
        .find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim()
                .eq_ignore_ascii_case(name)
                .then(|| value.trim().to_owned())
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn a_webhook_receiver_gets_signed_retried_deliveries_in_order() {
    let secret = [7u8; 32];
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let (report, mut reports) = mpsc::channel(32);
    tokio::spawn(receiver(listener, 2, report));

    let ca = TestCa::new(TRUST_DOMAIN);
    let portal = ca.client("portal");
    let node = TestNode::start_with(
        &ca,
        "surrey",
        &[ClientGrant {
            client: &portal,
            roles: &["records"],
        }],
        NodeOptions {
            secret_files: vec![("hook.key".into(), hex::encode(secret))],
            ..NodeOptions::default()
        }
        .with(move |config| {
            config.webhooks.push(WebhookEntry {
                url: format!("http://127.0.0.1:{port}/hooks/patchwork"),
                secret_file: "hook.key".into(),
                practitioners: WebhookPractitioners::Only(vec!["A".into()]),
                ca_file: None,
                allow_http: true,
            })
        }),
    )
    .await;
    seed(&node, &portal).await;
    join(&node, &portal, "I-A", "A").await; // nobody else to tell
    join(&node, &portal, "I-B", "B").await; // 1: to A
    attention(&node, &portal, "C", true).await; // 2: to A and B
    attention(&node, &portal, "A", true).await; // 3: to B only, not this webhook's
    leave(&node, &portal, "I-B").await; // 4: to A

    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &secret);
    let mut deliveries = Vec::new();
    while deliveries
        .iter()
        .filter(|d: &&Delivery| d.status == 200)
        .count()
        < 3
    {
        let delivery = tokio::time::timeout(WAIT, reports.recv())
            .await
            .expect("a delivery within the deadline")
            .expect("receiver running");
        let signature = delivery
            .signature
            .strip_prefix("sha256=")
            .expect("sha256= signature");
        let tag = hex::decode(signature).expect("hex");
        ring::hmac::verify(&key, delivery.body.as_bytes(), &tag).expect("signature verifies");
        assert!(
            delivery.body.contains("\"person_reference\":\"P1\""),
            "{}",
            delivery.body
        );
        assert!(
            delivery.body.contains("\"recipients\":[\"A\"]"),
            "{}",
            delivery.body
        );
        deliveries.push(delivery);
    }
    let attempts: Vec<(&str, u16)> = deliveries
        .iter()
        .map(|d| (d.event_id.as_str(), d.status))
        .collect();
    assert_eq!(
        attempts,
        vec![("1", 500), ("1", 500), ("1", 200), ("2", 200), ("4", 200)],
        "retried until accepted, in order, only A's events"
    );
    let kinds: Vec<bool> = [
        "\"kind\":\"involvement_started\"",
        "\"kind\":\"attention_raised\"",
        "\"kind\":\"involvement_ended\"",
    ]
    .iter()
    .zip(deliveries[2..].iter())
    .map(|(kind, delivery)| delivery.body.contains(kind))
    .collect();
    assert_eq!(kinds, vec![true, true, true]);
}

/// After a restore, the outbox numbers again the events that followed the
/// backup: a watcher resuming from a cursor it saw before is told to
/// resynchronise instead of silently missing events; a cursor from beyond
/// the last event is refused; cursors handed out after the restore resume;
/// and a stream open when the node stops ends UNAVAILABLE, so a client's
/// retry policy reconnects.
#[tokio::test]
async fn a_watch_resumed_after_a_restore_is_told_to_resynchronise() {
    let ca = TestCa::new(TRUST_DOMAIN);
    let portal = ca.client("portal");
    let watcher = ca.client("watcher");
    let mut node = TestNode::start(
        &ca,
        "surrey",
        &[
            ClientGrant {
                client: &portal,
                roles: &["records"],
            },
            ClientGrant {
                client: &watcher,
                roles: &["watch"],
            },
        ],
    )
    .await;
    seed(&node, &portal).await;
    join(&node, &portal, "I-A", "A").await;
    let mut stream = watch(&node, &watcher, "A", "0").await;
    join(&node, &portal, "I-B", "B").await;
    let before_backup = next(&mut stream, 1).await;

    // From the future: refused, naming the field.
    let ahead = node
        .directory(&watcher)
        .await
        .watch(v1::WatchRequest {
            practitioner_id: "A".into(),
            after_cursor: "999".into(),
        })
        .await
        .expect_err("a cursor from the future");
    assert_eq!(ahead.code(), Code::OutOfRange, "{ahead:?}");
    assert!(
        ahead.message().starts_with("after_cursor: 999 is ahead"),
        "{}",
        ahead.message()
    );

    let backup = node.dir.path().join("backup.pwb");
    patchwork_cli::cli::backup_to_file(&node.config(), &backup)
        .await
        .expect("backup");
    // After the backup: C joins; the watcher sees it and keeps its cursor.
    join(&node, &portal, "I-C", "C").await;
    let after_backup = next(&mut stream, 1).await;
    let last_seen = after_backup[0].2;
    assert!(last_seen > before_backup[0].2);

    // The node stops with the stream open: it ends UNAVAILABLE, not OK.
    node.stop().await;
    let ended = tokio::time::timeout(WAIT, stream.next())
        .await
        .expect("the stream ends when the node stops");
    match ended {
        Some(Err(status)) => assert_eq!(status.code(), Code::Unavailable, "{status:?}"),
        other => panic!("the stream ended without UNAVAILABLE: {other:?}"),
    }

    patchwork_cli::cli::restore_from_file(&node.config(), &backup, true, false).expect("restore");
    node.start_again().await;
    // The restored store hands out C's old number again, for another event.
    attention(&node, &portal, "B", true).await;

    let stale = node
        .directory(&watcher)
        .await
        .watch(v1::WatchRequest {
            practitioner_id: "A".into(),
            after_cursor: last_seen.to_string(),
        })
        .await
        .expect_err("a cursor from before the restore");
    assert_eq!(stale.code(), Code::FailedPrecondition, "{stale:?}");
    assert!(
        stale.message().starts_with("after_cursor:") && stale.message().contains("resynchronise"),
        "{}",
        stale.message()
    );

    // Cursors now name the restored history, and resume within it.
    let mut fresh = node
        .directory(&watcher)
        .await
        .watch(v1::WatchRequest {
            practitioner_id: "A".into(),
            after_cursor: String::new(),
        })
        .await
        .expect("watch from now on")
        .into_inner();
    attention(&node, &portal, "B", false).await;
    let event = tokio::time::timeout(WAIT, fresh.next())
        .await
        .expect("an event")
        .expect("open")
        .expect("event");
    assert_eq!(event.kind(), Kind::AttentionCleared);
    let (epoch, _) = event
        .cursor
        .split_once(':')
        .expect("a restored store's cursor names its epoch");
    assert!(!epoch.is_empty());
    let mut resumed = watch(&node, &watcher, "A", &format!("{epoch}:0")).await;
    let first = tokio::time::timeout(WAIT, resumed.next())
        .await
        .expect("an event")
        .expect("open")
        .expect("event");
    assert_eq!(
        first.kind(),
        Kind::InvolvementStarted,
        "B joined (in the backup)"
    );
    node.stop().await;
}
