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

use std::time::Duration;

use patchwork_proto::v1;
use patchwork_store::AuditEvent;
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
        return Ok(report);
    }
    let applied = apply(state, section, trigger, plan).await?;
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
    if section.ended_involvements_years == 0 && section.inactive_persons_years == 0 {
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
