//! Retention: what a council's schedule deletes, planned first, then
//! applied with every item checked again.
//!
//! Two rules about records (the audit log has no retention rule yet):
//! - an involvement ended more than N years ago is deleted (with its index
//!   entries);
//! - a person without a current involvement for more than N years is erased
//!   with everything naming them (`erasure`). "Since when" is the latest of:
//!   the end of their last involvement, and the day in the `retention` tree
//!   (person id → day). That day is written the first time a run finds the
//!   person without a current involvement and no involvement to date it by
//!   (so a person imported without any is kept N years from then), and
//!   moved on to the end date of an involvement the first rule deletes, so
//!   deleting old involvements never makes a person look inactive for
//!   longer than they were. A person found active again loses their day.
//!
//! A plan ([`Store::retention_plan`]) changes nothing: it is `retention run
//! --dry-run`'s answer, and what a run applies ([`Store::apply_retention`]),
//! which re-checks each item inside its transaction, so a person who became
//! active since the plan, or an involvement reopened, is skipped, never
//! deleted.

use std::collections::HashMap;

use sled::Transactional;

use super::{
    COUNT_INVOLVEMENTS, Kind, Store, StoreError, abort, add_count, decode, pair_key, tx_decode,
    tx_error,
};
use crate::model::{Date, Involvement};

/// The schedule: years, 0 for "kept".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionRules {
    pub ended_involvements_years: u32,
    pub inactive_persons_years: u32,
}

/// What a run deletes (or, planned, would delete).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionPlan {
    pub today: Option<Date>,
    /// Ended involvements past their time: id, person id, end date.
    pub involvements: Vec<(String, String, Date)>,
    /// Persons past their time: id, and since when they have had no
    /// current involvement.
    pub persons: Vec<(String, Date)>,
    /// Persons first found without a current involvement (dated today).
    pub newly_inactive: Vec<String>,
    /// Persons active again (their day goes).
    pub active_again: Vec<String>,
}

/// What a run deleted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionApplied {
    pub involvement_ids: Vec<String>,
    pub person_ids: Vec<String>,
    /// Planned but no longer due when applied (changed in between).
    pub skipped_involvements: Vec<String>,
    pub skipped_persons: Vec<String>,
}

/// `today` less `years` (29 February becomes the 28th).
pub fn years_before(today: Date, years: u32) -> Date {
    let year = today.year() - i32::try_from(years).unwrap_or(i32::MAX / 2);
    today
        .replace_year(year)
        .or_else(|_| today.replace_day(28).and_then(|d| d.replace_year(year)))
        .unwrap_or(Date::MIN)
}

fn day_bytes(date: Date) -> [u8; 4] {
    date.to_julian_day().to_be_bytes()
}

fn day_of(bytes: &[u8]) -> Option<Date> {
    let day = i32::from_be_bytes(<[u8; 4]>::try_from(bytes).ok()?);
    Date::from_julian_day(day).ok()
}

/// In a transaction deleting an involvement of `person_id` that ended on
/// `end`: the person keeps that date in the `retention` tree (the later of
/// it and the one there), so deleting old involvements never makes them
/// look inactive for longer than they were.
pub(crate) fn keep_end_date(
    retention: &sled::transaction::TransactionalTree,
    person_id: &str,
    end: Date,
) -> super::TxResult<()> {
    let key = person_id.as_bytes();
    let dated = retention.get(key)?.and_then(|b| day_of(&b));
    if dated.is_none_or(|day| day < end) {
        retention.insert(key, &day_bytes(end))?;
    }
    Ok(())
}

/// What one person's involvements say: whether one is current, and when
/// the last one ended.
#[derive(Debug, Default, Clone, Copy)]
struct Activity {
    active: bool,
    last_end: Option<Date>,
}

impl Activity {
    fn of<'a>(involvements: impl IntoIterator<Item = &'a Involvement>) -> Self {
        let mut activity = Activity::default();
        for involvement in involvements {
            match involvement.end_date {
                None => activity.active = true,
                Some(end) => activity.last_end = activity.last_end.max(Some(end)),
            }
        }
        activity
    }
}

impl Store {
    /// What `rules` delete as of `today`, without changing anything. Reads
    /// every involvement and every person once.
    pub fn retention_plan(
        &self,
        rules: RetentionRules,
        today: Date,
    ) -> Result<RetentionPlan, StoreError> {
        let mut plan = RetentionPlan {
            today: Some(today),
            ..RetentionPlan::default()
        };
        let involvement_cutoff = (rules.ended_involvements_years > 0)
            .then(|| years_before(today, rules.ended_involvements_years));
        let person_cutoff = (rules.inactive_persons_years > 0)
            .then(|| years_before(today, rules.inactive_persons_years));
        let mut activity: HashMap<String, Activity> = HashMap::new();
        for entry in self.involvements.iter() {
            let (_, bytes) = entry?;
            let involvement: Involvement = decode(Kind::Involvement, &bytes)?;
            let person = activity.entry(involvement.person_id.clone()).or_default();
            match involvement.end_date {
                None => person.active = true,
                Some(end) => {
                    person.last_end = person.last_end.max(Some(end));
                    if involvement_cutoff.is_some_and(|cutoff| end < cutoff) {
                        plan.involvements
                            .push((involvement.id, involvement.person_id, end));
                    }
                }
            }
        }
        if person_cutoff.is_none() && rules.ended_involvements_years == 0 {
            return Ok(plan);
        }
        for entry in self.persons.iter() {
            let (key, _) = entry?;
            let id = String::from_utf8_lossy(&key).into_owned();
            let Activity { active, last_end } = activity.get(&id).copied().unwrap_or_default();
            let marked = self.retention.get(&key)?.and_then(|b| day_of(&b));
            if active {
                if marked.is_some() {
                    plan.active_again.push(id);
                }
                continue;
            }
            let since = match (last_end, marked) {
                (None, None) => {
                    plan.newly_inactive.push(id);
                    continue;
                }
                (end, day) => end.max(day).unwrap_or(today),
            };
            if person_cutoff.is_some_and(|cutoff| since < cutoff) {
                plan.persons.push((id, since));
            }
        }
        // A person erased goes with their involvements: not listed twice.
        let erased: std::collections::HashSet<&str> =
            plan.persons.iter().map(|(id, _)| id.as_str()).collect();
        let involvements = std::mem::take(&mut plan.involvements);
        plan.involvements = involvements
            .into_iter()
            .filter(|(_, person, _)| !erased.contains(person.as_str()))
            .collect();
        Ok(plan)
    }

    /// Applies `plan` under `rules` (the cut-offs are worked out again from
    /// the plan's day): each item is checked again as it is deleted.
    pub fn apply_retention(
        &self,
        rules: RetentionRules,
        plan: &RetentionPlan,
    ) -> Result<RetentionApplied, StoreError> {
        let today = plan.today.unwrap_or_else(crate::model::today);
        let mut applied = RetentionApplied::default();
        if !plan.newly_inactive.is_empty() || !plan.active_again.is_empty() {
            // Only persons still held are dated: one erased since the plan
            // must leave nothing behind.
            let _person_writes = self.person_writes.lock();
            let _writing = self.writing();
            (&self.persons, &self.retention)
                .transaction(|(persons, retention)| {
                    for id in &plan.newly_inactive {
                        if persons.get(id.as_bytes())?.is_some() {
                            retention.insert(id.as_bytes(), &day_bytes(today))?;
                        }
                    }
                    for id in &plan.active_again {
                        retention.remove(id.as_bytes())?;
                    }
                    Ok(())
                })
                .map_err(tx_error)?;
        }
        if rules.ended_involvements_years > 0 {
            let cutoff = years_before(today, rules.ended_involvements_years);
            for chunk in plan.involvements.chunks(256) {
                let (deleted, skipped) = self.delete_ended_involvements(chunk, cutoff)?;
                applied.involvement_ids.extend(deleted);
                applied.skipped_involvements.extend(skipped);
            }
        }
        if rules.inactive_persons_years > 0 {
            let cutoff = years_before(today, rules.inactive_persons_years);
            for chunk in plan.persons.chunks(256) {
                let ids: Vec<String> = chunk.iter().map(|(id, _)| id.clone()).collect();
                let results = self.erase_persons(&ids, |involvements| {
                    let Activity { active, last_end } = Activity::of(involvements);
                    !active && last_end.is_none_or(|end| end < cutoff)
                })?;
                for (id, erased) in results {
                    match erased {
                        Some(_) => applied.person_ids.push(id),
                        None => applied.skipped_persons.push(id),
                    }
                }
            }
        }
        Ok(applied)
    }

    /// Deletes each of `planned` still ended before `cutoff`; returns the
    /// ids deleted and those skipped.
    fn delete_ended_involvements(
        &self,
        planned: &[(String, String, Date)],
        cutoff: Date,
    ) -> Result<(Vec<String>, Vec<String>), StoreError> {
        let _team = self.team_lock();
        let _writing = self.writing();
        (
            &self.involvements,
            &self.involvements_by_person,
            &self.involvements_by_practitioner,
            &self.meta,
            &self.retention,
        )
            .transaction(|(records, by_person, by_practitioner, meta, retention)| {
                let (mut deleted, mut skipped) = (Vec::new(), Vec::new());
                for (id, _, _) in planned {
                    let current: Option<Involvement> =
                        tx_decode(Kind::Involvement, records.get(id.as_bytes())?)?;
                    let Some(involvement) =
                        current.filter(|i| i.end_date.is_some_and(|end| end < cutoff))
                    else {
                        skipped.push(id.clone());
                        continue;
                    };
                    let Some(end) = involvement.end_date else {
                        return abort(StoreError::Corrupt {
                            kind: Kind::Involvement,
                            detail: "ended without an end date".into(),
                        });
                    };
                    records.remove(id.as_bytes())?;
                    by_person.remove(pair_key(&involvement.person_id, id))?;
                    by_practitioner.remove(pair_key(&involvement.practitioner_id, id))?;
                    keep_end_date(retention, &involvement.person_id, end)?;
                    add_count(meta, COUNT_INVOLVEMENTS, -1)?;
                    deleted.push(id.clone());
                }
                Ok((deleted, skipped))
            })
            .map_err(tx_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::calendar_date;

    #[test]
    fn years_before_keeps_the_day_or_falls_back_from_the_29th() {
        let day = |y, m, d| calendar_date(y, m, d).expect("date");
        assert_eq!(years_before(day(2026, 12, 7), 6), day(2020, 12, 7));
        assert_eq!(years_before(day(2024, 2, 29), 1), day(2023, 2, 28));
        assert_eq!(years_before(day(2024, 2, 29), 4), day(2020, 2, 29));
    }
}
