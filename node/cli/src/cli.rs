//! The `patchwork` command line: the binary's edge, where errors become one
//! clear line and an exit status. Commands that talk to a node do so over
//! gRPC with the node's config (sled allows one process per data folder, so
//! nothing here opens the store of a running node).
//!
//! Exit status: 0 success; 1 the command ran and failed (bad rows, refused,
//! unreachable, bad config); 2 the command line itself was wrong.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use patchwork_proto::v1::{self, admin_client::AdminClient, directory_client::DirectoryClient};
use tokio_stream::wrappers::ReceiverStream;

use crate::base::output::{date_text, enum_name, lookup_json, lookup_text};
use crate::base::signals::shutdown_signal;
use crate::work::client::connect;
use crate::work::csv_rows::{CrlfAsLf, CsvKind, CsvRows, column_of};
use patchwork_server::base::config::{LogFormat, NodeConfig};
use patchwork_server::base::validate::{FieldError, parse_iso_date};

/// The version and the commit it was built from (`node/build.rs`; "unknown"
/// when built without git), for `--version` and `patchwork version`.
pub(crate) const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("PATCHWORK_COMMIT"),
    ")"
);

#[derive(Debug, Parser)]
#[command(
    name = "patchwork",
    version = VERSION,
    about = "Patchwork node: who else is working with this person?"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a node until SIGTERM or Ctrl-C.
    Serve(ServeArgs),
    /// Import a CSV export into the running node.
    Import(ImportArgs),
    /// Look a person up: "who else is working with this person?"
    Lookup(LookupArgs),
    /// What the running node holds.
    Stats(StatsArgs),
    /// Write a node's config file, or check one and the files it names.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// A region's certificate authority: create, sign, revoke, publish CRLs.
    Ca {
        #[command(subcommand)]
        command: crate::work::operator::CaCommand,
    },
    /// This node's key, certificate requests and certificates.
    Cert {
        #[command(subcommand)]
        command: crate::work::operator::CertCommand,
    },
    /// Make the running node re-read its certificate, key, trust bundle and
    /// CRLs (as SIGHUP does). A bad file is refused and nothing changes.
    Reload(ConfigArg),
    /// How long the node's certificate, trusted CAs and CRLs have left.
    Trust {
        #[command(subcommand)]
        command: TrustCommand,
    },
    /// The audit log: check nobody altered it; subject-access reports.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Erase a person and everything the node holds that names them
    /// (audited first; the audit keeps the id and the reason only).
    Erase {
        #[command(subcommand)]
        command: EraseCommand,
    },
    /// The retention schedule (`[retention]` in the config).
    Retention {
        #[command(subcommand)]
        command: RetentionCommand,
    },
    /// Write a consistent backup of the running node's store to a file.
    Backup(BackupArgs),
    /// Restore a backup into the empty store folder of a stopped node, then
    /// check its indexes and audit log.
    Restore(RestoreArgs),
    /// Work on the store of a stopped node.
    Store {
        #[command(subcommand)]
        command: StoreCommand,
    },
    /// Make a folder with a CA, certificates and a config for a local node to try.
    Quickstart(crate::base::quickstart::QuickstartArgs),
    /// Write synthetic (fake, realistic-looking) records for demos and load tests.
    Synth(SynthArgs),
    /// A throwaway federation of three councils on this machine: start here.
    Demo(crate::demo::DemoArgs),
    /// Print the version and the commit this binary was built from.
    Version,
    /// Print a shell completion script, e.g. `patchwork completions bash >
    /// /etc/bash_completion.d/patchwork`.
    Completions(CompletionsArgs),
    /// Print the man page (roff), or write one page per subcommand to a folder.
    Manpage(ManpageArgs),
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub struct ManpageArgs {
    /// Write patchwork.1 and a page per subcommand (patchwork-lookup.1,
    /// patchwork-ca-sign.1, ...) into this folder instead of printing
    /// patchwork.1 to stdout.
    #[arg(long)]
    pub out_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct SynthArgs {
    /// Only persons for now.
    #[arg(value_enum)]
    pub kind: SynthKind,
    /// How many records to write.
    #[arg(long, default_value_t = 1000)]
    pub count: u64,
    /// The random seed: the same seed writes the same records.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// The CSV file to create.
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum SynthKind {
    Persons,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Check a config and every file it names, as `serve` checks them before
    /// it listens, without starting.
    Check(ConfigArg),
    /// Write a complete, commented node.toml for a named node and its peers.
    Init(Box<crate::work::config_init::InitArgs>),
}

#[derive(Debug, Subcommand)]
pub enum TrustCommand {
    /// Days left for the node's certificate, each trusted CA and each CRL.
    Status(StatsArgs),
}

#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Check that every record has its index entries and every index entry
    /// its record (e.g. after a crash). Needs the node stopped.
    Check(ConfigArg),
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Log one JSON object per line, whatever `[log] format` says.
    #[arg(long)]
    pub(crate) log_json: bool,
}

#[derive(Debug, Args)]
pub struct ConfigArg {
    /// The node's config file.
    #[arg(long, short, default_value = "node.toml")]
    pub config: PathBuf,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// What the file holds.
    #[arg(value_enum)]
    pub kind: CsvKind,
    /// The CSV file to import (a header row, then one record per row; see
    /// deploy/examples for each kind's columns).
    #[arg(long, short)]
    pub file: PathBuf,
    /// The node's config file.
    #[arg(long, short, default_value = "node.toml")]
    pub config: PathBuf,
    /// Check every row, write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Import the good rows even if some are bad (the bad are reported).
    /// Without it, one bad row means nothing is imported.
    #[arg(long)]
    pub skip_bad_rows: bool,
    /// The file is the case system's full export (persons or involvements):
    /// delete what the node holds and the file no longer has, after writing
    /// it (audited; a person is erased with everything naming them). Refused
    /// if more than `import.mirror_max_share` would go (a truncated export).
    #[arg(long, conflicts_with = "skip_bad_rows")]
    pub mirror: bool,
    /// With --mirror: delete even more than `import.mirror_max_share`.
    #[arg(long, requires = "mirror")]
    pub force: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Never draw a progress bar.
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct LookupArgs {
    /// The node's config file.
    #[arg(long, short, default_value = "node.toml")]
    pub config: PathBuf,
    /// The practitioner asking (their id on this node).
    #[arg(long = "as", value_name = "PRACTITIONER_ID")]
    pub requester: String,
    /// The lawful basis of the lookup.
    #[arg(long, value_enum)]
    pub basis: patchwork_store::model::LawfulBasis,
    /// Why you are looking (10-500 characters, no case notes).
    #[arg(long)]
    pub reason: String,
    /// Given (first) name(s), as the person's records spell them.
    #[arg(long)]
    pub given: Option<String>,
    /// Family name (surname).
    #[arg(long)]
    pub family: Option<String>,
    /// Date of birth, YYYY-MM-DD.
    #[arg(long)]
    pub dob: Option<String>,
    /// Postcode, e.g. "BN1 1AA".
    #[arg(long)]
    pub postcode: Option<String>,
    /// National identifier, e.g. an NHS number.
    #[arg(long)]
    pub national_id: Option<String>,
    /// Its scheme (default: the node's).
    #[arg(long)]
    pub scheme: Option<String>,
    /// Ask only this node.
    #[arg(long)]
    pub local_only: bool,
    /// Also the team around the family: linked members' involvements,
    /// marked by relationship.
    #[arg(long)]
    pub include_family: bool,
    /// Print the answer as JSON (every council's outcome and involvements)
    /// instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct StatsArgs {
    /// The node's config file.
    #[arg(long, short, default_value = "node.toml")]
    pub config: PathBuf,
    /// Print the result as JSON (for scripts) instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Runs the command line; `main` only calls this.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    patchwork_certs::install_crypto_provider();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {}", error_text(&error));
            ExitCode::FAILURE
        }
    }
}

fn error_text(error: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
    }
    parts.join(": ")
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve(args) => serve(&args).await,
        Command::Import(args) => import_command(args).await,
        Command::Lookup(args) => lookup_command(args).await,
        Command::Stats(args) => stats_command(args).await,
        Command::Config {
            command: ConfigCommand::Check(args),
        } => config_check(&args.config),
        Command::Config {
            command: ConfigCommand::Init(args),
        } => crate::work::config_init::run(&args),
        Command::Store {
            command: StoreCommand::Check(args),
        } => store_check(&args.config),
        Command::Reload(args) => reload_command(&args.config).await,
        Command::Backup(args) => backup_command(&args).await,
        Command::Restore(args) => restore_command(&args),
        Command::Audit { command } => audit_command(command).await,
        Command::Erase { command } => erase_command(command).await,
        Command::Retention { command } => retention_command(command).await,
        Command::Trust {
            command: TrustCommand::Status(args),
        } => trust_status_command(args).await,
        Command::Ca { command } => crate::work::operator::run_ca(command),
        Command::Cert { command } => crate::work::operator::run_cert(command),
        Command::Quickstart(args) => crate::base::quickstart::run(&args),
        Command::Synth(args) => synth_command(&args),
        Command::Demo(args) => crate::demo::run(args).await,
        Command::Version => {
            println!("patchwork {VERSION}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Completions(args) => {
            use clap::CommandFactory;
            clap_complete::generate(
                args.shell,
                &mut Cli::command(),
                "patchwork",
                &mut std::io::stdout(),
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Manpage(args) => manpage_command(&args),
    }
}

/// `patchwork manpage`: the pages come from the same clap definitions as
/// `--help`, so they cannot disagree with it.
fn manpage_command(args: &ManpageArgs) -> anyhow::Result<ExitCode> {
    use clap::CommandFactory;
    let command = Cli::command();
    match &args.out_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("--out-dir: cannot create {}", dir.display()))?;
            clap_mangen::generate_to(command, dir)
                .with_context(|| format!("--out-dir: cannot write pages to {}", dir.display()))?;
        }
        None => {
            let mut out = Vec::new();
            clap_mangen::Man::new(command)
                .render(&mut out)
                .context("cannot render the man page")?;
            std::io::Write::write_all(&mut std::io::stdout(), &out)
                .context("cannot write the man page to stdout")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn load_config(path: &Path) -> anyhow::Result<NodeConfig> {
    Ok(NodeConfig::load(path)?)
}

/// Installs the tracing subscriber (only the binary does): text or JSON
/// lines on stderr, `RUST_LOG` to filter.
pub(crate) fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour only for a person at a terminal; files and journald get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn serve(args: &ServeArgs) -> anyhow::Result<ExitCode> {
    let config = load_config(&args.config.config)?;
    init_logging(if args.log_json {
        LogFormat::Json
    } else {
        config.log.format
    });
    let listener = tokio::net::TcpListener::bind(config.api.listen)
        .await
        .with_context(|| format!("api.listen: cannot listen on {}", config.api.listen))?;
    patchwork_server::run(config, listener, shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}

fn synth_command(args: &SynthArgs) -> anyhow::Result<ExitCode> {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&args.out)
        .with_context(|| format!("--out: cannot create {}", args.out.display()))?;
    let mut out = std::io::BufWriter::new(file);
    match args.kind {
        SynthKind::Persons => crate::work::synth::write_persons(&mut out, args.count, args.seed)?,
    }
    std::io::Write::flush(&mut out)?;
    Ok(ExitCode::SUCCESS)
}

/// Each key set's fingerprint, to compare with the same line on its peers.
fn print_fingerprints(fingerprints: &[v1::KeySetFingerprint]) {
    for f in fingerprints {
        println!(
            "  key set {}: fingerprint {} (the same on every node sharing it)",
            f.key_set, f.fingerprint
        );
    }
}

fn print_trust_status(status: &v1::TrustStatus, json: bool) {
    if json {
        let value = serde_json::json!({
            "identity": status.identity,
            "generation": status.generation,
            "key_set_fingerprints": status.key_set_fingerprints.iter().map(|f| serde_json::json!({
                "key_set": f.key_set,
                "fingerprint": f.fingerprint,
            })).collect::<Vec<_>>(),
            "expiries": status.expiries.iter().map(|e| serde_json::json!({
                "what": e.what,
                "not_after_unix_seconds": e.not_after_unix_seconds,
                "days_left": e.days_left,
            })).collect::<Vec<_>>(),
        });
        println!("{value}");
        return;
    }
    println!(
        "{} (trust generation {})",
        status.identity, status.generation
    );
    for expiry in &status.expiries {
        let warning =
            patchwork_server::transport::tls::expiry_warning(&expiry.what, expiry.days_left)
                .map(|advice| format!("  <- {advice}"))
                .unwrap_or_default();
        println!("  {}: {} days left{warning}", expiry.what, expiry.days_left);
    }
    print_fingerprints(&status.key_set_fingerprints);
}

async fn reload_command(path: &Path) -> anyhow::Result<ExitCode> {
    let config = load_config(path)?;
    let mut client = AdminClient::new(crate::work::client::connect_for_reload(&config).await?);
    let reply = client
        .reload(v1::ReloadRequest {})
        .await
        .map_err(status_error)?
        .into_inner();
    println!("reloaded");
    for change in &reply.changes {
        println!("  {change}");
    }
    if !reply.needs_restart.is_empty() {
        println!(
            "changed in the file, in force after a restart: {}",
            reply.needs_restart.join(", ")
        );
    }
    if let Some(status) = &reply.status {
        print_trust_status(status, false);
    }
    Ok(ExitCode::SUCCESS)
}

async fn trust_status_command(args: StatsArgs) -> anyhow::Result<ExitCode> {
    let config = load_config(&args.config)?;
    let mut client = AdminClient::new(connect(&config).await?);
    let status = client
        .get_trust_status(v1::GetTrustStatusRequest {})
        .await
        .map_err(status_error)?
        .into_inner();
    print_trust_status(&status, args.json);
    Ok(ExitCode::SUCCESS)
}

/// The store of a stopped node; `instead` is what to do while the node
/// runs (beyond stopping it), for the message when it cannot be opened.
fn open_stopped_store(
    config: &NodeConfig,
    instead: &str,
) -> anyhow::Result<patchwork_store::Store> {
    let dir = config.store_dir();
    if !dir.exists() {
        bail!("node.data_dir: there is no store in {}", dir.display());
    }
    patchwork_store::Store::open(&dir, &config.store_options()).with_context(|| {
        format!(
            "cannot open the store in {} (is the node still running? stop it first{instead})",
            dir.display()
        )
    })
}

fn store_check(path: &Path) -> anyhow::Result<ExitCode> {
    let config = load_config(path)?;
    let store = open_stopped_store(&config, "")?;
    let problems = store.check_consistency()?;
    let counts = store.counts()?;
    for problem in &problems {
        eprintln!("problem: {problem}");
    }
    println!(
        "{}: {} persons, {} practitioners, {} organisations, {} involvements; {}",
        config.store_dir().display(),
        counts.persons,
        counts.practitioners,
        counts.organisations,
        counts.involvements,
        if problems.is_empty() {
            "consistent".to_owned()
        } else {
            format!("{} problem(s)", problems.len())
        }
    );
    Ok(if problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn config_check(path: &Path) -> anyhow::Result<ExitCode> {
    let config = load_config(path)?;
    // The same checks `serve` makes before it listens.
    let patchwork_server::Preflight {
        material, key_sets, ..
    } = patchwork_server::preflight(&config)?;
    println!(
        "config ok: {} ({}) listens on {}, {} local client(s), data in {}",
        config.node.display_name,
        material.own.identity(),
        config.api.listen,
        config.api.clients.len(),
        config.node.data_dir.display()
    );
    let now = time::OffsetDateTime::now_utc();
    for expiry in &material.expiries {
        let days_left = expiry.days_left(now);
        let warning = patchwork_server::transport::tls::expiry_warning(&expiry.what, days_left)
            .map(|advice| format!("  <- {advice}"))
            .unwrap_or_default();
        println!(
            "  {}: {} days left (until {}){warning}",
            expiry.what,
            days_left,
            expiry.not_after.date()
        );
    }
    print_fingerprints(&patchwork_server::work::peers::fingerprints(&key_sets));
    if config.tls.crl_files.is_empty() {
        println!(
            "  warning: no CRLs configured (tls.crl_files): revoked certificates are not refused"
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn stats_command(args: StatsArgs) -> anyhow::Result<ExitCode> {
    let config = load_config(&args.config)?;
    let mut client = AdminClient::new(connect(&config).await?);
    let stats = client
        .get_stats(v1::GetStatsRequest {})
        .await
        .map_err(status_error)?
        .into_inner();
    if args.json {
        let value = serde_json::json!({
            "persons": stats.persons,
            "practitioners": stats.practitioners,
            "organisations": stats.organisations,
            "involvements": stats.involvements,
            "active_involvements": stats.active_involvements,
            "store_bytes": stats.store_bytes,
            "audit_entries": stats.audit_entries,
            "last_imports": stats.last_imports.iter().map(|last| serde_json::json!({
                "kind": last.kind,
                "at_unix_seconds": last.at_unix_seconds,
                "rows": last.rows,
                "created": last.created,
                "updated": last.updated,
                "unchanged": last.unchanged,
                "bad_rows": last.bad_rows,
            })).collect::<Vec<_>>(),
        });
        println!("{value}");
    } else {
        println!("persons:             {}", stats.persons);
        println!("practitioners:       {}", stats.practitioners);
        println!("organisations:       {}", stats.organisations);
        println!(
            "involvements:        {} ({} current)",
            stats.involvements, stats.active_involvements
        );
        println!("store size on disk:  {} bytes", stats.store_bytes);
        println!("audit log entries:   {}", stats.audit_entries);
        for kind in ["organisation", "practitioner", "person", "involvement"] {
            println!("{}", last_import_line(kind, &stats.last_imports));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The `stats` line for the last applied import of `kind`.
fn last_import_line(kind: &str, imports: &[v1::LastImport]) -> String {
    let label = format!("last {kind} import:");
    let Some(last) = imports.iter().find(|l| l.kind == kind) else {
        return format!("{label:<26}never");
    };
    let at = unix_time_text(last.at_unix_seconds);
    format!(
        "{label:<26}{at}: {} rows, {} created, {} updated, {} unchanged, {} bad",
        last.rows, last.created, last.updated, last.unchanged, last.bad_rows
    )
}

/// Whether a status came from the connection breaking (the node stopped or
/// crashed mid-call) rather than from the node's answer: tonic keeps the
/// transport error as the source of the statuses it makes itself, and a
/// status the node sent has none.
fn cut_off(status: &tonic::Status) -> bool {
    std::error::Error::source(status).is_some()
}

/// A gRPC status as the one line an operator needs.
fn status_error(status: tonic::Status) -> anyhow::Error {
    if cut_off(&status) {
        return anyhow::anyhow!(
            "the connection to the node was cut off before it answered (did the node stop?): {} ({:?})",
            status.message(),
            status.code()
        );
    }
    anyhow::anyhow!(
        "the node refused: {} ({:?})",
        status.message(),
        status.code()
    )
}

// ---------------------------------------------------------------- import

/// Rows per message to the node.
const SEND_BATCH: usize = 1000;

/// What an import did, with the node's report merged with the rows this side
/// could not even parse.
#[derive(Debug, Clone)]
pub struct ImportOutcome {
    pub report: v1::ImportReport,
}

/// The options of one import, as a library call (the CLI and tests use it).
#[derive(Debug, Clone)]
pub struct ImportRequest {
    pub kind: CsvKind,
    pub file: PathBuf,
    pub dry_run: bool,
    pub skip_bad_rows: bool,
    /// A full export: delete what it no longer holds (see `ImportArgs`).
    pub mirror: bool,
    pub force: bool,
    pub progress: bool,
}

/// Reads the file twice: once to find the rows that cannot be parsed (so an
/// all-or-nothing import knows before it sends anything), then to stream the
/// parsable rows to the node, which checks everything again and decides. If
/// the second pass does not see the rows the first saw, the file changed in
/// between: the call is aborted so the node writes nothing.
pub async fn import_csv(
    config: &NodeConfig,
    request: &ImportRequest,
) -> anyhow::Result<ImportOutcome> {
    let open = |path: &Path| -> anyhow::Result<CsvRows<CrlfAsLf<BufReader<File>>>> {
        let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        CsvRows::new(request.kind, BufReader::with_capacity(1 << 20, file))
            .with_context(|| format!("{} is not a {:?} export", path.display(), request.kind))
    };
    let total_bytes = std::fs::metadata(&request.file)
        .map(|m| m.len())
        .unwrap_or(0);

    // Pass 1: parse only.
    let (local_errors, first_pass) = {
        let mut rows = open(&request.file)?;
        tokio::task::spawn_blocking(move || {
            let mut errors = Vec::new();
            let mut tally = crate::work::csv_rows::ParseTally::default();
            while let Some((line, row)) = rows.next_row() {
                tally.record(line, row.is_ok());
                if let Err(error) = row {
                    errors.push(row_error(line, error));
                }
            }
            (errors, tally)
        })
        .await
        .context("reading the file failed")?
    };
    let send_dry_run = request.dry_run || (!local_errors.is_empty() && !request.skip_bad_rows);

    // Pass 2: stream the parsable rows.
    let channel = connect(config).await?;
    let mut client = AdminClient::new(channel)
        .max_encoding_message_size(16 * 1024 * 1024)
        .max_decoding_message_size(16 * 1024 * 1024);
    let (sender, receiver) = tokio::sync::mpsc::channel::<v1::ImportRequest>(4);
    let header = v1::ImportRequest {
        item: Some(v1::import_request::Item::Header(v1::ImportHeader {
            kind: request.kind.record_kind() as i32,
            dry_run: send_dry_run,
            skip_bad_rows: request.skip_bad_rows,
            source: source_name(&request.file),
            mirror: request.mirror,
            force: request.force,
        })),
    };
    sender.send(header).await.context("import stream closed")?;
    let progress = progress_bar(request.progress, total_bytes);
    let mut rows = open(&request.file)?;
    let reader_progress = progress.clone();
    let (uploaded, upload_ended) = tokio::sync::oneshot::channel::<()>();
    // After the upload the bar follows the node's own progress (checking,
    // then writing), read from `GetStats`, instead of standing at 100 %.
    let node_progress = (!progress.is_hidden()).then(|| {
        tokio::spawn(follow_node_progress(
            config.clone(),
            request.kind.record_kind(),
            source_name(&request.file),
            progress.clone(),
            upload_ended,
        ))
    });
    let reader = tokio::task::spawn_blocking(move || {
        let mut batch = Vec::with_capacity(SEND_BATCH);
        let send = |batch: Vec<v1::ImportRow>| {
            sender
                .blocking_send(v1::ImportRequest {
                    item: Some(v1::import_request::Item::Batch(v1::ImportBatch {
                        rows: batch,
                    })),
                })
                .is_ok()
        };
        let mut tally = crate::work::csv_rows::ParseTally::default();
        while let Some((line, row)) = rows.next_row() {
            tally.record(line, row.is_ok());
            if let Ok(record) = row {
                batch.push(v1::ImportRow {
                    line,
                    record: Some(record),
                });
            }
            if batch.len() == SEND_BATCH {
                if !send(std::mem::replace(
                    &mut batch,
                    Vec::with_capacity(SEND_BATCH),
                )) {
                    // The node has already refused the import; its status says why.
                    return true;
                }
                reader_progress.set_position(rows.bytes_read());
            }
        }
        if !tally.same_as(&first_pass) {
            // Ending the stream would let the node apply what it was sent;
            // a message without an item makes it refuse the whole import.
            let _ = sender.blocking_send(v1::ImportRequest { item: None });
            return false;
        }
        if !batch.is_empty() {
            send(batch);
        }
        reader_progress.set_position(rows.bytes_read());
        let _ = uploaded.send(());
        true
    });
    let reply = client.import(ReceiverStream::new(receiver)).await;
    let unchanged = reader.await.context("reading the file failed")?;
    if let Some(task) = node_progress {
        task.abort();
    }
    progress.finish_and_clear();
    if !unchanged {
        bail!(
            "{}: the file changed while importing; nothing was imported",
            request.file.display()
        );
    }
    let mut report = match reply {
        Ok(reply) => reply.into_inner(),
        Err(status) if cut_off(&status) => bail!(
            "the node was cut off before it answered (did it stop?): {} ({:?}); \
             an import is whole or absent once the node runs again (it finishes a \
             half-written import when it starts): check `patchwork stats`, or run the \
             import again (imports are idempotent by id)",
            status.message(),
            status.code()
        ),
        Err(status) => return Err(status_error(status)),
    };

    // Merge this side's parse errors into the node's report.
    let local_bad = local_errors.len() as u64;
    report.rows += local_bad;
    report.bad_rows += local_bad;
    for error in &mut report.errors {
        error.field = column_of(&error.field);
    }
    report.errors.extend(local_errors);
    report.errors.sort_by_key(|e| e.line);
    report.errors.truncate(1000);
    Ok(ImportOutcome { report })
}

/// What an import tells the node it came from: the file's name.
fn source_name(file: &Path) -> String {
    file.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Once the upload has ended, shows the node's progress with this import
/// (found by kind and source) on `bar` until the caller stops the task.
async fn follow_node_progress(
    config: NodeConfig,
    kind: v1::RecordKind,
    source: String,
    bar: ProgressBar,
    upload_ended: tokio::sync::oneshot::Receiver<()>,
) {
    if upload_ended.await.is_err() {
        return;
    }
    let Ok(channel) = connect(&config).await else {
        return;
    };
    let mut admin = AdminClient::new(channel);
    if let Ok(style) =
        ProgressStyle::with_template("{spinner} node {msg} [{bar:30}] {pos}/{len} rows")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    loop {
        if let Ok(stats) = admin.get_stats(v1::GetStatsRequest {}).await
            && let Some(running) = stats
                .into_inner()
                .running_imports
                .into_iter()
                .find(|r| r.kind == kind as i32 && r.source == source)
        {
            let (message, position, length) = node_progress(&running);
            bar.set_message(message);
            bar.set_length(length);
            bar.set_position(position);
        }
        // Redrawing a bar, not synchronising: a fixed pace is right here.
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}

/// The bar's message, position and length for a node's running import.
fn node_progress(running: &v1::RunningImport) -> (&'static str, u64, u64) {
    if running.rows_to_write == 0 {
        (
            "checking",
            running.rows_checked,
            running.rows_checked.max(1),
        )
    } else {
        ("writing", running.rows_written, running.rows_to_write)
    }
}

/// What to do next, for rows refused because a record they name is not on
/// the node: the kind to import first, once per kind.
fn import_hints(report: &v1::ImportReport) -> Vec<String> {
    let mut hints = Vec::new();
    for (kind, plural) in [
        ("organisation", "organisations"),
        ("practitioner", "practitioners"),
        ("person", "persons"),
    ] {
        let prefix = format!("{kind} ");
        if report.errors.iter().any(|e| {
            e.message.starts_with(&prefix) && e.message.ends_with("does not exist on this node")
        }) {
            hints.push(format!(
                "hint: rows name {plural} this node does not hold: import {plural} first \
                 (organisations, then practitioners and persons, then involvements)"
            ));
        }
    }
    hints
}

fn row_error(line: u64, error: FieldError) -> v1::RowError {
    v1::RowError {
        line,
        field: error.field,
        message: error.message,
    }
}

fn progress_bar(enabled: bool, total_bytes: u64) -> ProgressBar {
    if !enabled || total_bytes < 4 * 1024 * 1024 {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total_bytes);
    if let Ok(style) = ProgressStyle::with_template(
        "{spinner} importing [{bar:30}] {bytes}/{total_bytes} ({eta} left)",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

async fn import_command(args: ImportArgs) -> anyhow::Result<ExitCode> {
    let config = load_config(&args.config)?;
    let request = ImportRequest {
        kind: args.kind,
        file: args.file.clone(),
        dry_run: args.dry_run,
        skip_bad_rows: args.skip_bad_rows,
        mirror: args.mirror,
        force: args.force,
        progress: !args.quiet && !args.json,
    };
    let outcome = import_csv(&config, &request).await?;
    let report = &outcome.report;
    if args.json {
        println!("{}", import_json(report));
    } else {
        for error in &report.errors {
            let field = if error.field.is_empty() {
                String::new()
            } else {
                format!("{}: ", error.field)
            };
            eprintln!("line {}: {field}{}", error.line, error.message);
        }
        if report.bad_rows as usize > report.errors.len() {
            eprintln!(
                "... and {} more bad rows",
                report.bad_rows as usize - report.errors.len()
            );
        }
        let deleted = if args.mirror {
            format!(", {} deleted (no longer in the export)", report.deleted)
        } else {
            String::new()
        };
        let verdict = if !report.refused.is_empty() {
            format!("nothing imported or deleted: {}", report.refused)
        } else if report.applied {
            format!(
                "imported: {} created, {} updated, {} unchanged{deleted}",
                report.created, report.updated, report.unchanged
            )
        } else if args.dry_run && args.mirror {
            format!(
                "dry run: nothing written; {} would be deleted (no longer in the export)",
                report.deleted
            )
        } else if args.dry_run {
            "dry run: nothing written".to_owned()
        } else if report.bad_rows > 0 && args.skip_bad_rows && report.valid_rows == 0 {
            "nothing imported: every row is bad; fix them and import again".to_owned()
        } else if report.bad_rows > 0 {
            "nothing imported: fix the bad rows, or pass --skip-bad-rows to import the good ones"
                .to_owned()
        } else {
            "nothing to import".to_owned()
        };
        println!(
            "{}: {} rows, {} valid, {} bad; {verdict}",
            args.file.display(),
            report.rows,
            report.valid_rows,
            report.bad_rows
        );
        for hint in import_hints(report) {
            eprintln!("{hint}");
        }
    }
    Ok(if report.bad_rows == 0 && report.refused.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

pub(crate) fn import_json(report: &v1::ImportReport) -> serde_json::Value {
    serde_json::json!({
        "rows": report.rows,
        "valid_rows": report.valid_rows,
        "bad_rows": report.bad_rows,
        "created": report.created,
        "updated": report.updated,
        "unchanged": report.unchanged,
        "applied": report.applied,
        "deleted": report.deleted,
        "deleted_ids": report.deleted_ids,
        "refused": (!report.refused.is_empty()).then_some(&report.refused),
        "errors": report.errors.iter().map(|e| serde_json::json!({
            "line": e.line, "field": e.field, "message": e.message,
        })).collect::<Vec<_>>(),
    })
}

// ---------------------------------------------------------------- lookup

fn lookup_request(args: &LookupArgs) -> anyhow::Result<v1::LookupRequest> {
    let date_of_birth = match &args.dob {
        Some(text) => Some(parse_iso_date(text, "--dob").map_err(|e| anyhow::anyhow!("{e}"))?),
        None => None,
    };
    if args.scheme.is_some() && args.national_id.is_none() {
        bail!("--scheme: needs --national-id");
    }
    Ok(v1::LookupRequest {
        subject: Some(v1::Demographics {
            given_name: args.given.clone().unwrap_or_default(),
            family_name: args.family.clone().unwrap_or_default(),
            date_of_birth,
            postcode: args.postcode.clone().unwrap_or_default(),
            national_id: args.national_id.as_ref().map(|value| v1::NationalId {
                scheme: args.scheme.clone().unwrap_or_default(),
                value: value.clone(),
            }),
        }),
        purpose: Some(v1::Purpose {
            lawful_basis: v1::LawfulBasis::from(args.basis) as i32,
            reason: args.reason.clone(),
        }),
        requester: Some(v1::Requester {
            practitioner_id: args.requester.clone(),
            ..Default::default()
        }),
        local_only: args.local_only,
        peer_deadline_ms: 0,
        include_family: args.include_family,
    })
}

async fn lookup_command(args: LookupArgs) -> anyhow::Result<ExitCode> {
    let config = load_config(&args.config)?;
    let request = lookup_request(&args)?;
    let mut client = DirectoryClient::new(connect(&config).await?);
    let response = client
        .lookup(request)
        .await
        .map_err(status_error)?
        .into_inner();
    if args.json {
        println!("{}", lookup_json(&response));
    } else {
        print!("{}", lookup_text(&response));
    }
    Ok(ExitCode::SUCCESS)
}

// ---------------------------------------------------------------- audit

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Re-read the audit log, recompute its Merkle tree and report entries
    /// that were altered, removed or reordered, or a log cut short; and hold
    /// it to the checkpoints its witnesses cosigned. Exit 1 if it does not
    /// verify.
    Verify(AuditVerifyArgs),
    /// What witnessing knows: this node's checkpoint key, each peer's pinned
    /// key and last verified checkpoint, alarms about peers' logs with their
    /// evidence, and the checkpoints of this log that witnesses cosigned.
    /// Exit 1 if there is any alarm.
    Witness(AuditVerifyArgs),
    /// Everything the audit log says about one person: who looked them up,
    /// which peers asked, why, and what was disclosed (producing it is
    /// audited). `--json` adds the evidence `audit prove` checks.
    Subject(AuditSubjectArgs),
    /// Check a subject-access report offline, without the node: its
    /// checkpoint is signed by the node's key, every entry is in the log
    /// that checkpoint covers (inclusion proofs), and each entry says what
    /// the log's entry says. Exit 1 on the first failure, naming it.
    Prove(AuditProveArgs),
    /// Check an audit archive file offline, without the node: its SHA-256,
    /// every entry's checksum, and that the checkpoint it carries is signed
    /// by the node's key and commits to exactly its entries. With
    /// `--person`, list (proven) what its entries say about one person, for
    /// a subject-access request that reaches back past the log. Exit 1 on
    /// the first failure, naming it.
    Archive(AuditArchiveArgs),
}

#[derive(Debug, Args)]
pub struct AuditArchiveArgs {
    /// The archive file (`audit-<first>-<last>.pwar`, written by audit
    /// retention into `retention.audit_archive_dir`).
    pub file: PathBuf,
    /// The node's checkpoint key (as `patchwork audit witness` prints it on
    /// that node, or as its operators published it).
    #[arg(long)]
    pub key: String,
    /// List the entries about this person id.
    #[arg(long)]
    pub person: Option<String>,
    /// Print the result as JSON (for scripts) instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct AuditProveArgs {
    /// The report, as `patchwork audit subject --json` printed it.
    pub report: PathBuf,
    /// The node's checkpoint key (as `patchwork audit witness` prints it on
    /// that node, or as its operators published it). Without it, the report
    /// is checked against the key it names itself, and the output says so.
    #[arg(long)]
    pub key: Option<String>,
    /// Print the result as JSON (for scripts) instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct AuditVerifyArgs {
    /// The node's config file.
    #[arg(long, short, default_value = "node.toml")]
    pub config: PathBuf,
    /// Open the store of a stopped node instead of asking the running one.
    #[arg(long)]
    pub offline: bool,
    /// Print the result as JSON (for scripts) instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct AuditSubjectArgs {
    /// The node's config file.
    #[arg(long, short, default_value = "node.toml")]
    pub config: PathBuf,
    /// The person's id on this node.
    #[arg(long)]
    pub person: String,
    /// Print the result as JSON (for scripts) instead of text.
    #[arg(long)]
    pub json: bool,
}

async fn audit_command(command: AuditCommand) -> anyhow::Result<ExitCode> {
    match command {
        AuditCommand::Verify(args) => audit_verify(&args).await,
        AuditCommand::Subject(args) => audit_subject(&args).await,
        AuditCommand::Witness(args) => audit_witness(&args).await,
        AuditCommand::Prove(args) => audit_prove(&args),
        AuditCommand::Archive(args) => audit_archive(&args),
    }
}

fn audit_archive(args: &AuditArchiveArgs) -> anyhow::Result<ExitCode> {
    use patchwork_server::work::subject_access::{archive_entries_about, check_archive};
    let checked = check_archive(&args.file, &args.key);
    let about = match (&checked, &args.person) {
        (Ok(checked), Some(person)) => Some(
            archive_entries_about(&checked.archive, person)
                .map_err(|e| anyhow::anyhow!("{}: {e}", args.file.display()))?,
        ),
        _ => None,
    };
    if args.json {
        println!(
            "{}",
            match &checked {
                Ok(c) => serde_json::json!({
                    "proven": true,
                    "first_seq": c.archive.first_seq,
                    "last_seq": c.archive.last_seq,
                    "node": c.archive.header.node,
                    "rule": c.archive.header.rule,
                    "sealed_unix_ms": c.archive.header.sealed_unix_ms,
                    "sha256": hex::encode(c.archive.sha256),
                    "checkpoint_origin": c.checkpoint.origin,
                    "checkpoint_size": c.checkpoint.size,
                    "person": args.person,
                    "entries": about.iter().flatten().map(subject_entry_json).collect::<Vec<_>>(),
                }),
                Err(why) => serde_json::json!({ "proven": false, "detail": why }),
            }
        );
    } else {
        match &checked {
            Ok(c) => {
                println!(
                    "archive proven: entries {} to {} of the log of {}, sealed {}; its \
                     checkpoints (at {} entries{}) are signed by the key given, and its \
                     entries give their roots (archived under {}, as the file says)",
                    c.archive.first_seq,
                    c.archive.last_seq,
                    c.archive.header.node,
                    unix_time_text(c.checkpoint.time_unix),
                    c.checkpoint.size,
                    if c.archive.first_seq > 1 {
                        format!(" and before entry {}", c.archive.first_seq)
                    } else {
                        String::new()
                    },
                    c.archive.header.rule,
                );
                if let (Some(person), Some(entries)) = (&args.person, &about) {
                    println!(
                        "{} entr{} about person {person}:",
                        entries.len(),
                        if entries.len() == 1 { "y" } else { "ies" }
                    );
                    for e in entries {
                        println!(
                            "  entry {} at {}: {}; from {}; {}{}{}",
                            e.seq,
                            unix_time_text(e.at_unix_seconds),
                            e.kind,
                            if e.from.is_empty() { "-" } else { &e.from },
                            e.outcome,
                            if e.requester.is_empty() {
                                String::new()
                            } else {
                                format!("; asked by {}", e.requester)
                            },
                            if e.reason.is_empty() {
                                String::new()
                            } else {
                                format!("; reason: {}", e.reason)
                            },
                        );
                    }
                }
            }
            Err(why) => println!("ARCHIVE DOES NOT PROVE: {why}"),
        }
    }
    Ok(if checked.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn audit_prove(args: &AuditProveArgs) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(&args.report)
        .with_context(|| format!("cannot read {}", args.report.display()))?;
    let json: serde_json::Value = serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is not JSON: give the report `patchwork audit subject --json` printed",
            args.report.display()
        )
    })?;
    let report = subject_access_from_json(&json)
        .with_context(|| format!("{}: not a subject-access report", args.report.display()))?;
    let proven = patchwork_server::work::subject_access::prove_report(&report, args.key.as_deref());
    if args.json {
        println!(
            "{}",
            match &proven {
                Ok(p) => serde_json::json!({
                    "proven": true,
                    "entries": p.entries,
                    "evidence": p.evidence,
                    "unproven_entries": p.unproven,
                    "checkpoint_size": p.checkpoint.size,
                    "checkpoint_origin": p.checkpoint.origin,
                    "log_key": p.log_key,
                    "key_checked": p.key_trusted.is_some(),
                }),
                Err(why) => serde_json::json!({ "proven": false, "detail": why }),
            }
        );
    } else {
        match &proven {
            Ok(p) => {
                println!(
                    "report proven: its {} entries ({} audit entries of evidence) are in the \
                     log of {} as it stood at {} entries, signed {}",
                    p.entries,
                    p.evidence,
                    p.checkpoint.origin,
                    p.checkpoint.size,
                    unix_time_text(p.checkpoint.time_unix)
                );
                if !p.unproven.is_empty() {
                    println!(
                        "NOTE: {} entr{} (log entries {}) carry no proof: their audit entries \
                         name other people too (a relative's family lookup, a batch of \
                         retention or of a mirror import), and proving them would disclose \
                         those people",
                        p.unproven.len(),
                        if p.unproven.len() == 1 { "y" } else { "ies" },
                        p.unproven
                            .iter()
                            .map(u64::to_string)
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                }
                if p.key_trusted.is_none() {
                    println!(
                        "NOTE: checked against the key the report names ({}); give --key with \
                         the key the node's operators published to know it is theirs",
                        p.log_key
                    );
                }
            }
            Err(why) => println!("REPORT DOES NOT PROVE: {why}"),
        }
    }
    Ok(if proven.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn audit_witness(args: &AuditVerifyArgs) -> anyhow::Result<ExitCode> {
    use patchwork_federation::checkpoint::SignedCheckpoint;
    let config = load_config(&args.config)?;
    let status = if args.offline {
        let (chain, _) = patchwork_server::transport::tls::read_own_chain(&config.tls)?;
        let identity = patchwork_certs::identity_from_cert_der(chain[0].as_ref())?;
        // Read, never made here: the node makes it, as its own user.
        let key_file = config
            .node
            .data_dir
            .join(patchwork_server::work::witness::KEY_FILE);
        let verifier_key = if key_file.exists() {
            patchwork_server::work::witness::load_or_create_key(
                &config.node.data_dir,
                &identity.to_string(),
            )
            .map_err(|e| anyhow::anyhow!(e))?
            .verifier_key()
        } else {
            "none yet (the node makes it at its first start)".to_owned()
        };
        let store = open_stopped_store(&config, ", or drop --offline")?;
        let peers: Vec<String> = config
            .federation
            .peers
            .iter()
            .map(|p| p.identity.clone())
            .collect();
        tokio::task::spawn_blocking(move || {
            patchwork_server::work::witness::status(&store, verifier_key, peers)
        })
        .await
        .context("the reading worker stopped")??
    } else {
        let mut client = AdminClient::new(connect(&config).await?);
        client
            .get_witness_status(v1::GetWitnessStatusRequest {})
            .await
            .map_err(status_error)?
            .into_inner()
    };
    let summary = |note: &str| match SignedCheckpoint::parse(note) {
        Ok(signed) => format!(
            "{} entries, root {}, signed at {}",
            signed.checkpoint.size,
            hex::encode(&signed.checkpoint.root[..8]),
            unix_time(signed.checkpoint.time_unix)
        ),
        Err(e) => format!("unreadable ({e})"),
    };
    let alarms: usize = status.peers.iter().map(|p| p.alarms.len()).sum();
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "verifier_key": status.verifier_key,
                "peers": status.peers.iter().map(|p| serde_json::json!({
                    "node_id": p.node_id,
                    "pinned_key": p.pinned_key,
                    "last_verified": p.last_verified,
                    "alarms": p.alarms.iter().map(|a| serde_json::json!({
                        "at_unix_ms": a.at_unix_ms,
                        "detail": a.detail,
                    })).collect::<Vec<_>>(),
                })).collect::<Vec<_>>(),
                "cosigned": status.cosigned.iter().map(|c| serde_json::json!({
                    "witness": c.witness,
                    "checkpoint": c.checkpoint,
                })).collect::<Vec<_>>(),
            })
        );
    } else {
        println!("this node's checkpoint key: {}", status.verifier_key);
        for peer in &status.peers {
            println!("peer {}", peer.node_id);
            if peer.pinned_key.is_empty() {
                println!("  key: not seen yet");
            } else {
                println!("  key pinned: {}", peer.pinned_key);
            }
            if !peer.last_verified.is_empty() {
                println!(
                    "  last verified and cosigned: {}",
                    summary(&peer.last_verified)
                );
            }
            for alarm in &peer.alarms {
                println!(
                    "  ALARM at {}: {}",
                    unix_time(alarm.at_unix_ms / 1000),
                    alarm.detail.replace('\n', "\n    ")
                );
            }
        }
        if status.cosigned.is_empty() {
            println!("no witness has cosigned a checkpoint of this node's log yet");
        }
        for cosigned in &status.cosigned {
            println!(
                "cosigned by {}: {}",
                cosigned.witness,
                summary(&cosigned.checkpoint)
            );
        }
    }
    Ok(if alarms == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn unix_time(seconds: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(seconds)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| seconds.to_string())
}

async fn audit_verify(args: &AuditVerifyArgs) -> anyhow::Result<ExitCode> {
    let config = load_config(&args.config)?;
    let verification = if args.offline {
        let store = open_stopped_store(&config, ", or drop --offline")?;
        let v = tokio::task::spawn_blocking(move || store.verify_audit())
            .await
            .context("the verifying worker stopped")??;
        v1::VerifyAuditResponse {
            entries: v.entries,
            intact: v.intact,
            first_bad_entry: v.first_bad_entry.unwrap_or(0),
            detail: v.detail,
        }
    } else {
        let mut client = AdminClient::new(connect(&config).await?);
        client
            .verify_audit(v1::VerifyAuditRequest {})
            .await
            .map_err(status_error)?
            .into_inner()
    };
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "entries": verification.entries,
                "intact": verification.intact,
                "first_bad_entry": (!verification.intact).then_some(verification.first_bad_entry),
                "detail": verification.detail,
            })
        );
    } else if verification.intact {
        println!(
            "audit log intact: {} entries ({})",
            verification.entries, verification.detail
        );
    } else {
        println!(
            "AUDIT LOG DOES NOT VERIFY: first bad entry {} of {} — {}",
            verification.first_bad_entry, verification.entries, verification.detail
        );
    }
    Ok(if verification.intact {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn audit_subject(args: &AuditSubjectArgs) -> anyhow::Result<ExitCode> {
    let config = load_config(&args.config)?;
    let mut client = AdminClient::new(connect(&config).await?);
    let report = client
        .subject_access_report(v1::SubjectAccessRequest {
            person_id: args.person.clone(),
        })
        .await
        .map_err(status_error)?
        .into_inner();
    if args.json {
        println!("{}", subject_access_json(&report));
    } else {
        print!(
            "{}",
            subject_access_text(&report, &config.node.display_name)
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `2026-12-07 08:34:02 UTC`.
fn unix_time_text(seconds: i64) -> String {
    match time::OffsetDateTime::from_unix_timestamp(seconds) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        ),
        Err(_) => format!("{seconds} s after 1970"),
    }
}

/// One entry of a subject-access report (or of an archive, about one
/// person), with its evidence, as `audit prove` reads it back.
fn subject_entry_json(e: &v1::SubjectAccessEntry) -> serde_json::Value {
    serde_json::json!({
        "seq": e.seq,
        "at_unix_seconds": e.at_unix_seconds,
        "kind": e.kind,
        "from": e.from,
        "requester": e.requester,
        "lawful_basis": e.lawful_basis,
        "reason": e.reason,
        "outcome": e.outcome,
        "disclosed_involvement_ids": e.disclosed_involvement_ids,
        "reference": e.reference,
        "evidence": e.evidence.iter().map(evidence_json).collect::<Vec<_>>(),
    })
}

/// An audit entry's bytes and inclusion proof, hex.
fn evidence_json(piece: &v1::AuditEvidence) -> serde_json::Value {
    serde_json::json!({
        "seq": piece.seq,
        "body_hex": hex::encode(&piece.body),
        "inclusion_proof_hex": piece.inclusion_proof.iter().map(hex::encode).collect::<Vec<_>>(),
    })
}

pub fn subject_access_json(report: &v1::SubjectAccessReport) -> serde_json::Value {
    serde_json::json!({
        "person_id": report.person_id,
        "node_name": report.node_name,
        "produced_at_unix_seconds": report.produced_at_unix_seconds,
        "involvements": report.involvements.iter().map(|i| serde_json::json!({
            "involvement_id": i.involvement_id,
            "service": i.service,
            "sensitivity": enum_name(v1::Sensitivity::try_from(i.sensitivity)),
            "practitioner": i.practitioner_name,
            "role": i.practitioner_role,
            "organisation": i.organisation_name,
            "start_date": date_text(i.start_date.as_ref()),
            "end_date": date_text(i.end_date.as_ref()),
            "last_confirmed": date_text(i.last_confirmed.as_ref()),
        })).collect::<Vec<_>>(),
        "entries": report.entries.iter().map(subject_entry_json).collect::<Vec<_>>(),
        "not_held": report.not_held,
        "archived": (!report.archived.is_empty()).then_some(&report.archived),
        "reported": report.reported.as_ref().map(evidence_json),
        "checkpoint": report.checkpoint,
        "log_key": report.log_key,
    })
}

/// The report `subject_access_json` printed, read back: what `audit prove`
/// checks (the involvements, which the log does not hold, are left out).
pub fn subject_access_from_json(
    json: &serde_json::Value,
) -> anyhow::Result<v1::SubjectAccessReport> {
    use anyhow::anyhow;
    let text = |value: &serde_json::Value, field: &str| -> anyhow::Result<String> {
        value[field]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| anyhow!("{field}: missing or not text"))
    };
    let number = |value: &serde_json::Value, field: &str| -> anyhow::Result<u64> {
        value[field]
            .as_u64()
            .ok_or_else(|| anyhow!("{field}: missing or not a number"))
    };
    let texts = |value: &serde_json::Value, field: &str| -> anyhow::Result<Vec<String>> {
        value[field]
            .as_array()
            .ok_or_else(|| anyhow!("{field}: missing or not a list"))?
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| anyhow!("{field}: an item is not text"))
            })
            .collect()
    };
    let list = |value: &serde_json::Value, field: &str| -> anyhow::Result<Vec<serde_json::Value>> {
        Ok(value[field]
            .as_array()
            .ok_or_else(|| anyhow!("{field}: missing or not a list"))?
            .clone())
    };
    let mut entries = Vec::new();
    for (at, e) in list(json, "entries")?.iter().enumerate() {
        let at = at + 1;
        let mut evidence = Vec::new();
        for piece in list(e, "evidence").with_context(|| format!("entries[{at}]"))? {
            let body = hex::decode(text(&piece, "body_hex")?)
                .map_err(|err| anyhow!("entries[{at}].evidence.body_hex: {err}"))?;
            let inclusion_proof = texts(&piece, "inclusion_proof_hex")?
                .iter()
                .map(hex::decode)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|err| anyhow!("entries[{at}].evidence.inclusion_proof_hex: {err}"))?;
            evidence.push(v1::AuditEvidence {
                seq: number(&piece, "seq")?,
                body,
                inclusion_proof,
            });
        }
        entries.push(v1::SubjectAccessEntry {
            seq: number(e, "seq").with_context(|| format!("entries[{at}]"))?,
            at_unix_seconds: e["at_unix_seconds"]
                .as_i64()
                .ok_or_else(|| anyhow!("entries[{at}].at_unix_seconds: missing"))?,
            kind: text(e, "kind")?,
            from: text(e, "from")?,
            requester: text(e, "requester")?,
            lawful_basis: text(e, "lawful_basis")?,
            reason: text(e, "reason")?,
            outcome: text(e, "outcome")?,
            disclosed_involvement_ids: texts(e, "disclosed_involvement_ids")?,
            reference: text(e, "reference")?,
            evidence,
        });
    }
    Ok(v1::SubjectAccessReport {
        person_id: text(json, "person_id")?,
        entries,
        involvements: Vec::new(),
        produced_at_unix_seconds: json["produced_at_unix_seconds"].as_i64().unwrap_or(0),
        node_name: text(json, "node_name")?,
        checkpoint: text(json, "checkpoint")?,
        log_key: text(json, "log_key")?,
        not_held: json["not_held"].as_bool().unwrap_or(false),
        archived: json["archived"].as_str().unwrap_or_default().to_owned(),
        reported: match &json["reported"] {
            serde_json::Value::Null => None,
            piece => Some(v1::AuditEvidence {
                seq: number(piece, "seq").context("reported")?,
                body: hex::decode(text(piece, "body_hex").context("reported")?)
                    .map_err(|err| anyhow!("reported.body_hex: {err}"))?,
                inclusion_proof: texts(piece, "inclusion_proof_hex")
                    .context("reported")?
                    .iter()
                    .map(hex::decode)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|err| anyhow!("reported.inclusion_proof_hex: {err}"))?,
            }),
        },
    })
}

/// The report as a data-protection officer can hand it over: who is
/// involved with the person, then who looked them up, from where, why, and
/// what was disclosed. `node_name` is used if the node did not name itself.
pub fn subject_access_text(report: &v1::SubjectAccessReport, node_name: &str) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let node_name = if report.node_name.is_empty() {
        node_name
    } else {
        &report.node_name
    };
    let produced = if report.produced_at_unix_seconds == 0 {
        time::OffsetDateTime::now_utc().unix_timestamp()
    } else {
        report.produced_at_unix_seconds
    };
    let _ = writeln!(out, "SUBJECT ACCESS REPORT — My Patchwork");
    let _ = writeln!(out, "=====================================");
    let _ = writeln!(
        out,
        "Person:        {} (this council's reference)",
        report.person_id
    );
    let _ = writeln!(out, "Held by:       {node_name}");
    let _ = writeln!(out, "Date produced: {}", unix_time_text(produced));
    if report.not_held {
        let _ = writeln!(
            out,
            "\nThis council holds no record of you now (it was erased, or never held);\n\
             what follows is what its audit log still says of your reference."
        );
    }
    if !report.archived.is_empty() {
        let _ = writeln!(out, "\nNote on older entries: {}.", report.archived);
    }
    let _ = writeln!(
        out,
        "\nPatchwork holds no case notes: only who is working with you, and a\n\
         tamper-evident log of every time someone looked you up."
    );

    let _ = writeln!(out, "\n1. Who is involved with you");
    let _ = writeln!(out, "---------------------------");
    if report.involvements.is_empty() {
        let _ = writeln!(out, "Nobody: this council records no involvement with you.");
    }
    for involvement in &report.involvements {
        let start = date_text(involvement.start_date.as_ref()).unwrap_or_default();
        let period = match date_text(involvement.end_date.as_ref()) {
            Some(end) => format!("from {start} to {end} (ended)"),
            None => format!("since {start} (current)"),
        };
        let sensitivity =
            enum_name(v1::Sensitivity::try_from(involvement.sensitivity)).replace('_', " ");
        let _ = writeln!(out, "• {} ({sensitivity}), {period}", involvement.service);
        let _ = writeln!(
            out,
            "  {}, {} — {}",
            involvement.practitioner_name,
            involvement.practitioner_role,
            involvement.organisation_name
        );
        let _ = writeln!(
            out,
            "  last confirmed {}; reference {}",
            date_text(involvement.last_confirmed.as_ref()).unwrap_or_default(),
            involvement.involvement_id
        );
    }

    let disclosures = report
        .entries
        .iter()
        .filter(|e| !e.disclosed_involvement_ids.is_empty())
        .count();
    let _ = writeln!(out, "\n2. Who looked you up");
    let _ = writeln!(out, "--------------------");
    let _ = writeln!(
        out,
        "{} time(s) you were looked up or asked about; contacts were disclosed {} time(s).",
        report.entries.len(),
        disclosures
    );
    // Numbered 1, 2, 3 for the reader; the log's own entry number (with
    // gaps: the log holds everyone's entries) is given for checking.
    for (number, entry) in report.entries.iter().enumerate() {
        let _ = writeln!(
            out,
            "\n#{} {} — {}",
            number + 1,
            unix_time_text(entry.at_unix_seconds),
            entry.kind
        );
        let _ = writeln!(out, "  through:      {}", entry.from);
        let _ = writeln!(out, "  asked by:     {}", entry.requester);
        let _ = writeln!(
            out,
            "  purpose:      {}",
            entry.lawful_basis.replace('_', " ")
        );
        let _ = writeln!(out, "  reason given: {}", entry.reason);
        let _ = writeln!(out, "  outcome:      {}", entry.outcome.replace('_', " "));
        if entry.disclosed_involvement_ids.is_empty() {
            let _ = writeln!(out, "  disclosed:    nothing");
        } else {
            let _ = writeln!(
                out,
                "  disclosed:    the contacts of involvement(s) {}",
                entry.disclosed_involvement_ids.join(", ")
            );
        }
        if !entry.reference.is_empty() {
            let _ = writeln!(out, "  reference:    {}", entry.reference);
        }
        let _ = writeln!(out, "  log entry:    {}", entry.seq);
    }
    let _ = writeln!(out, "\n3. How to check this report");
    let _ = writeln!(out, "---------------------------");
    let size = patchwork_federation::checkpoint::SignedCheckpoint::parse(&report.checkpoint)
        .map(|signed| signed.checkpoint.size);
    if let Ok(size) = size {
        let _ = writeln!(
            out,
            "Every entry above is in the node's tamper-evident audit log, as signed at {size} \
             entries by the key\n  {}\nThe JSON form of this report (`patchwork audit subject \
             --json`) carries the proof;\n`patchwork audit prove REPORT.json --key KEY` checks it \
             without the node.",
            report.log_key
        );
    } else {
        let _ = writeln!(
            out,
            "Produced from the node's audit log, whose Merkle tree `patchwork audit verify` checks."
        );
    }
    out
}

// ---------------------------------------------------------------- erase

#[derive(Debug, Subcommand)]
pub enum EraseCommand {
    /// Erase one person: their record, index entries and blinded match keys,
    /// involvements, family links, attention flag, team events and peers'
    /// subscriptions, in one transaction. Asks the running node (admin role).
    Person(ErasePersonArgs),
}

#[derive(Debug, Args)]
pub struct ErasePersonArgs {
    /// The node's config file.
    #[arg(long, short, default_value = "node.toml")]
    pub config: PathBuf,
    /// The person's id on this node.
    pub id: String,
    /// Why: kept in the audit log for good, so name the request (e.g.
    /// "erasure request DPO-2026-114"), never the person's own details.
    #[arg(long)]
    pub reason: String,
    /// Print the result as JSON (for scripts) instead of text.
    #[arg(long)]
    pub json: bool,
}

async fn erase_command(command: EraseCommand) -> anyhow::Result<ExitCode> {
    let EraseCommand::Person(args) = command;
    let config = load_config(&args.config)?;
    let mut client =
        patchwork_proto::v1::directory_client::DirectoryClient::new(connect(&config).await?);
    let erased = client
        .erase_person(v1::ErasePersonRequest {
            person_id: args.id.clone(),
            reason: args.reason.clone(),
        })
        .await
        .map_err(status_error)?
        .into_inner();
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "person_id": args.id,
                "removed": erased.removed,
                "audit_seq": erased.audit_seq,
            })
        );
    } else {
        println!(
            "erased person {}: {} (audit entry {})",
            args.id,
            erased.removed.join(", "),
            erased.audit_seq
        );
    }
    Ok(ExitCode::SUCCESS)
}

// ---------------------------------------------------------------- retention

#[derive(Debug, Subcommand)]
pub enum RetentionCommand {
    /// Run the schedule now, as the daily run does: ended involvements and
    /// inactive persons past their time are deleted, each batch audited
    /// first. Asks the running node (admin role).
    Run(RetentionRunArgs),
}

#[derive(Debug, Args)]
pub struct RetentionRunArgs {
    /// The node's config file.
    #[arg(long, short, default_value = "node.toml")]
    pub config: PathBuf,
    /// List what would be deleted; delete nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Delete even more than `retention.max_share` of the records.
    #[arg(long)]
    pub force: bool,
    /// Print the result as JSON (for scripts) instead of text.
    #[arg(long)]
    pub json: bool,
}

async fn retention_command(command: RetentionCommand) -> anyhow::Result<ExitCode> {
    let RetentionCommand::Run(args) = command;
    let config = load_config(&args.config)?;
    let mut client = AdminClient::new(connect(&config).await?);
    let report = client
        .run_retention(v1::RunRetentionRequest {
            dry_run: args.dry_run,
            force: args.force,
        })
        .await
        .map_err(status_error)?
        .into_inner();
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "dry_run": report.dry_run,
                "rules": report.rules,
                "involvements": report.involvements.iter().map(|i| serde_json::json!({
                    "involvement_id": i.involvement_id,
                    "person_id": i.person_id,
                    "end_date": date_text(i.end_date.as_ref()),
                })).collect::<Vec<_>>(),
                "persons": report.persons.iter().map(|p| serde_json::json!({
                    "person_id": p.person_id,
                    "inactive_since": date_text(p.inactive_since.as_ref()),
                })).collect::<Vec<_>>(),
                "skipped": report.skipped,
                "refused": (!report.refused.is_empty()).then_some(&report.refused),
                "newly_inactive": report.newly_inactive,
                "audit": report.audit.as_ref().map(|a| serde_json::json!({
                    "rule": a.rule,
                    "first_seq": a.first_seq,
                    "last_seq": a.last_seq,
                    "last_entry_at": a.last_entry_at,
                    "file": (!a.file.is_empty()).then_some(&a.file),
                    "sha256": (!a.sha256.is_empty()).then_some(&a.sha256),
                    "bytes": a.bytes,
                    "held_back": (!a.held_back.is_empty()).then_some(&a.held_back),
                })),
            })
        );
    } else {
        print!("{}", retention_text(&report));
    }
    Ok(if report.refused.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn retention_text(report: &v1::RetentionReport) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let verb = if report.dry_run {
        "would delete"
    } else {
        "deleted"
    };
    let _ = writeln!(out, "rules: {}", report.rules.join("; "));
    if !report.refused.is_empty() {
        let _ = writeln!(out, "REFUSED: {}", report.refused);
    }
    let _ = writeln!(
        out,
        "{verb} {} ended involvement(s) and {} person(s)",
        report.involvements.len(),
        report.persons.len()
    );
    for i in &report.involvements {
        let _ = writeln!(
            out,
            "  involvement {} (person {}), ended {}",
            i.involvement_id,
            i.person_id,
            date_text(i.end_date.as_ref()).unwrap_or_default()
        );
    }
    for p in &report.persons {
        let _ = writeln!(
            out,
            "  person {}, no current involvement since {}",
            p.person_id,
            date_text(p.inactive_since.as_ref()).unwrap_or_default()
        );
    }
    if !report.skipped.is_empty() {
        let _ = writeln!(
            out,
            "kept after all (no longer due): {}",
            report.skipped.join(", ")
        );
    }
    if let Some(audit) = &report.audit {
        if audit.last_seq == 0 {
            let _ = writeln!(out, "audit ({}): no entries due", audit.rule);
        } else if report.dry_run || audit.file.is_empty() {
            let _ = writeln!(
                out,
                "audit ({}): would archive entries {} to {} (the last written {}) and remove them from the log",
                audit.rule, audit.first_seq, audit.last_seq, audit.last_entry_at
            );
        } else {
            let _ = writeln!(
                out,
                "audit ({}): archived entries {} to {} (the last written {}) into {} ({} bytes, SHA-256 {}) and removed them from the log",
                audit.rule,
                audit.first_seq,
                audit.last_seq,
                audit.last_entry_at,
                audit.file,
                audit.bytes,
                audit.sha256
            );
        }
        if !audit.held_back.is_empty() {
            let _ = writeln!(out, "audit: held back: {}", audit.held_back);
        }
    }
    if report.newly_inactive > 0 {
        let _ = writeln!(
            out,
            "{} person(s) without a current involvement for the first time: their period starts {}",
            report.newly_inactive,
            if report.dry_run {
                "at the next run"
            } else {
                "today"
            }
        );
    }
    out
}

// ---------------------------------------------------------------- backup

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// The node's config file.
    #[arg(long, short, default_value = "node.toml")]
    pub config: PathBuf,
    /// The backup file to write (created 0600; replaced atomically if it exists).
    #[arg(long)]
    pub out: PathBuf,
    /// Print the result as JSON (for scripts) instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The node's config file.
    #[arg(long, short, default_value = "node.toml")]
    pub config: PathBuf,
    /// The backup file (made by `patchwork backup`).
    #[arg(long)]
    pub from: PathBuf,
    /// Restore even though the store folder is not empty: the old store is
    /// moved aside (`<store>.before-restore-<time>`), not deleted.
    #[arg(long)]
    pub force: bool,
    /// Restore a backup taken on a node with another identity than this
    /// config's certificate names.
    #[arg(long)]
    pub(crate) allow_other_node: bool,
    /// Print the result as JSON (for scripts) instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Asks the running node for a backup and writes it to `out`: to a temporary
/// name beside it (0600), checking the trailing checksum as the bytes
/// arrive, then synced and renamed into place, so `out` is either the old
/// file or a whole, checked backup.
pub async fn backup_to_file(config: &NodeConfig, out: &Path) -> anyhow::Result<v1::BackupSummary> {
    let name = out
        .file_name()
        .with_context(|| format!("--out: {} names no file", out.display()))?;
    let mut temp_name = std::ffi::OsString::from(".");
    temp_name.push(name);
    temp_name.push(format!(".partial-{}", std::process::id()));
    let temp = out.with_file_name(temp_name);
    let result = receive_backup(config, &temp).await;
    let summary = match result {
        Ok(summary) => summary,
        Err(error) => {
            let _ = std::fs::remove_file(&temp);
            return Err(error);
        }
    };
    std::fs::rename(&temp, out)
        .with_context(|| format!("--out: cannot write {}", out.display()))?;
    let parent = match out.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    File::open(parent)
        .and_then(|dir| dir.sync_all())
        .with_context(|| format!("--out: cannot sync {}", parent.display()))?;
    Ok(summary)
}

async fn receive_backup(config: &NodeConfig, temp: &Path) -> anyhow::Result<v1::BackupSummary> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let file = options
        .open(temp)
        .with_context(|| format!("--out: cannot create {}", temp.display()))?;
    let mut writer = std::io::BufWriter::with_capacity(1 << 20, file);
    let mut client = AdminClient::new(connect(config).await?);
    let mut stream = client
        .backup(v1::BackupRequest {})
        .await
        .map_err(status_error)?
        .into_inner();
    let mut check = patchwork_store::backup::StreamingCheck::default();
    let mut summary = None;
    while let Some(chunk) = stream.message().await.map_err(status_error)? {
        check.update(&chunk.data);
        writer
            .write_all(&chunk.data)
            .with_context(|| format!("--out: cannot write {}", temp.display()))?;
        if chunk.summary.is_some() {
            summary = chunk.summary;
        }
    }
    let summary = summary.context("the node stopped sending before the backup was complete")?;
    let (sha256_hex, bytes) = check
        .finish()
        .context("the backup arrived damaged; nothing was written")?;
    if sha256_hex != summary.sha256_hex || bytes != summary.bytes {
        bail!("the backup that arrived is not the one the node wrote; nothing was written");
    }
    let file = writer
        .into_inner()
        .map_err(|e| e.into_error())
        .with_context(|| format!("--out: cannot write {}", temp.display()))?;
    file.sync_all()
        .with_context(|| format!("--out: cannot sync {}", temp.display()))?;
    Ok(summary)
}

async fn backup_command(args: &BackupArgs) -> anyhow::Result<ExitCode> {
    let config = load_config(&args.config)?;
    let summary = backup_to_file(&config, &args.out).await?;
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "file": args.out.display().to_string(),
                "format_version": summary.format_version,
                "created_unix_ms": summary.created_unix_ms,
                "trees": summary.trees,
                "entries": summary.entries,
                "audit_entries": summary.audit_entries,
                "bytes": summary.bytes,
                "sha256": summary.sha256_hex,
                "write_pause_ms": summary.write_pause_ms,
            })
        );
    } else {
        println!(
            "backup written to {}: {} entries in {} trees, {} audit entries, {} bytes; writes paused {} ms",
            args.out.display(),
            summary.entries,
            summary.trees,
            summary.audit_entries,
            summary.bytes,
            summary.write_pause_ms
        );
        println!("sha256 {}", summary.sha256_hex);
    }
    Ok(ExitCode::SUCCESS)
}

/// Restores `from` into the store folder of `config`'s (stopped) node; see
/// `Store::restore_backup`. Refuses a backup of another node unless
/// `allow_other_node`: restoring another council's records would have this
/// node answer with them.
pub fn restore_from_file(
    config: &NodeConfig,
    from: &Path,
    force: bool,
    allow_other_node: bool,
) -> anyhow::Result<patchwork_store::backup::RestoreReport> {
    use patchwork_store::backup::{BackupError, verify_backup};
    let info = verify_backup(from).map_err(|e| match e {
        BackupError::Checksum | BackupError::Format(_) | BackupError::Version(_) => {
            anyhow::anyhow!("--from: {}: {e}; nothing was restored", from.display())
        }
        other => anyhow::Error::new(other).context(format!("--from: {}", from.display())),
    })?;
    if !allow_other_node {
        let (chain, _) = patchwork_server::transport::tls::read_own_chain(&config.tls)?;
        let identity = patchwork_certs::identity_from_cert_der(chain[0].as_ref())?;
        if identity.to_string() != info.header.node_identity {
            bail!(
                "--from: the backup is of {}, but this node is {identity}; pass --allow-other-node if that is meant",
                info.header.node_identity
            );
        }
    }
    let dir = config.store_dir();
    patchwork_store::data_dir::prepare(&config.node.data_dir, &dir)
        .map_err(|e| anyhow::anyhow!("node.data_dir: {e}"))?;
    patchwork_store::Store::restore_backup(from, &dir, &config.store_options(), force)
        .with_context(|| format!("restoring {} into {}", from.display(), dir.display()))
}

fn restore_command(args: &RestoreArgs) -> anyhow::Result<ExitCode> {
    let config = load_config(&args.config)?;
    let report = restore_from_file(&config, &args.from, args.force, args.allow_other_node)?;
    let created = unix_time_text(report.info.header.created_unix_ms.div_euclid(1000));
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "store": config.store_dir().display().to_string(),
                "node_identity": report.info.header.node_identity,
                "created_unix_ms": report.info.header.created_unix_ms,
                "entries": report.info.entries,
                "sha256": report.info.sha256_hex(),
                "moved_aside": report.moved_aside.as_ref().map(|p| p.display().to_string()),
                "persons": report.counts.persons,
                "practitioners": report.counts.practitioners,
                "organisations": report.counts.organisations,
                "involvements": report.counts.involvements,
                "consistency_problems": report.problems,
                "audit": {
                    "entries": report.audit.entries,
                    "intact": report.audit.intact,
                    "first_bad_entry": report.audit.first_bad_entry,
                    "detail": report.audit.detail,
                },
            })
        );
    } else {
        if let Some(aside) = &report.moved_aside {
            println!("the previous store was moved to {}", aside.display());
        }
        println!(
            "restored {} (taken {created} on {}) into {}",
            args.from.display(),
            report.info.header.node_identity,
            config.store_dir().display()
        );
        println!(
            "  {} persons, {} practitioners, {} organisations, {} involvements",
            report.counts.persons,
            report.counts.practitioners,
            report.counts.organisations,
            report.counts.involvements
        );
        for problem in &report.problems {
            println!("  problem: {problem}");
        }
        println!(
            "  store consistency: {}",
            if report.problems.is_empty() {
                "consistent".to_owned()
            } else {
                format!("{} problem(s)", report.problems.len())
            }
        );
        if report.audit.intact {
            println!(
                "  audit log: intact, {} entries ({})",
                report.audit.entries, report.audit.detail
            );
        } else {
            println!(
                "  audit log: DOES NOT VERIFY: first bad entry {} of {} — {}",
                report.audit.first_bad_entry.unwrap_or(0),
                report.audit.entries,
                report.audit.detail
            );
        }
    }
    Ok(if report.clean() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
