//! What an operator watches: the standard gRPC health service (SERVING once
//! started, NOT_SERVING once shutdown is signalled), server reflection (on
//! by default, absent when `api.reflection = false`), and the Prometheus
//! metrics on their own plain-HTTP listener — request counts by method and
//! status code, per-peer outcomes of a federated lookup, rate-limit and TLS
//! refusals, certificate expiry and store gauges.

use std::time::Duration;

use patchwork_server::NodeConfig;
use patchwork_server::base::config::PeerEntry;

use patchwork_certs::SpiffeId;
use patchwork_tests::{
    ClientGrant, NodeOptions, TestCa, TestNode, date, eventually, federate, organisation, peer,
    practitioner, v1,
};
use tokio::net::TcpListener;
use tokio_stream::StreamExt;
use tonic::Code;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use tonic_reflection::pb::v1::{ServerReflectionRequest, ServerReflectionResponse};

const SECRET: &str = "5f1d3c0a9b8e7d6c5b4a39281706f5e4d3c2b1a09f8e7d6c5b4a392817060504";

fn check(service: &str) -> HealthCheckRequest {
    HealthCheckRequest {
        service: service.into(),
    }
}

/// The value of the one series named exactly `series` (name and labels).
fn value(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let (name, value) = line.rsplit_once(' ')?;
        (name == series).then(|| value.parse().ok())?
    })
}

#[tokio::test]
async fn health_is_serving_after_start_and_not_serving_once_shutdown_is_signalled() {
    let ca = TestCa::new("test.patchwork");
    let mut node = TestNode::start(&ca, "surrey", &[]).await;
    // Health answers any caller whose certificate the trust bundle accepts,
    // not only configured clients.
    let stranger = ca.client("monitoring");
    let channel = node.try_channel(&stranger).await.expect("connect");
    let mut health = HealthClient::new(channel);
    for service in [
        "",
        "patchwork.v1.Directory",
        "patchwork.v1.Admin",
        "patchwork.v1.Federation",
    ] {
        let status = health
            .check(check(service))
            .await
            .unwrap_or_else(|e| panic!("check {service:?}: {e}"))
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "{service:?}");
    }
    let unknown = health
        .check(check("patchwork.v1.Nothing"))
        .await
        .expect_err("unknown service");
    assert_eq!(unknown.code(), Code::NotFound);

    let mut watch = health.watch(check("")).await.expect("watch").into_inner();
    let first = watch.next().await.expect("a first status").expect("status");
    assert_eq!(first.status, ServingStatus::Serving as i32);

    node.signal_shutdown();
    let draining = tokio::time::timeout(Duration::from_secs(10), watch.next())
        .await
        .expect("a status within 10 s")
        .expect("a status once draining")
        .expect("status");
    assert_eq!(draining.status, ServingStatus::NotServing as i32);
    let end = tokio::time::timeout(Duration::from_secs(10), watch.next())
        .await
        .expect("the watch ends within 10 s");
    assert!(
        end.as_ref().is_none_or(|item| item.is_err()),
        "the watch stream ends so it cannot hold the drain open: {end:?}"
    );
    // The open watch did not keep the node from stopping.
    node.stop().await;
}

/// Lists services over v1 reflection as `client` would (grpcurl list).
async fn list_services(node: &TestNode) -> Result<Vec<String>, tonic::Status> {
    let channel = node.try_channel(&node.node_cert).await.expect("connect");
    let mut reflection = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = reflection
        .server_reflection_info(tokio_stream::iter([request]))
        .await?
        .into_inner();
    let response: ServerReflectionResponse =
        responses.next().await.expect("a reflection answer")?;
    match response.message_response {
        Some(MessageResponse::ListServicesResponse(list)) => {
            Ok(list.service.into_iter().map(|s| s.name).collect())
        }
        other => panic!("not a service list: {other:?}"),
    }
}

#[tokio::test]
async fn reflection_lists_the_api_when_on_and_is_absent_when_off() {
    let ca = TestCa::new("test.patchwork");
    let node = TestNode::start(&ca, "surrey", &[]).await;
    let services = list_services(&node).await.expect("reflection");
    for expected in [
        "patchwork.v1.Directory",
        "patchwork.v1.Admin",
        "patchwork.v1.Federation",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
    ] {
        assert!(
            services.iter().any(|s| s == expected),
            "{expected} missing from {services:?}"
        );
    }

    // A tool can fetch the descriptors, e.g. of the Directory service.
    let channel = node.try_channel(&node.node_cert).await.expect("connect");
    let mut reflection = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::FileContainingSymbol(
            "patchwork.v1.Directory".into(),
        )),
    };
    let answer = reflection
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("reflection")
        .into_inner()
        .next()
        .await
        .expect("an answer")
        .expect("descriptor");
    match answer.message_response {
        Some(MessageResponse::FileDescriptorResponse(files)) => {
            assert!(!files.file_descriptor_proto.is_empty())
        }
        other => panic!("not a descriptor: {other:?}"),
    }

    // v1alpha too, for older tools.
    let channel = node.try_channel(&node.node_cert).await.expect("connect");
    let mut alpha =
        tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient::new(
            channel,
        );
    let request = tonic_reflection::pb::v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest::ListServices(
                String::new(),
            ),
        ),
    };
    let answer = alpha
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("v1alpha reflection")
        .into_inner()
        .next()
        .await
        .expect("an answer")
        .expect("list");
    assert!(
        format!("{answer:?}").contains("patchwork.v1.Directory"),
        "{answer:?}"
    );

    let hidden = TestNode::start_with(
        &ca,
        "brighton",
        &[],
        NodeOptions::default().with(|config| config.api.reflection = false),
    )
    .await;
    let refused = list_services(&hidden).await.expect_err("no reflection");
    assert_eq!(refused.code(), Code::Unimplemented, "{refused:?}");
    // Health stays on.
    let channel = hidden
        .try_channel(&hidden.node_cert)
        .await
        .expect("connect");
    let status = HealthClient::new(channel)
        .check(check(""))
        .await
        .expect("health")
        .into_inner()
        .status;
    assert_eq!(status, ServingStatus::Serving as i32);
}

#[tokio::test]
async fn metrics_count_requests_by_method_and_code_and_show_expiry_and_store_gauges() {
    let ca = TestCa::new("test.patchwork");
    let portal = ca.client("portal");
    let node = TestNode::start(
        &ca,
        "surrey",
        &[ClientGrant {
            client: &portal,
            roles: &["records"],
        }],
    )
    .await;
    let mut directory = node.directory(&portal).await;
    directory
        .create_organisation(v1::CreateOrganisationRequest {
            organisation: Some(organisation(
                "ORG-1",
                "Surrey Children's Services",
                v1::Sector::SocialCare,
            )),
        })
        .await
        .expect("organisation");
    let mut bad = patchwork_tests::person("P-1", "Amelia", "Smith", date(2015, 3, 14), "");
    bad.date_of_birth = date(2015, 13, 40);
    let refused = directory
        .create_person(v1::CreatePersonRequest { person: Some(bad) })
        .await
        .expect_err("an impossible date");
    assert_eq!(refused.code(), Code::InvalidArgument);
    let denied = directory
        .get_organisation(v1::GetOrganisationRequest { id: "ORG-1".into() })
        .await;
    assert!(denied.is_ok(), "{denied:?}");

    let (status, metrics) = node.metrics().await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    let series = |method: &str, code: &str| {
        format!(
            "patchwork_grpc_requests_total{{service=\"patchwork.v1.Directory\",method=\"{method}\",code=\"{code}\"}}"
        )
    };
    assert_eq!(
        value(&metrics, &series("CreateOrganisation", "OK")),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        value(&metrics, &series("CreatePerson", "INVALID_ARGUMENT")),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        value(&metrics, &series("GetOrganisation", "OK")),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        value(&metrics, &series("CreatePerson", "OK")),
        None,
        "never happened"
    );
    assert_eq!(
        value(
            &metrics,
            "patchwork_grpc_request_duration_seconds_count{service=\"patchwork.v1.Directory\",method=\"CreatePerson\"}"
        ),
        Some(1.0),
        "{metrics}"
    );
    // OpenMetrics (prometheus-client): a counter's family is named without
    // `_total`, its series with it; the text ends with `# EOF`.
    assert!(metrics.contains("# HELP patchwork_grpc_requests "));
    assert!(metrics.ends_with("# EOF\n"), "{metrics}");
    assert!(metrics.contains("# TYPE patchwork_grpc_request_duration_seconds histogram"));

    // Expiry: the test CA lives two days, the node's certificate one.
    let node_id = node.identity.to_string();
    let own = value(
        &metrics,
        &format!("patchwork_tls_expiry_days{{kind=\"certificate\",name=\"{node_id}\"}}"),
    );
    assert_eq!(own, Some(0.0), "{metrics}");
    let ca_days = metrics
        .lines()
        .find(|l| l.starts_with("patchwork_tls_expiry_days{kind=\"ca\","))
        .unwrap_or_else(|| panic!("a CA expiry in {metrics}"));
    assert!(ca_days.ends_with(" 1"), "{ca_days}");

    assert_eq!(value(&metrics, "patchwork_serving"), Some(1.0));
    assert_eq!(
        value(&metrics, "patchwork_store_records{kind=\"organisations\"}"),
        Some(1.0)
    );
    assert_eq!(
        value(&metrics, "patchwork_store_records{kind=\"persons\"}"),
        Some(0.0),
        "the refused person was not written"
    );
    assert!(value(&metrics, "patchwork_store_size_bytes").is_some_and(|b| b > 0.0));
    assert!(value(&metrics, "patchwork_audit_entries").is_some());

    // A handshake with a certificate from a CA the node does not trust is
    // refused, and counted.
    let elsewhere = TestCa::new("elsewhere.patchwork");
    let refused = node.try_channel(&elsewhere.client("intruder")).await;
    if let Ok(channel) = refused {
        // TLS 1.3 can report the refusal on the first request instead.
        let mut admin = v1::admin_client::AdminClient::new(channel);
        assert!(admin.get_stats(v1::GetStatsRequest {}).await.is_err());
    }
    let counted = eventually(Duration::from_secs(10), || async {
        let (_, metrics) = node.metrics().await;
        value(
            &metrics,
            "patchwork_tls_handshakes_refused_total{reason=\"refused\"}",
        )
        .is_some_and(|n| n >= 1.0)
    })
    .await;
    assert!(counted, "handshake refusal not counted");

    // Only /metrics.
    let mut other = tokio::net::TcpStream::connect(node.metrics_addr)
        .await
        .expect("connect");
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    other
        .write_all(b"GET /secrets HTTP/1.1\r\n\r\n")
        .await
        .expect("send");
    let mut answer = String::new();
    other.read_to_string(&mut answer).await.expect("read");
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");

    // What Prometheus needs to parse it: the OpenMetrics media type.
    let mut scrape = tokio::net::TcpStream::connect(node.metrics_addr)
        .await
        .expect("connect");
    scrape
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: m\r\n\r\n")
        .await
        .expect("send");
    let mut answer = String::new();
    scrape.read_to_string(&mut answer).await.expect("read");
    let head = answer.split("\r\n\r\n").next().unwrap_or_default();
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/openmetrics-text; version=1.0.0; charset=utf-8"),
        "{head}"
    );
}

/// Federation with `peers`, whom this node gives 1.5 s.
fn federation(peers: Vec<PeerEntry>) -> impl FnOnce(&mut NodeConfig) + Send + 'static {
    move |config: &mut NodeConfig| {
        config.federation.default_deadline_ms = 1500;
        federate(config, peers);
    }
}

#[tokio::test]
async fn metrics_count_each_peers_outcome_and_rate_limit_refusals() {
    let ca = TestCa::new("test.patchwork");
    let surrey_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let brighton_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let (surrey_addr, brighton_addr) = (
        surrey_listener.local_addr().expect("addr"),
        brighton_listener.local_addr().expect("addr"),
    );
    // A configured peer nobody is listening for.
    let dead_addr = {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        listener.local_addr().expect("addr")
    };
    let id = |name: &str| {
        SpiffeId::node(ca.ca.trust_domain(), name)
            .expect("identity")
            .to_string()
    };
    let secrets = vec![("england.key".to_owned(), SECRET.to_owned())];
    let portal = ca.client("portal");
    let surrey = TestNode::start_with(
        &ca,
        "surrey",
        &[ClientGrant {
            client: &portal,
            roles: &["records", "lookup"],
        }],
        NodeOptions {
            listener: Some(surrey_listener),
            secret_files: secrets.clone(),
            ..Default::default()
        }
        .with(federation(vec![
            peer(id("brighton"), "Brighton", brighton_addr),
            peer(id("dead"), "Dead District", dead_addr),
        ])),
    )
    .await;
    // Brighton lets Surrey ask once a minute.
    let brighton = TestNode::start_with(
        &ca,
        "brighton",
        &[],
        NodeOptions {
            listener: Some(brighton_listener),
            secret_files: secrets,
            ..Default::default()
        }
        .with(federation(vec![PeerEntry {
            rate_limit_per_minute: 1,
            ..peer(id("surrey"), "Surrey", surrey_addr)
        }])),
    )
    .await;

    let mut directory = surrey.directory(&portal).await;
    directory
        .create_organisation(v1::CreateOrganisationRequest {
            organisation: Some(organisation(
                "ORG-S",
                "Surrey Children's Services",
                v1::Sector::SocialCare,
            )),
        })
        .await
        .expect("organisation");
    directory
        .create_practitioner(v1::CreatePractitionerRequest {
            practitioner: Some(practitioner("PR-1", "Sam Okafor", "Social worker", "ORG-S")),
        })
        .await
        .expect("practitioner");
    let subject = v1::Demographics {
        given_name: "Amelia".into(),
        family_name: "Smith-Jones".into(),
        date_of_birth: date(2015, 3, 14),
        postcode: "GU1 1AA".into(),
        national_id: None,
    };
    for _ in 0..2 {
        let mut request = patchwork_tests::lookup_request(subject.clone(), "PR-1");
        request.local_only = false;
        directory.lookup(request).await.expect("lookup");
    }

    let (_, metrics) = surrey.metrics().await;
    let outcome = |peer: &str, outcome: &str| {
        value(
            &metrics,
            &format!(
                "patchwork_peer_lookups_total{{peer=\"{}\",outcome=\"{outcome}\"}}",
                id(peer)
            ),
        )
    };
    assert_eq!(outcome("brighton", "no_match"), Some(1.0), "{metrics}");
    assert_eq!(
        outcome("brighton", "refused"),
        Some(1.0),
        "rate limited: {metrics}"
    );
    assert_eq!(outcome("brighton", "matched"), Some(0.0));
    assert_eq!(outcome("dead", "unreachable"), Some(2.0), "{metrics}");
    assert_eq!(
        value(
            &metrics,
            &format!(
                "patchwork_peer_call_duration_seconds_count{{peer=\"{}\"}}",
                id("brighton")
            )
        ),
        Some(2.0),
        "{metrics}"
    );
    assert_eq!(
        value(
            &metrics,
            "patchwork_grpc_requests_total{service=\"patchwork.v1.Directory\",method=\"Lookup\",code=\"OK\"}"
        ),
        Some(2.0)
    );
    assert!(
        !metrics.contains("Amelia") && !metrics.contains("Smith") && !metrics.contains("GU1"),
        "metrics never hold personal data"
    );

    let (_, answered) = brighton.metrics().await;
    assert_eq!(
        value(
            &answered,
            &format!(
                "patchwork_peer_rate_limited_total{{peer=\"{}\"}}",
                id("surrey")
            )
        ),
        Some(1.0),
        "{answered}"
    );
    let federation = |code: &str| {
        value(
            &answered,
            &format!(
                "patchwork_grpc_requests_total{{service=\"patchwork.v1.Federation\",method=\"FindInvolvements\",code=\"{code}\"}}"
            ),
        )
    };
    assert_eq!(federation("OK"), Some(1.0), "{answered}");
    assert_eq!(federation("RESOURCE_EXHAUSTED"), Some(1.0), "{answered}");
}

/// A scraper that holds connections open without asking, or sends a head
/// larger than any scrape needs, gets nothing and keeps nobody else from
/// the metrics for long: at most 8 scrapes at once (more are closed at
/// once), 5 s to send a request's head, 8 KiB of it at most.
#[tokio::test]
async fn the_metrics_endpoint_sheds_silent_and_oversized_scrapers() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let ca = TestCa::new("test.patchwork");
    let node = TestNode::start(&ca, "surrey", &[]).await;
    let connect = || tokio::net::TcpStream::connect(node.metrics_addr);
    let answer = |mut stream: tokio::net::TcpStream| async move {
        let mut text = String::new();
        let read = tokio::time::timeout(Duration::from_secs(20), stream.read_to_string(&mut text));
        let _ = read.await.expect("the endpoint closes within 20 s");
        text
    };

    let mut silent = Vec::new();
    for _ in 0..8 {
        silent.push(connect().await.expect("connect"));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Every slot taken: a ninth scraper is closed without an answer.
    let mut ninth = connect().await.expect("connect");
    let _ = ninth
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: m\r\n\r\n")
        .await;
    assert_eq!(
        answer(ninth).await,
        "",
        "no answer beyond 8 scrapes at once"
    );
    // The silent ones are closed once their 5 s are up, unanswered ...
    let started = std::time::Instant::now();
    for stream in silent {
        let closed = answer(stream).await;
        assert!(!closed.contains("patchwork_"), "{closed}");
    }
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    // ... and scrapes are answered again.
    let (status, metrics) = node.metrics().await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(metrics.contains("patchwork_serving 1"), "{metrics}");

    // A head of 64 KiB is refused, never buffered whole.
    let mut oversized = connect().await.expect("connect");
    let head = format!(
        "GET /metrics HTTP/1.1\r\nHost: m\r\nX-Filler: {}\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    let _ = oversized.write_all(head.as_bytes()).await;
    let refused = answer(oversized).await;
    assert!(
        refused.is_empty() || refused.starts_with("HTTP/1.1 431"),
        "{}",
        &refused[..refused.len().min(200)]
    );
}
