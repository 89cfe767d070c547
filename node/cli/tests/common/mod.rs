//! What the tests that drive the real `patchwork` binary share: running it,
//! the example records, a quickstart node on a free port, and reading back
//! the involvements of the example persons.

// Each test file compiles this module on its own and uses part of it.
#![allow(dead_code)]

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use patchwork_proto::v1::{self, admin_client::AdminClient, directory_client::DirectoryClient};
use patchwork_server::NodeConfig;

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_patchwork");

/// The persons in deploy/examples/persons.csv.
pub(crate) const PERSONS: [&str; 5] = ["P-1001", "P-1002", "P-1003", "P-1004", "P-1005"];

pub(crate) fn patchwork(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .output()
        .expect("run patchwork")
}

/// Runs a command that must succeed; `context` names the moment in the
/// test if it does not.
pub(crate) fn must_pass(context: &str, args: &[&str]) -> String {
    let out = patchwork(args);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{context}: {args:?}: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

pub(crate) fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/examples")
}

/// A free port on 127.0.0.1, as `host:port` (released for the node to bind).
pub(crate) fn free_listen_address() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    format!("127.0.0.1:{port}")
}

/// `patchwork quickstart` into `dir` on a free port: the config's path.
pub(crate) fn quickstart(dir: &Path) -> PathBuf {
    must_pass(
        "quickstart",
        &[
            "quickstart",
            "--dir",
            dir.to_str().expect("path"),
            "--listen",
            &free_listen_address(),
        ],
    );
    dir.join("node.toml")
}

/// Every involvement id the running node lists for the example persons,
/// ended ones too.
pub(crate) async fn stored_involvements(config: &NodeConfig) -> HashSet<String> {
    let mut directory = DirectoryClient::new(
        patchwork_cli::work::client::connect(config)
            .await
            .expect("connect"),
    );
    let mut stored = HashSet::new();
    for person in PERSONS {
        let list = directory
            .list_involvements(v1::ListInvolvementsRequest {
                person_id: person.into(),
                include_ended: true,
            })
            .await
            .expect("list")
            .into_inner();
        stored.extend(list.involvements.into_iter().map(|i| i.id));
    }
    stored
}

/// A `patchwork serve` child, killed when dropped.
pub(crate) struct Node(pub(crate) Child);

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `patchwork serve` and waits until it answers `GetStats`.
pub(crate) async fn start(config_path: &str, config: &NodeConfig) -> Node {
    let node = Node(
        Command::new(BIN)
            .args(["serve", "--config", config_path])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("serve"),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(channel) = patchwork_cli::work::client::connect(config).await
            && AdminClient::new(channel)
                .get_stats(v1::GetStatsRequest {})
                .await
                .is_ok()
        {
            return node;
        }
        assert!(Instant::now() < deadline, "node did not come up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// SIGKILL, then reap.
pub(crate) fn kill_9(node: &mut Node) {
    node.0.kill().expect("SIGKILL");
    node.0.wait().expect("reap");
}
