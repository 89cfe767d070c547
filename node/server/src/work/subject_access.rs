//! Subject-access reports (`Admin.SubjectAccessReport`, `patchwork audit
//! subject`) and their offline proof (`patchwork audit prove`).
//!
//! A report's entries are read from the audit log through [`AuditSource`]:
//! at the node from the store, recording which entries each one drew on
//! (a lookup's answer draws on its start, a family disclosure to a peer on
//! the peer's question); offline from the evidence the report carries. Each
//! entry carries those entries' bytes with their inclusion proofs in the
//! checkpoint the node signed for the report, so a DPO can check, without
//! the node, that every entry is in the log the node's witnesses vouch for,
//! and that the report says what the entries say ([`prove_report`]).

use std::cell::RefCell;
use std::collections::BTreeMap;

use patchwork_federation::checkpoint::{Checkpoint, SignedCheckpoint, VerifierKey};
use patchwork_proto::v1;
use patchwork_store::model::LawfulBasis;
use patchwork_store::{AuditEntry, AuditEvent, Store, StoreError};
use tonic::Status;

use crate::base::convert::store_status;
use crate::base::pool::blocking;
use crate::work::state::NodeState;

/// Where a report's entries are read from.
pub trait AuditSource {
    /// The `LookupStarted` entry of `lookup_id`, which entry `seq` refers
    /// to: who asked and why.
    fn lookup_started(&self, lookup_id: &str, seq: u64) -> Result<Option<AuditEntry>, StoreError>;
    fn entry(&self, seq: u64) -> Result<Option<AuditEntry>, StoreError>;
    /// "Name (role, organisation" of a practitioner of this node, as it
    /// holds them now; `None` if it no longer does (or, offline, cannot say).
    fn practitioner(&self, id: &str) -> Result<Option<String>, StoreError>;
}

/// The store, recording the entries read through it (the evidence).
struct Recording<'a> {
    store: &'a Store,
    read: RefCell<Vec<u64>>,
}

impl AuditSource for Recording<'_> {
    fn lookup_started(&self, lookup_id: &str, seq: u64) -> Result<Option<AuditEntry>, StoreError> {
        let entry = self.store.audit_lookup_started(lookup_id, seq)?;
        self.read.borrow_mut().extend(entry.iter().map(|e| e.seq));
        Ok(entry)
    }

    fn entry(&self, seq: u64) -> Result<Option<AuditEntry>, StoreError> {
        let entry = match self.store.audit_entry(seq) {
            // In an archive now: the report says what it can without it.
            Err(StoreError::Archived { .. }) => None,
            read => read?,
        };
        self.read.borrow_mut().extend(entry.iter().map(|e| e.seq));
        Ok(entry)
    }

    fn practitioner(&self, id: &str) -> Result<Option<String>, StoreError> {
        let Some(p) = self.store.practitioner(id)? else {
            return Ok(None);
        };
        let organisation = self
            .store
            .organisation(&p.organisation_id)?
            .map_or(p.organisation_id.clone(), |o| o.name);
        Ok(Some(format!("{} ({}, {organisation}", p.name, p.role)))
    }
}

/// The entries a report carries as evidence, proven.
struct Evidence {
    entries: BTreeMap<u64, AuditEntry>,
}

impl AuditSource for Evidence {
    fn lookup_started(&self, lookup_id: &str, seq: u64) -> Result<Option<AuditEntry>, StoreError> {
        // The nearest start before the entry, as the node's index finds.
        Ok(self
            .entries
            .range(..seq)
            .rev()
            .map(|(_, e)| e)
            .find(|e| {
                matches!(&e.event, AuditEvent::LookupStarted { lookup_id: id, .. } if id == lookup_id)
            })
            .cloned())
    }

    fn entry(&self, seq: u64) -> Result<Option<AuditEntry>, StoreError> {
        Ok(self.entries.get(&seq).cloned())
    }

    fn practitioner(&self, _id: &str) -> Result<Option<String>, StoreError> {
        Ok(None)
    }
}

/// The report on `person_id` for `caller`: what the audit log says about
/// them, one entry per decision (a local lookup that matched them, with
/// who asked and why from the lookup's start; a peer's question that did;
/// a family lookup of a relative that disclosed their team too; an erasure
/// or an earlier report), their involvements, and the evidence. Audited
/// (durably) before it is produced, so the checkpoint covers every entry.
pub(crate) async fn subject_access_report(
    state: &NodeState,
    caller: &str,
    person_id: String,
) -> Result<v1::SubjectAccessReport, Status> {
    let store = state.store.clone();
    let id = person_id.clone();
    let (held, entries, archived) = blocking(move || {
        let held = store
            .person(&id)
            .map_err(|e| store_status(e, "person_id"))?;
        let entries = store
            .audit_for_person(&id)
            .map_err(|e| store_status(e, "person_id"))?;
        let archived = archived_note(&store);
        if held.is_none() && entries.is_empty() {
            return Err(Status::not_found(format!(
                "person_id: person {id} is not on this node, and its audit log does not name \
                 it{}",
                if archived.is_empty() {
                    String::new()
                } else {
                    format!(" ({archived})")
                }
            )));
        }
        Ok((held.is_some(), entries, archived))
    })
    .await?;
    let event = AuditEvent::SubjectAccessReported {
        person_id: person_id.clone(),
        caller: caller.to_owned(),
        entries: entries.len() as u64,
    };
    let reported_seq = match state.store.append_audits_durably(vec![event]).await {
        Ok(written) => written.first().map(|entry| entry.seq),
        Err(e) => return Err(state.write_failed(e, "").await),
    };
    let store = state.store.clone();
    let key = state.audit_key.clone();
    let origin = Checkpoint::origin_of(&state.node_identity.to_string());
    let node_name = state.display_name.clone();
    blocking(move || {
        let status = |e| store_status(e, "person_id");
        let (checkpoint, note) =
            crate::work::witness::sign_checkpoint(&store, &key, origin).map_err(status)?;
        let mut report_entries = Vec::with_capacity(entries.len());
        for entry in &entries {
            let source = Recording {
                store: &store,
                read: RefCell::new(Vec::new()),
            };
            let mut out = subject_access_entry(&source, entry, &person_id).map_err(status)?;
            let mut seqs = vec![entry.seq];
            seqs.extend(source.read.into_inner());
            seqs.dedup();
            // Evidence is the entries' bytes: only entries that name no one
            // but the subject go with the report (see `names_only`).
            let mut pieces = Vec::with_capacity(seqs.len());
            let mut provable = true;
            for seq in seqs {
                let about_others = store
                    .audit_entry(seq)
                    .map_err(status)?
                    .is_none_or(|read| !names_only(&read.event, &person_id));
                if about_others {
                    provable = false;
                    break;
                }
                pieces.push(evidence(&store, seq, checkpoint.size).map_err(status)?);
            }
            if provable {
                out.evidence = pieces;
            }
            report_entries.push(out);
        }
        let mut involvements = if held {
            store.involvements_of_person(&person_id).map_err(status)?
        } else {
            Vec::new()
        };
        involvements.sort_by(|a, b| (a.start_date, &a.id).cmp(&(b.start_date, &b.id)));
        let involvements = involvements
            .iter()
            .map(|i| subject_involvement(&store, i))
            .collect::<Result<_, _>>()
            .map_err(status)?;
        Ok(v1::SubjectAccessReport {
            person_id,
            entries: report_entries,
            involvements,
            produced_at_unix_seconds: time::OffsetDateTime::now_utc().unix_timestamp(),
            node_name,
            checkpoint: note,
            log_key: key.verifier_key(),
            not_held: !held,
            archived,
            reported: reported_seq
                .map(|seq| evidence(&store, seq, checkpoint.size))
                .transpose()
                .map_err(status)?,
        })
    })
    .await
}

/// What a report says of entries audit retention archived: empty if none.
fn archived_note(store: &Store) -> String {
    let (archived, archives) = store.audit_archived();
    if archived == 0 {
        return String::new();
    }
    format!(
        "audit entries 1 to {archived} were archived by audit retention into {}: entries about \
         the person written before then are in those files, not in this report",
        archives
            .iter()
            .map(|a| format!(
                "{} (entries {} to {}, SHA-256 {})",
                a.file, a.first_seq, a.last_seq, a.sha256
            ))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// An audit archive file, checked offline (`patchwork audit archive`).
#[derive(Debug)]
pub struct ArchiveChecked {
    pub archive: patchwork_store::audit::archive::AuditArchive,
    /// The node's checkpoint it carries, verified.
    pub checkpoint: Checkpoint,
}

/// Checks the archive at `path`: its SHA-256 and every record (reading
/// it), then that the checkpoint it carries is signed by `trusted_key` (the
/// node's checkpoint key, as its operators published it) and commits to
/// exactly its entries: the log's size at its last entry, and the root its
/// entries give with the hashes before them. The first failure, named.
pub fn check_archive(path: &std::path::Path, trusted_key: &str) -> Result<ArchiveChecked, String> {
    let archive =
        patchwork_store::audit::archive::read_audit_archive(path).map_err(|e| e.to_string())?;
    let key = VerifierKey::parse(trusted_key.trim()).map_err(|e| format!("--key: {e}"))?;
    let signed = SignedCheckpoint::parse(&archive.header.checkpoint)
        .map_err(|e| format!("its checkpoint: {e}"))?;
    signed.verify_signed_by(&key).map_err(|_| {
        format!(
            "its checkpoint is not signed by the key you gave ({}): the file was not sealed by \
             that node, or was rewritten",
            key.encode()
        )
    })?;
    let checkpoint = signed.checkpoint.clone();
    if checkpoint.origin != Checkpoint::origin_of(&archive.header.node) {
        return Err(format!(
            "it says it is of {}'s log, but its checkpoint is of {}",
            archive.header.node, checkpoint.origin
        ));
    }
    if checkpoint.size != archive.last_seq {
        return Err(format!(
            "its checkpoint covers {} entries, but the file ends at entry {}",
            checkpoint.size, archive.last_seq
        ));
    }
    if checkpoint.root != archive.root {
        return Err(
            "its entries do not give the root its signed checkpoint records: an entry was \
             changed, added or removed after it was sealed"
                .to_owned(),
        );
    }
    // Where it starts is signed too: the hashes it carries of the entries
    // before it must give the root the node signed at that size.
    if let Some(root_before) = archive.root_before {
        let before = SignedCheckpoint::parse(&archive.header.checkpoint_before)
            .map_err(|e| format!("its checkpoint before its first entry: {e}"))?;
        before.verify_signed_by(&key).map_err(|_| {
            "its checkpoint before its first entry is not signed by the key you gave".to_owned()
        })?;
        let before = before.checkpoint;
        if before.origin != checkpoint.origin
            || before.size + 1 != archive.first_seq
            || before.root != root_before
        {
            return Err(format!(
                "it says it starts at entry {}, but the checkpoint the node signed before it \
                 ({} entries) does not match the hashes it carries: entries were dropped from \
                 its start, or added",
                archive.first_seq, before.size
            ));
        }
    }
    Ok(ArchiveChecked {
        archive,
        checkpoint,
    })
}

/// The entries of an archive file about `person_id`, read as a report reads
/// the log (who asked and why from the lookup's start, when the archive
/// holds it). An archive has no records: practitioners show by their ids.
pub fn archive_entries_about(
    archive: &patchwork_store::audit::archive::AuditArchive,
    person_id: &str,
) -> Result<Vec<v1::SubjectAccessEntry>, StoreError> {
    let source = Evidence {
        entries: archive
            .entries
            .iter()
            .map(|entry| (entry.seq, entry.clone()))
            .collect(),
    };
    archive
        .entries
        .iter()
        .filter(|entry| entry.event.person_ids().contains(&person_id))
        .map(|entry| subject_access_entry(&source, entry, person_id))
        .collect()
}

/// Whether `event` names no person but `person_id`: its bytes may go to
/// that person as evidence. A family disclosure names the relative looked
/// up and the other members; a batch of retention or a mirror import names
/// everyone in it; a peer's question about a relative names the relative.
fn names_only(event: &AuditEvent, person_id: &str) -> bool {
    !matches!(event, AuditEvent::FamilyDisclosed { .. })
        && event.person_ids().iter().all(|id| *id == person_id)
}

/// Entry `seq`'s bytes and its inclusion proof in the tree of `size`.
fn evidence(store: &Store, seq: u64, size: u64) -> Result<v1::AuditEvidence, StoreError> {
    let body = store.audit_entry_body(seq)?.ok_or(StoreError::Corrupt {
        kind: patchwork_store::Kind::AuditEntry,
        detail: format!("entry {seq} is indexed but not in the log"),
    })?;
    let inclusion_proof = store
        .audit_inclusion_proof(seq, size)?
        .into_iter()
        .map(|hash| hash.to_vec())
        .collect();
    Ok(v1::AuditEvidence {
        seq,
        body,
        inclusion_proof,
    })
}

/// What [`prove_report`] established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proven {
    /// The checkpoint every entry was proven against.
    pub checkpoint: Checkpoint,
    /// The key that signed it, as the report named it.
    pub log_key: String,
    /// Whether that key is the one the caller trusts (`--key`); `None` if
    /// the caller gave none.
    pub key_trusted: Option<bool>,
    /// Entries proven.
    pub entries: usize,
    pub evidence: usize,
    /// Entries the report carries no proof of, because their audit entries
    /// name other people too (family disclosures, batches of retention or
    /// mirror imports): proving them would disclose those people.
    pub unproven: Vec<u64>,
}

/// Checks a report offline: the checkpoint is signed by the report's log
/// key (and that key is `trusted_key`, when given); every piece of evidence
/// is in the checkpoint's tree; and each entry says what its evidence says
/// (read again from it, as the node read it from its log). The first
/// failure, named by entry.
pub fn prove_report(
    report: &v1::SubjectAccessReport,
    trusted_key: Option<&str>,
) -> Result<Proven, String> {
    let key = VerifierKey::parse(&report.log_key).map_err(|e| format!("log_key: {e}"))?;
    let key_trusted = match trusted_key {
        Some(trusted) => {
            let trusted = VerifierKey::parse(trusted.trim()).map_err(|e| format!("--key: {e}"))?;
            if trusted != key {
                return Err(format!(
                    "the report's checkpoint is signed by {}, not by the key you gave ({})",
                    report.log_key,
                    trusted.encode()
                ));
            }
            Some(true)
        }
        None => None,
    };
    let signed =
        SignedCheckpoint::parse(&report.checkpoint).map_err(|e| format!("checkpoint: {e}"))?;
    signed
        .verify_signed_by(&key)
        .map_err(|_| "checkpoint: it is not signed by the report's log key".to_owned())?;
    let checkpoint = signed.checkpoint.clone();
    // How many entries the node reported, from its own audit entry of the
    // report: entries taken out of (or added to) a copy are caught.
    let reported = report
        .reported
        .as_ref()
        .ok_or("the report carries no proof of how many entries it had (its own audit entry)")?;
    let proof = reported
        .inclusion_proof
        .iter()
        .map(|hash| <[u8; 32]>::try_from(hash.as_slice()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| "the report's own audit entry: a proof hash is not 32 bytes".to_owned())?;
    let own = patchwork_store::prove_entry(
        reported.seq,
        &reported.body,
        &proof,
        checkpoint.size,
        checkpoint.root,
    )
    .map_err(|why| format!("the report's own audit entry: {why}"))?;
    match own.event {
        AuditEvent::SubjectAccessReported {
            person_id, entries, ..
        } if person_id == report.person_id => {
            if entries != report.entries.len() as u64 {
                return Err(format!(
                    "the report holds {} entries, but the node reported {entries}: entries were \
                     taken out or added",
                    report.entries.len()
                ));
            }
        }
        _ => {
            return Err(format!(
                "the report's own audit entry (entry {}) is not a report on person {}",
                reported.seq, report.person_id
            ));
        }
    }
    let mut evidence_count = 0;
    let mut unproven = Vec::new();
    for (at, given) in report.entries.iter().enumerate() {
        let which = format!("entry {} of the report (audit entry {})", at + 1, given.seq);
        let mut entries = BTreeMap::new();
        for piece in &given.evidence {
            let proof = piece
                .inclusion_proof
                .iter()
                .map(|hash| <[u8; 32]>::try_from(hash.as_slice()))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|_| format!("{which}: a proof hash is not 32 bytes"))?;
            let entry = patchwork_store::prove_entry(
                piece.seq,
                &piece.body,
                &proof,
                checkpoint.size,
                checkpoint.root,
            )
            .map_err(|why| format!("{which}: {why}"))?;
            entries.insert(piece.seq, entry);
            evidence_count += 1;
        }
        if given.evidence.is_empty() {
            // Left out by the node: its entries name others too.
            unproven.push(given.seq);
            continue;
        }
        let Some(entry) = entries.get(&given.seq).cloned() else {
            return Err(format!("{which}: the report carries no evidence for it"));
        };
        let person_id = &report.person_id;
        if !entry.event.person_ids().contains(&person_id.as_str()) {
            return Err(format!(
                "{which}: the entry is not about person {person_id}"
            ));
        }
        let source = Evidence { entries };
        let read = subject_access_entry(&source, &entry, person_id)
            .map_err(|e| format!("{which}: {e}"))?;
        let mut given = given.clone();
        given.evidence.clear();
        // Only the practitioner's name, role and organisation come from the
        // node's records rather than the log: the id they end with must match.
        if read
            .requester
            .ends_with(" on this node (no longer on record)")
        {
            let id_part = read
                .requester
                .trim_end_matches(" (no longer on record)")
                .to_owned();
            // "Name (role, organisation; practitioner id X on this node)":
            // the label before the id, from records, is all that may differ.
            let names_the_id = given
                .requester
                .strip_suffix(&format!("; {id_part})"))
                .is_some_and(|label| !label.contains(';'));
            if names_the_id {
                given.requester = read.requester.clone();
            }
        }
        if given != read {
            return Err(format!(
                "{which}: the report does not say what the entry says: the report has {}, the \
                 entry {}",
                summary(&given),
                summary(&read)
            ));
        }
    }
    Ok(Proven {
        checkpoint,
        log_key: report.log_key.clone(),
        key_trusted,
        entries: report.entries.len() - unproven.len(),
        evidence: evidence_count,
        unproven,
    })
}

fn summary(entry: &v1::SubjectAccessEntry) -> String {
    format!(
        "{{seq {}, at {}, {:?}, from {:?}, requester {:?}, basis {:?}, reason {:?}, outcome {:?}, \
         disclosed {:?}, reference {:?}}}",
        entry.seq,
        entry.at_unix_seconds,
        entry.kind,
        entry.from,
        entry.requester,
        entry.lawful_basis,
        entry.reason,
        entry.outcome,
        entry.disclosed_involvement_ids,
        entry.reference
    )
}

/// "Who is involved": the subject's own data, so every involvement in full,
/// restricted and ended ones too.
pub(crate) fn subject_involvement(
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

/// One report entry, read from `entry` and what it draws on in `source`.
pub fn subject_access_entry(
    source: &dyn AuditSource,
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
            who_looked_up(source, lookup_id, &mut out)?;
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
                    who_looked_up(source, reference, &mut out)?;
                }
                Some(peer) => {
                    out.kind = "a family member asked about by peer node".into();
                    // The question is the entry just before (one append).
                    let asked = match entry.seq.checked_sub(1) {
                        Some(seq) => source.entry(seq)?.map(|e| e.event),
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
        AuditEvent::PersonErased {
            caller,
            reason,
            removed,
            ..
        } => {
            out.kind = "erased from this node".into();
            out.from = caller.clone();
            out.reason = reason.clone();
            out.outcome = format!("erased: {}", removed.join(", "));
        }
        AuditEvent::RetentionApplied { trigger, rules, .. } => {
            out.kind = "erased by the retention schedule".into();
            out.from = trigger.clone();
            out.reason = rules.join("; ");
            out.outcome = "erased".into();
        }
        AuditEvent::ImportMirrored { caller, source, .. } => {
            out.kind = "erased: no longer in the case system's export".into();
            out.from = caller.clone();
            out.reference = source.clone();
            out.outcome = "erased".into();
        }
        AuditEvent::RetentionSkipped { .. } => {
            out.kind = "kept after all by the retention schedule".into();
            out.outcome = "no longer due when the run came to it: kept".into();
        }
        AuditEvent::SubjectAccessReported {
            caller, entries, ..
        } => {
            out.kind = "subject-access report produced".into();
            out.from = caller.clone();
            out.outcome = format!("{entries} entries reported");
        }
        AuditEvent::LookupStarted { .. }
        | AuditEvent::SubscriptionMade { .. }
        | AuditEvent::NotificationReceived { .. }
        | AuditEvent::PeerRefusals { .. }
        | AuditEvent::FederationChanged { .. }
        | AuditEvent::WatchOpened { .. }
        | AuditEvent::AuditMigrated { .. }
        | AuditEvent::AuditArchived { .. } => {
            // Never indexed under a person.
            out.kind = "lookup started".into();
        }
    }
    Ok(out)
}

/// Who made local lookup `lookup_id`, and why, from its `LookupStarted`.
fn who_looked_up(
    source: &dyn AuditSource,
    lookup_id: &str,
    out: &mut v1::SubjectAccessEntry,
) -> Result<(), StoreError> {
    match source.lookup_started(lookup_id, out.seq)?.map(|e| e.event) {
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
            out.requester = match source.practitioner(&requester)? {
                Some(label) => format!("{label}; practitioner id {requester} on this node)"),
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
