//! Webhooks carry personal data to council systems: their URLs are parsed
//! and checked (no control characters to smuggle headers, https unless the
//! receiver is on loopback and plain http is asked for), and https
//! deliveries are signed, retried and in order, trusting the public web PKI
//! or the webhook's own CA file.

use patchwork_server::base::config::WebhookEntry;
use patchwork_server::base::config::WebhookPractitioners;
use std::time::Duration;

use patchwork_server::NodeConfig;
use patchwork_tests::hardening::{Delivery, receiver_tls, signature_verifies, webhook_receiver};
use patchwork_tests::{
    ClientCert, ClientGrant, NodeOptions, TRUST_DOMAIN, TestCa, TestNode, date, involvement,
    organisation, person, practitioner, v1,
};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(10);

/// A stopped node whose config gains `webhook` (a `[[webhooks]]` entry);
/// loads the config as `patchwork serve` and `config check` do.
async fn load_with_webhook(ca: &TestCa, webhook: &str) -> Result<NodeConfig, String> {
    let mut node = TestNode::start_with(
        ca,
        "surrey",
        &[],
        NodeOptions {
            secret_files: vec![("hook.key".into(), hex::encode([7u8; 32]))],
            ..NodeOptions::default()
        },
    )
    .await;
    node.stop().await;
    let mut text = std::fs::read_to_string(&node.config_path).expect("config");
    text.push_str("\n[[webhooks]]\nsecret_file = \"hook.key\"\n");
    text.push_str(webhook);
    std::fs::write(&node.config_path, text).expect("write config");
    NodeConfig::load(&node.config_path).map_err(|e| e.to_string())
}

#[tokio::test]
async fn webhook_urls_that_inject_headers_or_leave_the_machine_in_clear_are_refused() {
    let ca = TestCa::new(TRUST_DOMAIN);
    let cases = [
        (
            // The attack as the reviewer sent it: a header smuggled through the
            // URL into the request (main accepted it).
            "url = \"http://127.0.0.1:9/hooks\\r\\nX-Injected: yes\"\n",
            "config key webhooks[0].url: must not contain whitespace or control characters (found U+000D)",
        ),
        (
            // The same with plain http allowed: the check comes first.
            "url = \"http://127.0.0.1:9/hooks\\r\\nX-Injected: yes\"\nallow_http = true\n",
            "config key webhooks[0].url: must not contain whitespace or control characters (found U+000D)",
        ),
        (
            "url = \"https://hooks.example.org/a\\nb\"\n",
            "config key webhooks[0].url: must not contain whitespace or control characters (found U+000A)",
        ),
        (
            "url = \"http://127.0.0.1:8080/hooks\"\n",
            "config key webhooks[0].url: is plain http: use https, or set allow_http = true for a receiver on this machine (loopback only)",
        ),
        (
            "url = \"http://hooks.example.org:8080/hooks\"\nallow_http = true\n",
            "config key webhooks[0].url: is plain http to hooks.example.org: allow_http is only for a loopback receiver (127.0.0.1, ::1, localhost); use https",
        ),
        (
            "url = \"http://192.168.1.20/hooks\"\nallow_http = true\n",
            "config key webhooks[0].url: is plain http to 192.168.1.20: allow_http is only for a loopback receiver",
        ),
    ];
    for (webhook, expected) in cases {
        let refused = load_with_webhook(&ca, webhook).await.expect_err(webhook);
        assert!(refused.contains(expected), "{webhook}: {refused}");
    }
    load_with_webhook(
        &ca,
        "url = \"http://127.0.0.1:8080/hooks\"\nallow_http = true\n",
    )
    .await
    .expect("plain http to loopback, asked for");
    load_with_webhook(&ca, "url = \"https://hooks.example.org/hooks\"\n")
        .await
        .expect("https anywhere");
}

/// Practitioners A and B, person P1; A joins, then B (an event to A), then
/// attention is raised for B (an event to A).
async fn make_events_for_a(node: &TestNode, portal: &ClientCert) {
    let mut directory = node.directory(portal).await;
    directory
        .create_organisation(v1::CreateOrganisationRequest {
            organisation: Some(organisation("O1", "Surrey CC", v1::Sector::SocialCare)),
        })
        .await
        .expect("organisation");
    for id in ["A", "B"] {
        directory
            .create_practitioner(v1::CreatePractitionerRequest {
                practitioner: Some(practitioner(id, id, "Social worker", "O1")),
            })
            .await
            .expect("practitioner");
    }
    directory
        .create_person(v1::CreatePersonRequest {
            person: Some(person("P1", "Amelia", "Smith", date(2015, 3, 14), "")),
        })
        .await
        .expect("person");
    for (id, who) in [("I-A", "A"), ("I-B", "B")] {
        let mut record = involvement("P1", who, "Child protection", v1::Sensitivity::Standard);
        record.id = id.into();
        directory
            .record_involvement(v1::RecordInvolvementRequest {
                involvement: Some(record),
            })
            .await
            .expect("record involvement");
    }
    directory
        .raise_attention(v1::RaiseAttentionRequest {
            person_id: "P1".into(),
            practitioner_id: "B".into(),
            reason: "missed three appointments".into(),
        })
        .await
        .expect("raise attention");
}

#[tokio::test]
async fn an_https_receiver_behind_a_private_ca_gets_signed_events_in_order() {
    let secret = [9u8; 32];
    // The receiver's certificate comes from a CA the council runs for its
    // own systems: the webhook trusts it through ca_file.
    let receivers_ca = TestCa::new("hooks.council.test");
    let tls = receiver_tls(&receivers_ca.node_cert("hooks"));
    let private = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let private_port = private.local_addr().expect("addr").port();
    let (report, mut reports) = mpsc::channel(32);
    tokio::spawn(webhook_receiver(private, Some(tls.clone()), 1, report));
    // The same receiver's certificate, with the webhook trusting only the
    // public web PKI: never delivered to.
    let public = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let public_port = public.local_addr().expect("addr").port();
    let (public_report, mut public_reports) = mpsc::channel(32);
    tokio::spawn(webhook_receiver(public, Some(tls), 0, public_report));

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
            secret_files: vec![
                ("hook.key".into(), hex::encode(secret)),
                ("hooks-ca.crt".into(), receivers_ca.ca.cert_pem().to_owned()),
            ],
            ..NodeOptions::default()
        }
        .with(move |config| {
            let webhook = |url: String, ca_file: Option<&str>| WebhookEntry {
                url,
                secret_file: "hook.key".into(),
                practitioners: WebhookPractitioners::Only(vec!["A".into()]),
                ca_file: ca_file.map(Into::into),
                allow_http: false,
            };
            config.webhooks = vec![
                webhook(
                    format!("https://localhost:{private_port}/hooks/patchwork"),
                    Some("hooks-ca.crt"),
                ),
                webhook(
                    format!("https://127.0.0.1:{public_port}/hooks/patchwork"),
                    None,
                ),
            ];
        }),
    )
    .await;
    make_events_for_a(&node, &portal).await;

    let mut deliveries: Vec<Delivery> = Vec::new();
    while deliveries.iter().filter(|d| d.status == 200).count() < 2 {
        let delivery = tokio::time::timeout(WAIT, reports.recv())
            .await
            .expect("a delivery within the deadline")
            .expect("receiver running")
            .expect("a request over TLS");
        assert!(signature_verifies(&delivery, &secret), "{delivery:?}");
        assert!(
            delivery
                .head
                .starts_with("POST /hooks/patchwork HTTP/1.1\r\n"),
            "{}",
            delivery.head
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
        vec![("1", 500), ("1", 200), ("2", 200)],
        "retried until accepted, in order"
    );
    assert!(
        deliveries[1]
            .body
            .contains("\"kind\":\"involvement_started\"")
    );
    assert!(deliveries[2].body.contains("\"kind\":\"attention_raised\""));

    // The webhook that trusts only the public web PKI refuses the private
    // CA's certificate: handshakes fail, nothing is sent, it keeps trying.
    for _ in 0..2 {
        let refused = tokio::time::timeout(WAIT, public_reports.recv())
            .await
            .expect("a handshake within the deadline")
            .expect("receiver running")
            .expect_err("no request gets through");
        assert!(refused.contains("tls handshake failed"), "{refused}");
    }
}
