//! `patchwork quickstart`: a folder with everything one node needs to run on
//! this machine — a CA, the node's certificate, a client certificate for a
//! portal, and a config — so an operator can try the node in a minute. Real
//! deployments issue certificates from their region's CA instead.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use patchwork_certs::{CaParams, CertificateAuthority, LeafParams, SpiffeId};

#[derive(Debug, clap::Args)]
pub struct QuickstartArgs {
    /// The folder to create (must not exist, or be empty).
    #[arg(long)]
    pub dir: PathBuf,
    /// The trust domain of the region's CA.
    #[arg(long, default_value = "patchwork")]
    pub trust_domain: String,
    /// The node's name within the trust domain.
    #[arg(long, default_value = "local")]
    pub node_id: String,
    /// Shown next to this node's answers.
    #[arg(long, default_value = "Local Council")]
    pub display_name: String,
    /// Where the node listens.
    #[arg(long, default_value = "127.0.0.1:7443")]
    pub listen: SocketAddr,
}

/// Creates a file that must not exist yet; secrets get mode 0600 from the
/// start (never written first and narrowed later).
pub fn write_new_file(path: &Path, contents: &[u8], secret: bool) -> anyhow::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if secret { 0o600 } else { 0o644 });
    }
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(contents)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.sync_all()
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

pub fn run(args: &QuickstartArgs) -> anyhow::Result<ExitCode> {
    let dir = &args.dir;
    if dir.exists()
        && std::fs::read_dir(dir)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        anyhow::bail!(
            "--dir: {} exists and is not empty; quickstart never overwrites",
            dir.display()
        );
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let ca = CertificateAuthority::generate(&CaParams {
        trust_domain: args.trust_domain.clone(),
        display_name: format!("{} CA", args.display_name),
        validity_days: 3650,
    })?;
    let node_identity = SpiffeId::node(&args.trust_domain, &args.node_id)?;
    let mut ips = vec![IpAddr::V4(Ipv4Addr::LOCALHOST)];
    if !args.listen.ip().is_unspecified() && !ips.contains(&args.listen.ip()) {
        ips.push(args.listen.ip());
    }
    let node = ca.issue(&LeafParams {
        identity: node_identity.clone(),
        dns_names: vec!["localhost".into()],
        ip_addresses: ips,
        validity_days: 30,
    })?;
    let portal_identity = SpiffeId::client(&args.trust_domain, "portal")?;
    let portal = ca.issue(&LeafParams {
        identity: portal_identity.clone(),
        dns_names: Vec::new(),
        ip_addresses: Vec::new(),
        validity_days: 30,
    })?;
    write_new_file(&dir.join("ca.crt"), ca.cert_pem().as_bytes(), false)?;
    write_new_file(&dir.join("ca.key"), ca.key_pem().as_bytes(), true)?;
    write_new_file(&dir.join("node.crt"), node.cert_pem.as_bytes(), false)?;
    write_new_file(&dir.join("node.key"), node.key_pem.as_bytes(), true)?;
    write_new_file(&dir.join("portal.crt"), portal.cert_pem.as_bytes(), false)?;
    write_new_file(&dir.join("portal.key"), portal.key_pem.as_bytes(), true)?;
    let config = format!(
        r#"# Made by `patchwork quickstart`; see deploy/node.example.toml for every key.
[node]
display_name = "{display_name}"
data_dir = "data"
default_id_scheme = "nhs"

[tls]
cert_file = "node.crt"
key_file = "node.key"
trust_bundle = ["ca.crt"]

[api]
listen = "{listen}"
clients = [
  {{ identity = "{portal_identity}", roles = ["records", "lookup", "watch"] }},
]
"#,
        display_name = args.display_name.replace('"', "'"),
        listen = args.listen,
    );
    write_new_file(&dir.join("node.toml"), config.as_bytes(), false)?;
    println!(
        "created {} with a CA, certificates for {node_identity} and {portal_identity}, and node.toml",
        dir.display()
    );
    println!(
        "start the node:   patchwork serve --config {}",
        dir.join("node.toml").display()
    );
    Ok(ExitCode::SUCCESS)
}
