//! `patchwork demo`: a throwaway federation on this machine, for a newcomer's
//! first minute. Three councils — Surrey County Council and Brighton & Hove
//! City Council (one English trust domain) and the City of Melbourne (its own
//! CA, trusted across the border) — each a real node (`server::run_with`) in
//! this process on 127.0.0.1 ports bound beforehand, with certificates signed
//! from requests by the real CA code, CRLs, match-key secrets, agreements
//! between all three and a few hundred synthetic persons each
//! (`synth::council`), seeded through each node's own `Admin.Import`. One
//! child is known to all three. The demo then looks her up from Surrey,
//! prints who is working with her and how to reach them, and keeps running so
//! the printed `patchwork` commands can be tried against it (or, with
//! `--once`, exits 0 only if every council answered as designed).
//!
//! Every file is one an operator would have on a real node — key files 0600,
//! configs complete — so `patchwork lookup|audit|trust|stats --config
//! <dir>/<council>/node.toml` work against the running demo.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use patchwork_certs::{
    CaParams, CertificateAuthority, CsrPolicy, IdentityKind, SpiffeId, request_node_certificate,
};
use patchwork_proto::v1::{self, admin_client::AdminClient, directory_client::DirectoryClient};
use patchwork_store::model::{Date, calendar_date};
use rand::RngCore;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::base::output::{lookup_json, lookup_text};
use crate::base::quickstart::write_new_file;
use crate::base::signals::shutdown_signal;
use crate::work::client::connect;
use crate::work::synth::{self, Area, CouncilRecords, Jurisdiction, Service};
use patchwork_server::base::config::NodeConfig;
use patchwork_server::{Listeners, NodeError, run_with};

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Keep the demo's folder here (it must not exist, or be empty). Default:
    /// a temporary folder, removed when the demo stops.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Run the cross-border lookup, print it and stop: exit 0 only if all
    /// three councils answered as designed.
    #[arg(long)]
    pub once: bool,
    /// Print the lookup as JSON (as `patchwork lookup --json` does) and stop:
    /// implies `--once`, so stdout is one JSON document and nothing else.
    #[arg(long)]
    pub json: bool,
    /// Also write the nodes' log (info and up, or `RUST_LOG`) to stderr;
    /// without it stderr shows warnings and errors only, and the whole log
    /// goes to `demo.log` in the demo's folder.
    #[arg(long, short)]
    pub verbose: bool,
    /// Log as JSON lines instead of text.
    #[arg(long)]
    pub(crate) log_json: bool,
    /// Synthetic persons per council (besides the shared child).
    #[arg(long, default_value_t = DEFAULT_PERSONS, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub persons: u32,
}

/// A region: one certificate authority for one trust domain.
struct Region {
    trust_domain: &'static str,
    ca_name: &'static str,
    /// The CA's folder in the demo folder, and the prefix of its files on nodes.
    label: &'static str,
}

const ENGLAND: Region = Region {
    trust_domain: "england.patchwork",
    ca_name: "Patchwork England demo CA",
    label: "england",
};
const VICTORIA: Region = Region {
    trust_domain: "vic.patchwork",
    ca_name: "Patchwork Victoria demo CA",
    label: "vic",
};
const REGIONS: [&Region; 2] = [&ENGLAND, &VICTORIA];

/// Match-key groups: England's councils, and everyone across the border.
const ENGLAND_KEYS: &str = "england";
const BORDER_KEYS: &str = "border";

struct Council {
    /// Node name, folder name.
    key: &'static str,
    display_name: &'static str,
    region: &'static Region,
    default_id_scheme: &'static str,
    key_sets: &'static [&'static str],
    area: Area,
    seed: u64,
}

const COUNCILS: [Council; 3] = [
    Council {
        key: "surrey",
        display_name: "Surrey County Council",
        region: &ENGLAND,
        default_id_scheme: "nhs",
        key_sets: &[ENGLAND_KEYS, BORDER_KEYS],
        area: Area {
            id_prefix: "SCC",
            name: "Surrey",
            jurisdiction: Jurisdiction::England,
            towns: &[
                ("Guildford", "GU"),
                ("Woking", "GU"),
                ("Epsom", "KT"),
                ("Redhill", "RH"),
                ("Staines", "TW"),
                ("Farnham", "GU"),
                ("Camberley", "GU"),
            ],
            phone_stem: "01632 960",
            phone_digits: 3,
            email_domain: "surreycc.example",
        },
        seed: 1,
    },
    Council {
        key: "brighton",
        display_name: "Brighton & Hove City Council",
        region: &ENGLAND,
        default_id_scheme: "nhs",
        key_sets: &[ENGLAND_KEYS, BORDER_KEYS],
        area: Area {
            id_prefix: "BHCC",
            name: "Brighton & Hove",
            jurisdiction: Jurisdiction::England,
            towns: &[
                ("Brighton", "BN"),
                ("Hove", "BN"),
                ("Portslade", "BN"),
                ("Patcham", "BN"),
                ("Whitehawk", "BN"),
                ("Rottingdean", "BN"),
            ],
            phone_stem: "020 7946 0",
            phone_digits: 3,
            email_domain: "brighton-hove.example",
        },
        seed: 2,
    },
    Council {
        key: "melbourne",
        display_name: "City of Melbourne",
        region: &VICTORIA,
        default_id_scheme: synth::VICTORIA_ID_SCHEME,
        key_sets: &[BORDER_KEYS],
        area: Area {
            id_prefix: "COM",
            name: "Melbourne",
            jurisdiction: Jurisdiction::Victoria,
            towns: &[
                ("Carlton", "3053"),
                ("North Melbourne", "3051"),
                ("Parkville", "3052"),
                ("Southbank", "3006"),
                ("Docklands", "3008"),
                ("Kensington", "3031"),
                ("East Melbourne", "3002"),
            ],
            phone_stem: "03 5550 ",
            phone_digits: 4,
            email_domain: "melbourne.example",
        },
        seed: 3,
    },
];
const SURREY: usize = 0;
const BRIGHTON: usize = 1;
const MELBOURNE: usize = 2;

/// The child every council knows, each a little differently.
pub struct SharedChild {
    pub given_name: &'static str,
    pub family_name: &'static str,
    pub date_of_birth: Date,
    /// In the NHS's test range, so never a real person's.
    pub nhs_number: &'static str,
}

pub const SHARED_CHILD: SharedChild = SharedChild {
    given_name: "Maisie",
    family_name: "Abara-Whitfield",
    date_of_birth: match Date::from_calendar_date(2011, time::Month::October, 7) {
        Ok(date) => date,
        Err(_) => Date::MIN,
    },
    nhs_number: "9990246807",
};

const REASON: &str = "s.47 enquiry after a referral from her school";
const MELBOURNE_REASON: &str = "report of concern about her wellbeing from her school";

/// Synthetic persons per council unless `--persons` says otherwise.
pub const DEFAULT_PERSONS: u32 = 300;

fn date(year: i32, month: u32, day: u32) -> Date {
    calendar_date(year, month, day).unwrap_or(Date::MIN)
}

/// Every council's synthetic records with the shared child added: Surrey
/// knows her with her NHS number, Brighton & Hove with the same number at
/// the address the family moved to, Melbourne (where she spent a year) by
/// names and date of birth only. Returns the records and, per council, her
/// id there.
pub fn seed_records(persons: u32) -> Vec<(CouncilRecords, String)> {
    let child = &SHARED_CHILD;
    COUNCILS
        .iter()
        .enumerate()
        .map(|(i, council)| {
            let mut records = synth::council(council.area, persons as usize, council.seed);
            let id = records.next_person_id();
            let (postcode, address, nhs) = match i {
                SURREY => ("GU2 7XH", "14 Cathedral Hill, Guildford", true),
                BRIGHTON => ("BN2 9QA", "Flat 3, 27 Whitehawk Road, Brighton", true),
                _ => ("3053", "9 Cardigan Street, Carlton VIC", false),
            };
            records.persons.push(v1::Person {
                id: id.clone(),
                given_name: child.given_name.into(),
                family_name: child.family_name.into(),
                date_of_birth: Some(patchwork_server::base::validate::to_proto_date(
                    child.date_of_birth,
                )),
                postcode: postcode.into(),
                address: address.into(),
                national_id: nhs.then(|| v1::NationalId {
                    scheme: patchwork_federation::NHS_SCHEME.into(),
                    value: child.nhs_number.into(),
                }),
            });
            let involvements: &[(Service, Date, Option<Date>)] = match i {
                SURREY => &[
                    (Service::ChildProtection, date(2024, 11, 4), None),
                    (Service::SchoolNursing, date(2023, 9, 12), None),
                    // Ended: never disclosed.
                    (
                        Service::HealthVisiting,
                        date(2011, 11, 1),
                        Some(date(2016, 10, 7)),
                    ),
                ],
                BRIGHTON => &[
                    (Service::YouthWork, date(2025, 2, 17), None),
                    (Service::SexualHealth, date(2025, 4, 2), None),
                ],
                _ => &[(
                    Service::SchoolNursing,
                    date(2022, 3, 1),
                    Some(date(2023, 1, 27)),
                )],
            };
            for (service, start, end) in involvements {
                records.add_involvement(&id, *service, *start, *end);
            }
            if i == MELBOURNE {
                // Still in touch with her from Melbourne.
                records.add_involvement(&id, Service::MentalHealth, date(2022, 5, 9), None);
            }
            (records, id)
        })
        .collect()
}

/// Runs `patchwork demo`.
pub async fn run(mut args: DemoArgs) -> anyhow::Result<ExitCode> {
    // `--json` is for scripts, which want one document and an exit status,
    // never a process that runs until Ctrl-C.
    args.once |= args.json;
    let started = Instant::now();
    let (root, temporary) = demo_folder(args.dir.as_deref())?;
    init_demo_logging(&root, &args)?;
    let say = Say { json: args.json };
    let (federation, listeners) = Federation::create(&root).await?;
    let running = federation.start(listeners);
    // Ctrl-C or SIGTERM at any point stops the nodes cleanly and removes a
    // temporary folder; the demo runs until then, unless `--once`.
    let outcome = tokio::select! {
        outcome = drive(&federation, &running, &args, &say, started) => outcome,
        () = shutdown_signal() => Ok(if args.once { ExitCode::FAILURE } else { ExitCode::SUCCESS }),
    };
    let stopped = running.stop().await;
    let kept = if temporary.is_some() {
        "removed"
    } else {
        "kept"
    };
    drop(temporary);
    say.line(&format!("demo stopped; {kept} {}", root.display()));
    let code = outcome?;
    stopped?;
    Ok(code)
}

/// The log of three nodes starting, seeding and answering is some seventy
/// lines before the answer; a newcomer's terminal should show the story, so
/// the log goes to `demo.log` in the demo's folder (info and up, or
/// `RUST_LOG`) and stderr shows only warnings and errors, unless `--verbose`.
fn init_demo_logging(root: &Path, args: &DemoArgs) -> anyhow::Result<()> {
    use tracing_subscriber::filter::{EnvFilter, LevelFilter};
    use tracing_subscriber::{Layer, fmt, layer::SubscriberExt, util::SubscriberInitExt};

    let path = root.join(DEMO_LOG);
    let file = std::fs::File::create(&path)
        .with_context(|| format!("cannot create the demo's log {}", path.display()))?;
    let filter = || EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let to_file = fmt::layer()
        .with_writer(std::sync::Mutex::new(file))
        .with_ansi(false);
    let to_file = if args.log_json {
        to_file.json().with_filter(filter()).boxed()
    } else {
        to_file.with_filter(filter()).boxed()
    };
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let to_stderr = fmt::layer().with_writer(std::io::stderr).with_ansi(ansi);
    let to_stderr = match (args.log_json, args.verbose) {
        (true, true) => to_stderr.json().with_filter(filter()).boxed(),
        (true, false) => to_stderr.json().with_filter(LevelFilter::WARN).boxed(),
        (false, true) => to_stderr.with_filter(filter()).boxed(),
        (false, false) => to_stderr.with_filter(LevelFilter::WARN).boxed(),
    };
    tracing_subscriber::registry()
        .with(to_file)
        .with(to_stderr)
        .try_init()
        .context("cannot install the demo's log")
}

/// The demo's log, in its folder.
pub(crate) const DEMO_LOG: &str = "demo.log";

/// Where progress goes: stdout, or stderr when stdout is for JSON.
struct Say {
    json: bool,
}

impl Say {
    fn line(&self, text: &str) {
        if self.json {
            eprintln!("{text}");
        } else {
            println!("{text}");
        }
    }
}

async fn drive(
    federation: &Federation,
    running: &Running,
    args: &DemoArgs,
    say: &Say,
    started: Instant,
) -> anyhow::Result<ExitCode> {
    running.wait_ready(federation).await?;
    let seeded = seed_records(args.persons);
    federation.seed(&seeded).await?;
    say.line(&federation.describe(&seeded));
    say.line(&format!(
        "ready in {:.1} s\n",
        started.elapsed().as_secs_f64()
    ));

    let (surrey, _) = &seeded[SURREY];
    let asker = surrey
        .practitioner_for(Service::ChildProtection)
        .context("the synthetic Surrey has no child-protection social worker")?;
    let request = lookup_request(&asker.id);
    let mut directory = DirectoryClient::new(connect(&federation.nodes[SURREY].config).await?);
    let response = directory
        .lookup(request)
        .await
        .map_err(|status| anyhow::anyhow!("the lookup failed: {}", status.message()))?
        .into_inner();
    let problems = check(&response, federation, &seeded);
    if args.json {
        println!("{}", lookup_json(&response));
    } else {
        let child = &SHARED_CHILD;
        let organisation = surrey
            .organisation_of(asker)
            .map(|o| o.name.as_str())
            .unwrap_or_default();
        println!(
            "{} ({}, {organisation}) asks, for child safeguarding:\n\
             who else is working with {} {}, born {}, NHS number {}?\n",
            asker.name,
            asker.role,
            child.given_name,
            child.family_name,
            child.date_of_birth,
            child.nhs_number
        );
        print!("{}", lookup_text(&response));
        println!();
    }
    if problems.is_empty() {
        say.line(
            "as designed: all three councils found her and named who to contact; \
             Brighton & Hove's restricted service shows only its gatekeeper",
        );
    } else {
        eprintln!("NOT as designed:");
        for problem in &problems {
            eprintln!("  - {problem}");
        }
    }
    if args.once {
        return Ok(if problems.is_empty() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        });
    }
    say.line(&federation.commands(&seeded, &asker.id));
    say.line("the demo is running: press Ctrl-C to stop it");
    let stopped = running.any_stopped(federation).await;
    bail!("{stopped} stopped by itself (its log says why)")
}

/// What Surrey knows of her: names, date of birth and NHS number (not where
/// the family lives now).
fn lookup_request(practitioner_id: &str) -> v1::LookupRequest {
    let child = &SHARED_CHILD;
    v1::LookupRequest {
        subject: Some(v1::Demographics {
            given_name: child.given_name.into(),
            family_name: child.family_name.into(),
            date_of_birth: Some(patchwork_server::base::validate::to_proto_date(
                child.date_of_birth,
            )),
            postcode: String::new(),
            national_id: Some(v1::NationalId {
                scheme: patchwork_federation::NHS_SCHEME.into(),
                value: child.nhs_number.into(),
            }),
        }),
        purpose: Some(v1::Purpose {
            lawful_basis: v1::LawfulBasis::ChildSafeguarding as i32,
            reason: REASON.into(),
        }),
        requester: Some(v1::Requester {
            practitioner_id: practitioner_id.into(),
            ..Default::default()
        }),
        local_only: false,
        peer_deadline_ms: 0,
        include_family: false,
    }
}

/// What is wrong with the demo lookup's answer, if anything: every council
/// must have matched her with at least one involvement, a restricted
/// service must show only its gatekeeper, and Brighton & Hove's restricted
/// service must be there (as its gatekeeper) without its practitioner.
fn check(
    response: &v1::LookupResponse,
    federation: &Federation,
    seeded: &[(CouncilRecords, String)],
) -> Vec<String> {
    use v1::disclosed_involvement::Contact;
    let mut problems = Vec::new();
    for (node, (records, _)) in federation.nodes.iter().zip(seeded) {
        let name = node.council.display_name;
        let Some(answer) = response
            .answers
            .iter()
            .find(|a| a.node_id == node.identity.to_string())
        else {
            problems.push(format!("{name} did not answer"));
            continue;
        };
        if answer.outcome != v1::NodeOutcome::Matched as i32 {
            problems.push(format!(
                "{name}: {:?} {}",
                v1::NodeOutcome::try_from(answer.outcome),
                answer.detail
            ));
        }
        if answer.involvements.is_empty() {
            problems.push(format!("{name} named nobody"));
        }
        for involvement in &answer.involvements {
            let restricted = involvement.sensitivity == v1::Sensitivity::Restricted as i32;
            match (&involvement.contact, restricted) {
                (Some(Contact::Gatekeeper(_)), true) if involvement.service.is_empty() => {}
                (Some(Contact::Practitioner(_)), false) => {}
                (contact, _) => problems.push(format!(
                    "{name} disclosed a {} involvement as {contact:?}",
                    if restricted { "restricted" } else { "standard" }
                )),
            }
        }
        if node.council.key == "brighton" {
            let gatekeepers = answer
                .involvements
                .iter()
                .filter(|i| matches!(i.contact, Some(Contact::Gatekeeper(_))))
                .count();
            if gatekeepers == 0 {
                problems.push(format!(
                    "{name} did not name its restricted service's gatekeeper"
                ));
            }
            if let Some(nurse) = records.practitioner_for(Service::SexualHealth)
                && format!("{response:?}").contains(&nurse.name)
            {
                problems.push(format!(
                    "{name} disclosed a restricted service's practitioner"
                ));
            }
        }
    }
    problems
}

// ------------------------------------------------------------ the folder

/// The demo's folder, and the guard that removes it if it is temporary.
fn demo_folder(dir: Option<&Path>) -> anyhow::Result<(PathBuf, Option<tempfile::TempDir>)> {
    match dir {
        Some(dir) => {
            if dir.exists()
                && std::fs::read_dir(dir)
                    .map(|mut d| d.next().is_some())
                    .unwrap_or(true)
            {
                bail!(
                    "--dir: {} exists and is not empty; the demo never overwrites",
                    dir.display()
                );
            }
            std::fs::create_dir_all(dir)
                .with_context(|| format!("--dir: cannot create {}", dir.display()))?;
            let dir = dir
                .canonicalize()
                .with_context(|| format!("--dir: cannot resolve {}", dir.display()))?;
            Ok((dir, None))
        }
        None => {
            let temp = tempfile::Builder::new()
                .prefix("patchwork-demo-")
                .tempdir()
                .context("cannot create a temporary folder")?;
            Ok((temp.path().to_owned(), Some(temp)))
        }
    }
}

async fn bind_loopback() -> anyhow::Result<TcpListener> {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .context("cannot listen on 127.0.0.1")
}

/// 32 random bytes as hex: a match-key secret.
fn new_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

fn mkdir(path: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(path).with_context(|| format!("cannot create {}", path.display()))
}

struct Node {
    council: &'static Council,
    identity: SpiffeId,
    address: SocketAddr,
    metrics_address: SocketAddr,
    config_path: PathBuf,
    config: NodeConfig,
}

struct Federation {
    root: PathBuf,
    nodes: Vec<Node>,
}

impl Federation {
    /// Binds a port for each council, makes both CAs, each node's key,
    /// request and certificate, the CRLs, the match-key secrets and the
    /// configs, and checks every config loads.
    async fn create(root: &Path) -> anyhow::Result<(Federation, Vec<Listeners>)> {
        // Every port first, so each config can name the others' addresses.
        let mut listeners = Vec::new();
        let mut addresses = Vec::new();
        for _ in &COUNCILS {
            let api = bind_loopback().await?;
            let metrics = bind_loopback().await?;
            addresses.push((api.local_addr()?, metrics.local_addr()?));
            listeners.push(Listeners {
                api,
                metrics: Some(metrics),
            });
        }

        // Each region's CA, and the CRL it publishes (nothing revoked yet).
        let now = time::OffsetDateTime::now_utc();
        let mut authorities = Vec::new();
        let mut published = Vec::new();
        for region in REGIONS {
            let ca = CertificateAuthority::generate(&CaParams {
                trust_domain: region.trust_domain.into(),
                display_name: region.ca_name.into(),
                validity_days: 365,
            })?;
            let crl = ca.crl(
                &[],
                1,
                now - time::Duration::minutes(5),
                // Past the 14 days from which `trust status` says "renew soon".
                now + time::Duration::days(30),
            )?;
            let dir = root.join(format!("{}-ca", region.label));
            mkdir(&dir)?;
            write_new_file(&dir.join("ca.crt"), ca.cert_pem().as_bytes(), false)?;
            write_new_file(&dir.join("ca.key"), ca.key_pem().as_bytes(), true)?;
            write_new_file(&dir.join("ca.crl"), crl.as_bytes(), false)?;
            published.push((region, ca.cert_pem().to_owned(), crl));
            authorities.push((region.label, ca));
        }
        let secrets = [(ENGLAND_KEYS, new_secret()), (BORDER_KEYS, new_secret())];

        let identities: Vec<SpiffeId> = COUNCILS
            .iter()
            .map(|c| SpiffeId::node(c.region.trust_domain, c.key))
            .collect::<Result<_, _>>()?;
        let mut nodes = Vec::new();
        for (i, council) in COUNCILS.iter().enumerate() {
            let dir = root.join(council.key);
            mkdir(&dir.join("trust"))?;
            mkdir(&dir.join("secrets"))?;
            // The key is made here and never leaves the node's folder; the
            // CA signs the request by its own policy.
            let request = request_node_certificate(
                council.key,
                Some(council.region.trust_domain),
                &["localhost".to_owned()],
                &[IpAddr::V4(Ipv4Addr::LOCALHOST)],
            )?;
            let ca = authorities
                .iter()
                .find(|(label, _)| *label == council.region.label)
                .map(|(_, ca)| ca)
                .context("every council's region has a CA")?;
            let signed = ca.sign_csr(
                &request.csr_pem,
                &CsrPolicy {
                    expected: Some((IdentityKind::Node, council.key.to_owned())),
                    validity_days: 30,
                },
            )?;
            write_new_file(&dir.join("node.key"), request.key_pem.as_bytes(), true)?;
            write_new_file(&dir.join("node.csr"), request.csr_pem.as_bytes(), false)?;
            write_new_file(&dir.join("node.crt"), signed.cert_pem.as_bytes(), false)?;
            // Both regions' CAs and CRLs: each trusts the other across the border.
            for (region, cert, crl) in &published {
                let trust = dir.join("trust");
                write_new_file(
                    &trust.join(format!("{}-ca.crt", region.label)),
                    cert.as_bytes(),
                    false,
                )?;
                write_new_file(
                    &trust.join(format!("{}.crl", region.label)),
                    crl.as_bytes(),
                    false,
                )?;
            }
            for (set, secret) in &secrets {
                if council.key_sets.contains(set) {
                    write_new_file(
                        &dir.join("secrets").join(format!("{set}.key")),
                        secret.as_bytes(),
                        true,
                    )?;
                }
            }
            let config_path = dir.join("node.toml");
            let text = config_text(i, &addresses, &identities);
            write_new_file(&config_path, text.as_bytes(), false)?;
            let config = NodeConfig::load(&config_path)
                .with_context(|| format!("the demo's {} is not valid", config_path.display()))?;
            nodes.push(Node {
                council,
                identity: identities[i].clone(),
                address: addresses[i].0,
                metrics_address: addresses[i].1,
                config_path,
                config,
            });
        }
        Ok((
            Federation {
                root: root.to_owned(),
                nodes,
            },
            listeners,
        ))
    }

    fn start(&self, listeners: Vec<Listeners>) -> Running {
        let (stop, stopped) = watch::channel(false);
        let tasks = self
            .nodes
            .iter()
            .zip(listeners)
            .map(|(node, listeners)| {
                let mut stopped = stopped.clone();
                let shutdown = async move {
                    let _ = stopped.wait_for(|stop| *stop).await;
                };
                let span = tracing::info_span!("node", name = node.council.key);
                tokio::spawn(run_with(node.config.clone(), listeners, shutdown).instrument(span))
            })
            .collect();
        Running { stop, tasks }
    }

    /// Imports every council's records through its own `Admin.Import`, as
    /// the node itself (as `patchwork import` does), all councils at once.
    async fn seed(&self, seeded: &[(CouncilRecords, String)]) -> anyhow::Result<()> {
        let imports = self
            .nodes
            .iter()
            .zip(seeded)
            .map(|(node, (records, _))| import_council(node, records));
        futures::future::try_join_all(imports).await?;
        Ok(())
    }

    fn describe(&self, seeded: &[(CouncilRecords, String)]) -> String {
        use std::fmt::Write;
        let mut out = format!(
            "Patchwork demo: three councils on this machine, in {}\n\n",
            self.root.display()
        );
        for (node, (records, _)) in self.nodes.iter().zip(seeded) {
            let _ = writeln!(
                out,
                "  {:<29} {}\n  {:<29} gRPC on {}, metrics on http://{}/metrics",
                node.council.display_name, node.identity, "", node.address, node.metrics_address
            );
            let _ = writeln!(
                out,
                "  {:<29} {} persons, {} practitioners, {} organisations, {} involvements",
                "",
                records.persons.len(),
                records.practitioners.len(),
                records.organisations.len(),
                records.involvements.len()
            );
        }
        let _ = write!(
            out,
            "\ntrust: two certificate authorities ({} and {}), each trusting the other, \
             with CRLs;\nagreements: every council with the other two, match keys \
             \"{ENGLAND_KEYS}\" (Surrey, Brighton & Hove) and \"{BORDER_KEYS}\" (all three);\n\
             the nodes' log: {} (`--verbose` also shows it here)",
            ENGLAND.trust_domain,
            VICTORIA.trust_domain,
            self.root.join(DEMO_LOG).display()
        );
        out
    }

    /// The commands to try next, exactly as they work against this demo.
    fn commands(&self, seeded: &[(CouncilRecords, String)], surrey_asker: &str) -> String {
        let exe = std::env::current_exe()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| "patchwork".to_owned());
        let config = |i: usize| self.nodes[i].config_path.display().to_string();
        let child = &SHARED_CHILD;
        let dob = child.date_of_birth.to_string();
        let lookup = |i: usize, asker: &str, reason: &str, nhs: bool| {
            let mut words = vec![
                exe.clone(),
                "lookup".into(),
                "--config".into(),
                config(i),
                "--as".into(),
                asker.to_owned(),
                "--basis".into(),
                "child-safeguarding".into(),
                "--reason".into(),
                reason.into(),
                "--given".into(),
                child.given_name.into(),
                "--family".into(),
                child.family_name.into(),
                "--dob".into(),
                dob.clone(),
            ];
            if nhs {
                words.extend(["--national-id".into(), child.nhs_number.into()]);
            }
            shell_line(&words)
        };
        let admin = |words: &[&str]| {
            let mut all = vec![exe.clone()];
            all.extend(words.iter().map(|w| (*w).to_owned()));
            shell_line(&all)
        };
        let melbourne_asker = seeded[MELBOURNE]
            .0
            .practitioner_for(Service::MentalHealth)
            .map(|p| p.id.clone())
            .unwrap_or_default();
        let brighton_child = &seeded[BRIGHTON].1;
        let (surrey_config, brighton_config, melbourne_config) =
            (config(SURREY), config(BRIGHTON), config(MELBOURNE));
        [
            "\ntry it yourself while the demo runs (in another terminal):\n".to_owned(),
            "  # the same lookup, from Surrey".to_owned(),
            format!("  {}", lookup(SURREY, surrey_asker, REASON, true)),
            "  # Melbourne asks, knowing only her names and date of birth".to_owned(),
            format!(
                "  {}",
                lookup(MELBOURNE, &melbourne_asker, MELBOURNE_REASON, false)
            ),
            "  # subject access: who asked Brighton & Hove about her, why, and what it disclosed"
                .to_owned(),
            format!(
                "  {}",
                admin(&[
                    "audit",
                    "subject",
                    "--config",
                    &brighton_config,
                    "--person",
                    brighton_child
                ])
            ),
            "  # the audit log reads back whole, and matches what its witnesses cosigned"
                .to_owned(),
            format!(
                "  {}",
                admin(&["audit", "verify", "--config", &surrey_config])
            ),
            "  # certificates and CRLs, and how long each has left".to_owned(),
            format!(
                "  {}",
                admin(&["trust", "status", "--config", &melbourne_config])
            ),
            "  # what Surrey holds".to_owned(),
            format!("  {}", admin(&["stats", "--config", &surrey_config])),
            String::new(),
        ]
        .join("\n")
    }
}

async fn import_council(node: &Node, records: &CouncilRecords) -> anyhow::Result<()> {
    use v1::import_row::Record;
    let mut admin = AdminClient::new(connect(&node.config).await?)
        .max_encoding_message_size(16 * 1024 * 1024)
        .max_decoding_message_size(16 * 1024 * 1024);
    let kinds: [(v1::RecordKind, Vec<Record>); 4] = [
        (
            v1::RecordKind::Organisation,
            records
                .organisations
                .iter()
                .cloned()
                .map(Record::Organisation)
                .collect(),
        ),
        (
            v1::RecordKind::Practitioner,
            records
                .practitioners
                .iter()
                .cloned()
                .map(Record::Practitioner)
                .collect(),
        ),
        (
            v1::RecordKind::Person,
            records
                .persons
                .iter()
                .cloned()
                .map(Record::Person)
                .collect(),
        ),
        (
            v1::RecordKind::Involvement,
            records
                .involvements
                .iter()
                .cloned()
                .map(Record::Involvement)
                .collect(),
        ),
    ];
    for (kind, rows) in kinds {
        let mut messages = vec![v1::ImportRequest {
            item: Some(v1::import_request::Item::Header(v1::ImportHeader {
                kind: kind as i32,
                source: "patchwork demo".into(),
                ..Default::default()
            })),
        }];
        let rows: Vec<v1::ImportRow> = rows
            .into_iter()
            .enumerate()
            .map(|(n, record)| v1::ImportRow {
                line: n as u64 + 2,
                record: Some(record),
            })
            .collect();
        for batch in rows.chunks(1000) {
            messages.push(v1::ImportRequest {
                item: Some(v1::import_request::Item::Batch(v1::ImportBatch {
                    rows: batch.to_vec(),
                })),
            });
        }
        let report = admin
            .import(tokio_stream::iter(messages))
            .await
            .map_err(|status| {
                anyhow::anyhow!(
                    "{}: importing {kind:?} failed: {}",
                    node.council.display_name,
                    status.message()
                )
            })?
            .into_inner();
        if !report.applied || report.bad_rows > 0 {
            let first = report
                .errors
                .first()
                .map(|e| format!("row {}: {}: {}", e.line, e.field, e.message))
                .unwrap_or_default();
            bail!(
                "{}: the synthetic {kind:?} records were refused ({} bad rows; {first})",
                node.council.display_name,
                report.bad_rows
            );
        }
    }
    Ok(())
}

/// One council's config: everything `deploy/node.example.toml` describes
/// that a node in a federation needs.
fn config_text(
    i: usize,
    addresses: &[(SocketAddr, SocketAddr)],
    identities: &[SpiffeId],
) -> String {
    use std::fmt::Write;
    let council = &COUNCILS[i];
    let trust: Vec<String> = REGIONS
        .iter()
        .map(|r| format!("\"trust/{}-ca.crt\"", r.label))
        .collect();
    let crls: Vec<String> = REGIONS
        .iter()
        .map(|r| format!("\"trust/{}.crl\"", r.label))
        .collect();
    let mut text = format!(
        r#"# Made by `patchwork demo`: {name}, one of three councils in a throwaway
# federation on this machine. deploy/node.example.toml documents every key.
[node]
display_name = "{name}"
data_dir = "data"
default_id_scheme = "{scheme}"

[tls]
cert_file = "node.crt"
key_file = "node.key"
trust_bundle = [{trust}]
crl_files = [{crls}]

[api]
listen = "{listen}"
# Local clients (a portal, the case-management system) would be listed here;
# the patchwork CLI calls as the node itself.
clients = []

[store]
cache_mb = 32

[metrics]
enabled = true
listen = "{metrics}"

[log]
format = "text"

[federation]
default_deadline_ms = 3000
"#,
        name = council.display_name,
        scheme = council.default_id_scheme,
        trust = trust.join(", "),
        crls = crls.join(", "),
        listen = addresses[i].0,
        metrics = addresses[i].1,
    );
    for set in council.key_sets {
        let _ = write!(
            text,
            "\n[[federation.key_sets]]\nname = \"{set}\"\nsecret_file = \"secrets/{set}.key\"\n"
        );
    }
    for (j, peer) in COUNCILS.iter().enumerate() {
        if j == i {
            continue;
        }
        // The English councils share their own key set; across the border
        // every council uses the border one.
        let key_set = if council.region.label == peer.region.label {
            ENGLAND_KEYS
        } else {
            BORDER_KEYS
        };
        let purposes = if key_set == ENGLAND_KEYS {
            r#"["child-safeguarding", "adult-safeguarding", "vital-interests", "direct-care"]"#
        } else {
            r#"["child-safeguarding", "adult-safeguarding", "vital-interests"]"#
        };
        let _ = write!(
            text,
            r#"
[[federation.peers]]
identity = "{identity}"
name = "{name}"
address = "{address}"
key_set = "{key_set}"
purposes = {purposes}
sensitivities = ["standard", "restricted"]
rate_limit_per_minute = 600
"#,
            identity = identities[j],
            name = peer.display_name,
            address = addresses[j].0,
        );
    }
    text
}

/// A command line as a POSIX shell reads it.
fn shell_line(words: &[String]) -> String {
    words
        .iter()
        .map(|word| {
            let plain = !word.is_empty()
                && word
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./:=@+,%".contains(c));
            if plain {
                word.clone()
            } else {
                format!("'{}'", word.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

// ------------------------------------------------------------ the nodes

struct Running {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<Result<(), NodeError>>>,
}

impl Running {
    /// Polls every node until it answers (as the CLI would), within a deadline.
    async fn wait_ready(&self, federation: &Federation) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        for (node, task) in federation.nodes.iter().zip(&self.tasks) {
            loop {
                if let Ok(channel) = connect(&node.config).await {
                    let mut admin = AdminClient::new(channel);
                    if admin.get_stats(v1::GetStatsRequest {}).await.is_ok() {
                        break;
                    }
                }
                if task.is_finished() {
                    bail!(
                        "{} stopped while starting (its log says why)",
                        node.council.display_name
                    );
                }
                if Instant::now() > deadline {
                    bail!("{} did not start within 30 s", node.council.display_name);
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        }
        Ok(())
    }

    /// Completes when any node stops (which it only does by itself if it
    /// failed; its log says why), naming it.
    async fn any_stopped(&self, federation: &Federation) -> &'static str {
        loop {
            if let Some(i) = self.tasks.iter().position(JoinHandle::is_finished) {
                return federation.nodes[i].council.display_name;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Asks every node to stop, then waits for each to drain and flush.
    async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        let mut failure = None;
        for task in self.tasks {
            match tokio::time::timeout(Duration::from_secs(20), task).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(error))) => failure = Some(anyhow::Error::from(error)),
                Ok(Err(error)) => failure = Some(anyhow::anyhow!("a node's task failed: {error}")),
                Err(_) => failure = Some(anyhow::anyhow!("a node did not stop within 20 s")),
            }
        }
        failure.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shared_child_is_known_to_every_council_and_only_once() {
        let seeded = seed_records(50);
        for (i, (records, id)) in seeded.iter().enumerate() {
            let namesakes: Vec<_> = records
                .persons
                .iter()
                .filter(|p| p.family_name == SHARED_CHILD.family_name)
                .collect();
            assert_eq!(namesakes.len(), 1, "{}", COUNCILS[i].key);
            assert_eq!(&namesakes[0].id, id);
            assert_eq!(namesakes[0].national_id.is_some(), i != MELBOURNE);
            assert!(
                records
                    .involvements
                    .iter()
                    .any(|inv| &inv.person_id == id && inv.end_date.is_none())
            );
        }
        assert!(patchwork_federation::nhs_number_is_valid(
            SHARED_CHILD.nhs_number
        ));
    }

    #[test]
    fn configs_name_each_other_and_load() {
        let addresses: Vec<(SocketAddr, SocketAddr)> = (0..3)
            .map(|i| {
                (
                    SocketAddr::from((Ipv4Addr::LOCALHOST, 7000 + i)),
                    SocketAddr::from((Ipv4Addr::LOCALHOST, 9000 + i)),
                )
            })
            .collect();
        let identities: Vec<SpiffeId> = COUNCILS
            .iter()
            .map(|c| SpiffeId::node(c.region.trust_domain, c.key).expect("id"))
            .collect();
        for i in 0..3 {
            let config =
                NodeConfig::from_toml(&config_text(i, &addresses, &identities), Path::new("/demo"))
                    .expect("valid");
            assert_eq!(config.federation.peers.len(), 2);
            assert_eq!(config.tls.crl_files.len(), 2);
        }
    }

    #[test]
    fn shell_lines_quote_what_a_shell_would_split() {
        let words: Vec<String> = [
            "patchwork",
            "--reason",
            "it's urgent",
            "O'Brien",
            "Zoë",
            "a-b",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            shell_line(&words),
            r"patchwork --reason 'it'\''s urgent' 'O'\''Brien' 'Zoë' a-b"
        );
    }
}
