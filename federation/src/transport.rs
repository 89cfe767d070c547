//! gRPC channels over our own TLS (tonic's cannot check CRLs or SPIFFE
//! identities): one long-lived HTTP/2 connection per peer, re-established by
//! tonic when it breaks, so a lookup never pays for a handshake.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tonic::transport::{Channel, Endpoint, Uri};

/// Dials TCP and runs our TLS handshake; tonic calls it for every (re)connect.
#[derive(Clone)]
struct TlsConnector {
    address: String,
    server_name: ServerName<'static>,
    config: Arc<rustls::ClientConfig>,
}

type TlsIo = hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;

impl tower::Service<Uri> for TlsConnector {
    type Response = TlsIo;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<TlsIo, std::io::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), std::io::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let tcp = TcpStream::connect(this.address.as_str()).await?;
            tcp.set_nodelay(true)?;
            let tls = tokio_rustls::TlsConnector::from(this.config)
                .connect(this.server_name, tcp)
                .await?;
            Ok(hyper_util::rt::TokioIo::new(tls))
        })
    }
}

fn endpoint(address: &str, connect_timeout: Duration) -> Result<Endpoint, tonic::transport::Error> {
    // The scheme is http because TLS is ours, not tonic's.
    Ok(Endpoint::from_shared(format!("http://{address}"))?
        .connect_timeout(connect_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(true))
}

/// Connects now (the first handshake happens here, and its refusal too).
pub async fn tls_channel(
    address: SocketAddr,
    server_name: ServerName<'static>,
    config: Arc<rustls::ClientConfig>,
    connect_timeout: Duration,
) -> Result<Channel, tonic::transport::Error> {
    endpoint(&address.to_string(), connect_timeout)?
        .connect_with_connector(TlsConnector {
            address: address.to_string(),
            server_name,
            config,
        })
        .await
}

/// A channel to "host:port" that connects on first use and reconnects when
/// the connection breaks. The host is the name the server's certificate must
/// carry.
pub fn lazy_tls_channel(
    address: &str,
    config: Arc<rustls::ClientConfig>,
    connect_timeout: Duration,
) -> Result<Channel, String> {
    let (host, _) = address
        .rsplit_once(':')
        .ok_or_else(|| format!("{address} is not host:port"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let server_name = ServerName::try_from(host.to_owned()).map_err(|e| format!("{host}: {e}"))?;
    let endpoint = endpoint(address, connect_timeout).map_err(|e| e.to_string())?;
    Ok(endpoint.connect_with_connector_lazy(TlsConnector {
        address: address.to_owned(),
        server_name,
        config,
    }))
}
