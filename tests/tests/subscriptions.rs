//! Cross-border subscriptions between two councils in one process (Surrey
//! subscribes, Brighton & Hove answers), with a third (Hastings) that Brighton
//! also has an agreement with, to show one peer cannot read another's
//! subscription. Real mTLS, real stores, real audit logs; Surrey polls every
//! 100 ms.

use patchwork_server::base::config::PeerEntry;
use patchwork_store::model::Sensitivity;
use std::time::Duration;

use patchwork_certs::SpiffeId;
use patchwork_store::audit::AuditEvent;
use patchwork_tests::attacker::audit_events;
use patchwork_tests::{
    ClientCert, ClientGrant, NodeOptions, Records, TestCa, TestNode, date, federate, involvement,
    peer, v1,
};
use tokio::net::TcpListener;
use tokio_stream::StreamExt;
use tonic::Code;

const SECRET: &str = "5f1d3c0a9b8e7d6c5b4a39281706f5e4d3c2b1a09f8e7d6c5b4a392817060504";
/// How long a notification may take to cross (many poll intervals).
const WAIT: Duration = Duration::from_secs(15);

struct Council {
    node: TestNode,
    portal: ClientCert,
}

struct Federation {
    england: TestCa,
    surrey: Council,
    brighton: Council,
    /// Hastings' address: Brighton has an agreement with it; nothing serves.
    _hastings: TcpListener,
}

async fn bind() -> (TcpListener, std::net::SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    (listener, addr)
}

fn node_id(ca: &TestCa, name: &str) -> String {
    SpiffeId::node(ca.ca.trust_domain(), name)
        .expect("identity")
        .to_string()
}

/// A peer agreed for standard and restricted involvements.
fn agreed(identity: &str, name: &str, address: std::net::SocketAddr) -> PeerEntry {
    PeerEntry {
        sensitivities: vec![Sensitivity::Standard, Sensitivity::Restricted],
        ..peer(identity, name, address)
    }
}

async fn start(ca: &TestCa, name: &str, listener: TcpListener, peers: Vec<PeerEntry>) -> Council {
    let portal = ca.client("portal");
    let node = TestNode::start_with(
        ca,
        name,
        &[ClientGrant {
            client: &portal,
            roles: &["records", "lookup", "watch"],
        }],
        NodeOptions {
            listener: Some(listener),
            secret_files: vec![("england.key".into(), SECRET.into())],
            ..Default::default()
        }
        .with(|config| {
            config.federation.default_deadline_ms = 2000;
            config.federation.poll_interval_ms = 100;
            federate(config, peers);
        }),
    )
    .await;
    Council { node, portal }
}

async fn seed(
    council: &Council,
    org: &str,
    practitioners: &[(&str, &str)],
    person: v1::Person,
    involvements: &[(&str, &str, v1::Sensitivity)],
) {
    let team: Vec<(&str, &str, &str)> = practitioners
        .iter()
        .map(|(id, name)| (*id, *name, "Social worker"))
        .collect();
    let person_id = person.id.clone();
    let records = Records {
        persons: vec![person],
        involvements: involvements
            .iter()
            .map(|(who, service, sensitivity)| involvement(&person_id, who, service, *sensitivity))
            .collect(),
        ..Records::team(org, org, &team)
    };
    patchwork_tests::seed(&council.node, &council.portal, records).await;
}

async fn record(
    council: &Council,
    person: &str,
    who: &str,
    service: &str,
    sensitivity: v1::Sensitivity,
) {
    council
        .node
        .directory(&council.portal)
        .await
        .record_involvement(v1::RecordInvolvementRequest {
            involvement: Some(involvement(person, who, service, sensitivity)),
        })
        .await
        .expect("involvement");
}

async fn federation() -> Federation {
    let england = TestCa::new("england.patchwork");
    let ((surrey_l, surrey_a), (brighton_l, brighton_a), (hastings, hastings_a)) =
        (bind().await, bind().await, bind().await);
    let surrey = start(
        &england,
        "surrey",
        surrey_l,
        vec![agreed(
            &node_id(&england, "brighton"),
            "Brighton & Hove",
            brighton_a,
        )],
    )
    .await;
    let brighton = start(
        &england,
        "brighton",
        brighton_l,
        vec![
            agreed(&node_id(&england, "surrey"), "Surrey", surrey_a),
            agreed(&node_id(&england, "hastings"), "Hastings", hastings_a),
        ],
    )
    .await;
    let amelia = |id: &str| {
        patchwork_tests::person(id, "Amelia", "Smith-Jones", date(2015, 3, 14), "9434765919")
    };
    seed(
        &surrey,
        "ORG-S",
        &[("PR-S1", "Sam Okafor"), ("PR-S2", "Jo Patel")],
        amelia("S-1"),
        &[("PR-S1", "Child protection", v1::Sensitivity::Standard)],
    )
    .await;
    seed(
        &brighton,
        "ORG-B",
        &[
            ("PR-B1", "Kai Mensah"),
            ("PR-B2", "Lee Brown"),
            ("PR-B3", "Ana Garcia"),
            ("PR-B4", "Rui Costa"),
        ],
        amelia("B-1"),
        &[("PR-B1", "Youth work", v1::Sensitivity::Standard)],
    )
    .await;
    Federation {
        england,
        surrey,
        brighton,
        _hastings: hastings,
    }
}

fn subscribe_request(practitioner_id: &str, peer: &str) -> v1::DirectorySubscribeRequest {
    v1::DirectorySubscribeRequest {
        subject: Some(v1::Demographics {
            given_name: "Amelia".into(),
            family_name: "Smith-Jones".into(),
            date_of_birth: date(2015, 3, 14),
            postcode: String::new(),
            national_id: Some(v1::NationalId {
                scheme: "nhs".into(),
                value: "9434765919".into(),
            }),
        }),
        purpose: Some(v1::Purpose {
            lawful_basis: v1::LawfulBasis::ChildSafeguarding as i32,
            reason: "child protection plan: keep the team informed".into(),
        }),
        requester: Some(v1::Requester {
            practitioner_id: practitioner_id.into(),
            ..Default::default()
        }),
        peer_node_ids: vec![peer.into()],
        ttl_days: 30,
    }
}

/// Subscribes and returns the local subscription id.
async fn subscribe(f: &Federation, practitioner_id: &str) -> String {
    let brighton = node_id(&f.england, "brighton");
    let response = f
        .surrey
        .node
        .directory(&f.surrey.portal)
        .await
        .subscribe(subscribe_request(practitioner_id, &brighton))
        .await
        .expect("subscribe")
        .into_inner();
    assert_eq!(response.peers.len(), 1, "{response:?}");
    let peer = &response.peers[0];
    assert_eq!(peer.node_id, brighton);
    assert_eq!(peer.outcome(), v1::NodeOutcome::Matched, "{peer:?}");
    assert!(peer.expires_at_unix_seconds > unix_now() + 29 * 86_400);
    peer.subscription_id.clone()
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}

async fn watch(council: &Council, who: &str) -> tonic::Streaming<v1::TeamEvent> {
    council
        .node
        .directory(&council.portal)
        .await
        .watch(v1::WatchRequest {
            practitioner_id: who.into(),
            after_cursor: String::new(),
        })
        .await
        .expect("watch")
        .into_inner()
}

async fn next(stream: &mut tonic::Streaming<v1::TeamEvent>) -> v1::TeamEvent {
    tokio::time::timeout(WAIT, stream.next())
        .await
        .expect("a notification within the deadline")
        .expect("stream open")
        .expect("event")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cross_border_subscriber_hears_of_new_involvements_and_attention() {
    let mut f = federation().await;
    let brighton = node_id(&f.england, "brighton");
    let surrey = node_id(&f.england, "surrey");
    let mut stream = watch(&f.surrey, "PR-S1").await;
    let subscription = subscribe(&f, "PR-S1").await;

    // A standard involvement: the practitioner is disclosed.
    record(
        &f.brighton,
        "B-1",
        "PR-B2",
        "Early help",
        v1::Sensitivity::Standard,
    )
    .await;
    let event = next(&mut stream).await;
    assert_eq!(event.kind(), v1::team_event::Kind::InvolvementStarted);
    assert_eq!(event.from_node, brighton);
    assert_eq!(event.person_reference, subscription);
    assert_eq!(event.reason, "Early help");
    let by = event.by.expect("by");
    assert_eq!(
        (by.name.as_str(), by.organisation_name.as_str()),
        ("Lee Brown", "ORG-B")
    );

    // A restricted one: only its gatekeeper, not the practitioner or service.
    record(
        &f.brighton,
        "B-1",
        "PR-B3",
        "Sexual health",
        v1::Sensitivity::Restricted,
    )
    .await;
    let event = next(&mut stream).await;
    assert_eq!(event.kind(), v1::team_event::Kind::InvolvementStarted);
    assert_eq!(event.reason, "");
    let by = event.by.expect("by");
    assert_eq!(by.name, "Clinic duty line");
    assert_eq!((by.role.as_str(), by.organisation_name.as_str()), ("", ""));

    // Attention, without its reason.
    f.brighton
        .node
        .directory(&f.brighton.portal)
        .await
        .raise_attention(v1::RaiseAttentionRequest {
            person_id: "B-1".into(),
            practitioner_id: "PR-B1".into(),
            reason: "missed three appointments".into(),
        })
        .await
        .expect("raise");
    let event = next(&mut stream).await;
    assert_eq!(event.kind(), v1::team_event::Kind::AttentionRaised);
    assert_eq!(event.from_node, brighton);
    assert_eq!(event.reason, "");

    f.brighton.node.stop().await;
    f.surrey.node.stop().await;
    let brighton_log = audit_events(&f.brighton.node);
    assert!(
        brighton_log.iter().any(|e| matches!(e,
            AuditEvent::PeerAsked { peer, outcome, requester_practitioner_id, .. }
                if *peer == surrey && outcome == "matched" && requester_practitioner_id == "PR-S1")),
        "Brighton audits the subscription like a lookup"
    );
    let sent: Vec<&Vec<String>> = brighton_log
        .iter()
        .filter_map(|e| match e {
            AuditEvent::NotificationSent {
                peer,
                person_id,
                disclosed_involvement_ids,
                ..
            } if *peer == surrey && person_id == "B-1" => Some(disclosed_involvement_ids),
            _ => None,
        })
        .collect();
    assert_eq!(sent.len(), 3, "every notification sent is audited");
    assert_eq!((sent[0].len(), sent[1].len(), sent[2].len()), (1, 1, 0));
    let surrey_log = audit_events(&f.surrey.node);
    assert!(surrey_log.iter().any(|e| matches!(e,
        AuditEvent::SubscriptionMade { subscription_id, peer, outcome, requester, .. }
            if *subscription_id == subscription && *peer == brighton && outcome == "matched" && requester == "PR-S1")));
    let received = surrey_log
        .iter()
        .filter(|e| {
            matches!(e,
            AuditEvent::NotificationReceived { subscription_id, practitioner_id, .. }
                if *subscription_id == subscription && practitioner_id == "PR-S1")
        })
        .count();
    assert_eq!(received, 3, "every notification received is audited");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cancelled_subscription_hears_nothing_more_and_no_peer_reads_another_s() {
    let mut f = federation().await;
    let mut first = watch(&f.surrey, "PR-S1").await;
    let mut second = watch(&f.surrey, "PR-S2").await;
    let cancelled = subscribe(&f, "PR-S1").await;
    f.surrey
        .node
        .directory(&f.surrey.portal)
        .await
        .unsubscribe(v1::DirectoryUnsubscribeRequest {
            subscription_id: cancelled.clone(),
        })
        .await
        .expect("unsubscribe");
    let again = f
        .surrey
        .node
        .directory(&f.surrey.portal)
        .await
        .unsubscribe(v1::DirectoryUnsubscribeRequest {
            subscription_id: cancelled,
        })
        .await
        .expect_err("already cancelled");
    assert_eq!(again.code(), Code::NotFound);
    let live = subscribe(&f, "PR-S2").await;

    record(
        &f.brighton,
        "B-1",
        "PR-B4",
        "Family support",
        v1::Sensitivity::Standard,
    )
    .await;
    let event = next(&mut second).await;
    assert_eq!(event.person_reference, live);
    assert_eq!(event.by.expect("by").name, "Rui Costa");
    // The same poll round would have carried the cancelled one's: nothing.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), first.next())
            .await
            .is_err(),
        "a cancelled subscription hears nothing more"
    );

    // Brighton knows Surrey's subscription by its own id; read it from
    // Surrey's store, then ask for it as Hastings (agreed with Brighton too).
    f.surrey.node.stop().await;
    let remote_id = {
        let store = f.surrey.node.stopped_store();
        let all = store.remote_subscriptions().expect("subscriptions");
        assert_eq!(all.len(), 1, "the cancelled one is gone");
        all[0].remote_id.clone()
    };
    let as_peer = |name: &str| f.england.node_cert(name);
    let channel = |cert: ClientCert| {
        let node = &f.brighton.node;
        let pem = f.england.ca.cert_pem().to_owned();
        async move {
            node.channel_expecting(&cert, &node.identity, &[pem])
                .await
                .expect("channel")
        }
    };
    let refused = v1::federation_client::FederationClient::new(channel(as_peer("hastings")).await)
        .poll_notifications(v1::PollRequest {
            subscription_ids: vec![remote_id.clone()],
            after_cursor: "0".into(),
        })
        .await
        .expect_err("another peer's subscription");
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    let refused = v1::federation_client::FederationClient::new(channel(as_peer("hastings")).await)
        .unsubscribe(v1::UnsubscribeRequest {
            subscription_id: remote_id.clone(),
        })
        .await
        .expect_err("another peer's subscription");
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    // Surrey itself may read it again from the start (a restarted poller).
    let own = v1::federation_client::FederationClient::new(channel(as_peer("surrey")).await)
        .poll_notifications(v1::PollRequest {
            subscription_ids: vec![remote_id],
            after_cursor: "0".into(),
        })
        .await
        .expect("own subscription")
        .into_inner();
    assert_eq!(own.notifications.len(), 1);
    assert_eq!(
        own.notifications[0].kind(),
        v1::notification::Kind::InvolvementStarted
    );
}

/// Nobody works with Amelia's brother at Brighton yet: a subscription must
/// not tell Surrey that Brighton holds him (issue 12, finding 4), so it is
/// answered exactly as for someone unknown, and works once there is a team
/// to disclose.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_person_nobody_works_with_yet_is_not_revealed_by_a_subscription() {
    let f = federation().await;
    f.brighton
        .node
        .directory(&f.brighton.portal)
        .await
        .create_person(v1::CreatePersonRequest {
            person: Some(patchwork_tests::person(
                "B-2",
                "Noah",
                "Smith-Jones",
                date(2017, 9, 2),
                "",
            )),
        })
        .await
        .expect("person");
    let mut stream = watch(&f.surrey, "PR-S1").await;
    let ask = |given: &str, dob| {
        let mut request = subscribe_request("PR-S1", &node_id(&f.england, "brighton"));
        if let Some(subject) = request.subject.as_mut() {
            subject.given_name = given.into();
            subject.date_of_birth = dob;
            subject.national_id = None;
        }
        request
    };
    let mut directory = f.surrey.node.directory(&f.surrey.portal).await;
    let noah = directory
        .subscribe(ask("Noah", date(2017, 9, 2)))
        .await
        .expect("subscribe")
        .into_inner();
    let stranger = directory
        .subscribe(ask("Oscar", date(2016, 4, 4)))
        .await
        .expect("subscribe")
        .into_inner();
    assert_eq!(noah.peers[0].outcome(), v1::NodeOutcome::NoMatch);
    assert_eq!(noah.peers[0].outcome, stranger.peers[0].outcome);
    assert_eq!(noah.peers[0].detail, stranger.peers[0].detail);
    assert!(noah.peers[0].subscription_id.is_empty());

    // Once someone works with him, he can be followed.
    record(
        &f.brighton,
        "B-2",
        "PR-B2",
        "Early help",
        v1::Sensitivity::Standard,
    )
    .await;
    let followed = directory
        .subscribe(ask("Noah", date(2017, 9, 2)))
        .await
        .expect("subscribe")
        .into_inner();
    assert_eq!(followed.peers[0].outcome(), v1::NodeOutcome::Matched);
    record(
        &f.brighton,
        "B-2",
        "PR-B1",
        "Youth work",
        v1::Sensitivity::Standard,
    )
    .await;
    let event = next(&mut stream).await;
    assert_eq!(event.kind(), v1::team_event::Kind::InvolvementStarted);
    assert_eq!(event.person_reference, followed.peers[0].subscription_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_subscriber_that_was_down_catches_up_and_an_expired_subscription_hears_nothing() {
    let mut f = federation().await;
    let expiring = subscribe(&f, "PR-S1").await;
    let live = subscribe(&f, "PR-S2").await;
    f.surrey.node.stop().await;
    {
        // Time passes for one of them: it is past its expiry.
        let store = f.surrey.node.stopped_store();
        let mut subscription = store
            .remote_subscription(&expiring)
            .expect("read")
            .expect("there");
        subscription.expires_at_unix_seconds = unix_now() - 1;
        store
            .put_remote_subscription(&subscription)
            .expect("expire");
    }
    // Brighton records while Surrey is down; Brighton never connects to
    // Surrey (which comes back on another port), Surrey polls.
    record(
        &f.brighton,
        "B-1",
        "PR-B2",
        "Early help",
        v1::Sensitivity::Standard,
    )
    .await;
    f.surrey.node.start_again().await;

    let from_start = |who: &str| {
        let council = &f.surrey;
        let who = who.to_owned();
        async move {
            council
                .node
                .directory(&council.portal)
                .await
                .watch(v1::WatchRequest {
                    practitioner_id: who,
                    after_cursor: "0".into(),
                })
                .await
                .expect("watch")
                .into_inner()
        }
    };
    let mut expired = from_start("PR-S1").await;
    let mut caught_up = from_start("PR-S2").await;
    let event = next(&mut caught_up).await;
    assert_eq!(event.person_reference, live);
    assert_eq!(event.by.expect("by").name, "Lee Brown");
    assert!(
        tokio::time::timeout(Duration::from_millis(300), expired.next())
            .await
            .is_err(),
        "an expired subscription hears nothing"
    );
    f.surrey.node.stop().await;
    let store = f.surrey.node.stopped_store();
    assert_eq!(store.remote_subscription(&expiring).expect("read"), None);
}
