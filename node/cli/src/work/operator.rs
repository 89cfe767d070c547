//! The trust operator's commands: a region's certificate authority on disk
//! (`patchwork ca ...`) and a node's own key, requests and certificates
//! (`patchwork cert ...`).
//!
//! A CA signs two kinds of identity: nodes (`spiffe://<td>/node/<name>`) and the local
//! clients of a node's API (`spiffe://<td>/client/<name>`, e.g. the council's portal). A
//! node's files are `node.key`, `node.csr` and `node.crt`; a client's `client.key`,
//! `client.csr` and `client.crt`.
//!
//! A CA folder holds `ca.crt`, `ca.key` (0600), `issued.jsonl` and `revoked.jsonl`
//! (one JSON object a line, appended and fsynced, never rewritten) and `crl_number`.
//! Certificates are signed by the CA's policy in `patchwork_certs`; this module only
//! moves PEM between files and keeps the CA's records. A key is made in its owner's
//! folder and never leaves it: only the request travels to the CA.

use std::fs::OpenOptions;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, anyhow, bail};
use clap::{Args, Subcommand};
use patchwork_certs::{
    CaParams, CertError, CertificateAuthority, CertificateSummary, CrlSummary, CsrPolicy,
    IdentityKind, MAX_CA_VALIDITY_DAYS, MAX_LEAF_VALIDITY_DAYS, RevocationReason,
    RevokedCertificate, certs_from_pem, crls_from_pem, csr_public_key_der, normalize_serial_hex,
    request_certificate, summarize_cert_der, summarize_crl_der,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::base::quickstart::write_new_file;

const CA_CERT: &str = "ca.crt";
const CA_KEY: &str = "ca.key";
const ISSUED: &str = "issued.jsonl";
const REVOKED: &str = "revoked.jsonl";
const CRL_NUMBER: &str = "crl_number";
const CA_FILES: [&str; 5] = [CA_CERT, CA_KEY, ISSUED, REVOKED, CRL_NUMBER];

const NODE_CERT: &str = "node.crt";
const NODE_KEY: &str = "node.key";
const NODE_CSR: &str = "node.csr";
const CLIENT_CERT: &str = "client.crt";
const CLIENT_KEY: &str = "client.key";
const CLIENT_CSR: &str = "client.csr";
const RENEW_KEY: &str = "renew.key";
const RENEW_CSR: &str = "renew.csr";
const RENEW_CRT: &str = "renew.crt";

/// A CRL says when the next one is due; peers using an older one keep trusting revoked
/// certificates, so it is kept short.
const MAX_CRL_DAYS: u32 = 365;
const SECONDS_PER_DAY: i64 = 86_400;

#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// Create a region's certificate authority in a folder.
    Init(CaInitArgs),
    /// Sign a node's or a local client's certificate request by this CA's policy.
    Sign(CaSignArgs),
    /// Revoke a certificate this CA issued (then publish a new CRL).
    Revoke(CaRevokeArgs),
    /// Publish a new certificate revocation list.
    Crl(CaCrlArgs),
    /// List the certificates this CA issued, with their status.
    List(CaListArgs),
}

#[derive(Debug, Args)]
pub struct CaInitArgs {
    /// The folder for the CA (created if missing; must not hold a CA already).
    #[arg(long)]
    pub dir: PathBuf,
    /// The region's trust domain, e.g. `surrey.patchwork.example`.
    #[arg(long)]
    pub trust_domain: String,
    /// The name in the CA certificate, e.g. "Surrey County Council".
    #[arg(long)]
    pub name: String,
    /// How long the CA certificate is valid.
    #[arg(long, default_value_t = 3650)]
    pub days: u32,
}

#[derive(Debug, Args)]
pub struct CaSignArgs {
    /// The CA folder (made by `patchwork ca init`).
    #[arg(long)]
    pub ca: PathBuf,
    /// The certificate request (PEM), a node's or a local client's.
    #[arg(long)]
    pub csr: PathBuf,
    /// Where to write the certificate (must not exist).
    #[arg(long)]
    pub out: PathBuf,
    /// How long the certificate is valid (at most 397).
    #[arg(long, default_value_t = 30)]
    pub days: u32,
    #[command(flatten)]
    pub expected: ExpectedIdentity,
}

/// The identity a request must be for. Required: a CA signs what the
/// operator says the request is for, never just whatever it names.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct ExpectedIdentity {
    /// Refuse the request unless it is for this node name.
    #[arg(long)]
    pub node_id: Option<String>,
    /// Refuse the request unless it is for this local client name.
    #[arg(long)]
    pub(crate) client_id: Option<String>,
}

impl ExpectedIdentity {
    fn kind_and_name(&self) -> Option<(IdentityKind, String)> {
        match (&self.node_id, &self.client_id) {
            (Some(name), _) => Some((IdentityKind::Node, name.clone())),
            (None, Some(name)) => Some((IdentityKind::Client, name.clone())),
            (None, None) => None,
        }
    }
}

#[derive(Debug, Args)]
pub struct CaRevokeArgs {
    /// The CA folder.
    #[arg(long)]
    pub ca: PathBuf,
    #[command(flatten)]
    pub target: RevokeTarget,
    /// unspecified, key-compromise, ca-compromise, affiliation-changed, superseded or
    /// cessation-of-operation.
    #[arg(long, default_value = "unspecified")]
    pub reason: String,
}

/// Which certificate to revoke: by serial, or by the certificate file itself.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct RevokeTarget {
    /// The serial number in hex, as `ca list` or `cert inspect` print it.
    #[arg(long)]
    pub serial: Option<String>,
    /// The certificate (PEM).
    #[arg(long)]
    pub cert: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct CaCrlArgs {
    /// The CA folder.
    #[arg(long)]
    pub ca: PathBuf,
    /// Where to write the CRL (replaced atomically if it exists).
    #[arg(long)]
    pub out: PathBuf,
    /// Days until the next CRL is due.
    #[arg(long, default_value_t = 7)]
    pub days: u32,
}

#[derive(Debug, Args)]
pub struct CaListArgs {
    /// The CA folder.
    #[arg(long)]
    pub ca: PathBuf,
    /// Print a JSON array.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum CertCommand {
    /// Make a key and a certificate request for the region's CA: this node's
    /// (--node-id) or a local API client's (--client-id).
    Request(CertRequestArgs),
    /// Make a new key and request for the same names as the current node.crt
    /// (or client.crt, when the folder holds no node.crt).
    Renew(CertRenewArgs),
    /// Show what a certificate (or CRL) says.
    Inspect(CertInspectArgs),
    /// Check a certificate the way a node would: chain to a trusted CA,
    /// validity, client-auth usage, CRLs, and the identity its CA may vouch for.
    Verify(CertVerifyArgs),
}

#[derive(Debug, Args)]
pub struct CertVerifyArgs {
    /// The certificate (PEM; leaf first, then any intermediates).
    pub file: PathBuf,
    /// A PEM file of trusted CA certificates (repeatable).
    #[arg(long, required = true)]
    pub trust: Vec<PathBuf>,
    /// A PEM file of CRLs to check against (repeatable). With any CRL, a CA
    /// without one makes the status unknown, which is refused.
    #[arg(long)]
    pub crl: Vec<PathBuf>,
    /// The identity the certificate must carry, e.g. spiffe://patchwork/node/surrey.
    #[arg(long)]
    pub identity: Option<String>,
}

#[derive(Debug, Args)]
pub struct CertRequestArgs {
    /// The folder the key and request are written to: node.key and node.csr, or
    /// client.key and client.csr with --client-id.
    #[arg(long)]
    pub dir: PathBuf,
    #[command(flatten)]
    pub identity: RequestedIdentity,
    /// Ask for the identity spiffe://<trust-domain>/node/<node-id> (or
    /// .../client/<client-id>) explicitly; required with --client-id.
    #[arg(long)]
    pub trust_domain: Option<String>,
    /// A DNS name peers dial this node by (repeatable; not for a client).
    #[arg(long = "dns", conflicts_with = "client_id")]
    pub dns: Vec<String>,
    /// An IP address peers dial this node by (repeatable; not for a client).
    #[arg(long = "ip", conflicts_with = "client_id")]
    pub ip: Vec<IpAddr>,
}

/// Whose key and request `cert request` makes: exactly one of the two.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct RequestedIdentity {
    /// The node's name within the trust domain, e.g. `surrey`.
    #[arg(long)]
    pub node_id: Option<String>,
    /// A local API client's name within the trust domain, e.g. `portal`; the node
    /// allows it by spiffe://<trust-domain>/client/<client-id> in its [api] clients.
    #[arg(long, requires = "trust_domain")]
    pub(crate) client_id: Option<String>,
}

impl RequestedIdentity {
    fn kind_and_name(&self) -> anyhow::Result<(IdentityKind, &str)> {
        match (&self.node_id, &self.client_id) {
            (Some(name), None) => Ok((IdentityKind::Node, name)),
            (None, Some(name)) => Ok((IdentityKind::Client, name)),
            _ => bail!("give exactly one of --node-id and --client-id"),
        }
    }
}

#[derive(Debug, Args)]
pub struct CertRenewArgs {
    /// The folder holding node.crt (or, without one, client.crt); renew.key and
    /// renew.csr are written here.
    #[arg(long)]
    pub dir: PathBuf,
}

/// Where one kind of identity keeps its files, and the flag that names it.
struct LeafFiles {
    cert: &'static str,
    key: &'static str,
    csr: &'static str,
    flag: &'static str,
}

impl LeafFiles {
    fn of(kind: IdentityKind) -> LeafFiles {
        match kind {
            IdentityKind::Node => LeafFiles {
                cert: NODE_CERT,
                key: NODE_KEY,
                csr: NODE_CSR,
                flag: "--node-id",
            },
            IdentityKind::Client => LeafFiles {
                cert: CLIENT_CERT,
                key: CLIENT_KEY,
                csr: CLIENT_CSR,
                flag: "--client-id",
            },
        }
    }
}

#[derive(Debug, Args)]
pub struct CertInspectArgs {
    /// A certificate or CRL (PEM).
    pub file: PathBuf,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

pub(crate) fn run_ca(command: CaCommand) -> anyhow::Result<ExitCode> {
    match command {
        CaCommand::Init(args) => ca_init(&args),
        CaCommand::Sign(args) => ca_sign(&args),
        CaCommand::Revoke(args) => ca_revoke(&args),
        CaCommand::Crl(args) => ca_crl(&args),
        CaCommand::List(args) => ca_list(&args),
    }?;
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn run_cert(command: CertCommand) -> anyhow::Result<ExitCode> {
    match command {
        CertCommand::Request(args) => cert_request(&args),
        CertCommand::Renew(args) => cert_renew(&args),
        CertCommand::Inspect(args) => cert_inspect(&args),
        CertCommand::Verify(args) => cert_verify(&args),
    }?;
    Ok(ExitCode::SUCCESS)
}

/// One line of `issued.jsonl`.
#[derive(Debug, Serialize, Deserialize)]
struct IssuedRecord {
    serial: String,
    identity: String,
    dns: Vec<String>,
    ips: Vec<IpAddr>,
    not_before: UtcSeconds,
    not_after: UtcSeconds,
    issued_at: UtcSeconds,
    /// SHA-256 of the certified key (SubjectPublicKeyInfo), hex; absent in records written
    /// before it was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    key_sha256: Option<String>,
}

/// One line of `revoked.jsonl`.
#[derive(Debug, Serialize, Deserialize)]
struct RevokedRecord {
    serial: String,
    revoked_at: UtcSeconds,
    reason: String,
    /// The revoked certificate's key fingerprint, as in `IssuedRecord`: `ca sign` refuses
    /// a request for that key ever after.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    key_sha256: Option<String>,
}

/// SHA-256 of a SubjectPublicKeyInfo (DER), lowercase hex: how the CA's records name a key.
fn key_fingerprint(spki_der: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, spki_der))
}

/// The revoked certificate whose key is `key_sha256`, if any: a revoked certificate's key
/// may have been compromised (and the operator need not say so), so it is never certified
/// again, for any identity.
fn revoked_with_key<'a>(
    key_sha256: &str,
    issued: &'a [IssuedRecord],
    revoked: &'a [RevokedRecord],
) -> Option<(&'a RevokedRecord, Option<&'a IssuedRecord>)> {
    revoked.iter().find_map(|entry| {
        let record = issued.iter().find(|record| record.serial == entry.serial);
        let key = entry
            .key_sha256
            .as_deref()
            .or_else(|| record.and_then(|record| record.key_sha256.as_deref()));
        (key == Some(key_sha256)).then_some((entry, record))
    })
}

fn ca_init(args: &CaInitArgs) -> anyhow::Result<()> {
    check_days("--days", args.days, MAX_CA_VALIDITY_DAYS)?;
    patchwork_certs::validate_trust_domain(&args.trust_domain).context("--trust-domain")?;
    let dir = &args.dir;
    std::fs::create_dir_all(dir)
        .with_context(|| format!("--dir: cannot create {}", dir.display()))?;
    for name in CA_FILES {
        let path = dir.join(name);
        if path.symlink_metadata().is_ok() {
            bail!(
                "--dir {}: {} already exists; refusing to overwrite an existing CA",
                dir.display(),
                path.display()
            );
        }
    }
    let ca = CertificateAuthority::generate(&CaParams {
        trust_domain: args.trust_domain.clone(),
        display_name: args.name.clone(),
        validity_days: args.days,
    })
    .map_err(|err| match err {
        CertError::InvalidDisplayName { .. } => anyhow!(err).context("--name"),
        other => anyhow!(other).context("cannot create the CA"),
    })?;

    write_new_file(&dir.join(CA_CERT), ca.cert_pem().as_bytes(), false)?;
    write_new_file(&dir.join(CA_KEY), ca.key_pem().as_bytes(), true)?;
    write_new_file(&dir.join(ISSUED), b"", false)?;
    write_new_file(&dir.join(REVOKED), b"", false)?;
    write_new_file(&dir.join(CRL_NUMBER), b"0\n", false)?;
    sync_dir(dir)?;

    let summary = summarize_cert_der(ca.cert_der())?;
    println!(
        "created CA {:?} for trust domain {} in {}",
        args.name,
        ca.trust_domain(),
        dir.display()
    );
    println!(
        "  certificate: {} (give it to this region's nodes and to peer regions)",
        dir.join(CA_CERT).display()
    );
    println!(
        "  key:         {} (mode 0600; keep it off the nodes)",
        dir.join(CA_KEY).display()
    );
    println!("  not after:   {}", text_time(summary.not_after)?);
    println!(
        "next: on a node, `patchwork cert request --dir <node-dir> --node-id <name>`; here, \
         `patchwork ca sign --ca {} --csr node.csr --out node.crt --node-id <name>`",
        dir.display()
    );
    Ok(())
}

fn ca_sign(args: &CaSignArgs) -> anyhow::Result<()> {
    check_days("--days", args.days, MAX_LEAF_VALIDITY_DAYS)?;
    let ca = load_ca(&args.ca)?;
    if args.out.symlink_metadata().is_ok() {
        bail!(
            "--out {}: already exists; refusing to overwrite",
            args.out.display()
        );
    }
    let ca_summary = summarize_cert_der(ca.cert_der())?;
    let now = OffsetDateTime::now_utc();
    if ca_summary.not_after <= now {
        bail!(
            "--ca {}: the CA certificate expired at {}",
            args.ca.display(),
            text_time(ca_summary.not_after)?
        );
    }
    let csr_pem = std::fs::read_to_string(&args.csr)
        .with_context(|| format!("--csr: cannot read {}", args.csr.display()))?;
    let requested_key = csr_public_key_der(&csr_pem)
        .map(|der| key_fingerprint(&der))
        .with_context(|| format!("--csr {}: refused", args.csr.display()))?;
    let issued: Vec<IssuedRecord> = read_jsonl(&args.ca.join(ISSUED))?;
    let revoked: Vec<RevokedRecord> = read_jsonl(&args.ca.join(REVOKED))?;
    if let Some((entry, record)) = revoked_with_key(&requested_key, &issued, &revoked) {
        bail!(
            "--csr {}: refused: its key belongs to certificate serial {}{}, revoked at {} \
             (reason {}); a revoked certificate's key is never certified again: make a fresh \
             key and request with `patchwork cert request` (or `patchwork cert renew`)",
            args.csr.display(),
            entry.serial,
            record.map_or_else(String::new, |record| format!(" ({})", record.identity)),
            entry.revoked_at,
            entry.reason
        );
    }
    let signed = ca
        .sign_csr(
            &csr_pem,
            &CsrPolicy {
                expected: args.expected.kind_and_name(),
                validity_days: args.days,
            },
        )
        .with_context(|| format!("--csr {}: refused", args.csr.display()))?;
    let leaf = summarize_pem_cert(signed.cert_pem.as_bytes())?;

    // Recorded before it is handed out, so every certificate that exists can be revoked.
    append_jsonl(
        &args.ca.join(ISSUED),
        &IssuedRecord {
            serial: signed.serial_hex.clone(),
            identity: signed.identity.to_string(),
            dns: leaf.dns_names.clone(),
            ips: leaf.ip_addresses.clone(),
            not_before: UtcSeconds::new(signed.not_before)?,
            not_after: UtcSeconds::new(signed.not_after)?,
            issued_at: UtcSeconds::new(now)?,
            key_sha256: Some(key_fingerprint(&signed.public_key_der)),
        },
    )?;
    write_new_file(&args.out, signed.cert_pem.as_bytes(), false).with_context(|| {
        format!(
            "serial {} is recorded in {} but the certificate was not written",
            signed.serial_hex,
            args.ca.join(ISSUED).display()
        )
    })?;

    println!("signed {}", signed.identity);
    println!("  serial:    {}", signed.serial_hex);
    println!("  not after: {}", text_time(signed.not_after)?);
    if !leaf.dns_names.is_empty() || !leaf.ip_addresses.is_empty() {
        println!("  names:     {}", names_text(&leaf));
    }
    println!("  written:   {}", args.out.display());
    if let Some((IdentityKind::Client, _)) = IdentityKind::of(&signed.identity) {
        println!(
            "  allow it:  list {} in the node's [api] clients, with its roles",
            signed.identity
        );
    }
    if signed.not_after > ca_summary.not_after {
        eprintln!(
            "warning: the certificate outlives the CA certificate, which expires at {}",
            text_time(ca_summary.not_after)?
        );
    }
    Ok(())
}

fn ca_revoke(args: &CaRevokeArgs) -> anyhow::Result<()> {
    let reason: RevocationReason = args.reason.parse().context("--reason")?;
    // With the certificate in hand its key is known even when the CA's record of it
    // predates key fingerprints.
    let (serial, cert_key) = match (&args.target.serial, &args.target.cert) {
        (Some(serial), _) => (normalize_serial_hex(serial).context("--serial")?, None),
        (None, Some(path)) => {
            let pem = std::fs::read(path)
                .with_context(|| format!("--cert: cannot read {}", path.display()))?;
            let summary =
                summarize_pem_cert(&pem).with_context(|| format!("--cert {}", path.display()))?;
            (
                summary.serial_hex,
                Some(key_fingerprint(&summary.public_key_der)),
            )
        }
        (None, None) => bail!("give --serial or --cert"),
    };
    let issued: Vec<IssuedRecord> = read_jsonl(&args.ca.join(ISSUED))?;
    let Some(record) = issued.iter().find(|record| record.serial == serial) else {
        bail!(
            "serial {serial} was not issued by the CA in {} (it is not in {})",
            args.ca.display(),
            args.ca.join(ISSUED).display()
        );
    };
    let revoked: Vec<RevokedRecord> = read_jsonl(&args.ca.join(REVOKED))?;
    if let Some(earlier) = revoked.iter().find(|entry| entry.serial == serial) {
        bail!(
            "serial {serial} ({}) was already revoked at {} (reason {})",
            record.identity,
            earlier.revoked_at,
            earlier.reason
        );
    }
    let now = UtcSeconds::new(OffsetDateTime::now_utc())?;
    let key_sha256 = record.key_sha256.clone().or(cert_key);
    let key_known = key_sha256.is_some();
    append_jsonl(
        &args.ca.join(REVOKED),
        &RevokedRecord {
            serial: serial.clone(),
            revoked_at: now,
            reason: reason.to_string(),
            key_sha256,
        },
    )?;
    println!(
        "revoked serial {serial} ({}), reason {reason}",
        record.identity
    );
    if key_known {
        println!(
            "its key is retired: this CA refuses any request for it; the holder makes a fresh \
             key with `patchwork cert request` (or `patchwork cert renew`)"
        );
    } else {
        eprintln!(
            "warning: this CA's record of serial {serial} predates key fingerprints, so a \
             request for the same key cannot be recognised; revoke with --cert to retire the key"
        );
    }
    println!(
        "peers keep accepting it until they load a newer CRL: publish one now with \
         `patchwork ca crl --ca {} --out crl.pem` and give it to every peer",
        args.ca.display()
    );
    Ok(())
}

fn ca_crl(args: &CaCrlArgs) -> anyhow::Result<()> {
    check_days("--days", args.days, MAX_CRL_DAYS)?;
    let ca = load_ca(&args.ca)?;
    let revoked_path = args.ca.join(REVOKED);
    let revoked = read_jsonl::<RevokedRecord>(&revoked_path)?
        .into_iter()
        .enumerate()
        .map(|(index, record)| {
            let at = || format!("{} entry {}", revoked_path.display(), index + 1);
            Ok(RevokedCertificate {
                reason: record.reason.parse().with_context(at)?,
                revoked_at: record.revoked_at.0,
                serial_hex: record.serial,
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;

    let number_path = args.ca.join(CRL_NUMBER);
    let text = std::fs::read_to_string(&number_path)
        .with_context(|| format!("--ca: cannot read {}", number_path.display()))?;
    let previous: u64 = text.trim().parse().with_context(|| {
        format!(
            "{}: {:?} is not a number",
            number_path.display(),
            text.trim()
        )
    })?;
    let number = previous
        .checked_add(1)
        .with_context(|| format!("{}: crl number overflow", number_path.display()))?;

    let this_update = OffsetDateTime::now_utc();
    let next_update = this_update + time::Duration::days(i64::from(args.days));
    let crl_pem = ca.crl(&revoked, number, this_update, next_update)?;
    let crl_file = Replacement::prepare(&args.out, crl_pem.as_bytes())
        .with_context(|| format!("--out {}", args.out.display()))?;
    // The number is spent before the CRL is published, so a crash never publishes two
    // different CRLs under one number (it may skip one, which is harmless).
    Replacement::prepare(&number_path, format!("{number}\n").as_bytes())?.commit()?;
    crl_file
        .commit()
        .with_context(|| format!("--out {}", args.out.display()))?;

    println!(
        "wrote CRL number {number} listing {} revoked certificate{} to {}",
        revoked.len(),
        if revoked.len() == 1 { "" } else { "s" },
        args.out.display()
    );
    println!(
        "  next update: {} (publish a newer CRL before then)",
        text_time(next_update)?
    );
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, strum::IntoStaticStr)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
enum Status {
    Valid,
    Expired,
    Revoked,
}

impl Status {
    fn as_str(self) -> &'static str {
        self.into()
    }
}

#[derive(Debug, Serialize)]
struct ListEntry<'a> {
    serial: &'a str,
    identity: &'a str,
    dns: &'a [String],
    ips: &'a [IpAddr],
    not_before: UtcSeconds,
    not_after: UtcSeconds,
    issued_at: UtcSeconds,
    status: Status,
    revoked_at: Option<UtcSeconds>,
    reason: Option<&'a str>,
}

fn ca_list(args: &CaListArgs) -> anyhow::Result<()> {
    let issued: Vec<IssuedRecord> = read_jsonl(&args.ca.join(ISSUED))?;
    let revoked: Vec<RevokedRecord> = read_jsonl(&args.ca.join(REVOKED))?;
    let now = UtcSeconds::now();
    let entries: Vec<ListEntry<'_>> = issued
        .iter()
        .map(|record| {
            let revocation = revoked.iter().find(|entry| entry.serial == record.serial);
            let status = if revocation.is_some() {
                Status::Revoked
            } else if record.not_after <= now {
                Status::Expired
            } else {
                Status::Valid
            };
            ListEntry {
                serial: &record.serial,
                identity: &record.identity,
                dns: &record.dns,
                ips: &record.ips,
                not_before: record.not_before,
                not_after: record.not_after,
                issued_at: record.issued_at,
                status,
                revoked_at: revocation.map(|entry| entry.revoked_at),
                reason: revocation.map(|entry| entry.reason.as_str()),
            }
        })
        .collect();

    if args.json {
        println!("{}", serde_json::to_string_pretty(&entries)?);
        return Ok(());
    }
    if entries.is_empty() {
        println!("no certificates issued yet");
        return Ok(());
    }
    println!(
        "{:<32}  {:<8}  {:<20}  IDENTITY",
        "SERIAL", "STATUS", "NOT AFTER"
    );
    for entry in &entries {
        println!(
            "{:<32}  {:<8}  {:<20}  {}",
            entry.serial,
            entry.status.as_str(),
            entry.not_after.to_string(),
            entry.identity
        );
    }
    Ok(())
}

fn cert_request(args: &CertRequestArgs) -> anyhow::Result<()> {
    let dir = &args.dir;
    let (kind, name) = args.identity.kind_and_name()?;
    let files = LeafFiles::of(kind);
    let (key_path, csr_path) = (dir.join(files.key), dir.join(files.csr));
    refuse_existing("--dir", &[&key_path, &csr_path])?;
    let request = request_certificate(
        kind,
        name,
        args.trust_domain.as_deref(),
        &args.dns,
        &args.ip,
    )
    .map_err(|err| {
        let flag = match (&err, args.trust_domain.as_deref()) {
            (CertError::InvalidNodeName { .. } | CertError::InvalidSpiffeId { .. }, _) => {
                files.flag
            }
            (CertError::InvalidTrustDomain { .. }, Some(_)) => "--trust-domain",
            (CertError::InvalidTrustDomain { .. }, None) => "--client-id needs --trust-domain",
            (CertError::InvalidDnsName(_), _) => "--dns",
            _ => "cannot make the request",
        };
        anyhow!(err).context(flag)
    })?;
    std::fs::create_dir_all(dir)
        .with_context(|| format!("--dir: cannot create {}", dir.display()))?;
    write_new_file(&key_path, request.key_pem.as_bytes(), true)?;
    write_new_file(&csr_path, request.csr_pem.as_bytes(), false)?;
    sync_dir(dir)?;

    println!(
        "wrote {} (mode 0600; it stays here) and {}",
        key_path.display(),
        csr_path.display()
    );
    println!(
        "next: send {} to the region's CA operator, who runs \
         `patchwork ca sign --ca <ca-dir> --csr {} --out {} {} {name}`; \
         put the certificate back here as {}",
        csr_path.display(),
        files.csr,
        files.cert,
        files.flag,
        dir.join(files.cert).display()
    );
    if let (IdentityKind::Client, Some(trust_domain)) = (kind, &args.trust_domain) {
        println!(
            "then allow spiffe://{trust_domain}/client/{name} in the node's [api] clients, \
             with its roles"
        );
    }
    Ok(())
}

fn cert_renew(args: &CertRenewArgs) -> anyhow::Result<()> {
    let dir = &args.dir;
    // node.crt first, as before client certificates could be requested here.
    let kind = if dir.join(NODE_CERT).symlink_metadata().is_err()
        && dir.join(CLIENT_CERT).symlink_metadata().is_ok()
    {
        IdentityKind::Client
    } else {
        IdentityKind::Node
    };
    let files = LeafFiles::of(kind);
    let cert_path = dir.join(files.cert);
    let pem = std::fs::read(&cert_path)
        .with_context(|| format!("--dir: cannot read {}", cert_path.display()))?;
    let current = summarize_pem_cert(&pem).with_context(|| format!("{}", cert_path.display()))?;
    // The file says which kind of certificate it must be, so a misplaced one is not renewed
    // under the wrong name.
    let Some((identity, name)) = current.identity.as_ref().and_then(|id| {
        IdentityKind::of(id)
            .filter(|(found, _)| *found == kind)
            .map(|(_, name)| (id, name))
    }) else {
        bail!(
            "{}: the certificate has no {kind} identity spiffe://<trust-domain>/{kind}/<name>",
            cert_path.display()
        );
    };
    let (key_path, csr_path) = (dir.join(RENEW_KEY), dir.join(RENEW_CSR));
    // renew.key or renew.crt present means a renewal is under way (or half installed):
    // neither may be lost. Without them the last renewal was installed, and the request it
    // left behind is public and spent, so it is replaced.
    for pending in [RENEW_KEY, RENEW_CRT] {
        let path = dir.join(pending);
        if path.symlink_metadata().is_ok() {
            bail!(
                "--dir: {} already exists; refusing to overwrite: a renewal is under way — \
                 finish it (`mv {RENEW_KEY} {} && mv {RENEW_CRT} {} && rm {RENEW_CSR}` once \
                 the CA signed {RENEW_CSR}) or delete {RENEW_KEY}, {RENEW_CSR} and {RENEW_CRT} \
                 to start again",
                path.display(),
                files.key,
                files.cert
            );
        }
    }
    if csr_path.symlink_metadata().is_ok() {
        std::fs::remove_file(&csr_path).with_context(|| {
            format!(
                "--dir: cannot remove {} left by the last renewal",
                csr_path.display()
            )
        })?;
        println!("replacing {} left by the last renewal", csr_path.display());
    }
    let request = request_certificate(
        kind,
        name,
        Some(identity.trust_domain()),
        &current.dns_names,
        &current.ip_addresses,
    )
    .with_context(|| format!("{}: cannot request the same names", cert_path.display()))?;
    write_new_file(&key_path, request.key_pem.as_bytes(), true)?;
    write_new_file(&csr_path, request.csr_pem.as_bytes(), false)?;
    sync_dir(dir)?;

    println!(
        "wrote {} (mode 0600) and {} for {identity}",
        key_path.display(),
        csr_path.display()
    );
    println!(
        "the current certificate expires at {} ({} days left)",
        text_time(current.not_after)?,
        days_left(current.not_after)
    );
    println!("next:");
    println!(
        "  1. the CA operator signs it: \
         `patchwork ca sign --ca <ca-dir> --csr {RENEW_CSR} --out {RENEW_CRT} {} {name}`",
        files.flag
    );
    println!(
        "  2. in {}: `mv {RENEW_KEY} {} && mv {RENEW_CRT} {} && rm {RENEW_CSR}`",
        dir.display(),
        files.key,
        files.cert
    );
    match kind {
        IdentityKind::Node => {
            println!("  3. reload the node: `patchwork reload --config <node.toml>`");
        }
        IdentityKind::Client => println!(
            "  3. restart the client with them; the node allows it by identity, which is unchanged"
        ),
    }
    Ok(())
}

#[derive(Debug, Serialize)]
struct CertificateView {
    subject: String,
    issuer: String,
    serial: String,
    identity: Option<String>,
    dns_names: Vec<String>,
    ip_addresses: Vec<IpAddr>,
    not_before: UtcSeconds,
    not_after: UtcSeconds,
    days_left: i64,
    is_ca: bool,
    server_auth: bool,
    client_auth: bool,
}

#[derive(Debug, Serialize)]
struct CrlView {
    issuer: String,
    this_update: UtcSeconds,
    next_update: Option<UtcSeconds>,
    crl_number: Option<u64>,
    revoked_serials: Vec<String>,
}

fn cert_inspect(args: &CertInspectArgs) -> anyhow::Result<()> {
    let path = &args.file;
    let pem = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    match certs_from_pem(&pem) {
        Ok(certs) => {
            let Some(first) = certs.first() else {
                bail!("{}: no certificate found", path.display());
            };
            let summary =
                summarize_cert_der(first).with_context(|| format!("{}", path.display()))?;
            let view = certificate_view(&summary)?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&view)?);
            } else {
                if certs.len() > 1 {
                    println!(
                        "{} holds {} certificates; this is the first",
                        path.display(),
                        certs.len()
                    );
                }
                print_certificate(&view);
            }
        }
        Err(CertError::NoCertificateInPem) => {
            let crls = crls_from_pem(&pem)
                .map_err(|_| anyhow!("{}: no certificate or crl found", path.display()))?;
            let Some(first) = crls.first() else {
                bail!("{}: no crl found", path.display());
            };
            let summary =
                summarize_crl_der(first).with_context(|| format!("{}", path.display()))?;
            let view = crl_view(&summary)?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&view)?);
            } else {
                print_crl(&view);
            }
        }
        Err(err) => return Err(anyhow!(err).context(format!("{}", path.display()))),
    }
    Ok(())
}

fn certificate_view(summary: &CertificateSummary) -> anyhow::Result<CertificateView> {
    Ok(CertificateView {
        subject: summary.subject.clone(),
        issuer: summary.issuer.clone(),
        serial: summary.serial_hex.clone(),
        identity: summary.identity.as_ref().map(ToString::to_string),
        dns_names: summary.dns_names.clone(),
        ip_addresses: summary.ip_addresses.clone(),
        not_before: UtcSeconds::new(summary.not_before)?,
        not_after: UtcSeconds::new(summary.not_after)?,
        days_left: days_left(summary.not_after),
        is_ca: summary.is_ca,
        server_auth: summary.server_auth,
        client_auth: summary.client_auth,
    })
}

fn print_certificate(view: &CertificateView) {
    let list = |items: Vec<String>| {
        if items.is_empty() {
            "-".to_owned()
        } else {
            items.join(", ")
        }
    };
    println!("subject:      {}", view.subject);
    println!("issuer:       {}", view.issuer);
    println!("serial:       {}", view.serial);
    println!(
        "identity:     {}",
        view.identity
            .as_deref()
            .unwrap_or("- (no single spiffe URI SAN)")
    );
    println!("dns names:    {}", list(view.dns_names.clone()));
    println!(
        "ip addresses: {}",
        list(view.ip_addresses.iter().map(ToString::to_string).collect())
    );
    println!("not before:   {}", view.not_before);
    println!("not after:    {}", view.not_after);
    println!(
        "days left:    {}{}",
        view.days_left,
        if view.days_left < 0 { " (expired)" } else { "" }
    );
    println!("is ca:        {}", view.is_ca);
    println!("server auth:  {}", view.server_auth);
    println!("client auth:  {}", view.client_auth);
}

fn crl_view(summary: &CrlSummary) -> anyhow::Result<CrlView> {
    Ok(CrlView {
        issuer: summary.issuer.clone(),
        this_update: UtcSeconds::new(summary.this_update)?,
        next_update: summary.next_update.map(UtcSeconds::new).transpose()?,
        crl_number: summary.crl_number,
        revoked_serials: summary.revoked_serials.clone(),
    })
}

fn print_crl(view: &CrlView) {
    println!("crl issuer:   {}", view.issuer);
    println!(
        "crl number:   {}",
        view.crl_number
            .map_or_else(|| "-".to_owned(), |n| n.to_string())
    );
    println!("this update:  {}", view.this_update);
    println!(
        "next update:  {}",
        view.next_update
            .map_or_else(|| "-".to_owned(), |at| at.to_string())
    );
    println!("revoked:      {}", view.revoked_serials.len());
    for serial in &view.revoked_serials {
        println!("  {serial}");
    }
}

fn load_ca(dir: &Path) -> anyhow::Result<CertificateAuthority> {
    let (cert_path, key_path) = (dir.join(CA_CERT), dir.join(CA_KEY));
    let cert = std::fs::read_to_string(&cert_path)
        .with_context(|| format!("--ca: cannot read {}", cert_path.display()))?;
    let key = std::fs::read_to_string(&key_path)
        .with_context(|| format!("--ca: cannot read {}", key_path.display()))?;
    CertificateAuthority::from_pem(&cert, &key)
        .with_context(|| format!("--ca {}: cannot load the CA", dir.display()))
}

/// The first certificate of a PEM file, summarised.
fn summarize_pem_cert(pem: &[u8]) -> anyhow::Result<CertificateSummary> {
    let certs = certs_from_pem(pem)?;
    let first = certs.first().context("no certificate found")?;
    Ok(summarize_cert_der(first)?)
}

fn check_days(flag: &str, days: u32, max: u32) -> anyhow::Result<()> {
    if (1..=max).contains(&days) {
        Ok(())
    } else {
        bail!("{flag} {days} is out of range, expected 1..={max}")
    }
}

fn refuse_existing(flag: &str, paths: &[&Path]) -> anyhow::Result<()> {
    for path in paths {
        if path.symlink_metadata().is_ok() {
            bail!(
                "{flag}: {} already exists; refusing to overwrite",
                path.display()
            );
        }
    }
    Ok(())
}

fn read_jsonl<T: DeserializeOwned>(path: &Path) -> anyhow::Result<Vec<T>> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "cannot read {} (is the folder a CA made by `patchwork ca init`?)",
            path.display()
        )
    })?;
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(index, line)| {
            serde_json::from_str(line)
                .with_context(|| format!("{} line {}", path.display(), index + 1))
        })
        .collect()
}

/// Appends one JSON line and fsyncs it; the file must already exist (made by `ca init`).
fn append_jsonl<T: Serialize>(path: &Path, record: &T) -> anyhow::Result<()> {
    let mut line = serde_json::to_string(record)?;
    line.push('\n');
    let mut file = OpenOptions::new()
        .append(true)
        .open(path)
        .with_context(|| {
            format!(
                "cannot open {} (is the folder a CA made by `patchwork ca init`?)",
                path.display()
            )
        })?;
    file.write_all(line.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot append to {}", path.display()))
}

/// A file's new contents, written and fsynced in a 0644 temp file in the same folder,
/// waiting to be renamed over it. Readers see the old file or the new one, never a part.
struct Replacement {
    temp: tempfile::NamedTempFile,
    path: PathBuf,
    dir: PathBuf,
}

impl Replacement {
    fn prepare(path: &Path, contents: &[u8]) -> anyhow::Result<Replacement> {
        let dir = match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        let mut builder = tempfile::Builder::new();
        builder.prefix(".patchwork-");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            builder.permissions(std::fs::Permissions::from_mode(0o644));
        }
        let mut temp = builder
            .tempfile_in(dir)
            .with_context(|| format!("cannot create a temporary file in {}", dir.display()))?;
        temp.write_all(contents)
            .and_then(|()| temp.as_file().sync_all())
            .with_context(|| format!("cannot write a temporary file in {}", dir.display()))?;
        Ok(Replacement {
            temp,
            path: path.to_owned(),
            dir: dir.to_owned(),
        })
    }

    /// Renames the new contents into place and makes the rename durable.
    fn commit(self) -> anyhow::Result<()> {
        self.temp
            .persist(&self.path)
            .map_err(|err| err.error)
            .with_context(|| format!("cannot replace {}", self.path.display()))?;
        sync_dir(&self.dir)
    }
}

/// Makes created and renamed entries in `dir` durable.
fn sync_dir(dir: &Path) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        std::fs::File::open(dir)
            .and_then(|handle| handle.sync_all())
            .with_context(|| format!("cannot sync {}", dir.display()))?;
    }
    Ok(())
}

/// A moment in UTC to the second, as certificates and CRLs carry them;
/// written RFC 3339 (`2026-12-07T08:34:02Z`) in the CA's records, JSON
/// output and text, and read back in any RFC 3339 form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct UtcSeconds(OffsetDateTime);

impl UtcSeconds {
    fn new(value: OffsetDateTime) -> anyhow::Result<Self> {
        let value = value.to_offset(time::UtcOffset::UTC);
        value
            .replace_nanosecond(0)
            .map(UtcSeconds)
            .with_context(|| format!("time {value} is out of range"))
    }

    fn now() -> Self {
        let now = OffsetDateTime::now_utc();
        UtcSeconds(now.replace_nanosecond(0).unwrap_or(now))
    }
}

impl std::fmt::Display for UtcSeconds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = self
            .0
            .format(&time::format_description::well_known::Rfc3339)
            .map_err(|_| std::fmt::Error)?;
        f.write_str(&text)
    }
}

impl Serialize for UtcSeconds {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for UtcSeconds {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        let parsed = OffsetDateTime::parse(&text, &time::format_description::well_known::Rfc3339)
            .map_err(|e| serde::de::Error::custom(format!("{text:?}: {e}")))?;
        UtcSeconds::new(parsed).map_err(|e| serde::de::Error::custom(e.to_string()))
    }
}

fn text_time(value: OffsetDateTime) -> anyhow::Result<String> {
    Ok(UtcSeconds::new(value)?.to_string())
}

/// Whole days until `not_after`, rounded down: negative as soon as it has expired.
fn days_left(not_after: OffsetDateTime) -> i64 {
    (not_after - OffsetDateTime::now_utc())
        .whole_seconds()
        .div_euclid(SECONDS_PER_DAY)
}

fn names_text(summary: &CertificateSummary) -> String {
    summary
        .dns_names
        .iter()
        .cloned()
        .chain(summary.ip_addresses.iter().map(ToString::to_string))
        .collect::<Vec<_>>()
        .join(", ")
}

fn read_pem_file(flag: &str, path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("{flag}: cannot read {}", path.display()))
}

fn cert_verify(args: &CertVerifyArgs) -> anyhow::Result<()> {
    let chain = patchwork_certs::certs_from_pem(&read_pem_file("FILE", &args.file)?)
        .with_context(|| format!("{}", args.file.display()))?;
    let mut cas = Vec::new();
    for path in &args.trust {
        cas.extend(
            patchwork_certs::certs_from_pem(&read_pem_file("--trust", path)?)
                .with_context(|| format!("--trust: {}", path.display()))?,
        );
    }
    let mut crls = Vec::new();
    for path in &args.crl {
        crls.extend(
            patchwork_certs::crls_from_pem(&read_pem_file("--crl", path)?)
                .with_context(|| format!("--crl: {}", path.display()))?,
        );
    }
    let expected: Option<patchwork_certs::SpiffeId> = match &args.identity {
        Some(text) => Some(text.parse().context("--identity")?),
        None => None,
    };
    let bundle = patchwork_certs::TrustBundle::new(cas, crls).context("--trust")?;
    let identity = bundle
        .verify_client_chain(&chain, rustls::pki_types::UnixTime::now())
        .with_context(|| format!("{} is refused", args.file.display()))?;
    if let Some(expected) = expected
        && identity != expected
    {
        bail!(
            "{} is refused: it is {identity}, not {expected}",
            args.file.display()
        );
    }
    println!("{}: ok, {identity}", args.file.display());
    Ok(())
}
