//! Peers, agreements and federation limits change on `patchwork reload`
//! (Admin.Reload; SIGHUP runs the same code), without a restart: the change
//! is audited before it is in force, a bad change is refused with the field
//! that is wrong and changes nothing, a change that needs a restart is named
//! and waits, and only the node's administrators may ask (issue 13, point 12).

use patchwork_server::base::config::KeySetEntry;
use patchwork_store::audit::AuditEvent;
use patchwork_store::model::LawfulBasis;
use patchwork_tests::attacker::audit_events;
use patchwork_tests::{
    ClientCert, TestCa, TestNode, answer_about_amelia, england_federation, seed_amelia, seed_team,
    start_council, v1,
};
use tokio::net::TcpListener;
use tonic::Code;

const SECRET: &str = "5f1d3c0a9b8e7d6c5b4a39281706f5e4d3c2b1a09f8e7d6c5b4a392817060504";

/// Kent's answer to Surrey's child-safeguarding lookup of Amelia.
async fn kent_answer(surrey: &TestNode, portal: &ClientCert) -> v1::NodeAnswer {
    answer_about_amelia(surrey, portal, "PR-S1", "kent").await
}

fn outcome(answer: &v1::NodeAnswer) -> v1::NodeOutcome {
    v1::NodeOutcome::try_from(answer.outcome).expect("outcome")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn agreements_and_peers_change_on_reload_and_a_bad_change_changes_nothing() {
    let ca = TestCa::new("england.patchwork");
    let surrey_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let kent_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let surrey_addr = surrey_listener.local_addr().expect("addr");
    let kent_addr = kent_listener.local_addr().expect("addr");
    let portal = ca.client("portal");
    let surrey = start_council(
        &ca,
        "surrey",
        surrey_listener,
        england_federation(
            &ca,
            ("kent", kent_addr),
            &[LawfulBasis::ChildSafeguarding],
            600,
        ),
        SECRET,
    )
    .await;
    // Kent answers Surrey for direct care only, to begin with.
    let mut kent = start_council(
        &ca,
        "kent",
        kent_listener,
        england_federation(
            &ca,
            ("surrey", surrey_addr),
            &[LawfulBasis::DirectCare],
            600,
        ),
        SECRET,
    )
    .await;
    seed_team(&surrey, &portal, "ORG-S", "PR-S1").await;
    seed_team(&kent, &portal, "ORG-K", "PR-K1").await;
    seed_amelia(&kent, &portal, "PR-K1").await;
    let answer = kent_answer(&surrey, &portal).await;
    assert_eq!(outcome(&answer), v1::NodeOutcome::Refused, "{answer:?}");

    // Kent widens the agreement (and renames itself, which waits for a
    // restart): in force at once, without one.
    kent.edit_config(|config| {
        config.federation.peers[0].purposes =
            vec![LawfulBasis::ChildSafeguarding, LawfulBasis::DirectCare];
        config.node.display_name = "Kent County Council".into();
    });
    let reloaded = kent.reload().await.expect("reload");
    let surrey_id = &surrey.identity;
    let widened = format!(
        "agreement with {surrey_id} changed: purposes child-safeguarding, direct-care; \
         sensitivities standard; 600 queries a minute; key set england \
         (was purposes direct-care; sensitivities standard; 600 queries a minute; key set england)"
    );
    assert!(
        reloaded.changes.contains(&widened),
        "{:?}",
        reloaded.changes
    );
    assert_eq!(reloaded.needs_restart, ["node"]);
    let answer = kent_answer(&surrey, &portal).await;
    assert_eq!(outcome(&answer), v1::NodeOutcome::Matched, "{answer:?}");
    assert_eq!(answer.involvements.len(), 1);
    let as_surrey = kent.try_channel(&surrey.node_cert).await.expect("connect");
    let info = v1::federation_client::FederationClient::new(as_surrey)
        .node_info(v1::NodeInfoRequest {})
        .await
        .expect("node info")
        .into_inner();
    assert_eq!(
        info.display_name, "kent council",
        "[node] waits for a restart"
    );

    // Bad changes are refused, naming the key, and nothing changes.
    let good = std::fs::read_to_string(&kent.config_path).expect("config");
    kent.edit_config(|config| config.federation.peers[0].key_set = "wales".into());
    let refused = kent.reload().await.expect_err("an unknown key set");
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert!(
        refused
            .message()
            .contains("reload refused, nothing changed")
            && refused.message().contains("federation.peers[0].key_set"),
        "{refused:?}"
    );
    std::fs::write(&kent.config_path, &good).expect("restore");
    kent.replace_file("wales.key", &"ab".repeat(32), false);
    std::fs::set_permissions(
        kent.dir.path().join("wales.key"),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .expect("chmod");
    kent.edit_config(|config| {
        config.federation.key_sets.push(KeySetEntry {
            name: "wales".into(),
            secret_file: "wales.key".into(),
        })
    });
    let refused = kent.reload().await.expect_err("a secret others can read");
    assert!(
        refused
            .message()
            .contains("federation.key_sets[1].secret_file")
            && refused.message().contains("chmod 600"),
        "{refused:?}"
    );
    let answer = kent_answer(&surrey, &portal).await;
    assert_eq!(outcome(&answer), v1::NodeOutcome::Matched, "{answer:?}");
    let (_, metrics) = kent.metrics().await;
    assert!(
        metrics.contains("patchwork_tls_reloads_refused_total 2"),
        "{metrics}"
    );

    // Only the node's administrators may reload: a local client with valid
    // credentials and other roles, and an agreed peer, are refused.
    std::fs::write(&kent.config_path, &good).expect("restore");
    kent.edit_config(|config| config.federation.peers[0].rate_limit_per_minute = 5);
    for (who, cert) in [("portal", &portal), ("peer", &surrey.node_cert)] {
        let channel = kent.try_channel(cert).await.expect("connect");
        let denied = v1::admin_client::AdminClient::new(channel)
            .reload(v1::ReloadRequest {})
            .await
            .expect_err(who);
        assert_eq!(denied.code(), Code::PermissionDenied, "{who}: {denied:?}");
    }
    let (_, metrics) = kent.metrics().await;
    assert!(
        metrics.contains("patchwork_tls_reloads_refused_total 2"),
        "a denied caller reloads nothing: {metrics}"
    );

    // Kent ends the agreement: Surrey is refused from the next query on.
    std::fs::write(&kent.config_path, &good).expect("restore");
    kent.edit_config(|config| config.federation.peers.clear());
    let reloaded = kent.reload().await.expect("reload");
    assert!(
        reloaded.changes.contains(&format!(
            "peer {surrey_id} (surrey) removed: this node neither asks nor answers it"
        )),
        "{:?}",
        reloaded.changes
    );
    let answer = kent_answer(&surrey, &portal).await;
    assert_eq!(outcome(&answer), v1::NodeOutcome::Refused, "{answer:?}");
    assert!(answer.detail.contains("no agreement"), "{answer:?}");

    // Each change is in the audit before what it allowed: the widening
    // before the disclosure it made possible, and no entry for a refusal.
    kent.stop().await;
    let events = audit_events(&kent);
    let changed: Vec<(usize, &Vec<String>)> = events
        .iter()
        .enumerate()
        .filter_map(|(i, e)| match e {
            AuditEvent::FederationChanged { trigger, changes } => {
                assert_eq!(trigger, &format!("admin reload by {}", kent.identity));
                Some((i, changes))
            }
            _ => None,
        })
        .collect();
    assert_eq!(changed.len(), 2, "{changed:?}");
    assert_eq!(changed[0].1, &vec![widened]);
    let disclosed = events
        .iter()
        .position(|e| matches!(e, AuditEvent::PeerAsked { outcome, .. } if outcome == "matched"))
        .expect("a matched PeerAsked");
    assert!(changed[0].0 < disclosed);
}
