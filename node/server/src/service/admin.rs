//! `patchwork.v1.Admin`: what operators do to a running node.

use patchwork_proto::v1::{self, admin_server::Admin};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::instrument;

use crate::base::config::Role;
use crate::base::convert::store_status;
use crate::base::pool::blocking;
use crate::work::state::NodeState;
use patchwork_store::backup::BackupError;
use patchwork_store::model::LawfulBasis;
use patchwork_store::{AuditEntry, AuditEvent, Store, StoreError};

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
        self.state.access.authorise(&request, Role::Admin)?;
        let report = crate::work::import::run_import(
            self.state.store.clone(),
            self.state.rules(),
            self.state.spool_dir.clone(),
            &self.state.imports,
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
        self.state.access.authorise(&request, Role::Admin)?;
        let person_id = crate::base::validate::id(&request.get_ref().person_id, "person_id")?;
        let store = self.state.store.clone();
        let node_name = self.state.display_name.clone();
        let report = blocking(move || {
            subject_access_report(&store, &person_id, node_name)
                .map_err(|e| store_status(e, "person_id"))
        })
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

/// What the audit log says about `person_id`, one entry per disclosure
/// decision: a local lookup that matched them (with who asked and why, from
/// the lookup's start), a peer's question that did, or a family lookup of a
/// relative that disclosed their team too.
fn subject_access_report(
    store: &Store,
    person_id: &str,
    node_name: String,
) -> Result<v1::SubjectAccessReport, StoreError> {
    if store.person(person_id)?.is_none() {
        return Err(StoreError::NotFound {
            kind: patchwork_store::Kind::Person,
            id: person_id.into(),
        });
    }
    let mut entries = Vec::new();
    for entry in store.audit_for_person(person_id)? {
        entries.push(subject_access_entry(store, &entry, person_id)?);
    }
    let mut involvements = store.involvements_of_person(person_id)?;
    involvements.sort_by(|a, b| (a.start_date, &a.id).cmp(&(b.start_date, &b.id)));
    let involvements = involvements
        .iter()
        .map(|i| subject_involvement(store, i))
        .collect::<Result<_, _>>()?;
    Ok(v1::SubjectAccessReport {
        person_id: person_id.into(),
        entries,
        involvements,
        produced_at_unix_seconds: time::OffsetDateTime::now_utc().unix_timestamp(),
        node_name,
    })
}

/// "Who is involved": the subject's own data, so every involvement in full,
/// restricted and ended ones too.
fn subject_involvement(
    store: &Store,
    involvement: &patchwork_store::model::Involvement,
) -> Result<v1::SubjectInvolvement, StoreError> {
    use crate::base::validate::to_proto_date;
    let practitioner = store.practitioner(&involvement.practitioner_id)?;
    let organisation = match &practitioner {
        Some(p) => store.organisation(&p.organisation_id)?,
        None => None,
    };
    Ok(v1::SubjectInvolvement {
        involvement_id: involvement.id.clone(),
        service: involvement.service.clone(),
        sensitivity: v1::Sensitivity::from(involvement.sensitivity) as i32,
        practitioner_name: practitioner
            .as_ref()
            .map(|p| p.name.clone())
            .unwrap_or_default(),
        practitioner_role: practitioner.map(|p| p.role).unwrap_or_default(),
        organisation_name: organisation.map(|o| o.name).unwrap_or_default(),
        start_date: Some(to_proto_date(involvement.start_date)),
        end_date: involvement.end_date.map(to_proto_date),
        last_confirmed: Some(to_proto_date(involvement.last_confirmed)),
    })
}

fn subject_access_entry(
    store: &Store,
    entry: &AuditEntry,
    person_id: &str,
) -> Result<v1::SubjectAccessEntry, StoreError> {
    let mut out = v1::SubjectAccessEntry {
        seq: entry.seq,
        at_unix_seconds: entry.at_unix_ms.div_euclid(1000),
        ..Default::default()
    };
    match &entry.event {
        AuditEvent::LookupAnswered {
            lookup_id,
            local_outcome,
            disclosed_involvement_ids,
            ..
        } => {
            out.kind = "looked up here by a local practitioner".into();
            out.reference = lookup_id.clone();
            out.outcome = local_outcome.clone();
            out.disclosed_involvement_ids = disclosed_involvement_ids.clone();
            who_looked_up(store, lookup_id, &mut out)?;
        }
        AuditEvent::PeerAsked { .. } => {
            out.kind = "asked by peer node".into();
            who_asked(&entry.event, &mut out);
        }
        AuditEvent::FamilyDisclosed {
            reference,
            peer,
            members,
            ..
        } => {
            match peer {
                None => {
                    out.kind = "a family member looked up here by a local practitioner".into();
                    who_looked_up(store, reference, &mut out)?;
                }
                Some(peer) => {
                    out.kind = "a family member asked about by peer node".into();
                    // The question is the entry just before (one append).
                    let asked = match entry.seq.checked_sub(1) {
                        Some(seq) => store.audit_entry(seq)?.map(|e| e.event),
                        None => None,
                    }
                    .filter(|event| {
                        matches!(event, AuditEvent::PeerAsked { request_id, peer: asker, .. }
                            if request_id == reference && asker == peer)
                    });
                    match asked {
                        Some(asked) => who_asked(&asked, &mut out),
                        None => {
                            out.from = peer.clone();
                            out.requester = "unknown: the question is not in the log".into();
                        }
                    }
                }
            }
            // Which family member was looked up, and what was disclosed of
            // their own team, is theirs: this person's report says only that
            // it was one of the family, and what was disclosed of this
            // person's team.
            out.reference = reference.clone();
            out.outcome = "matched a family member".into();
            out.disclosed_involvement_ids = members
                .iter()
                .filter(|m| m.person_id == person_id)
                .flat_map(|m| m.disclosed_involvement_ids.iter().cloned())
                .collect();
        }
        AuditEvent::NotificationSent {
            peer,
            subscription_id,
            disclosed_involvement_ids,
            ..
        } => {
            out.kind = "subscription notification sent to a peer".into();
            out.reference = subscription_id.clone();
            out.from = peer.clone();
            out.outcome = "sent".into();
            out.disclosed_involvement_ids = disclosed_involvement_ids.clone();
        }
        AuditEvent::LookupStarted { .. }
        | AuditEvent::SubscriptionMade { .. }
        | AuditEvent::NotificationReceived { .. }
        | AuditEvent::PeerRefusals { .. }
        | AuditEvent::FederationChanged { .. }
        | AuditEvent::WatchOpened { .. }
        | AuditEvent::AuditMigrated { .. } => {
            // Never indexed under a person.
            out.kind = "lookup started".into();
        }
    }
    Ok(out)
}

/// Who made local lookup `lookup_id`, and why, from its `LookupStarted`.
fn who_looked_up(
    store: &Store,
    lookup_id: &str,
    out: &mut v1::SubjectAccessEntry,
) -> Result<(), StoreError> {
    match store.audit_lookup_started(lookup_id)?.map(|e| e.event) {
        Some(AuditEvent::LookupStarted {
            caller,
            requester,
            lawful_basis,
            reason,
            ..
        }) => {
            out.from = caller;
            // As a peer's asker reads: name, role and organisation (as this
            // node holds them now), then the id the log keeps.
            let practitioner = store.practitioner(&requester)?;
            out.requester = match practitioner {
                Some(p) => {
                    let organisation = store
                        .organisation(&p.organisation_id)?
                        .map_or(p.organisation_id.clone(), |o| o.name);
                    format!(
                        "{} ({}, {organisation}; practitioner id {requester} on this node)",
                        p.name, p.role
                    )
                }
                None => format!("practitioner id {requester} on this node (no longer on record)"),
            };
            out.lawful_basis = lawful_basis.as_str().into();
            out.reason = reason;
        }
        _ => {
            // verify_audit reports a lookup whose start is missing.
            out.requester = "unknown: the lookup's start is not in the log".into();
        }
    }
    Ok(())
}

/// Who asked a peer's question, why, and what it was answered, from its
/// `PeerAsked` (anything else leaves `out` as it is).
fn who_asked(event: &AuditEvent, out: &mut v1::SubjectAccessEntry) {
    let AuditEvent::PeerAsked {
        request_id,
        peer,
        requester_practitioner_id,
        requester_name,
        requester_role,
        requester_organisation,
        lawful_basis,
        reason,
        outcome,
        refusal,
        disclosed_involvement_ids,
        ..
    } = event
    else {
        return;
    };
    out.reference = request_id.clone();
    out.from = peer.clone();
    out.requester = format!(
        "{requester_name} ({requester_role}, {requester_organisation}; \
         practitioner id {requester_practitioner_id} at that node)"
    );
    out.lawful_basis = lawful_basis
        .map_or("none given", LawfulBasis::as_str)
        .into();
    out.reason = reason.clone();
    out.outcome = match refusal {
        Some(why) => format!("{outcome}: {why}"),
        None => outcome.clone(),
    };
    out.disclosed_involvement_ids = disclosed_involvement_ids.clone();
}
