//! `patchwork-bench`: real nodes over real mTLS on 127.0.0.1, measured in the
//! same run against a bare tonic echo over the same TLS acceptor and
//! connector (the floor this machine and stack allow). Scenarios: local
//! lookup, federated fan-out, CSV import, resources, match-key cost.
//!
//! `cargo run --release -p patchwork-bench -- [--quick]`. The last lines are
//! `name=value`, one per key figure, for scripts and CI.

#![forbid(unsafe_code)]

mod echo;

/// The allocator the `patchwork` binary uses, so the node here allocates as
/// it does in production.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use patchwork_cli::cli::{ImportRequest, import_csv};
use patchwork_cli::work::csv_rows::CsvKind;
use patchwork_federation::Weights;
use patchwork_federation::matchkeys::{KeySet, Subject, index_keys, index_keys_v2, query_keys};
use patchwork_federation::tokens::query_match_keys;
use patchwork_linkage_eval::blinded::{KeysOnly, Scoring};
use patchwork_linkage_eval::evaluate::evaluate;
use patchwork_linkage_eval::population::{Geography, Population, PopulationSpec, Scheme};
use patchwork_server::base::config::{KeySetEntry, PeerEntry};
use patchwork_server::base::validate::{self, InvolvementSource, Rules};
use patchwork_store::{Store, StoreOptions, WriteMode};
use patchwork_tests::{
    ClientCert, ClientGrant, NodeOptions, TRUST_DOMAIN, TestCa, TestNode, date, v1,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::net::TcpListener;

/// The match-key secret every benchmark node shares (hex, 32 bytes).
const SECRET_HEX: &str = "5f1d3c0a9b8e7d6c5b4a39281706f5e4d3c2b1a09f8e7d6c5b4a392817060504";
/// The key set's next secret, for the rotation in scenario 1.
const ROTATED_SECRET_HEX: &str = "0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9";
const PRACTITIONERS: u64 = 100;
const INVOLVEMENTS_PER_PERSON: u64 = 3;
const PERSONS_PER_PEER: u64 = 20;

/// Real nodes over real mTLS, measured against a bare tonic echo in the
/// same run. The last lines are `name=value`, one per key figure.
#[derive(Debug, clap::Parser)]
#[command(name = "patchwork-bench")]
struct Args {
    /// 20,000 persons and short runs (CI's smoke run) instead of 1,000,000.
    #[arg(long)]
    quick: bool,
    /// Run one scenario only.
    #[arg(long, value_enum)]
    only: Option<Scenario>,
    /// Persons to load and import, instead of the mode's.
    #[arg(long, value_name = "N")]
    persons: Option<u64>,
    /// Seconds each measured run lasts, instead of the mode's.
    #[arg(long, value_name = "S")]
    seconds: Option<u64>,
    /// The node's store cache (`store.cache_mb`).
    #[arg(long, value_name = "MB")]
    cache_mb: Option<u64>,
    /// Load the lookup store into DIR once and reuse it in later runs (for
    /// profiling); its lookups' audit entries accumulate there.
    #[arg(long, value_name = "DIR")]
    reuse_store: Option<std::path::PathBuf>,
    /// Internal: run one node from CONFIG with metrics on METRICS_PORT until
    /// SIGTERM (the lookup scenario's child process).
    #[arg(long, num_args = 2, value_names = ["CONFIG", "METRICS_PORT"], hide = true)]
    serve_node: Option<Vec<String>>,
}

/// The benchmark's scenarios (resources are measured with the lookup).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Scenario {
    Lookup,
    Fanout,
    Import,
    Matching,
}

struct Sizes {
    persons: u64,
    import_persons: u64,
    fanouts: &'static [usize],
    warmup: Duration,
    run: Duration,
    fanout_run: Duration,
    matchkey_subjects: u64,
    cache_mb: u64,
    reuse_store: Option<std::path::PathBuf>,
}

impl Sizes {
    fn new(quick: bool) -> Self {
        if quick {
            Sizes {
                persons: 20_000,
                import_persons: 20_000,
                fanouts: &[1, 10],
                warmup: Duration::from_millis(500),
                run: Duration::from_secs(3),
                fanout_run: Duration::from_secs(2),
                matchkey_subjects: 5_000,
                cache_mb: 256,
                reuse_store: None,
            }
        } else {
            Sizes {
                persons: 1_000_000,
                import_persons: 1_000_000,
                fanouts: &[1, 10, 50],
                warmup: Duration::from_secs(2),
                run: Duration::from_secs(20),
                fanout_run: Duration::from_secs(10),
                matchkey_subjects: 100_000,
                cache_mb: 256,
                reuse_store: None,
            }
        }
    }
}

// ------------------------------------------------------------ measuring

/// Throughput and latency of one closed-loop run.
#[derive(Clone, Copy, Debug, Default)]
struct Summary {
    calls: u64,
    errors: u64,
    per_s: f64,
    p50_us: u32,
    p99_us: u32,
    p999_us: u32,
    /// CPU time of this whole process (every thread: node, baseline,
    /// clients) per call during the run. Unlike throughput it hardly moves
    /// when other programs share the machine's cores.
    cpu_us_per_call: f64,
}

impl Summary {
    fn line(&self, label: &str) -> String {
        format!(
            "  {label:<28} {:>9.0}/s  p50 {:>7} µs  p99 {:>7} µs  p99.9 {:>7} µs  cpu {:>6.1} µs/call  ({} calls, {} errors)",
            self.per_s,
            self.p50_us,
            self.p99_us,
            self.p999_us,
            self.cpu_us_per_call,
            self.calls,
            self.errors
        )
    }
}

/// The node process the lookup scenario runs (0: none): its CPU time
/// counts with this process's.
static NODE_PID: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// CPU time this process, and the node process if one runs, have used,
/// user and system, all threads (µs).
fn process_cpu_us() -> f64 {
    let node = NODE_PID.load(Ordering::SeqCst);
    cpu_us_of("self")
        + if node == 0 {
            0.0
        } else {
            cpu_us_of(&node.to_string())
        }
}

fn cpu_us_of(pid: &str) -> f64 {
    // Fields 14 and 15 of /proc/<pid>/stat, in clock ticks; the command name
    // (field 2) is in parentheses and may hold spaces, so count after it.
    let ticks = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let after_name = stat.rsplit_once(')')?.1.to_owned();
            let fields: Vec<&str> = after_name.split_whitespace().collect();
            let user: u64 = fields.get(11)?.parse().ok()?;
            let system: u64 = fields.get(12)?.parse().ok()?;
            Some(user + system)
        })
        .unwrap_or(0);
    // CLK_TCK is 100 on Linux for every architecture Rust targets here.
    ticks as f64 * 10_000.0
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 { a / b } else { 0.0 }
}

fn compare(label: &str, node: &Summary, base: &Summary) {
    println!("{}", node.line(&format!("{label} node")));
    println!("{}", base.line(&format!("{label} echo")));
    println!(
        "  {label:<28} node/echo throughput {:.3}, p99 node/echo {:.2}, cpu per call echo/node {:.3}",
        ratio(node.per_s, base.per_s),
        ratio(f64::from(node.p99_us), f64::from(base.p99_us)),
        ratio(base.cpu_us_per_call, node.cpu_us_per_call)
    );
}

/// Whether a failed lookup has been described already (once per run).
static FIRST_FAILURE_SHOWN: AtomicBool = AtomicBool::new(false);

/// Longest a single measured call may take before it counts as an error.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// `in_flight` callers, each calling again as soon as its call returns,
/// for `duration`. `call(worker, n)` says whether the call succeeded.
async fn closed_loop<F, Fut>(in_flight: usize, duration: Duration, call: F) -> Summary
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = bool> + Send + 'static,
{
    let call = Arc::new(call);
    let cpu_before = process_cpu_us();
    let start = Instant::now();
    let end = start + duration;
    let workers: Vec<_> = (0..in_flight)
        .map(|worker| {
            let call = call.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut errors = 0u64;
                let mut n = 0u64;
                while Instant::now() < end {
                    let began = Instant::now();
                    // A call that never returns is an error, not a hung benchmark.
                    let ok = tokio::time::timeout(CALL_TIMEOUT, call(worker, n)).await;
                    if !matches!(ok, Ok(true)) {
                        errors += 1;
                    }
                    latencies.push(u32::try_from(began.elapsed().as_micros()).unwrap_or(u32::MAX));
                    n += 1;
                }
                (latencies, errors)
            })
        })
        .collect();
    let mut all = Vec::new();
    let mut errors = 0;
    for worker in workers {
        if let Ok((latencies, e)) = worker.await {
            all.extend(latencies);
            errors += e;
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let cpu_us = process_cpu_us() - cpu_before;
    all.sort_unstable();
    let at = |q: f64| -> u32 {
        if all.is_empty() {
            return 0;
        }
        let i = ((all.len() as f64) * q).ceil() as usize;
        all[i.clamp(1, all.len()) - 1]
    };
    Summary {
        calls: all.len() as u64,
        errors,
        per_s: all.len() as f64 / elapsed,
        p50_us: at(0.50),
        p99_us: at(0.99),
        p999_us: at(0.999),
        cpu_us_per_call: cpu_us / (all.len().max(1) as f64),
    }
}

// ------------------------------------------------------------ data

const GIVEN: &[&str] = &[
    "Amelia", "Olivia", "Isla", "Ava", "Mia", "Ivy", "Lily", "Grace", "Freya", "Zoë", "Aoife",
    "Priya", "Aisha", "Fatima", "Oliver", "George", "Noah", "Arthur", "Muhammad", "Leo", "Harry",
    "Oscar", "Archie", "Henry", "Theo", "Jack", "Charlie", "Seán", "Rhys", "Callum", "Aarav",
    "Ibrahim", "Tomasz", "Zofia", "Mateo", "Lucía", "Björn", "Anaïs", "Kwame", "Thandiwe",
];
const FAMILY: &[&str] = &[
    "Smith",
    "Jones",
    "Taylor",
    "Brown",
    "Williams",
    "Wilson",
    "Johnson",
    "Davies",
    "Patel",
    "Robinson",
    "Wright",
    "Thompson",
    "Evans",
    "Walker",
    "White",
    "Roberts",
    "Green",
    "Hall",
    "Wood",
    "Jackson",
    "Clarke",
    "O'Brien",
    "Nowak",
    "Kowalski",
    "Okafor",
    "Mensah",
    "Khan",
    "Hussain",
    "Ahmed",
    "Singh",
    "Nguyen",
    "García",
    "Müller",
    "Smith-Jones",
    "MacDonald",
    "Ó Briain",
    "Fernández",
    "Rossi",
    "Dubois",
    "Lindqvist",
];

/// Person `i` of the benchmark population: the same every run.
fn person(i: u64) -> v1::Person {
    let mut rng = StdRng::seed_from_u64(i.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0xbe_c4);
    let given = GIVEN[rng.random_range(0..GIVEN.len())];
    // Three in four family names double-barrelled: 40 + 40 × 40 names, so
    // that at 1,000,000 persons hardly any two share names and date of
    // birth (with 40 alone about 2 % did, and the precise-first matcher
    // rightly refused to choose between them).
    let first = FAMILY[rng.random_range(0..FAMILY.len())];
    let family = if rng.random_range(0..4) == 0 {
        first.to_owned()
    } else {
        format!("{first}-{}", FAMILY[rng.random_range(0..FAMILY.len())])
    };
    let dob = date(
        rng.random_range(1940..2024),
        rng.random_range(1..13),
        rng.random_range(1..29),
    );
    let postcode = format!(
        "GU{} {}{}{}",
        rng.random_range(1..30),
        rng.random_range(1..10),
        char::from(b'A' + rng.random_range(0..26u8)),
        char::from(b'A' + rng.random_range(0..26u8)),
    );
    let nhs = patchwork_cli::work::synth::nhs_number(&mut rng);
    v1::Person {
        id: format!("P{i:08}"),
        given_name: given.into(),
        family_name: family,
        date_of_birth: dob,
        postcode,
        address: format!("{} High Street, Guildford", i % 200 + 1),
        national_id: Some(v1::NationalId {
            scheme: "nhs".into(),
            value: nhs,
        }),
    }
}

fn demographics(person: &v1::Person) -> v1::Demographics {
    v1::Demographics {
        given_name: person.given_name.clone(),
        family_name: person.family_name.clone(),
        date_of_birth: person.date_of_birth,
        postcode: person.postcode.clone(),
        national_id: person.national_id.clone(),
    }
}

fn subject(person: &v1::Person) -> Subject {
    Subject {
        given_name: Some(person.given_name.clone()),
        family_name: Some(person.family_name.clone()),
        date_of_birth: person
            .date_of_birth
            .map(|d| (d.year, d.month as u32, d.day as u32)),
        postcode: Some(person.postcode.clone()),
        national_id: person
            .national_id
            .as_ref()
            .map(|id| (id.scheme.clone(), id.value.clone())),
    }
}

fn practitioner_id(n: u64) -> String {
    format!("PR-{:04}", n % PRACTITIONERS + 1)
}

fn involvement(person: u64, k: u64) -> v1::Involvement {
    let mut involvement = patchwork_tests::involvement(
        &format!("P{person:08}"),
        &practitioner_id(person * INVOLVEMENTS_PER_PERSON + k),
        ["Early help", "Health visiting", "School nursing"][k as usize % 3],
        v1::Sensitivity::Standard,
    );
    involvement.id = format!("I{person:08}-{k}");
    involvement
}

fn secret() -> Vec<u8> {
    hex::decode(SECRET_HEX).unwrap_or_default()
}

fn key_set() -> anyhow::Result<KeySet> {
    Ok(KeySet::new("bench", &secret())?)
}

/// A benchmark node's options: the key set "bench" (its secret in
/// `bench.key`), the store's cache (`--cache-mb`; `None` for the peers of the
/// fan-out, at the node's own default of 256 MiB), and `peers` given 2 s.
fn node_options(
    cache_mb: Option<u64>,
    peers: Vec<PeerEntry>,
    listener: Option<TcpListener>,
) -> NodeOptions {
    NodeOptions {
        listener,
        secret_files: vec![("bench.key".into(), SECRET_HEX.into())],
        ..Default::default()
    }
    .with(move |config| {
        if let Some(cache_mb) = cache_mb {
            config.store.cache_mb = cache_mb;
        }
        config.federation.key_sets.push(KeySetEntry {
            name: "bench".into(),
            secret_file: "bench.key".into(),
        });
        config.federation.default_deadline_ms = 2000;
        patchwork_tests::federate(config, peers);
    })
}

/// A peer on the key set "bench", agreed at a million queries a minute.
fn bench_peer(identity: &str, name: &str, address: std::net::SocketAddr) -> PeerEntry {
    PeerEntry {
        key_set: "bench".into(),
        rate_limit_per_minute: 1_000_000,
        ..patchwork_tests::peer(identity, name, address)
    }
}

/// Writes `persons` persons with their involvements, and the practitioners
/// they need, straight into a stopped node's store (two writer threads,
/// batches of 1,000), as the node with `key_set` would index them.
fn load_store(dir: &Path, persons: u64) -> anyhow::Result<()> {
    let store = Arc::new(
        Store::open(
            dir,
            // A large cache for loading only (the node reopens the store
            // with its own): 1,000,000 persons load in minutes, not ten.
            &StoreOptions {
                cache_capacity_bytes: 1024 * 1024 * 1024,
            },
        )?
        .with_key_sets(vec![key_set()?])?,
    );
    let rules = Rules::new("nhs");
    let organisation = patchwork_tests::organisation("ORG-1", "Surrey CC", v1::Sector::SocialCare);
    store.put_organisations(
        &[validate::organisation(&organisation, "organisation")?],
        WriteMode::Upsert,
    )?;
    let practitioners = (0..PRACTITIONERS)
        .map(|n| {
            let p = patchwork_tests::practitioner(
                &practitioner_id(n),
                "Sam Carter",
                "Social worker",
                "ORG-1",
            );
            validate::practitioner(&p, "practitioner")
        })
        .collect::<Result<Vec<_>, _>>()?;
    store.put_practitioners(&practitioners, WriteMode::Upsert)?;

    const BATCH: u64 = 1_000;
    let threads = 2u64;
    for phase in ["persons", "involvements"] {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let store = store.clone();
                let rules = rules.clone();
                std::thread::spawn(move || -> anyhow::Result<()> {
                    let mut start = t * BATCH;
                    while start < persons {
                        let end = (start + BATCH).min(persons);
                        if phase == "persons" {
                            let batch = (start..end)
                                .map(|i| validate::person(&person(i), "person", &rules))
                                .collect::<Result<Vec<_>, _>>()?;
                            store.put_persons(&batch, WriteMode::Upsert)?;
                        } else {
                            let batch = (start..end)
                                .flat_map(|i| (0..INVOLVEMENTS_PER_PERSON).map(move |k| (i, k)))
                                .map(|(i, k)| {
                                    validate::involvement(
                                        &involvement(i, k),
                                        "involvement",
                                        InvolvementSource::Import,
                                        &rules,
                                    )
                                })
                                .collect::<Result<Vec<_>, _>>()?;
                            store.put_involvements(&batch, WriteMode::Upsert)?;
                        }
                        start += threads * BATCH;
                    }
                    Ok(())
                })
            })
            .collect();
        for handle in handles {
            match handle.join() {
                Ok(result) => result?,
                Err(_) => bail!("a loader thread panicked"),
            }
        }
    }
    let store = Arc::try_unwrap(store).map_err(|_| anyhow::anyhow!("store still shared"))?;
    futures::executor::block_on(store.flush())?;
    Ok(())
}

fn dir_bytes(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&entry.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// Sends SIGTERM to a node process when dropped, so an early return never
/// leaves it running.
struct ChildNode(u32);

impl Drop for ChildNode {
    fn drop(&mut self) {
        NODE_PID.store(0, Ordering::SeqCst);
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.0.to_string()])
            .status();
    }
}

fn proc_status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// `patchwork_tls_handshakes_accepted_total` from a node's `/metrics`.
async fn handshakes(node: &TestNode) -> u64 {
    let (_, body) = node.metrics().await;
    body.lines()
        .find_map(|l| l.strip_prefix("patchwork_tls_handshakes_accepted_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

fn lookup_request(subject: &v1::Person, local_only: bool) -> v1::LookupRequest {
    let mut request = patchwork_tests::lookup_request(demographics(subject), &practitioner_id(0));
    request.local_only = local_only;
    request
}

fn matched(response: &v1::LookupResponse) -> usize {
    response
        .answers
        .iter()
        .filter(|a| !a.involvements.is_empty())
        .count()
}

// ------------------------------------------------------------ scenarios

struct Figures(Vec<(String, String)>);

impl Figures {
    fn put(&mut self, name: &str, value: impl std::fmt::Display) {
        self.0.push((name.to_owned(), value.to_string()));
    }
}

const CONNECTIONS: usize = 4;
const IN_FLIGHT_PER_CONNECTION: usize = 64;

async fn local_lookup(sizes: &Sizes, figures: &mut Figures) -> anyhow::Result<()> {
    let n = sizes.persons;
    println!(
        "== 1. local lookup: {n} persons, {} involvements, {CONNECTIONS} connections × {IN_FLIGHT_PER_CONNECTION} in flight, every lookup audited durably",
        n * INVOLVEMENTS_PER_PERSON
    );
    let ca = TestCa::new(TRUST_DOMAIN);
    let portal = ca.client("portal");
    let grants = [ClientGrant {
        client: &portal,
        roles: &["records", "lookup"],
    }];
    let options = node_options(Some(sizes.cache_mb), Vec::new(), None);
    let mut node = TestNode::start_with(&ca, "lookup", &grants, options).await;
    node.stop().await;
    let data = node.config().store_dir();
    // `--reuse-store <dir>` (for profiling, e.g. several cache sizes): load
    // into <dir> once and point the node at it; later runs reuse it (and add
    // their lookups' audit entries to it).
    let reused = sizes.reuse_store.clone();
    let loaded_marker = reused
        .as_ref()
        .map(|dir| dir.join(format!("loaded-{n}-persons")));
    if let (Some(dir), Some(marker)) = (&reused, &loaded_marker)
        && marker.exists()
    {
        println!("  reusing the store loaded earlier in {}", dir.display());
    } else {
        let target = reused
            .as_ref()
            .map_or_else(|| data.clone(), |dir| dir.join("store"));
        let began = Instant::now();
        let loader = target.clone();
        tokio::task::spawn_blocking(move || load_store(&loader, n)).await??;
        let load_s = began.elapsed().as_secs_f64();
        println!(
            "  loaded the store directly in {load_s:.1} s ({:.0} persons/s with their involvements)",
            n as f64 / load_s
        );
        if let Some(marker) = &loaded_marker {
            std::fs::write(marker, b"")?;
        }
    }
    if let Some(dir) = &reused {
        if data.exists() {
            std::fs::remove_dir_all(&data)?;
        }
        std::os::unix::fs::symlink(dir.join("store"), &data)?;
    }
    let disk = dir_bytes(&data);
    // The node in a process of its own (this program, `--serve-node`), on
    // the port and config its last run had, with metrics on a fresh port.
    let metrics_port = TcpListener::bind("127.0.0.1:0").await?.local_addr()?.port();
    let began = Instant::now();
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .arg("--serve-node")
        .arg(&node.config_path)
        .arg(metrics_port.to_string())
        .spawn()
        .context("starting the node process")?;
    let child_node = ChildNode(child.id());
    NODE_PID.store(child.id(), Ordering::SeqCst);
    node.metrics_addr = ([127, 0, 0, 1], metrics_port).into();
    let probe_request = lookup_request(&person(n / 2), true);
    let probe = loop {
        if let Some(status) = child.try_wait()? {
            bail!("the node process exited while starting: {status}");
        }
        if began.elapsed() > Duration::from_secs(120) {
            bail!("the node process did not answer within 120 s");
        }
        if let Ok(channel) = node.try_channel(&portal).await
            && let Ok(answer) = patchwork_proto::v1::directory_client::DirectoryClient::new(channel)
                .lookup(probe_request.clone())
                .await
        {
            break answer.into_inner();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let startup = began.elapsed();
    println!(
        "  node start-up with {n} persons: {} ms; on disk {} MiB ({} bytes per person with involvements and indexes)",
        startup.as_millis(),
        disk >> 20,
        disk / n.max(1)
    );
    figures.put("startup_ms", startup.as_millis());
    figures.put("disk_bytes_per_person", disk / n.max(1));

    let mut clients = Vec::new();
    for _ in 0..CONNECTIONS {
        clients.push(node.directory(&portal).await);
    }
    if matched(&probe) != 1 {
        bail!("the probe lookup did not match its person: {probe:?}");
    }
    let clients = Arc::new(clients);
    let run = |duration: Duration| {
        let clients = clients.clone();
        closed_loop(
            CONNECTIONS * IN_FLIGHT_PER_CONNECTION,
            duration,
            move |worker, i| {
                let mut client = clients[worker % CONNECTIONS].clone();
                let who = (worker as u64 * 7_919 + i * 104_729) % n;
                async move {
                    let outcome = client.lookup(lookup_request(&person(who), true)).await;
                    let ok = outcome.as_ref().is_ok_and(|r| matched(r.get_ref()) == 1);
                    if !ok && !FIRST_FAILURE_SHOWN.swap(true, Ordering::Relaxed) {
                        let why = match &outcome {
                            Ok(r) => format!("{} answers matched", matched(r.get_ref())),
                            Err(status) => format!("{:?}: {}", status.code(), status.message()),
                        };
                        let p = person(who);
                        println!(
                            "  first failed lookup (person {who}: {} {}, {:?}, {}): {why}",
                            p.given_name, p.family_name, p.date_of_birth, p.postcode
                        );
                    }
                    ok
                }
            },
        )
    };
    run(sizes.warmup).await;
    // The store's growth over the measured run: every lookup writes two
    // audit entries (start, answer) and their index entries. The log's own
    // files are exact (each lookup syncs them); sled's file grows as its
    // buffers are written, so over thousands of lookups it is close.
    let audit_dir = data.join("audit-log");
    let (store_before, audit_before) = (dir_bytes(&data), dir_bytes(&audit_dir));
    let handshakes_before = handshakes(&node).await;
    let node_summary = run(sizes.run).await;
    let handshakes_after = handshakes(&node).await;
    let (store_after, audit_after) = (dir_bytes(&data), dir_bytes(&audit_dir));
    let lookups = node_summary.calls.max(1) as f64;
    let growth = store_after.saturating_sub(store_before) as f64 / lookups;
    let audit_growth = audit_after.saturating_sub(audit_before) as f64 / lookups;
    println!(
        "  store growth: {growth:.0} bytes an audited lookup ({audit_growth:.0} of them the audit log's own files, the rest sled: its indexes)"
    );
    figures.put("store_bytes_per_audited_lookup", format!("{growth:.0}"));
    figures.put("audit_log_bytes_per_lookup", format!("{audit_growth:.0}"));
    let peak_rss = proc_status_kib(child_node.0, "VmHWM:");
    let rss_now = proc_status_kib(child_node.0, "VmRSS:");
    // A key-set rotation under the same load: `patchwork reload` with a new
    // secret rebuilds the match index while lookups go on. Skipped on a
    // reused store, which later runs expect under the original secret.
    if reused.is_none() {
        node.replace_file("bench.key", ROTATED_SECRET_HEX, true);
        let load = tokio::spawn(run(sizes.run));
        let began = Instant::now();
        let reloaded = node
            .reload()
            .await
            .map_err(|status| anyhow::anyhow!("reload with a new secret: {status:?}"))?;
        let rotation = began.elapsed();
        let during = load.await?;
        let built = reloaded
            .changes
            .iter()
            .find(|change| change.contains("match index built"))
            .cloned()
            .unwrap_or_default();
        println!(
            "  key-set rotation under lookup load: reload took {} ms ({built}); lookups in the {} s window from its start: {:.0}/s, p99 {} µs, {} errors",
            rotation.as_millis(),
            sizes.run.as_secs(),
            during.per_s,
            during.p99_us,
            during.errors
        );
        figures.put("rotation_ms", rotation.as_millis());
        figures.put("lookup_p99_during_rotation_us", during.p99_us);
        figures.put("lookup_errors_during_rotation", during.errors);
    }
    drop(child_node); // SIGTERM: the node drains and flushes
    let stopped = tokio::task::spawn_blocking(move || child.wait()).await??;
    if !stopped.success() {
        bail!("the node process stopped with {stopped}");
    }

    let echo = echo::start(&ca, "echo").await?;
    let mut channels = Vec::new();
    for _ in 0..CONNECTIONS {
        channels.push(echo::channel(&echo, &portal, &ca).await?);
    }
    let channels = Arc::new(channels);
    let run_echo = |duration: Duration| {
        let channels = channels.clone();
        closed_loop(
            CONNECTIONS * IN_FLIGHT_PER_CONNECTION,
            duration,
            move |worker, _| {
                let channel = channels[worker % CONNECTIONS].clone();
                async move { echo::call(channel).await.is_ok() }
            },
        )
    };
    run_echo(sizes.warmup).await;
    let echo_summary = run_echo(sizes.run).await;
    compare("lookup", &node_summary, &echo_summary);
    let per_lookup =
        (handshakes_after - handshakes_before) as f64 / node_summary.calls.max(1) as f64;
    println!(
        "  TLS handshakes during the measured run: {} ({per_lookup:.4} per lookup)",
        handshakes_after - handshakes_before
    );
    println!(
        "  node process: peak RSS {} MiB from start-up to the end of the run ({} MiB at the end; cache_mb = {})",
        peak_rss >> 10,
        rss_now >> 10,
        sizes.cache_mb
    );
    figures.put("lookup_node_per_s", format!("{:.0}", node_summary.per_s));
    figures.put("lookup_echo_per_s", format!("{:.0}", echo_summary.per_s));
    figures.put(
        "lookup_vs_echo_ratio",
        format!("{:.3}", ratio(node_summary.per_s, echo_summary.per_s)),
    );
    figures.put(
        "lookup_cpu_vs_echo_ratio",
        format!(
            "{:.3}",
            ratio(echo_summary.cpu_us_per_call, node_summary.cpu_us_per_call)
        ),
    );
    figures.put("lookup_node_p99_us", node_summary.p99_us);
    figures.put("lookup_echo_p99_us", echo_summary.p99_us);
    figures.put(
        "lookup_p99_vs_echo_ratio",
        format!(
            "{:.2}",
            ratio(
                f64::from(node_summary.p99_us),
                f64::from(echo_summary.p99_us)
            )
        ),
    );
    figures.put("lookup_errors", node_summary.errors);
    figures.put(
        "lookup_node_cpu_us",
        format!("{:.1}", node_summary.cpu_us_per_call),
    );
    figures.put("lookup_handshakes_per_lookup", format!("{per_lookup:.4}"));
    figures.put("peak_rss_mib", peak_rss >> 10);
    node.stop().await;
    Ok(())
}

async fn seed_peer(node: &TestNode, portal: &ClientCert) -> anyhow::Result<()> {
    let mut directory = node.directory(portal).await;
    directory
        .create_organisation(v1::CreateOrganisationRequest {
            organisation: Some(patchwork_tests::organisation(
                "ORG-1",
                "Brighton & Hove CC",
                v1::Sector::SocialCare,
            )),
        })
        .await?;
    for n in 0..PRACTITIONERS.min(3) {
        directory
            .create_practitioner(v1::CreatePractitionerRequest {
                practitioner: Some(patchwork_tests::practitioner(
                    &practitioner_id(n),
                    "Sam Carter",
                    "Social worker",
                    "ORG-1",
                )),
            })
            .await?;
    }
    for i in 0..PERSONS_PER_PEER {
        directory
            .create_person(v1::CreatePersonRequest {
                person: Some(person(i)),
            })
            .await?;
        let mut involvement = involvement(i, 0);
        involvement.practitioner_id = practitioner_id(0);
        directory
            .record_involvement(v1::RecordInvolvementRequest {
                involvement: Some(involvement),
            })
            .await?;
    }
    Ok(())
}

async fn fanout(sizes: &Sizes, peers: usize, figures: &mut Figures) -> anyhow::Result<()> {
    let in_flight = 32;
    println!("== 2. federated lookup fan-out to {peers} peers, {in_flight} lookups in flight");
    let ca = TestCa::new(TRUST_DOMAIN);
    let portal = ca.client("portal");
    let grants = [ClientGrant {
        client: &portal,
        roles: &["records", "lookup"],
    }];
    let front_listener = TcpListener::bind("127.0.0.1:0").await?;
    let front_addr = front_listener.local_addr()?;
    let front_id = patchwork_certs::SpiffeId::node(ca.ca.trust_domain(), "front")?.to_string();
    let mut listeners = Vec::new();
    for _ in 0..peers {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        listeners.push((listener, addr));
    }
    let mut front_peers = Vec::new();
    let mut nodes = Vec::new();
    for (i, (listener, addr)) in listeners.into_iter().enumerate() {
        let name = format!("peer{i}");
        let identity = patchwork_certs::SpiffeId::node(ca.ca.trust_domain(), &name)?.to_string();
        front_peers.push(bench_peer(&identity, &name, addr));
        let front = bench_peer(&front_id, "front", front_addr);
        let options = node_options(None, vec![front], Some(listener));
        nodes.push(TestNode::start_with(&ca, &name, &grants, options).await);
    }
    futures::future::try_join_all(nodes.iter().map(|node| seed_peer(node, &portal))).await?;
    let front = TestNode::start_with(
        &ca,
        "front",
        &grants,
        node_options(None, front_peers, Some(front_listener)),
    )
    .await;
    seed_peer(&front, &portal).await?;
    // The front node holds the same persons: every lookup matches locally
    // and at every peer.
    let client = front.directory(&portal).await;
    let probe = client
        .clone()
        .lookup(lookup_request(&person(1), false))
        .await
        .context("a probe fan-out lookup")?
        .into_inner();
    println!(
        "  probe: {} answers, {} with involvements",
        probe.answers.len(),
        matched(&probe)
    );
    let run = |duration: Duration| {
        let client = client.clone();
        closed_loop(in_flight, duration, move |worker, i| {
            let mut client = client.clone();
            let who = (worker as u64 + i) % PERSONS_PER_PEER;
            async move {
                client
                    .lookup(lookup_request(&person(who), false))
                    .await
                    .is_ok_and(|r| matched(r.get_ref()) >= peers)
            }
        })
    };
    run(sizes.warmup).await;
    let mut before = 0;
    for node in &nodes {
        before += handshakes(node).await;
    }
    let node_summary = run(sizes.fanout_run).await;
    let mut after = 0;
    for node in &nodes {
        after += handshakes(node).await;
    }

    let mut echoes = Vec::new();
    let mut channels = Vec::new();
    for i in 0..peers {
        let echo = echo::start(&ca, &format!("echo{i}")).await?;
        channels.push(echo::channel(&echo, &portal, &ca).await?);
        echoes.push(echo);
    }
    let channels = Arc::new(channels);
    let run_echo = |duration: Duration| {
        let channels = channels.clone();
        closed_loop(in_flight, duration, move |_, _| {
            let calls = channels.iter().cloned().map(echo::call).collect::<Vec<_>>();
            async move {
                futures::future::join_all(calls)
                    .await
                    .iter()
                    .all(Result::is_ok)
            }
        })
    };
    run_echo(sizes.warmup).await;
    let echo_before: u64 = echoes.iter().map(|e| e.metrics.handshakes_accepted()).sum();
    let echo_summary = run_echo(sizes.fanout_run).await;
    let echo_after: u64 = echoes.iter().map(|e| e.metrics.handshakes_accepted()).sum();
    compare(&format!("fan-out {peers}"), &node_summary, &echo_summary);
    let per_lookup = (after - before) as f64 / node_summary.calls.max(1) as f64;
    println!(
        "  TLS handshakes on the peers during the measured run: {} ({per_lookup:.4} per lookup; echo servers: {})",
        after - before,
        echo_after - echo_before
    );
    figures.put(
        &format!("fanout{peers}_vs_echo_ratio"),
        format!("{:.3}", ratio(node_summary.per_s, echo_summary.per_s)),
    );
    figures.put(
        &format!("fanout{peers}_cpu_vs_echo_ratio"),
        format!(
            "{:.3}",
            ratio(echo_summary.cpu_us_per_call, node_summary.cpu_us_per_call)
        ),
    );
    figures.put(
        &format!("fanout{peers}_node_per_s"),
        format!("{:.0}", node_summary.per_s),
    );
    figures.put(&format!("fanout{peers}_node_p99_us"), node_summary.p99_us);
    figures.put(&format!("fanout{peers}_errors"), node_summary.errors);
    figures.put(
        &format!("fanout{peers}_handshakes_per_lookup"),
        format!("{per_lookup:.4}"),
    );
    Ok(())
}

async fn import(sizes: &Sizes, figures: &mut Figures) -> anyhow::Result<()> {
    let n = sizes.import_persons;
    println!(
        "== 3. import of {n} persons from CSV (patchwork_cli::cli::import_csv, match-key set configured)"
    );
    let scratch = tempfile::tempdir()?;
    let csv = scratch.path().join("persons.csv");
    {
        let mut out = std::io::BufWriter::new(std::fs::File::create(&csv)?);
        patchwork_cli::work::synth::write_persons(&mut out, n, 42)?;
        std::io::Write::flush(&mut out)?;
    }
    let ca = TestCa::new(TRUST_DOMAIN);
    let options = node_options(Some(sizes.cache_mb), Vec::new(), None);
    let node = TestNode::start_with(&ca, "import", &[], options).await;
    let began = Instant::now();
    let outcome = import_csv(
        &node.config(),
        &ImportRequest {
            kind: CsvKind::Persons,
            file: csv.clone(),
            dry_run: false,
            skip_bad_rows: false,
            mirror: false,
            force: false,
            progress: false,
        },
    )
    .await?;
    let import_s = began.elapsed().as_secs_f64();
    let report = outcome.report;
    if !report.applied || report.created != n {
        bail!("the import did not create every person: {report:?}");
    }
    let per_s = n as f64 / import_s;
    let bytes_per_person = dir_bytes(&node.config().store_dir()) as f64 / n as f64;

    // Baseline: the same number of records straight into sled, in batches.
    let sled_dir = scratch.path().join("sled");
    let text = std::fs::read_to_string(&csv)?;
    let rows: Vec<(String, Vec<u8>)> = text
        .lines()
        .skip(1)
        .map(|line| {
            let id = line.split(',').next().unwrap_or_default().to_owned();
            (id, line.as_bytes().to_vec())
        })
        .collect();
    let began = Instant::now();
    let sled_per_s = tokio::task::spawn_blocking(move || -> anyhow::Result<f64> {
        let db = sled::Config::new()
            .path(&sled_dir)
            .mode(sled::Mode::HighThroughput)
            .open()?;
        let tree = db.open_tree("persons")?;
        for chunk in rows.chunks(1_000) {
            let mut batch = sled::Batch::default();
            for (id, row) in chunk {
                batch.insert(id.as_bytes(), row.as_slice());
            }
            tree.apply_batch(batch)?;
        }
        db.flush()?;
        Ok(rows.len() as f64 / began.elapsed().as_secs_f64())
    })
    .await??;
    println!(
        "  node: {per_s:>9.0} persons/s ({import_s:.1} s); store {bytes_per_person:.0} B a person (no involvements)"
    );
    println!("  sled: {sled_per_s:>9.0} records/s (raw batches of 1,000, one flush)");
    println!("  node/sled {:.3}", ratio(per_s, sled_per_s));
    figures.put("import_persons_per_s", format!("{per_s:.0}"));
    figures.put("import_seconds", format!("{import_s:.1}"));
    figures.put("import_bytes_per_person", format!("{bytes_per_person:.0}"));
    figures.put("import_sled_records_per_s", format!("{sled_per_s:.0}"));
    figures.put(
        "import_vs_sled_ratio",
        format!("{:.3}", ratio(per_s, sled_per_s)),
    );
    Ok(())
}

fn matching_cost(sizes: &Sizes, figures: &mut Figures) -> anyhow::Result<()> {
    let n = sizes.matchkey_subjects;
    println!("== 5. match-key derivation over {n} subjects");
    let set = key_set()?;
    let subjects: Vec<Subject> = (0..n).map(|i| subject(&person(i))).collect();
    let per = |work: &dyn Fn(&Subject) -> usize| {
        let began = Instant::now();
        let total: usize = subjects.iter().map(work).sum();
        (
            began.elapsed().as_secs_f64() * 1e6 / n as f64,
            total as f64 / n as f64,
        )
    };
    let (index_us, index_keys_n) = per(&|s| index_keys(&set, s).len());
    let (query_us, query_keys_n) = per(&|s| query_keys(&set, s).len());
    let (index2_us, index2_keys_n) = per(&|s| index_keys_v2(&set, s).len());
    let (query2_us, query2_bytes) = per(&|s| {
        query_match_keys(&set, s)
            .iter()
            .map(prost::Message::encoded_len)
            .sum()
    });
    println!(
        "  version 1: per person (index keys, {index_keys_n:.1} keys): {index_us:.2} µs; per query ({query_keys_n:.1} keys): {query_us:.2} µs"
    );
    println!(
        "  version 2: per person ({index2_keys_n:.1} keys): {index2_us:.2} µs; per query (keys and tokens, {query2_bytes:.0} bytes): {query2_us:.2} µs"
    );
    figures.put("matchkeys_per_person_us", format!("{index_us:.2}"));
    figures.put("matchkeys_per_query_us", format!("{query_us:.2}"));
    figures.put("matchkeys_v2_per_person_us", format!("{index2_us:.2}"));
    figures.put("matchkeys_v2_per_query_us", format!("{query2_us:.2}"));

    let held = sizes.persons as usize;
    let per_class = if held >= 1_000_000 { 1_000 } else { 100 };
    for (name, label, scheme, geography) in [
        (
            "England, NHS numbers",
            "england",
            Scheme::Nhs,
            Geography::England,
        ),
        (
            "Victoria, 7-digit numbers",
            "victoria",
            Scheme::Opaque(7),
            Geography::Victoria,
        ),
    ] {
        println!(
            "== 6. matching evaluation, {name}, {held} persons held, {per_class} queries a class"
        );
        let began = Instant::now();
        let population = Population::new(PopulationSpec {
            held,
            scheme,
            geography,
            seed: 0x51ed,
        });
        println!(
            "  population built in {:.1} s",
            began.elapsed().as_secs_f64()
        );
        let mut scoring = Scoring::new(set.clone(), Weights::default());
        let report = evaluate(name, &population, &mut scoring, per_class, 0xa5);
        println!("{}", report.table());
        for example in &report.wrong_examples {
            println!("  a wrong person disclosed (stress rows are outside the totals): {example}");
        }
        let mut keys_only = KeysOnly::new(set.clone());
        let baseline = evaluate(name, &population, &mut keys_only, per_class, 0xa5);
        let total = report.held_total();
        println!(
            "  recall {:.4} (version 1's keys alone: {:.4}); wrong-person disclosures {} ({})",
            total.recall(),
            baseline.held_total().recall(),
            report.wrong_total(),
            baseline.wrong_total()
        );
        figures.put(
            &format!("match_{label}_recall"),
            format!("{:.4}", total.recall()),
        );
        figures.put(
            &format!("match_{label}_recall_v1"),
            format!("{:.4}", baseline.held_total().recall()),
        );
        figures.put(&format!("match_{label}_wrong"), report.wrong_total());
        figures.put(
            &format!("match_{label}_weakest_single_field"),
            report
                .weakest_single_field()
                .map_or(String::new(), |(_, recall)| format!("{recall:.4}")),
        );
        figures.put(
            &format!("match_{label}_us_per_query"),
            format!("{:.1}", report.micros_per_query()),
        );
        figures.put(
            &format!("match_{label}_index_entries_per_person"),
            format!(
                "{:.1}",
                report.footprint.entries as f64 / report.held as f64
            ),
        );
    }
    Ok(())
}

/// `--only <scenario>` runs one scenario (lookup, fanout, import,
/// matching); `--persons <n>` overrides the population, `--seconds <n>` the
/// length of each measured run, `--cache-mb <n>` the nodes' store cache,
/// `--reuse-store <dir>` keeps the lookup scenario's loaded store. Both are for
/// profiling one scenario at a time; the documented runs use neither.
/// `--serve-node <config> <metrics port>`: runs one node until SIGTERM. The
/// lookup scenario starts its node this way, in a child process, so that
/// the node's memory (peak RSS) and start-up are its own, not mixed with
/// the loader's and the clients'.
fn serve_node(config_path: &str, metrics_port: &str) -> anyhow::Result<()> {
    patchwork_certs::install_crypto_provider();
    let config = patchwork_server::NodeConfig::load(Path::new(config_path))?;
    let metrics_port: u16 = metrics_port.parse().context("metrics port")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let listeners = patchwork_server::Listeners {
            api: TcpListener::bind(config.api.listen).await?,
            metrics: Some(TcpListener::bind(("127.0.0.1", metrics_port)).await?),
        };
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        patchwork_server::run_with(config, listeners, async move {
            terminate.recv().await;
        })
        .await?;
        anyhow::Ok(())
    })
}

fn main() -> anyhow::Result<()> {
    let args = <Args as clap::Parser>::parse();
    if let Some([config, metrics_port]) = args.serve_node.as_deref() {
        return serve_node(config, metrics_port);
    }
    let quick = args.quick;
    let mut sizes = Sizes::new(quick);
    if let Some(persons) = args.persons {
        sizes.persons = persons;
        sizes.import_persons = persons;
    }
    if let Some(seconds) = args.seconds {
        sizes.run = Duration::from_secs(seconds);
        sizes.fanout_run = Duration::from_secs(seconds);
    }
    if let Some(cache_mb) = args.cache_mb {
        sizes.cache_mb = cache_mb;
    }
    sizes.reuse_store = args.reuse_store;
    let wanted = |scenario: Scenario| args.only.is_none_or(|only| only == scenario);
    patchwork_certs::install_crypto_provider();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let began = Instant::now();
    println!(
        "patchwork-bench ({} mode), {} CPUs; node and baseline share this process and its tokio runtime",
        if quick { "quick" } else { "full" },
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let mut figures = Figures(Vec::new());
    runtime.block_on(async {
        if wanted(Scenario::Lookup) {
            local_lookup(&sizes, &mut figures).await?;
        }
        if wanted(Scenario::Fanout) {
            for &peers in sizes.fanouts {
                fanout(&sizes, peers, &mut figures).await?;
            }
        }
        if wanted(Scenario::Import) {
            import(&sizes, &mut figures).await?;
        }
        anyhow::Ok(())
    })?;
    if wanted(Scenario::Matching) {
        matching_cost(&sizes, &mut figures)?;
    }
    figures.put("persons", sizes.persons);
    figures.put("elapsed_s", format!("{:.1}", began.elapsed().as_secs_f64()));
    println!("== figures");
    for (name, value) in &figures.0 {
        println!("{name}={value}");
    }
    Ok(())
}
