//! A full disk: a real `patchwork serve` process whose files may not grow
//! past a limit (RLIMIT_FSIZE, set on the running process with `prlimit`,
//! so writes past it fail with EFBIG as on a full disk; SIGXFSZ ignored, so
//! the kernel reports the error instead of killing the process). Unlike a
//! loop-mounted or tmpfs folder this needs no root, so it runs everywhere.
//!
//! What it shows: once the store cannot write, every write and every lookup
//! is refused UNAVAILABLE with a message saying why (a lookup discloses
//! nothing: its audit entry cannot be written, once the audit log's own
//! files cannot grow either), health reports NOT_SERVING
//! and the process keeps running. sled 0.34 keeps the first write error
//! until the store is reopened, so giving the space back is not enough: the
//! node goes on refusing until it is restarted, and after a restart
//! everything acknowledged before the fault is there, the indexes and the
//! audit chain check clean, and writes and lookups work again.

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use patchwork_proto::v1::{self, directory_client::DirectoryClient};
use patchwork_server::NodeConfig;
use tonic::Code;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

mod common;

use common::{BIN, PERSONS, examples, quickstart, stored_involvements};
/// How far the store may grow once the limit is set: enough for sled to
/// finish the segment it is writing, small enough to fill in seconds.
const HEADROOM_BYTES: u64 = 2 * 1024 * 1024;
/// Writers at once (they share flushes, so the store fills faster).
const WRITERS: usize = 4;
/// Rows in deploy/examples/involvements.csv.
const EXAMPLE_INVOLVEMENTS: usize = 8;

/// A running `patchwork serve` and everything it wrote to stderr.
struct Node {
    child: Child,
    log: Arc<Mutex<String>>,
}

impl Node {
    fn pid(&self) -> String {
        self.child.id().to_string()
    }

    fn log(&self) -> String {
        self.log.lock().expect("log lock").clone()
    }

    fn is_running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the node with SIGXFSZ ignored (`trap '' XFSZ` in the shell that
/// then becomes the node: an ignored signal stays ignored across exec), its
/// log read from a pipe (a log file would hit the size limit itself).
async fn start(config_path: &str, config: &NodeConfig) -> Node {
    let mut child = Command::new("sh")
        .args([
            "-c",
            "trap '' XFSZ; exec \"$0\" serve --config \"$1\"",
            BIN,
            config_path,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("serve");
    let log = Arc::new(Mutex::new(String::new()));
    let mut stderr = child.stderr.take().expect("stderr");
    let sink = log.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stderr.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock()
                .expect("log lock")
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    let mut node = Node { child, log };
    let deadline = Instant::now() + Duration::from_secs(30);
    while health(config).await != Some(ServingStatus::Serving) {
        assert!(node.is_running(), "node exited at start: {}", node.log());
        assert!(Instant::now() < deadline, "node did not come up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    node
}

/// What the node's `grpc.health.v1` says overall (None: no answer).
async fn health(config: &NodeConfig) -> Option<ServingStatus> {
    let channel = patchwork_cli::work::client::connect(config).await.ok()?;
    let answer = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .ok()?;
    ServingStatus::try_from(answer.into_inner().status).ok()
}

fn involvement(person: &str, n: usize) -> v1::RecordInvolvementRequest {
    v1::RecordInvolvementRequest {
        involvement: Some(v1::Involvement {
            person_id: person.into(),
            practitioner_id: "PR-005".into(),
            // Long (100 characters is the limit) so the store fills sooner.
            service: format!("{n:08} youth work {}", "x".repeat(80)),
            start_date: Some(date(2024, 1, 1)),
            sensitivity: v1::Sensitivity::Standard as i32,
            ..Default::default()
        }),
    }
}

fn date(year: i32, month: i32, day: i32) -> v1::Date {
    v1::Date { year, month, day }
}

fn amelia() -> v1::LookupRequest {
    v1::LookupRequest {
        subject: Some(v1::Demographics {
            given_name: "Amelia".into(),
            family_name: "Smith-Jones".into(),
            date_of_birth: Some(date(2015, 3, 14)),
            ..Default::default()
        }),
        purpose: Some(v1::Purpose {
            lawful_basis: v1::LawfulBasis::ChildSafeguarding as i32,
            reason: "disk full test".into(),
        }),
        requester: Some(v1::Requester {
            practitioner_id: "PR-005".into(),
            ..Default::default()
        }),
        local_only: true,
        ..Default::default()
    }
}

/// Records involvements until one is refused; returns the ids acknowledged
/// and the first refusal.
async fn write_until_refused(
    config: NodeConfig,
    writer: usize,
    acknowledged: Arc<Mutex<Vec<String>>>,
) -> tonic::Status {
    let mut directory = DirectoryClient::new(
        patchwork_cli::work::client::connect(&config)
            .await
            .expect("connect"),
    );
    for n in 0..200_000 {
        let person = PERSONS[(writer + n) % PERSONS.len()];
        match directory
            .record_involvement(involvement(person, writer * 1_000_000 + n))
            .await
        {
            Ok(reply) => acknowledged
                .lock()
                .expect("lock")
                .push(reply.into_inner().id),
            Err(status) => return status,
        }
    }
    panic!("writer {writer}: 200 000 writes and the store never filled");
}

/// Runs a command that must succeed.
fn must_pass(args: &[&str]) -> String {
    common::must_pass("disk full", args)
}

fn prlimit(node: &Node, limit: &str) {
    let out = Command::new("prlimit")
        .args(["--pid", &node.pid(), &format!("--fsize={limit}")])
        .output()
        .expect("run prlimit (util-linux)");
    assert!(
        out.status.success(),
        "prlimit --fsize={limit}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The size of the largest file in `dir` (sled's log, in practice).
fn largest_file(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .expect("store dir")
        .filter_map(|entry| entry.ok()?.metadata().ok())
        .filter(|meta| meta.is_file())
        .map(|meta| meta.len())
        .max()
        .unwrap_or(0)
}

fn assert_store_cannot_write(status: &tonic::Status, what: &str) {
    assert_eq!(status.code(), Code::Unavailable, "{what}: {status:?}");
    assert!(
        status.message().contains("cannot write to its store"),
        "{what}: the message says why: {status:?}"
    );
}

/// A lookup on a failing store discloses nothing: refused at its audit
/// append, or earlier, when sled cannot even read the requester's records
/// (sled 0.34 answers reads with its kept write error too).
fn assert_lookup_refused(status: &tonic::Status) {
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        status.message() == "this node cannot write its audit log, so it discloses nothing"
            || status
                .message()
                .starts_with("the node cannot write to its store"),
        "a lookup discloses nothing it cannot audit: {status:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_disk_refuses_writes_and_disclosures_and_a_restart_recovers() {
    patchwork_certs::install_crypto_provider();
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("node");
    let config_path = quickstart(&dir);
    let mut toml = std::fs::read_to_string(&config_path).expect("node.toml");
    toml.push_str("\n[metrics]\nenabled = false\n");
    std::fs::write(&config_path, toml).expect("node.toml");
    let config_arg = config_path.to_str().expect("path").to_owned();
    let config = NodeConfig::load(&config_path).expect("config");
    let store_dir = config.store_dir();

    let mut node = start(&config_arg, &config).await;
    for kind in ["organisations", "practitioners", "persons", "involvements"] {
        let file = examples().join(format!("{kind}.csv"));
        must_pass(&[
            "import",
            kind,
            "--config",
            &config_arg,
            "--file",
            file.to_str().expect("path"),
        ]);
    }
    let mut directory = DirectoryClient::new(
        patchwork_cli::work::client::connect(&config)
            .await
            .expect("connect"),
    );
    let answered = directory
        .lookup(amelia())
        .await
        .expect("lookup")
        .into_inner();
    assert!(
        answered.answers.iter().any(|a| !a.involvements.is_empty()),
        "before the fault a lookup discloses Amelia's team"
    );

    // The disk fills: the store's files may grow a little, then no more.
    let limit = largest_file(&store_dir) + HEADROOM_BYTES;
    // Only the soft limit: the hard one stays unlimited, so the soft one can
    // be raised again without privilege (CAP_SYS_RESOURCE).
    prlimit(&node, &format!("{limit}:unlimited"));
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let started = Instant::now();
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| tokio::spawn(write_until_refused(config.clone(), w, acknowledged.clone())))
        .collect();
    for writer in writers {
        let refusal = writer.await.expect("writer");
        assert_store_cannot_write(&refusal, "the write that found the disk full");
    }
    let acknowledged = acknowledged.lock().expect("lock").clone();
    eprintln!(
        "store full after {} acknowledged writes in {:?} (file size limit {limit} bytes)",
        acknowledged.len(),
        started.elapsed()
    );
    assert!(node.is_running(), "the node survives: {}", node.log());
    // The audit log's own files are smaller than sled's, so the limit above
    // leaves them room a full disk would not: now no file may grow at all.
    prlimit(
        &node,
        &format!("{}:unlimited", largest_file(&store_dir.join("audit-log"))),
    );

    // Everything is refused cleanly while the disk is full.
    let refused = directory
        .record_involvement(involvement("P-1001", 0))
        .await
        .expect_err("a write on a full disk");
    assert_store_cannot_write(&refused, "a write");
    let refused = directory
        .lookup(amelia())
        .await
        .expect_err("a lookup on a full disk");
    assert_lookup_refused(&refused);
    assert_eq!(
        health(&config).await,
        Some(ServingStatus::NotServing),
        "health says the node cannot serve"
    );

    // Space returns. sled keeps its first write error until the store is
    // reopened, so the running node still refuses (honestly) and stays
    // NOT_SERVING; it does not pretend to have recovered.
    prlimit(&node, "unlimited:unlimited");
    let refused = directory
        .record_involvement(involvement("P-1001", 1))
        .await
        .expect_err("sled still holds the write error");
    assert_store_cannot_write(&refused, "a write after space returned");
    // (A lookup may answer again now: its audit entry is in the log's own
    // files, which write again; whether sled still reads decides.)
    assert_eq!(health(&config).await, Some(ServingStatus::NotServing));
    assert!(node.is_running(), "the node survives: {}", node.log());

    // The operator restarts it (SIGTERM, as systemd would).
    drop(directory);
    let term = Command::new("kill")
        .args(["-TERM", &node.pid()])
        .status()
        .expect("kill -TERM");
    assert!(term.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = node.child.try_wait().expect("try_wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "the node did not stop");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let log = node.log();
    assert!(!log.contains("panicked"), "no panic: {log}");
    assert!(
        log.contains("store failing: health reports not serving"),
        "the log says why: {log}"
    );
    // Its last flush fails too, and it says so with exit code 1 (not a
    // signal, not a panic's 101), so a supervisor sees a failed stop.
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains("error: store in"), "{log}");
    drop(node);

    must_pass(&["store", "check", "--config", &config_arg]);
    let verified = must_pass(&[
        "audit",
        "verify",
        "--offline",
        "--json",
        "--config",
        &config_arg,
    ]);
    assert!(verified.contains("\"intact\":true"), "{verified}");

    let node = start(&config_arg, &config).await;
    let stored = stored_involvements(&config).await;
    // Writes refused at the flush ran in memory and may be on disk: the
    // refusal said so ("may or may not be kept"), and here is how many were.
    eprintln!(
        "after the restart: {} acknowledged writes all present, {} refused ones kept",
        acknowledged.len(),
        stored
            .len()
            .saturating_sub(acknowledged.len() + EXAMPLE_INVOLVEMENTS)
    );
    let lost: Vec<_> = acknowledged
        .iter()
        .filter(|id| !stored.contains(*id))
        .collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged writes lost: {lost:?}",
        lost.len(),
        acknowledged.len()
    );
    let mut directory = DirectoryClient::new(
        patchwork_cli::work::client::connect(&config)
            .await
            .expect("connect"),
    );
    let recorded = directory
        .record_involvement(involvement("P-1001", 2))
        .await
        .expect("a write after the restart")
        .into_inner();
    assert!(stored_involvements(&config).await.contains(&recorded.id));
    let answered = directory
        .lookup(amelia())
        .await
        .expect("a lookup after the restart")
        .into_inner();
    assert!(answered.answers.iter().any(|a| !a.involvements.is_empty()));
    assert_eq!(health(&config).await, Some(ServingStatus::Serving));
    let log = node.log();
    assert!(!log.contains("panicked"), "no panic: {log}");
}
