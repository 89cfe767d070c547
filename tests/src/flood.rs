//! Attackers that hold a node's connections open, and the measuring stick
//! for a genuine caller meanwhile: idle TCP sockets from many loopback
//! source addresses (Linux routes all of 127.0.0.0/8 to `lo`, so a test can
//! bind 127.0.0.2, 127.0.0.3, ...), a connection from a chosen source
//! address, latency figures, and the process's resident memory.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinSet;
use tonic::transport::{Channel, Endpoint, Uri};

/// `127.0.0.<n>`.
pub fn loopback(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, n))
}

/// A TCP connection to `target` from `source` (any free port).
pub async fn connect_from(source: IpAddr, target: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = match source {
        IpAddr::V4(_) => TcpSocket::new_v4()?,
        IpAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.bind(SocketAddr::new(source, 0))?;
    socket.connect(target).await
}

/// A gRPC channel over one new TLS connection from `source` to `target`,
/// presenting the client certificate in `config` (see
/// [`crate::client_tls_config`]). Handshake refusals surface here; the
/// channel does not reconnect from another address.
pub async fn channel_from(
    source: IpAddr,
    target: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    timeout: Duration,
) -> Result<Channel, tonic::transport::Error> {
    let connector = tower::service_fn(move |_: Uri| {
        let config = config.clone();
        async move {
            let tcp = connect_from(source, target).await?;
            tcp.set_nodelay(true)?;
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect(ServerName::try_from("localhost").expect("name"), tcp)
                .await?;
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tls))
        }
    });
    Endpoint::from_shared(format!("http://{target}"))?
        .connect_timeout(timeout)
        .timeout(timeout)
        .connect_with_connector(connector)
        .await
}

/// What an [`IdleSocketFlood`] has done so far.
#[derive(Debug, Default)]
pub struct FloodCounts {
    /// Sockets connected (renewals included).
    pub connected: AtomicU64,
    /// Sockets the node closed before the attacker renewed them.
    pub closed_by_node: AtomicU64,
}

/// `per_source` idle sockets from each of `sources`, none of them ever
/// sending a byte: each is renewed every `renew` (as the attacker in the
/// review did), and reconnected at once (after `backoff`) when the node
/// closes it, so the flood keeps as many handshake slots as it can. Stops
/// when dropped.
pub struct IdleSocketFlood {
    pub counts: Arc<FloodCounts>,
    _tasks: JoinSet<()>,
}

impl IdleSocketFlood {
    pub fn start(
        target: SocketAddr,
        sources: &[IpAddr],
        per_source: usize,
        renew: Duration,
        backoff: Duration,
    ) -> IdleSocketFlood {
        let counts = Arc::new(FloodCounts::default());
        let mut tasks = JoinSet::new();
        for (i, &source) in sources
            .iter()
            .cycle()
            .take(sources.len() * per_source)
            .enumerate()
        {
            let counts = counts.clone();
            // Ramped, 1 ms apart: a burst of SYNs overflows the listen
            // queue, and a socket the kernel dropped holds no slot.
            let ramp = Duration::from_millis(i as u64);
            tasks.spawn(async move {
                tokio::time::sleep(ramp).await;
                loop {
                    let Ok(mut socket) = connect_from(source, target).await else {
                        tokio::time::sleep(backoff).await;
                        continue;
                    };
                    counts.connected.fetch_add(1, Ordering::Relaxed);
                    let mut byte = [0u8; 1];
                    // Ends when the node closes the socket (read gives
                    // 0 or an error) or when it is time to renew.
                    if tokio::time::timeout(renew, socket.read(&mut byte))
                        .await
                        .is_ok()
                    {
                        counts.closed_by_node.fetch_add(1, Ordering::Relaxed);
                        drop(socket);
                        tokio::time::sleep(backoff).await;
                    }
                }
            });
        }
        IdleSocketFlood {
            counts,
            _tasks: tasks,
        }
    }
}

/// Outcomes and latencies of a genuine caller's calls.
#[derive(Debug, Default)]
pub struct CallFigures {
    pub latencies: Vec<Duration>,
    pub failures: Vec<String>,
}

impl CallFigures {
    pub fn record(&mut self, elapsed: Duration, outcome: Result<(), String>) {
        match outcome {
            Ok(()) => self.latencies.push(elapsed),
            Err(error) => self.failures.push(error),
        }
    }

    pub fn calls(&self) -> usize {
        self.latencies.len() + self.failures.len()
    }

    /// The share of calls that succeeded, in percent.
    pub fn success_percent(&self) -> f64 {
        if self.calls() == 0 {
            return 0.0;
        }
        100.0 * self.latencies.len() as f64 / self.calls() as f64
    }

    /// The `q` quantile (0-1) of successful calls' latency (nearest rank).
    pub fn quantile(&self, q: f64) -> Duration {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        if sorted.is_empty() {
            return Duration::ZERO;
        }
        let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
        sorted[rank - 1]
    }

    /// One line for the test's output: calls, success and latency.
    pub fn summary(&self) -> String {
        format!(
            "{} calls, {:.1} % succeeded, p50 {:.2} ms, p99 {:.2} ms",
            self.calls(),
            self.success_percent(),
            self.quantile(0.5).as_secs_f64() * 1000.0,
            self.quantile(0.99).as_secs_f64() * 1000.0,
        )
    }
}

/// This process's resident set size in KiB (`VmRSS` in /proc/self/status);
/// a test node runs in the test process, so this includes the node's.
pub fn resident_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS line")
}

/// What a flood of `Health.Watch` streams got: the streams the node kept
/// open (held here, so they stay open) and how many it refused with each
/// status code.
#[derive(Default)]
pub struct WatchFlood {
    pub open: Vec<tonic::Streaming<tonic_health::pb::HealthCheckResponse>>,
    pub refused: std::collections::BTreeMap<String, usize>,
}

impl WatchFlood {
    /// Opens `per_connection` watches of the node's overall health on each
    /// of `channels` (one connection each), one after another.
    pub async fn open(channels: Vec<Channel>, per_connection: usize) -> WatchFlood {
        let mut flood = WatchFlood::default();
        for channel in channels {
            let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
            for _ in 0..per_connection {
                let request = tonic_health::pb::HealthCheckRequest {
                    service: String::new(),
                };
                match health.watch(request).await {
                    Ok(response) => flood.open.push(response.into_inner()),
                    Err(status) => {
                        *flood
                            .refused
                            .entry(format!("{:?}", status.code()))
                            .or_default() += 1;
                    }
                }
            }
        }
        flood
    }
}
