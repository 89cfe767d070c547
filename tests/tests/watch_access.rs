//! Who may watch a practitioner's team events, and what a watcher learns
//! of a restricted service's practitioner. A client with only `lookup` or
//! `records` tried `Watch` on a sexual-health nurse and read her caseload:
//! now only `watch` may, each watch is audited, and events about a
//! restricted involvement reach anyone else — through Watch or a webhook —
//! only as the service's gatekeeper.

use patchwork_server::base::config::WebhookEntry;
use patchwork_server::base::config::WebhookPractitioners;
use patchwork_store::AuditEvent;
use patchwork_tests::eavesdrop::{WebhookSink, next_event, stored_audit_events, try_watch};
use patchwork_tests::{
    ClientCert, ClientGrant, NodeOptions, Records, TRUST_DOMAIN, TestCa, TestNode, date,
    involvement, organisation, person, practitioner, v1,
};
use tonic::Code;
use v1::team_event::Kind;

/// What must never reach another practitioner about the nurse.
const NURSE_TRACES: [&str; 4] = [
    "Nia Okoro",
    "nurse@example.gov.uk",
    "Sexual health nurse",
    "Sexual Health Clinic",
];

struct Setup {
    node: TestNode,
    records: ClientCert,
    lookup: ClientCert,
    relay: ClientCert,
}

/// A node whose clients hold one role each, with a webhook for the social
/// worker SW if `sink` is given.
async fn start(sink: Option<&WebhookSink>) -> Setup {
    let ca = TestCa::new(TRUST_DOMAIN);
    let records = ca.client("case-system");
    let lookup = ca.client("lookup-only");
    let relay = ca.client("portal");
    let webhook = sink.map(|sink| WebhookEntry {
        url: format!("http://127.0.0.1:{}/hooks/patchwork", sink.port),
        secret_file: "hook.key".into(),
        practitioners: WebhookPractitioners::Only(vec!["SW".into()]),
        ca_file: None,
        allow_http: true,
    });
    let node = TestNode::start_with(
        &ca,
        "surrey",
        &[
            ClientGrant {
                client: &records,
                roles: &["records"],
            },
            ClientGrant {
                client: &lookup,
                roles: &["lookup"],
            },
            ClientGrant {
                client: &relay,
                roles: &["watch"],
            },
        ],
        NodeOptions {
            secret_files: vec![("hook.key".into(), "07".repeat(32))],
            ..NodeOptions::default()
        }
        .with(|config| config.webhooks.extend(webhook)),
    )
    .await;
    Setup {
        node,
        records,
        lookup,
        relay,
    }
}

/// P1 with a social worker SW (standard) and a sexual-health nurse NURSE
/// (restricted, behind the clinic's duty line); the nurse joins second, so
/// SW hears of her.
async fn seed(setup: &Setup) {
    let mut nurse = practitioner("NURSE", "Nia Okoro", "Sexual health nurse", "O2");
    nurse.email = "nurse@example.gov.uk".into();
    let records = Records {
        organisations: [("O1", "Surrey CC"), ("O2", "Sexual Health Clinic")]
            .map(|(id, name)| organisation(id, name, v1::Sector::Health))
            .to_vec(),
        practitioners: vec![
            practitioner("SW", "Sam Okafor", "Social worker", "O1"),
            nurse,
        ],
        persons: vec![person("P1", "Amelia", "Smith", date(2008, 3, 14), "")],
        involvements: [
            ("SW", "Child protection", v1::Sensitivity::Standard),
            ("NURSE", "Sexual health", v1::Sensitivity::Restricted),
        ]
        .map(|(who, service, sensitivity)| involvement("P1", who, service, sensitivity))
        .to_vec(),
    };
    patchwork_tests::seed(&setup.node, &setup.records, records).await;
}

async fn nurse_attention(setup: &Setup, raise: bool) {
    let mut directory = setup.node.directory(&setup.records).await;
    if raise {
        directory
            .raise_attention(v1::RaiseAttentionRequest {
                person_id: "P1".into(),
                practitioner_id: "NURSE".into(),
                reason: "missed three appointments".into(),
            })
            .await
            .expect("raise");
    } else {
        directory
            .clear_attention(v1::ClearAttentionRequest {
                person_id: "P1".into(),
                practitioner_id: "NURSE".into(),
                reason: String::new(),
            })
            .await
            .expect("clear");
    }
}

#[tokio::test]
async fn only_the_watch_role_may_watch_a_practitioner_and_every_watch_is_audited() {
    let mut setup = start(None).await;
    seed(&setup).await;
    nurse_attention(&setup, true).await;

    // The attack: replay the nurse's stream from the start, with a lookup
    // or a records certificate. Refused, naming the role; nothing streams.
    for client in [&setup.lookup, &setup.records] {
        let refused = try_watch(&setup.node, client, "NURSE", "0")
            .await
            .expect_err("watch without the watch role");
        assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
        assert!(
            refused.message().contains("does not have the watch role"),
            "{refused:?}"
        );
        assert!(refused.message().contains("NURSE"), "{refused:?}");
    }

    // The relay (role `watch`) gets SW's events: the nurse joining and her
    // flag, each only as the clinic's duty line.
    let mut stream = try_watch(&setup.node, &setup.relay, "SW", "0")
        .await
        .expect("the watch role may watch");
    let joined = next_event(&mut stream).await;
    assert_eq!(joined.kind(), Kind::InvolvementStarted);
    let flagged = next_event(&mut stream).await;
    assert_eq!(flagged.kind(), Kind::AttentionRaised);
    for event in [&joined, &flagged] {
        assert_eq!(event.person_reference, "P1");
        assert_eq!(
            event.by.clone().unwrap_or_default().name,
            "Clinic duty line"
        );
    }
    drop(stream);

    // The node wrote down the watch it allowed (ids only), and no watch for
    // the refused ones.
    setup.node.stop().await;
    let watches: Vec<(String, String, u64)> = stored_audit_events(&setup.node)
        .into_iter()
        .filter_map(|event| match event {
            AuditEvent::WatchOpened {
                caller,
                practitioner_id,
                after_cursor,
            } => Some((caller, practitioner_id, after_cursor)),
            _ => None,
        })
        .collect();
    assert_eq!(
        watches,
        vec![(setup.relay.identity.to_string(), "SW".to_owned(), 0)]
    );
}

#[tokio::test]
async fn a_restricted_practitioner_reaches_the_rest_of_the_team_only_as_the_gatekeeper() {
    let mut sink = WebhookSink::start().await;
    let setup = start(Some(&sink)).await;
    seed(&setup).await;
    nurse_attention(&setup, true).await;
    nurse_attention(&setup, false).await;
    let mut stream = try_watch(&setup.node, &setup.relay, "SW", "0")
        .await
        .expect("watch");

    // Through Watch: the nurse joins, raises and clears a flag; every time
    // the team sees the clinic's duty line, never her.
    let mut kinds = Vec::new();
    for _ in 0..3 {
        let event = next_event(&mut stream).await;
        kinds.push(event.kind());
        let by = event.by.clone().unwrap_or_default();
        assert_eq!(
            (by.name.as_str(), by.phone.as_str()),
            ("Clinic duty line", "0800 555 0199"),
            "{event:?}"
        );
        assert_eq!((by.role.as_str(), by.organisation_name.as_str()), ("", ""));
        let text = format!("{event:?}");
        for trace in NURSE_TRACES.iter().chain(&["NURSE"]) {
            assert!(!text.contains(trace), "{trace:?} in {text}");
        }
    }
    assert_eq!(
        kinds,
        vec![
            Kind::InvolvementStarted,
            Kind::AttentionRaised,
            Kind::AttentionCleared
        ]
    );

    // Through SW's webhook: the same three, the same stand-in.
    for kind in [
        "involvement_started",
        "attention_raised",
        "attention_cleared",
    ] {
        let body = sink.next_body().await;
        assert!(body.contains(&format!("\"kind\":\"{kind}\"")), "{body}");
        assert!(body.contains("Clinic duty line"), "{body}");
        for trace in NURSE_TRACES {
            assert!(!body.contains(trace), "{trace:?} in {body}");
        }
    }
}
