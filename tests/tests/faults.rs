//! Misbehaving peers: Surrey asks Brighton & Hove through a fault-injecting
//! proxy that delays, blackholes, resets and cuts responses in the middle.
//! Every lookup keeps its deadline and names the peer that failed; the
//! connection recovers when the peer heals; a flapping peer is skipped by its
//! circuit breaker and stops costing lookups the deadline. Hostile peers:
//! a replayed request id gets no second answer, an oversized request is not
//! decoded, and a peer whose queries nearly all miss (enumeration) is
//! paused, audited and counted in an alert metric.

use patchwork_server::NodeConfig;
use patchwork_server::base::config::PeerEntry;
use std::time::{Duration, Instant};

use patchwork_certs::SpiffeId;
use patchwork_tests::attacker::audit_events;
use patchwork_tests::proxy::{Fault, FaultProxy};
use patchwork_tests::{
    ClientCert, ClientGrant, NodeOptions, Records, TestCa, TestNode, date, federate, involvement,
    organisation, peer, practitioner, v1,
};
use tokio::net::TcpListener;
use tonic::Code;

const SECRET: &str = "5f1d3c0a9b8e7d6c5b4a39281706f5e4d3c2b1a09f8e7d6c5b4a392817060504";
/// The circuit breaker's cool-down on the asking node.
const COOL_DOWN_MS: u32 = 1_000;

struct Council {
    node: TestNode,
    portal: ClientCert,
}

struct Pair {
    surrey: Council,
    brighton: Council,
    brighton_id: String,
    /// Between Surrey and Brighton (Surrey's peer address for Brighton).
    proxy: FaultProxy,
}

/// Federation with `peers` (identity, name, address), each agreed at 6,000
/// queries a minute; peers get 1.5 s and a failing one is skipped for
/// [`COOL_DOWN_MS`].
fn federation_with_peers(
    peers: &[(&str, &str, std::net::SocketAddr)],
) -> impl FnOnce(&mut NodeConfig) + Send + 'static {
    let peers: Vec<PeerEntry> = peers
        .iter()
        .map(|(identity, name, address)| PeerEntry {
            rate_limit_per_minute: 6000,
            ..peer(identity, name, address)
        })
        .collect();
    move |config: &mut NodeConfig| {
        config.federation.default_deadline_ms = 1500;
        config.federation.breaker_cool_down_ms = COOL_DOWN_MS;
        federate(config, peers);
    }
}

async fn start(
    ca: &TestCa,
    name: &str,
    listener: TcpListener,
    federation: impl FnOnce(&mut NodeConfig) + Send + 'static,
) -> Council {
    let portal = ca.client("portal");
    let node = TestNode::start_with(
        ca,
        name,
        &[ClientGrant {
            client: &portal,
            roles: &["records", "lookup"],
        }],
        NodeOptions {
            listener: Some(listener),
            secret_files: vec![("england.key".into(), SECRET.into())],
            ..Default::default()
        }
        .with(federation),
    )
    .await;
    Council { node, portal }
}

async fn seed(council: &Council, org: &str, practitioner_id: &str, person: Option<&str>) {
    let mut records = Records::team(
        org,
        "Children's Services",
        &[(practitioner_id, "Sam Okafor", "Social worker")],
    );
    if let Some(person_id) = person {
        records.persons = vec![patchwork_tests::person(
            person_id,
            "Amelia",
            "Smith-Jones",
            date(2015, 3, 14),
            "9434765919",
        )];
        records.involvements = vec![involvement(
            person_id,
            practitioner_id,
            "Youth work",
            v1::Sensitivity::Standard,
        )];
    }
    patchwork_tests::seed(&council.node, &council.portal, records).await;
}

async fn pair() -> Pair {
    let ca = TestCa::new("england.patchwork");
    let surrey_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let brighton_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let surrey_addr = surrey_listener.local_addr().expect("addr");
    let brighton_addr = brighton_listener.local_addr().expect("addr");
    let proxy = FaultProxy::start(brighton_addr).await;
    let id = |name: &str| {
        SpiffeId::node(ca.ca.trust_domain(), name)
            .expect("identity")
            .to_string()
    };
    let brighton_id = id("brighton");
    let surrey = start(
        &ca,
        "surrey",
        surrey_listener,
        federation_with_peers(&[(&brighton_id, "Brighton & Hove", proxy.addr())]),
    )
    .await;
    let brighton = start(
        &ca,
        "brighton",
        brighton_listener,
        federation_with_peers(&[(&id("surrey"), "Surrey", surrey_addr)]),
    )
    .await;
    seed(&surrey, "ORG-S", "PR-S1", None).await;
    seed(&brighton, "ORG-B", "PR-B1", Some("B-1")).await;
    Pair {
        surrey,
        brighton,
        brighton_id,
        proxy,
    }
}

fn ask(deadline_ms: u32) -> v1::LookupRequest {
    let mut request = patchwork_tests::lookup_request(
        v1::Demographics {
            given_name: "Amelia".into(),
            family_name: "Smith-Jones".into(),
            date_of_birth: date(2015, 3, 14),
            postcode: String::new(),
            national_id: Some(v1::NationalId {
                scheme: "nhs".into(),
                value: "9434765919".into(),
            }),
        },
        "PR-S1",
    );
    request.local_only = false;
    request.peer_deadline_ms = deadline_ms;
    request
}

impl Pair {
    /// One lookup from Surrey: Brighton's answer and how long it all took.
    async fn lookup(&self, deadline_ms: u32) -> (v1::NodeAnswer, Duration) {
        let mut directory = self.surrey.node.directory(&self.surrey.portal).await;
        let started = Instant::now();
        let response = directory
            .lookup(ask(deadline_ms))
            .await
            .expect("a lookup answers whatever its peers do")
            .into_inner();
        let elapsed = started.elapsed();
        assert_eq!(
            response.answers.len(),
            2,
            "local and Brighton: {response:?}"
        );
        let brighton = response.answers[1].clone();
        assert_eq!(brighton.node_id, self.brighton_id, "the peer is named");
        (brighton, elapsed)
    }

    /// Polls until Brighton answers a lookup with its match again.
    async fn wait_answered(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (answer, _) = self.lookup(1_000).await;
            if answer.outcome == v1::NodeOutcome::Matched as i32 {
                assert_eq!(answer.involvements.len(), 1, "{answer:?}");
                return;
            }
            assert!(
                Instant::now() < deadline,
                "Brighton did not answer again after healing: {answer:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn outcome(answer: &v1::NodeAnswer) -> v1::NodeOutcome {
    v1::NodeOutcome::try_from(answer.outcome).expect("known outcome")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fault_keeps_the_deadline_names_the_peer_and_heals() {
    let pair = pair().await;
    pair.wait_answered().await;
    const DEADLINE_MS: u32 = 800;
    // Generous slack for two shared cores: the point is "about the deadline",
    // not "as long as the fault lasts" (the delay and blackhole last forever).
    let bound = Duration::from_millis(u64::from(DEADLINE_MS) + 1_200);
    let faults = [
        (Fault::Delay(Duration::from_secs(5)), "delay"),
        (Fault::Blackhole, "blackhole"),
        (Fault::Reset, "reset"),
        (Fault::CutResponse, "cut mid-response"),
    ];
    for (fault, name) in faults {
        let connections = pair.proxy.connections();
        pair.proxy.set(fault);
        let (answer, elapsed) = pair.lookup(DEADLINE_MS).await;
        assert!(
            elapsed < bound,
            "{name}: the lookup took {elapsed:?}, deadline {DEADLINE_MS} ms"
        );
        let got = outcome(&answer);
        eprintln!("{name}: {got:?} in {elapsed:?}: {}", answer.detail);
        match fault {
            Fault::Delay(_) | Fault::Blackhole => {
                assert_eq!(got, v1::NodeOutcome::TimedOut, "{name}: {answer:?}");
                assert_eq!(answer.detail, format!("no answer within {DEADLINE_MS} ms"));
            }
            _ => {
                // A broken connection is the peer being unreachable, not
                // an unexplained error.
                assert_eq!(got, v1::NodeOutcome::Unreachable, "{name}: {answer:?}");
                assert!(
                    answer
                        .detail
                        .starts_with("the connection broke during the call"),
                    "{name}: {answer:?}"
                );
            }
        }
        assert!(
            answer.involvements.is_empty(),
            "{name}: nothing from a failed peer"
        );
        pair.proxy.heal();
        pair.wait_answered().await;
        if matches!(fault, Fault::Reset | Fault::CutResponse) {
            assert!(
                pair.proxy.connections() > connections,
                "{name}: the broken connection was replaced"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flapping_peer_is_skipped_by_its_circuit_breaker() {
    let pair = pair().await;
    pair.wait_answered().await;
    const DEADLINE_MS: u32 = 600;
    for round in 0..2 {
        // Down: three lookups pay the deadline, then the circuit opens.
        pair.proxy.set(Fault::Blackhole);
        for _ in 0..3 {
            let (answer, _) = pair.lookup(DEADLINE_MS).await;
            assert_eq!(outcome(&answer), v1::NodeOutcome::TimedOut, "round {round}");
        }
        for _ in 0..5 {
            let (answer, elapsed) = pair.lookup(DEADLINE_MS).await;
            assert_eq!(
                outcome(&answer),
                v1::NodeOutcome::Unreachable,
                "round {round}: {answer:?}"
            );
            assert_eq!(
                answer.detail, "circuit open: skipped for 1 s after repeated failures",
                "round {round}"
            );
            assert!(
                elapsed < Duration::from_millis(u64::from(DEADLINE_MS)),
                "round {round}: a skipped peer costs nothing, took {elapsed:?}"
            );
        }
        // Up again: after the cool-down one trial call closes the circuit.
        pair.proxy.heal();
        pair.wait_answered().await;
        let (answer, _) = pair.lookup(DEADLINE_MS).await;
        assert_eq!(outcome(&answer), v1::NodeOutcome::Matched, "round {round}");
    }
}

// ------------------------------------------------------------ hostile peers

/// A query as Brighton would send it, with keys that match nobody.
fn peer_query(request_id: &str, seed: u8) -> v1::FindInvolvementsRequest {
    v1::FindInvolvementsRequest {
        request_id: request_id.into(),
        key_set: "england".into(),
        match_keys: vec![v1::MatchKey {
            kind: v1::MatchKeyKind::NamesDob as i32,
            digest: vec![seed; 32],
            tokens: None,
        }],
        purpose: Some(v1::Purpose {
            lawful_basis: v1::LawfulBasis::ChildSafeguarding as i32,
            reason: "s.47 enquiry after a referral".into(),
        }),
        requester: Some(v1::Requester {
            practitioner_id: "PR-B1".into(),
            name: "Kai Mensah".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

impl Pair {
    /// Surrey's Federation service, called as Brighton (its configured peer).
    async fn as_brighton(
        &self,
    ) -> v1::federation_client::FederationClient<tonic::transport::Channel> {
        let channel = self
            .surrey
            .node
            .try_channel(&self.brighton.node.node_cert)
            .await
            .expect("connect as brighton");
        v1::federation_client::FederationClient::new(channel)
    }
}

fn refusals(events: &[patchwork_store::audit::AuditEvent]) -> Vec<(String, String)> {
    events
        .iter()
        .filter_map(|event| match event {
            patchwork_store::audit::AuditEvent::PeerAsked {
                request_id,
                refusal: Some(refusal),
                ..
            } => Some((request_id.clone(), refusal.clone())),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_request_id_is_refused_and_audited() {
    let mut pair = pair().await;
    let mut federation = pair.as_brighton().await;
    let first = federation
        .find_involvements(peer_query("replay-0001", 7))
        .await
        .expect("first time answered")
        .into_inner();
    assert_eq!(first.status, v1::MatchStatus::NoMatch as i32);
    let again = federation
        .find_involvements(peer_query("replay-0001", 7))
        .await
        .expect_err("a replay is refused");
    assert_eq!(again.code(), Code::AlreadyExists);
    assert_eq!(again.message(), "request id already answered");
    // A fresh id is answered as usual; real lookups use fresh ids too.
    federation
        .find_involvements(peer_query("replay-0002", 7))
        .await
        .expect("a fresh id is answered");
    pair.wait_answered().await;

    pair.surrey.node.stop().await;
    let refused = refusals(&audit_events(&pair.surrey.node));
    assert_eq!(
        refused,
        vec![(
            "replay-0001".to_owned(),
            "AlreadyExists: request id already answered".to_owned()
        )]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_request_is_not_decoded() {
    let pair = pair().await;
    let mut federation = pair.as_brighton().await;
    let mut query = peer_query("oversized-0001", 9);
    query.requester.as_mut().expect("requester").name = "x".repeat(100 * 1024);
    let refused = federation
        .find_involvements(query)
        .await
        .expect_err("a 100 KiB query is refused");
    assert_eq!(refused.code(), Code::OutOfRange, "{refused:?}");
    assert!(
        refused.message().contains("65536"),
        "the limit is named: {}",
        refused.message()
    );
    // The connection and the peer are fine afterwards.
    federation
        .find_involvements(peer_query("oversized-0002", 9))
        .await
        .expect("a normal query is answered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enumerating_peer_is_paused_alerted_and_audited() {
    let mut pair = pair().await;
    let mut federation = pair.as_brighton().await;
    // 51 queries that all miss: over 50 in the window, over 90 % misses.
    for i in 0..51u8 {
        let answer = federation
            .find_involvements(peer_query(&format!("enum-{i:04}"), i))
            .await
            .unwrap_or_else(|e| panic!("query {i} answered: {e:?}"))
            .into_inner();
        assert_eq!(answer.status, v1::MatchStatus::NoMatch as i32);
    }
    let paused = federation
        .find_involvements(peer_query("enum-0051", 200))
        .await
        .expect_err("the 52nd query is paused");
    assert_eq!(paused.code(), Code::ResourceExhausted);
    assert_eq!(
        paused.message(),
        "query pattern looks like enumeration; queries paused"
    );
    let (_, metrics) = pair.surrey.node.metrics().await;
    let line = format!(
        "patchwork_peer_enumeration_alerts_total{{peer=\"{}\"}} 1",
        pair.brighton_id
    );
    assert!(metrics.contains(&line), "{line} in:\n{metrics}");

    pair.surrey.node.stop().await;
    // A paused peer may go on asking at its rate: its refusals are counted
    // into one summary, not written one by one.
    let events = audit_events(&pair.surrey.node);
    assert!(refusals(&events).is_empty());
    let summaries: Vec<(String, u64)> = events
        .iter()
        .filter_map(|event| match event {
            patchwork_store::audit::AuditEvent::PeerRefusals { reason, count, .. } => {
                Some((reason.clone(), *count))
            }
            _ => None,
        })
        .collect();
    assert_eq!(summaries, vec![("paused_enumeration".to_owned(), 1)]);
}

/// Involvements Brighton holds for Amelia in the oversized-answer test: at
/// about 900 bytes each disclosed (every text field at its limit), their
/// answer is well over [`patchwork_federation::hostile::MAX_ANSWER_BYTES`].
const OVERSIZED_INVOLVEMENTS: usize = 1_500;

/// Gives Brighton's Amelia [`OVERSIZED_INVOLVEMENTS`] involvements with one
/// practitioner whose every contact field is as long as validation allows.
async fn seed_oversized(council: &Council) {
    let mut directory = council.node.directory(&council.portal).await;
    directory
        .create_organisation(v1::CreateOrganisationRequest {
            organisation: Some(organisation(
                "ORG-B",
                &"O".repeat(200),
                v1::Sector::SocialCare,
            )),
        })
        .await
        .expect("organisation");
    let mut wordy = practitioner("PR-B1", &"N".repeat(100), &"R".repeat(100), "ORG-B");
    wordy.team = "T".repeat(100);
    wordy.phone = "0".repeat(20);
    wordy.email = format!("{}@example.gov.uk", "e".repeat(230));
    directory
        .create_practitioner(v1::CreatePractitionerRequest {
            practitioner: Some(wordy),
        })
        .await
        .expect("practitioner");
    directory
        .create_person(v1::CreatePersonRequest {
            person: Some(patchwork_tests::person(
                "B-1",
                "Amelia",
                "Smith-Jones",
                date(2015, 3, 14),
                "9434765919",
            )),
        })
        .await
        .expect("person");
    let rows = (0..OVERSIZED_INVOLVEMENTS)
        .map(|n| {
            let mut row = involvement(
                "B-1",
                "PR-B1",
                &format!("{n:05}{}", "S".repeat(95)),
                v1::Sensitivity::Standard,
            );
            row.id = format!("INV-{n:05}");
            v1::ImportRow {
                line: n as u64 + 2,
                record: Some(v1::import_row::Record::Involvement(row)),
            }
        })
        .collect();
    let (sender, receiver) = tokio::sync::mpsc::channel(4);
    for item in [
        v1::import_request::Item::Header(v1::ImportHeader {
            kind: v1::RecordKind::Involvement as i32,
            source: "oversized.csv".into(),
            ..Default::default()
        }),
        v1::import_request::Item::Batch(v1::ImportBatch { rows }),
    ] {
        sender
            .send(v1::ImportRequest { item: Some(item) })
            .await
            .expect("queue");
    }
    drop(sender);
    let report = council
        .node
        .admin()
        .await
        .max_encoding_message_size(8 * 1024 * 1024)
        .import(tokio_stream::wrappers::ReceiverStream::new(receiver))
        .await
        .expect("import")
        .into_inner();
    assert!(report.applied, "{report:?}");
    assert_eq!(report.created, OVERSIZED_INVOLVEMENTS as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_answering_more_than_the_cap_fails_alone_and_is_named() {
    // Surrey asks Brighton (whose answer is too big) and Kent (a normal one).
    let ca = TestCa::new("england.patchwork");
    let listeners = [(); 3].map(|()| std::net::TcpListener::bind("127.0.0.1:0").expect("bind"));
    let [surrey_addr, brighton_addr, kent_addr] =
        [0, 1, 2].map(|i| listeners[i].local_addr().expect("addr"));
    let [surrey_listener, brighton_listener, kent_listener] = listeners.map(|listener| {
        listener.set_nonblocking(true).expect("nonblocking");
        TcpListener::from_std(listener).expect("tokio listener")
    });
    let id = |name: &str| {
        SpiffeId::node(ca.ca.trust_domain(), name)
            .expect("identity")
            .to_string()
    };
    let (surrey_id, brighton_id, kent_id) = (id("surrey"), id("brighton"), id("kent"));
    let surrey = start(
        &ca,
        "surrey",
        surrey_listener,
        federation_with_peers(&[
            (&brighton_id, "Brighton & Hove", brighton_addr),
            (&kent_id, "Kent", kent_addr),
        ]),
    )
    .await;
    let brighton = start(
        &ca,
        "brighton",
        brighton_listener,
        federation_with_peers(&[(&surrey_id, "Surrey", surrey_addr)]),
    )
    .await;
    let kent = start(
        &ca,
        "kent",
        kent_listener,
        federation_with_peers(&[(&surrey_id, "Surrey", surrey_addr)]),
    )
    .await;
    seed(&surrey, "ORG-S", "PR-S1", None).await;
    seed(&kent, "ORG-K", "PR-K1", Some("K-1")).await;
    seed_oversized(&brighton).await;

    const DEADLINE_MS: u32 = 3_000;
    let mut directory = surrey.node.directory(&surrey.portal).await;
    for attempt in 0..2 {
        let started = Instant::now();
        let response = directory
            .lookup(ask(DEADLINE_MS))
            .await
            .expect("the lookup answers whatever one peer sends")
            .into_inner();
        let elapsed = started.elapsed();
        assert!(
            elapsed < Duration::from_millis(u64::from(DEADLINE_MS)),
            "attempt {attempt}: in time, took {elapsed:?}"
        );
        let answer = |node_id: &str| {
            response
                .answers
                .iter()
                .find(|a| a.node_id == node_id)
                .unwrap_or_else(|| panic!("{node_id} is named: {response:?}"))
                .clone()
        };
        let too_big = answer(&brighton_id);
        eprintln!(
            "attempt {attempt}: Brighton {:?} in {elapsed:?}: {}",
            outcome(&too_big),
            too_big.detail
        );
        assert_eq!(
            outcome(&too_big),
            v1::NodeOutcome::Error,
            "attempt {attempt}: {too_big:?}"
        );
        assert!(
            too_big.detail.contains("decoded message length too large")
                && too_big.detail.contains(&format!(
                    "the limit is: {} bytes",
                    patchwork_federation::hostile::MAX_ANSWER_BYTES
                )),
            "attempt {attempt}: the detail says the answer was over the cap: {too_big:?}"
        );
        assert!(too_big.involvements.is_empty(), "nothing from Brighton");
        let kent_answer = answer(&kent_id);
        assert_eq!(
            outcome(&kent_answer),
            v1::NodeOutcome::Matched,
            "attempt {attempt}: Kent is unaffected: {kent_answer:?}"
        );
        assert_eq!(kent_answer.involvements.len(), 1);
    }
}
