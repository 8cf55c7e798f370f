//! What happened to each study, for people: the status page, `/api/studies`
//! and `ainode jobs` read it from here, so they always agree. A study's
//! state is derived from its index row and the jobs of its current
//! generation (an earlier generation's jobs are history):
//!
//! - `receiving`: instances are still arriving (or it re-opened);
//! - `complete`: complete, its jobs still running, or no rule matched it;
//! - `failed`: one of its jobs is a dead letter;
//! - `analysed`: every job done and one of them an analysis;
//! - `forwarded`: every job done, all of them forwards.

use serde::Serialize;

use super::jobs::{Job, JobQueue};
use crate::spool::index::{ResultRow, StudyRow};
use crate::spool::Index;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StudyState {
    Receiving,
    Complete,
    Forwarded,
    Analysed,
    Failed,
}

impl StudyState {
    pub fn as_str(self) -> &'static str {
        match self {
            StudyState::Receiving => "receiving",
            StudyState::Complete => "complete",
            StudyState::Forwarded => "forwarded",
            StudyState::Analysed => "analysed",
            StudyState::Failed => "failed",
        }
    }
}

/// One study with its state, jobs and result objects.
#[derive(Debug, Clone, Serialize)]
pub struct StudyOverview {
    #[serde(flatten)]
    pub study: StudyRow,
    /// The derived state (the index's own `state` is only receiving / complete).
    #[serde(rename = "status")]
    pub state: StudyState,
    /// Why, in words: "no rule matched", "1 dead letter", "2 of 3 jobs done".
    pub detail: String,
    /// Every job of the study, all generations, oldest first.
    pub jobs: Vec<Job>,
    pub results: Vec<ResultRow>,
}

/// A page of studies, newest activity first.
#[derive(Debug, Clone, Serialize)]
pub struct StudyPage {
    pub studies: Vec<StudyOverview>,
    pub limit: usize,
    pub offset: usize,
    /// Whether a next page exists.
    pub more: bool,
}

/// The state of a study from its row and its jobs.
pub fn derive_state(study: &StudyRow, jobs: &[Job]) -> (StudyState, String) {
    if study.state == "receiving" {
        return (StudyState::Receiving, format!("{} instances so far", study.instances));
    }
    let current: Vec<&Job> = jobs.iter().filter(|j| j.generation == study.generation).collect();
    if current.is_empty() {
        return (StudyState::Complete, "no rule matched".into());
    }
    let count = |state: &str| current.iter().filter(|j| j.state == state).count();
    let (dead, done) = (count("dead"), count("done"));
    if dead > 0 {
        let s = if dead == 1 { "" } else { "s" };
        return (StudyState::Failed, format!("{dead} dead letter{s}"));
    }
    if done < current.len() {
        return (StudyState::Complete, format!("{done} of {} jobs done", current.len()));
    }
    if current.iter().any(|j| j.kind == "analyze") {
        (StudyState::Analysed, format!("{done} jobs done"))
    } else {
        (StudyState::Forwarded, format!("{done} jobs done"))
    }
}

fn overview(index: &Index, jobs: &JobQueue, study: StudyRow) -> rusqlite::Result<StudyOverview> {
    let study_jobs = jobs.study_jobs(&study.study_uid)?;
    let results = index.study_result_rows(&study.study_uid)?;
    let (state, detail) = derive_state(&study, &study_jobs);
    Ok(StudyOverview { study, state, detail, jobs: study_jobs, results })
}

/// `limit` studies after `offset`, newest activity first. The work per call
/// is bounded by `limit`, never by the size of the index.
pub fn recent_studies(index: &Index, jobs: &JobQueue, limit: usize, offset: usize) -> rusqlite::Result<StudyPage> {
    let mut rows = index.recent_studies(limit + 1, offset)?;
    let more = rows.len() > limit;
    rows.truncate(limit);
    let studies = rows.into_iter().map(|s| overview(index, jobs, s)).collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(StudyPage { studies, limit, offset, more })
}

pub fn study(index: &Index, jobs: &JobQueue, study_uid: &str) -> rusqlite::Result<Option<StudyOverview>> {
    index.study_row(study_uid)?.map(|s| overview(index, jobs, s)).transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn study(state: &str, generation: i64) -> StudyRow {
        StudyRow {
            study_uid: "1.2".into(),
            patient_id: String::new(),
            patient_name: String::new(),
            study_date: String::new(),
            study_description: String::new(),
            accession: String::new(),
            calling_ae: String::new(),
            modalities: vec![],
            instances: 3,
            state: state.into(),
            generation,
            first_received: 0,
            last_received: 0,
            completed_at: None,
        }
    }

    fn job(kind: &str, state: &str, generation: i64) -> Job {
        Job {
            id: 1,
            kind: kind.into(),
            study_uid: "1.2".into(),
            rule: "r".into(),
            destination: String::new(),
            pipeline: String::new(),
            generation,
            state: state.into(),
            attempts: 1,
            last_error: None,
            instances: 0,
            next_attempt_at: 0,
            created_at: 0,
            updated_at: 0,
        }
    }

    #[test]
    fn state_follows_the_current_generation() {
        assert_eq!(derive_state(&study("receiving", 1), &[job("forward", "dead", 1)]).0, StudyState::Receiving);
        assert_eq!(derive_state(&study("complete", 1), &[]), (StudyState::Complete, "no rule matched".into()));
        // an old generation's dead letter does not fail the re-completed study
        let old_dead = [job("forward", "dead", 1), job("forward", "done", 2)];
        assert_eq!(derive_state(&study("complete", 2), &old_dead).0, StudyState::Forwarded);
        assert_eq!(derive_state(&study("complete", 1), &old_dead[..1]), (StudyState::Failed, "1 dead letter".into()));
        let running = [job("analyze", "done", 1), job("results", "retry", 1)];
        assert_eq!(derive_state(&study("complete", 1), &running), (StudyState::Complete, "1 of 2 jobs done".into()));
        let analysed = [job("forward", "done", 1), job("analyze", "done", 1), job("results", "done", 1)];
        assert_eq!(derive_state(&study("complete", 1), &analysed).0, StudyState::Analysed);
    }
}
