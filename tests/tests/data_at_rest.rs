//! What a node leaves on disk is for its own user only: the data folder
//! (the store: names, dates of birth, NHS numbers) is made 0700 and a node
//! refuses to start with one others can read; backups are written 0600.

#![cfg(unix)]

use patchwork_cli::cli::backup_to_file;
use patchwork_tests::hardening::{mode, readable_by_others, start_refused};
use patchwork_tests::{ClientGrant, TRUST_DOMAIN, TestCa, TestNode, date, person, v1};
use std::os::unix::fs::PermissionsExt;

#[tokio::test]
async fn the_store_and_its_backups_are_private_and_an_open_data_folder_is_refused() {
    let ca = TestCa::new(TRUST_DOMAIN);
    let portal = ca.client("portal");
    let mut node = TestNode::start(
        &ca,
        "surrey",
        &[ClientGrant {
            client: &portal,
            roles: &["records"],
        }],
    )
    .await;
    node.directory(&portal)
        .await
        .create_person(v1::CreatePersonRequest {
            person: Some(person(
                "P-1",
                "Amelia",
                "Hart",
                date(2015, 3, 14),
                "9434765919",
            )),
        })
        .await
        .expect("put person");
    let data = node.dir.path().join("data");
    assert_eq!(mode(&data), 0o700, "a fresh data folder is private");
    assert_eq!(mode(&data.join("store")), 0o700);
    assert!(
        std::fs::read_dir(data.join("store"))
            .expect("store")
            .count()
            > 0,
        "sled wrote its files"
    );
    assert_eq!(readable_by_others(&data), Vec::<std::path::PathBuf>::new());

    let backup = node.dir.path().join("surrey.pwbackup");
    backup_to_file(&node.config(), &backup)
        .await
        .expect("backup");
    assert_eq!(
        mode(&backup),
        0o600,
        "a backup holds the same personal data"
    );
    node.stop().await;

    // A data folder opened up (an operator's chmod, a copy, a umask) is
    // refused at start, naming the folder and the fix.
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let refused = start_refused(&node).await;
    let shown = data.display().to_string();
    assert_eq!(
        refused,
        format!(
            "node.data_dir: {shown} is readable by group or others (mode 755); run chmod 700 {shown} (it holds personal data)"
        )
    );
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    node.start_again().await;
    node.stop().await;
}
