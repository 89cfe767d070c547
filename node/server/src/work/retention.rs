//! The retention schedule at work: `Admin.RunRetention` (`patchwork
//! retention run [--dry-run] [--force]`) and the daily run at
//! `[retention] daily_at_hour_utc`.
//!
//! A run plans (`Store::retention_plan`), checks the plan against the share
//! guard (`retention.max_share`: a wrong clock or a mistyped rule must not
//! empty the node), then, a batch of at most 256 persons and 256
//! involvements at a time, appends a `RetentionApplied` entry naming them
//! durably, deletes them (each re-checked in its transaction), and audits
//! what was kept after all (`RetentionSkipped`). A crash between the entry
//! and the deletion leaves the items due: the next run deletes them and
//! names them again.
//!
//! Audit retention (`retention.audit_years`) runs after, in the same run:
//! the closed segments of the log whose last entry is older are sealed into
//! one archive file (`patchwork_store::audit::archive`) with a checkpoint
//! the node signs now of its log at their last entry; then an
//! `AuditArchived` entry naming the file and its SHA-256 is appended
//! durably; only then are they pruned. A crash after the file leaves it for
//! the next run, which keeps it as it is (its SHA-256 may be in the log
//! already) and audits it again before it prunes. Runs take turns. The
//! share guard does not apply: nothing is lost, the archive is the record;
//! but a run it refused archives nothing either (the same wrong clock).

use std::time::Duration;

use patchwork_federation::checkpoint::Checkpoint;
use patchwork_proto::v1;
use patchwork_store::AuditEvent;
use patchwork_store::audit::archive::ArchiveHeader;
use patchwork_store::retention::{RetentionApplied, RetentionPlan};
use tokio::task::JoinHandle;
use tonic::Status;

use crate::base::config::RetentionSection;
use crate::base::convert::store_status;
use crate::base::pool::blocking;
use crate::base::validate::to_proto_date;
use crate::work::state::NodeState;

/// Items each audit entry (and deletion batch) names at most.
const BATCH: usize = 256;
/// The share guard ignores runs this small: on a node of 20 persons, one
/// is 5 %.
const SMALL_RUN: usize = 10;

/// Plans, and unless `dry_run`, applies the schedule in `section`.
pub(crate) async fn run(
    state: &NodeState,
    section: &RetentionSection,
    trigger: &str,
    dry_run: bool,
    force: bool,
) -> Result<v1::RetentionReport, Status> {
    let rules = section.rules();
    let store = state.store.clone();
    let today = patchwork_store::model::today();
    let (plan, counts) = blocking(move || {
        let plan = store
            .retention_plan(rules, today)
            .map_err(|e| store_status(e, ""))?;
        let counts = store.counts().map_err(|e| store_status(e, ""))?;
        Ok((plan, counts))
    })
    .await?;
    let mut report = report_of(&plan, section, dry_run);
    if dry_run {
        report.audit = archive_audit(state, section, trigger, true).await?;
        return Ok(report);
    }
    let too_many = |planned: usize, total: u64| {
        planned > SMALL_RUN && planned as f64 > section.max_share * total as f64
    };
    if !force
        && (too_many(plan.persons.len(), counts.persons)
            || too_many(plan.involvements.len(), counts.involvements))
    {
        report.refused = format!(
            "this run would delete {} of {} persons and {} of {} involvements, more than \
             retention.max_share ({}): nothing was deleted. Check the clock and the rules \
             (`patchwork retention run --dry-run` lists what would go), then run `patchwork \
             retention run --force` if it is right",
            plan.persons.len(),
            counts.persons,
            plan.involvements.len(),
            counts.involvements,
            section.max_share
        );
        state.metrics.retention_refused();
        tracing::error!(
            persons = plan.persons.len(),
            involvements = plan.involvements.len(),
            max_share = section.max_share,
            "retention run refused: it would delete more than retention.max_share"
        );
        // The same wrong clock would archive the audit: planned only.
        report.audit = archive_audit(state, section, trigger, true).await?;
        return Ok(report);
    }
    let applied = apply(state, section, trigger, plan).await?;
    report.audit = archive_audit(state, section, trigger, false).await?;
    report.skipped = applied
        .skipped_involvements
        .iter()
        .chain(&applied.skipped_persons)
        .cloned()
        .collect();
    let deleted_involvements: std::collections::HashSet<&str> =
        applied.involvement_ids.iter().map(String::as_str).collect();
    let deleted_persons: std::collections::HashSet<&str> =
        applied.person_ids.iter().map(String::as_str).collect();
    report
        .involvements
        .retain(|i| deleted_involvements.contains(i.involvement_id.as_str()));
    report
        .persons
        .retain(|p| deleted_persons.contains(p.person_id.as_str()));
    state
        .metrics
        .retention_deleted("involvement", applied.involvement_ids.len());
    state
        .metrics
        .retention_deleted("person", applied.person_ids.len());
    tracing::info!(
        trigger,
        involvements = applied.involvement_ids.len(),
        persons = applied.person_ids.len(),
        skipped = report.skipped.len(),
        "retention run done"
    );
    Ok(report)
}

/// Each batch: audited durably, then deleted, then what was kept audited.
async fn apply(
    state: &NodeState,
    section: &RetentionSection,
    trigger: &str,
    plan: RetentionPlan,
) -> Result<RetentionApplied, Status> {
    let rules = section.rules();
    let mut total = RetentionApplied::default();
    let batches = plan
        .involvements
        .len()
        .max(plan.persons.len())
        .div_ceil(BATCH)
        .max(1);
    for batch in 0..batches {
        let range = |len: usize| (batch * BATCH).min(len)..((batch + 1) * BATCH).min(len);
        let part = RetentionPlan {
            today: plan.today,
            involvements: plan.involvements[range(plan.involvements.len())].to_vec(),
            persons: plan.persons[range(plan.persons.len())].to_vec(),
            // The dates are written with the first batch.
            newly_inactive: if batch == 0 {
                plan.newly_inactive.clone()
            } else {
                Vec::new()
            },
            active_again: if batch == 0 {
                plan.active_again.clone()
            } else {
                Vec::new()
            },
        };
        if !part.involvements.is_empty() || !part.persons.is_empty() {
            let event = AuditEvent::RetentionApplied {
                trigger: trigger.to_owned(),
                rules: section.describe(),
                involvement_ids: part.involvements.iter().map(|i| i.0.clone()).collect(),
                person_ids: part.persons.iter().map(|p| p.0.clone()).collect(),
            };
            if let Err(e) = state.store.append_audits_durably(vec![event]).await {
                return Err(state.write_failed(e, "").await);
            }
        }
        let applied = state
            .write("", move |store| {
                store.apply_retention(rules, &part).map_err(Into::into)
            })
            .await?;
        if !applied.skipped_involvements.is_empty() || !applied.skipped_persons.is_empty() {
            let event = AuditEvent::RetentionSkipped {
                involvement_ids: applied.skipped_involvements.clone(),
                person_ids: applied.skipped_persons.clone(),
            };
            if let Err(e) = state.store.append_audits_durably(vec![event]).await {
                return Err(state.write_failed(e, "").await);
            }
        }
        total.involvement_ids.extend(applied.involvement_ids);
        total.person_ids.extend(applied.person_ids);
        total
            .skipped_involvements
            .extend(applied.skipped_involvements);
        total.skipped_persons.extend(applied.skipped_persons);
    }
    Ok(total)
}

/// Audit retention: plans, and unless `dry_run`, seals and prunes (see
/// the module's docs). `None` when `retention.audit_years` is 0.
async fn archive_audit(
    state: &NodeState,
    section: &RetentionSection,
    trigger: &str,
    dry_run: bool,
) -> Result<Option<v1::AuditArchiving>, Status> {
    if section.audit_years == 0 {
        return Ok(None);
    }
    // The daily run and `patchwork retention run` take turns: two would
    // plan, seal and audit the same entries.
    static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _turn = TURN.lock().await;
    let mut report = v1::AuditArchiving {
        rule: section.describe_audit(),
        ..Default::default()
    };
    let cutoff = years_ago_unix_ms(section.audit_years);
    let store = state.store.clone();
    let plan = blocking(move || {
        store
            .audit_archive_plan(cutoff)
            .map_err(|e| store_status(e, ""))
    })
    .await?;
    let Some(plan) = plan else {
        return Ok(Some(report));
    };
    report.held_back = plan.held_back.clone().unwrap_or_default();
    if let Some(why) = &plan.held_back {
        tracing::warn!(reason = %why, "audit retention kept entries back");
    }
    if plan.last_seq < plan.first_seq {
        return Ok(Some(report)); // all held back
    }
    report.first_seq = plan.first_seq;
    report.last_seq = plan.last_seq;
    report.last_entry_at = rfc3339(plan.last_at_unix_ms);
    if dry_run {
        return Ok(Some(report));
    }
    let folder = section
        .audit_archive_dir
        .clone()
        .ok_or_else(|| Status::internal("retention.audit_archive_dir was not resolved"))?;
    let store = state.store.clone();
    let key = state.audit_key.clone();
    let node = state.node_identity.to_string();
    let rule = report.rule.clone();
    let sealing = plan.clone();
    let (record, path) = blocking(move || {
        // The node's checkpoint of its log at the archive's last entry,
        // signed now: with the file's own hashes it proves every entry in
        // it, offline, years after they left the log.
        let root = store
            .audit_root(sealing.last_seq)
            .map_err(|e| store_status(e, ""))?;
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let origin = Checkpoint::origin_of(&node);
        let checkpoint = Checkpoint {
            origin: origin.clone(),
            size: sealing.last_seq,
            root,
            time_unix: now,
        };
        // And of the log just before the archive's first entry: the hashes
        // the file carries of the entries before it must give this root, so
        // no entry can be dropped from its start either.
        let before = sealing.first_seq - 1;
        let checkpoint_before = if before == 0 {
            String::new()
        } else {
            key.sign(&Checkpoint {
                origin,
                size: before,
                root: store.audit_root(before).map_err(|e| store_status(e, ""))?,
                time_unix: now,
            })
        };
        let header = ArchiveHeader {
            node,
            sealed_unix_ms: now.saturating_mul(1000),
            rule,
            checkpoint: key.sign(&checkpoint),
            checkpoint_before,
        };
        let record = store
            .seal_audit_archive(&sealing, &folder, &header)
            .map_err(|e| store_status(e, ""))?;
        let path = folder.join(&record.file);
        Ok((record, path))
    })
    .await?;
    let event = AuditEvent::AuditArchived {
        trigger: trigger.to_owned(),
        rule: report.rule.clone(),
        first_seq: record.first_seq,
        last_seq: record.last_seq,
        file: record.file.clone(),
        sha256: record.sha256.clone(),
    };
    if let Err(e) = state.store.append_audits_durably(vec![event]).await {
        return Err(state.write_failed(e, "").await);
    }
    report.file = path.display().to_string();
    report.sha256 = record.sha256.clone();
    report.bytes = record.bytes;
    let archived = record.last_seq - record.first_seq + 1;
    let store = state.store.clone();
    let pruned = blocking(move || Ok(store.prune_audit_archived(record))).await?;
    if let Err(e) = pruned {
        return Err(state.write_failed(e, "").await);
    }
    state.metrics.audit_archived(archived);
    tracing::info!(
        trigger,
        first = report.first_seq,
        last = report.last_seq,
        file = %report.file,
        "audit entries archived and removed from the log"
    );
    Ok(Some(report))
}

/// Unix milliseconds `years` calendar years before now (29 February
/// becomes 28 February); the start of time if that is no date, so that
/// nothing is due rather than everything.
fn years_ago_unix_ms(years: u32) -> i64 {
    let now = time::OffsetDateTime::now_utc();
    let year = now.year() - i32::try_from(years).unwrap_or(i32::MAX / 2);
    now.replace_year(year)
        .or_else(|_| now.replace_day(28).and_then(|day| day.replace_year(year)))
        .map_or(i64::MIN, |then| {
            i64::try_from(then.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MIN)
        })
}

fn rfc3339(unix_ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(unix_ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

fn report_of(
    plan: &RetentionPlan,
    section: &RetentionSection,
    dry_run: bool,
) -> v1::RetentionReport {
    let mut involvements: Vec<_> = plan
        .involvements
        .iter()
        .map(|(id, person, end)| v1::RetainedInvolvement {
            involvement_id: id.clone(),
            person_id: person.clone(),
            end_date: Some(to_proto_date(*end)),
        })
        .collect();
    involvements.sort_by_key(|i| i.end_date.as_ref().map(|d| (d.year, d.month, d.day)));
    let mut persons: Vec<_> = plan
        .persons
        .iter()
        .map(|(id, since)| v1::RetainedPerson {
            person_id: id.clone(),
            inactive_since: Some(to_proto_date(*since)),
        })
        .collect();
    persons.sort_by_key(|p| p.inactive_since.as_ref().map(|d| (d.year, d.month, d.day)));
    v1::RetentionReport {
        dry_run,
        rules: section.describe(),
        involvements,
        persons,
        skipped: Vec::new(),
        refused: String::new(),
        newly_inactive: u32::try_from(plan.newly_inactive.len()).unwrap_or(u32::MAX),
        audit: None,
    }
}

/// How long from `now` (Unix seconds) until the next `hour`:00 UTC.
fn until_next(now: i64, hour: u8) -> Duration {
    let day = 86_400;
    let target = i64::from(hour) * 3600;
    let into_day = now.rem_euclid(day);
    let wait = (target - into_day).rem_euclid(day);
    Duration::from_secs(u64::try_from(if wait == 0 { day } else { wait }).unwrap_or(0))
}

/// The daily run, when any rule is set.
pub(crate) fn spawn_daily(state: NodeState, section: RetentionSection) -> Option<JoinHandle<()>> {
    if section.ended_involvements_years == 0
        && section.inactive_persons_years == 0
        && section.audit_years == 0
    {
        tracing::info!("retention: no [retention] rule is set, nothing is ever deleted by age");
        return None;
    }
    Some(tokio::spawn(async move {
        loop {
            let now = time::OffsetDateTime::now_utc().unix_timestamp();
            tokio::time::sleep(until_next(now, section.daily_at_hour_utc)).await;
            if let Err(status) = run(&state, &section, "daily", false, false).await {
                tracing::error!(error = %status.message(), "retention run failed");
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_daily_run_waits_for_the_next_hour_it_names() {
        let midnight = 1_796_601_600; // 2026-12-07 00:00 UTC
        assert_eq!(until_next(midnight, 2), Duration::from_secs(2 * 3600));
        assert_eq!(
            until_next(midnight + 3 * 3600, 2),
            Duration::from_secs(23 * 3600)
        );
        assert_eq!(
            until_next(midnight + 2 * 3600, 2),
            Duration::from_secs(86_400)
        );
    }
}
