//! `deploy/federation-up.sh` with the built binary: three councils as real,
//! separate `patchwork serve` processes with two CAs, CSR-signed
//! certificates, CRLs, shared match-key secrets and agreements. A federated
//! lookup from Surrey is answered by all three; Brighton killed with SIGKILL
//! is reported unreachable by the next lookup; started again from the same
//! config, it answers again; `deploy/federation-down.sh` stops them all.
//! The script runs as the operations guide writes it, `deploy/federation-up.sh
//! DIR`, finding the checkout's built binary without `PATCHWORK` or `PATH`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_patchwork");
const NODES: [&str; 3] = ["surrey", "brighton", "melbourne"];

fn deploy(script: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy")
        .join(script)
}

fn run(command: &mut Command) -> Output {
    let output = command.output().expect("run");
    assert!(
        output.status.success(),
        "{command:?} failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// A checkout as the operations guide assumes one: `deploy/` (the scripts
/// copied, the examples linked) and the built binary at
/// `target/release/patchwork` — so the guide's command runs as written,
/// with no `PATCHWORK` and no `patchwork` on `PATH`.
fn checkout(root: &Path, with_binary: bool) -> PathBuf {
    let deploy_dir = root.join("deploy");
    std::fs::create_dir_all(&deploy_dir).expect("deploy/");
    for script in ["federation-up.sh", "federation-down.sh"] {
        std::fs::copy(deploy(script), deploy_dir.join(script)).expect("copy script");
    }
    std::os::unix::fs::symlink(
        deploy("examples").canonicalize().expect("examples"),
        deploy_dir.join("examples"),
    )
    .expect("link examples");
    if with_binary {
        let release = root.join("target/release");
        std::fs::create_dir_all(&release).expect("target/release");
        std::os::unix::fs::symlink(
            Path::new(BIN).canonicalize().expect("binary"),
            release.join("patchwork"),
        )
        .expect("link binary");
    }
    root.to_owned()
}

/// `deploy/federation-up.sh DIR [NAME]` in `checkout`, as the guide writes it.
fn guide_command(checkout: &Path, dir: &Path, only: Option<&str>) -> Command {
    let mut command = Command::new("bash");
    command
        .arg(checkout.join("deploy/federation-up.sh"))
        .arg(dir)
        .args(only)
        .env_remove("PATCHWORK")
        .env_remove("CARGO_TARGET_DIR")
        .env("PATH", "/usr/bin:/bin");
    command
}

fn up(checkout: &Path, dir: &Path, ports: &[u16; 3], only: Option<&str>) -> Output {
    let output = run(guide_command(checkout, dir, only)
        .env("PATCHWORK_PORTS", ports.map(|p| p.to_string()).join(" ")));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let used = checkout.join("target/release/patchwork");
    assert!(
        stdout.contains(&format!("using {}", used.display())),
        "the script names the checkout's binary:\n{stdout}"
    );
    output
}

#[test]
fn without_a_binary_the_script_says_how_to_get_one_and_creates_nothing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let bare = checkout(&tmp.path().join("checkout"), false);
    let dir = tmp.path().join("federation");
    let output = guide_command(&bare, &dir, None).output().expect("run");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("no patchwork binary")
            && stderr.contains("cargo build --release")
            && stderr.contains("PATCHWORK="),
        "{stderr}"
    );
    assert!(!dir.exists(), "nothing created");
}

/// Stops the federation however the test ends.
struct Federation {
    dir: PathBuf,
}

impl Federation {
    fn down(&self) -> Output {
        run(Command::new("bash")
            .arg(deploy("federation-down.sh"))
            .arg(&self.dir))
    }

    fn pid(&self, node: &str) -> u32 {
        std::fs::read_to_string(self.dir.join(format!("{node}.pid")))
            .expect("pid file")
            .trim()
            .parse()
            .expect("pid")
    }

    /// Surrey asks about Amelia; each node's id and outcome.
    fn lookup(&self) -> Vec<(String, String)> {
        let config = self.dir.join("surrey/node.toml");
        let output = run(Command::new(BIN).args([
            "lookup",
            "--config",
            config.to_str().expect("utf-8 path"),
            "--as",
            "PR-004",
            "--basis",
            "child-safeguarding",
            "--reason",
            "s.47 enquiry after a school referral",
            "--given",
            "Amelia",
            "--family",
            "Smith-Jones",
            "--dob",
            "2015-03-14",
            "--json",
        ]));
        let answer: serde_json::Value =
            serde_json::from_slice(&output.stdout).expect("lookup --json");
        answer["answers"]
            .as_array()
            .expect("answers")
            .iter()
            .map(|a| {
                (
                    a["node_id"].as_str().expect("node_id").to_owned(),
                    a["outcome"].as_str().expect("outcome").to_owned(),
                )
            })
            .collect()
    }
}

impl Drop for Federation {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(deploy("federation-down.sh"))
            .arg(&self.dir)
            .output();
    }
}

fn outcome_of<'a>(answers: &'a [(String, String)], node: &str) -> &'a str {
    answers
        .iter()
        .find(|(id, _)| id.ends_with(&format!("/node/{node}")))
        .map(|(_, outcome)| outcome.as_str())
        .unwrap_or_else(|| panic!("no answer from {node}: {answers:?}"))
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| stat.split(' ').nth(2) != Some("Z"))
        .unwrap_or(false)
}

fn free_ports() -> [u16; 3] {
    let listeners: Vec<std::net::TcpListener> = (0..3)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind"))
        .collect();
    let ports: Vec<u16> = listeners
        .iter()
        .map(|l| l.local_addr().expect("addr").port())
        .collect();
    [ports[0], ports[1], ports[2]]
}

#[test]
fn the_federation_script_runs_three_councils_that_survive_losing_one() {
    let started = Instant::now();
    let tmp = tempfile::tempdir().expect("tempdir");
    let ports = free_ports();
    let checkout = checkout(&tmp.path().join("checkout"), true);
    let federation = Federation {
        dir: tmp.path().join("federation"),
    };
    up(&checkout, &federation.dir, &ports, None);
    let pids = NODES.map(|node| federation.pid(node));
    assert!(pids.iter().all(|pid| alive(*pid)), "three live processes");
    assert!(pids[0] != pids[1] && pids[1] != pids[2] && pids[0] != pids[2]);
    for node in NODES {
        assert!(federation.dir.join(format!("{node}.log")).exists());
    }

    let answers = federation.lookup();
    assert_eq!(answers.len(), 3, "{answers:?}");
    for node in NODES {
        assert_eq!(outcome_of(&answers, node), "matched", "{answers:?}");
    }

    // Brighton dies without a chance to say goodbye.
    let brighton = federation.pid("brighton");
    run(Command::new("kill").args(["-KILL", &brighton.to_string()]));
    let deadline = Instant::now() + Duration::from_secs(10);
    while alive(brighton) {
        assert!(Instant::now() < deadline, "brighton outlived SIGKILL");
        std::thread::sleep(Duration::from_millis(20));
    }
    let answers = federation.lookup();
    assert_eq!(
        outcome_of(&answers, "brighton"),
        "unreachable",
        "{answers:?}"
    );
    assert_eq!(outcome_of(&answers, "surrey"), "matched");
    assert_eq!(outcome_of(&answers, "melbourne"), "matched");

    // Started again from the same config, it answers again.
    up(&checkout, &federation.dir, &ports, Some("brighton"));
    assert_ne!(federation.pid("brighton"), brighton);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let answers = federation.lookup();
        if outcome_of(&answers, "brighton") == "matched" {
            assert_eq!(outcome_of(&answers, "melbourne"), "matched");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "brighton did not answer again: {answers:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let pids = NODES.map(|node| federation.pid(node));
    let down = federation.down();
    assert!(
        String::from_utf8_lossy(&down.stdout)
            .matches("stopped")
            .count()
            == 3,
        "{}",
        String::from_utf8_lossy(&down.stdout)
    );
    for (node, pid) in NODES.iter().zip(pids) {
        assert!(!alive(pid), "{node} still running after federation-down");
        assert!(!federation.dir.join(format!("{node}.pid")).exists());
    }
    eprintln!("deploy script test took {:?}", started.elapsed());
}
