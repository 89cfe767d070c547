//! A fault-injecting TCP proxy to put between two nodes: it forwards bytes
//! both ways and, switched at run time, delays them, blackholes them
//! (accepts, never answers), resets connections, or cuts a response in the
//! middle. The switch applies to connections already open as well as new
//! ones, so a long-lived peer channel sees the fault too.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What the proxy does to traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forward everything as it comes.
    None,
    /// Hold every chunk this long before forwarding it.
    Delay(Duration),
    /// Accept connections and read nothing, answer nothing; bytes already in
    /// flight wait until the fault is lifted.
    Blackhole,
    /// Reset every connection (new ones at once, open ones on their next
    /// bytes).
    Reset,
    /// Forward requests, but send only half of the next chunk of a response
    /// and then reset the connection.
    CutResponse,
}

/// A running proxy; dropping it stops accepting (open connections end when
/// either side closes).
pub struct FaultProxy {
    addr: SocketAddr,
    fault: watch::Sender<Fault>,
    accepted: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl FaultProxy {
    /// Listens on a fresh loopback port and forwards to `upstream`.
    pub async fn start(upstream: SocketAddr) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        Self::start_on(listener, upstream)
    }

    /// Forwards connections accepted on `listener` to `upstream`.
    pub fn start_on(listener: TcpListener, upstream: SocketAddr) -> FaultProxy {
        let addr = listener.local_addr().expect("proxy addr");
        let (fault, _) = watch::channel(Fault::None);
        let accepted = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn(accept_loop(
            listener,
            upstream,
            fault.clone(),
            accepted.clone(),
        ));
        FaultProxy {
            addr,
            fault,
            accepted,
            task,
        }
    }

    /// Where to point the peer.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Switches the fault, for open connections too.
    pub fn set(&self, fault: Fault) {
        self.fault.send_replace(fault);
    }

    /// Lifts every fault.
    pub fn heal(&self) {
        self.set(Fault::None);
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_loop(
    listener: TcpListener,
    upstream: SocketAddr,
    fault: watch::Sender<Fault>,
    accepted: Arc<AtomicU64>,
) {
    while let Ok((client, _)) = listener.accept().await {
        accepted.fetch_add(1, Ordering::Relaxed);
        let faults = fault.subscribe();
        tokio::spawn(async move {
            let _ = client.set_nodelay(true);
            if *faults.borrow() == Fault::Reset {
                reset(client);
                return;
            }
            let Ok(server) = TcpStream::connect(upstream).await else {
                reset(client);
                return;
            };
            let _ = server.set_nodelay(true);
            forward(client, server, faults).await;
        });
    }
}

/// Closes with RST rather than FIN.
fn reset(stream: TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}

/// Copies bytes both ways, applying the fault in force to each chunk as it
/// arrives, until either side closes or a fault ends the connection.
async fn forward(mut client: TcpStream, mut server: TcpStream, mut faults: watch::Receiver<Fault>) {
    let mut request = vec![0u8; 16 * 1024];
    let mut response = vec![0u8; 16 * 1024];
    loop {
        // A blackhole reads nothing until it is lifted.
        if *faults.borrow_and_update() == Fault::Blackhole {
            if faults.changed().await.is_err() {
                return;
            }
            continue;
        }
        // Reads are cancel-safe: a fault switch loses no bytes.
        let (chunk, to_client) = tokio::select! {
            n = client.read(&mut request) => match n {
                Ok(0) | Err(_) => break,
                Ok(n) => (&request[..n], false),
            },
            n = server.read(&mut response) => match n {
                Ok(0) | Err(_) => break,
                Ok(n) => (&response[..n], true),
            },
            changed = faults.changed() => {
                if changed.is_err() {
                    return;
                }
                continue;
            }
        };
        let fault = loop {
            let current = *faults.borrow_and_update();
            match current {
                // Bytes that arrive as a blackhole starts wait for its end.
                Fault::Blackhole => {
                    if faults.changed().await.is_err() {
                        return;
                    }
                }
                fault => break fault,
            }
        };
        match fault {
            Fault::None | Fault::Blackhole => {}
            Fault::Delay(delay) => tokio::time::sleep(delay).await,
            Fault::Reset => break,
            Fault::CutResponse if to_client => {
                let half = (chunk.len() / 2).max(1);
                let _ = client.write_all(&chunk[..half]).await;
                break;
            }
            Fault::CutResponse => {}
        }
        let target = if to_client { &mut client } else { &mut server };
        if target.write_all(chunk).await.is_err() {
            break;
        }
    }
    reset(client);
    reset(server);
}
