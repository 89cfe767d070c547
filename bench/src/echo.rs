//! The baseline: a bare tonic unary echo (a ~200-byte reply) served over the
//! node's own TLS acceptor (`patchwork_server::transport::tls::accept_tls`) and called
//! over the federation connector (`patchwork_federation::transport`), so it
//! pays exactly the TLS the node pays and nothing else.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use patchwork_certs::{MinTlsVersion, SpiffeId, TrustBundle, certs_from_pem};
use patchwork_server::base::config::TlsSection;
use patchwork_server::transport::metrics::Metrics;
use patchwork_server::transport::tls::{
    HandshakeLimits, PrioritySources, TlsMaterial, TlsState, accept_tls,
};
use patchwork_tests::{ClientCert, TestCa};
use rustls::pki_types::ServerName;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tonic::transport::Channel;

/// Bytes in every echo reply (about a lookup answer's size).
pub(crate) const REPLY_BYTES: usize = 200;
const PATH: &str = "/bench.Echo/Echo";

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct EchoMessage {
    #[prost(bytes = "vec", tag = "1")]
    pub(crate) payload: Vec<u8>,
}

#[derive(Clone)]
struct EchoServer;

struct EchoCall;

impl tonic::server::UnaryService<EchoMessage> for EchoCall {
    type Response = EchoMessage;
    type Future = std::future::Ready<Result<tonic::Response<EchoMessage>, tonic::Status>>;

    fn call(&mut self, _request: tonic::Request<EchoMessage>) -> Self::Future {
        std::future::ready(Ok(tonic::Response::new(EchoMessage {
            payload: vec![b'x'; REPLY_BYTES],
        })))
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = Result<T, Infallible>> + Send>>;

impl<B> tower::Service<http::Request<B>> for EchoServer
where
    B: http_body::Body + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::<
                EchoMessage,
                EchoMessage,
            >::default());
            Ok(grpc.unary(EchoCall, request).await)
        })
    }
}

impl tonic::server::NamedService for EchoServer {
    const NAME: &'static str = "bench.Echo";
}

/// One running echo server; stops when dropped.
pub(crate) struct Echo {
    pub(crate) addr: SocketAddr,
    pub(crate) identity: SpiffeId,
    pub(crate) metrics: Arc<Metrics>,
    _stop: oneshot::Sender<()>,
    _dir: tempfile::TempDir,
}

/// Starts an echo server with a node certificate from `ca`, on the node's
/// acceptor and with the node's per-connection concurrency limit.
pub(crate) async fn start(ca: &TestCa, name: &str) -> anyhow::Result<Echo> {
    let dir = tempfile::tempdir()?;
    let cert = ca.node_cert(name);
    let write = |file: &str, text: &str, secret: bool| -> anyhow::Result<std::path::PathBuf> {
        let path = dir.path().join(file);
        patchwork_cli::base::quickstart::write_new_file(&path, text.as_bytes(), secret)?;
        Ok(path)
    };
    let section = TlsSection::new(
        write("echo.crt", &cert.cert_pem, false)?,
        write("echo.key", &cert.key_pem, true)?,
        vec![write("ca.crt", ca.ca.cert_pem(), false)?],
    );
    let material = TlsMaterial::load(&section)?;
    let limits = HandshakeLimits::new(&section);
    let tls = Arc::new(TlsState::new(section, material));
    let metrics = Arc::new(Metrics::new(Vec::new()));
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (incoming, _accepting) = accept_tls(
        listener,
        tls,
        limits,
        PrioritySources::default(),
        metrics.clone(),
    );
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(
        tonic::transport::Server::builder()
            .concurrency_limit_per_connection(256)
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .http2_keepalive_timeout(Some(Duration::from_secs(10)))
            .add_service(EchoServer)
            .serve_with_incoming_shutdown(incoming, async {
                let _ = stopped.await;
            }),
    );
    Ok(Echo {
        addr,
        identity: cert.identity,
        metrics,
        _stop: stop,
        _dir: dir,
    })
}

/// A client channel to `echo` as `client`, over the federation connector.
pub(crate) async fn channel(
    echo: &Echo,
    client: &ClientCert,
    ca: &TestCa,
) -> anyhow::Result<Channel> {
    let bundle = TrustBundle::new(certs_from_pem(ca.ca.cert_pem().as_bytes())?, Vec::new())?;
    let config = patchwork_certs::client_config(
        &client.own(),
        &bundle,
        echo.identity.clone(),
        MinTlsVersion::Tls13,
    )?;
    Ok(patchwork_federation::transport::tls_channel(
        echo.addr,
        ServerName::try_from("localhost")?,
        Arc::new(config),
        Duration::from_secs(5),
    )
    .await?)
}

/// One echo call (a 200-byte request, like a lookup's).
pub(crate) async fn call(channel: Channel) -> Result<(), tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    grpc.unary::<EchoMessage, EchoMessage, _>(
        tonic::Request::new(EchoMessage {
            payload: vec![b'q'; REPLY_BYTES],
        }),
        http::uri::PathAndQuery::from_static(PATH),
        tonic_prost::ProstCodec::default(),
    )
    .await
    .map(|_| ())
}
