//! The multi-node test harness: real nodes (`patchwork_node::run`) on
//! pre-bound `127.0.0.1:0` listeners, real certificates minted per test by a
//! real CA, real TLS, real sled stores in temporary folders. Tests act as a
//! client would: over gRPC with a client certificate.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use patchwork_certs::{CaParams, CertificateAuthority, LeafParams, SpiffeId};
use patchwork_node::{NodeConfig, NodeError};
use patchwork_proto::v1::{admin_client::AdminClient, directory_client::DirectoryClient};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

pub use patchwork_proto::v1;

pub const TRUST_DOMAIN: &str = "test.patchwork";

/// A certificate and key a client presents.
#[derive(Clone)]
pub struct ClientCert {
    pub identity: SpiffeId,
    pub cert_pem: String,
    pub key_pem: String,
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

    fn node_cert(&self, name: &str) -> ClientCert {
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
    pub node_cert: ClientCert,
    ca_pem: String,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), NodeError>>>,
}

fn write_secret(path: &Path, contents: &str) {
    patchwork_node::quickstart::write_new_file(path, contents.as_bytes(), true)
        .expect("write secret");
}

impl TestNode {
    /// Starts a node named `name` that trusts `ca` for clients and lists `clients`.
    pub async fn start(ca: &TestCa, name: &str, clients: &[ClientGrant<'_>]) -> TestNode {
        let dir = tempfile::tempdir().expect("tempdir");
        let node_cert = ca.node_cert(name);
        std::fs::write(dir.path().join("node.crt"), &node_cert.cert_pem).expect("write cert");
        write_secret(&dir.path().join("node.key"), &node_cert.key_pem);
        std::fs::write(dir.path().join("ca.crt"), ca.ca.cert_pem()).expect("write ca");
        let client_lines: String = clients
            .iter()
            .map(|grant| {
                let roles: Vec<String> = grant.roles.iter().map(|r| format!("\"{r}\"")).collect();
                format!(
                    "  {{ identity = \"{}\", roles = [{}] }},\n",
                    grant.client.identity,
                    roles.join(", ")
                )
            })
            .collect();
        let config_path = dir.path().join("node.toml");
        let mut node = TestNode {
            config_path,
            addr: "127.0.0.1:1".parse().expect("addr"),
            node_cert,
            ca_pem: ca.ca.cert_pem().to_owned(),
            dir,
            shutdown: None,
            task: None,
        };
        node.write_config(name, &client_lines, 1);
        node.launch().await;
        node
    }

    fn write_config(&self, name: &str, client_lines: &str, port: u16) {
        let text = format!(
            r#"[node]
display_name = "{name} council"
data_dir = "data"

[tls]
cert_file = "node.crt"
key_file = "node.key"
client_ca_file = "ca.crt"

[api]
listen = "127.0.0.1:{port}"
clients = [
{client_lines}]
"#
        );
        std::fs::write(&self.config_path, text).expect("write config");
    }

    /// Binds a fresh port, records it in the config and runs the node.
    async fn launch(&mut self) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        self.addr = listener.local_addr().expect("addr");
        let text = std::fs::read_to_string(&self.config_path).expect("read config");
        let start = text.find("listen = \"127.0.0.1:").expect("listen line");
        let end = start + text[start..].find('\n').expect("line end");
        let text = format!(
            "{}listen = \"{}\"{}",
            &text[..start],
            self.addr,
            &text[end..]
        );
        std::fs::write(&self.config_path, text).expect("write config");
        let config = NodeConfig::load(&self.config_path).expect("config");
        let (sender, receiver) = oneshot::channel::<()>();
        self.shutdown = Some(sender);
        self.task = Some(tokio::spawn(patchwork_node::run(config, listener, async {
            let _ = receiver.await;
        })));
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

    pub fn config(&self) -> NodeConfig {
        NodeConfig::load(&self.config_path).expect("config")
    }

    pub async fn try_channel(
        &self,
        client: &ClientCert,
    ) -> Result<Channel, tonic::transport::Error> {
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca_pem))
            .identity(Identity::from_pem(&client.cert_pem, &client.key_pem))
            .domain_name("localhost");
        Endpoint::from_shared(format!("https://{}", self.addr))
            .expect("endpoint")
            .tls_config(tls)?
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
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
    }
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
