//! Attacker clients for hostile-peer tests, kept in the harness so later
//! work keeps them: a target council node with records, and callers holding
//! valid certificates — an agreed peer that also holds the shared match-key
//! secret, a stranger from a trusted CA with no agreement — that craft
//! `Federation` requests by hand the way the adversarial review did.

use patchwork_certs::SpiffeId;
use patchwork_federation::matchkeys::{Digest, KeySet, Subject, query_keys};
use patchwork_server::base::config::PeerEntry;
use patchwork_store::audit::AuditEvent;
use tonic::transport::Channel;

use crate::{
    ClientCert, ClientGrant, NodeOptions, TestCa, TestNode, date, involvement, organisation,
    practitioner, v1,
};

/// The key-set secret the target shares with its agreed peer (hex text, as
/// an operator's secret file holds it).
pub const SECRET: &str = "0c1d2e3f405162738495a6b7c8d9eafb0c1d2e3f405162738495a6b7c8d9eafb";
/// The key set's name.
pub const KEY_SET: &str = "england";

/// How the target starts.
pub struct TargetOptions {
    /// The agreed peer's queries a minute.
    pub rate_limit_per_minute: u32,
    /// Further changes to the target's config (e.g. enumeration thresholds).
    pub edits: Vec<crate::ConfigEdit>,
}

impl Default for TargetOptions {
    fn default() -> Self {
        TargetOptions {
            rate_limit_per_minute: 6000,
            edits: Vec::new(),
        }
    }
}

/// A council node ("surrey") holding records, with one agreed peer
/// ("melbourne", whose certificate and key-set secret the attacker holds).
pub struct Target {
    pub ca: TestCa,
    pub node: TestNode,
    /// A local client with the records role, to seed records.
    pub records: ClientCert,
    /// The agreed peer's node certificate.
    pub peer: ClientCert,
    /// The trusted CA's other node, with no agreement.
    pub stranger: ClientCert,
}

impl Target {
    pub async fn start(options: TargetOptions) -> Target {
        let ca = TestCa::new("england.patchwork");
        let records = ca.client("records");
        let peer = ca.node_cert("melbourne");
        let stranger = ca.node_cert("stranger");
        // The peer's address is never dialled: the target only answers.
        let melbourne = PeerEntry {
            rate_limit_per_minute: options.rate_limit_per_minute,
            ..crate::peer(&peer.identity, "Melbourne", "127.0.0.1:9")
        };
        let mut node_options = NodeOptions {
            secret_files: vec![(format!("{KEY_SET}.key"), SECRET.into())],
            edits: options.edits,
            ..Default::default()
        }
        .with(move |config| crate::federate(config, [melbourne]));
        // The peer first, then the test's own changes.
        node_options.edits.rotate_right(1);
        let node = TestNode::start_with(
            &ca,
            "surrey",
            &[ClientGrant {
                client: &records,
                roles: &["records", "lookup"],
            }],
            node_options,
        )
        .await;
        let target = Target {
            ca,
            node,
            records,
            peer,
            stranger,
        };
        let mut directory = target.node.directory(&target.records).await;
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
        for (id, name, role) in [
            ("PR-1", "Sam Okafor", "Child protection social worker"),
            ("PR-2", "Jo Clinic", "Sexual health nurse"),
        ] {
            directory
                .create_practitioner(v1::CreatePractitionerRequest {
                    practitioner: Some(practitioner(id, name, role, "ORG-1")),
                })
                .await
                .expect("practitioner");
        }
        target
    }

    /// The target's `Federation` service, called with `cert`.
    pub async fn federation_as(
        &self,
        cert: &ClientCert,
    ) -> v1::federation_client::FederationClient<Channel> {
        let channel = self.node.try_channel(cert).await.expect("connect");
        v1::federation_client::FederationClient::new(channel)
            .max_decoding_message_size(patchwork_federation::hostile::MAX_ANSWER_BYTES)
    }

    /// Adds a person (postcode `GU1 1AA`).
    pub async fn person(
        &self,
        id: &str,
        given: &str,
        family: &str,
        dob: (i32, i32, i32),
        nhs: &str,
    ) {
        self.node
            .directory(&self.records)
            .await
            .create_person(v1::CreatePersonRequest {
                person: Some(crate::person(
                    id,
                    given,
                    family,
                    date(dob.0, dob.1, dob.2),
                    nhs,
                )),
            })
            .await
            .expect("person");
    }

    /// Records `practitioner_id`'s involvement with `person_id`; `ended`
    /// gives it an end date in the past.
    pub async fn involve(
        &self,
        person_id: &str,
        practitioner_id: &str,
        sensitivity: v1::Sensitivity,
        ended: bool,
    ) {
        let mut directory = self.node.directory(&self.records).await;
        let recorded = directory
            .record_involvement(v1::RecordInvolvementRequest {
                involvement: Some(involvement(
                    person_id,
                    practitioner_id,
                    "Support",
                    sensitivity,
                )),
            })
            .await
            .expect("involvement")
            .into_inner();
        if ended {
            let id = recorded.id;
            directory
                .end_involvement(v1::EndInvolvementRequest {
                    id,
                    end_date: date(2024, 6, 1),
                    reason: String::new(),
                })
                .await
                .expect("end involvement");
        }
    }

    /// The target's audit entries, read from its store once it has stopped.
    pub async fn stopped_audit(&mut self) -> Vec<AuditEvent> {
        self.node.stop().await;
        audit_events(&self.node)
    }
}

/// Every audit entry of a stopped node's store, in order.
pub fn audit_events(node: &TestNode) -> Vec<AuditEvent> {
    let store = node.stopped_store();
    let len = store.audit_len().expect("audit length");
    (1..=len)
        .map(|i| store.audit_entry(i).expect("read").expect("entry").event)
        .collect()
}

/// The key set the target and its agreed peer share.
pub fn key_set() -> KeySet {
    let secret = hex::decode(SECRET).expect("hex secret");
    KeySet::new(KEY_SET, &secret).expect("key set")
}

/// A subject as the attacker knows it (postcode omitted when empty).
pub fn subject(given: &str, family: &str, dob: Option<(i32, u32, u32)>, postcode: &str) -> Subject {
    Subject {
        given_name: (!given.is_empty()).then(|| given.to_owned()),
        family_name: (!family.is_empty()).then(|| family.to_owned()),
        date_of_birth: dob,
        postcode: (!postcode.is_empty()).then(|| postcode.to_owned()),
        national_id: None,
    }
}

/// The keys an honest asking node would send for `subject`.
pub fn honest_keys(subject: &Subject) -> Vec<(v1::MatchKeyKind, Digest)> {
    query_keys(&key_set(), subject)
}

/// The keys of `subject` of one kind only.
pub fn keys_of_kind(subject: &Subject, kind: v1::MatchKeyKind) -> Vec<Digest> {
    honest_keys(subject)
        .into_iter()
        .filter(|(k, _)| *k == kind)
        .map(|(_, digest)| digest)
        .collect()
}

/// A `FindInvolvementsRequest` carrying exactly `keys`, labelled as given,
/// for a safeguarding purpose.
pub fn query(request_id: &str, keys: &[(v1::MatchKeyKind, Digest)]) -> v1::FindInvolvementsRequest {
    v1::FindInvolvementsRequest {
        request_id: request_id.into(),
        key_set: KEY_SET.into(),
        match_keys: keys
            .iter()
            .map(|(kind, digest)| v1::MatchKey {
                kind: *kind as i32,
                digest: digest.to_vec(),
                tokens: None,
            })
            .collect(),
        purpose: Some(v1::Purpose {
            lawful_basis: v1::LawfulBasis::ChildSafeguarding as i32,
            reason: "s.47 enquiry".into(),
        }),
        requester: Some(v1::Requester {
            practitioner_id: "PR-M1".into(),
            name: "Alex Example".into(),
            ..Default::default()
        }),
        national_id_scheme: "nhs".into(),
        include_family: false,
    }
}

/// A fresh request id per call.
pub fn request_id(n: usize) -> String {
    format!("attack-{n:06}")
}

/// The identity a node named `name` of `ca` has.
pub fn node_identity(ca: &TestCa, name: &str) -> SpiffeId {
    SpiffeId::node(ca.ca.trust_domain(), name).expect("identity")
}

/// A peer node run by an attacker: a real certificate from the trusted CA,
/// served over the node's own TLS acceptor, answering `Federation` however
/// the test wants. This one matches every subscription and then answers
/// every poll with "nothing for you, but there is more after the next
/// cursor", forever.
pub struct EvilPeer {
    pub addr: std::net::SocketAddr,
    pub cert: ClientCert,
    /// PollNotifications calls answered.
    pub polls: std::sync::Arc<std::sync::atomic::AtomicU64>,
    _stop: tokio::sync::oneshot::Sender<()>,
    _dir: tempfile::TempDir,
}

#[derive(Clone)]
struct AlwaysMore {
    polls: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

#[tonic::async_trait]
impl v1::federation_server::Federation for AlwaysMore {
    async fn find_involvements(
        &self,
        _: tonic::Request<v1::FindInvolvementsRequest>,
    ) -> Result<tonic::Response<v1::FindInvolvementsResponse>, tonic::Status> {
        Ok(tonic::Response::new(v1::FindInvolvementsResponse {
            status: v1::MatchStatus::NoMatch as i32,
            ..Default::default()
        }))
    }

    async fn subscribe(
        &self,
        _: tonic::Request<v1::SubscribeRequest>,
    ) -> Result<tonic::Response<v1::SubscribeResponse>, tonic::Status> {
        Ok(tonic::Response::new(v1::SubscribeResponse {
            subscription_id: "evil-subscription".into(),
            status: v1::MatchStatus::Matched as i32,
            expires_at_unix_seconds: 4_000_000_000,
            involvements: Vec::new(),
        }))
    }

    async fn poll_notifications(
        &self,
        request: tonic::Request<v1::PollRequest>,
    ) -> Result<tonic::Response<v1::PollResponse>, tonic::Status> {
        self.polls
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let after: u64 = request.get_ref().after_cursor.parse().unwrap_or(0);
        Ok(tonic::Response::new(v1::PollResponse {
            notifications: Vec::new(),
            next_cursor: (after + 1).to_string(),
        }))
    }

    async fn unsubscribe(
        &self,
        _: tonic::Request<v1::UnsubscribeRequest>,
    ) -> Result<tonic::Response<v1::UnsubscribeResponse>, tonic::Status> {
        Ok(tonic::Response::new(v1::UnsubscribeResponse {}))
    }

    async fn node_info(
        &self,
        _: tonic::Request<v1::NodeInfoRequest>,
    ) -> Result<tonic::Response<v1::NodeInfoResponse>, tonic::Status> {
        Ok(tonic::Response::new(v1::NodeInfoResponse::default()))
    }

    /// A checkpoint that is none: 15 KiB of text, a proof of a thousand
    /// hashes of the wrong length, and no key.
    async fn get_checkpoint(
        &self,
        _: tonic::Request<v1::GetCheckpointRequest>,
    ) -> Result<tonic::Response<v1::GetCheckpointResponse>, tonic::Status> {
        Ok(tonic::Response::new(v1::GetCheckpointResponse {
            checkpoint: "\u{2014} ".repeat(5_000),
            consistency_proof: vec![vec![0; 31]; 1_000],
            verifier_key: "evil+00000000+AA==".into(),
        }))
    }

    async fn add_cosignature(
        &self,
        _: tonic::Request<v1::AddCosignatureRequest>,
    ) -> Result<tonic::Response<v1::AddCosignatureResponse>, tonic::Status> {
        Ok(tonic::Response::new(v1::AddCosignatureResponse {}))
    }
}

impl EvilPeer {
    /// Starts the evil peer as node `name` of `ca`.
    pub async fn start(ca: &TestCa, name: &str) -> EvilPeer {
        let dir = tempfile::tempdir().expect("tempdir");
        let cert = ca.node_cert(name);
        let write = |file: &str, text: &str, secret: bool| {
            let path = dir.path().join(file);
            patchwork_cli::base::quickstart::write_new_file(&path, text.as_bytes(), secret)
                .expect("write");
            path
        };
        let section = patchwork_server::base::config::TlsSection::new(
            write("evil.crt", &cert.cert_pem, false),
            write("evil.key", &cert.key_pem, true),
            vec![write("ca.crt", ca.ca.cert_pem(), false)],
        );
        let material =
            patchwork_server::transport::tls::TlsMaterial::load(&section).expect("tls material");
        let section_for_limits = section.clone();
        let tls = std::sync::Arc::new(patchwork_server::transport::tls::TlsState::new(
            section, material,
        ));
        let metrics = std::sync::Arc::new(patchwork_server::transport::metrics::Metrics::new(
            Vec::new(),
        ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let limits = patchwork_server::transport::tls::HandshakeLimits::new(&section_for_limits);
        let (incoming, _accepting) = patchwork_server::transport::tls::accept_tls(
            listener,
            tls,
            limits,
            patchwork_server::transport::tls::PrioritySources::default(),
            metrics,
        );
        let polls = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(v1::federation_server::FederationServer::new(AlwaysMore {
                    polls: polls.clone(),
                }))
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = stopped.await;
                }),
        );
        EvilPeer {
            addr,
            cert,
            polls,
            _stop: stop,
            _dir: dir,
        }
    }
}
