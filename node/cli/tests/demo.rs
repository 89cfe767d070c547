//! `patchwork demo` as a newcomer runs it: the real binary, three real
//! nodes, the cross-border lookup — and a whole run's log holding none of
//! the synthetic persons' names, dates of birth, NHS numbers or addresses.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use patchwork_cli::demo::{DEFAULT_PERSONS, SHARED_CHILD, seed_records};

const BIN: &str = env!("CARGO_BIN_EXE_patchwork");
/// Debug for our crates: whatever they might log, the test sees.
const LOG_FILTER: &str = "info,patchwork_server=debug,patchwork_store=debug,patchwork_cli=debug,patchwork_federation=debug,patchwork_certs=debug";
const WITHIN: Duration = Duration::from_secs(180);

struct Demo {
    child: Child,
    stdout: mpsc::Receiver<String>,
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

fn spawn(args: &[&str], tmpdir: &Path) -> Demo {
    let mut child = Command::new(BIN)
        .args(args)
        .env("RUST_LOG", LOG_FILTER)
        .env("TMPDIR", tmpdir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run patchwork demo");
    let (lines, stdout) = mpsc::channel();
    let out = child.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let mut err = child.stderr.take().expect("stderr");
    let stderr = std::thread::spawn(move || {
        let mut log = String::new();
        let _ = err.read_to_string(&mut log);
        log
    });
    Demo {
        child,
        stdout,
        stderr: Some(stderr),
    }
}

impl Demo {
    /// Every stdout line until `marker` (inclusive), or until the demo exits.
    fn read_until(&self, marker: Option<&str>) -> Vec<String> {
        let deadline = Instant::now() + WITHIN;
        let mut lines = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stdout.recv_timeout(left) {
                Ok(line) => {
                    let done = marker.is_some_and(|m| line.contains(m));
                    lines.push(line);
                    if done {
                        return lines;
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => return lines,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    panic!(
                        "the demo printed no {marker:?} within {WITHIN:?}:\n{}",
                        lines.join("\n")
                    )
                }
            }
        }
    }

    fn wait(mut self) -> (ExitStatus, String) {
        let deadline = Instant::now() + WITHIN;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "the demo did not exit within {WITHIN:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        let log = self
            .stderr
            .take()
            .map(|reader| reader.join().expect("stderr reader"))
            .unwrap_or_default();
        (status, log)
    }
}

/// Strings that would identify a synthetic person: the shared child's every
/// detail, and the names, dates of birth and identifiers of every 20th person
/// of each council.
fn personal_data() -> Vec<String> {
    let child = &SHARED_CHILD;
    let mut personal = vec![
        child.given_name.to_owned(),
        child.family_name.to_owned(),
        child.date_of_birth.to_string(),
        child.nhs_number.to_owned(),
    ];
    for (records, child_id) in seed_records(DEFAULT_PERSONS) {
        for (n, person) in records.persons.iter().enumerate() {
            if person.id == child_id {
                personal.extend([person.postcode.clone(), person.address.clone()]);
            } else if n % 20 == 0 {
                personal.push(format!("{} {}", person.given_name, person.family_name));
                personal.push(person.address.clone());
                if let Some(d) = &person.date_of_birth {
                    personal.push(format!("{:04}-{:02}-{:02}", d.year, d.month, d.day));
                }
                if let Some(id) = &person.national_id {
                    personal.push(id.value.clone());
                }
            }
        }
    }
    personal
}

fn assert_no_personal_data(what: &str, text: &str, personal: &[String]) {
    for item in personal {
        assert!(
            !holds(text, item),
            "the demo's {what} holds personal data ({item}):\n{text}"
        );
    }
}

/// Whether `text` holds `item`. A number (a Victorian postcode such as 3053,
/// an identifier) counts only standing alone: inside a longer number — a
/// timestamp's microseconds, a port — it is not that datum.
fn holds(text: &str, item: &str) -> bool {
    if !item.bytes().all(|b| b.is_ascii_digit()) {
        return text.contains(item);
    }
    text.match_indices(item).any(|(at, _)| {
        let before = text[..at].bytes().last();
        let after = text[at + item.len()..].bytes().next();
        !before.is_some_and(|b| b.is_ascii_digit()) && !after.is_some_and(|b| b.is_ascii_digit())
    })
}

#[test]
fn demo_once_finds_the_child_in_all_three_councils_and_logs_no_personal_data() {
    let tmp = tempfile::tempdir().expect("tempdir");
    // `--json` implies `--once`; `--verbose` puts the nodes' log on stderr.
    let demo = spawn(&["demo", "--json", "--verbose"], tmp.path());
    let stdout = demo.read_until(None).join("\n");
    let (status, log) = demo.wait();
    assert!(status.success(), "{status}\nstdout:\n{stdout}\nlog:\n{log}");

    let response: serde_json::Value =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: not JSON:\n{stdout}"));
    let answers = response["answers"].as_array().expect("answers");
    for node in [
        "spiffe://england.patchwork/node/surrey",
        "spiffe://england.patchwork/node/brighton",
        "spiffe://vic.patchwork/node/melbourne",
    ] {
        let answer = answers
            .iter()
            .find(|a| a["node_id"] == node)
            .unwrap_or_else(|| panic!("no answer from {node}: {response:#}"));
        assert_eq!(answer["outcome"], "matched", "{answer:#}");
        let involvements = answer["involvements"].as_array().expect("involvements");
        assert!(!involvements.is_empty(), "{answer:#}");
        for involvement in involvements {
            if involvement["sensitivity"] == "restricted" {
                assert!(
                    involvement.get("practitioner").is_none()
                        && involvement["gatekeeper"]["name"].is_string()
                        && involvement["service"] == "",
                    "{involvement:#}"
                );
            } else {
                assert!(
                    involvement["practitioner"]["name"].is_string(),
                    "{involvement:#}"
                );
            }
        }
    }
    let brighton = answers
        .iter()
        .find(|a| a["node_id"] == "spiffe://england.patchwork/node/brighton")
        .expect("brighton");
    assert!(
        brighton["involvements"]
            .as_array()
            .expect("involvements")
            .iter()
            .any(|i| i["sensitivity"] == "restricted"),
        "Brighton & Hove's restricted service appears, as its gatekeeper: {brighton:#}"
    );

    let personal = personal_data();
    assert_no_personal_data("log", &log, &personal);
    // The answer names practitioners, never the person asked about.
    assert_no_personal_data("answer", &stdout, &personal[..4]);
    assert!(log.contains("lookup answered"), "{log}");

    let left: Vec<PathBuf> = std::fs::read_dir(tmp.path())
        .expect("tmpdir")
        .map(|e| e.expect("entry").path())
        .collect();
    assert!(
        left.is_empty(),
        "the temporary folder was not removed: {left:?}"
    );
}

fn key_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            if !path.ends_with("data") {
                key_files(&path, found);
            }
        } else if path.extension().is_some_and(|e| e == "key") {
            found.push(path);
        }
    }
}

#[test]
fn the_printed_commands_work_against_the_running_demo_until_sigterm() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("demo");
    let demo = spawn(
        &[
            "demo",
            "--dir",
            dir.to_str().expect("utf-8 path"),
            "--log-json",
        ],
        tmp.path(),
    );
    let printed = demo.read_until(Some("the demo is running"));
    let exe = std::fs::canonicalize(BIN).expect("binary");
    let commands: Vec<&str> = printed
        .iter()
        .map(|line| line.trim())
        .filter(|line| line.starts_with(exe.to_str().expect("utf-8 path")))
        .collect();
    assert!(commands.len() >= 6, "{}", printed.join("\n"));

    let mut outputs = String::new();
    for command in &commands {
        let out = Command::new("sh")
            .args(["-c", command])
            .output()
            .expect("sh");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{command}\n{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        outputs.push_str(&text);
    }
    // Both lookups found her everywhere; the subject-access report shows
    // who asked Brighton & Hove; the audit log verifies.
    assert_eq!(outputs.matches("): matched").count(), 6, "{outputs}");
    assert!(outputs.contains("contact its gatekeeper"), "{outputs}");
    assert!(
        outputs.contains("through:      spiffe://england.patchwork/node/surrey"),
        "{outputs}"
    );
    assert!(
        outputs.contains("through:      spiffe://vic.patchwork/node/melbourne"),
        "{outputs}"
    );
    assert!(outputs.contains("audit log intact"), "{outputs}");
    assert!(outputs.contains("days left"), "{outputs}");

    let mut keys = Vec::new();
    key_files(&dir, &mut keys);
    // Two CA keys, three node keys, five match-key secrets.
    assert_eq!(keys.len(), 10, "{keys:?}");
    #[cfg(unix)]
    for key in &keys {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(key).expect("key").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", key.display());
    }
    let check = Command::new(BIN)
        .args(["config", "check", "--config"])
        .arg(dir.join("melbourne/node.toml"))
        .output()
        .expect("config check");
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(!String::from_utf8_lossy(&check.stdout).contains("no CRLs configured"));

    let sigterm = Command::new("kill")
        .args(["-TERM", &demo.child.id().to_string()])
        .status()
        .expect("kill");
    assert!(sigterm.success());
    let rest = demo.read_until(None).join("\n");
    let (status, log) = demo.wait();
    assert!(status.success(), "{status}\n{rest}\n{log}");
    assert!(rest.contains("kept"), "{rest}");
    assert!(
        dir.join("surrey/node.toml").exists(),
        "--dir keeps the folder"
    );
    assert!(log.trim().is_empty(), "stderr is warnings only: {log}");
    let log = std::fs::read_to_string(dir.join("demo.log")).expect("the demo's log");
    assert!(log.contains("lookup answered"), "{log}");
    assert_no_personal_data("log", &log, &personal_data());
}

/// What a newcomer sees: the story on stdout, no log lines on stderr; the
/// nodes' log in `demo.log` in the kept folder.
#[test]
fn demo_once_prints_the_story_and_keeps_the_log_in_its_folder() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("demo");
    let demo = spawn(
        &["demo", "--once", "--dir", dir.to_str().expect("utf-8 path")],
        tmp.path(),
    );
    let stdout = demo.read_until(None).join("\n");
    let (status, stderr) = demo.wait();
    assert!(status.success(), "{status}\n{stdout}\n{stderr}");
    assert!(
        stderr.trim().is_empty(),
        "stderr holds only warnings and errors, and there are none:\n{stderr}"
    );
    assert!(!stdout.contains(" INFO "), "{stdout}");
    assert!(
        stdout.contains("as designed: all three councils"),
        "{stdout}"
    );
    let log_path = dir.join("demo.log");
    assert!(
        stdout.contains(&log_path.display().to_string()),
        "the story names where the log is:\n{stdout}"
    );
    let log = std::fs::read_to_string(&log_path).expect("the demo's log");
    assert!(
        log.contains("INFO") && log.contains("lookup answered"),
        "{log}"
    );
}

#[test]
fn a_folder_in_use_is_refused_and_left_alone() {
    let tmp = tempfile::tempdir().expect("tempdir");
    std::fs::write(tmp.path().join("notes.txt"), "mine").expect("write");
    let out = Command::new(BIN)
        .args(["demo", "--once", "--dir"])
        .arg(tmp.path())
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--dir:") && stderr.contains("not empty"),
        "{stderr}"
    );
    assert_eq!(std::fs::read_dir(tmp.path()).expect("dir").count(), 1);
}
