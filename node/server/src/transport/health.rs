//! Whether the node is serving, as the standard `grpc.health.v1.Health`
//! service reports it: overall (service "") and for each Patchwork service.
//! Everything is NOT_SERVING while the node starts (before its store is
//! open), once shutdown is signalled (draining), and while the store or the
//! audit log is failing; SERVING otherwise. Handlers report store trouble
//! through [`Health::store_failed`] and success through [`Health::store_ok`].
//!
//! Any caller the trust bundle accepts may ask, so `Watch` streams are
//! bounded ([`BoundedHealth`]): per caller identity and in all, the excess
//! refused RESOURCE_EXHAUSTED, so a flood of streams cannot grow memory.
//!
//! Also [`Starting`]: the Patchwork services behind a gate that answers
//! UNAVAILABLE until the store is open, so the listener can answer health
//! checks while the node starts.

use std::collections::HashMap;
use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;
use std::task::{Context, Poll};
use std::time::Duration;

use patchwork_proto::v1::{admin_server, directory_server, federation_server};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_stream::StreamExt as _;
use tonic::server::NamedService;
use tonic::{Request, Response, Status};
use tonic_health::ServingStatus;
use tonic_health::pb::health_server::{Health as HealthApi, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};
use tonic_health::server::{HealthReporter, HealthService};
use tower::{Service, ServiceExt};

use crate::transport::tls::PeerConnection;
use patchwork_store::Store;

/// The names health is reported under: the node overall, then each service.
pub(crate) const SERVICES: [&str; 4] = [
    "",
    directory_server::SERVICE_NAME,
    admin_server::SERVICE_NAME,
    federation_server::SERVICE_NAME,
];

/// How often a failing store is probed with a flush, so a node nobody
/// sends requests to (a readiness probe took it out of rotation) recovers.
const STORE_PROBE_INTERVAL: Duration = Duration::from_secs(15);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Starting,
    Serving,
    Draining,
}

/// The node's health; cheap to clone, shared by the server and handlers.
#[derive(Debug, Clone)]
pub(crate) struct Health {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    reporter: HealthReporter,
    /// Updates in order, so watchers never see an older status last.
    phase: tokio::sync::Mutex<Phase>,
    store_failing: AtomicBool,
    serving: AtomicBool,
}

impl Health {
    /// Every service NOT_SERVING, and the `grpc.health.v1.Health` service
    /// that reports them, its `Watch` streams bounded by `limits`.
    pub(crate) async fn new(limits: WatchLimits) -> (Health, HealthServer<BoundedHealth>) {
        let reporter = HealthReporter::new();
        for name in SERVICES {
            reporter
                .set_service_status(name, ServingStatus::NotServing)
                .await;
        }
        let service = HealthServer::new(BoundedHealth::new(
            HealthService::from_health_reporter(reporter.clone()),
            limits,
        ));
        let health = Health {
            inner: Arc::new(Inner {
                reporter,
                phase: tokio::sync::Mutex::new(Phase::Starting),
                store_failing: AtomicBool::new(false),
                serving: AtomicBool::new(false),
            }),
        };
        (health, service)
    }

    /// Whether the node reports SERVING now.
    pub(crate) fn is_serving(&self) -> bool {
        self.inner.serving.load(Ordering::SeqCst)
    }

    /// The store is open and every service is ready.
    pub(crate) async fn started(&self) {
        let mut phase = self.inner.phase.lock().await;
        if *phase == Phase::Starting {
            *phase = Phase::Serving;
        }
        self.publish(&phase).await;
    }

    /// Shutdown was signalled: NOT_SERVING from now on. Then every health
    /// status is withdrawn, which ends open `Watch` streams (after they have
    /// seen NOT_SERVING) so they cannot hold the drain open for ever.
    pub(crate) async fn draining(&self) {
        let mut phase = self.inner.phase.lock().await;
        if *phase == Phase::Draining {
            return;
        }
        *phase = Phase::Draining;
        self.publish(&phase).await;
        tracing::info!("draining: health reports not serving");
        let mut reporter = self.inner.reporter.clone();
        for name in SERVICES {
            reporter.clear_service_status(name).await;
        }
    }

    /// A handler saw the store or the audit log fail (`what`: "flush",
    /// "write", "audit append"): NOT_SERVING until a write succeeds again. sled 0.34
    /// keeps the first error from writing its log (a full disk, EIO) until
    /// the store is reopened, so after one of those nothing succeeds again
    /// before a restart: the node refuses every write and lookup and says
    /// NOT_SERVING rather than pretend (node/cli/tests/disk_full.rs).
    pub(crate) async fn store_failed(&self, what: &'static str, error: &(dyn fmt::Display + Sync)) {
        if !self.inner.store_failing.swap(true, Ordering::SeqCst) {
            tracing::error!(what, error = %error, "store failing: health reports not serving");
            let phase = self.inner.phase.lock().await;
            self.publish(&phase).await;
        }
    }

    /// A write reached the disk: the store works (again).
    pub(crate) async fn store_ok(&self) {
        if self.inner.store_failing.swap(false, Ordering::SeqCst) {
            tracing::info!("store writes succeed again: health reports serving");
            let phase = self.inner.phase.lock().await;
            self.publish(&phase).await;
        }
    }

    /// While the store is failing, flushes it every [`STORE_PROBE_INTERVAL`]
    /// and reports a success: with no traffic (a readiness probe took the
    /// node out of rotation) no handler would ever see one.
    pub(crate) fn spawn_store_probe(&self, store: Store) -> tokio::task::JoinHandle<()> {
        let health = self.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(STORE_PROBE_INTERVAL);
            loop {
                ticks.tick().await;
                if health.inner.store_failing.load(Ordering::SeqCst) && store.flush().await.is_ok()
                {
                    health.store_ok().await;
                }
            }
        })
    }

    /// Sends the status `phase` and the store call for; the caller holds the
    /// phase lock. Withdrawn statuses stay withdrawn once draining.
    async fn publish(&self, phase: &Phase) {
        let serving = *phase == Phase::Serving && !self.inner.store_failing.load(Ordering::SeqCst);
        let was = self.inner.serving.swap(serving, Ordering::SeqCst);
        if *phase == Phase::Draining && !was {
            return; // already NOT_SERVING, and perhaps withdrawn
        }
        let status = if serving {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        for name in SERVICES {
            self.inner.reporter.set_service_status(name, status).await;
        }
    }
}

/// How many `Health.Watch` streams may be open at once (`[api]`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct WatchLimits {
    /// In all.
    pub total: usize,
    /// From one caller identity (over any number of connections).
    pub(crate) per_identity: usize,
}

/// `grpc.health.v1.Health` with its `Watch` streams bounded: each open
/// stream holds a slot, given back when the stream ends or its caller goes;
/// a `Watch` finding none is refused RESOURCE_EXHAUSTED at once. `Check`
/// holds nothing after it answers, so it is not bounded here.
pub(crate) struct BoundedHealth {
    inner: HealthService,
    total: Arc<Semaphore>,
    /// Open streams per caller (an identity, or the address of a connection
    /// whose certificate names none we accept).
    per_caller: Arc<Mutex<HashMap<String, usize>>>,
    per_identity: usize,
}

impl BoundedHealth {
    fn new(inner: HealthService, limits: WatchLimits) -> Self {
        BoundedHealth {
            inner,
            total: Arc::new(Semaphore::new(limits.total)),
            per_caller: Arc::new(Mutex::new(HashMap::new())),
            per_identity: limits.per_identity,
        }
    }

    fn acquire(&self, caller: String) -> Result<WatchSlot, Status> {
        let mut per_caller = self.per_caller.lock();
        if per_caller
            .get(&caller)
            .is_some_and(|open| *open >= self.per_identity)
        {
            return Err(Status::resource_exhausted(format!(
                "{caller} has {} health watches open, the most one caller may (api.max_health_watches_per_identity)",
                self.per_identity
            )));
        }
        let permit = self.total.clone().try_acquire_owned().map_err(|_| {
            Status::resource_exhausted(
                "this node has as many health watches open as it allows (api.max_health_watches)",
            )
        })?;
        *per_caller.entry(caller.clone()).or_insert(0) += 1;
        Ok(WatchSlot {
            _permit: permit,
            caller,
            per_caller: self.per_caller.clone(),
        })
    }
}

/// One open `Watch` stream's slot, given back when dropped.
struct WatchSlot {
    _permit: OwnedSemaphorePermit,
    caller: String,
    per_caller: Arc<Mutex<HashMap<String, usize>>>,
}

impl Drop for WatchSlot {
    fn drop(&mut self) {
        let mut per_caller = self.per_caller.lock();
        if let Some(open) = per_caller.get_mut(&self.caller) {
            *open -= 1;
            if *open == 0 {
                per_caller.remove(&self.caller);
            }
        }
    }
}

type WatchStream =
    Pin<Box<dyn tokio_stream::Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

#[tonic::async_trait]
impl HealthApi for BoundedHealth {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        self.inner.check(request).await
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<WatchStream>, Status> {
        let caller = match request.extensions().get::<PeerConnection>() {
            Some(peer) => match &peer.identity {
                Ok(identity) => identity.to_string(),
                Err(_) => peer.remote_addr.ip().to_string(),
            },
            None => "an unverified caller".to_owned(),
        };
        let slot = self.acquire(caller)?;
        let response = self.inner.watch(request).await?;
        let (metadata, stream, extensions) = response.into_parts();
        // The slot lives as long as the stream: tonic drops the stream when
        // the call ends or the connection goes.
        let stream: WatchStream = Box::pin(stream.map(move |item| {
            let _held = &slot;
            item
        }));
        Ok(Response::from_parts(metadata, stream, extensions))
    }
}

/// A service that answers UNAVAILABLE until [`Starting::open`] gives it the
/// real one: the node listens (and answers health checks) while its store
/// opens, which can take a while when a match index is rebuilt.
#[derive(Debug)]
pub(crate) struct Starting<S> {
    ready: Arc<OnceLock<S>>,
}

impl<S> Clone for Starting<S> {
    fn clone(&self) -> Self {
        Starting {
            ready: self.ready.clone(),
        }
    }
}

impl<S> Default for Starting<S> {
    fn default() -> Self {
        Starting {
            ready: Arc::new(OnceLock::new()),
        }
    }
}

impl<S> Starting<S> {
    /// Requests go to `service` from now on (once; later calls are ignored).
    pub(crate) fn open(&self, service: S) {
        let _ = self.ready.set(service);
    }
}

impl<S: NamedService> NamedService for Starting<S> {
    const NAME: &'static str = S::NAME;
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B> Service<http::Request<B>> for Starting<S>
where
    S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        match self.ready.get() {
            Some(service) => Box::pin(service.clone().oneshot(request)),
            None => Box::pin(std::future::ready(Ok(Status::unavailable(
                "this node is starting: its store is not open yet; try again shortly",
            )
            .into_http()))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every reported name's status (None: withdrawn).
    async fn statuses(health: &Health) -> Vec<Option<ServingStatus>> {
        let service = HealthService::from_health_reporter(health.inner.reporter.clone());
        let mut found = Vec::new();
        for name in SERVICES {
            let answer = service
                .check(tonic::Request::new(HealthCheckRequest {
                    service: name.into(),
                }))
                .await;
            found.push(answer.ok().map(|r| match r.into_inner().status {
                1 => ServingStatus::Serving,
                2 => ServingStatus::NotServing,
                _ => ServingStatus::Unknown,
            }));
        }
        found
    }

    #[tokio::test]
    async fn watch_slots_are_capped_per_caller_and_in_all_and_given_back() {
        let bounded = BoundedHealth::new(
            HealthService::from_health_reporter(HealthReporter::new()),
            WatchLimits {
                total: 3,
                per_identity: 2,
            },
        );
        let a1 = bounded.acquire("a".into()).expect("a's first");
        let _a2 = bounded.acquire("a".into()).expect("a's second");
        let refused = bounded.acquire("a".into()).err().expect("a's third");
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert!(
            refused
                .message()
                .contains("api.max_health_watches_per_identity")
        );
        let _b1 = bounded.acquire("b".into()).expect("b's first");
        let refused = bounded.acquire("c".into()).err().expect("none left");
        assert!(refused.message().contains("api.max_health_watches)"));
        drop(a1);
        assert!(bounded.acquire("c".into()).is_ok(), "a slot given back");
        assert!(bounded.acquire("a".into()).is_ok(), "a's count went down");
    }

    #[tokio::test]
    async fn health_follows_start_store_failures_and_drain() {
        let (health, _service) = Health::new(WatchLimits {
            total: 4,
            per_identity: 2,
        })
        .await;
        let all = |status| vec![Some(status); SERVICES.len()];
        assert_eq!(statuses(&health).await, all(ServingStatus::NotServing));
        assert!(!health.is_serving());

        health.started().await;
        assert_eq!(statuses(&health).await, all(ServingStatus::Serving));
        assert!(health.is_serving());

        health.store_failed("flush", &"disk full").await;
        assert_eq!(statuses(&health).await, all(ServingStatus::NotServing));
        health.store_failed("audit append", &"disk full").await;
        assert!(!health.is_serving());
        health.store_ok().await;
        assert_eq!(statuses(&health).await, all(ServingStatus::Serving));

        health.draining().await;
        assert!(!health.is_serving());
        assert_eq!(
            statuses(&health).await,
            vec![None; SERVICES.len()],
            "withdrawn, so watch streams end"
        );
        health.store_failed("flush", &"disk full").await;
        health.store_ok().await;
        assert_eq!(
            statuses(&health).await,
            vec![None; SERVICES.len()],
            "nothing comes back while draining"
        );
    }

    #[tokio::test]
    async fn a_watch_sees_not_serving_before_its_stream_ends() {
        use tokio_stream::StreamExt;
        let (health, _service) = Health::new(WatchLimits {
            total: 4,
            per_identity: 2,
        })
        .await;
        health.started().await;
        let service = HealthService::from_health_reporter(health.inner.reporter.clone());
        let mut watch = service
            .watch(tonic::Request::new(HealthCheckRequest {
                service: String::new(),
            }))
            .await
            .expect("watch")
            .into_inner();
        let first = watch.next().await.expect("first").expect("status");
        assert_eq!(first.status, ServingStatus::Serving as i32);
        health.draining().await;
        let next = watch.next().await.expect("next").expect("status");
        assert_eq!(next.status, ServingStatus::NotServing as i32);
        assert!(watch.next().await.is_none(), "the stream ends");
    }

    #[tokio::test]
    async fn a_starting_service_answers_unavailable_until_opened() {
        let gate: Starting<
            tower::util::BoxCloneSyncService<
                http::Request<()>,
                http::Response<tonic::body::Body>,
                Infallible,
            >,
        > = Starting::default();
        let answer = gate
            .clone()
            .oneshot(http::Request::new(()))
            .await
            .expect("infallible");
        assert_eq!(
            answer.headers().get("grpc-status").map(|v| v.as_bytes()),
            Some(&b"14"[..]),
            "UNAVAILABLE"
        );
        gate.open(tower::util::BoxCloneSyncService::new(tower::service_fn(
            |_: http::Request<()>| async {
                Ok::<_, Infallible>(http::Response::new(tonic::body::Body::empty()))
            },
        )));
        let answer = gate
            .oneshot(http::Request::new(()))
            .await
            .expect("infallible");
        assert!(answer.headers().get("grpc-status").is_none(), "served");
    }
}
