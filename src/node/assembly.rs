//! Study completeness. A study is complete after `quiet_seconds` without a
//! new instance, as soon as a matching rule's expected series are all present
//! (after a short settle time), or at `force_complete_seconds` after its
//! receiving phase began. A late instance re-opens a complete study; its next
//! completion is a new generation and routes again (debounced by the same
//! quiet period).

use std::sync::Arc;
use std::time::Duration;

use tracing::{info, warn};

use crate::config::Config;
use crate::node::jobs::JobQueue;
use crate::node::routing::{Action, Router};
use crate::spool::index::now_ms;
use crate::spool::Index;

/// Seconds without new instances after which a study whose expected series
/// are all present counts as complete (instead of the full quiet period).
const EXPECTED_SERIES_SETTLE_MS: i64 = 2000;

pub struct StudyAssembler {
    cfg: Arc<Config>,
    index: Index,
    jobs: JobQueue,
    router: Router,
}

#[derive(Debug, PartialEq)]
pub enum Completion {
    Quiet,
    ExpectedSeries,
    Forced,
}

impl StudyAssembler {
    pub fn new(cfg: Arc<Config>, index: Index, jobs: JobQueue) -> StudyAssembler {
        let router = Router::new(&cfg);
        StudyAssembler { cfg, index, jobs, router }
    }

    /// Decides whether a receiving study is complete now.
    pub fn completion(&self, study_uid: &str, first: i64, last: i64, now: i64) -> rusqlite::Result<Option<Completion>> {
        let a = &self.cfg.assembly;
        if now - last >= a.quiet_seconds as i64 * 1000 {
            return Ok(Some(Completion::Quiet));
        }
        if now - first >= a.force_complete_seconds as i64 * 1000 {
            return Ok(Some(Completion::Forced));
        }
        if now - last >= EXPECTED_SERIES_SETTLE_MS.min(a.quiet_seconds as i64 * 1000) {
            if let Some(s) = self.index.summary(study_uid)? {
                if self.router.expected_series_present(&s) {
                    return Ok(Some(Completion::ExpectedSeries));
                }
            }
        }
        Ok(None)
    }

    /// One pass over the receiving studies. Returns how many completed.
    pub fn tick(&self) -> rusqlite::Result<usize> {
        let now = now_ms();
        let mut done = 0;
        for (uid, first, last) in self.index.receiving_studies()? {
            let Some(why) = self.completion(&uid, first, last, now)? else { continue };
            let Some(summary) = self.index.summary(&uid)? else { continue };
            let actions = self.router.route(&summary);
            let Some(generation) = self.jobs.complete_study(&uid, last, &actions)? else { continue };
            done += 1;
            let instances = self.index.study_instances(&uid)?.len();
            if actions.is_empty() {
                info!(study_uid = %uid, generation, instances, reason = ?why,
                      "study complete; no rule matched, kept under retention");
            } else {
                let list: Vec<String> = actions
                    .iter()
                    .map(|a| match a {
                        Action::Forward { rule, peer } => format!("{rule}: forward to {peer}"),
                        Action::Analyze { rule, pipeline, .. } => format!("{rule}: analyze with {pipeline}"),
                    })
                    .collect();
                info!(study_uid = %uid, generation, instances, reason = ?why, "study complete; {}", list.join("; "));
            }
        }
        Ok(done)
    }

    pub async fn run(self) {
        let me = Arc::new(self);
        loop {
            let m = me.clone();
            match tokio::task::spawn_blocking(move || m.tick()).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => warn!("assembly: {e}"),
                Err(e) => warn!("assembly task: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spool::InstanceHeader;

    #[test]
    fn quiet_forced_and_expected_series() {
        let dir = tempfile::tempdir().unwrap();
        let index = Index::open(&dir.path().join("i.sqlite")).unwrap();
        let cfg = Arc::new(
            Config::from_toml(
                "[assembly]\nquiet_seconds=10\nforce_complete_seconds=60\n[[peers]]\nname=\"p\"\nae_title=\"P\"\nhost=\"127.0.0.1\"\nport=1\n\
                 [[rules]]\nname=\"liver\"\nmatch={modality=[\"CT\"]}\nexpected_series=[\"arterial\",\"venous\"]\nforward_to=[\"p\"]\n",
            )
            .unwrap(),
        );
        let asm = StudyAssembler::new(cfg, index.clone(), JobQueue::new(index.clone()));
        let add = |sop: &str, series: &str, desc: &str| {
            let h = InstanceHeader {
                sop_uid: sop.into(),
                sop_class: "1.2.840.10008.5.1.4.1.1.2".into(),
                study_uid: "1.5".into(),
                series_uid: series.into(),
                modality: "CT".into(),
                series_description: desc.into(),
                transfer_syntax: "1.2.840.10008.1.2".into(),
                ..Default::default()
            };
            index.insert_instance(&h, "/x", 1, "AE").unwrap();
        };
        add("1.5.1.1", "1.5.1", "ARTERIAL");
        let (_, first, last) = index.receiving_studies().unwrap()[0].clone();
        assert_eq!(asm.completion("1.5", first, last, last + 5000).unwrap(), None);
        assert_eq!(asm.completion("1.5", first, last, last + 10_000).unwrap(), Some(Completion::Quiet));
        assert_eq!(asm.completion("1.5", last - 55_000, last, last + 5000).unwrap(), Some(Completion::Forced));
        add("1.5.2.1", "1.5.2", "PORTAL VENOUS");
        let (_, first, last) = index.receiving_studies().unwrap()[0].clone();
        assert_eq!(asm.completion("1.5", first, last, last + 1000).unwrap(), None, "settle time");
        assert_eq!(asm.completion("1.5", first, last, last + 2000).unwrap(), Some(Completion::ExpectedSeries));
    }
}
