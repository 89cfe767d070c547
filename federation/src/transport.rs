//! gRPC channels over our own TLS (tonic's cannot check CRLs or SPIFFE
//! identities): one long-lived HTTP/2 connection per peer, re-established by
//! tonic when it breaks, so a lookup never pays for a handshake.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use patchwork_certs::SpiffeId;

use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tonic::transport::{Channel, Endpoint, Uri};

/// The last TLS error on a channel's connections, and when it happened.
///
/// In TLS 1.3 a server checks the client's certificate after the client has finished its
/// side of the handshake, so a refusal (the server's alert, e.g. `CertificateRevoked`)
/// arrives on the first read, inside hyper, which reports only "connection closed" to the
/// call. The connection notes the error here so the caller can say who refused and why.
#[derive(Clone, Debug, Default)]
pub struct TlsErrors(Arc<Mutex<Option<(Instant, rustls::Error)>>>);

impl TlsErrors {
    fn note(&self, error: &std::io::Error) {
        if let Some(tls) = error
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            let mut last = self.0.lock();
            *last = Some((Instant::now(), tls.clone()));
        }
    }

    /// The last TLS error seen at or after `since`.
    pub fn since(&self, since: Instant) -> Option<rustls::Error> {
        let last = self.0.lock();
        last.as_ref()
            .filter(|(at, _)| *at >= since)
            .map(|(_, error)| error.clone())
    }
}

/// A TLS stream that notes its TLS errors in `TlsErrors`.
struct Watched<S> {
    inner: S,
    errors: TlsErrors,
}

impl<S> Watched<S> {
    fn noted<T>(&self, poll: Poll<std::io::Result<T>>) -> Poll<std::io::Result<T>> {
        if let Poll::Ready(Err(error)) = &poll {
            self.errors.note(error);
        }
        poll
    }
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        self.noted(poll)
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.noted(poll)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_flush(cx);
        self.noted(poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.noted(poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.noted(poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Dials TCP and runs our TLS handshake; tonic calls it for every (re)connect.
#[derive(Clone)]
struct TlsConnector {
    address: String,
    server_name: ServerName<'static>,
    config: Arc<rustls::ClientConfig>,
    errors: TlsErrors,
}

type TlsIo = hyper_util::rt::TokioIo<Watched<tokio_rustls::client::TlsStream<TcpStream>>>;

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
                .await
                .inspect_err(|error| this.errors.note(error))?;
            Ok(hyper_util::rt::TokioIo::new(Watched {
                inner: tls,
                errors: this.errors,
            }))
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
            errors: TlsErrors::default(),
        })
        .await
}

/// A channel to "host:port" that connects on first use and reconnects when
/// the connection breaks, and where its connections note their TLS errors. The
/// host is the name the server's certificate must carry.
pub fn lazy_tls_channel(
    address: &str,
    config: Arc<rustls::ClientConfig>,
    connect_timeout: Duration,
) -> Result<(Channel, TlsErrors), String> {
    let (host, _) = address
        .rsplit_once(':')
        .ok_or_else(|| format!("{address} is not host:port"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let server_name = ServerName::try_from(host.to_owned()).map_err(|e| format!("{host}: {e}"))?;
    let endpoint = endpoint(address, connect_timeout).map_err(|e| e.to_string())?;
    let errors = TlsErrors::default();
    let channel = endpoint.connect_with_connector_lazy(TlsConnector {
        address: address.to_owned(),
        server_name,
        config,
        errors: errors.clone(),
    });
    Ok((channel, errors))
}

/// One long-lived channel per peer, with where its connections note TLS
/// errors: made on first use, and made again once the TLS material it was
/// made with is replaced (the material's generation moved on).
#[derive(Debug, Default)]
pub struct PeerChannels {
    /// The material's generation, and each peer's channel made under it.
    channels: RwLock<(u64, ChannelMap)>,
}

type ChannelMap = HashMap<SpiffeId, (Channel, TlsErrors)>;

impl PeerChannels {
    /// The channel to `identity` at `address` under material `generation`;
    /// a new one uses `client_config` (for that peer, from that material)
    /// and connects within `connect_timeout` when first used.
    pub fn get(
        &self,
        identity: &SpiffeId,
        address: &str,
        generation: u64,
        client_config: impl FnOnce() -> Result<Arc<rustls::ClientConfig>, String>,
        connect_timeout: Duration,
    ) -> Result<(Channel, TlsErrors), String> {
        {
            let channels = self.channels.read();
            if channels.0 == generation
                && let Some(channel) = channels.1.get(identity)
            {
                return Ok(channel.clone());
            }
        }
        let channel = lazy_tls_channel(address, client_config()?, connect_timeout)?;
        let mut channels = self.channels.write();
        if channels.0 != generation {
            *channels = (generation, HashMap::new());
        }
        channels.1.insert(identity.clone(), channel.clone());
        Ok(channel)
    }

    /// A copy holding only the channels of the peers `keep` names (a
    /// reload's successor keeps those whose address did not change).
    pub fn kept(&self, keep: impl Fn(&SpiffeId) -> bool) -> PeerChannels {
        let (generation, channels) = &*self.channels.read();
        let kept = channels
            .iter()
            .filter(|(identity, _)| keep(identity))
            .map(|(identity, channel)| (identity.clone(), channel.clone()))
            .collect();
        PeerChannels {
            channels: RwLock::new((*generation, kept)),
        }
    }
}
