//! An agreed peer is an adversary too: it holds a valid certificate and the
//! shared match-key secret and crafts `Federation` requests by hand
//! (`patchwork_tests::attacker`). Each test is one finding of the adversarial
//! review (issue 12), driven over real mTLS against a real node, asserting
//! what the peer learns.

use patchwork_server::NodeConfig;
use patchwork_server::base::config::MissWindowEntry;
use patchwork_store::audit::AuditEvent;
use patchwork_tests::attacker::{
    Target, TargetOptions, honest_keys, keys_of_kind, query, request_id, subject,
};
use patchwork_tests::v1;
use v1::MatchKeyKind as K;

/// Amelia as the target holds her, and what the attacker knows of her.
const DOB: (i32, u32, u32) = (2015, 3, 14);

async fn target_with_amelia(options: TargetOptions) -> Target {
    let target = Target::start(options).await;
    target
        .person(
            "P-AMELIA",
            "Amelia",
            "Smith-Jones",
            (2015, 3, 14),
            "9434765919",
        )
        .await;
    target
        .involve("P-AMELIA", "PR-1", v1::Sensitivity::Standard, false)
        .await;
    target
}

fn status(answer: &v1::FindInvolvementsResponse) -> v1::MatchStatus {
    v1::MatchStatus::try_from(answer.status).expect("known status")
}

/// Finding 1: the answering node counts a hit under the kind it stored, so
/// relabelling a weak key as a national id gains nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relabelled_weak_key_is_weighed_as_what_it_is() {
    let target = target_with_amelia(TargetOptions::default()).await;
    let federation = target.federation_as(&target.peer).await;
    let known = subject("", "Smith-Jones", Some(DOB), "");
    let phonetic = keys_of_kind(&known, K::PhoneticFamilyDob);
    assert!(phonetic.len() >= 2, "one key per family-name token");

    let mut n = 0;
    let mut ask = |keys: Vec<(K, [u8; 32])>| {
        n += 1;
        let mut federation = federation.clone();
        let request = query(&request_id(n), &keys);
        async move {
            federation
                .find_involvements(request)
                .await
                .expect("answered")
                .into_inner()
        }
    };

    // Sent honestly: the family name and date of birth do not identify her.
    let honest = ask(phonetic
        .iter()
        .map(|d| (K::PhoneticFamilyDob, *d))
        .collect())
    .await;
    assert_eq!(status(&honest), v1::MatchStatus::Ambiguous);
    assert!(honest.involvements.is_empty());

    // The same digests labelled as national ids: the review's attack. The
    // answer is the honest one, word for word.
    let relabelled = ask(phonetic.iter().map(|d| (K::NationalId, *d)).collect()).await;
    assert_eq!(relabelled, honest);

    // One token's code alone, relabelled (the review's second variant): as
    // that one code sent honestly.
    for digest in &phonetic {
        let one = ask(vec![(K::NationalId, *digest)]).await;
        let honest_one = ask(vec![(K::PhoneticFamilyDob, *digest)]).await;
        assert_eq!(one, honest_one);
        assert_ne!(status(&one), v1::MatchStatus::Matched, "{one:?}");
    }

    // Labelled as names + date of birth, or as the swapped names: the label
    // cannot lift it either.
    for label in [K::NamesDob, K::SwappedNamesDob, K::PhoneticNamesPostcode] {
        let answer = ask(phonetic.iter().map(|d| (label, *d)).collect()).await;
        assert_eq!(answer, honest, "{label:?}");
    }

    // A Subscribe on the relabelled keys follows nobody.
    let subscribed = federation
        .clone()
        .subscribe(v1::SubscribeRequest {
            request_id: request_id(1000),
            key_set: patchwork_tests::attacker::KEY_SET.into(),
            match_keys: query(
                "unused",
                &phonetic
                    .iter()
                    .map(|d| (K::NationalId, *d))
                    .collect::<Vec<_>>(),
            )
            .match_keys,
            purpose: query("unused", &[]).purpose,
            requester: query("unused", &[]).requester,
            national_id_scheme: "nhs".into(),
            ttl_days: 90,
        })
        .await
        .expect("answered")
        .into_inner();
    assert_ne!(subscribed.status, v1::MatchStatus::Matched as i32);
    assert!(subscribed.subscription_id.is_empty());

    // An honest peer that knows her still finds her.
    let full = subject("Amelia", "Smith-Jones", Some(DOB), "GU1 1AA");
    let genuine = ask(honest_keys(&full)).await;
    assert_eq!(status(&genuine), v1::MatchStatus::Matched);
    assert_eq!(genuine.involvements.len(), 1);
}

/// Finding 1, the other way round: an honest key sent under a label that
/// weighs less is weighed as the label says, never as more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_label_may_only_weaken_a_hit() {
    let target = target_with_amelia(TargetOptions::default()).await;
    let mut federation = target.federation_as(&target.peer).await;
    let full = subject("Amelia", "Smith-Jones", Some(DOB), "");
    let names_dob = keys_of_kind(&full, K::NamesDob);
    assert_eq!(names_dob.len(), 1);
    // Names and date of birth with no postcode in the query decide (the
    // practitioner knew no address)...
    let strong = federation
        .find_involvements(query(&request_id(1), &[(K::NamesDob, names_dob[0])]))
        .await
        .expect("answered")
        .into_inner();
    assert_eq!(status(&strong), v1::MatchStatus::Matched);
    // ... but the same digest said to be a transposed date is weaker.
    let transposed = federation
        .find_involvements(query(
            &request_id(2),
            &[(K::NamesDobTransposed, names_dob[0])],
        ))
        .await
        .expect("answered")
        .into_inner();
    assert_eq!(status(&transposed), v1::MatchStatus::Ambiguous);
}

/// Finding 4: "matched, nothing disclosed" is answered exactly as for an
/// unknown person, and the audit keeps the truth.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_match_with_nothing_to_disclose_looks_like_no_match() {
    let mut target = target_with_amelia(TargetOptions::default()).await;
    // Only an ended involvement; no involvement at all; only a restricted
    // one, which the agreement (standard only) does not cover.
    target
        .person("P-ENDED", "Ben", "Carter", (2012, 5, 2), "")
        .await;
    target
        .involve("P-ENDED", "PR-1", v1::Sensitivity::Standard, true)
        .await;
    target
        .person("P-NONE", "Cara", "Dunn", (2011, 7, 9), "")
        .await;
    target
        .person("P-RESTRICTED", "Dev", "Evans", (2009, 1, 30), "")
        .await;
    target
        .involve("P-RESTRICTED", "PR-2", v1::Sensitivity::Restricted, false)
        .await;
    let mut federation = target.federation_as(&target.peer).await;
    let mut answers = Vec::new();
    for (i, (given, family, dob)) in [
        ("Ben", "Carter", (2012, 5, 2)),
        ("Cara", "Dunn", (2011, 7, 9)),
        ("Dev", "Evans", (2009, 1, 30)),
        // Nobody the target holds.
        ("Finn", "Grant", (2010, 11, 11)),
    ]
    .into_iter()
    .enumerate()
    {
        let keys = honest_keys(&subject(given, family, Some(dob), "GU1 1AA"));
        let answer = federation
            .find_involvements(query(&request_id(i), &keys))
            .await
            .expect("answered")
            .into_inner();
        answers.push(answer);
    }
    let unknown = answers.last().expect("four answers").clone();
    assert_eq!(status(&unknown), v1::MatchStatus::NoMatch);
    for (i, answer) in answers.iter().enumerate() {
        assert_eq!(
            answer, &unknown,
            "answer {i} differs from an unknown person's"
        );
    }
    // Weaker keys — the family name and date of birth alone, or every name
    // with a wrong postcode — would make doubt ("ambiguous") of a person
    // held: for these three, nothing of whom this peer may see, it is "no
    // match" too, exactly as for the stranger.
    for (i, (given, family, dob)) in [
        ("Ben", "Carter", (2012, 5, 2)),
        ("Cara", "Dunn", (2011, 7, 9)),
        ("Dev", "Evans", (2009, 1, 30)),
        ("Finn", "Grant", (2010, 11, 11)),
    ]
    .into_iter()
    .enumerate()
    {
        let phonetic: Vec<(K, [u8; 32])> =
            keys_of_kind(&subject("", family, Some(dob), ""), K::PhoneticFamilyDob)
                .into_iter()
                .map(|d| (K::PhoneticFamilyDob, d))
                .collect();
        let moved = honest_keys(&subject(given, family, Some(dob), "KT1 1AA"));
        for (j, keys) in [phonetic, moved].iter().enumerate() {
            let answer = federation
                .find_involvements(query(&request_id(100 + 10 * i + j), keys))
                .await
                .expect("answered")
                .into_inner();
            assert_eq!(answer, unknown, "weak query {j} about person {i}");
        }
    }
    // Amelia, with a current standard involvement, is still matched.
    let amelia = federation
        .find_involvements(query(
            &request_id(10),
            &honest_keys(&subject("Amelia", "Smith-Jones", Some(DOB), "GU1 1AA")),
        ))
        .await
        .expect("answered")
        .into_inner();
    assert_eq!(status(&amelia), v1::MatchStatus::Matched);

    let outcomes: Vec<(String, Option<String>)> = target
        .stopped_audit()
        .await
        .into_iter()
        .filter_map(|event| match event {
            AuditEvent::PeerAsked {
                outcome, person_id, ..
            } => Some((outcome, person_id)),
            _ => None,
        })
        .collect();
    let withheld = |id: &str| ("matched_withheld".to_owned(), Some(id.to_owned()));
    let doubt = || ("ambiguous_withheld".to_owned(), None);
    let none = || ("no_match".to_owned(), None);
    assert_eq!(
        outcomes,
        vec![
            withheld("P-ENDED"),
            withheld("P-NONE"),
            withheld("P-RESTRICTED"),
            none(),
            doubt(),
            doubt(),
            doubt(),
            doubt(),
            doubt(),
            doubt(),
            none(),
            none(),
            ("matched".to_owned(), Some("P-AMELIA".to_owned())),
        ]
    );
}

/// About 4 KiB of attacker-chosen text per request, as in the review.
fn stuffed(n: usize, keys: &[(K, [u8; 32])]) -> v1::FindInvolvementsRequest {
    let mut request = query(&request_id(n), keys);
    let requester = request.requester.as_mut().expect("requester");
    requester.name = "N".repeat(1_000);
    requester.role = "R".repeat(1_000);
    requester.organisation = "O".repeat(1_000);
    request.purpose.as_mut().expect("purpose").reason = "W".repeat(1_000);
    request
}

fn dir_bytes(path: &std::path::Path) -> u64 {
    std::fs::read_dir(path)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_bytes(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

fn percentile(sorted: &[std::time::Duration], p: f64) -> std::time::Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// A genuine peer's query latencies (sorted), `count` of them in sequence.
async fn genuine_latencies(target: &Target, from: usize, count: usize) -> Vec<std::time::Duration> {
    let mut federation = target.federation_as(&target.peer).await;
    let keys = honest_keys(&subject("Amelia", "Smith-Jones", Some(DOB), "GU1 1AA"));
    let mut latencies = Vec::with_capacity(count);
    for i in 0..count {
        let started = std::time::Instant::now();
        let answer = federation
            .find_involvements(query(&request_id(from + i), &keys))
            .await
            .expect("the genuine peer is answered")
            .into_inner();
        latencies.push(started.elapsed());
        assert_eq!(status(&answer), v1::MatchStatus::Matched);
    }
    latencies.sort();
    latencies
}

/// Finding 3: a certificate with no agreement cannot make the node write per
/// request; its refusals are one audit summary with a count, and a genuine
/// peer is answered throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unagreed_caller_cannot_flood_the_audit_log() {
    const FLOOD: usize = 3_000;
    let mut target = target_with_amelia(TargetOptions::default()).await;
    let baseline = genuine_latencies(&target, 0, 200).await;
    let entries_before = target.node.stats().await.audit_entries;
    let store_before = dir_bytes(&target.node.dir.path().join("data/store"));

    let keys = honest_keys(&subject("Amelia", "Smith-Jones", Some(DOB), "GU1 1AA"));
    let flood = |from: usize| {
        let mut flooders = Vec::new();
        for worker in 0..4 {
            let keys = keys.clone();
            let target = &target;
            flooders.push(async move {
                let mut federation = target.federation_as(&target.stranger).await;
                for i in (worker..FLOOD / 2).step_by(4) {
                    let refused = federation
                        .find_involvements(stuffed(from + i, &keys))
                        .await
                        .expect_err("no agreement");
                    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
                }
            });
        }
        futures::future::join_all(flooders)
    };
    // The flood alone: nothing written.
    flood(100_000).await;
    let entries_flooded = target.node.stats().await.audit_entries;
    let store_flooded = dir_bytes(&target.node.dir.path().join("data/store"));
    assert_eq!(
        entries_flooded, entries_before,
        "the flood wrote no audit entry"
    );
    // The flood beside a genuine peer, which is answered throughout.
    let (_, during) = tokio::join!(flood(200_000), genuine_latencies(&target, 1_000, 200));
    let entries_after = target.node.stats().await.audit_entries;
    assert_eq!(
        entries_after - entries_before,
        200,
        "only the genuine answers"
    );
    eprintln!(
        "flood of {FLOOD} unagreed queries with ~4 KiB of text each: {} audit entries written \
         (the summary comes at the minute or at shutdown); store {store_before} -> \
         {store_flooded} bytes during the first {} ({:.1} B per refused request); \
         genuine peer p50/p99 {:?}/{:?} before, {:?}/{:?} during",
        entries_flooded - entries_before,
        FLOOD / 2,
        store_flooded.saturating_sub(store_before) as f64 / (FLOOD / 2) as f64,
        percentile(&baseline, 0.5),
        percentile(&baseline, 0.99),
        percentile(&during, 0.5),
        percentile(&during, 0.99),
    );
    let (_, metrics) = target.node.metrics().await;
    assert!(
        metrics.contains(&format!("patchwork_unagreed_queries_refused_total {FLOOD}")),
        "{metrics}"
    );

    let stranger = target.stranger.identity.to_string();
    let summaries: Vec<(String, String, u64)> = target
        .stopped_audit()
        .await
        .into_iter()
        .filter_map(|event| match event {
            AuditEvent::PeerRefusals {
                caller,
                reason,
                count,
                ..
            } => Some((caller, reason, count)),
            AuditEvent::PeerAsked { outcome, .. } => {
                assert_ne!(outcome, "refused", "no per-request refusal entries");
                None
            }
            _ => None,
        })
        .collect();
    // One summary a minute (a slow run may span more than one), adding up
    // to every refusal.
    assert!(!summaries.is_empty());
    for (caller, reason, _) in &summaries {
        assert_eq!((caller, reason.as_str()), (&stranger, "no_agreement"));
    }
    assert_eq!(
        summaries.iter().map(|(_, _, count)| count).sum::<u64>(),
        FLOOD as u64
    );
}

/// Finding 3: a peer over its agreement's rate is refused before anything is
/// checked or written; its refusals are counted, and the refused requests'
/// text is never stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_over_its_rate_is_counted_not_written() {
    let mut target = target_with_amelia(TargetOptions {
        rate_limit_per_minute: 30,
        ..Default::default()
    })
    .await;
    let mut federation = target.federation_as(&target.peer).await;
    let keys = honest_keys(&subject("Finn", "Grant", Some((2010, 11, 11)), "GU1 1AA"));
    // 4 KiB of text: invalid (over the fields' limits), so within the rate
    // each is refused and audited on its own; over it, only counted.
    let (mut invalid, mut limited) = (0, 0);
    for i in 0..500 {
        let status = federation
            .find_involvements(stuffed(i, &keys))
            .await
            .expect_err("refused");
        match status.code() {
            tonic::Code::InvalidArgument => invalid += 1,
            tonic::Code::ResourceExhausted => limited += 1,
            other => panic!("unexpected {other:?}: {status:?}"),
        }
    }
    assert!(
        (30..=32).contains(&invalid),
        "the bucket holds 30: {invalid}"
    );
    let events = target.stopped_audit().await;
    let refused: Vec<&AuditEvent> = events
        .iter()
        .filter(|e| matches!(e, AuditEvent::PeerAsked { .. }))
        .collect();
    assert_eq!(refused.len(), invalid);
    for event in refused {
        let AuditEvent::PeerAsked {
            requester_name,
            requester_role,
            requester_organisation,
            reason,
            refusal,
            outcome,
            ..
        } = event
        else {
            continue;
        };
        assert_eq!(outcome, "refused");
        // What the peer wrote is kept only in part.
        for text in [
            requester_name,
            requester_role,
            requester_organisation,
            reason,
        ] {
            assert!(
                text.chars().count() <= 100,
                "{} characters kept",
                text.len()
            );
        }
        assert!(refusal.as_ref().is_some_and(|r| r.chars().count() <= 100));
    }
    let summaries: Vec<(String, u64)> = events
        .iter()
        .filter_map(|e| match e {
            AuditEvent::PeerRefusals { reason, count, .. } => Some((reason.clone(), *count)),
            _ => None,
        })
        .collect();
    assert!(summaries.iter().all(|(reason, _)| reason == "rate_limited"));
    assert_eq!(
        summaries.iter().map(|(_, count)| count).sum::<u64>(),
        limited as u64
    );
}

/// The date `days` after 1 January 2021.
fn day(days: u32) -> (i32, u32, u32) {
    let mut date = (2021, 1, 1);
    for _ in 0..days {
        let (y, m, d) = date;
        let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
        let last = match m {
            2 if leap => 29,
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        };
        date = if d < last {
            (y, m, d + 1)
        } else if m < 12 {
            (y, m + 1, 1)
        } else {
            (y + 1, 1, 1)
        };
    }
    date
}

/// What a sweep got: answers, refusals, and answers that were not "no match"
/// (each tells the prober someone with that key exists).
#[derive(Debug, Default)]
struct Sweep {
    answered: usize,
    paused: usize,
    found: usize,
    first_paused_at: Option<usize>,
}

/// Finding 2: the review's sweep — one phonetic family code with every date
/// of birth over three years, a known child asked about after every nine
/// probes to keep the miss ratio at 90 % — is paused and alerted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_date_of_birth_sweep_with_interleaved_hits_is_paused_and_alerted() {
    let target = target_with_amelia(TargetOptions::default()).await;
    for (i, dob) in [(2021, 6, 3), (2022, 9, 17), (2023, 2, 8)]
        .iter()
        .enumerate()
    {
        let id = format!("P-SMITH-{i}");
        target.person(&id, "Child", "Smith", *dob, "").await;
        target
            .involve(&id, "PR-1", v1::Sensitivity::Standard, false)
            .await;
    }
    let mut federation = target.federation_as(&target.peer).await;
    let amelia = honest_keys(&subject("Amelia", "Smith-Jones", Some(DOB), "GU1 1AA"));
    let mut sweep = Sweep::default();
    let mut n = 0;
    for days in 0..1_215u32 {
        if days % 9 == 8 {
            n += 1;
            let _ = federation
                .find_involvements(query(&request_id(n), &amelia))
                .await;
        }
        n += 1;
        let probe = subject("", "Smith", Some(day(days)), "");
        let keys: Vec<(K, [u8; 32])> = keys_of_kind(&probe, K::PhoneticFamilyDob)
            .into_iter()
            .map(|d| (K::PhoneticFamilyDob, d))
            .collect();
        match federation
            .find_involvements(query(&request_id(n), &keys))
            .await
        {
            Ok(answer) => {
                sweep.answered += 1;
                if status(answer.get_ref()) != v1::MatchStatus::NoMatch {
                    sweep.found += 1;
                }
            }
            Err(refused) => {
                assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
                assert_eq!(
                    refused.message(),
                    "query pattern looks like enumeration; queries paused"
                );
                sweep.paused += 1;
                sweep.first_paused_at.get_or_insert(days as usize);
            }
        }
    }
    eprintln!("date-of-birth sweep of 1215 dates with a known hit every 9 probes: {sweep:?}");
    assert!(
        sweep.first_paused_at.is_some_and(|at| at <= 60),
        "paused within the first 60 probes: {sweep:?}"
    );
    assert!(sweep.answered <= 60, "{sweep:?}");
    assert_eq!(sweep.found, 0, "{sweep:?}");
    let (_, metrics) = target.node.metrics().await;
    let line = format!(
        "patchwork_peer_enumeration_alerts_total{{peer=\"{}\"}} 1",
        target.peer.identity
    );
    assert!(metrics.contains(&line), "{line} in:\n{metrics}");
}

/// Finding 2: a sweep slow enough for the miss-ratio windows still meets the
/// daily budget of distinct queries, and a sweep around one constant key is
/// caught whatever else changes. (Configured small here so the test is
/// quick; the rules are the same at their defaults.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daily_budget_and_a_constant_key_sweep_pause_a_peer() {
    // No miss-ratio window can trip (a minimum no sweep here reaches).
    let options = |daily_distinct_queries, sweep_variants| TargetOptions {
        edits: vec![Box::new(move |config: &mut NodeConfig| {
            let rules = &mut config.federation.enumeration;
            rules.daily_distinct_queries = daily_distinct_queries;
            rules.sweep_variants = sweep_variants;
            rules.windows = vec![MissWindowEntry {
                minutes: 10,
                min_queries: 100_000,
                miss_ratio: 0.9,
            }];
        })],
        ..Default::default()
    };
    let target = target_with_amelia(options(100, 10_000)).await;
    let mut federation = target.federation_as(&target.peer).await;
    let amelia = honest_keys(&subject("Amelia", "Smith-Jones", Some(DOB), "GU1 1AA"));
    let mut first_refused = None;
    for i in 0..150u32 {
        // Asking about Amelia again and again counts once.
        let again = federation
            .find_involvements(query(&request_id(10_000 + i as usize), &amelia))
            .await;
        if again.is_err() {
            first_refused.get_or_insert(i);
            break;
        }
        let probe = subject("", "Smith", Some(day(i)), "");
        let keys: Vec<(K, [u8; 32])> = keys_of_kind(&probe, K::PhoneticFamilyDob)
            .into_iter()
            .map(|d| (K::PhoneticFamilyDob, d))
            .collect();
        if let Err(refused) = federation
            .find_involvements(query(&request_id(i as usize), &keys))
            .await
        {
            assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
            first_refused.get_or_insert(i);
            break;
        }
    }
    // Amelia's query is one distinct query, the probes 100 more: the 101st
    // distinct query crossed the budget, and everything after is paused.
    assert_eq!(first_refused, Some(100), "paused past the budget");

    let target = target_with_amelia(options(100_000, 20)).await;
    let mut federation = target.federation_as(&target.peer).await;
    let mut first_refused = None;
    for i in 0..40u32 {
        // The given name, family name and postcode held, every date of birth
        // tried: the names-and-postcode key stays the same.
        let keys = honest_keys(&subject("Amelia", "Smith-Jones", Some(day(i)), "GU1 1AA"));
        if let Err(refused) = federation
            .find_involvements(query(&request_id(i as usize), &keys))
            .await
        {
            assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
            first_refused.get_or_insert(i);
            break;
        }
    }
    assert_eq!(
        first_refused,
        Some(21),
        "paused once a key was in 21 distinct queries"
    );
}

/// Finding 11: a peer answering every poll with "more after the next cursor"
/// cannot keep the subscriber's poller asking in a loop it controls: the
/// poller asks at most 32 times a tick and goes on at the next.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_always_has_more_cannot_keep_the_poller_looping() {
    use patchwork_tests::attacker::{EvilPeer, KEY_SET, SECRET};
    use patchwork_tests::{ClientGrant, NodeOptions, TestCa, TestNode};
    let ca = TestCa::new("england.patchwork");
    let evil = EvilPeer::start(&ca, "evil").await;
    let portal = ca.client("portal");
    let evil_peer = patchwork_tests::peer(&evil.cert.identity, "Evil", evil.addr);
    let node = TestNode::start_with(
        &ca,
        "surrey",
        &[ClientGrant {
            client: &portal,
            roles: &["records", "lookup"],
        }],
        NodeOptions {
            secret_files: vec![(format!("{KEY_SET}.key"), SECRET.into())],
            ..Default::default()
        }
        .with(move |config| {
            config.federation.poll_interval_ms = 200;
            patchwork_tests::federate(config, [evil_peer]);
        }),
    )
    .await;
    let mut directory = node.directory(&portal).await;
    directory
        .create_organisation(v1::CreateOrganisationRequest {
            organisation: Some(patchwork_tests::organisation(
                "ORG-1",
                "Children's Services",
                v1::Sector::SocialCare,
            )),
        })
        .await
        .expect("organisation");
    directory
        .create_practitioner(v1::CreatePractitionerRequest {
            practitioner: Some(patchwork_tests::practitioner(
                "PR-1",
                "Sam Okafor",
                "Social worker",
                "ORG-1",
            )),
        })
        .await
        .expect("practitioner");
    let subscribed = directory
        .subscribe(v1::DirectorySubscribeRequest {
            subject: Some(v1::Demographics {
                given_name: "Amelia".into(),
                family_name: "Smith-Jones".into(),
                date_of_birth: patchwork_tests::date(2015, 3, 14),
                ..Default::default()
            }),
            purpose: query("unused", &[]).purpose,
            requester: Some(v1::Requester {
                practitioner_id: "PR-1".into(),
                ..Default::default()
            }),
            peer_node_ids: vec![evil.cert.identity.to_string()],
            ttl_days: 30,
        })
        .await
        .expect("subscribe")
        .into_inner();
    assert_eq!(subscribed.peers[0].outcome(), v1::NodeOutcome::Matched);
    let polls = || evil.polls.load(std::sync::atomic::Ordering::Relaxed);
    // Let the poller tick for two seconds (about ten ticks).
    let started = std::time::Instant::now();
    let first = polls();
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let asked = polls() - first;
    let ticks = started.elapsed().as_millis() as u64 / 200 + 2;
    eprintln!("an always-more peer was polled {asked} times in 2 s ({ticks} ticks at most)");
    assert!(asked <= 32 * ticks, "{asked} polls in {ticks} ticks");
    // The node still answers its own clients.
    directory
        .list_involvements(v1::ListInvolvementsRequest {
            person_id: "P-NONE".into(),
            include_ended: false,
        })
        .await
        .expect_err("no such person, but an answer");
}

/// An agreed peer polling for notifications as fast as it can: each poll
/// audits what it sends, so polls are limited (60 a minute) and the excess
/// only counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_polling_at_any_pace_is_limited_and_counted() {
    let mut target = target_with_amelia(TargetOptions::default()).await;
    let mut federation = target.federation_as(&target.peer).await;
    let before = target.node.stats().await.audit_entries;
    let mut limited = 0;
    for _ in 0..100 {
        let answer = federation
            .poll_notifications(v1::PollRequest {
                subscription_ids: vec!["not-a-subscription".into()],
                after_cursor: "0".into(),
            })
            .await;
        if let Err(status) = answer
            && status.code() == tonic::Code::ResourceExhausted
        {
            limited += 1;
        }
    }
    assert!(
        (39..=41).contains(&limited),
        "{limited} of 100 polls limited"
    );
    assert_eq!(target.node.stats().await.audit_entries, before);
    let summaries: Vec<(String, u64)> = target
        .stopped_audit()
        .await
        .into_iter()
        .filter_map(|e| match e {
            AuditEvent::PeerRefusals { reason, count, .. } => Some((reason, count)),
            _ => None,
        })
        .collect();
    assert_eq!(summaries, vec![("rate_limited".to_owned(), limited)]);
}

/// A peer whose stated reason names the person (by name, or date of
/// birth): the answer is the one any reason gets (it must not tell the peer
/// whom it matched), and the audit log, which keeps no names, keeps a note
/// instead of the reason. A reason that names no one is kept as it was.
#[tokio::test]
async fn a_peers_reason_that_names_the_person_is_not_kept() {
    let mut target = target_with_amelia(TargetOptions::default()).await;
    let mut peer = target.federation_as(&target.peer).await;
    let keys = honest_keys(&subject("Amelia", "Smith-Jones", Some(DOB), "GU1 1AA"));
    let mut statuses = Vec::new();
    for (n, reason) in [
        "s.47 enquiry after a school referral",
        "worried about amelia smith-jones at school",
        "concern for the child born 14/03/2015",
    ]
    .into_iter()
    .enumerate()
    {
        let mut request = query(&request_id(n), &keys);
        request.purpose = Some(v1::Purpose {
            lawful_basis: v1::LawfulBasis::ChildSafeguarding as i32,
            reason: reason.into(),
        });
        let answer = peer
            .find_involvements(request)
            .await
            .expect("answered")
            .into_inner();
        statuses.push((answer.status, answer.involvements.len()));
    }
    assert!(
        statuses
            .iter()
            .all(|s| *s == (v1::MatchStatus::Matched as i32, 1)),
        "the same answer whatever the reason: {statuses:?}"
    );
    let kept: Vec<String> = target
        .stopped_audit()
        .await
        .into_iter()
        .filter_map(|event| match event {
            AuditEvent::PeerAsked { reason, .. } => Some(reason),
            _ => None,
        })
        .collect();
    assert_eq!(kept.len(), 3);
    assert_eq!(kept[0], "s.47 enquiry after a school referral");
    for reason in &kept[1..] {
        assert!(
            reason.starts_with("(not kept: the peer's reason named the person"),
            "{reason}"
        );
    }
}
