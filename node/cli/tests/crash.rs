//! Crash consistency: a node killed with SIGKILL at randomised points (50
//! times) while it acknowledges involvement writes, answers lookups and runs
//! an import loses nothing it acknowledged, its store is never left
//! half-written across its indexes (`patchwork store check`), and its audit
//! chain verifies (`patchwork audit verify --offline`) after every kill.

use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use patchwork_proto::v1::{self, admin_client::AdminClient, directory_client::DirectoryClient};
use patchwork_server::NodeConfig;
use rand::{Rng, SeedableRng};

mod common;

use common::{
    BIN, PERSONS, examples, kill_9, must_pass, patchwork, quickstart, start, stored_involvements,
};

const ROUNDS: usize = 50;
const WRITERS: usize = 3;
const LOOKERS: usize = 2;

/// Records involvements until the node dies; returns the ids it acknowledged.
async fn write_until_killed(
    config: NodeConfig,
    acknowledged: Arc<Mutex<Vec<String>>>,
    writer: usize,
) {
    let Ok(channel) = patchwork_cli::work::client::connect(&config).await else {
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

/// Looks Amelia up until the node dies; returns the lookup ids answered.
async fn look_up_until_killed(config: NodeConfig, acknowledged: Arc<Mutex<Vec<String>>>) {
    let Ok(channel) = patchwork_cli::work::client::connect(&config).await else {
        return;
    };
    let mut directory = DirectoryClient::new(channel);
    loop {
        let request = v1::LookupRequest {
            subject: Some(v1::Demographics {
                given_name: "Amelia".into(),
                family_name: "Smith-Jones".into(),
                date_of_birth: Some(v1::Date {
                    year: 2015,
                    month: 3,
                    day: 14,
                }),
                ..Default::default()
            }),
            purpose: Some(v1::Purpose {
                lawful_basis: v1::LawfulBasis::ChildSafeguarding as i32,
                reason: "crash test".into(),
            }),
            requester: Some(v1::Requester {
                practitioner_id: "PR-005".into(),
                ..Default::default()
            }),
            local_only: true,
            ..Default::default()
        };
        match directory.lookup(request).await {
            Ok(reply) => acknowledged
                .lock()
                .expect("lock")
                .push(reply.into_inner().lookup_id),
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
    let config_path = quickstart(&dir);
    let config_arg = config_path.to_str().expect("path").to_owned();
    let config = NodeConfig::load(&config_path).expect("config");
    let bulk = tmp.path().join("bulk.csv");
    let bulk_arg = bulk.to_str().expect("path").to_owned();
    assert!(
        patchwork(&["synth", "persons", "--count", "3000", "--out", &bulk_arg])
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
    let looked_up = Arc::new(Mutex::new(Vec::new()));
    let (mut imports, mut with_lookups) = (0, 0);
    for round in 0..ROUNDS {
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| tokio::spawn(write_until_killed(config.clone(), acknowledged.clone(), w)))
            .collect();
        // Lookups in most rounds (each writes two audit entries), an import
        // in about half: the kill lands wherever the dice say.
        let lookers: Vec<_> = if rng.random_bool(0.75) {
            with_lookups += 1;
            (0..LOOKERS)
                .map(|_| tokio::spawn(look_up_until_killed(config.clone(), looked_up.clone())))
                .collect()
        } else {
            Vec::new()
        };
        let import = rng.random_bool(0.5).then(|| {
            imports += 1;
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
        tokio::time::sleep(Duration::from_millis(rng.random_range(20..300))).await;
        kill_9(&mut node);
        for task in writers.into_iter().chain(lookers) {
            task.await.expect("writer or looker");
        }
        if let Some(mut import) = import {
            import.wait().expect("import ends when the node dies");
        }
        let round_name = format!("round {round}");
        must_pass(&round_name, &["store", "check", "--config", &config_arg]);
        let verified = must_pass(
            &round_name,
            &[
                "audit",
                "verify",
                "--offline",
                "--json",
                "--config",
                &config_arg,
            ],
        );
        assert!(
            verified.contains("\"intact\":true"),
            "round {round}: {verified}"
        );
        node = start(&config_arg, &config).await;
    }
    eprintln!("{ROUNDS} kills: {imports} during an import, {with_lookups} during lookups");

    let acknowledged = acknowledged.lock().expect("lock").clone();
    assert!(
        acknowledged.len() >= ROUNDS,
        "the writers got some writes acknowledged"
    );
    let stored = stored_involvements(&config).await;
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

    // Every lookup that was answered was audited durably first.
    let looked_up = looked_up.lock().expect("lock").clone();
    assert!(!looked_up.is_empty(), "the lookers got some answers");
    let store = patchwork_store::Store::open(&config.store_dir(), &Default::default())
        .expect("open the killed node's store");
    let mut audited = std::collections::HashSet::new();
    for seq in 1..=store.audit_len().expect("audit length") {
        if let Some(entry) = store.audit_entry(seq).expect("audit entry")
            && let patchwork_store::audit::AuditEvent::LookupAnswered { lookup_id, .. } =
                entry.event
        {
            audited.insert(lookup_id);
        }
    }
    let unaudited: Vec<_> = looked_up
        .iter()
        .filter(|id| !audited.contains(*id))
        .collect();
    assert!(
        unaudited.is_empty(),
        "{} of {} answered lookups not in the audit log: {unaudited:?}",
        unaudited.len(),
        looked_up.len()
    );
    eprintln!("{} answered lookups all audited", looked_up.len());
}

/// Persons the running node holds.
async fn persons_held(admin: &mut AdminClient<tonic::transport::Channel>) -> Option<u64> {
    let stats = admin.get_stats(v1::GetStatsRequest {}).await.ok()?;
    Some(stats.into_inner().persons)
}

/// A 3,000-row import (three write batches) killed with SIGKILL while it
/// writes leaves 0 or 3,000 rows once the node is back, never between; and
/// the CLI says the node cut the import off, not that it refused it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_killed_midway_is_whole_or_absent_after_restart() {
    patchwork_certs::install_crypto_provider();
    const ROWS: u64 = 3000;
    const ROUNDS: usize = 5;
    let tmp = tempfile::tempdir().expect("tempdir");
    let bulk = tmp.path().join("bulk.csv");
    let bulk_arg = bulk.to_str().expect("path").to_owned();
    must_pass(
        "synth",
        &["synth", "persons", "--count", "3000", "--out", &bulk_arg],
    );
    let mut killed_midway = 0;
    for round in 0..ROUNDS {
        let dir = tmp.path().join(format!("node-{round}"));
        let config_path = quickstart(&dir);
        let config_arg = config_path.to_str().expect("path").to_owned();
        let config = NodeConfig::load(&config_path).expect("config");
        let mut node = start(&config_arg, &config).await;
        let mut admin = AdminClient::new(
            patchwork_cli::work::client::connect(&config)
                .await
                .expect("connect"),
        );
        let import = Command::new(BIN)
            .args(["import", "persons", "--quiet", "--config", &config_arg])
            .args(["--file", &bulk_arg])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("import");
        // Once the first batch is visible, an acknowledged write makes it
        // durable (one flush covers every write before it), then the kill:
        // the import is part-way through writing, with batches on disk.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let held = persons_held(&mut admin).await.unwrap_or(0);
            if held > 0 || Instant::now() > deadline {
                break;
            }
        }
        DirectoryClient::new(
            patchwork_cli::work::client::connect(&config)
                .await
                .expect("connect"),
        )
        .create_organisation(v1::CreateOrganisationRequest {
            organisation: Some(v1::Organisation {
                id: format!("O-FLUSH-{round}"),
                name: "Flushes the batches before it".into(),
                sector: v1::Sector::Other as i32,
            }),
        })
        .await
        .expect("an acknowledged write");
        let seen = persons_held(&mut admin).await.unwrap_or(0);
        kill_9(&mut node);
        let out = import.wait_with_output().expect("import ends");
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        if seen < ROWS {
            killed_midway += 1;
            assert!(!out.status.success(), "round {round}: {stderr}");
            assert!(
                stderr.contains("cut off") && !stderr.contains("refused"),
                "round {round}: {stderr}"
            );
        }
        must_pass(
            &format!("round {round}"),
            &["store", "check", "--config", &config_arg],
        );
        let mut node = start(&config_arg, &config).await;
        let mut admin = AdminClient::new(
            patchwork_cli::work::client::connect(&config)
                .await
                .expect("connect"),
        );
        let after = persons_held(&mut admin).await.expect("stats");
        eprintln!("round {round}: {seen} persons seen before the kill, {after} after restart");
        assert!(
            after == 0 || after == ROWS,
            "round {round}: {after} of {ROWS} rows after the restart"
        );
        if seen > 0 {
            // Batches were on disk: the import must have been finished.
            assert_eq!(after, ROWS, "round {round}");
        }
        kill_9(&mut node);
        must_pass(
            &format!("round {round}"),
            &["store", "check", "--config", &config_arg],
        );
    }
    assert!(
        killed_midway > 0,
        "no round killed the node part-way through the import"
    );
}
