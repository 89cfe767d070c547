//! Connections an attacker holds open. Idle sockets without any certificate,
//! from many source addresses, must not lock a configured peer out of new
//! connections; a live connection must not outlive its CA's CRL; a
//! stranger's flood of `Health.Watch` streams is bounded.

use patchwork_server::base::config::PeerEntry;
use patchwork_server::base::config::TlsSection;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use patchwork_tests::flood::{
    CallFigures, IdleSocketFlood, WatchFlood, channel_from, loopback, resident_kib,
};
use patchwork_tests::{
    ClientCert, ClientGrant, NodeOptions, TRUST_DOMAIN, TestCa, TestNode, client_tls_config,
    eventually, federate, peer, refusal, v1,
};
use tonic::Code;

const SECRET: &str = "5f1d3c0a9b8e7d6c5b4a39281706f5e4d3c2b1a09f8e7d6c5b4a392817060504";

/// Where the genuine peer's connections come from: its configured address,
/// and not 127.0.0.1 (which the node favours as its own machine).
fn peer_source() -> IpAddr {
    loopback(18)
}

/// The attacker's 16 source addresses, 127.0.0.2-17.
fn attacker_sources() -> Vec<IpAddr> {
    (2..=17).map(loopback).collect()
}

/// Surrey, with Brighton as a configured peer whose address is
/// `peer_source()`, and `tls` made to its `[tls]` section.
async fn surrey_with_peer(
    ca: &TestCa,
    tls: impl FnOnce(&mut TlsSection) + Send + 'static,
) -> TestNode {
    let brighton = ca.node_cert("brighton");
    let brighton = PeerEntry {
        rate_limit_per_minute: 6000,
        ..peer(
            &brighton.identity,
            "Brighton & Hove",
            format!("{}:7443", peer_source()),
        )
    };
    TestNode::start_with(
        ca,
        "surrey",
        &[],
        NodeOptions {
            secret_files: vec![("england.key".into(), SECRET.into())],
            ..Default::default()
        }
        .with(|config| {
            federate(config, [brighton]);
            tls(&mut config.tls);
        }),
    )
    .await
}

/// A query as Brighton would send it, with keys that match nobody.
fn peer_query(request_id: String) -> v1::FindInvolvementsRequest {
    v1::FindInvolvementsRequest {
        request_id,
        key_set: "england".into(),
        match_keys: vec![v1::MatchKey {
            kind: v1::MatchKeyKind::NamesDob as i32,
            digest: vec![7; 32],
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

/// The genuine peer's calls, each over a new connection from its address:
/// NodeInfo, and every tenth time a FindInvolvements too (few enough that
/// the enumeration watch never pauses it).
async fn peer_calls(
    node: &TestNode,
    brighton: &ClientCert,
    label: &str,
    calls: usize,
    pace: Duration,
) -> CallFigures {
    let config = client_tls_config(brighton, &node.identity, &[node.ca_pem().to_owned()]);
    let mut figures = CallFigures::default();
    for i in 0..calls {
        let started = Instant::now();
        let outcome = peer_call(node, config.clone(), format!("{label}-{i:04}"), i % 10 == 0).await;
        figures.record(started.elapsed(), outcome);
        tokio::time::sleep(pace).await;
    }
    figures
}

async fn peer_call(
    node: &TestNode,
    config: Arc<rustls::ClientConfig>,
    request_id: String,
    find: bool,
) -> Result<(), String> {
    let channel = channel_from(peer_source(), node.addr, config, Duration::from_secs(5))
        .await
        .map_err(|e| format!("connect: {e:?}"))?;
    let mut federation = v1::federation_client::FederationClient::new(channel);
    federation
        .node_info(v1::NodeInfoRequest {})
        .await
        .map_err(|e| format!("node info: {e}"))?;
    if find {
        let answer = federation
            .find_involvements(peer_query(request_id))
            .await
            .map_err(|e| format!("find involvements: {e}"))?
            .into_inner();
        if answer.status != v1::MatchStatus::NoMatch as i32 {
            return Err(format!("unexpected answer {answer:?}"));
        }
    }
    Ok(())
}

/// `patchwork_tls_handshakes_refused_total{reason}` from the node's metrics.
async fn refused(node: &TestNode, reason: &str) -> u64 {
    let (_, body) = node.metrics().await;
    let prefix = format!("patchwork_tls_handshakes_refused_total{{reason=\"{reason}\"}} ");
    body.lines()
        .find_map(|line| line.strip_prefix(prefix.as_str()))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

/// The review's attack: 512 idle sockets from 16 addresses, renewed every
/// 10 s (and at once when the node closes one), took every handshake slot.
async fn idle_flood(node: &TestNode, per_source: usize) -> IdleSocketFlood {
    let sources = attacker_sources();
    let flood = IdleSocketFlood::start(
        node.addr,
        &sources,
        per_source,
        Duration::from_secs(10),
        Duration::from_millis(250),
    );
    let wanted = (sources.len() * per_source) as u64;
    assert!(
        eventually(Duration::from_secs(20), || async {
            flood
                .counts
                .connected
                .load(std::sync::atomic::Ordering::Relaxed)
                >= wanted
        })
        .await,
        "the flood connected its sockets"
    );
    flood
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sockets_from_sixteen_addresses_do_not_lock_a_peer_out() {
    let ca = TestCa::new("england.patchwork");
    let brighton = ca.node_cert("brighton");
    let mut node = surrey_with_peer(&ca, |_| {}).await;
    let pace = Duration::from_millis(50);

    let quiet = peer_calls(&node, &brighton, "quiet", 60, pace).await;
    assert!(quiet.failures.is_empty(), "{:?}", quiet.failures);

    let flood = idle_flood(&node, 32).await;
    // Long enough for idle sockets to be closed and renewed several times.
    let attacked = peer_calls(&node, &brighton, "attacked", 100, pace).await;
    let closed = flood
        .counts
        .closed_by_node
        .load(std::sync::atomic::Ordering::Relaxed);
    let (idle, per_source) = (
        refused(&node, "idle").await,
        refused(&node, "per_source_limit").await,
    );
    drop(flood);
    eprintln!(
        "genuine peer, new connection per call, no attack: {}",
        quiet.summary()
    );
    eprintln!(
        "genuine peer, new connection per call, 512 idle sockets from 16 addresses: {}",
        attacked.summary()
    );
    eprintln!(
        "attacker sockets closed by the node: {closed}; refused idle: {idle}, per source: {per_source}"
    );
    assert!(
        attacked.failures.is_empty(),
        "{} of {} calls failed during the flood, first: {:?}",
        attacked.failures.len(),
        attacked.calls(),
        attacked.failures.first()
    );
    assert!(idle > 0, "idle sockets are closed and counted");
    assert!(per_source > 0, "one source's share is bounded and counted");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_gets_a_reserved_slot_when_strangers_take_every_shared_one() {
    let ca = TestCa::new("england.patchwork");
    let brighton = ca.node_cert("brighton");
    // 48 shared slots, 4 per source: 16 attacker addresses want 64.
    let mut node = surrey_with_peer(&ca, |tls| {
        tls.max_handshakes = 64;
        tls.reserved_handshakes = 16;
        tls.max_handshakes_per_source = 4;
    })
    .await;
    let flood = idle_flood(&node, 8).await;
    assert!(
        eventually(Duration::from_secs(20), || async {
            refused(&node, "no_slot").await > 0
        })
        .await,
        "the strangers took every shared slot"
    );
    let attacked = peer_calls(&node, &brighton, "reserved", 40, Duration::from_millis(50)).await;
    drop(flood);
    eprintln!(
        "genuine peer while strangers hold every shared slot: {}",
        attacked.summary()
    );
    assert!(
        attacked.failures.is_empty(),
        "{} of {} calls failed, first: {:?}",
        attacked.failures.len(),
        attacked.calls(),
        attacked.failures.first()
    );
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_connection_is_refused_once_the_crl_expires_without_a_reload() {
    let ca = TestCa::new("england.patchwork");
    let admin = ca.client("admin");
    let revoked = ca.client("someone-else");
    // Long enough for the node to start and the first call to pass.
    let (crl, next_update) = ca.crl_until(&[&revoked], Duration::from_secs(6));
    let mut node = TestNode::start_with(
        &ca,
        "surrey",
        &[ClientGrant {
            client: &admin,
            roles: &["admin"],
        }],
        NodeOptions {
            crl: Some(crl),
            ..Default::default()
        },
    )
    .await;
    let mut live = v1::admin_client::AdminClient::new(
        node.try_channel(&admin)
            .await
            .expect("connect while the CRL is current"),
    );
    live.get_stats(v1::GetStatsRequest {})
        .await
        .expect("answered while the CRL is current");

    // No reload: only the clock moves past the CRL's nextUpdate.
    assert!(
        eventually(Duration::from_secs(20), || async {
            time::OffsetDateTime::now_utc() >= next_update
        })
        .await
    );
    let refused = live
        .get_stats(v1::GetStatsRequest {})
        .await
        .expect_err("the live connection's next request is refused");
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    assert!(
        refused.message().contains("no longer trusted"),
        "{}",
        refused.message()
    );
    // New connections are refused in the handshake (which, in TLS 1.3,
    // the client may see only at its first call).
    if let Ok(channel) = node.try_channel(&admin).await {
        let fresh = v1::admin_client::AdminClient::new(channel)
            .get_stats(v1::GetStatsRequest {})
            .await;
        assert!(fresh.is_err(), "a new connection is refused too");
    }
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_strangers_flood_of_health_watches_is_refused_beyond_its_share() {
    const CONNECTIONS: usize = 10;
    const PER_CONNECTION: usize = 200;
    let ca = TestCa::new("england.patchwork");
    let portal = ca.client("portal");
    // Trusted CA, configured nowhere: health answers it, nothing else does.
    let stranger = ca.client("stranger");
    let mut node = TestNode::start(
        &ca,
        "surrey",
        &[ClientGrant {
            client: &portal,
            roles: &["records"],
        }],
    )
    .await;
    let mut channels = Vec::new();
    for _ in 0..CONNECTIONS {
        channels.push(node.try_channel(&stranger).await.expect("connect"));
    }
    let before = resident_kib();
    let flood = WatchFlood::open(channels, PER_CONNECTION).await;
    let after = resident_kib();
    eprintln!(
        "{} health watches asked for over {CONNECTIONS} connections: {} open, refused {:?}; \
         test process RSS {before} KiB -> {after} KiB (+{} KiB)",
        CONNECTIONS * PER_CONNECTION,
        flood.open.len(),
        flood.refused,
        after.saturating_sub(before)
    );
    assert_eq!(flood.open.len(), 16, "api.max_health_watches_per_identity");
    assert_eq!(
        flood.refused.get("ResourceExhausted").copied(),
        Some(CONNECTIONS * PER_CONNECTION - 16),
        "{:?}",
        flood.refused
    );

    // The genuine client still works, its own watch included.
    let mut directory = node.directory(&portal).await;
    directory
        .create_organisation(v1::CreateOrganisationRequest {
            organisation: Some(patchwork_tests::organisation(
                "ORG-1",
                "Surrey Children's Services",
                v1::Sector::SocialCare,
            )),
        })
        .await
        .expect("a configured client is served during the flood");
    let own = WatchFlood::open(vec![node.try_channel(&portal).await.expect("connect")], 1).await;
    assert_eq!(own.open.len(), 1, "{:?}", own.refused);

    // Closing the stranger's streams gives its share back.
    drop(flood);
    let channel = node.try_channel(&stranger).await.expect("connect");
    assert!(
        eventually(Duration::from_secs(10), || {
            let channel = channel.clone();
            async move { WatchFlood::open(vec![channel], 1).await.open.len() == 1 }
        })
        .await,
        "the stranger's closed watches are given back"
    );
    node.stop().await;
}

/// Found by a review: idle connections from one host held every handshake
/// slot.
#[tokio::test]
async fn idle_connections_from_one_host_do_not_lock_everyone_else_out() {
    let ca = TestCa::new(TRUST_DOMAIN);
    let admin = ca.client("admin");
    let node = TestNode::start_with(
        &ca,
        "surrey",
        &[ClientGrant {
            client: &admin,
            roles: &["admin"],
        }],
        // Long enough that waiting for an idle handshake to time out would
        // fail the deadline below.
        NodeOptions::default().with(|config| config.tls.handshake_timeout_ms = 30_000),
    )
    .await;

    // More idle connections than the node has handshake slots, all from
    // 127.0.0.2, none of them ever saying hello.
    let mut idle = Vec::new();
    for _ in 0..600 {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind("127.0.0.2:0".parse().expect("addr"))
            .expect("bind 127.0.0.2");
        idle.push(socket.connect(node.addr).await.expect("connect"));
    }

    // A real client from 127.0.0.1 still gets in, and quickly.
    let started = Instant::now();
    assert_eq!(refusal(&node, &admin).await, None);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    drop(idle);
}
