//! Backup and restore: a backup taken from a running node while records are
//! written and people looked up is one consistent snapshot. Restored on the
//! stopped node into a fresh store folder, it holds every record
//! acknowledged before the backup began, its indexes agree, its audit log
//! verifies and is a prefix of the original's, and the node started on it
//! answers lookups and goes on chaining audit entries. A damaged backup is
//! refused before anything is written; only admins may take a backup.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use patchwork_cli::cli::{ImportRequest, backup_to_file, import_csv, restore_from_file};
use patchwork_cli::work::csv_rows::CsvKind;
use patchwork_store::backup::verify_backup;
use patchwork_store::{Store, StoreOptions};
use patchwork_tests::{
    ClientCert, ClientGrant, Records, TRUST_DOMAIN, TestCa, TestNode, eventually, involvement,
    lookup_request, person, v1,
};
use tonic::Code;

/// Persons imported before the writers start, so the walk takes a while.
const SEED_PERSONS: usize = 3000;

fn amelia() -> v1::Demographics {
    v1::Demographics {
        given_name: "Amelia".into(),
        family_name: "Smith-Jones".into(),
        date_of_birth: patchwork_tests::date(2015, 3, 14),
        ..Default::default()
    }
}

async fn seed(node: &TestNode, portal: &ClientCert) {
    let records = Records {
        persons: vec![person(
            "P-1",
            "Amelia",
            "Smith-Jones",
            patchwork_tests::date(2015, 3, 14),
            "943 476 5919",
        )],
        involvements: vec![involvement(
            "P-1",
            "PR-1",
            "Child protection",
            v1::Sensitivity::AlwaysFindable,
        )],
        ..Records::team(
            "ORG-1",
            "Surrey Children's Services",
            &[
                ("PR-1", "Sam Okafor", "Social worker"),
                ("PR-2", "Jo Patel", "Health visitor"),
            ],
        )
    };
    patchwork_tests::seed(node, portal, records).await;

    let csv = node.dir.path().join("persons.csv");
    let mut text =
        String::from("id,given_name,family_name,date_of_birth,postcode,address,national_id\n");
    for i in 0..SEED_PERSONS {
        text.push_str(&format!(
            "S-{i},Given{i},Family{},2010-01-{:02},GU1 1AA,,\n",
            i % 97,
            1 + i % 28
        ));
    }
    std::fs::write(&csv, text).expect("write csv");
    let outcome = import_csv(
        &node.config(),
        &ImportRequest {
            kind: CsvKind::Persons,
            file: csv,
            dry_run: false,
            skip_bad_rows: false,
            mirror: false,
            force: false,
            progress: false,
        },
    )
    .await
    .expect("import");
    assert_eq!(outcome.report.created, SEED_PERSONS as u64);
}

/// Creates persons, each with an involvement, until told to stop; records
/// the id of every person whose involvement was acknowledged.
async fn write_until_stopped(
    node_channel: tonic::transport::Channel,
    writer: usize,
    acknowledged: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
) {
    let mut directory = v1::directory_client::DirectoryClient::new(node_channel);
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        let id = format!("W{writer}-{n}");
        let mut record = person(
            &id,
            "Writer",
            &format!("Family{writer}x{n}"),
            patchwork_tests::date(2012, 5, 1 + n % 28),
            "",
        );
        record.postcode = "GU2 2BB".into();
        directory
            .create_person(v1::CreatePersonRequest {
                person: Some(record),
            })
            .await
            .expect("writer person");
        directory
            .record_involvement(v1::RecordInvolvementRequest {
                involvement: Some(involvement(
                    &id,
                    "PR-2",
                    "Health visiting",
                    v1::Sensitivity::Standard,
                )),
            })
            .await
            .expect("writer involvement");
        acknowledged.lock().expect("lock").push(id);
        n += 1;
    }
}

/// Looks Amelia up until told to stop: every lookup appends two audit
/// entries.
async fn look_up_until_stopped(node_channel: tonic::transport::Channel, stop: Arc<AtomicBool>) {
    let mut directory = v1::directory_client::DirectoryClient::new(node_channel);
    while !stop.load(Ordering::Relaxed) {
        directory
            .lookup(lookup_request(amelia(), "PR-2"))
            .await
            .expect("lookup");
    }
}

fn set_data_dir(node: &TestNode, data_dir: &str) {
    node.edit_config(|config| config.node.data_dir = node.dir.path().join(data_dir));
}

fn open(dir: &Path) -> Store {
    Store::open(dir, &StoreOptions::default()).expect("open store")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backup_taken_under_writes_restores_everything_acknowledged_before_it() {
    let ca = TestCa::new(TRUST_DOMAIN);
    let portal = ca.client("portal");
    let mut node = TestNode::start(
        &ca,
        "surrey",
        &[ClientGrant {
            client: &portal,
            roles: &["records", "lookup"],
        }],
    )
    .await;
    seed(&node, &portal).await;
    let mut directory = node.directory(&portal).await;
    for _ in 0..3 {
        let answer = directory
            .lookup(lookup_request(amelia(), "PR-2"))
            .await
            .expect("lookup")
            .into_inner();
        assert_eq!(answer.answers[0].outcome, v1::NodeOutcome::Matched as i32);
    }

    // Writers and lookups go on while the backup is taken.
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for writer in 0..2 {
        tasks.push(tokio::spawn(write_until_stopped(
            node.try_channel(&portal).await.expect("connect"),
            writer,
            acknowledged.clone(),
            stop.clone(),
        )));
    }
    tasks.push(tokio::spawn(look_up_until_stopped(
        node.try_channel(&portal).await.expect("connect"),
        stop.clone(),
    )));
    let count = || acknowledged.lock().expect("lock").len();
    assert!(
        eventually(Duration::from_secs(30), || async { count() >= 20 }).await,
        "writers make progress"
    );
    let before: Vec<String> = acknowledged.lock().expect("lock").clone();
    let backup = node.dir.path().join("surrey.pwbackup");
    let summary = backup_to_file(&node.config(), &backup)
        .await
        .expect("backup");
    let after_backup = count();
    assert!(
        eventually(Duration::from_secs(30), || async {
            count() >= after_backup + 10
        })
        .await,
        "writes resume after the backup"
    );
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.expect("writer");
    }

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&backup)
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "a backup holds personal data");
    }
    let info = verify_backup(&backup).expect("the file verifies");
    assert_eq!(info.header.node_identity, node.identity.to_string());
    assert_eq!(info.sha256_hex(), summary.sha256_hex);
    assert_eq!(info.bytes, summary.bytes);
    assert!(summary.audit_entries >= 6);
    for tree in [
        "persons",
        "person_index",
        "match_index",
        "audit-log",
        "meta",
    ] {
        assert!(
            info.trees.iter().any(|(name, _)| name == tree),
            "{tree} is in the backup"
        );
    }
    node.stop().await;

    // A damaged copy is refused before anything is written.
    let bytes = std::fs::read(&backup).expect("read backup");
    let mut damaged = bytes.clone();
    damaged[bytes.len() / 3] ^= 0x20;
    let damaged_file = node.dir.path().join("damaged.pwbackup");
    std::fs::write(&damaged_file, &damaged).expect("write");
    set_data_dir(&node, "damaged");
    let refused = restore_from_file(&node.config(), &damaged_file, false, false)
        .expect_err("a damaged backup is refused");
    assert!(
        format!("{refused:#}").contains("checksum does not match"),
        "{refused:#}"
    );
    assert!(!node.dir.path().join("damaged").exists(), "nothing written");

    // Restore into a fresh folder.
    set_data_dir(&node, "restored");
    let report = restore_from_file(&node.config(), &backup, false, false).expect("restore");
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert!(report.audit.intact, "{}", report.audit.detail);
    assert_eq!(report.audit.entries, summary.audit_entries);
    assert!(report.moved_aside.is_none());
    let again = restore_from_file(&node.config(), &backup, false, false)
        .expect_err("a store is in the way");
    assert!(format!("{again:#}").contains("is not empty"), "{again:#}");

    {
        let restored = open(&node.dir.path().join("restored/store"));
        let original = open(&node.dir.path().join("data/store"));
        for id in &before {
            assert!(
                restored.person(id).expect("read").is_some(),
                "person {id} was acknowledged before the backup began"
            );
            assert_eq!(
                restored.involvements_of_person(id).expect("read").len(),
                1,
                "the involvement of {id} was acknowledged before the backup began"
            );
        }
        assert!(report.counts.persons as usize >= SEED_PERSONS + 1 + before.len());
        // The snapshot is the original at one instant: its audit log is a
        // prefix of the original's, and every person in it is in the original.
        let last = report.audit.entries;
        assert_eq!(
            restored
                .audit_entry(last)
                .expect("read")
                .map(|e| e.leaf_hash),
            original
                .audit_entry(last)
                .expect("read")
                .map(|e| e.leaf_hash)
        );
        assert!(original.audit_len().expect("len") > last);
        let persons_restored = report.counts.persons;
        assert!(original.counts().expect("counts").persons > persons_restored);
        let writers_restored: BTreeSet<String> = (0..2)
            .flat_map(|w| {
                (0..)
                    .map(move |n| format!("W{w}-{n}"))
                    .take_while(|id| restored.person(id).expect("read").is_some())
                    .collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(
            writers_restored.len() as u64,
            persons_restored - SEED_PERSONS as u64 - 1,
            "each writer's persons are a prefix of what it wrote"
        );
    }

    // The node runs on the restored store.
    node.start_again().await;
    let stats = node.stats().await;
    assert_eq!(stats.persons, report.counts.persons);
    assert_eq!(stats.audit_entries, summary.audit_entries);
    let mut directory = node.directory(&portal).await;
    let answer = directory
        .lookup(lookup_request(amelia(), "PR-2"))
        .await
        .expect("lookup")
        .into_inner();
    assert_eq!(answer.answers[0].outcome, v1::NodeOutcome::Matched as i32);
    let verified = node
        .admin()
        .await
        .verify_audit(v1::VerifyAuditRequest {})
        .await
        .expect("verify")
        .into_inner();
    assert!(verified.intact, "{}", verified.detail);
    assert_eq!(verified.entries, summary.audit_entries + 2);
    node.stop().await;
}

#[tokio::test]
async fn only_admins_may_take_a_backup() {
    let ca = TestCa::new(TRUST_DOMAIN);
    let portal = ca.client("portal");
    let node = TestNode::start(
        &ca,
        "surrey",
        &[ClientGrant {
            client: &portal,
            roles: &["records", "lookup"],
        }],
    )
    .await;
    let mut as_portal = v1::admin_client::AdminClient::new(
        node.try_channel(&portal).await.expect("portal connects"),
    );
    let refused = as_portal
        .backup(v1::BackupRequest {})
        .await
        .expect_err("portal is not admin");
    assert_eq!(refused.code(), Code::PermissionDenied);
}
