//! `patchwork config init`: writes a complete, commented `node.toml` for a
//! named node and its peers, the starting point of a real deployment (where
//! `quickstart` makes a throwaway one). The file is parsed and validated
//! before it is written, and an existing file is never overwritten.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use patchwork_certs::SpiffeId;

use patchwork_server::base::config::{NodeConfig, parse_listen_address};

#[derive(Debug, clap::Args)]
pub struct InitArgs {
    /// The config file to write; refused if it exists.
    #[arg(long)]
    pub out: PathBuf,
    /// This node's identity, as in its certificate's URI SAN, e.g.
    /// spiffe://surrey.patchwork.uk/node/surrey.
    #[arg(long)]
    pub identity: SpiffeId,
    /// Shown to practitioners next to this node's answers.
    #[arg(long)]
    pub display_name: String,
    /// Where the API listens: an IP address and port (0.0.0.0:7443 for every
    /// interface); host names are not accepted.
    #[arg(long, default_value = "0.0.0.0:7443", value_parser = parse_listen_address)]
    pub listen: SocketAddr,
    /// Where the store lives (created 0700 at the first start).
    #[arg(long, default_value = "/var/lib/patchwork")]
    pub data_dir: PathBuf,
    /// This node's certificate (PEM).
    #[arg(long, default_value = "/etc/patchwork/node.crt")]
    pub cert: PathBuf,
    /// This node's private key (PEM, chmod 600).
    #[arg(long, default_value = "/etc/patchwork/node.key")]
    pub key: PathBuf,
    /// A CA certificate to trust (PEM); repeat for every region trusted.
    #[arg(long = "trust", required = true)]
    pub trust_bundle: Vec<PathBuf>,
    /// A CRL to check certificates against (PEM); repeat for each CA.
    #[arg(long = "crl")]
    pub crl_files: Vec<PathBuf>,
    /// A match-key secret shared with a group of nodes, NAME=FILE (64+ hex
    /// digits, chmod 600); repeat for each group. Peers use the first unless
    /// their --peer names another.
    #[arg(long = "key-set", value_parser = parse_key_set)]
    pub key_sets: Vec<(String, PathBuf)>,
    /// A peer: "NAME=IDENTITY@HOST:PORT", optionally followed by "#KEY_SET",
    /// e.g. "Brighton & Hove=spiffe://brighton.patchwork.uk/node/brighton@patchwork.brighton-hove.gov.uk:7443".
    /// Its agreement starts at child and adult safeguarding, standard
    /// records, 600 queries a minute: review it in the file.
    #[arg(long = "peer", value_parser = parse_peer)]
    pub peers: Vec<PeerArg>,
}

/// One `--peer`.
#[derive(Debug, Clone)]
pub struct PeerArg {
    name: String,
    identity: SpiffeId,
    address: String,
    key_set: Option<String>,
}

fn parse_key_set(text: &str) -> Result<(String, PathBuf), String> {
    match text.split_once('=') {
        Some((name, file)) if !name.is_empty() && !file.is_empty() => {
            Ok((name.to_owned(), PathBuf::from(file)))
        }
        _ => Err(format!("{text:?} must be NAME=FILE")),
    }
}

fn parse_peer(text: &str) -> Result<PeerArg, String> {
    let shape = || format!("{text:?} must be NAME=IDENTITY@HOST:PORT[#KEY_SET]");
    let (name, rest) = text.split_once('=').ok_or_else(shape)?;
    let (rest, key_set) = match rest.rsplit_once('#') {
        Some((rest, set)) => (rest, Some(set.to_owned())),
        None => (rest, None),
    };
    let (identity, address) = rest.rsplit_once('@').ok_or_else(shape)?;
    let identity: SpiffeId = identity
        .parse()
        .map_err(|e| format!("{text:?}: identity: {e}"))?;
    Ok(PeerArg {
        name: name.trim().to_owned(),
        identity,
        address: address.to_owned(),
        key_set,
    })
}

/// A TOML string literal (quoted and escaped).
fn quoted(text: &str) -> String {
    toml::Value::String(text.to_owned()).to_string()
}

fn path(path: &Path) -> String {
    quoted(&path.display().to_string())
}

fn paths(list: &[PathBuf]) -> String {
    let items: Vec<String> = list.iter().map(|p| path(p)).collect();
    format!("[{}]", items.join(", "))
}

/// The config text for `args` (not yet validated).
pub(crate) fn render(args: &InitArgs) -> String {
    let mut out = format!(
        r#"# Patchwork node configuration for {identity}, made by `patchwork config init`.
# deploy/node.example.toml documents every key, with its default. Check this
# file, and every file it names, before starting:
#     patchwork config check --config {config}
# Relative paths are taken from the folder this file is in.

[node]
# Shown to practitioners next to this node's answers (1-100 characters).
display_name = {display_name}
# The store: personal data. Created 0700 if missing; the node refuses to start
# if group or others have any access to it.
data_dir = {data_dir}
# The scheme of national identifiers given without one ("nhs": England).
default_id_scheme = "nhs"

[tls]
# This node's certificate: its URI SAN must be {identity}
# (make a key and request with `patchwork cert request`, have the region's CA
# sign it with `patchwork ca sign`).
cert_file = {cert}
# This node's private key: chmod 600, owned by the node's user.
key_file = {key}
# The CA certificates this node trusts: its own region's and each region it
# has agreed to trust.
trust_bundle = {trust}
# The CRLs those CAs publish. Once any is listed, every chain needs a current
# CRL from its issuer (fail closed): republish before nextUpdate.
crl_files = {crls}

[api]
# Where the API listens: an IP address and port, never a host name.
listen = "{listen}"
# Local clients (a portal, a case system) by certificate identity and roles
# (records, lookup, admin, watch). The node's own identity, used by the
# patchwork CLI on this machine, has every role.
clients = [
  # {{ identity = "spiffe://{domain}/client/portal", roles = ["records", "lookup", "watch"] }},
]

[metrics]
# Prometheus metrics over plain HTTP: keep them on loopback.
enabled = true
listen = "127.0.0.1:9464"

[federation]
# How long a lookup waits for peers (ms).
default_deadline_ms = 2000
"#,
        identity = args.identity,
        config = args.out.display(),
        display_name = quoted(args.display_name.trim()),
        data_dir = path(&args.data_dir),
        cert = path(&args.cert),
        key = path(&args.key),
        trust = paths(&args.trust_bundle),
        crls = paths(&args.crl_files),
        listen = args.listen,
        domain = args.identity.trust_domain(),
    );
    if !args.key_sets.is_empty() {
        out.push_str(
            "\n# Match-key secrets: one per group of nodes, the same file on every node of\n\
             # the group (64+ hex digits, e.g. `openssl rand -hex 32`), chmod 600.\n",
        );
    }
    for (name, file) in &args.key_sets {
        out.push_str(&format!(
            "[[federation.key_sets]]\nname = {}\nsecret_file = {}\n\n",
            quoted(name),
            path(file)
        ));
    }
    if !args.peers.is_empty() {
        out.push_str(
            "# Peers: each entry is this node's side of the agreement. Review the\n\
             # purposes, sensitivities and rate limit against the signed agreement.\n",
        );
    }
    let first_set = args.key_sets.first().map(|(name, _)| name.clone());
    for peer in &args.peers {
        let key_set = peer
            .key_set
            .clone()
            .or_else(|| first_set.clone())
            .unwrap_or_default();
        out.push_str(&format!(
            "[[federation.peers]]\nidentity = {}\nname = {}\n\
             # Its host name must be in the peer's certificate.\naddress = {}\n\
             key_set = {}\n\
             purposes = [\"child-safeguarding\", \"adult-safeguarding\"]\n\
             sensitivities = [\"standard\"]\nrate_limit_per_minute = 600\n\n",
            quoted(&peer.identity.to_string()),
            quoted(&peer.name),
            quoted(&peer.address),
            quoted(&key_set),
        ));
    }
    out
}

pub(crate) fn run(args: &InitArgs) -> anyhow::Result<ExitCode> {
    if args.identity.node_name().is_none() {
        anyhow::bail!(
            "--identity: {} must be a node identity spiffe://<trust-domain>/node/<name>",
            args.identity
        );
    }
    if args.out.exists() {
        anyhow::bail!(
            "--out: {} exists; config init never overwrites",
            args.out.display()
        );
    }
    let text = render(args);
    // Never write a file `config check` would refuse for its own keys.
    let base = args.out.parent().unwrap_or_else(|| Path::new("."));
    NodeConfig::from_toml(&text, base).context("the config init would write is invalid")?;
    crate::base::quickstart::write_new_file(&args.out, text.as_bytes(), false)?;
    println!("wrote {} for {}", args.out.display(), args.identity);
    println!(
        "check it once its files are in place: patchwork config check --config {}",
        args.out.display()
    );
    Ok(ExitCode::SUCCESS)
}
