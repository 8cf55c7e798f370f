//! The durable job queue (SQLite, in the spool index). A job is created in
//! the same transaction that marks its study complete, so a crash can never
//! complete a study without its jobs or create them twice (UNIQUE key).

use rusqlite::{params, OptionalExtension};
use serde::Serialize;

use crate::node::routing::Action;
use crate::spool::index::now_ms;
use crate::spool::{Index, StoredInstance};

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Job {
    pub id: i64,
    pub kind: String,
    pub study_uid: String,
    pub rule: String,
    pub destination: String,
    pub pipeline: String,
    pub generation: i64,
    pub state: String,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub instances: i64,
    pub next_attempt_at: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

const COLUMNS: &str =
    "id, kind, study_uid, rule, destination, pipeline, generation, state, attempts, last_error, instances, next_attempt_at, created_at, updated_at";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Job> {
    Ok(Job {
        id: r.get(0)?,
        kind: r.get(1)?,
        study_uid: r.get(2)?,
        rule: r.get(3)?,
        destination: r.get(4)?,
        pipeline: r.get(5)?,
        generation: r.get(6)?,
        state: r.get(7)?,
        attempts: r.get(8)?,
        last_error: r.get(9)?,
        instances: r.get(10)?,
        next_attempt_at: r.get(11)?,
        created_at: r.get(12)?,
        updated_at: r.get(13)?,
    })
}

#[derive(Clone)]
pub struct JobQueue {
    index: Index,
}

impl JobQueue {
    pub fn new(index: Index) -> JobQueue {
        JobQueue { index }
    }

    /// Records the result objects of an analyze job and queues a `results`
    /// job per destination, then marks the analyze job done, all in one
    /// transaction: a crash leaves either nothing (the job runs again and
    /// rewrites the same files) or everything.
    pub fn commit_results(&self, job: &Job, results: &[StoredInstance], send_to: &[String]) -> rusqlite::Result<()> {
        let now = now_ms();
        let mut conn = self.index.conn();
        let tx = conn.transaction()?;
        for r in results {
            tx.execute(
                "INSERT OR REPLACE INTO results (sop_uid, sop_class, series_uid, study_uid, transfer_syntax, path, job_id, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![r.sop_uid, r.sop_class, r.series_uid, r.study_uid, r.transfer_syntax, r.path, job.id, now],
            )?;
            // a re-run (new generation) replaces the objects: send them again
            tx.execute("DELETE FROM deliveries WHERE sop_uid = ?1", [&r.sop_uid])?;
        }
        for peer in send_to {
            tx.execute(
                "INSERT OR IGNORE INTO jobs (kind, study_uid, rule, destination, pipeline, generation, state, next_attempt_at, created_at, updated_at)
                 VALUES ('results', ?1, ?2, ?3, ?4, ?5, 'pending', ?6, ?6, ?6)",
                params![job.study_uid, job.rule, peer, job.pipeline, job.generation, now],
            )?;
        }
        tx.execute(
            "UPDATE jobs SET state = 'done', last_error = NULL, instances = ?2, updated_at = ?3 WHERE id = ?1",
            params![job.id, results.len() as i64, now],
        )?;
        tx.commit()
    }

    /// Marks a study complete (new generation) and enqueues its actions, in
    /// one transaction. Does nothing and returns None if an instance arrived
    /// since `last_received` was read (the study is not quiet after all).
    pub fn complete_study(&self, study_uid: &str, last_received: i64, actions: &[Action]) -> rusqlite::Result<Option<i64>> {
        let now = now_ms();
        let mut conn = self.index.conn();
        let tx = conn.transaction()?;
        let changed = tx.execute(
            "UPDATE studies SET state = 'complete', generation = generation + 1, completed_at = ?3
             WHERE study_uid = ?1 AND state = 'receiving' AND last_received = ?2",
            params![study_uid, last_received, now],
        )?;
        if changed == 0 {
            return Ok(None);
        }
        let generation: i64 = tx.query_row("SELECT generation FROM studies WHERE study_uid = ?1", [study_uid], |r| r.get(0))?;
        for a in actions {
            let (kind, rule, dest, pipeline) = match a {
                Action::Forward { rule, peer } => ("forward", rule, peer.as_str(), ""),
                Action::Analyze { rule, pipeline, .. } => ("analyze", rule, "", pipeline.as_str()),
            };
            tx.execute(
                "INSERT OR IGNORE INTO jobs (kind, study_uid, rule, destination, pipeline, generation, state, next_attempt_at, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'pending', ?7, ?7, ?7)",
                params![kind, study_uid, rule, dest, pipeline, generation, now],
            )?;
        }
        tx.commit()?;
        Ok(Some(generation))
    }

    /// Takes the next due job of `kind` for `destination` and marks it running.
    pub fn claim(&self, kind: &str, destination: &str) -> rusqlite::Result<Option<Job>> {
        self.claim_any(&[kind], destination)
    }

    /// Takes the next due job of any of `kinds` for `destination` (oldest due
    /// first, so no kind starves the other) and marks it running.
    pub fn claim_any(&self, kinds: &[&str], destination: &str) -> rusqlite::Result<Option<Job>> {
        let now = now_ms();
        let mut conn = self.index.conn();
        let tx = conn.transaction()?;
        // kinds are our own constants; the placeholders keep them out of the SQL text anyway
        let marks: Vec<String> = (0..kinds.len()).map(|i| format!("?{}", i + 3)).collect();
        let sql = format!(
            "SELECT {COLUMNS} FROM jobs WHERE kind IN ({}) AND destination = ?1 AND state IN ('pending','retry')
             AND next_attempt_at <= ?2 ORDER BY next_attempt_at, id LIMIT 1",
            marks.join(", ")
        );
        let mut args: Vec<&dyn rusqlite::ToSql> = vec![&destination, &now];
        args.extend(kinds.iter().map(|k| k as &dyn rusqlite::ToSql));
        let job = tx.query_row(&sql, args.as_slice(), row).optional()?;
        if let Some(j) = &job {
            tx.execute("UPDATE jobs SET state = 'running', attempts = attempts + 1, updated_at = ?2 WHERE id = ?1", params![j.id, now])?;
        }
        tx.commit()?;
        Ok(job.map(|mut j| {
            j.state = "running".into();
            j.attempts += 1;
            j
        }))
    }

    pub fn finish(&self, id: i64, instances: i64) -> rusqlite::Result<()> {
        self.index
            .conn()
            .execute("UPDATE jobs SET state = 'done', last_error = NULL, instances = ?2, updated_at = ?3 WHERE id = ?1", params![id, instances, now_ms()])?;
        Ok(())
    }

    /// Records a failed attempt: retry at `retry_at`, or dead letter when None.
    pub fn fail(&self, id: i64, error: &str, instances: i64, retry_at: Option<i64>) -> rusqlite::Result<()> {
        let (state, next) = match retry_at {
            Some(t) => ("retry", t),
            None => ("dead", now_ms()),
        };
        self.index.conn().execute(
            "UPDATE jobs SET state = ?2, last_error = ?3, instances = ?4, next_attempt_at = ?5, updated_at = ?6 WHERE id = ?1",
            params![id, state, error, instances, next, now_ms()],
        )?;
        Ok(())
    }

    /// Records a failed attempt of `job` under the export retry policy:
    /// retry after a backoff, or a dead letter after `max_attempts`.
    pub fn fail_or_retry(&self, job: &Job, error: &str, instances: i64, policy: &crate::config::ExportConfig) {
        let attempts = job.attempts as u32;
        let retry_at = if attempts >= policy.max_attempts {
            tracing::warn!(study_uid = %job.study_uid, job = job.id, kind = %job.kind, attempts, "dead letter: {error}");
            None
        } else {
            let delay = backoff_ms(attempts, policy.backoff_initial_seconds, policy.backoff_max_seconds);
            tracing::warn!(study_uid = %job.study_uid, job = job.id, kind = %job.kind, attempts, retry_in_ms = delay, "failed: {error}");
            Some(now_ms() + delay)
        };
        if let Err(e) = self.fail(job.id, error, instances, retry_at) {
            tracing::warn!(job = job.id, "cannot record the failure: {e}");
        }
    }

    /// After a restart: jobs left running by the previous process run again.
    pub fn resume_interrupted(&self) -> rusqlite::Result<usize> {
        self.index.conn().execute("UPDATE jobs SET state = 'retry', next_attempt_at = ?1 WHERE state = 'running'", [now_ms()])
    }

    /// Puts a job (typically a dead letter) back in the queue with fresh attempts.
    pub fn retry(&self, id: i64) -> rusqlite::Result<bool> {
        let n = self.index.conn().execute(
            "UPDATE jobs SET state = 'pending', attempts = 0, next_attempt_at = ?2, updated_at = ?2 WHERE id = ?1 AND state IN ('dead','retry','done')",
            params![id, now_ms()],
        )?;
        Ok(n == 1)
    }

    pub fn job(&self, id: i64) -> rusqlite::Result<Option<Job>> {
        self.index.conn().query_row(&format!("SELECT {COLUMNS} FROM jobs WHERE id = ?1"), [id], row).optional()
    }

    /// Jobs of one study, oldest first (indexed by study).
    pub fn study_jobs(&self, study_uid: &str) -> rusqlite::Result<Vec<Job>> {
        let conn = self.index.conn();
        let mut st = conn.prepare(&format!("SELECT {COLUMNS} FROM jobs WHERE study_uid = ?1 ORDER BY id"))?;
        let rows = st.query_map([study_uid], row)?;
        rows.collect()
    }

    /// Jobs in `state`, most recently updated first: `limit` after `offset`.
    pub fn in_state(&self, state: &str, limit: usize, offset: usize) -> rusqlite::Result<Vec<Job>> {
        let conn = self.index.conn();
        let mut st = conn.prepare(&format!("SELECT {COLUMNS} FROM jobs WHERE state = ?1 ORDER BY updated_at DESC, id DESC LIMIT ?2 OFFSET ?3"))?;
        let rows = st.query_map(params![state, limit as i64, offset as i64], row)?;
        rows.collect()
    }

    /// (kind, state, count) of the jobs not done. Done jobs are history and
    /// grow with the index; these are bounded by the work at hand (and the
    /// dead letters), read through the state index.
    pub fn open_counts(&self) -> rusqlite::Result<Vec<(String, String, i64)>> {
        let conn = self.index.conn();
        let mut st = conn
            .prepare("SELECT kind, state, COUNT(*) FROM jobs WHERE state IN ('pending','running','retry','dead') GROUP BY kind, state ORDER BY kind, state")?;
        let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        rows.collect()
    }

    pub fn list(&self) -> rusqlite::Result<Vec<Job>> {
        let conn = self.index.conn();
        let mut st = conn.prepare(&format!("SELECT {COLUMNS} FROM jobs ORDER BY id"))?;
        let rows = st.query_map([], row)?;
        rows.collect()
    }
}

/// Takes jobs with `claim` (run on a blocking thread) and runs each with
/// `run`, one at a time, until the process ends; idles 300 ms when none is due.
pub async fn run_jobs<C, R, F>(claim: C, mut run: R)
where
    C: Fn() -> rusqlite::Result<Option<Job>> + Clone + Send + 'static,
    R: FnMut(Job) -> F,
    F: std::future::Future<Output = ()>,
{
    loop {
        match tokio::task::spawn_blocking(claim.clone()).await {
            Ok(Ok(Some(job))) => run(job).await,
            Ok(Ok(None)) => tokio::time::sleep(std::time::Duration::from_millis(300)).await,
            Ok(Err(e)) => {
                tracing::warn!("job queue: {e}");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
            Err(e) => tracing::warn!("job queue task: {e}"),
        }
    }
}

/// Exponential backoff with ±25 % jitter, capped: the delay before attempt
/// `attempts + 1` in milliseconds.
pub fn backoff_ms(attempts: u32, initial_s: u64, max_s: u64) -> i64 {
    let base = (initial_s as f64) * 2f64.powi(attempts.saturating_sub(1).min(30) as i32);
    let capped = base.min(max_s as f64);
    let jitter = 0.75 + rand::random::<f64>() * 0.5;
    (capped * jitter * 1000.0) as i64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spool::{InstanceHeader, StoredInstance};

    fn queue() -> (tempfile::TempDir, JobQueue, Index) {
        let dir = tempfile::tempdir().unwrap();
        let index = Index::open(&dir.path().join("i.sqlite")).unwrap();
        (dir, JobQueue::new(index.clone()), index)
    }

    fn add_instance(index: &Index, sop: &str) -> i64 {
        let h = InstanceHeader {
            sop_uid: sop.into(),
            sop_class: "1.2.840.10008.5.1.4.1.1.2".into(),
            study_uid: "1.9".into(),
            series_uid: "1.9.1".into(),
            transfer_syntax: "1.2.840.10008.1.2".into(),
            ..Default::default()
        };
        index.insert_instance(&h, &format!("/x/{sop}.dcm"), 10, "AE").unwrap();
        index.receiving_studies().unwrap()[0].2
    }

    #[test]
    fn completion_enqueues_once_and_late_arrival_reopens() {
        let (_d, q, index) = queue();
        let last = add_instance(&index, "1.9.1.1");
        let fwd = vec![Action::Forward { rule: "r".into(), peer: "p".into() }];
        assert_eq!(q.complete_study("1.9", last, &fwd).unwrap(), Some(1));
        // already complete: no second completion, no second job
        assert_eq!(q.complete_study("1.9", last, &fwd).unwrap(), None);
        assert_eq!(q.list().unwrap().len(), 1);
        // a late instance re-opens the study; its completion is generation 2
        std::thread::sleep(std::time::Duration::from_millis(5));
        let last2 = add_instance(&index, "1.9.1.2");
        assert_eq!(q.complete_study("1.9", last, &fwd).unwrap(), None, "stale last_received must not complete");
        assert_eq!(q.complete_study("1.9", last2, &fwd).unwrap(), Some(2));
        assert_eq!(q.list().unwrap().len(), 2);
        // only the new instance is undelivered once the first was delivered
        index.mark_delivered("1.9.1.1", "p", 0).unwrap();
        let left = index.undelivered("1.9", "p").unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].sop_uid, "1.9.1.2");
    }

    #[test]
    fn claim_fail_retry_dead_and_resume() {
        let (_d, q, index) = queue();
        let last = add_instance(&index, "1.9.1.1");
        q.complete_study("1.9", last, &[Action::Forward { rule: "r".into(), peer: "p".into() }]).unwrap();
        let j = q.claim("forward", "p").unwrap().unwrap();
        assert_eq!(j.attempts, 1);
        assert!(q.claim("forward", "p").unwrap().is_none(), "running job is not claimed twice");
        q.fail(j.id, "refused", 1, Some(now_ms() + 60_000)).unwrap();
        assert!(q.claim("forward", "p").unwrap().is_none(), "not due yet");
        q.fail(j.id, "refused", 1, None).unwrap();
        assert_eq!(q.list().unwrap()[0].state, "dead");
        assert!(q.retry(j.id).unwrap());
        let j = q.claim("forward", "p").unwrap().unwrap();
        assert_eq!(j.attempts, 1);
        // crash while running: resumed on restart
        assert_eq!(q.resume_interrupted().unwrap(), 1);
        assert!(q.claim("forward", "p").unwrap().is_some());
    }

    #[test]
    fn results_are_recorded_with_their_send_jobs_and_never_route() {
        let (_d, q, index) = queue();
        let last = add_instance(&index, "1.9.1.1");
        let analyze = vec![Action::Analyze { rule: "hip".into(), pipeline: "hip-tha".into(), send_to: vec!["pacs".into()] }];
        q.complete_study("1.9", last, &analyze).unwrap();
        let job = q.claim("analyze", "").unwrap().unwrap();
        let sr = StoredInstance {
            sop_uid: "2.5.1".into(),
            sop_class: "1.2.840.10008.5.1.4.1.1.88.33".into(),
            series_uid: "2.5".into(),
            study_uid: "1.9".into(),
            transfer_syntax: "1.2.840.10008.1.2.1".into(),
            path: "/r/2.5.1.dcm".into(),
        };
        q.commit_results(&job, std::slice::from_ref(&sr), &["pacs".into()]).unwrap();
        let jobs = q.list().unwrap();
        assert_eq!(jobs.iter().find(|j| j.id == job.id).unwrap().state, "done");
        let send = q.claim("results", "pacs").unwrap().unwrap();
        assert_eq!((send.study_uid.as_str(), send.rule.as_str(), send.generation), ("1.9", "hip", job.generation));
        assert_eq!(index.undelivered_results("1.9", "pacs").unwrap(), vec![sr.clone()]);
        // results are not instances: forwarding and routing never see them
        assert_eq!(index.undelivered("1.9", "pacs").unwrap().len(), 1);
        assert!(index.is_result("2.5.1").unwrap() && !index.is_result("1.9.1.1").unwrap());
        index.mark_delivered("2.5.1", "pacs", 0).unwrap();
        assert!(index.undelivered_results("1.9", "pacs").unwrap().is_empty());
        // the same job committed again (a re-run) makes no second send job
        q.commit_results(&job, std::slice::from_ref(&sr), &["pacs".into()]).unwrap();
        assert_eq!(q.list().unwrap().iter().filter(|j| j.kind == "results").count(), 1);
        index.delete_study("1.9").unwrap();
        assert!(index.study_results("1.9").unwrap().is_empty());
    }

    #[test]
    fn a_destination_takes_forward_and_results_jobs_oldest_first() {
        let (_d, q, index) = queue();
        let last = add_instance(&index, "1.9.1.1");
        let actions = vec![
            Action::Forward { rule: "f".into(), peer: "p".into() },
            Action::Analyze { rule: "a".into(), pipeline: "hip-tha".into(), send_to: vec!["p".into()] },
        ];
        q.complete_study("1.9", last, &actions).unwrap();
        let analyze = q.claim("analyze", "").unwrap().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(5));
        q.commit_results(&analyze, &[], &["p".into()]).unwrap();
        let kinds: Vec<String> = std::iter::from_fn(|| q.claim_any(&["forward", "results"], "p").unwrap()).map(|j| j.kind).collect();
        assert_eq!(kinds, vec!["forward", "results"]);
        assert!(q.claim_any(&["forward", "results"], "other").unwrap().is_none());
    }

    #[test]
    fn backoff_grows_and_caps() {
        for _ in 0..50 {
            let a = backoff_ms(1, 2, 60);
            assert!((1500..=2500).contains(&a), "{a}");
            let c = backoff_ms(20, 2, 60);
            assert!((45_000..=75_000).contains(&c), "{c}");
        }
    }
}
