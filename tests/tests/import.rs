//! Importing the council's CSV exports into a running node, through the same
//! library call the `patchwork import` command makes: every bad row reported
//! with its line and column; nothing written from a failing file unless bad
//! rows are skipped; dry runs write nothing; re-imports are idempotent by id.

use std::path::{Path, PathBuf};

use patchwork_cli::cli::{ImportRequest, import_csv};
use patchwork_cli::work::csv_rows::CsvKind;
use patchwork_tests::{ClientGrant, TRUST_DOMAIN, TestCa, TestNode, lookup_request, v1};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;

const PERSONS_HEADER: &str =
    "id,given_name,family_name,date_of_birth,postcode,address,national_id\n";

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("write csv");
    path
}

fn request(kind: CsvKind, file: PathBuf) -> ImportRequest {
    ImportRequest {
        kind,
        file,
        dry_run: false,
        skip_bad_rows: false,
        mirror: false,
        force: false,
        progress: false,
    }
}

async fn node() -> (TestCa, TestNode) {
    let ca = TestCa::new(TRUST_DOMAIN);
    let portal = ca.client("portal");
    let node = TestNode::start(
        &ca,
        "brighton",
        &[ClientGrant {
            client: &portal,
            roles: &["lookup"],
        }],
    )
    .await;
    (ca, node)
}

fn errors(report: &v1::ImportReport) -> Vec<(u64, String)> {
    report
        .errors
        .iter()
        .map(|e| (e.line, e.field.clone()))
        .collect()
}

#[tokio::test]
async fn a_file_with_bad_rows_imports_nothing_and_names_each_bad_row() {
    let (_ca, node) = node().await;
    let mut csv = PERSONS_HEADER.as_bytes().to_vec();
    csv.extend_from_slice(b"P1,Amelia,Smith,2015-03-14,GU1 1AA,,9434765919\n"); // line 2
    csv.extend_from_slice(b"P2,Ben,Smith,14/03/2015,GU1 1AA,,\n"); // 3: dd/mm/yyyy
    csv.extend_from_slice(b"P3,Cara,Jones,2012-05-01,,,9434765918\n"); // 4: check digit
    // 5: no family name, and nothing else to find Dev by (with a date of
    // birth or an identifier, one unknown name is fine: see below).
    csv.extend_from_slice(b"P4,Dev,,,,,\n");
    csv.extend_from_slice(b"P1,Amelia,Smith,2015-03-14,,,\n"); // 6: id repeated
    csv.extend_from_slice(b"P5,Ren\xe9e,Dubois,2013-07-07,,,\n"); // 7: Windows-1252
    csv.extend_from_slice(b"P6,Eli,Stone,2030-01-01,,,\n"); // 8: in the future
    csv.extend_from_slice(b"P7,Fay,Hart\n"); // 9: too few cells
    csv.extend_from_slice(b"P8,Gus,Lee,2009-09-09,,,\n"); // 10: fine
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write(dir.path(), "persons.csv", &csv);

    let outcome = import_csv(&node.config(), &request(CsvKind::Persons, file.clone()))
        .await
        .expect("import");
    let report = outcome.report;
    assert_eq!(
        errors(&report),
        vec![
            (3, "date_of_birth".into()),
            (4, "national_id".into()),
            (5, "family_name".into()),
            (6, "id".into()),
            (7, "given_name".into()),
            (8, "date_of_birth".into()),
            (9, String::new()),
        ]
    );
    assert!(
        report.errors[3].message.contains("also on line 2"),
        "{:?}",
        report.errors[3]
    );
    assert!(
        report.errors[4].message.contains("UTF-8"),
        "{:?}",
        report.errors[4]
    );
    assert_eq!((report.rows, report.valid_rows, report.bad_rows), (9, 2, 7));
    assert!(!report.applied);
    assert_eq!(
        node.stats().await.persons,
        0,
        "nothing imported from a failing file"
    );

    // Told to skip bad rows, the good ones go in.
    let skip = ImportRequest {
        skip_bad_rows: true,
        ..request(CsvKind::Persons, file)
    };
    let report = import_csv(&node.config(), &skip)
        .await
        .expect("import")
        .report;
    assert!(report.applied);
    assert_eq!((report.created, report.bad_rows), (2, 7));
    assert_eq!(node.stats().await.persons, 2);
}

#[tokio::test]
async fn dry_runs_write_nothing_and_re_imports_are_idempotent() {
    let (_ca, node) = node().await;
    let dir = tempfile::tempdir().expect("tempdir");
    // A byte-order mark, columns in another order, the optional scheme column.
    let csv = "\u{feff}family_name,given_name,id,date_of_birth,postcode,address,national_id,national_id_scheme\n\
               Smith,Amelia,P1,2015-03-14,GU1 1AA,\"1 High St, Guildford\",943 476 5919,nhs\n\
               Okoro,Chidi,P2,2016-04-01,BN1 1AA,,AB-123,other-scheme\n\
               Nowak,Ola,P3,,BN2 2BB,,,\n";
    let file = write(dir.path(), "persons.csv", csv.as_bytes());
    let dry = ImportRequest {
        dry_run: true,
        ..request(CsvKind::Persons, file.clone())
    };
    let report = import_csv(&node.config(), &dry)
        .await
        .expect("dry run")
        .report;
    assert_eq!(
        (report.valid_rows, report.bad_rows, report.applied),
        (3, 0, false)
    );
    assert_eq!(node.stats().await.persons, 0, "a dry run writes nothing");

    let report = import_csv(&node.config(), &request(CsvKind::Persons, file.clone()))
        .await
        .expect("import")
        .report;
    assert_eq!(
        (
            report.created,
            report.updated,
            report.unchanged,
            report.applied
        ),
        (3, 0, 0, true)
    );
    let report = import_csv(&node.config(), &request(CsvKind::Persons, file))
        .await
        .expect("again")
        .report;
    assert_eq!(
        (report.created, report.updated, report.unchanged),
        (0, 0, 3)
    );

    let changed = csv.replace("BN2 2BB", "BN3 3CC");
    let file = write(dir.path(), "persons-changed.csv", changed.as_bytes());
    let report = import_csv(&node.config(), &request(CsvKind::Persons, file))
        .await
        .expect("changed")
        .report;
    assert_eq!(
        (report.created, report.updated, report.unchanged),
        (0, 1, 2)
    );
    assert_eq!(node.stats().await.persons, 3);
}

#[tokio::test]
async fn organisations_practitioners_and_involvements_import_and_are_found() {
    let (ca, node) = node().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = node.config();
    let files = [
        (
            CsvKind::Organisations,
            "id,name,sector\nORG-1,Brighton & Hove Children's Services,social care\nORG-2,Sussex Sexual Health,health\n",
        ),
        (
            CsvKind::Practitioners,
            "id,name,role,team,organisation_id,phone,email\n\
             PR-1,Sam Okafor,Social worker,Hove East,ORG-1,01273 555 0101,sam.okafor@example.gov.uk\n\
             PR-2,Jo Patel,Nurse,,ORG-2,,jo.patel@example.nhs.uk\n",
        ),
        (
            CsvKind::Persons,
            "id,given_name,family_name,date_of_birth,postcode,address,national_id\nP-1,Amelia,Smith,2015-03-14,BN1 1AA,,9434765919\n",
        ),
        (
            CsvKind::Involvements,
            "id,person_id,practitioner_id,service,start_date,end_date,sensitivity,gatekeeper_name,gatekeeper_phone,gatekeeper_email,end_reason\n\
             I-1,P-1,PR-1,Child protection,2024-02-01,,always_findable,,,,\n\
             I-2,P-1,PR-2,Sexual health,2024-03-01,,restricted,Clinic duty line,0800 555 0199,,\n\
             I-3,P-1,PR-1,Early help,2023-01-01,2023-06-30,standard,,,,closed\n",
        ),
    ];
    for (kind, text) in files {
        let file = write(dir.path(), &format!("{kind:?}.csv"), text.as_bytes());
        let report = import_csv(&config, &request(kind, file))
            .await
            .expect("import")
            .report;
        assert!(
            report.applied && report.bad_rows == 0,
            "{kind:?}: {report:?}"
        );
    }
    let stats = node.stats().await;
    assert_eq!(
        (
            stats.organisations,
            stats.practitioners,
            stats.persons,
            stats.involvements,
            stats.active_involvements
        ),
        (2, 2, 1, 3, 2)
    );

    // An involvement for someone the node does not hold, and a practitioner of
    // an unknown organisation, are bad rows naming the column.
    let file = write(
        dir.path(),
        "bad-involvements.csv",
        b"id,person_id,practitioner_id,service,start_date,sensitivity\nI-9,P-404,PR-1,Youth work,2024-01-01,standard\nI-10,P-1,PR-1,Youth work,2024-01-01,secret\n",
    );
    let report = import_csv(&config, &request(CsvKind::Involvements, file))
        .await
        .expect("import")
        .report;
    assert_eq!(
        errors(&report),
        vec![(2, "person_id".into()), (3, "sensitivity".into())]
    );
    let file = write(
        dir.path(),
        "bad-practitioners.csv",
        b"id,name,role,organisation_id,phone,email\nPR-9,Al,Nurse,ORG-404,01273 555 0000,\n",
    );
    let report = import_csv(&config, &request(CsvKind::Practitioners, file))
        .await
        .expect("import")
        .report;
    assert_eq!(errors(&report), vec![(2, "organisation_id".into())]);

    let portal = ca.client("portal");
    let subject = v1::Demographics {
        national_id: Some(v1::NationalId {
            scheme: "nhs".into(),
            value: "9434765919".into(),
        }),
        ..Default::default()
    };
    let answer = node
        .directory(&portal)
        .await
        .lookup(lookup_request(subject, "PR-1"))
        .await
        .expect("lookup")
        .into_inner();
    assert_eq!(answer.answers[0].outcome, v1::NodeOutcome::Matched as i32);
    assert_eq!(
        answer.answers[0].involvements.len(),
        2,
        "the ended involvement is not disclosed"
    );
}

#[tokio::test]
async fn a_file_that_is_not_this_kind_of_export_is_refused_before_any_row() {
    let (_ca, node) = node().await;
    let dir = tempfile::tempdir().expect("tempdir");
    for (text, expected) in [
        (
            "id,given_name,family_name\nP1,A,B\n",
            "missing column(s): date_of_birth, postcode, address, national_id",
        ),
        (
            "id,given_name,family_name,dob,postcode,address,national_id\n",
            "unknown column \"dob\"",
        ),
    ] {
        let file = write(dir.path(), "persons.csv", text.as_bytes());
        let error = import_csv(&node.config(), &request(CsvKind::Persons, file))
            .await
            .expect_err(expected);
        assert!(format!("{error:#}").contains(expected), "{error:#}");
    }
    assert_eq!(node.stats().await.persons, 0);
}

/// The last applied import of each kind is in `GetStats` and the metrics
/// (so a failed nightly import can be alerted on: its time does not move);
/// an import running now shows the node's progress in `GetStats`.
#[tokio::test]
async fn the_last_import_of_each_kind_is_reported_and_a_running_one_shows_progress() {
    let (_ca, node) = node().await;
    let tmp = tempfile::tempdir().expect("tempdir");
    let (_, metrics) = node.metrics().await;
    assert!(
        metrics.contains("patchwork_last_import_timestamp_seconds{kind=\"person\"} 0\n"),
        "{metrics}"
    );
    let mut csv = PERSONS_HEADER.as_bytes().to_vec();
    csv.extend_from_slice(b"P1,Amelia,Smith,2015-03-14,GU1 1AA,,\n");
    csv.extend_from_slice(b"P2,Ben,Smith,2013-01-02,GU1 1AA,,\n");
    let good = write(tmp.path(), "good.csv", &csv);
    import_csv(&node.config(), &request(CsvKind::Persons, good))
        .await
        .expect("import");
    let last = node.stats().await.last_imports;
    assert_eq!(last.len(), 1, "{last:?}");
    assert_eq!(
        (last[0].kind.as_str(), last[0].rows, last[0].created),
        ("person", 2, 2)
    );
    assert!(last[0].at_unix_seconds > 0);
    let (_, metrics) = node.metrics().await;
    assert!(
        metrics.contains(&format!(
            "patchwork_last_import_timestamp_seconds{{kind=\"person\"}} {}\n",
            last[0].at_unix_seconds
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains("patchwork_last_import_rows{kind=\"person\",outcome=\"created\"} 2\n"),
        "{metrics}"
    );

    // A refused import is not the last import.
    let mut bad = PERSONS_HEADER.as_bytes().to_vec();
    bad.extend_from_slice(b"P3,Cara,,,,,\n"); // no family name, nothing else
    let bad = write(tmp.path(), "bad.csv", &bad);
    let report = import_csv(&node.config(), &request(CsvKind::Persons, bad))
        .await
        .expect("import")
        .report;
    assert!(!report.applied);
    assert_eq!(node.stats().await.last_imports, last);

    // An import whose upload is still open: the node shows what it checked.
    let (sender, receiver) = tokio::sync::mpsc::channel(4);
    let mut admin = node.admin().await;
    let call = tokio::spawn(async move {
        admin
            .import(tokio_stream::wrappers::ReceiverStream::new(receiver))
            .await
    });
    sender
        .send(v1::ImportRequest {
            item: Some(v1::import_request::Item::Header(v1::ImportHeader {
                kind: v1::RecordKind::Organisation as i32,
                source: "nightly.csv".into(),
                ..Default::default()
            })),
        })
        .await
        .expect("header");
    let rows = (0..3)
        .map(|i| v1::ImportRow {
            line: i + 2,
            record: Some(v1::import_row::Record::Organisation(
                patchwork_tests::organisation(&format!("O{i}"), "Council", v1::Sector::Health),
            )),
        })
        .collect();
    sender
        .send(v1::ImportRequest {
            item: Some(v1::import_request::Item::Batch(v1::ImportBatch { rows })),
        })
        .await
        .expect("batch");
    let checked = patchwork_tests::eventually(std::time::Duration::from_secs(10), || async {
        node.stats().await.running_imports.iter().any(|r| {
            r.source == "nightly.csv"
                && r.kind == v1::RecordKind::Organisation as i32
                && r.rows_checked == 3
                && r.rows_to_write == 0
        })
    })
    .await;
    assert!(checked, "{:?}", node.stats().await.running_imports);
    drop(sender);
    let report = call.await.expect("task").expect("import").into_inner();
    assert_eq!(report.created, 3);
    assert!(node.stats().await.running_imports.is_empty());
    let kinds: Vec<_> = node
        .stats()
        .await
        .last_imports
        .into_iter()
        .map(|l| l.kind)
        .collect();
    assert_eq!(kinds, ["organisation", "person"]);
}

#[tokio::test]
async fn an_import_stream_with_an_empty_message_is_refused_and_applies_nothing() {
    // The CLI aborts an import this way when its file changes between its
    // two passes: ending the stream instead would apply what was sent.
    let ca = TestCa::new(TRUST_DOMAIN);
    let node = TestNode::start(&ca, "surrey", &[]).await;
    let (sender, receiver) = tokio::sync::mpsc::channel(4);
    let messages = [
        v1::import_request::Item::Header(v1::ImportHeader {
            kind: v1::RecordKind::Organisation as i32,
            skip_bad_rows: true,
            source: "organisations.csv".into(),
            ..Default::default()
        }),
        v1::import_request::Item::Batch(v1::ImportBatch {
            rows: vec![v1::ImportRow {
                line: 2,
                record: Some(v1::import_row::Record::Organisation(
                    patchwork_tests::organisation("O1", "Surrey CC", v1::Sector::SocialCare),
                )),
            }],
        }),
    ];
    for item in messages {
        sender
            .send(v1::ImportRequest { item: Some(item) })
            .await
            .expect("queue");
    }
    sender
        .send(v1::ImportRequest { item: None })
        .await
        .expect("queue");
    drop(sender);
    let status = node
        .admin()
        .await
        .import(ReceiverStream::new(receiver))
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(node.stats().await.organisations, 0, "nothing was applied");
}

/// What councils really hold: a person with one name unknown imports when
/// there is enough else to find them by; a file written on Windows (CRLF)
/// names its bad rows by their real lines.
#[tokio::test]
async fn one_unknown_name_imports_and_a_windows_file_names_its_real_lines() {
    let (_ca, node) = node().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let rows = [
        "P1,,Smith,2015-03-14,GU1 1AA,,", // 2: no given name, a birth date: fine
        "P2,Ola,,,,,943 476 5919",        // 3: no family name, an NHS number: fine
        "P3,Dev,,,GU1 1AA,,",             // 4: nothing to find Dev by
        "P4,,,2011-01-01,,,",             // 5: no name at all
        "",                               // 6: blank
        "P5,Eli,Stone,2030-01-01,,,",     // 7: in the future
    ];
    let text = format!("{}{}\r\n", PERSONS_HEADER.trim_end(), "")
        + &rows.iter().map(|r| format!("{r}\r\n")).collect::<String>();
    let file = write(dir.path(), "persons.csv", text.as_bytes());
    let report = import_csv(&node.config(), &request(CsvKind::Persons, file))
        .await
        .expect("import")
        .report;
    assert_eq!(
        errors(&report),
        vec![
            (4, "family_name".into()),
            (5, "given_name".into()),
            (7, "date_of_birth".into()),
        ]
    );
    assert!(
        report.errors[0]
            .message
            .contains("date_of_birth or a national_id"),
        "{:?}",
        report.errors[0]
    );

    let good = format!("{PERSONS_HEADER}{}\n{}\n", rows[0], rows[1]);
    let file = write(dir.path(), "good.csv", good.as_bytes());
    let report = import_csv(&node.config(), &request(CsvKind::Persons, file))
        .await
        .expect("import")
        .report;
    assert_eq!((report.created, report.applied), (2, true));
    assert_eq!(node.stats().await.persons, 2);
}

/// A persons export of `P1`..=`Pn`, `P1`'s family name `family`.
fn persons_export(dir: &Path, name: &str, n: usize, family: &str) -> PathBuf {
    let mut csv = PERSONS_HEADER.to_owned();
    for i in 1..=n {
        let family = if i == 1 { family } else { "Example" };
        csv.push_str(&format!(
            "P{i},Sam,{family},2010-01-{:02},,,\n",
            (i % 28) + 1
        ));
    }
    write(dir, name, csv.as_bytes())
}

#[tokio::test]
async fn a_mirror_import_deletes_what_the_export_lacks_and_refuses_a_truncated_one() {
    let (_ca, node) = node().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = node.config();
    let mirror = |file: PathBuf| ImportRequest {
        mirror: true,
        ..request(CsvKind::Persons, file)
    };
    let full = persons_export(dir.path(), "full.csv", 30, "Example");
    let report = import_csv(&config, &mirror(full))
        .await
        .expect("import")
        .report;
    assert_eq!((report.created, report.deleted), (30, 0), "{report:?}");

    // P30 left the case system: a dry run says so and changes nothing; the
    // import deletes it.
    let without_30 = persons_export(dir.path(), "without30.csv", 29, "Example");
    let dry = ImportRequest {
        dry_run: true,
        ..mirror(without_30.clone())
    };
    let report = import_csv(&config, &dry).await.expect("dry run").report;
    assert_eq!((report.deleted, report.applied), (1, false));
    assert_eq!(report.deleted_ids, vec!["P30"]);
    assert_eq!(node.stats().await.persons, 30);
    let report = import_csv(&config, &mirror(without_30))
        .await
        .expect("import")
        .report;
    assert_eq!(
        (report.unchanged, report.deleted, report.applied),
        (29, 1, true)
    );
    assert_eq!(node.stats().await.persons, 29);

    // A truncated export (10 of 29, and P1 renamed) is refused whole:
    // nothing deleted, nothing written.
    let truncated = persons_export(dir.path(), "truncated.csv", 10, "Renamed");
    let report = import_csv(&config, &mirror(truncated.clone()))
        .await
        .expect("refused, with a report")
        .report;
    assert!(
        report
            .refused
            .starts_with("the export lacks 19 of the 29 persons this node holds"),
        "{report:?}"
    );
    assert!(!report.applied);
    assert_eq!(node.stats().await.persons, 29);
    let mut admin = node.admin().await;
    let found = node
        .directory(&node.node_cert)
        .await
        .get_person(v1::GetPersonRequest { id: "P1".into() })
        .await
        .expect("P1")
        .into_inner();
    assert_eq!(
        found.family_name, "Example",
        "the refused import wrote nothing"
    );

    // Forced, it goes through.
    let forced = ImportRequest {
        force: true,
        ..mirror(truncated)
    };
    let report = import_csv(&config, &forced).await.expect("forced").report;
    assert_eq!((report.updated, report.deleted), (1, 19), "{report:?}");
    assert_eq!(node.stats().await.persons, 10);

    // The erased person's report says why, by id.
    let report = admin
        .subject_access_report(v1::SubjectAccessRequest {
            person_id: "P30".into(),
        })
        .await
        .expect("report")
        .into_inner();
    assert!(report.not_held);
    assert_eq!(
        (
            report.entries[0].kind.as_str(),
            report.entries[0].reference.as_str()
        ),
        (
            "erased: no longer in the case system's export",
            "without30.csv"
        )
    );

    // A mirror is all or nothing, and only of persons or involvements.
    for (header, field) in [
        (
            v1::ImportHeader {
                kind: v1::RecordKind::Person as i32,
                mirror: true,
                skip_bad_rows: true,
                ..Default::default()
            },
            "header.skip_bad_rows",
        ),
        (
            v1::ImportHeader {
                kind: v1::RecordKind::Organisation as i32,
                mirror: true,
                ..Default::default()
            },
            "header.mirror",
        ),
        (
            v1::ImportHeader {
                kind: v1::RecordKind::Person as i32,
                force: true,
                ..Default::default()
            },
            "header.force",
        ),
    ] {
        let stream = tokio_stream::iter(vec![v1::ImportRequest {
            item: Some(v1::import_request::Item::Header(header)),
        }]);
        let refused = admin.import(stream).await.expect_err(field);
        assert_eq!(refused.code(), Code::InvalidArgument);
        assert!(refused.message().starts_with(field), "{refused:?}");
    }
    assert_eq!(node.stats().await.persons, 10);
}
