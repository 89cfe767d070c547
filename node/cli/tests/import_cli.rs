//! `patchwork import` and `stats` as an operator meets them: hints that say
//! what to do next (import persons first; another node holds this data
//! folder), no `--skip-bad-rows` advice when it could not help, and the last
//! applied import of each kind in `stats`.

use patchwork_server::NodeConfig;

mod common;

use common::{examples, kill_9, must_pass, patchwork, quickstart, start};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_hints_and_the_last_import_in_stats() {
    patchwork_certs::install_crypto_provider();
    let tmp = tempfile::tempdir().expect("tempdir");
    let config_path = quickstart(&tmp.path().join("node"));
    let config_arg = config_path.to_str().expect("path").to_owned();
    let config = NodeConfig::load(&config_path).expect("config");
    let mut node = start(&config_arg, &config).await;
    let example = |kind: &str| {
        examples()
            .join(format!("{kind}.csv"))
            .to_str()
            .expect("path")
            .to_owned()
    };

    let last_line = |stats: &str, kind: &str| {
        stats
            .lines()
            .find(|l| l.starts_with(&format!("last {kind} import: ")))
            .unwrap_or_else(|| panic!("no last {kind} import line: {stats}"))
            .to_owned()
    };
    let stats = must_pass("stats", &["stats", "--config", &config_arg]);
    assert!(last_line(&stats, "person").ends_with(" never"), "{stats}");

    // Involvements before the persons they name: the hint says what to do.
    for kind in ["organisations", "practitioners"] {
        must_pass(
            kind,
            &[
                "import",
                kind,
                "--config",
                &config_arg,
                "--file",
                &example(kind),
            ],
        );
    }
    let early = patchwork(&[
        "import",
        "involvements",
        "--config",
        &config_arg,
        "--file",
        &example("involvements"),
    ]);
    assert_eq!(early.status.code(), Some(1));
    assert!(
        text(&early.stderr).contains("import persons first"),
        "{}{}",
        text(&early.stdout),
        text(&early.stderr)
    );

    // Every row bad with --skip-bad-rows: no advice to pass --skip-bad-rows.
    let bad = tmp.path().join("bad.csv");
    std::fs::write(
        &bad,
        "id,given_name,family_name,date_of_birth,postcode,address,national_id\nP-9,Al,,,,,\n",
    )
    .expect("write");
    let all_bad = patchwork(&[
        "import",
        "persons",
        "--skip-bad-rows",
        "--config",
        &config_arg,
        "--file",
        bad.to_str().expect("path"),
    ]);
    assert_eq!(all_bad.status.code(), Some(1));
    let shown = text(&all_bad.stdout);
    assert!(
        shown.contains("nothing imported: every row is bad"),
        "{shown}"
    );
    assert!(!shown.contains("--skip-bad-rows"), "{shown}");

    must_pass(
        "persons",
        &[
            "import",
            "persons",
            "--config",
            &config_arg,
            "--file",
            &example("persons"),
        ],
    );
    let stats = must_pass("stats", &["stats", "--config", &config_arg]);
    let line = last_line(&stats, "person");
    assert!(
        line.contains(" UTC: 5 rows, 5 created, 0 updated, 0 unchanged, 0 bad"),
        "{stats}"
    );
    assert!(
        last_line(&stats, "involvement").ends_with(" never"),
        "{stats}"
    );
    let json = must_pass("stats", &["stats", "--json", "--config", &config_arg]);
    let json: serde_json::Value = serde_json::from_str(&json).expect("json");
    let kinds: Vec<_> = json["last_imports"]
        .as_array()
        .expect("last_imports")
        .iter()
        .map(|l| l["kind"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(kinds, ["organisation", "practitioner", "person"]);

    // The store is the running node's: an offline command says who holds it.
    let locked = patchwork(&["store", "check", "--config", &config_arg]);
    assert!(!locked.status.success());
    assert!(
        text(&locked.stderr).contains("another node holds this data folder"),
        "{}",
        text(&locked.stderr)
    );
    kill_9(&mut node);
}
