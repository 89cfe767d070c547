//! `patchwork.v1.Admin`: what operators do to a running node.

use patchwork_proto::v1::{self, admin_server::Admin};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::instrument;

use crate::base::config::Role;
use crate::base::convert::store_status;
use crate::base::pool::blocking;
use crate::work::state::NodeState;
use patchwork_store::StoreError;
use patchwork_store::backup::BackupError;

#[derive(Debug, Clone)]
pub(crate) struct AdminService {
    state: NodeState,
}

impl AdminService {
    pub(crate) fn new(state: NodeState) -> Self {
        AdminService { state }
    }

    fn trust_status(&self) -> v1::TrustStatus {
        let material = self.state.tls.current();
        let now = time::OffsetDateTime::now_utc();
        v1::TrustStatus {
            identity: material.own.identity().to_string(),
            expiries: material
                .expiries
                .iter()
                .map(|e| v1::Expiry {
                    what: e.what.clone(),
                    not_after_unix_seconds: e.not_after.unix_timestamp(),
                    days_left: e.days_left(now),
                })
                .collect(),
            generation: self.state.tls.generation(),
            key_set_fingerprints: self.state.federation.current().fingerprints(),
        }
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    #[instrument(skip_all)]
    async fn get_stats(
        &self,
        request: Request<v1::GetStatsRequest>,
    ) -> Result<Response<v1::Stats>, Status> {
        self.state.access.authorise(&request, Role::Admin)?;
        let store = self.state.store.clone();
        let (counts, bytes, audit_entries, last_imports) = blocking(move || {
            let counts = store.counts().map_err(|e| store_status(e, ""))?;
            let bytes = store.size_on_disk().map_err(|e| store_status(e, ""))?;
            let audit_entries = store.audit_len().map_err(|e| store_status(e, ""))?;
            let last_imports = store.last_imports().map_err(|e| store_status(e, ""))?;
            Ok((counts, bytes, audit_entries, last_imports))
        })
        .await?;
        Ok(Response::new(v1::Stats {
            persons: counts.persons,
            practitioners: counts.practitioners,
            organisations: counts.organisations,
            involvements: counts.involvements,
            active_involvements: counts.active_involvements,
            store_bytes: bytes,
            audit_entries,
            last_imports: last_imports
                .into_iter()
                .map(|(kind, last)| v1::LastImport {
                    kind: kind.to_string(),
                    at_unix_seconds: last.at_unix_seconds,
                    rows: last.rows,
                    created: last.created,
                    updated: last.updated,
                    unchanged: last.unchanged,
                    bad_rows: last.bad_rows,
                })
                .collect(),
            running_imports: self.state.imports.to_proto(),
        }))
    }

    #[instrument(skip_all)]
    async fn import(
        &self,
        request: Request<Streaming<v1::ImportRequest>>,
    ) -> Result<Response<v1::ImportReport>, Status> {
        let caller = self.state.access.authorise(&request, Role::Admin)?;
        let report = crate::work::import::run_import(
            self.state.store.clone(),
            self.state.rules(),
            self.state.spool_dir.clone(),
            &self.state.imports,
            crate::work::import::ImportContext {
                caller: caller.identity.to_string(),
                health: self.state.health.clone(),
                mirror_max_share: self.state.mirror_max_share,
            },
            request.into_inner(),
        )
        .await?;
        Ok(Response::new(report))
    }

    #[instrument(skip_all)]
    async fn get_witness_status(
        &self,
        request: Request<v1::GetWitnessStatusRequest>,
    ) -> Result<Response<v1::WitnessStatus>, Status> {
        self.state.access.authorise(&request, Role::Admin)?;
        let store = self.state.store.clone();
        let key = self.state.audit_key.verifier_key();
        let peers: Vec<String> = self
            .state
            .federation
            .current()
            .registry
            .all()
            .iter()
            .map(|peer| peer.identity.to_string())
            .collect();
        let status = blocking(move || {
            crate::work::witness::status(&store, key, peers).map_err(|e| store_status(e, ""))
        })
        .await?;
        Ok(Response::new(status))
    }

    #[instrument(skip_all)]
    async fn verify_audit(
        &self,
        request: Request<v1::VerifyAuditRequest>,
    ) -> Result<Response<v1::VerifyAuditResponse>, Status> {
        self.state.access.authorise(&request, Role::Admin)?;
        let store = self.state.store.clone();
        let verification =
            blocking(move || store.verify_audit().map_err(|e| store_status(e, ""))).await?;
        if verification.intact {
            tracing::info!(entries = verification.entries, "audit log verified intact");
        } else {
            tracing::error!(
                entries = verification.entries,
                first_bad_entry = verification.first_bad_entry,
                detail = %verification.detail,
                "audit log does not verify"
            );
        }
        Ok(Response::new(v1::VerifyAuditResponse {
            entries: verification.entries,
            intact: verification.intact,
            first_bad_entry: verification.first_bad_entry.unwrap_or(0),
            detail: verification.detail,
        }))
    }

    #[instrument(skip_all)]
    async fn subject_access_report(
        &self,
        request: Request<v1::SubjectAccessRequest>,
    ) -> Result<Response<v1::SubjectAccessReport>, Status> {
        let caller = self.state.access.authorise(&request, Role::Admin)?;
        let person_id = crate::base::validate::id(&request.get_ref().person_id, "person_id")?;
        let report = crate::work::subject_access::subject_access_report(
            &self.state,
            &caller.identity.to_string(),
            person_id,
        )
        .await?;
        tracing::info!(
            entries = report.entries.len(),
            "subject access report produced"
        );
        Ok(Response::new(report))
    }

    #[instrument(skip_all)]
    async fn reload(
        &self,
        request: Request<v1::ReloadRequest>,
    ) -> Result<Response<v1::ReloadResponse>, Status> {
        let caller = self.state.access.authorise(&request, Role::Admin)?;
        let report = self
            .state
            .reloader
            .reload(&format!("admin reload by {}", caller.identity))
            .await
            .map_err(|e| {
                Status::failed_precondition(format!("reload refused, nothing changed: {e}"))
            })?;
        Ok(Response::new(v1::ReloadResponse {
            status: Some(self.trust_status()),
            changes: report.changes,
            needs_restart: report.needs_restart,
        }))
    }

    #[instrument(skip_all)]
    async fn run_retention(
        &self,
        request: Request<v1::RunRetentionRequest>,
    ) -> Result<Response<v1::RetentionReport>, Status> {
        let caller = self.state.access.authorise(&request, Role::Admin)?;
        let req = request.into_inner();
        let report = crate::work::retention::run(
            &self.state,
            &self.state.retention,
            &format!("patchwork retention run by {}", caller.identity),
            req.dry_run,
            req.force,
        )
        .await?;
        Ok(Response::new(report))
    }

    async fn get_trust_status(
        &self,
        request: Request<v1::GetTrustStatusRequest>,
    ) -> Result<Response<v1::TrustStatus>, Status> {
        self.state.access.authorise(&request, Role::Admin)?;
        Ok(Response::new(self.trust_status()))
    }

    type BackupStream = ReceiverStream<Result<v1::BackupChunk, Status>>;

    /// Snapshots the store into an unnamed spool file (writes pause only for
    /// that local walk, not for the network), then streams the file.
    #[instrument(skip_all)]
    async fn backup(
        &self,
        request: Request<v1::BackupRequest>,
    ) -> Result<Response<Self::BackupStream>, Status> {
        self.state.access.authorise(&request, Role::Admin)?;
        let store = self.state.store.clone();
        let spool_dir = self.state.spool_dir.clone();
        let identity = self.state.node_identity.to_string();
        let (mut file, summary) = blocking(move || {
            let spool = std::fs::create_dir_all(&spool_dir)
                .and_then(|()| tempfile::tempfile_in(&spool_dir))
                .map_err(|e| backup_status(BackupError::Store(StoreError::File(e))))?;
            let summary = store
                .write_backup(&spool, &identity)
                .map_err(backup_status)?;
            Ok((spool, summary))
        })
        .await?;
        tracing::info!(
            trees = summary.info.trees.len(),
            entries = summary.info.entries,
            audit_entries = summary.audit_entries,
            bytes = summary.info.bytes,
            write_pause_ms = summary.write_pause.as_millis() as u64,
            "backup snapshot taken"
        );
        let (sender, receiver) = tokio::sync::mpsc::channel(4);
        tokio::task::spawn_blocking(move || {
            use std::io::{Read, Seek};
            if let Err(e) = file.rewind() {
                let _ = sender
                    .blocking_send(Err(backup_status(BackupError::Store(StoreError::File(e)))));
                return;
            }
            loop {
                let mut data = vec![0; BACKUP_CHUNK_BYTES];
                match file.read(&mut data) {
                    Ok(0) => break,
                    Ok(n) => {
                        data.truncate(n);
                        let chunk = v1::BackupChunk {
                            data,
                            summary: None,
                        };
                        if sender.blocking_send(Ok(chunk)).is_err() {
                            tracing::warn!("backup abandoned by the caller");
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = sender.blocking_send(Err(backup_status(BackupError::Store(
                            StoreError::File(e),
                        ))));
                        return;
                    }
                }
            }
            let last = v1::BackupChunk {
                data: Vec::new(),
                summary: Some(v1::BackupSummary {
                    format_version: u32::from(summary.info.format_version),
                    created_unix_ms: summary.info.header.created_unix_ms,
                    trees: summary.info.trees.len() as u64,
                    entries: summary.info.entries,
                    audit_entries: summary.audit_entries,
                    bytes: summary.info.bytes,
                    sha256_hex: summary.info.sha256_hex(),
                    write_pause_ms: summary.write_pause.as_millis() as u64,
                }),
            };
            let _ = sender.blocking_send(Ok(last));
        });
        Ok(Response::new(ReceiverStream::new(receiver)))
    }
}

/// Bytes of the backup file per message.
const BACKUP_CHUNK_BYTES: usize = 1 << 20;

fn backup_status(error: BackupError) -> Status {
    match error {
        BackupError::Store(e) => store_status(e, ""),
        other => {
            tracing::error!(error = %other, "backup failed");
            Status::internal(format!("backup failed: {other}"))
        }
    }
}
