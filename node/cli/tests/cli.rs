//! The `patchwork` binary as an operator uses it: quickstart, config check,
//! serve, import, lookup, stats, and a clean stop on SIGTERM.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_patchwork");

fn patchwork(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .output()
        .expect("run patchwork")
}

fn out_json(path: &Path) -> Vec<u8> {
    std::fs::read(path).expect("read")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/examples")
}

struct Served(Child);

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.0.kill();
    }
}

fn sigterm(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

fn wait_exit(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "patchwork did not exit within {within:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `patchwork serve` with its log captured, once it answers `stats`.
fn serve_logged(config_arg: &str) -> Served {
    let serve = Served(
        Command::new(BIN)
            .args(["serve", "--config", config_arg])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("serve"),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while !patchwork(&["stats", "--config", config_arg])
        .status
        .success()
    {
        assert!(Instant::now() < deadline, "node never answered");
        std::thread::sleep(Duration::from_millis(50));
    }
    serve
}

/// SIGTERM; the node drains and exits 0; its log.
fn stop_for_log(serve: &mut Served) -> String {
    sigterm(&serve.0);
    let status = wait_exit(&mut serve.0, Duration::from_secs(20));
    assert!(status.success(), "SIGTERM drains and exits 0: {status:?}");
    let mut log = String::new();
    std::io::Read::read_to_string(serve.0.stderr.as_mut().expect("stderr"), &mut log).expect("log");
    log
}

#[test]
fn an_operator_session_from_quickstart_to_sigterm() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("node");
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let dir_arg = dir.to_str().expect("utf-8 path");
    let out = patchwork(&[
        "quickstart",
        "--dir",
        dir_arg,
        "--node-id",
        "surrey",
        "--listen",
        &listen,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for key in ["ca.key", "node.key", "portal.key"] {
            let mode = std::fs::metadata(dir.join(key))
                .expect("key")
                .permissions()
                .mode()
                & 0o777;
            assert_eq!(mode, 0o600, "{key}");
        }
    }
    let again = patchwork(&["quickstart", "--dir", dir_arg]);
    assert!(!again.status.success(), "quickstart never overwrites");

    let config = dir.join("node.toml");
    let config_arg = config.to_str().expect("utf-8 path");
    let check = patchwork(&["config", "check", "--config", config_arg]);
    assert!(check.status.success(), "{}", text(&check.stderr));
    assert!(text(&check.stdout).contains("spiffe://patchwork/node/surrey"));

    let mut serve = serve_logged(config_arg);

    // A second node on the same port fails with one line naming the key.
    let busy = patchwork(&["serve", "--config", config_arg]);
    assert!(!busy.status.success());
    assert!(
        text(&busy.stderr).contains("api.listen"),
        "{}",
        text(&busy.stderr)
    );

    for kind in ["organisations", "practitioners", "persons", "involvements"] {
        let file = examples().join(format!("{kind}.csv"));
        let out = patchwork(&[
            "import",
            kind,
            "--config",
            config_arg,
            "--file",
            file.to_str().expect("path"),
        ]);
        assert!(
            out.status.success(),
            "{kind}: {}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
    }

    let bad = tmp.path().join("bad.csv");
    std::fs::write(
        &bad,
        "id,given_name,family_name,date_of_birth,postcode,address,national_id\nP-9,Al,,,,,\n",
    )
    .expect("write");
    let out = patchwork(&[
        "import",
        "persons",
        "--config",
        config_arg,
        "--file",
        bad.to_str().expect("path"),
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(1), "bad rows exit 1");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json report");
    assert_eq!(report["errors"][0]["line"], 2);
    assert_eq!(report["errors"][0]["field"], "family_name");
    assert_eq!(report["applied"], false);

    let out = patchwork(&[
        "lookup",
        "--config",
        config_arg,
        "--as",
        "PR-004",
        "--basis",
        "child-safeguarding",
        "--reason",
        "s.47 enquiry after a school referral",
        "--given",
        "Amelia",
        "--family",
        "smith jones",
        "--dob",
        "2015-03-14",
        "--json",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json lookup");
    assert_eq!(answer["answers"][0]["outcome"], "matched");
    assert_eq!(
        answer["answers"][0]["involvements"]
            .as_array()
            .expect("involvements")
            .len(),
        2
    );

    let out = patchwork(&[
        "lookup",
        "--config",
        config_arg,
        "--as",
        "PR-004",
        "--basis",
        "child-safeguarding",
        "--reason",
        "s.47 enquiry after a school referral",
        "--given",
        "Zoe",
        "--family",
        "OBrien",
        "--dob",
        "2008-07-21",
    ]);
    let shown = text(&out.stdout);
    assert!(
        shown.contains("a restricted service is involved"),
        "{shown}"
    );
    assert!(
        !shown.contains("Sexual health ("),
        "a restricted service's name is never shown: {shown}"
    );

    let out = patchwork(&["stats", "--config", config_arg, "--json"]);
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json stats");
    assert_eq!(stats["persons"], 5);
    assert_eq!(stats["involvements"], 8);

    // Trust status, SIGHUP and `patchwork reload` each bring new material
    // into force (the generation moves on) without a restart.
    let generation = || {
        let out = patchwork(&["trust", "status", "--config", config_arg, "--json"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let status: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json status");
        assert_eq!(status["identity"], "spiffe://patchwork/node/surrey");
        let expiries = status["expiries"].as_array().expect("expiries");
        assert!(expiries.iter().any(|e| {
            e["what"]
                .as_str()
                .is_some_and(|w| w.starts_with("own certificate"))
        }));
        status["generation"].as_u64().expect("generation")
    };
    let before = generation();
    let hup = Command::new("kill")
        .args(["-HUP", &serve.0.id().to_string()])
        .status()
        .expect("kill -HUP");
    assert!(hup.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    while generation() == before {
        assert!(Instant::now() < deadline, "SIGHUP did not reload");
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = patchwork(&["reload", "--config", config_arg]);
    assert!(
        out.status.success() && text(&out.stdout).contains("reloaded"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(generation(), before + 2);

    // Witnessing: a node without peers has its own checkpoint key (made at
    // the first start, 0600) and nothing to report, online and offline alike.
    let out = patchwork(&["audit", "witness", "--config", config_arg]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let online = text(&out.stdout);
    assert!(
        online.starts_with("this node's checkpoint key: patchwork/node/surrey/audit+"),
        "{online}"
    );
    assert!(online.contains("no witness has cosigned a checkpoint of this node's log yet"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let key = dir.join("data").join("audit-signing.key");
        let mode = std::fs::metadata(&key)
            .expect("checkpoint key")
            .permissions()
            .mode();
        assert_eq!(
            mode & 0o777,
            0o600,
            "the checkpoint key is the node's alone"
        );
    }

    // Subject access with its proof: the report proves offline against the
    // node's key; the same report with one word changed, or checked against
    // another key, does not.
    let node_key = online
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("this node's checkpoint key: "))
        .expect("key line")
        .to_owned();
    let out = patchwork(&[
        "audit", "subject", "--config", config_arg, "--person", "P-1001", "--json",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report_file = tmp.path().join("report.json");
    std::fs::write(&report_file, &out.stdout).expect("write report");
    let report_arg = report_file.to_str().expect("path");
    let out = patchwork(&["audit", "prove", report_arg, "--key", &node_key]);
    assert!(
        out.status.success() && text(&out.stdout).starts_with("report proven: its 1 entries"),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let mut report: serde_json::Value =
        serde_json::from_slice(&out_json(&report_file)).expect("json");
    report["entries"][0]["reason"] = "routine check".into();
    let altered = tmp.path().join("altered.json");
    std::fs::write(&altered, report.to_string()).expect("write");
    let out = patchwork(&[
        "audit",
        "prove",
        altered.to_str().expect("path"),
        "--key",
        &node_key,
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stdout).contains("the report does not say what the entry says"),
        "{}",
        text(&out.stdout)
    );
    let other_key = node_key.replacen("surrey", "brighton", 1);
    let out = patchwork(&["audit", "prove", report_arg, "--key", &other_key]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));

    // Erasure: a reason naming the person is refused; then the person goes.
    let out = patchwork(&[
        "erase",
        "person",
        "P-1001",
        "--config",
        config_arg,
        "--reason",
        "Amelia's mother asked",
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("reason: contains the person's name"),
        "{}",
        text(&out.stderr)
    );
    let out = patchwork(&[
        "erase",
        "person",
        "P-1001",
        "--config",
        config_arg,
        "--reason",
        "erasure request DPO-2026-114",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with("erased person P-1001: the person record, 3 involvements"),
        "{}",
        text(&out.stdout)
    );
    let out = patchwork(&["stats", "--config", config_arg, "--json"]);
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json stats");
    assert_eq!(stats["persons"], 4);
    assert_eq!(stats["involvements"], 5);

    let log = stop_for_log(&mut serve);
    let out = patchwork(&[
        "audit",
        "witness",
        "--config",
        config_arg,
        "--offline",
        "--json",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let offline: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        offline["verifier_key"].as_str(),
        online
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("this node's checkpoint key: "))
    );
    for personal in ["Amelia", "Smith", "9434765919", "2015-03-14", "O'Brien"] {
        assert!(
            !log.contains(personal),
            "the log holds personal data ({personal}):\n{log}"
        );
    }
}

#[test]
fn bad_config_and_loose_key_permissions_fail_with_one_line_naming_the_key() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("node");
    let dir_arg = dir.to_str().expect("utf-8 path");
    assert!(
        patchwork(&["quickstart", "--dir", dir_arg])
            .status
            .success()
    );
    let config = dir.join("node.toml");
    let config_arg = config.to_str().expect("utf-8 path");
    let original = std::fs::read_to_string(&config).expect("config");

    std::fs::write(
        &config,
        original.replace("[api]", "[api]\nlisten_address = 1"),
    )
    .expect("write");
    let out = patchwork(&["config", "check", "--config", config_arg]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("listen_address"),
        "{}",
        text(&out.stderr)
    );

    std::fs::write(&config, &original).expect("write");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.join("node.key"), std::fs::Permissions::from_mode(0o644))
            .expect("chmod");
        let out = patchwork(&["serve", "--config", config_arg]);
        assert_eq!(out.status.code(), Some(1));
        let stderr = text(&out.stderr);
        assert!(
            stderr.contains("tls.key_file") && stderr.contains("chmod 600"),
            "{stderr}"
        );
        assert_eq!(stderr.trim().lines().count(), 1, "one clear line: {stderr}");
        std::fs::set_permissions(dir.join("node.key"), std::fs::Permissions::from_mode(0o600))
            .expect("chmod");
    }

    // Every other way a start can fail: one line naming what to fix.
    let serve_fails = |expected: &[&str]| {
        let out = patchwork(&["serve", "--config", config_arg]);
        assert_eq!(out.status.code(), Some(1));
        let stderr = text(&out.stderr);
        for part in expected {
            assert!(stderr.contains(part), "expected {part:?} in: {stderr}");
        }
        assert_eq!(stderr.trim().lines().count(), 1, "one clear line: {stderr}");
    };
    // A missing key.
    std::fs::rename(dir.join("node.key"), dir.join("node.key.away")).expect("move key");
    serve_fails(&["tls.key_file", "cannot read"]);
    std::fs::rename(dir.join("node.key.away"), dir.join("node.key")).expect("move key back");
    // An expired own certificate (issued by the same CA, same key).
    let ca_cert = std::fs::read_to_string(dir.join("ca.crt")).expect("ca.crt");
    let ca_key = std::fs::read_to_string(dir.join("ca.key")).expect("ca.key");
    let ca = patchwork_certs::CertificateAuthority::from_pem(&ca_cert, &ca_key).expect("ca");
    let now = time::OffsetDateTime::now_utc();
    let expired = ca
        .issue_with_validity(
            &patchwork_certs::LeafParams {
                identity: patchwork_certs::SpiffeId::node("patchwork", "local").expect("id"),
                dns_names: vec!["localhost".into()],
                ip_addresses: vec![],
                validity_days: 1,
            },
            now - time::Duration::days(40),
            now - time::Duration::days(10),
        )
        .expect("issue");
    let current = std::fs::read(dir.join("node.crt")).expect("node.crt");
    std::fs::write(dir.join("node.crt"), &expired.cert_pem).expect("write");
    serve_fails(&["tls.cert_file", "expired"]);
    std::fs::write(dir.join("node.crt"), current).expect("restore");
    // An unreadable trust bundle.
    std::fs::write(dir.join("ca.crt"), "not a certificate").expect("write");
    serve_fails(&["tls.trust_bundle"]);
    std::fs::write(dir.join("ca.crt"), ca_cert).expect("restore");
    // A config that is not TOML at all.
    std::fs::write(&config, "this is = not [valid").expect("write");
    serve_fails(&["config"]);
}

/// `config check` makes every check `serve` makes before it listens: a
/// config it passes cannot then be refused at start-up (issue 13, point 10).
#[cfg(unix)]
#[test]
fn config_check_refuses_everything_serve_refuses_with_the_same_line() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("node");
    let dir_arg = dir.to_str().expect("utf-8 path");
    let listen = format!("127.0.0.1:{}", free_port());
    assert!(
        patchwork(&["quickstart", "--dir", dir_arg, "--listen", &listen])
            .status
            .success()
    );
    let config = dir.join("node.toml");
    let config_arg = config.to_str().expect("utf-8 path");
    let mut text_config = std::fs::read_to_string(&config).expect("config");
    text_config.push_str(
        "\n[federation]\n[[federation.key_sets]]\nname = \"england\"\nsecret_file = \"england.key\"\n",
    );
    std::fs::write(&config, text_config).expect("write");
    let secret = dir.join("england.key");
    let chmod = |path: &Path, mode: u32| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod")
    };
    std::fs::write(&secret, "ab".repeat(32)).expect("write secret");
    chmod(&secret, 0o600);
    let ok = patchwork(&["config", "check", "--config", config_arg]);
    assert!(ok.status.success(), "{}", text(&ok.stderr));
    // The key set's fingerprint, to compare with its peers' (point 9); never
    // the secret.
    let fingerprint = patchwork_federation::matchkeys::KeySet::new("england", &[0xab; 32])
        .expect("set")
        .fingerprint();
    let stdout = text(&ok.stdout);
    assert!(
        stdout.contains(&format!("key set england: fingerprint {fingerprint}")),
        "{stdout}"
    );
    assert!(!stdout.contains(&"ab".repeat(8)), "{stdout}");

    let both_refuse = |case: &str, expected: &[&str]| {
        let check = patchwork(&["config", "check", "--config", config_arg]);
        let serve = patchwork(&["serve", "--config", config_arg]);
        for (verb, out) in [("config check", &check), ("serve", &serve)] {
            assert_eq!(out.status.code(), Some(1), "{case}: {verb} must refuse");
            let stderr = text(&out.stderr);
            for part in expected {
                assert!(
                    stderr.contains(part),
                    "{case}: {verb}: expected {part:?} in: {stderr}"
                );
            }
        }
        assert_eq!(
            text(&check.stderr).trim().lines().last(),
            text(&serve.stderr).trim().lines().last(),
            "{case}: the same reason from both"
        );
    };
    // A match-key secret others can read.
    chmod(&secret, 0o644);
    both_refuse(
        "secret 0644",
        &["federation.key_sets[0].secret_file", "chmod 600"],
    );
    // A match-key secret too short to be one.
    chmod(&secret, 0o600);
    std::fs::write(&secret, "abcd").expect("write secret");
    both_refuse(
        "secret too short",
        &["federation.key_sets[0].secret_file", "64 hex digits"],
    );
    std::fs::write(&secret, "ab".repeat(32)).expect("write secret");
    // A data folder others can enter.
    let data = dir.join("data");
    std::fs::create_dir_all(&data).expect("data");
    chmod(&data, 0o755);
    both_refuse("data folder 0755", &["node.data_dir", "chmod 700"]);
    chmod(&data, 0o700);
    // The node's key readable by others.
    chmod(&dir.join("node.key"), 0o644);
    both_refuse("node.key 0644", &["tls.key_file", "chmod 600"]);
    chmod(&dir.join("node.key"), 0o600);
    let ok = patchwork(&["config", "check", "--config", config_arg]);
    assert!(ok.status.success(), "{}", text(&ok.stderr));
}

/// `config init` writes a commented node.toml for a named node and its
/// peers that `config check` passes once the files it names exist; it never
/// overwrites, and a listen address must be an IP literal (issue 13, point 11).
#[cfg(unix)]
#[test]
fn config_init_writes_a_config_that_passes_config_check_once_its_files_exist() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().expect("tempdir");
    let material = tmp.path().join("material");
    let material_arg = material.to_str().expect("utf-8 path");
    assert!(
        patchwork(&["quickstart", "--dir", material_arg, "--node-id", "surrey"])
            .status
            .success()
    );
    let site = tmp.path().join("etc");
    std::fs::create_dir(&site).expect("etc");
    let config = site.join("node.toml");
    let config_arg = config.to_str().expect("utf-8 path");
    let file = |name: &str| material.join(name).to_str().expect("path").to_owned();
    let listen = format!("127.0.0.1:{}", free_port());
    let init = |out: &str, listen: &str| {
        patchwork(&[
            "config",
            "init",
            "--out",
            out,
            "--identity",
            "spiffe://patchwork/node/surrey",
            "--display-name",
            "Surrey \"County\" Council",
            "--listen",
            listen,
            "--data-dir",
            "data",
            "--cert",
            &file("node.crt"),
            "--key",
            &file("node.key"),
            "--trust",
            &file("ca.crt"),
            "--key-set",
            "england=secrets/england.key",
            "--peer",
            "Brighton & Hove=spiffe://patchwork/node/brighton@patchwork.brighton-hove.gov.uk:7443",
            "--peer",
            "Kent=spiffe://patchwork/node/kent@10.0.0.7:7443#england",
        ])
    };
    let out = init(config_arg, &listen);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let written = std::fs::read_to_string(&config).expect("config");
    assert!(written.contains("# "), "commented: {written}");
    for part in [
        "spiffe://patchwork/node/surrey",
        "spiffe://patchwork/node/brighton",
        "Brighton & Hove",
        "patchwork.brighton-hove.gov.uk:7443",
        "Kent",
        &listen,
    ] {
        assert!(written.contains(part), "{part} in: {written}");
    }

    // The secret it names does not exist yet: the check says which key.
    let check = patchwork(&["config", "check", "--config", config_arg]);
    assert_eq!(check.status.code(), Some(1));
    assert!(
        text(&check.stderr).contains("federation.key_sets[0].secret_file"),
        "{}",
        text(&check.stderr)
    );
    std::fs::create_dir(site.join("secrets")).expect("secrets");
    let secret = site.join("secrets/england.key");
    std::fs::write(&secret, "0f".repeat(32)).expect("secret");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let check = patchwork(&["config", "check", "--config", config_arg]);
    assert!(check.status.success(), "{}", text(&check.stderr));
    assert!(
        text(&check.stdout).contains("spiffe://patchwork/node/surrey"),
        "{}",
        text(&check.stdout)
    );

    // Never overwrites.
    let again = init(config_arg, &listen);
    assert_eq!(again.status.code(), Some(1));
    assert!(
        text(&again.stderr).contains("never overwrites"),
        "{}",
        text(&again.stderr)
    );
    assert_eq!(std::fs::read_to_string(&config).expect("config"), written);

    // A host name as listen address: refused, saying an IP address is needed,
    // on the command line and in the file.
    let other = site.join("other.toml");
    let by_name = init(other.to_str().expect("path"), "localhost:7443");
    assert_eq!(by_name.status.code(), Some(2));
    assert!(
        text(&by_name.stderr).contains("host names are not accepted"),
        "{}",
        text(&by_name.stderr)
    );
    assert!(!other.exists());
    std::fs::write(
        &config,
        written.replace(
            &format!("listen = \"{listen}\""),
            "listen = \"localhost:7443\"",
        ),
    )
    .expect("write");
    let check = patchwork(&["config", "check", "--config", config_arg]);
    assert_eq!(check.status.code(), Some(1));
    let stderr = text(&check.stderr);
    assert!(
        stderr.contains("listen") && stderr.contains("host names are not accepted"),
        "{stderr}"
    );
}

/// Issue 13, point 5: a refused reload is logged and counted the same whether SIGHUP or
/// `patchwork reload` asked, and the old material stays in force.
#[test]
fn a_refused_reload_is_logged_and_counted_whoever_asked() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("node");
    let listen = format!("127.0.0.1:{}", free_port());
    let metrics = format!("127.0.0.1:{}", free_port());
    let dir_arg = dir.to_str().expect("utf-8 path");
    let out = patchwork(&["quickstart", "--dir", dir_arg, "--listen", &listen]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let config = dir.join("node.toml");
    let config_arg = config.to_str().expect("utf-8 path");
    // A CRL from the node's own CA, valid at start.
    let ca = patchwork_certs::CertificateAuthority::from_pem(
        &std::fs::read_to_string(dir.join("ca.crt")).expect("ca.crt"),
        &std::fs::read_to_string(dir.join("ca.key")).expect("ca.key"),
    )
    .expect("ca");
    let now = time::OffsetDateTime::now_utc();
    let crl = ca
        .crl(&[], 1, now, now + time::Duration::days(7))
        .expect("crl");
    std::fs::write(dir.join("crl.pem"), &crl).expect("crl");
    let text_config = std::fs::read_to_string(&config)
        .expect("config")
        .replace("[tls]\n", "[tls]\ncrl_files = [\"crl.pem\"]\n")
        + &format!("\n[metrics]\nlisten = \"{metrics}\"\n");
    std::fs::write(&config, text_config).expect("write config");

    let mut serve = serve_logged(config_arg);
    let refused_count = || {
        let mut stream = std::net::TcpStream::connect(&metrics).expect("metrics");
        std::io::Write::write_all(
            &mut stream,
            b"GET /metrics HTTP/1.1\r\nHost: m\r\nConnection: close\r\n\r\n",
        )
        .expect("scrape");
        let mut body = String::new();
        std::io::Read::read_to_string(&mut stream, &mut body).expect("scrape");
        body.lines()
            .find_map(|line| line.strip_prefix("patchwork_tls_reloads_refused_total "))
            .unwrap_or_else(|| panic!("no refused-reload counter in {body}"))
            .trim()
            .parse::<u64>()
            .expect("count")
    };
    assert_eq!(refused_count(), 0);
    // Point 6: a fresh 7-day CRL is not "renew soon" in `trust status`.
    let status = patchwork(&["trust", "status", "--config", config_arg]);
    let shown = text(&status.stdout);
    assert!(
        status.status.success() && shown.contains("crl.pem: 6 days left"),
        "{shown}"
    );
    assert!(!shown.contains("<-"), "{shown}");

    // A broken CRL: both ways of asking are refused.
    std::fs::write(
        dir.join("crl.pem"),
        b"-----BEGIN X509 CRL-----\nbroken\n-----END X509 CRL-----\n",
    )
    .expect("break");
    let out = patchwork(&["reload", "--config", config_arg]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("reload refused"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(refused_count(), 1);
    let hup = Command::new("kill")
        .args(["-HUP", &serve.0.id().to_string()])
        .status()
        .expect("kill -HUP");
    assert!(hup.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    while refused_count() < 2 {
        assert!(
            Instant::now() < deadline,
            "SIGHUP's refusal was not counted"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::fs::write(dir.join("crl.pem"), &crl).expect("restore");
    // The old material stayed in force: the node still answers.
    assert!(
        patchwork(&["stats", "--config", config_arg])
            .status
            .success()
    );

    let log = stop_for_log(&mut serve);
    let refusals: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("reload refused"))
        .collect();
    assert_eq!(refusals.len(), 2, "{log}");
    assert!(
        refusals.iter().any(|line| line.contains("admin reload"))
            && refusals.iter().any(|line| line.contains("SIGHUP"))
            && refusals
                .iter()
                .all(|line| line.contains("CRL could not be parsed")),
        "{log}"
    );
}

/// Issue 13, point 12: peers and key sets change on `patchwork reload` and
/// on SIGHUP, without a restart; what waits for a restart is named.
#[test]
fn peers_and_key_sets_change_on_reload_and_sighup() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("node");
    let listen = format!("127.0.0.1:{}", free_port());
    let dir_arg = dir.to_str().expect("utf-8 path");
    let out = patchwork(&["quickstart", "--dir", dir_arg, "--listen", &listen]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let config = dir.join("node.toml");
    let config_arg = config.to_str().expect("utf-8 path");
    let mut serve = serve_logged(config_arg);
    let fingerprints = || {
        let out = patchwork(&["trust", "status", "--config", config_arg, "--json"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let status: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        status["key_set_fingerprints"]
            .as_array()
            .map(|sets| sets.len())
            .unwrap_or(0)
    };
    assert_eq!(fingerprints(), 0);

    // The operator adds a key set and a peer, then reloads.
    patchwork_cli::base::quickstart::write_new_file(
        &dir.join("england.key"),
        "ab".repeat(32).as_bytes(),
        true,
    )
    .expect("secret");
    let original = std::fs::read_to_string(&config).expect("config");
    let peer_address = format!("127.0.0.1:{}", free_port());
    let with_peer = format!(
        "{original}\n[federation]\n\
         [[federation.key_sets]]\nname = \"england\"\nsecret_file = \"england.key\"\n\
         [[federation.peers]]\nidentity = \"spiffe://patchwork/node/kent\"\nname = \"kent\"\n\
         address = \"{peer_address}\"\nkey_set = \"england\"\npurposes = [\"child-safeguarding\"]\n\
         sensitivities = [\"standard\"]\nrate_limit_per_minute = 60\n"
    );
    std::fs::write(&config, &with_peer).expect("write config");
    let out = patchwork(&["reload", "--config", config_arg]);
    let shown = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    for line in [
        "peer spiffe://patchwork/node/kent (kent) added: purposes child-safeguarding",
        "key set england added (fingerprint ",
        "key set england: match index built over 0 persons",
    ] {
        assert!(shown.contains(line), "{line:?} not in {shown}");
    }
    assert!(!shown.contains("restart"), "{shown}");
    assert_eq!(fingerprints(), 1);

    // SIGHUP takes them out again; a change to the poll interval waits
    // for a restart and says so in the log.
    std::fs::write(
        &config,
        format!("{original}\n[federation]\npoll_interval_ms = 9000\n"),
    )
    .expect("write config");
    let hup = Command::new("kill")
        .args(["-HUP", &serve.0.id().to_string()])
        .status()
        .expect("kill -HUP");
    assert!(hup.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    while fingerprints() != 0 {
        assert!(Instant::now() < deadline, "SIGHUP did not reload");
        std::thread::sleep(Duration::from_millis(20));
    }

    let log = stop_for_log(&mut serve);
    let waits: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("wait for a restart"))
        .collect();
    assert!(
        waits.len() == 1
            && waits[0].contains("SIGHUP")
            && waits[0].contains("federation.poll_interval_ms"),
        "{log}"
    );
    assert!(
        log.lines().any(|line| line.contains("SIGHUP")
            && line.contains("peer spiffe://patchwork/node/kent (kent) removed")),
        "{log}"
    );
    assert!(
        !log.contains(&"ab".repeat(32)),
        "the secret is never logged"
    );
}

/// `patchwork audit archive FILE --key KEY [--person ID]`: an archive audit
/// retention sealed proves offline, and lists what it says of one person;
/// with another key, or one byte changed, it does not (exit 1, naming why).
#[test]
fn an_audit_archive_proves_offline_and_lists_a_persons_entries() {
    use patchwork_federation::checkpoint::{Checkpoint, SigningKey};
    use patchwork_store::AuditEvent;
    use patchwork_store::audit::archive::ArchiveHeader;

    let tmp = tempfile::tempdir().expect("tempdir");
    let store = patchwork_store::Store::open(&tmp.path().join("store"), &Default::default())
        .expect("store");
    let asked = |n: u64, person: &str| AuditEvent::PeerAsked {
        request_id: format!("R-{n}"),
        peer: "spiffe://patchwork/node/brighton".into(),
        requester_practitioner_id: "PR-B1".into(),
        requester_name: "Jo Baker".into(),
        requester_role: "Health visitor".into(),
        requester_organisation: "Brighton Health".into(),
        lawful_basis: None,
        reason: "home visit".into(),
        outcome: "matched".into(),
        refusal: None,
        person_id: Some(person.into()),
        disclosed_involvement_ids: vec![],
    };
    let events: Vec<AuditEvent> = (0..256)
        .map(|n| asked(n, if n % 64 == 0 { "P-7" } else { "P-8" }))
        .collect();
    store
        .fixture_append_audit_at(&events, 1_600_000_000_000)
        .expect("history");
    store.fixture_close_audit_segment().expect("close");
    store
        .fixture_append_audit_at(&[asked(999, "P-7")], 1_700_000_000_000)
        .expect("today");
    let plan = store
        .audit_archive_plan(1_650_000_000_000)
        .expect("plan")
        .expect("due");
    let pkcs8 = SigningKey::generate().expect("key");
    let key = SigningKey::from_pkcs8("patchwork/node/surrey/audit", &pkcs8).expect("key");
    let checkpoint = Checkpoint {
        origin: "patchwork/node/surrey/audit".into(),
        size: plan.last_seq,
        root: store.audit_root(plan.last_seq).expect("root"),
        time_unix: 1_700_000_000,
    };
    let header = ArchiveHeader {
        node: "spiffe://patchwork/node/surrey".into(),
        sealed_unix_ms: 1_700_000_000_000,
        rule: "retention.audit_years: 1 years".into(),
        checkpoint: key.sign(&checkpoint),
        checkpoint_before: String::new(),
    };
    let record = store
        .seal_audit_archive(&plan, &tmp.path().join("archive"), &header)
        .expect("seal");
    let file = tmp.path().join("archive").join(&record.file);
    let file_arg = file.to_str().expect("path");

    let out = patchwork(&[
        "audit",
        "archive",
        file_arg,
        "--key",
        &key.verifier_key(),
        "--person",
        "P-7",
    ]);
    let shown = text(&out.stdout);
    assert!(out.status.success(), "{shown}{}", text(&out.stderr));
    assert!(
        shown.starts_with(
            "archive proven: entries 1 to 256 of the log of spiffe://patchwork/node/surrey"
        ),
        "{shown}"
    );
    assert!(shown.contains("4 entries about person P-7:"), "{shown}");
    assert!(shown.contains("reason: home visit"), "{shown}");
    let out = patchwork(&[
        "audit",
        "archive",
        file_arg,
        "--key",
        &key.verifier_key(),
        "--json",
    ]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        (json["proven"].as_bool(), json["last_seq"].as_u64()),
        (Some(true), Some(256))
    );

    let other = SigningKey::from_pkcs8(
        "patchwork/node/surrey/audit",
        &SigningKey::generate().expect("key"),
    )
    .expect("key");
    let out = patchwork(&["audit", "archive", file_arg, "--key", &other.verifier_key()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stdout).starts_with(
            "ARCHIVE DOES NOT PROVE: its checkpoint is not signed by the key you gave"
        ),
        "{}",
        text(&out.stdout)
    );
    let mut bytes = std::fs::read(&file).expect("read");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 1;
    std::fs::write(&file, &bytes).expect("write");
    let out = patchwork(&["audit", "archive", file_arg, "--key", &key.verifier_key()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stdout).contains("its SHA-256 does not match"),
        "{}",
        text(&out.stdout)
    );
}
