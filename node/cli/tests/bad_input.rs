//! Bad input to every CLI command an operator or practitioner types: empty,
//! too long, wrong encoding, broken UTF-8, dd/mm/yyyy dates, bad NHS
//! numbers, unknown enum values. Each is refused with exit code 1, or 2
//! ([`USAGE`]) for a command line clap refuses before anything runs, a
//! message naming the field, column or flag (and, for an enum, its valid
//! values), and no change to the store or the CA folder.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::{BIN, examples, patchwork, quickstart};

struct Served(Child);

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The store's counts (its size on disk may move as sled tidies up).
fn stats(config: &str) -> serde_json::Value {
    let out = patchwork(&["stats", "--json", "--config", config]);
    assert!(out.status.success(), "stats");
    let mut stats: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stats json");
    stats
        .as_object_mut()
        .expect("stats object")
        .remove("store_bytes");
    stats
}

/// The exit status of a command line clap refuses before anything runs (an
/// unknown enum value, a missing or unknown flag). 2 is clap's usage error,
/// as it is for grep or diff, and kept apart from 1 (the command ran and the
/// input or the node refused) so a script can tell "I called it wrongly"
/// from "the data is wrong" (the node's docs say so: `cli.rs`, README). The
/// message names the flag and lists the values it takes.
const USAGE: i32 = 2;

/// One bad input: the command, the exit code, and what the message must name.
struct Case {
    name: &'static str,
    args: Vec<String>,
    code: i32,
    names: &'static str,
}

fn case(name: &'static str, args: &[&str], code: i32, names: &'static str) -> Case {
    Case {
        name,
        args: args.iter().map(|a| (*a).to_owned()).collect(),
        code,
        names,
    }
}

const PERSONS_HEADER: &str = "id,given_name,family_name,date_of_birth,postcode,address,national_id";
const INVOLVEMENTS_HEADER: &str = "id,person_id,practitioner_id,service,start_date,end_date,sensitivity,gatekeeper_name,gatekeeper_phone,gatekeeper_email,end_reason";

#[test]
fn bad_input_is_refused_naming_the_field_and_changes_nothing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("node");
    let config = quickstart(&dir).to_str().expect("path").to_owned();
    let _node = Served(
        Command::new(BIN)
            .args(["serve", "--config", &config])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("serve"),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while !patchwork(&["stats", "--config", &config]).status.success() {
        assert!(Instant::now() < deadline, "node did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }
    for kind in ["organisations", "practitioners", "persons", "involvements"] {
        let file = examples().join(format!("{kind}.csv"));
        let out = patchwork(&[
            "import",
            kind,
            "--quiet",
            "--config",
            &config,
            "--file",
            file.to_str().expect("path"),
        ]);
        assert!(out.status.success(), "seed {kind}");
    }

    // Files for the import cases.
    let files = tmp.path().join("files");
    std::fs::create_dir(&files).expect("mkdir");
    let file = |name: &str, bytes: Vec<u8>| -> String {
        let path = files.join(name);
        std::fs::write(&path, bytes).expect("write");
        path.to_str().expect("path").to_owned()
    };
    let persons = |row: &[u8]| -> Vec<u8> {
        let mut bytes = format!("{PERSONS_HEADER}\n").into_bytes();
        bytes.extend_from_slice(row);
        bytes.push(b'\n');
        bytes
    };
    let empty = file("empty.csv", Vec::new());
    let header_only = file("header-only.csv", b"id,given_name\n".to_vec());
    let ddmm = file(
        "ddmm.csv",
        persons(b"P-9,Ann,Lee,14/03/2015,GU1 1AA,1 Road,"),
    );
    let bad_nhs = file(
        "nhs.csv",
        persons(b"P-9,Ann,Lee,2015-03-14,GU1 1AA,1 Road,123 456 7890"),
    );
    // "Lée" saved as Windows-1252: é is the single byte 0xE9.
    let cp1252 = file(
        "cp1252.csv",
        persons(b"P-9,Ann,L\xe9e,2015-03-14,GU1 1AA,1 Road,"),
    );
    let broken = file(
        "broken.csv",
        persons(b"P-9,Ann,Lee\xff\xfe,2015-03-14,GU1 1AA,1 Road,"),
    );
    // A BOM is understood (the header still parses) and the bad row named.
    let mut bom_bytes = b"\xef\xbb\xbf".to_vec();
    bom_bytes.extend(persons(b"P-9,Ann,Lee,14/03/2015,GU1 1AA,1 Road,"));
    let bom = file("bom.csv", bom_bytes);
    let long_name = "A".repeat(5_000);
    let too_long = file(
        "long.csv",
        persons(format!("P-9,{long_name},Lee,2015-03-14,GU1 1AA,1 Road,").as_bytes()),
    );
    let future = file(
        "future.csv",
        persons(b"P-9,Ann,Lee,2999-01-01,GU1 1AA,1 Road,"),
    );
    let unknown_sensitivity = file(
        "sensitivity.csv",
        format!("{INVOLVEMENTS_HEADER}\nINV-99,P-1001,PR-001,Youth work,2024-02-01,,secret,,,,\n")
            .into_bytes(),
    );
    // One good row and one bad: nothing is imported without --skip-bad-rows.
    let half_good = file(
        "half.csv",
        persons(b"P-8,Ann,Lee,2015-03-14,GU1 1AA,1 Road,\nP-9,Ann,Lee,14/03/2015,GU1 1AA,1 Road,"),
    );
    let config_file = |name: &str, bytes: &[u8]| file(name, bytes.to_vec());
    let unknown_key = config_file("unknown.toml", b"[node]\nbogus = 1\n");
    let empty_config = config_file("empty.toml", b"");
    let utf16_config = config_file("utf16.toml", b"\xff\xfe[\x00n\x00o\x00d\x00e\x00]\x00");
    let garbage_csr = file("garbage.csr", b"not a certificate request".to_vec());
    let ca = tmp.path().join("ca");
    let ca_arg = ca.to_str().expect("path").to_owned();
    assert!(
        patchwork(&[
            "ca",
            "init",
            "--dir",
            &ca_arg,
            "--trust-domain",
            "bad-input.patchwork",
            "--name",
            "Bad Input CA"
        ])
        .status
        .success()
    );
    let out_cert = tmp.path().join("never.crt");
    let out_cert_arg = out_cert.to_str().expect("path").to_owned();
    let ca_dir = |name: &str| tmp.path().join(name).to_str().expect("path").to_owned();
    let long_text = "x".repeat(300);

    let import = |kind: &str, path: &str| -> Vec<String> {
        [
            "import", kind, "--quiet", "--config", &config, "--file", path,
        ]
        .iter()
        .map(|a| (*a).to_owned())
        .collect()
    };
    let lookup = |extra: &[&str]| -> Vec<String> {
        let mut args: Vec<String> = [
            "lookup",
            "--config",
            &config,
            "--as",
            "PR-001",
            "--basis",
            "child-safeguarding",
            "--local-only",
        ]
        .iter()
        .map(|a| (*a).to_owned())
        .collect();
        args.extend(extra.iter().map(|a| (*a).to_owned()));
        args
    };
    let reason = "s.47 enquiry after a school referral";
    let mut cases = vec![
        Case {
            name: "import: empty file",
            args: import("persons", &empty),
            code: 1,
            names: "missing column(s): id",
        },
        Case {
            name: "import: header missing columns",
            args: import("persons", &header_only),
            code: 1,
            names: "missing column(s): family_name",
        },
        Case {
            name: "import: dd/mm/yyyy date",
            args: import("persons", &ddmm),
            code: 1,
            names: "line 2: date_of_birth: must be a date written YYYY-MM-DD",
        },
        Case {
            name: "import: bad NHS number",
            args: import("persons", &bad_nhs),
            code: 1,
            names: "line 2: national_id: nhs number check digit is wrong",
        },
        Case {
            name: "import: Windows-1252",
            args: import("persons", &cp1252),
            code: 1,
            names: "line 2: family_name: is not valid UTF-8",
        },
        Case {
            name: "import: broken UTF-8",
            args: import("persons", &broken),
            code: 1,
            names: "line 2: family_name: is not valid UTF-8",
        },
        Case {
            name: "import: BOM and a bad row",
            args: import("persons", &bom),
            code: 1,
            names: "line 2: date_of_birth",
        },
        Case {
            name: "import: too long",
            args: import("persons", &too_long),
            code: 1,
            names: "line 2: given_name: is longer than",
        },
        Case {
            name: "import: date in the future",
            args: import("persons", &future),
            code: 1,
            names: "line 2: date_of_birth",
        },
        Case {
            name: "import: unknown sensitivity",
            args: import("involvements", &unknown_sensitivity),
            code: 1,
            names: "line 2: sensitivity: must be one of",
        },
        Case {
            name: "import: one bad row of two",
            args: import("persons", &half_good),
            code: 1,
            names: "line 3: date_of_birth",
        },
        Case {
            name: "import: missing file",
            args: import("persons", &ca_dir("no-such.csv")),
            code: 1,
            names: "no-such.csv",
        },
        case(
            "import: unknown kind",
            &["import", "people", "--config", &config, "--file", &empty],
            USAGE,
            "invalid value 'people' for '<KIND>'\n  \
             [possible values: persons, practitioners, organisations, involvements]",
        ),
        Case {
            name: "lookup: dd/mm/yyyy date",
            args: lookup(&[
                "--reason",
                reason,
                "--given",
                "Amelia",
                "--family",
                "Smith",
                "--dob",
                "14/03/2015",
            ]),
            code: 1,
            names: "--dob: must be a date written YYYY-MM-DD",
        },
        Case {
            name: "lookup: bad NHS number",
            args: lookup(&["--reason", reason, "--national-id", "1234567890"]),
            code: 1,
            names: "subject.national_id.value: nhs number check digit is wrong",
        },
        Case {
            name: "lookup: empty reason",
            args: lookup(&["--reason", "", "--national-id", "9434765919"]),
            code: 1,
            names: "purpose.reason",
        },
        Case {
            name: "lookup: too long",
            args: lookup(&[
                "--reason",
                reason,
                "--given",
                "Amelia",
                "--family",
                &long_text,
                "--dob",
                "2015-03-14",
            ]),
            code: 1,
            names: "subject.family_name: is longer than",
        },
        Case {
            name: "lookup: no subject",
            args: lookup(&["--reason", reason]),
            code: 1,
            names: "subject: needs national_id",
        },
        Case {
            name: "lookup: date in the future",
            args: lookup(&[
                "--reason",
                reason,
                "--given",
                "Amelia",
                "--family",
                "Smith",
                "--dob",
                "2999-01-01",
            ]),
            code: 1,
            names: "subject.date_of_birth: is in the future",
        },
        case(
            "lookup: unknown basis",
            &[
                "lookup",
                "--config",
                &config,
                "--as",
                "PR-001",
                "--basis",
                "curiosity",
                "--reason",
                reason,
            ],
            USAGE,
            "invalid value 'curiosity' for '--basis <BASIS>'\n  [possible values: \
             child-safeguarding, adult-safeguarding, vital-interests, direct-care, public-task, \
             crime-prevention, consent]",
        ),
        case(
            "lookup: no basis",
            &[
                "lookup", "--config", &config, "--as", "PR-001", "--reason", reason,
            ],
            USAGE,
            "the following required arguments were not provided:\n  --basis <BASIS>",
        ),
        case(
            "config: unknown key",
            &["config", "check", "--config", &unknown_key],
            1,
            "unknown field `bogus`",
        ),
        case(
            "config: empty",
            &["config", "check", "--config", &empty_config],
            1,
            "missing field `node`",
        ),
        case(
            "config: UTF-16",
            &["config", "check", "--config", &utf16_config],
            1,
            "valid UTF-8",
        ),
        case(
            "ca init: bad trust domain",
            &[
                "ca",
                "init",
                "--dir",
                &ca_dir("ca-bad-domain"),
                "--trust-domain",
                "Not A Domain!",
                "--name",
                "X",
            ],
            1,
            "--trust-domain",
        ),
        case(
            "ca init: empty trust domain",
            &[
                "ca",
                "init",
                "--dir",
                &ca_dir("ca-empty-domain"),
                "--trust-domain",
                "",
                "--name",
                "X",
            ],
            1,
            "--trust-domain",
        ),
        case(
            "ca init: name too long",
            &[
                "ca",
                "init",
                "--dir",
                &ca_dir("ca-long-name"),
                "--trust-domain",
                "t.patchwork",
                "--name",
                &long_text,
            ],
            1,
            "--name",
        ),
        case(
            "ca init: zero days",
            &[
                "ca",
                "init",
                "--dir",
                &ca_dir("ca-zero-days"),
                "--trust-domain",
                "t.patchwork",
                "--name",
                "X",
                "--days",
                "0",
            ],
            1,
            "--days",
        ),
        case(
            "ca sign: garbage request",
            &[
                "ca",
                "sign",
                "--ca",
                &ca_arg,
                "--csr",
                &garbage_csr,
                "--out",
                &out_cert_arg,
                "--node-id",
                "surrey",
            ],
            1,
            "--csr",
        ),
        case(
            "ca sign: empty request",
            &[
                "ca",
                "sign",
                "--ca",
                &ca_arg,
                "--csr",
                &empty,
                "--out",
                &out_cert_arg,
                "--node-id",
                "surrey",
            ],
            1,
            "--csr",
        ),
        case(
            "cert inspect: not a certificate",
            &["cert", "inspect", &garbage_csr],
            1,
            "no certificate or crl found",
        ),
        case(
            "cert request: bad node id",
            &[
                "cert",
                "request",
                "--dir",
                &ca_dir("req-bad-id"),
                "--node-id",
                "Not A Name!",
            ],
            1,
            "--node-id: invalid node name",
        ),
    ];

    let before = stats(&config);
    let issued_before = std::fs::read_to_string(ca.join("issued.jsonl")).expect("issued");
    let mut failures = Vec::new();
    for case in cases.drain(..) {
        let out = Command::new(BIN)
            .args(&case.args)
            .output()
            .expect("run patchwork");
        let message = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        if out.status.code() != Some(case.code) || !message.contains(case.names) {
            failures.push(format!(
                "{}: exit {:?} (want {}), message must name {:?}:\n{message}",
                case.name,
                out.status.code(),
                case.code,
                case.names
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(stats(&config), before, "bad input changed the store");
    assert_eq!(
        std::fs::read_to_string(ca.join("issued.jsonl")).expect("issued"),
        issued_before,
        "bad input changed the CA"
    );
    assert!(!out_cert.exists(), "no certificate written");
    for refused in [
        "ca-bad-domain",
        "ca-empty-domain",
        "ca-long-name",
        "ca-zero-days",
    ] {
        assert!(
            std::fs::read_dir(tmp.path().join(refused))
                .map(|entries| entries
                    .flatten()
                    .all(|e| !e.file_name().to_string_lossy().ends_with(".key")))
                .unwrap_or(true),
            "{refused}: no key made"
        );
    }
}
