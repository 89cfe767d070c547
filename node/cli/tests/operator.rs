//! The trust operator's commands through the real binary: `patchwork ca ...` and
//! `patchwork cert ...`, with OpenSSL as the independent judge of what they write.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_patchwork");
const TD: &str = "patchwork.test";

fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .output()
        .expect("run patchwork")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs patchwork, expects success, returns stdout.
fn ok(args: &[&str]) -> String {
    let out = run(args);
    assert!(
        out.status.success(),
        "patchwork {args:?} failed: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// Runs patchwork, expects exit status 1, returns stderr.
fn fails(args: &[&str]) -> String {
    let out = run(args);
    assert_eq!(
        out.status.code(),
        Some(1),
        "patchwork {args:?}: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stderr)
}

fn json(args: &[&str]) -> Value {
    serde_json::from_str(&ok(args)).expect("json output")
}

fn openssl(args: &[&str]) -> Output {
    Command::new("openssl")
        .args(args)
        .output()
        .expect("run openssl")
}

fn s(path: &Path) -> &str {
    path.to_str().expect("utf-8 temp path")
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .expect("metadata")
        .permissions()
        .mode()
        & 0o777
}

fn init_ca(dir: &Path) {
    ok(&[
        "ca",
        "init",
        "--dir",
        s(dir),
        "--trust-domain",
        TD,
        "--name",
        "Surrey County Council",
    ]);
}

/// `cert request` in `node_dir` and `ca sign` of it to `node_dir/node.crt`; returns the serial.
fn request_and_sign(ca: &Path, node_dir: &Path, node_id: &str, extra: &[&str]) -> String {
    let mut args = vec![
        "cert",
        "request",
        "--dir",
        s(node_dir),
        "--node-id",
        node_id,
        "--trust-domain",
        TD,
    ];
    args.extend_from_slice(extra);
    ok(&args);
    let cert = node_dir.join("node.crt");
    ok(&[
        "ca",
        "sign",
        "--ca",
        s(ca),
        "--csr",
        s(&node_dir.join("node.csr")),
        "--out",
        s(&cert),
        "--node-id",
        node_id,
    ]);
    let view = json(&["cert", "inspect", s(&cert), "--json"]);
    view["serial"].as_str().expect("serial").to_owned()
}

fn list_entry<'a>(list: &'a Value, serial: &str) -> &'a Value {
    list.as_array()
        .expect("ca list --json is an array")
        .iter()
        .find(|entry| entry["serial"] == serial)
        .unwrap_or_else(|| panic!("serial {serial} in {list}"))
}

#[test]
fn ca_init_keeps_the_key_private_and_refuses_a_second_init() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let ca = tmp.path().join("ca");
    init_ca(&ca);
    for name in [
        "ca.crt",
        "ca.key",
        "issued.jsonl",
        "revoked.jsonl",
        "crl_number",
    ] {
        assert!(ca.join(name).is_file(), "{name}");
    }
    #[cfg(unix)]
    {
        assert_eq!(mode(&ca.join("ca.key")), 0o600);
        assert_eq!(mode(&ca.join("ca.crt")), 0o644);
    }
    let view = json(&["cert", "inspect", s(&ca.join("ca.crt")), "--json"]);
    assert_eq!(view["is_ca"], true);
    assert_eq!(
        view["subject"],
        "CN=Surrey County Council, O=Surrey County Council"
    );

    let before = std::fs::read(ca.join("ca.key")).expect("key");
    let err = fails(&[
        "ca",
        "init",
        "--dir",
        s(&ca),
        "--trust-domain",
        TD,
        "--name",
        "Another",
    ]);
    assert!(
        err.contains("ca.crt already exists; refusing to overwrite an existing CA"),
        "{err}"
    );
    assert_eq!(std::fs::read(ca.join("ca.key")).expect("key"), before);

    let err = fails(&[
        "ca",
        "init",
        "--dir",
        s(&tmp.path().join("bad")),
        "--trust-domain",
        "Bad_Domain",
        "--name",
        "X",
    ]);
    assert!(
        err.contains("--trust-domain: invalid trust domain \"Bad_Domain\""),
        "{err}"
    );
}

#[test]
fn sign_revoke_and_publish_a_crl_that_openssl_enforces() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let ca = tmp.path().join("ca");
    init_ca(&ca);
    let (surrey, brighton) = (tmp.path().join("surrey"), tmp.path().join("brighton"));

    let out = ok(&[
        "cert",
        "request",
        "--dir",
        s(&surrey),
        "--node-id",
        "surrey",
        "--trust-domain",
        TD,
        "--dns",
        "surrey.patchwork.test",
        "--ip",
        "127.0.0.1",
    ]);
    assert!(out.contains("node.key"), "{out}");
    #[cfg(unix)]
    assert_eq!(mode(&surrey.join("node.key")), 0o600);
    let err = fails(&[
        "cert",
        "request",
        "--dir",
        s(&surrey),
        "--node-id",
        "surrey",
    ]);
    assert!(
        err.contains("node.key already exists; refusing to overwrite"),
        "{err}"
    );

    let cert = surrey.join("node.crt");
    let out = ok(&[
        "ca",
        "sign",
        "--ca",
        s(&ca),
        "--csr",
        s(&surrey.join("node.csr")),
        "--out",
        s(&cert),
        "--node-id",
        "surrey",
    ]);
    assert!(out.contains("spiffe://patchwork.test/node/surrey"), "{out}");
    let view = json(&["cert", "inspect", s(&cert), "--json"]);
    let surrey_serial = view["serial"].as_str().expect("serial").to_owned();
    assert!(out.contains(&surrey_serial), "{out}");
    assert_eq!(view["identity"], "spiffe://patchwork.test/node/surrey");
    assert_eq!(
        view["dns_names"],
        serde_json::json!(["surrey.patchwork.test"])
    );
    assert_eq!(view["ip_addresses"], serde_json::json!(["127.0.0.1"]));
    assert_eq!(view["is_ca"], false);
    assert_eq!(view["server_auth"], true);
    assert_eq!(view["client_auth"], true);
    let days_left = view["days_left"].as_i64().expect("days_left");
    assert!((29..=30).contains(&days_left), "{days_left}");

    let err = fails(&[
        "ca",
        "sign",
        "--ca",
        s(&ca),
        "--csr",
        s(&surrey.join("node.csr")),
        "--out",
        s(&cert),
        "--node-id",
        "surrey",
    ]);
    assert!(err.contains("--out"), "{err}");
    assert!(
        err.contains("already exists; refusing to overwrite"),
        "{err}"
    );

    let verified = openssl(&["verify", "-CAfile", s(&ca.join("ca.crt")), s(&cert)]);
    assert!(verified.status.success(), "{}", text(&verified.stderr));

    let brighton_serial = request_and_sign(&ca, &brighton, "brighton", &[]);

    let out = ok(&[
        "ca",
        "revoke",
        "--ca",
        s(&ca),
        "--cert",
        s(&cert),
        "--reason",
        "key-compromise",
    ]);
    assert!(out.contains(&surrey_serial), "{out}");
    assert!(out.contains("patchwork ca crl"), "{out}");
    let err = fails(&["ca", "revoke", "--ca", s(&ca), "--serial", &surrey_serial]);
    assert!(err.contains("was already revoked at"), "{err}");
    let err = fails(&["ca", "revoke", "--ca", s(&ca), "--serial", "4f00"]);
    assert!(
        err.contains("serial 4f00 was not issued by the CA"),
        "{err}"
    );

    let crl = tmp.path().join("crl.pem");
    ok(&["ca", "crl", "--ca", s(&ca), "--out", s(&crl)]);
    assert_eq!(
        std::fs::read_to_string(ca.join("crl_number"))
            .expect("crl_number")
            .trim(),
        "1"
    );
    let revoked = openssl(&[
        "verify",
        "-crl_check",
        "-CAfile",
        s(&ca.join("ca.crt")),
        "-CRLfile",
        s(&crl),
        s(&cert),
    ]);
    assert!(!revoked.status.success());
    let said = format!("{}{}", text(&revoked.stdout), text(&revoked.stderr));
    assert!(said.contains("certificate revoked"), "{said}");
    let passes = openssl(&[
        "verify",
        "-crl_check",
        "-CAfile",
        s(&ca.join("ca.crt")),
        "-CRLfile",
        s(&crl),
        s(&brighton.join("node.crt")),
    ]);
    assert!(passes.status.success(), "{}", text(&passes.stderr));

    // `cert verify` agrees with openssl, and checks the identity too.
    let ca_crt = ca.join("ca.crt");
    let err = fails(&[
        "cert",
        "verify",
        s(&cert),
        "--trust",
        s(&ca_crt),
        "--crl",
        s(&crl),
    ]);
    assert!(
        err.contains("is refused") && err.contains("Revoked"),
        "{err}"
    );
    let brighton_crt = brighton.join("node.crt");
    let out = ok(&[
        "cert",
        "verify",
        s(&brighton_crt),
        "--trust",
        s(&ca_crt),
        "--crl",
        s(&crl),
    ]);
    assert!(
        out.contains("ok, spiffe://patchwork.test/node/brighton"),
        "{out}"
    );
    let err = fails(&[
        "cert",
        "verify",
        s(&brighton_crt),
        "--trust",
        s(&ca_crt),
        "--identity",
        "spiffe://patchwork.test/node/surrey",
    ]);
    assert!(
        err.contains(
            "it is spiffe://patchwork.test/node/brighton, not spiffe://patchwork.test/node/surrey"
        ),
        "{err}"
    );
    let other = tmp.path().join("other-ca");
    init_ca(&other);
    let err = fails(&[
        "cert",
        "verify",
        s(&brighton_crt),
        "--trust",
        s(&other.join("ca.crt")),
    ]);
    // Same CA name, different key: webpki reports a bad signature.
    assert!(
        err.contains("is refused") && err.contains("BadSignature"),
        "{err}"
    );

    // Republishing replaces the file in place with the next number.
    ok(&["ca", "crl", "--ca", s(&ca), "--out", s(&crl), "--days", "1"]);
    let crl_view = json(&["cert", "inspect", s(&crl), "--json"]);
    assert_eq!(crl_view["crl_number"], 2);
    assert_eq!(
        crl_view["revoked_serials"],
        serde_json::json!([surrey_serial])
    );
    #[cfg(unix)]
    assert_eq!(mode(&crl), 0o644);

    let list = json(&["ca", "list", "--ca", s(&ca), "--json"]);
    assert_eq!(list.as_array().expect("array").len(), 2);
    let entry = list_entry(&list, &surrey_serial);
    assert_eq!(entry["status"], "revoked");
    assert_eq!(entry["reason"], "key-compromise");
    assert_eq!(entry["identity"], "spiffe://patchwork.test/node/surrey");
    let entry = list_entry(&list, &brighton_serial);
    assert_eq!(entry["status"], "valid");
    assert_eq!(entry["revoked_at"], Value::Null);
}

#[test]
fn csr_asking_for_a_ca_is_signed_as_a_policy_leaf() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let ca = tmp.path().join("ca");
    init_ca(&ca);
    let (csr, cert) = (tmp.path().join("evil.csr"), tmp.path().join("evil.crt"));
    let made = openssl(&[
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        s(&tmp.path().join("evil.key")),
        "-out",
        s(&csr),
        "-subj",
        "/CN=evil/O=Evil",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
        "-addext",
        "extendedKeyUsage=codeSigning",
        "-addext",
        "subjectAltName=URI:spiffe://patchwork.test/node/evil,DNS:evil.patchwork.test",
    ]);
    assert!(made.status.success(), "{}", text(&made.stderr));

    ok(&[
        "ca",
        "sign",
        "--ca",
        s(&ca),
        "--csr",
        s(&csr),
        "--out",
        s(&cert),
        "--node-id",
        "evil",
    ]);
    let view = json(&["cert", "inspect", s(&cert), "--json"]);
    assert_eq!(view["is_ca"], false);
    assert_eq!(view["identity"], "spiffe://patchwork.test/node/evil");
    assert_eq!(view["subject"], "CN=evil");
    assert_eq!(
        view["dns_names"],
        serde_json::json!(["evil.patchwork.test"])
    );
    assert_eq!(view["server_auth"], true);
    assert_eq!(view["client_auth"], true);

    let shown = openssl(&["x509", "-in", s(&cert), "-noout", "-text"]);
    assert!(shown.status.success());
    let shown = text(&shown.stdout);
    assert!(shown.contains("CA:FALSE"), "{shown}");
    assert!(!shown.contains("CA:TRUE"), "{shown}");
    assert!(!shown.contains("Certificate Sign"), "{shown}");
    assert!(!shown.contains("CRL Sign"), "{shown}");
    assert!(!shown.contains("Code Signing"), "{shown}");
    assert!(!shown.contains("O = Evil"), "{shown}");
}

#[test]
fn csr_for_a_foreign_trust_domain_is_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let ca = tmp.path().join("ca");
    init_ca(&ca);
    let (csr, cert) = (tmp.path().join("x.csr"), tmp.path().join("x.crt"));
    let made = openssl(&[
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        s(&tmp.path().join("x.key")),
        "-out",
        s(&csr),
        "-subj",
        "/CN=mallory",
        "-addext",
        "subjectAltName=URI:spiffe://other.test/node/mallory",
    ]);
    assert!(made.status.success(), "{}", text(&made.stderr));

    let err = fails(&[
        "ca",
        "sign",
        "--ca",
        s(&ca),
        "--csr",
        s(&csr),
        "--out",
        s(&cert),
        "--node-id",
        "mallory",
    ]);
    assert!(
        err.contains(
            "identity spiffe://other.test/node/mallory is in trust domain \"other.test\", \
             but this ca issues for \"patchwork.test\""
        ),
        "{err}"
    );
    assert!(err.contains("--csr"), "{err}");
    assert!(!cert.exists());
    assert_eq!(
        std::fs::read_to_string(ca.join("issued.jsonl")).expect("issued"),
        ""
    );
}

#[test]
fn sign_checks_days_and_node_id() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let ca = tmp.path().join("ca");
    init_ca(&ca);
    let node = tmp.path().join("node");
    ok(&["cert", "request", "--dir", s(&node), "--node-id", "alpha"]);
    let csr = node.join("node.csr");
    let out = tmp.path().join("alpha.crt");
    let sign = |extra: &[&str]| {
        let mut args = vec![
            "ca",
            "sign",
            "--ca",
            s(&ca),
            "--csr",
            s(&csr),
            "--out",
            s(&out),
        ];
        args.extend_from_slice(extra);
        fails(&args)
    };
    let err = usage_error(&[
        "ca",
        "sign",
        "--ca",
        s(&ca),
        "--csr",
        s(&csr),
        "--out",
        s(&out),
    ]);
    assert!(
        err.contains("--node-id") && err.contains("--client-id"),
        "the operator must say who the request is for: {err}"
    );
    let err = sign(&["--days", "398", "--node-id", "alpha"]);
    assert!(
        err.contains("--days 398 is out of range, expected 1..=397"),
        "{err}"
    );
    let err = sign(&["--node-id", "beta"]);
    assert!(
        err.contains("is for node \"alpha\", but node \"beta\" was expected"),
        "{err}"
    );
    assert!(!out.exists());

    // Without a trust domain in the request, the CN names the node in the CA's domain.
    ok(&[
        "ca",
        "sign",
        "--ca",
        s(&ca),
        "--csr",
        s(&csr),
        "--out",
        s(&out),
        "--days",
        "397",
        "--node-id",
        "alpha",
    ]);
    let view = json(&["cert", "inspect", s(&out), "--json"]);
    assert_eq!(view["identity"], "spiffe://patchwork.test/node/alpha");
}

#[test]
fn renew_requests_the_same_identity_and_names() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let ca = tmp.path().join("ca");
    init_ca(&ca);
    let node = tmp.path().join("node");
    let first = request_and_sign(
        &ca,
        &node,
        "surrey",
        &["--dns", "surrey.patchwork.test", "--ip", "10.0.0.7"],
    );

    let out = ok(&["cert", "renew", "--dir", s(&node)]);
    assert!(out.contains("patchwork ca sign"), "{out}");
    assert!(out.contains("patchwork reload --config"), "{out}");
    #[cfg(unix)]
    assert_eq!(mode(&node.join("renew.key")), 0o600);
    let shown = openssl(&["req", "-in", s(&node.join("renew.csr")), "-noout", "-text"]);
    assert!(shown.status.success());
    let shown = text(&shown.stdout);
    assert!(
        shown.contains(
            "URI:spiffe://patchwork.test/node/surrey, DNS:surrey.patchwork.test, \
             IP Address:10.0.0.7"
        ),
        "{shown}"
    );
    let err = fails(&["cert", "renew", "--dir", s(&node)]);
    assert!(
        err.contains("renew.key already exists; refusing to overwrite"),
        "{err}"
    );

    let renewed = node.join("renew.crt");
    ok(&[
        "ca",
        "sign",
        "--ca",
        s(&ca),
        "--csr",
        s(&node.join("renew.csr")),
        "--out",
        s(&renewed),
        "--node-id",
        "surrey",
    ]);
    let old = json(&["cert", "inspect", s(&node.join("node.crt")), "--json"]);
    let new = json(&["cert", "inspect", s(&renewed), "--json"]);
    assert_ne!(new["serial"], first);
    for key in ["identity", "dns_names", "ip_addresses", "subject", "issuer"] {
        assert_eq!(new[key], old[key], "{key}");
    }
    // A new key, not the old one re-certified.
    let key_of = |path: &Path| {
        let out = openssl(&["x509", "-in", s(path), "-noout", "-pubkey"]);
        assert!(out.status.success());
        text(&out.stdout)
    };
    assert_ne!(key_of(&renewed), key_of(&node.join("node.crt")));
}

/// `ca sign` of `csr` to `out`, with `expect` as the identity flags.
fn sign_args<'a>(ca: &'a Path, csr: &'a Path, out: &'a Path, expect: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "ca",
        "sign",
        "--ca",
        s(ca),
        "--csr",
        s(csr),
        "--out",
        s(out),
    ];
    args.extend_from_slice(expect);
    args
}

/// Runs patchwork, expects clap's usage error (exit status 2), returns stderr.
fn usage_error(args: &[&str]) -> String {
    let out = run(args);
    assert_eq!(
        out.status.code(),
        Some(2),
        "patchwork {args:?}: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stderr)
}

#[test]
fn client_certificate_is_issued_from_a_csr_and_renewed() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let ca = tmp.path().join("ca");
    init_ca(&ca);
    let portal = tmp.path().join("portal");
    let portal_id = "spiffe://patchwork.test/client/portal";

    // Exactly one of --node-id and --client-id; a client names its trust domain and no hosts.
    let err = usage_error(&["cert", "request", "--dir", s(&portal)]);
    assert!(
        err.contains("--node-id") && err.contains("--client-id"),
        "{err}"
    );
    let err = usage_error(&[
        "cert",
        "request",
        "--dir",
        s(&portal),
        "--node-id",
        "portal",
        "--client-id",
        "portal",
        "--trust-domain",
        TD,
    ]);
    assert!(err.contains("cannot be used with"), "{err}");
    let err = usage_error(&[
        "cert",
        "request",
        "--dir",
        s(&portal),
        "--client-id",
        "portal",
    ]);
    assert!(err.contains("--trust-domain"), "{err}");
    let err = usage_error(&[
        "cert",
        "request",
        "--dir",
        s(&portal),
        "--client-id",
        "portal",
        "--trust-domain",
        TD,
        "--dns",
        "portal.patchwork.test",
    ]);
    assert!(err.contains("cannot be used with"), "{err}");
    let err = fails(&[
        "cert",
        "request",
        "--dir",
        s(&portal),
        "--client-id",
        "a b",
        "--trust-domain",
        TD,
    ]);
    assert!(
        err.contains("--client-id: invalid spiffe id \"spiffe://patchwork.test/client/a b\""),
        "{err}"
    );
    assert!(!portal.exists());

    let out = ok(&[
        "cert",
        "request",
        "--dir",
        s(&portal),
        "--client-id",
        "portal",
        "--trust-domain",
        TD,
    ]);
    assert!(out.contains("--client-id portal"), "{out}");
    assert!(
        out.contains(&format!("allow {portal_id} in the node's [api] clients")),
        "{out}"
    );
    assert!(portal.join("client.csr").is_file());
    assert!(!portal.join("node.key").exists() && !portal.join("node.csr").exists());
    #[cfg(unix)]
    assert_eq!(mode(&portal.join("client.key")), 0o600);
    let shown = openssl(&[
        "req",
        "-in",
        s(&portal.join("client.csr")),
        "-noout",
        "-text",
    ]);
    assert!(shown.status.success());
    assert!(text(&shown.stdout).contains(&format!("URI:{portal_id}")));

    // The operator's expectation names the kind as well as the name.
    let cert = portal.join("client.crt");
    let csr = portal.join("client.csr");
    let err = fails(&sign_args(&ca, &csr, &cert, &["--node-id", "portal"]));
    assert!(
        err.contains(&format!(
            "invalid spiffe id \"{portal_id}\": the operator expected \
             spiffe://patchwork.test/node/portal"
        )),
        "{err}"
    );
    let err = fails(&sign_args(&ca, &csr, &cert, &["--client-id", "crm"]));
    assert!(
        err.contains("the operator expected spiffe://patchwork.test/client/crm"),
        "{err}"
    );
    let err = usage_error(&sign_args(
        &ca,
        &csr,
        &cert,
        &["--client-id", "portal", "--node-id", "portal"],
    ));
    assert!(err.contains("cannot be used with"), "{err}");
    assert!(!cert.exists());
    assert_eq!(
        std::fs::read_to_string(ca.join("issued.jsonl")).expect("issued"),
        ""
    );

    let out = ok(&sign_args(&ca, &csr, &cert, &["--client-id", "portal"]));
    assert!(out.contains(&format!("signed {portal_id}")), "{out}");
    assert!(out.contains("[api] clients"), "{out}");
    let view = json(&["cert", "inspect", s(&cert), "--json"]);
    assert_eq!(view["identity"], portal_id);
    assert_eq!(view["subject"], "CN=portal");
    assert_eq!(view["dns_names"], serde_json::json!([]));
    assert_eq!(view["ip_addresses"], serde_json::json!([]));
    assert_eq!(view["is_ca"], false);
    assert_eq!(view["client_auth"], true);
    let client_serial = view["serial"].as_str().expect("serial").to_owned();
    let verified = openssl(&["verify", "-CAfile", s(&ca.join("ca.crt")), s(&cert)]);
    assert!(verified.status.success(), "{}", text(&verified.stderr));
    let out = ok(&[
        "cert",
        "verify",
        s(&cert),
        "--trust",
        s(&ca.join("ca.crt")),
        "--identity",
        portal_id,
    ]);
    assert!(out.contains(&format!("ok, {portal_id}")), "{out}");

    // `ca list` shows nodes and clients alike.
    let node_serial = request_and_sign(&ca, &tmp.path().join("surrey"), "surrey", &[]);
    let list = json(&["ca", "list", "--ca", s(&ca), "--json"]);
    assert_eq!(list_entry(&list, &client_serial)["identity"], portal_id);
    assert_eq!(
        list_entry(&list, &node_serial)["identity"],
        "spiffe://patchwork.test/node/surrey"
    );
    let table = ok(&["ca", "list", "--ca", s(&ca)]);
    assert!(table.contains(portal_id), "{table}");
    assert!(
        table.contains("spiffe://patchwork.test/node/surrey"),
        "{table}"
    );

    // A folder with client.crt and no node.crt renews the client, for the same identity.
    let out = ok(&["cert", "renew", "--dir", s(&portal)]);
    assert!(out.contains(&format!("for {portal_id}")), "{out}");
    assert!(out.contains("--client-id portal"), "{out}");
    assert!(
        out.contains("`mv renew.key client.key && mv renew.crt client.crt && rm renew.csr`"),
        "{out}"
    );
    assert!(!out.contains("patchwork reload"), "{out}");
    let renewed = portal.join("renew.crt");
    let renew_csr = portal.join("renew.csr");
    ok(&sign_args(
        &ca,
        &renew_csr,
        &renewed,
        &["--client-id", "portal"],
    ));
    let new = json(&["cert", "inspect", s(&renewed), "--json"]);
    assert_eq!(new["identity"], portal_id);
    assert_ne!(new["serial"], client_serial);

    // A client.crt that holds a node identity is not renewed as a client.
    let misplaced = tmp.path().join("misplaced");
    std::fs::create_dir(&misplaced).expect("mkdir");
    std::fs::copy(
        tmp.path().join("surrey").join("node.crt"),
        misplaced.join("client.crt"),
    )
    .expect("copy");
    let err = fails(&["cert", "renew", "--dir", s(&misplaced)]);
    assert!(
        err.contains("has no client identity spiffe://<trust-domain>/client/<name>"),
        "{err}"
    );
}

/// Issue 13, point 3: after a revocation (here for key compromise) the CA refuses any
/// request carrying the revoked certificate's key — the same request again, or the same
/// key under another name — and says why; a fresh key from `cert renew` is signed.
#[test]
fn a_revoked_certificates_key_is_never_certified_again() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let ca = tmp.path().join("ca");
    init_ca(&ca);
    let node = tmp.path().join("surrey");
    let serial = request_and_sign(&ca, &node, "surrey", &[]);
    let out = ok(&[
        "ca",
        "revoke",
        "--ca",
        s(&ca),
        "--serial",
        &serial,
        "--reason",
        "key-compromise",
    ]);
    assert!(out.contains("its key is retired"), "{out}");

    // The very request that was signed before.
    let again = node.join("again.crt");
    let err = fails(&sign_args(
        &ca,
        &node.join("node.csr"),
        &again,
        &["--node-id", "surrey"],
    ));
    assert!(
        err.contains(&format!("its key belongs to certificate serial {serial}"))
            && err.contains("spiffe://patchwork.test/node/surrey")
            && err.contains("reason key-compromise")
            && err.contains("patchwork cert request"),
        "{err}"
    );
    assert!(!again.exists());

    // The same key asking for another name (a request made with OpenSSL).
    let other = node.join("other.csr");
    let made = openssl(&[
        "req",
        "-new",
        "-key",
        s(&node.join("node.key")),
        "-subj",
        "/CN=brighton",
        "-addext",
        "subjectAltName=URI:spiffe://patchwork.test/node/brighton",
        "-out",
        s(&other),
    ]);
    assert!(made.status.success(), "{}", text(&made.stderr));
    let err = fails(&sign_args(&ca, &other, &again, &["--node-id", "brighton"]));
    assert!(
        err.contains(&format!("its key belongs to certificate serial {serial}")),
        "{err}"
    );
    let list = json(&["ca", "list", "--ca", s(&ca), "--json"]);
    assert_eq!(list.as_array().expect("array").len(), 1, "{list}");

    // The runbook's path: a fresh key for the same names is signed.
    ok(&["cert", "renew", "--dir", s(&node)]);
    ok(&sign_args(
        &ca,
        &node.join("renew.csr"),
        &node.join("renew.crt"),
        &["--node-id", "surrey"],
    ));
}

/// Issue 13, point 4: two renewals in a row. The first is installed the way the runbook
/// said before (`mv renew.key node.key && mv renew.crt node.crt`, leaving renew.csr); the
/// second must still start, and the one after it is installed as `cert renew` now prints.
#[test]
fn two_renewals_in_a_row() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let ca = tmp.path().join("ca");
    init_ca(&ca);
    let node = tmp.path().join("node");
    let mut serial = request_and_sign(&ca, &node, "surrey", &["--dns", "surrey.patchwork.test"]);
    let install = |printed: &str| {
        // The runbook line `cert renew` printed, run by a shell in the folder.
        let line = printed
            .lines()
            .find_map(|line| line.split('`').nth(1).filter(|cmd| cmd.starts_with("mv ")))
            .unwrap_or_else(|| panic!("no install line in {printed}"));
        let out = Command::new("sh")
            .args(["-c", line])
            .current_dir(&node)
            .output()
            .expect("sh");
        assert!(out.status.success(), "{line}: {}", text(&out.stderr));
    };
    for round in 0..3 {
        let printed = ok(&["cert", "renew", "--dir", s(&node)]);
        if round == 1 {
            assert!(
                printed.contains("renew.csr left by the last renewal"),
                "{printed}"
            );
        }
        ok(&sign_args(
            &ca,
            &node.join("renew.csr"),
            &node.join("renew.crt"),
            &["--node-id", "surrey"],
        ));
        if round == 0 {
            // As the old runbook had it: renew.csr stays behind.
            for (from, to) in [("renew.key", "node.key"), ("renew.crt", "node.crt")] {
                std::fs::rename(node.join(from), node.join(to)).expect("mv");
            }
        } else {
            install(&printed);
            assert!(!node.join("renew.csr").exists());
        }
        let view = json(&["cert", "inspect", s(&node.join("node.crt")), "--json"]);
        assert_ne!(
            view["serial"].as_str(),
            Some(serial.as_str()),
            "round {round}"
        );
        assert_eq!(
            view["dns_names"],
            serde_json::json!(["surrey.patchwork.test"])
        );
        serial = view["serial"].as_str().expect("serial").to_owned();
        // The installed key fits the installed certificate.
        let key = openssl(&["pkey", "-in", s(&node.join("node.key")), "-pubout"]);
        let cert = openssl(&[
            "x509",
            "-in",
            s(&node.join("node.crt")),
            "-noout",
            "-pubkey",
        ]);
        assert_eq!(text(&key.stdout), text(&cert.stdout), "round {round}");
    }

    // A renewal under way is never overwritten: its key, or its signed certificate.
    ok(&["cert", "renew", "--dir", s(&node)]);
    let err = fails(&["cert", "renew", "--dir", s(&node)]);
    assert!(
        err.contains("renew.key already exists; refusing to overwrite"),
        "{err}"
    );
    ok(&sign_args(
        &ca,
        &node.join("renew.csr"),
        &node.join("renew.crt"),
        &["--node-id", "surrey"],
    ));
    std::fs::rename(node.join("renew.key"), node.join("node.key")).expect("mv");
    let err = fails(&["cert", "renew", "--dir", s(&node)]);
    assert!(
        err.contains("renew.crt already exists; refusing to overwrite"),
        "{err}"
    );
    assert!(node.join("renew.crt").exists());
}

/// Issue 13, point 6: the CRL timer's command, run as systemd would run it (ExecStart from
/// deploy/systemd/patchwork-crl.service, the environment file's variables filled in),
/// publishes a fresh 7-day CRL each run; a node's `config check` does not warn about it,
/// and warns about one with under 2 days left.
#[test]
fn the_crl_timer_republishes_and_a_fresh_crl_does_not_warn() {
    let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/systemd");
    let timer = std::fs::read_to_string(deploy.join("patchwork-crl.timer")).expect("timer");
    assert!(timer.contains("OnCalendar=daily"), "{timer}");
    let unit = std::fs::read_to_string(deploy.join("patchwork-crl.service")).expect("unit");
    let exec = unit
        .lines()
        .find_map(|line| line.strip_prefix("ExecStart="))
        .expect("ExecStart");

    let tmp = tempfile::tempdir().expect("tempdir");
    let ca = tmp.path().join("ca");
    init_ca(&ca);
    let node = tmp.path().join("node");
    let out = Command::new(BIN)
        .args(["quickstart", "--dir", s(&node)])
        .output()
        .expect("quickstart");
    assert!(out.status.success(), "{}", text(&out.stderr));
    // The node's certificate and trust from this CA; its CRL from the timer.
    for file in ["node.crt", "node.key", "node.csr"] {
        let _ = std::fs::remove_file(node.join(file));
    }
    request_and_sign(&ca, &node, "local", &[]);
    std::fs::copy(ca.join("ca.crt"), node.join("ca.crt")).expect("ca.crt");
    let crl = node.join("crl.pem");
    let config = node.join("node.toml");
    let toml = std::fs::read_to_string(&config)
        .expect("config")
        .replace("[tls]\n", "[tls]\ncrl_files = [\"crl.pem\"]\n");
    std::fs::write(&config, toml).expect("config");

    let run_timer = || {
        let args: Vec<String> = exec
            .replace("${CA_DIR}", s(&ca))
            .replace("${CRL_OUT}", s(&crl))
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        assert_eq!(args[0], "/usr/local/bin/patchwork", "{exec}");
        let out = Command::new(BIN).args(&args[1..]).output().expect("run");
        assert!(out.status.success(), "{exec}: {}", text(&out.stderr));
        json(&["cert", "inspect", s(&crl), "--json"])
    };
    let first = run_timer();
    let serial = json(&["cert", "inspect", s(&node.join("node.crt")), "--json"])["serial"]
        .as_str()
        .expect("serial")
        .to_owned();
    let second = run_timer();
    assert_eq!(
        second["crl_number"].as_u64(),
        first["crl_number"].as_u64().map(|n| n + 1)
    );
    let rfc3339 = |key: &str| {
        let text = second[key].as_str().expect("time");
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
            .expect("time")
    };
    assert_eq!(
        (rfc3339("next_update") - rfc3339("this_update")).whole_days(),
        7
    );

    let check = ok(&["config", "check", "--config", s(&config)]);
    let crl_line = check
        .lines()
        .find(|line| line.contains("CRL ") && line.contains("days left"))
        .unwrap_or_else(|| panic!("no CRL line in {check}"));
    assert!(!crl_line.contains("<-"), "a fresh CRL warns: {check}");

    // A CRL with a day left is the one to warn about; revocations reach the next run.
    ok(&["ca", "crl", "--ca", s(&ca), "--out", s(&crl), "--days", "1"]);
    let check = ok(&["config", "check", "--config", s(&config)]);
    assert!(
        check.contains("<- republish it now (patchwork ca crl)"),
        "{check}"
    );
    ok(&["ca", "revoke", "--ca", s(&ca), "--serial", &serial]);
    let third = run_timer();
    assert_eq!(third["revoked_serials"], serde_json::json!([serial]));
}
