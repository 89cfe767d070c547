//! The multi-node test harness: real nodes (`patchwork_server::run`) on
//! pre-bound `127.0.0.1:0` listeners, real certificates minted per test by a
//! real CA, real TLS, real sled stores in temporary folders. Tests act as a
//! client would: over gRPC with a client certificate.
#![forbid(unsafe_code)]

pub mod attacker;
pub mod audit_files;
pub mod eavesdrop;
pub mod flood;
pub mod hardening;
pub mod proxy;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use std::sync::Arc;

use patchwork_certs::{
    CaParams, CertificateAuthority, LeafParams, OwnCertificate, SpiffeId, TrustBundle,
    certs_from_pem, private_key_from_pem,
};
use patchwork_proto::v1::{admin_client::AdminClient, directory_client::DirectoryClient};
use patchwork_server::base::config::{
    ApiSection, ClientEntry, KeySetEntry, NodeSection, PeerEntry, TlsSection,
};
use patchwork_server::{NodeConfig, NodeError};
use patchwork_store::model::{LawfulBasis, Sensitivity};
use rustls::pki_types::ServerName;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

pub use patchwork_proto::v1;

pub const TRUST_DOMAIN: &str = "test.patchwork";

/// A certificate and key a client presents.
#[derive(Clone)]
pub struct ClientCert {
    pub identity: SpiffeId,
    pub cert_pem: String,
    pub key_pem: String,
}

impl ClientCert {
    /// The certificate and key as rustls wants them.
    pub fn own(&self) -> OwnCertificate {
        let chain = certs_from_pem(self.cert_pem.as_bytes()).expect("certificate pem");
        let key = private_key_from_pem(self.key_pem.as_bytes()).expect("key pem");
        OwnCertificate::new(chain, key).expect("certificate and key belong together")
    }
}

/// A region's certificate authority for one test.
pub struct TestCa {
    pub ca: CertificateAuthority,
}

impl TestCa {
    pub fn new(trust_domain: &str) -> Self {
        patchwork_certs::install_crypto_provider();
        let ca = CertificateAuthority::generate(&CaParams {
            trust_domain: trust_domain.into(),
            display_name: format!("{trust_domain} test CA"),
            validity_days: 2,
        })
        .expect("generate test CA");
        TestCa { ca }
    }

    pub fn client(&self, name: &str) -> ClientCert {
        let identity = SpiffeId::client(self.ca.trust_domain(), name).expect("client identity");
        let issued = self
            .ca
            .issue(&LeafParams {
                identity: identity.clone(),
                dns_names: Vec::new(),
                ip_addresses: Vec::new(),
                validity_days: 1,
            })
            .expect("issue client certificate");
        ClientCert {
            identity,
            cert_pem: issued.cert_pem,
            key_pem: issued.key_pem,
        }
    }

    /// A leaf for something this CA's policy would never issue (refusal
    /// tests): starts from the policy's shape — client identity URI SAN,
    /// serverAuth + clientAuth, CA:FALSE, valid from an hour ago for a day —
    /// and lets `shape` change it, then signs it with this CA's key.
    pub fn custom_leaf(
        &self,
        name: &str,
        shape: impl FnOnce(&mut rcgen::CertificateParams),
    ) -> ClientCert {
        let identity = SpiffeId::client(self.ca.trust_domain(), name).expect("client identity");
        let mut params = rcgen::CertificateParams::default();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.subject_alt_names = vec![rcgen::SanType::URI(
            identity.to_string().try_into().expect("uri"),
        )];
        params.is_ca = rcgen::IsCa::ExplicitNoCa;
        params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + time::Duration::days(1);
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&rand_serial()));
        shape(&mut params);
        let key = rcgen::KeyPair::generate().expect("key");
        let ca_key = rcgen::KeyPair::from_pem(&self.ca.key_pem()).expect("ca key");
        let issuer = rcgen::Issuer::from_ca_cert_pem(self.ca.cert_pem(), ca_key).expect("issuer");
        let cert = params.signed_by(&key, &issuer).expect("sign");
        ClientCert {
            identity,
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    /// A CRL of this CA listing `revoked`, current for `valid_days` (negative:
    /// already expired).
    pub fn crl(&self, revoked: &[&ClientCert], valid_days: i64) -> String {
        let now = time::OffsetDateTime::now_utc();
        let entries: Vec<_> = revoked
            .iter()
            .map(|c| patchwork_certs::RevokedCertificate {
                serial_hex: c.serial_hex(),
                revoked_at: now - time::Duration::minutes(1),
                reason: patchwork_certs::RevocationReason::KeyCompromise,
            })
            .collect();
        let (this_update, next_update) = if valid_days >= 0 {
            (
                now - time::Duration::minutes(5),
                now + time::Duration::days(valid_days.max(1)),
            )
        } else {
            (
                now + time::Duration::days(valid_days - 1),
                now + time::Duration::days(valid_days),
            )
        };
        let number = u64::try_from(now.unix_timestamp()).expect("after 1970");
        self.ca
            .crl(&entries, number, this_update, next_update)
            .expect("crl")
    }

    /// A CRL of this CA listing `revoked` whose nextUpdate is `valid_for`
    /// from now (whole seconds), and that nextUpdate: for tests of a CRL
    /// expiring while the node runs.
    pub fn crl_until(
        &self,
        revoked: &[&ClientCert],
        valid_for: Duration,
    ) -> (String, time::OffsetDateTime) {
        let now = time::OffsetDateTime::now_utc();
        let entries: Vec<_> = revoked
            .iter()
            .map(|c| patchwork_certs::RevokedCertificate {
                serial_hex: c.serial_hex(),
                revoked_at: now - time::Duration::minutes(1),
                reason: patchwork_certs::RevocationReason::KeyCompromise,
            })
            .collect();
        let next_update = (now + valid_for)
            .replace_nanosecond(0)
            .expect("whole second");
        let number = u64::try_from(now.unix_timestamp()).expect("after 1970");
        let pem = self
            .ca
            .crl(
                &entries,
                number,
                now - time::Duration::minutes(5),
                next_update,
            )
            .expect("crl");
        (pem, next_update)
    }

    pub fn node_cert(&self, name: &str) -> ClientCert {
        let identity = SpiffeId::node(self.ca.trust_domain(), name).expect("node identity");
        let issued = self
            .ca
            .issue(&LeafParams {
                identity: identity.clone(),
                dns_names: vec!["localhost".into()],
                ip_addresses: vec!["127.0.0.1".parse().expect("ip")],
                validity_days: 1,
            })
            .expect("issue node certificate");
        ClientCert {
            identity,
            cert_pem: issued.cert_pem,
            key_pem: issued.key_pem,
        }
    }
}

fn rand_serial() -> [u8; 16] {
    let mut serial: [u8; 16] = std::array::from_fn(|i| (i as u8).wrapping_mul(37));
    let nanos = time::OffsetDateTime::now_utc()
        .unix_timestamp_nanos()
        .to_le_bytes();
    for (byte, noise) in serial.iter_mut().zip(nanos.iter().cycle()) {
        *byte ^= *noise;
    }
    serial[0] = (serial[0] & 0x7f) | 0x40;
    serial
}

impl ClientCert {
    pub fn serial_hex(&self) -> String {
        let der = certs_from_pem(self.cert_pem.as_bytes()).expect("pem");
        patchwork_certs::summarize_cert_der(der[0].as_ref())
            .expect("summary")
            .serial_hex
    }
}

/// A client's TLS config presenting `client`, trusting `trust` (CA PEMs)
/// and expecting the server to be `expected`. Built by hand rather than
/// with `client_config`, which checks our own certificate: refusal tests
/// present certificates no node would use.
pub fn client_tls_config(
    client: &ClientCert,
    expected: &SpiffeId,
    trust: &[String],
) -> Arc<rustls::ClientConfig> {
    let cas = trust
        .iter()
        .flat_map(|pem| certs_from_pem(pem.as_bytes()).expect("ca pem"))
        .collect();
    let bundle = TrustBundle::new(cas, Vec::new()).expect("bundle");
    let mut config =
        rustls::ClientConfig::builder_with_protocol_versions(&[&rustls::version::TLS13])
            .dangerous()
            .with_custom_certificate_verifier(
                bundle.server_verifier(expected.clone()).expect("verifier"),
            )
            .with_client_auth_cert(
                certs_from_pem(client.cert_pem.as_bytes()).expect("certificate pem"),
                private_key_from_pem(client.key_pem.as_bytes()).expect("key pem"),
            )
            .expect("client config");
    config.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(config)
}

/// A change to a test node's config, made on the typed value before it is
/// written (paths relative to the node's folder).
pub type ConfigEdit = Box<dyn FnOnce(&mut NodeConfig) + Send>;

/// What else a test node trusts, refuses or is configured with.
#[derive(Default)]
pub struct NodeOptions {
    /// Further CA certificates (PEM) in the trust bundle.
    pub extra_trust: Vec<String>,
    /// A CRL (PEM) to load at start.
    pub crl: Option<String>,
    /// A listener bound beforehand, so peers can be configured with this
    /// node's address before it starts.
    pub listener: Option<TcpListener>,
    /// Secret files to create next to the config (name, contents), mode 0600.
    pub secret_files: Vec<(String, String)>,
    /// Changes to the config, in order (see [`NodeOptions::with`]).
    pub edits: Vec<ConfigEdit>,
}

impl NodeOptions {
    /// These options, with `edit` made to the node's config, e.g.
    /// `.with(|c| c.tls.max_handshakes = 64)` or `.with(|c| federate(c, ...))`.
    pub fn with(mut self, edit: impl FnOnce(&mut NodeConfig) + Send + 'static) -> Self {
        self.edits.push(Box::new(edit));
        self
    }
}

/// An agreed peer at `address`, known as `identity` and `name`, on key set
/// [`attacker::KEY_SET`] ("england"): asked and answered for child
/// safeguarding, standard involvements disclosed, 600 queries a minute.
/// Change what a test needs with struct update syntax.
pub fn peer(identity: impl ToString, name: &str, address: impl ToString) -> PeerEntry {
    PeerEntry {
        identity: identity.to_string(),
        name: name.to_owned(),
        address: address.to_string(),
        key_set: attacker::KEY_SET.to_owned(),
        purposes: vec![LawfulBasis::ChildSafeguarding],
        sensitivities: vec![Sensitivity::Standard],
        rate_limit_per_minute: 600,
    }
}

/// Federates `config` with `peers`: adds each one's key set (its secret in
/// `<key set>.key` beside the config, which the test writes) unless the
/// config has it already, then the peers themselves.
pub fn federate(config: &mut NodeConfig, peers: impl IntoIterator<Item = PeerEntry>) {
    let federation = &mut config.federation;
    for peer in peers {
        if !federation
            .key_sets
            .iter()
            .any(|set| set.name == peer.key_set)
        {
            federation.key_sets.push(KeySetEntry {
                name: peer.key_set.clone(),
                secret_file: format!("{}.key", peer.key_set).into(),
            });
        }
        federation.peers.push(peer);
    }
}

/// A local client the node's config lists, with its roles.
pub struct ClientGrant<'a> {
    pub client: &'a ClientCert,
    pub roles: &'a [&'a str],
}

/// One running node and its folder.
pub struct TestNode {
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    pub addr: SocketAddr,
    /// Where the node serves `GET /metrics` (a fresh port each launch).
    pub metrics_addr: SocketAddr,
    pub node_cert: ClientCert,
    ca_pem: String,
    /// The identity clients expect the node to have.
    pub identity: SpiffeId,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), NodeError>>>,
}

fn write_secret(path: &Path, contents: &str) {
    patchwork_cli::base::quickstart::write_new_file(path, contents.as_bytes(), true)
        .expect("write secret");
}

impl TestNode {
    /// Starts a node named `name` that trusts `ca` for clients and lists `clients`.
    pub async fn start(ca: &TestCa, name: &str, clients: &[ClientGrant<'_>]) -> TestNode {
        Self::start_with(ca, name, clients, NodeOptions::default()).await
    }

    /// Starts a node with further trust material.
    pub async fn start_with(
        ca: &TestCa,
        name: &str,
        clients: &[ClientGrant<'_>],
        options: NodeOptions,
    ) -> TestNode {
        let dir = tempfile::tempdir().expect("tempdir");
        let node_cert = ca.node_cert(name);
        std::fs::write(dir.path().join("node.crt"), &node_cert.cert_pem).expect("write cert");
        write_secret(&dir.path().join("node.key"), &node_cert.key_pem);
        std::fs::write(dir.path().join("ca.crt"), ca.ca.cert_pem()).expect("write ca");
        let mut trust = vec![PathBuf::from("ca.crt")];
        for (i, pem) in options.extra_trust.iter().enumerate() {
            let file = format!("trust-{i}.crt");
            std::fs::write(dir.path().join(&file), pem).expect("write trust");
            trust.push(file.into());
        }
        let mut config = NodeConfig::new(
            NodeSection::new(format!("{name} council"), "data"),
            TlsSection::new("node.crt", "node.key", trust),
            // The port is the listener's, set at each launch.
            ApiSection::new("127.0.0.1:1".parse().expect("addr")),
        );
        if let Some(pem) = &options.crl {
            std::fs::write(dir.path().join("crl.pem"), pem).expect("write crl");
            config.tls.crl_files = vec!["crl.pem".into()];
        }
        config.api.clients = clients
            .iter()
            .map(|grant| ClientEntry {
                identity: grant.client.identity.to_string(),
                roles: grant
                    .roles
                    .iter()
                    .map(|role| role.parse().expect("a role"))
                    .collect(),
            })
            .collect();
        for edit in options.edits {
            edit(&mut config);
        }
        let config_path = dir.path().join("node.toml");
        std::fs::write(&config_path, config.to_toml().expect("toml")).expect("write config");
        let mut node = TestNode {
            config_path,
            addr: "127.0.0.1:1".parse().expect("addr"),
            metrics_addr: "127.0.0.1:1".parse().expect("addr"),
            identity: node_cert.identity.clone(),
            node_cert,
            ca_pem: ca.ca.cert_pem().to_owned(),
            dir,
            shutdown: None,
            task: None,
        };
        for (file, contents) in &options.secret_files {
            write_secret(&node.dir.path().join(file), contents);
        }
        node.launch_on(options.listener).await;
        node
    }

    /// Binds a fresh port, records it in the config and runs the node.
    async fn launch(&mut self) {
        self.launch_on(None).await;
    }

    /// Runs the node on `listener` (or a fresh port), recording its address.
    async fn launch_on(&mut self, listener: Option<TcpListener>) {
        let listener = match listener {
            Some(listener) => listener,
            None => TcpListener::bind("127.0.0.1:0").await.expect("bind"),
        };
        self.addr = listener.local_addr().expect("addr");
        let mut config = NodeConfig::load(&self.config_path).expect("config");
        config.api.listen = self.addr;
        std::fs::write(&self.config_path, config.to_toml().expect("toml")).expect("write config");
        let metrics = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        self.metrics_addr = metrics.local_addr().expect("addr");
        let listeners = patchwork_server::Listeners {
            api: listener,
            metrics: Some(metrics),
        };
        let (sender, receiver) = oneshot::channel::<()>();
        self.shutdown = Some(sender);
        self.task = Some(tokio::spawn(patchwork_server::run_with(
            config,
            listeners,
            async {
                let _ = receiver.await;
            },
        )));
        self.wait_ready().await;
    }

    /// Polls until the node answers, with a bounded deadline.
    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(channel) = self.try_channel(&self.node_cert).await {
                let mut admin = AdminClient::new(channel);
                if admin.get_stats(v1::GetStatsRequest {}).await.is_ok() {
                    return;
                }
            }
            if let Some(task) = &self.task {
                assert!(!task.is_finished(), "node stopped while starting");
            }
            assert!(Instant::now() < deadline, "node did not become ready");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Signals shutdown without waiting for the node to finish draining
    /// (`stop` waits).
    pub fn signal_shutdown(&mut self) {
        if let Some(sender) = self.shutdown.take() {
            let _ = sender.send(());
        }
    }

    /// `GET /metrics` over plain HTTP: the status line and the body.
    pub async fn metrics(&self) -> (String, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(self.metrics_addr)
            .await
            .expect("connect to metrics");
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await
            .expect("send");
        let mut response = String::new();
        tokio::time::timeout(
            Duration::from_secs(10),
            stream.read_to_string(&mut response),
        )
        .await
        .expect("metrics answer within 10 s")
        .expect("read");
        let (head, body) = response.split_once("\r\n\r\n").expect("http response");
        let status = head.lines().next().unwrap_or_default().to_owned();
        (status, body.to_owned())
    }

    /// Stops the node gracefully and waits for it to finish.
    pub async fn stop(&mut self) {
        if let Some(sender) = self.shutdown.take() {
            let _ = sender.send(());
        }
        if let Some(task) = self.task.take() {
            let result = tokio::time::timeout(Duration::from_secs(20), task)
                .await
                .expect("node stops within 20 s")
                .expect("node task");
            result.expect("node ran cleanly");
        }
    }

    pub async fn restart(&mut self) {
        self.stop().await;
        self.launch().await;
    }

    /// Stops the node and starts it again on the same address, so peers
    /// configured with it still reach it.
    pub async fn restart_in_place(&mut self) {
        self.stop().await;
        let listener = TcpListener::bind(self.addr)
            .await
            .expect("bind the node's own address again");
        self.launch_on(Some(listener)).await;
    }

    /// Starts a stopped node again on a fresh port, with its folder and
    /// config as they are now (e.g. after restoring a backup into it).
    pub async fn start_again(&mut self) {
        assert!(self.task.is_none(), "start_again needs a stopped node");
        self.launch().await;
    }

    pub fn config(&self) -> NodeConfig {
        NodeConfig::load(&self.config_path).expect("config")
    }

    /// Changes the config file (typed), e.g. before a reload or a restart.
    pub fn edit_config(&self, edit: impl FnOnce(&mut NodeConfig)) {
        let mut config = self.config();
        edit(&mut config);
        std::fs::write(&self.config_path, config.to_toml().expect("toml")).expect("write config");
    }

    /// The store of this node once it has stopped (waits up to 10 s for the
    /// lock the node held to be released).
    pub fn stopped_store(&self) -> patchwork_store::Store {
        let path = self.dir.path().join("data/store");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match patchwork_store::Store::open(&path, &Default::default()) {
                Ok(store) => return store,
                Err(error) => {
                    assert!(
                        Instant::now() < deadline,
                        "the stopped node's store stays locked: {error}"
                    );
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
    }

    /// Connects as `client`, trusting the node's CA and expecting the node's
    /// identity. Handshake refusals surface here.
    pub async fn try_channel(
        &self,
        client: &ClientCert,
    ) -> Result<Channel, tonic::transport::Error> {
        self.channel_expecting(client, &self.identity, std::slice::from_ref(&self.ca_pem))
            .await
    }

    /// Connects as `client`, trusting `trust` (CA PEMs) and expecting the
    /// server to be `expected`.
    pub async fn channel_expecting(
        &self,
        client: &ClientCert,
        expected: &SpiffeId,
        trust: &[String],
    ) -> Result<Channel, tonic::transport::Error> {
        patchwork_cli::work::client::tls_channel(
            self.addr,
            ServerName::try_from("localhost").expect("name"),
            client_tls_config(client, expected, trust),
            Duration::from_secs(5),
        )
        .await
    }

    /// The node's CA certificate (PEM), which its clients trust.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// Replaces a file the node reads, atomically (as an operator should).
    pub fn replace_file(&self, name: &str, contents: &str, secret: bool) {
        let temp = self.dir.path().join(format!("{name}.new"));
        let _ = std::fs::remove_file(&temp);
        patchwork_cli::base::quickstart::write_new_file(&temp, contents.as_bytes(), secret)
            .expect("write");
        std::fs::rename(&temp, self.dir.path().join(name)).expect("rename");
    }

    /// Asks the node to reload its TLS material, as the node itself.
    pub async fn reload(&self) -> Result<v1::ReloadResponse, tonic::Status> {
        self.admin()
            .await
            .reload(v1::ReloadRequest {})
            .await
            .map(|r| r.into_inner())
    }

    pub async fn directory(&self, client: &ClientCert) -> DirectoryClient<Channel> {
        DirectoryClient::new(self.try_channel(client).await.expect("connect"))
    }

    /// The admin service, called as the node itself (as the CLI does).
    pub async fn admin(&self) -> AdminClient<Channel> {
        AdminClient::new(self.try_channel(&self.node_cert).await.expect("connect"))
    }

    pub async fn stats(&self) -> v1::Stats {
        self.admin()
            .await
            .get_stats(v1::GetStatsRequest {})
            .await
            .expect("stats")
            .into_inner()
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        if let Some(sender) = self.shutdown.take() {
            let _ = sender.send(());
        }
    }
}

// ------------------------------------------------------------ fixtures

pub fn date(year: i32, month: i32, day: i32) -> Option<v1::Date> {
    Some(v1::Date { year, month, day })
}

pub fn organisation(id: &str, name: &str, sector: v1::Sector) -> v1::Organisation {
    v1::Organisation {
        id: id.into(),
        name: name.into(),
        sector: sector as i32,
    }
}

pub fn practitioner(id: &str, name: &str, role: &str, organisation_id: &str) -> v1::Practitioner {
    v1::Practitioner {
        id: id.into(),
        name: name.into(),
        role: role.into(),
        team: "Team A".into(),
        organisation_id: organisation_id.into(),
        phone: "01483 555 0100".into(),
        email: format!("{}@example.gov.uk", id.to_lowercase()),
    }
}

pub fn person(id: &str, given: &str, family: &str, dob: Option<v1::Date>, nhs: &str) -> v1::Person {
    v1::Person {
        id: id.into(),
        given_name: given.into(),
        family_name: family.into(),
        date_of_birth: dob,
        postcode: "GU1 1AA".into(),
        address: "1 High Street, Guildford".into(),
        national_id: (!nhs.is_empty()).then(|| v1::NationalId {
            scheme: "nhs".into(),
            value: nhs.into(),
        }),
    }
}

pub fn involvement(
    person_id: &str,
    practitioner_id: &str,
    service: &str,
    sensitivity: v1::Sensitivity,
) -> v1::Involvement {
    v1::Involvement {
        person_id: person_id.into(),
        practitioner_id: practitioner_id.into(),
        service: service.into(),
        start_date: date(2024, 1, 15),
        sensitivity: sensitivity as i32,
        gatekeeper: (sensitivity == v1::Sensitivity::Restricted).then(|| v1::Contact {
            name: "Clinic duty line".into(),
            phone: "0800 555 0199".into(),
            email: String::new(),
        }),
        ..Default::default()
    }
}

pub fn lookup_request(subject: v1::Demographics, practitioner_id: &str) -> v1::LookupRequest {
    v1::LookupRequest {
        subject: Some(subject),
        purpose: Some(v1::Purpose {
            lawful_basis: v1::LawfulBasis::ChildSafeguarding as i32,
            reason: "s.47 enquiry after a school referral".into(),
        }),
        requester: Some(v1::Requester {
            practitioner_id: practitioner_id.into(),
            ..Default::default()
        }),
        local_only: true,
        peer_deadline_ms: 0,
        include_family: false,
    }
}

/// Connects as `client` and makes one call; returns how it was refused (the
/// error chain of the transport error, or the status), or None if it worked.
/// With TLS 1.3 the server judges the client's certificate after the
/// client's side of the handshake is done, so a refusal can surface at
/// connect or at the first call.
pub async fn refusal(node: &TestNode, client: &ClientCert) -> Option<String> {
    use patchwork_cli::work::client::error_chain;
    let channel = match node.try_channel(client).await {
        Ok(channel) => channel,
        Err(error) => return Some(error_chain(&error)),
    };
    match AdminClient::new(channel)
        .get_trust_status(v1::GetTrustStatusRequest {})
        .await
    {
        Ok(_) => None,
        Err(status) => {
            let cause = std::error::Error::source(&status)
                .map(error_chain)
                .unwrap_or_default();
            Some(format!("{:?}: {} {cause}", status.code(), status.message()))
        }
    }
}

/// Records a test starts from, created in this order through the node's
/// `Directory` API, as a case system would.
#[derive(Debug, Clone, Default)]
pub struct Records {
    pub organisations: Vec<v1::Organisation>,
    pub practitioners: Vec<v1::Practitioner>,
    pub persons: Vec<v1::Person>,
    pub involvements: Vec<v1::Involvement>,
}

impl Records {
    /// One social-care organisation `id` named `name`, and its
    /// `practitioners` (id, name, role).
    pub fn team(id: &str, name: &str, practitioners: &[(&str, &str, &str)]) -> Records {
        Records {
            organisations: vec![organisation(id, name, v1::Sector::SocialCare)],
            practitioners: practitioners
                .iter()
                .map(|(person, name, role)| practitioner(person, name, role, id))
                .collect(),
            ..Records::default()
        }
    }
}

/// Creates `records` on `node` as `client` (which needs the records role);
/// returns the involvements as recorded (with their ids), in order.
pub async fn seed(node: &TestNode, client: &ClientCert, records: Records) -> Vec<v1::Involvement> {
    let mut directory = node.directory(client).await;
    for organisation in records.organisations {
        directory
            .create_organisation(v1::CreateOrganisationRequest {
                organisation: Some(organisation),
            })
            .await
            .expect("organisation");
    }
    for practitioner in records.practitioners {
        directory
            .create_practitioner(v1::CreatePractitionerRequest {
                practitioner: Some(practitioner),
            })
            .await
            .expect("practitioner");
    }
    for person in records.persons {
        directory
            .create_person(v1::CreatePersonRequest {
                person: Some(person),
            })
            .await
            .expect("person");
    }
    let mut recorded = Vec::new();
    for involvement in records.involvements {
        let reply = directory
            .record_involvement(v1::RecordInvolvementRequest {
                involvement: Some(involvement),
            })
            .await
            .expect("involvement")
            .into_inner();
        recorded.push(reply);
    }
    recorded
}

// ------------------------------------------------------------ two councils

/// Federation with one peer, the node `peer.0` of `ca`'s domain at
/// `peer.1`, on key set "england" (secret file `england.key`), agreed for
/// `purposes` and standard involvements at `rate` queries a minute, peers
/// given 3 s.
pub fn england_federation(
    ca: &TestCa,
    peer: (&str, SocketAddr),
    purposes: &[LawfulBasis],
    rate: u32,
) -> impl FnOnce(&mut NodeConfig) + Send + 'static {
    let identity = SpiffeId::node(ca.ca.trust_domain(), peer.0).expect("id");
    let entry = PeerEntry {
        purposes: purposes.to_vec(),
        rate_limit_per_minute: rate,
        ..self::peer(identity, peer.0, peer.1)
    };
    move |config: &mut NodeConfig| {
        config.federation.default_deadline_ms = 3000;
        federate(config, [entry]);
    }
}

/// A council node `name` on `listener` with `federation` (see
/// [`england_federation`]) and the key set's `secret`, serving `ca`'s
/// "portal" client with the records and lookup roles.
pub async fn start_council(
    ca: &TestCa,
    name: &str,
    listener: TcpListener,
    federation: impl FnOnce(&mut NodeConfig) + Send + 'static,
    secret: &str,
) -> TestNode {
    let portal = ca.client("portal");
    TestNode::start_with(
        ca,
        name,
        &[ClientGrant {
            client: &portal,
            roles: &["records", "lookup"],
        }],
        NodeOptions {
            listener: Some(listener),
            secret_files: vec![("england.key".into(), secret.into())],
            ..Default::default()
        }
        .with(federation),
    )
    .await
}

/// An organisation `org` with one social worker, `practitioner_id`.
pub async fn seed_team(node: &TestNode, portal: &ClientCert, org: &str, practitioner_id: &str) {
    let team = Records::team(org, org, &[(practitioner_id, "Jo Patel", "Social worker")]);
    seed(node, portal, team).await;
}

/// The child the cross-border tests look for: Amelia Smith-Jones, born
/// 14 March 2015, NHS number 9434765919, no postcode.
pub fn amelia() -> v1::Demographics {
    v1::Demographics {
        given_name: "Amelia".into(),
        family_name: "Smith-Jones".into(),
        date_of_birth: date(2015, 3, 14),
        postcode: String::new(),
        national_id: Some(v1::NationalId {
            scheme: "nhs".into(),
            value: "9434765919".into(),
        }),
    }
}

/// Amelia held as person `P-1`, with `practitioner_id` working with her in
/// children's social care.
pub async fn seed_amelia(node: &TestNode, portal: &ClientCert, practitioner_id: &str) {
    let mut child = person(
        "P-1",
        "Amelia",
        "Smith-Jones",
        date(2015, 3, 14),
        "9434765919",
    );
    child.postcode = String::new();
    let records = Records {
        persons: vec![child],
        involvements: vec![involvement(
            "P-1",
            practitioner_id,
            "Children's social care",
            v1::Sensitivity::Standard,
        )],
        ..Records::default()
    };
    seed(node, portal, records).await;
}

/// `asking`'s child-safeguarding lookup of Amelia by `practitioner_id`:
/// the answer of the node whose id ends with `/node/{name}`.
pub async fn answer_about_amelia(
    asking: &TestNode,
    portal: &ClientCert,
    practitioner_id: &str,
    name: &str,
) -> v1::NodeAnswer {
    let mut request = lookup_request(amelia(), practitioner_id);
    request.local_only = false;
    let response = asking
        .directory(portal)
        .await
        .lookup(request)
        .await
        .expect("lookup")
        .into_inner();
    let suffix = format!("/node/{name}");
    response
        .answers
        .into_iter()
        .find(|a| a.node_id.ends_with(&suffix))
        .unwrap_or_else(|| panic!("no answer from {name}"))
}

/// Polls `check` until it holds or `timeout` passes (no sleeps as
/// synchronisation).
pub async fn eventually<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}
