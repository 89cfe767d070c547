//! One council's node on its own: records written through the API, read back,
//! surviving a restart; every bad request refused naming its field and
//! changing nothing; callers identified and limited by their certificates;
//! local lookups disclosing only what each sensitivity allows.

use patchwork_tests::{
    ClientCert, ClientGrant, Records, TRUST_DOMAIN, TestCa, TestNode, date, involvement,
    lookup_request, organisation, person, practitioner, v1,
};
use tonic::Code;

struct Fixture {
    portal: ClientCert,
    node: TestNode,
}

async fn fixture() -> Fixture {
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
    Fixture { portal, node }
}

/// An organisation, two practitioners and a person with three involvements
/// (standard, restricted, always findable) and one that ended.
async fn seed(node: &TestNode, portal: &ClientCert) -> v1::Involvement {
    let records = Records {
        persons: vec![person(
            "P-1",
            "Amelia",
            "Smith-Jones",
            date(2015, 3, 14),
            "943 476 5919",
        )],
        involvements: [
            ("PR-1", "Child protection", v1::Sensitivity::AlwaysFindable),
            ("PR-2", "Health visiting", v1::Sensitivity::Standard),
            ("PR-2", "Sexual health", v1::Sensitivity::Restricted),
            ("PR-2", "Early help", v1::Sensitivity::Standard),
        ]
        .map(|(practitioner, service, sensitivity)| {
            involvement("P-1", practitioner, service, sensitivity)
        })
        .to_vec(),
        ..Records::team(
            "ORG-1",
            "Surrey Children's Services",
            &[
                ("PR-1", "Sam Okafor", "Social worker"),
                ("PR-2", "Jo Patel", "Health visitor"),
            ],
        )
    };
    let mut recorded = patchwork_tests::seed(node, portal, records).await;
    let early_help = recorded.pop().expect("four recorded");
    node.directory(portal)
        .await
        .end_involvement(v1::EndInvolvementRequest {
            id: early_help.id.clone(),
            end_date: date(2024, 6, 1),
            reason: "closed to early help".into(),
        })
        .await
        .expect("end");
    early_help
}

#[tokio::test]
async fn records_are_read_back_and_survive_a_restart() {
    let Fixture {
        portal, mut node, ..
    } = fixture().await;
    let ended = seed(&node, &portal).await;

    for round in ["before restart", "after restart"] {
        let mut directory = node.directory(&portal).await;
        let stored = directory
            .get_person(v1::GetPersonRequest { id: "P-1".into() })
            .await
            .expect(round)
            .into_inner();
        assert_eq!(stored.family_name, "Smith-Jones", "{round}");
        assert_eq!(
            stored.national_id.expect("nhs").value,
            "9434765919",
            "{round}: normalised"
        );
        let current = directory
            .list_involvements(v1::ListInvolvementsRequest {
                person_id: "P-1".into(),
                include_ended: false,
            })
            .await
            .expect(round)
            .into_inner()
            .involvements;
        assert_eq!(current.len(), 3, "{round}");
        let all = directory
            .list_involvements(v1::ListInvolvementsRequest {
                person_id: "P-1".into(),
                include_ended: true,
            })
            .await
            .expect(round)
            .into_inner()
            .involvements;
        let ended_again = all
            .iter()
            .find(|i| i.id == ended.id)
            .expect("ended involvement kept");
        assert_eq!(ended_again.end_date, date(2024, 6, 1), "{round}");
        assert_eq!(ended_again.end_reason, "closed to early help", "{round}");
        let practitioner = directory
            .get_practitioner(v1::GetPractitionerRequest { id: "PR-2".into() })
            .await
            .expect(round)
            .into_inner();
        assert_eq!(practitioner.role, "Health visitor", "{round}");
        let stats = node.stats().await;
        assert_eq!(
            (
                stats.persons,
                stats.practitioners,
                stats.organisations,
                stats.involvements,
                stats.active_involvements
            ),
            (1, 2, 1, 4, 3),
            "{round}"
        );
        if round == "before restart" {
            node.restart().await;
        }
    }
}

#[tokio::test]
async fn updates_replace_records_and_searches_follow_them() {
    let Fixture { portal, node, .. } = fixture().await;
    seed(&node, &portal).await;
    let mut directory = node.directory(&portal).await;
    let mut renamed = person("P-1", "Amelia", "Brown", date(2015, 3, 14), "9434765919");
    renamed.postcode = "RH1 2BB".into();
    directory
        .update_person(v1::UpdatePersonRequest {
            person: Some(renamed),
        })
        .await
        .expect("update");

    let search = |family: &str, postcode: &str| v1::SearchPersonsRequest {
        demographics: Some(v1::Demographics {
            family_name: family.into(),
            postcode: postcode.into(),
            ..Default::default()
        }),
        limit: 0,
    };
    let found = directory
        .search_persons(search("BROWN", "rh12bb"))
        .await
        .expect("search")
        .into_inner();
    assert_eq!(
        found
            .persons
            .iter()
            .map(|p| p.id.as_str())
            .collect::<Vec<_>>(),
        ["P-1"]
    );
    let stale = directory
        .search_persons(search("Smith-Jones", "GU1 1AA"))
        .await
        .expect("search")
        .into_inner();
    assert!(
        stale.persons.is_empty(),
        "the old name's index entries are gone"
    );

    let missing = directory
        .update_person(v1::UpdatePersonRequest {
            person: Some(person("P-404", "A", "B", None, "")),
        })
        .await
        .expect_err("update of a missing person");
    assert_eq!(missing.code(), Code::NotFound);
    assert_eq!(missing.message(), "person.id: person P-404 not found");
    let taken = directory
        .create_person(v1::CreatePersonRequest {
            person: Some(person("P-1", "A", "B", None, "")),
        })
        .await
        .expect_err("id taken");
    assert_eq!(taken.code(), Code::AlreadyExists);
    assert_eq!(taken.message(), "person.id: person P-1 already exists");
    let absent = directory
        .get_person(v1::GetPersonRequest { id: "P-404".into() })
        .await
        .expect_err("get of a missing person");
    assert_eq!(absent.code(), Code::NotFound);
    assert_eq!(absent.message(), "id: person P-404 not found");
}

#[tokio::test]
async fn a_local_lookup_discloses_by_sensitivity_and_only_current_involvements() {
    let Fixture { portal, node, .. } = fixture().await;
    seed(&node, &portal).await;
    let mut directory = node.directory(&portal).await;
    let subject = v1::Demographics {
        given_name: "amelia".into(),
        family_name: "SMITH JONES".into(),
        date_of_birth: date(2015, 3, 14),
        ..Default::default()
    };
    let response = directory
        .lookup(lookup_request(subject, "PR-1"))
        .await
        .expect("lookup")
        .into_inner();
    assert!(!response.lookup_id.is_empty());
    let [answer] = response.answers.as_slice() else {
        panic!("one node asked: {response:?}")
    };
    assert_eq!(
        answer.node_id,
        format!("spiffe://{TRUST_DOMAIN}/node/surrey")
    );
    assert_eq!(answer.outcome, v1::NodeOutcome::Matched as i32);
    assert_eq!(
        answer.involvements.len(),
        3,
        "the ended involvement is not disclosed"
    );
    use v1::disclosed_involvement::Contact;
    for disclosed in &answer.involvements {
        match (
            v1::Sensitivity::try_from(disclosed.sensitivity).expect("known"),
            &disclosed.contact,
        ) {
            (v1::Sensitivity::Restricted, Some(Contact::Gatekeeper(gatekeeper))) => {
                assert_eq!(gatekeeper.name, "Clinic duty line");
                assert!(
                    disclosed.service.is_empty(),
                    "a restricted service's name is not disclosed"
                );
                assert!(disclosed.start_date.is_none());
            }
            (v1::Sensitivity::Restricted, other) => panic!("restricted disclosed {other:?}"),
            (_, Some(Contact::Practitioner(p))) => {
                assert_eq!(p.organisation_name, "Surrey Children's Services");
                assert!(!p.phone.is_empty());
            }
            (_, other) => panic!("expected a practitioner, got {other:?}"),
        }
    }

    let by_nhs = v1::Demographics {
        national_id: Some(v1::NationalId {
            scheme: String::new(),
            value: "9434765919".into(),
        }),
        ..Default::default()
    };
    let response = directory
        .lookup(lookup_request(by_nhs, "PR-1"))
        .await
        .expect("lookup")
        .into_inner();
    assert_eq!(response.answers[0].outcome, v1::NodeOutcome::Matched as i32);

    let stranger = v1::Demographics {
        given_name: "Amelia".into(),
        family_name: "Smith-Jones".into(),
        date_of_birth: date(2016, 3, 14),
        ..Default::default()
    };
    let response = directory
        .lookup(lookup_request(stranger, "PR-1"))
        .await
        .expect("lookup")
        .into_inner();
    assert_eq!(response.answers[0].outcome, v1::NodeOutcome::NoMatch as i32);
    assert!(response.answers[0].involvements.is_empty());
}

#[tokio::test]
async fn look_alike_twins_are_ambiguous_and_nothing_is_disclosed() {
    let Fixture { portal, node, .. } = fixture().await;
    seed(&node, &portal).await;
    let mut directory = node.directory(&portal).await;
    for id in ["T-1", "T-2"] {
        directory
            .create_person(v1::CreatePersonRequest {
                person: Some(person(id, "Sam", "Taylor", date(2018, 6, 1), "")),
            })
            .await
            .expect("twin");
        directory
            .record_involvement(v1::RecordInvolvementRequest {
                involvement: Some(involvement(
                    id,
                    "PR-1",
                    "Child in need",
                    v1::Sensitivity::Standard,
                )),
            })
            .await
            .expect("involvement");
    }
    let subject = v1::Demographics {
        given_name: "Sam".into(),
        family_name: "Taylor".into(),
        date_of_birth: date(2018, 6, 1),
        ..Default::default()
    };
    let response = directory
        .lookup(lookup_request(subject, "PR-1"))
        .await
        .expect("lookup")
        .into_inner();
    let answer = &response.answers[0];
    assert_eq!(answer.outcome, v1::NodeOutcome::Ambiguous as i32);
    assert!(answer.involvements.is_empty());
    assert!(
        answer
            .more_identifiers_wanted
            .contains(&(v1::IdentifierKind::NationalId as i32))
    );
}

type BoxedStatus = std::pin::Pin<Box<dyn std::future::Future<Output = tonic::Status>>>;
type Call = Box<dyn FnOnce(tonic::transport::Channel) -> BoxedStatus>;

/// Makes one call that must fail; returns its status.
fn call<Req, Res, F, Fut>(request: Req, method: F) -> Call
where
    Req: 'static,
    Res: 'static,
    F: FnOnce(v1::directory_client::DirectoryClient<tonic::transport::Channel>, Req) -> Fut
        + 'static,
    Fut: std::future::Future<Output = Result<tonic::Response<Res>, tonic::Status>> + 'static,
{
    Box::new(move |channel| {
        Box::pin(async move {
            match method(v1::directory_client::DirectoryClient::new(channel), request).await {
                Ok(_) => tonic::Status::ok("the call unexpectedly succeeded"),
                Err(status) => status,
            }
        })
    })
}

#[tokio::test]
async fn every_bad_request_is_invalid_argument_naming_its_field_and_changes_nothing() {
    let Fixture { portal, node, .. } = fixture().await;
    seed(&node, &portal).await;
    let ok_person = || person("P-9", "Zoë", "Ng", date(2010, 1, 2), "");
    let with_person = |f: fn(&mut v1::Person)| {
        let mut p = ok_person();
        f(&mut p);
        v1::CreatePersonRequest { person: Some(p) }
    };
    let ok_involvement = || involvement("P-1", "PR-1", "Youth work", v1::Sensitivity::Standard);
    let with_involvement = |f: fn(&mut v1::Involvement)| {
        let mut i = ok_involvement();
        f(&mut i);
        v1::RecordInvolvementRequest {
            involvement: Some(i),
        }
    };
    let ok_subject = || v1::Demographics {
        given_name: "Amelia".into(),
        family_name: "Smith-Jones".into(),
        date_of_birth: date(2015, 3, 14),
        ..Default::default()
    };
    let with_lookup = |f: fn(&mut v1::LookupRequest)| {
        let mut request = lookup_request(ok_subject(), "PR-1");
        f(&mut request);
        request
    };
    macro_rules! create_person {
        ($f:expr) => {
            call(with_person($f), |mut c, r| async move {
                c.create_person(r).await
            })
        };
    }
    macro_rules! record {
        ($f:expr) => {
            call(with_involvement($f), |mut c, r| async move {
                c.record_involvement(r).await
            })
        };
    }
    macro_rules! lookup {
        ($f:expr) => {
            call(with_lookup($f), |mut c, r| async move { c.lookup(r).await })
        };
    }
    let cases: Vec<(&str, Call)> = vec![
        (
            "person",
            call(
                v1::CreatePersonRequest { person: None },
                |mut c, r| async move { c.create_person(r).await },
            ),
        ),
        ("person.id", create_person!(|p| p.id = String::new())),
        ("person.id", create_person!(|p| p.id = "P 9/../x".into())),
        ("person.id", create_person!(|p| p.id = "x".repeat(65))),
        (
            // A blank given name is fine with a date of birth or an identifier
            // (issue 15); with neither there is nothing to find the person by.
            "person.given_name",
            create_person!(|p| {
                p.given_name = " ".into();
                p.date_of_birth = None;
                p.national_id = None;
            }),
        ),
        (
            "person.family_name",
            create_person!(|p| p.family_name = "N".repeat(101)),
        ),
        (
            "person.family_name",
            create_person!(|p| p.family_name = "Ng\u{7}".into()),
        ),
        (
            "person.date_of_birth",
            create_person!(|p| p.date_of_birth = date(2999, 1, 1)),
        ),
        (
            "person.date_of_birth",
            create_person!(|p| p.date_of_birth = date(2010, 2, 30)),
        ),
        (
            "person.date_of_birth",
            create_person!(|p| p.date_of_birth = date(2010, 13, 1)),
        ),
        (
            "person.date_of_birth",
            create_person!(|p| p.date_of_birth = date(0, 0, 0)),
        ),
        (
            "person.postcode",
            create_person!(|p| p.postcode = "GU1 <script>".into()),
        ),
        (
            "person.address",
            create_person!(|p| p.address = "a".repeat(301)),
        ),
        (
            "person.national_id.value",
            create_person!(|p| {
                p.national_id = Some(v1::NationalId {
                    scheme: "nhs".into(),
                    value: "9434765918".into(),
                })
            }),
        ),
        (
            "person.national_id.value",
            create_person!(|p| {
                p.national_id = Some(v1::NationalId {
                    scheme: String::new(),
                    value: "12345".into(),
                })
            }),
        ),
        (
            "person.national_id.scheme",
            create_person!(|p| {
                p.national_id = Some(v1::NationalId {
                    scheme: "NHS number".into(),
                    value: "9434765919".into(),
                })
            }),
        ),
        (
            "involvement.person_id",
            record!(|i| i.person_id = "P-404".into()),
        ),
        (
            "involvement.practitioner_id",
            record!(|i| i.practitioner_id = "PR-404".into()),
        ),
        (
            "involvement.service",
            record!(|i| i.service = String::new()),
        ),
        ("involvement.start_date", record!(|i| i.start_date = None)),
        (
            "involvement.start_date",
            record!(|i| i.start_date = date(2999, 1, 1)),
        ),
        (
            "involvement.end_date",
            record!(|i| i.end_date = date(2024, 2, 1)),
        ),
        ("involvement.sensitivity", record!(|i| i.sensitivity = 0)),
        ("involvement.sensitivity", record!(|i| i.sensitivity = 99)),
        (
            "involvement.gatekeeper",
            record!(|i| i.sensitivity = v1::Sensitivity::Restricted as i32),
        ),
        (
            "involvement.gatekeeper.phone",
            record!(|i| {
                i.gatekeeper = Some(v1::Contact {
                    name: "Duty".into(),
                    phone: "call me".into(),
                    email: String::new(),
                })
            }),
        ),
        (
            "involvement.last_confirmed",
            record!(|i| i.last_confirmed = date(2024, 1, 1)),
        ),
        (
            "practitioner.organisation_id",
            call(
                v1::CreatePractitionerRequest {
                    practitioner: Some(practitioner("PR-9", "Al", "Nurse", "ORG-404")),
                },
                |mut c, r| async move { c.create_practitioner(r).await },
            ),
        ),
        (
            "practitioner.email",
            call(
                v1::CreatePractitionerRequest {
                    practitioner: Some(v1::Practitioner {
                        email: "not-an-email".into(),
                        ..practitioner("PR-9", "Al", "Nurse", "ORG-1")
                    }),
                },
                |mut c, r| async move { c.create_practitioner(r).await },
            ),
        ),
        (
            "practitioner.phone",
            call(
                v1::CreatePractitionerRequest {
                    practitioner: Some(v1::Practitioner {
                        email: String::new(),
                        phone: String::new(),
                        ..practitioner("PR-9", "Al", "Nurse", "ORG-1")
                    }),
                },
                |mut c, r| async move { c.create_practitioner(r).await },
            ),
        ),
        (
            "organisation.sector",
            call(
                v1::CreateOrganisationRequest {
                    organisation: Some(organisation("ORG-9", "Police", v1::Sector::Unspecified)),
                },
                |mut c, r| async move { c.create_organisation(r).await },
            ),
        ),
        (
            "end_date",
            call(
                v1::EndInvolvementRequest {
                    id: "anything".into(),
                    end_date: None,
                    reason: String::new(),
                },
                |mut c, r| async move { c.end_involvement(r).await },
            ),
        ),
        (
            "demographics",
            call(
                v1::SearchPersonsRequest {
                    demographics: Some(v1::Demographics {
                        family_name: "Smith-Jones".into(),
                        ..Default::default()
                    }),
                    limit: 0,
                },
                |mut c, r| async move { c.search_persons(r).await },
            ),
        ),
        (
            "limit",
            call(
                v1::SearchPersonsRequest {
                    demographics: Some(v1::Demographics {
                        family_name: "Smith".into(),
                        postcode: "GU1 1AA".into(),
                        ..Default::default()
                    }),
                    limit: 1000,
                },
                |mut c, r| async move { c.search_persons(r).await },
            ),
        ),
        (
            "subject",
            lookup!(|r| r.subject = Some(v1::Demographics {
                family_name: "Smith-Jones".into(),
                ..Default::default()
            })),
        ),
        (
            "subject.date_of_birth",
            lookup!(|r| r.subject.as_mut().expect("subject").date_of_birth = date(2015, 2, 29)),
        ),
        ("purpose", lookup!(|r| r.purpose = None)),
        (
            "purpose.lawful_basis",
            lookup!(|r| r.purpose.as_mut().expect("purpose").lawful_basis = 0),
        ),
        (
            "purpose.lawful_basis",
            lookup!(|r| r.purpose.as_mut().expect("purpose").lawful_basis = 1234),
        ),
        (
            "purpose.reason",
            lookup!(|r| r.purpose.as_mut().expect("purpose").reason = "just".into()),
        ),
        (
            "purpose.reason",
            lookup!(|r| r.purpose.as_mut().expect("purpose").reason = "x".repeat(501)),
        ),
        ("requester", lookup!(|r| r.requester = None)),
        (
            "requester.practitioner_id",
            lookup!(|r| r.requester.as_mut().expect("requester").practitioner_id = "PR-404".into()),
        ),
        ("peer_deadline_ms", lookup!(|r| r.peer_deadline_ms = 5)),
    ];
    let before = node.stats().await;
    for (field, make_call) in cases {
        let channel = node.try_channel(&portal).await.expect("connect");
        let status = make_call(channel).await;
        assert_eq!(status.code(), Code::InvalidArgument, "{field}: {status:?}");
        assert!(
            status.message().starts_with(&format!("{field}: ")),
            "the message should start with {field}: {}",
            status.message()
        );
    }
    let after = node.stats().await;
    assert_eq!(
        before,
        v1::Stats {
            store_bytes: before.store_bytes,
            ..after
        },
        "nothing changed"
    );
}

#[tokio::test]
async fn ending_an_involvement_twice_or_before_it_started_is_refused() {
    let Fixture { portal, node, .. } = fixture().await;
    let ended = seed(&node, &portal).await;
    let mut directory = node.directory(&portal).await;
    let again = directory
        .end_involvement(v1::EndInvolvementRequest {
            id: ended.id.clone(),
            end_date: date(2024, 7, 1),
            reason: String::new(),
        })
        .await
        .expect_err("already ended");
    assert_eq!(again.code(), Code::FailedPrecondition);
    assert_eq!(
        again.message(),
        format!("id: involvement {} has already ended", ended.id)
    );
    let current = directory
        .list_involvements(v1::ListInvolvementsRequest {
            person_id: "P-1".into(),
            include_ended: false,
        })
        .await
        .expect("list")
        .into_inner()
        .involvements;
    let too_early = directory
        .end_involvement(v1::EndInvolvementRequest {
            id: current[0].id.clone(),
            end_date: date(2020, 1, 1),
            reason: String::new(),
        })
        .await
        .expect_err("before start");
    assert_eq!(too_early.code(), Code::InvalidArgument);
    assert!(
        too_early.message().starts_with("end_date: "),
        "{}",
        too_early.message()
    );
    assert_eq!(node.stats().await.active_involvements, 3);
}

#[tokio::test]
async fn callers_are_identified_by_certificate_and_limited_by_role() {
    let ca = TestCa::new(TRUST_DOMAIN);
    let portal = ca.client("portal");
    let reader = ca.client("reader");
    let stranger = ca.client("stranger");
    let node = TestNode::start(
        &ca,
        "surrey",
        &[
            ClientGrant {
                client: &portal,
                roles: &["records", "lookup"],
            },
            ClientGrant {
                client: &reader,
                roles: &["lookup"],
            },
        ],
    )
    .await;
    seed(&node, &portal).await;
    let get = v1::GetPersonRequest { id: "P-1".into() };

    // Same CA, not configured: the TLS handshake succeeds, every call is refused.
    let refused = node
        .directory(&stranger)
        .await
        .get_person(get.clone())
        .await
        .expect_err("stranger");
    assert_eq!(refused.code(), Code::PermissionDenied);
    assert!(
        refused.message().contains("is not a configured client"),
        "{}",
        refused.message()
    );

    // Configured, but without the role.
    let refused = node
        .directory(&reader)
        .await
        .get_person(get.clone())
        .await
        .expect_err("reader");
    assert_eq!(refused.code(), Code::PermissionDenied);
    assert!(
        refused.message().contains("records role"),
        "{}",
        refused.message()
    );
    let refused = patchwork_tests::v1::admin_client::AdminClient::new(
        node.try_channel(&portal).await.expect("connect"),
    )
    .get_stats(v1::GetStatsRequest {})
    .await
    .expect_err("portal is not admin");
    assert_eq!(refused.code(), Code::PermissionDenied);

    // A certificate from another region's CA, even with a configured name:
    // no TLS session at all.
    let other_ca = TestCa::new("impostor.example");
    let impostor = other_ca.client("portal");
    let outcome = match node.try_channel(&impostor).await {
        Err(error) => Err(error.to_string()),
        Ok(channel) => v1::directory_client::DirectoryClient::new(channel)
            .get_person(get.clone())
            .await
            .map(|_| ())
            .map_err(|s| format!("{:?}", s.code())),
    };
    assert!(
        outcome.is_err(),
        "a certificate from an unknown CA must be refused"
    );
    if let Err(code) = &outcome {
        assert!(
            !code.contains("PermissionDenied"),
            "refused at the TLS layer, not by a handler: {code}"
        );
    }

    // No client certificate at all: the handshake is refused.
    let bundle = patchwork_certs::TrustBundle::new(
        patchwork_certs::certs_from_pem(ca.ca.cert_pem().as_bytes()).expect("ca"),
        Vec::new(),
    )
    .expect("bundle");
    let mut config = rustls::ClientConfig::builder()
        .dangerous()
        .with_custom_certificate_verifier(
            bundle
                .server_verifier(node.identity.clone())
                .expect("verifier"),
        )
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let outcome = match patchwork_cli::work::client::tls_channel(
        node.addr,
        rustls::pki_types::ServerName::try_from("localhost").expect("name"),
        std::sync::Arc::new(config),
        std::time::Duration::from_secs(5),
    )
    .await
    {
        Err(error) => patchwork_cli::work::client::error_chain(&error),
        Ok(channel) => match v1::directory_client::DirectoryClient::new(channel)
            .get_person(get.clone())
            .await
        {
            Ok(_) => String::from("let in"),
            Err(status) => format!("{status:?}"),
        },
    };
    assert!(
        outcome.contains("CertificateRequired"),
        "a caller without a certificate is refused: {outcome}"
    );

    // The portal itself still works.
    node.directory(&portal)
        .await
        .get_person(get)
        .await
        .expect("portal may read");
}
