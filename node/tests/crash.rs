//! Crash consistency: a node killed with SIGKILL while it acknowledges
//! involvement writes and runs an import loses nothing it acknowledged, and
//! its store is never left half-written across its indexes.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use patchwork_node::NodeConfig;
use patchwork_proto::v1::{self, admin_client::AdminClient, directory_client::DirectoryClient};
use rand::{Rng, SeedableRng};

const BIN: &str = env!("CARGO_BIN_EXE_patchwork");
const ROUNDS: usize = 6;
const WRITERS: usize = 4;
const PERSONS: [&str; 5] = ["P-1001", "P-1002", "P-1003", "P-1004", "P-1005"];

fn patchwork(args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .output()
        .expect("run patchwork")
}

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples")
}

struct Node(Child);

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn start(config_path: &str, config: &NodeConfig) -> Node {
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
        if let Ok(channel) = patchwork_node::client::connect(config).await
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

fn kill_9(node: &mut Node) {
    node.0.kill().expect("SIGKILL");
    node.0.wait().expect("reap");
}

/// Records involvements until the node dies; returns the ids it acknowledged.
async fn write_until_killed(
    config: NodeConfig,
    acknowledged: Arc<Mutex<Vec<String>>>,
    writer: usize,
) {
    let Ok(channel) = patchwork_node::client::connect(&config).await else {
        return;
    };
    let mut directory = DirectoryClient::new(channel);
    for n in 0.. {
        let request = v1::RecordInvolvementRequest {
            involvement: Some(v1::Involvement {
                person_id: PERSONS[(writer + n) % PERSONS.len()].into(),
                practitioner_id: "PR-005".into(),
                service: "Youth work".into(),
                start_date: Some(v1::Date {
                    year: 2024,
                    month: 1,
                    day: 1,
                }),
                sensitivity: v1::Sensitivity::Standard as i32,
                ..Default::default()
            }),
        };
        match directory.record_involvement(request).await {
            Ok(reply) => acknowledged
                .lock()
                .expect("lock")
                .push(reply.into_inner().id),
            Err(_) => return,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_writes_survive_sigkill_and_indexes_stay_whole() {
    patchwork_certs::install_crypto_provider();
    let seed: u64 = rand::random();
    eprintln!("crash test seed {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);

    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("node");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let listen = format!("127.0.0.1:{port}");
    assert!(
        patchwork(&[
            "quickstart",
            "--dir",
            dir.to_str().expect("path"),
            "--listen",
            &listen
        ])
        .status
        .success()
    );
    let config_path = dir.join("node.toml");
    let config_arg = config_path.to_str().expect("path").to_owned();
    let config = NodeConfig::load(&config_path).expect("config");
    let bulk = tmp.path().join("bulk.csv");
    let bulk_arg = bulk.to_str().expect("path").to_owned();
    assert!(
        patchwork(&["synth", "persons", "--count", "30000", "--out", &bulk_arg])
            .status
            .success()
    );

    let mut node = start(&config_arg, &config).await;
    for kind in ["organisations", "practitioners", "persons"] {
        let file = examples().join(format!("{kind}.csv"));
        let out = patchwork(&[
            "import",
            kind,
            "--config",
            &config_arg,
            "--file",
            file.to_str().expect("path"),
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    for round in 0..ROUNDS {
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| tokio::spawn(write_until_killed(config.clone(), acknowledged.clone(), w)))
            .collect();
        // Every other round an import is running too when the node dies.
        let import = (round % 2 == 1).then(|| {
            Command::new(BIN)
                .args([
                    "import",
                    "persons",
                    "--quiet",
                    "--config",
                    &config_arg,
                    "--file",
                    &bulk_arg,
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("import")
        });
        tokio::time::sleep(Duration::from_millis(rng.random_range(50..400))).await;
        kill_9(&mut node);
        for writer in writers {
            writer.await.expect("writer");
        }
        if let Some(mut import) = import {
            import.wait().expect("import ends when the node dies");
        }
        let check = patchwork(&["store", "check", "--config", &config_arg]);
        assert!(
            check.status.success(),
            "round {round}: {}{}",
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );
        node = start(&config_arg, &config).await;
    }

    let acknowledged = acknowledged.lock().expect("lock").clone();
    assert!(
        acknowledged.len() >= ROUNDS,
        "the writers got some writes acknowledged"
    );
    let mut directory = DirectoryClient::new(
        patchwork_node::client::connect(&config)
            .await
            .expect("connect"),
    );
    let mut stored = std::collections::HashSet::new();
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
    eprintln!(
        "{} acknowledged writes over {ROUNDS} kills",
        acknowledged.len()
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
    kill_9(&mut node);
}
