//! Running pipelines: offline on files (`ainode run`) and in the node, where
//! the analysis worker takes `analyze` jobs (made by routing when a study
//! completes), runs the pipeline on the study's stored instances, writes the
//! result objects to `data_dir/results/STUDY/` and, in one transaction,
//! records them and queues a `results` job per `send_to` peer (sent by that
//! peer's export worker). Result objects live in their own table, so they
//! never re-open, route or analyse a study; one echoed back by a peer is
//! acknowledged and dropped by the SCP.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use serde_json::json;
use tracing::{info, warn, Instrument};

use crate::config::Config;
use crate::encode::commands::Written;
use crate::encode::results::write_results;
use crate::encode::EncoderSettings;
use crate::metrics::Metrics;
use crate::node::jobs::{Job, JobQueue};
use crate::pipelines::Pipeline;
use crate::spool::index::StoredInstance;
use crate::spool::Spool;

/// What `ainode run` did.
pub struct OfflineRun {
    /// Per study: the images' findings and the objects written.
    pub summary: serde_json::Value,
    pub written: Vec<Written>,
}

/// DICOM Part 10 files under `inputs` (files, or folders searched
/// recursively), grouped by Study Instance UID; other files are skipped.
fn files_by_study(inputs: &[PathBuf]) -> anyhow::Result<BTreeMap<String, Vec<PathBuf>>> {
    let sources = crate::encode::commands::open_dicom(inputs)?;
    let mut out: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for s in sources {
        out.entry(s.study_instance_uid.clone()).or_default().push(s.path.clone());
    }
    Ok(out)
}

/// `ainode run --pipeline NAME --input ... --output DIR`: each study of the
/// inputs is analysed; its result objects go to `DIR/STUDY_UID/`, and with
/// `label_maps` each segmentation's label map (the SEG's voxels, labels =
/// segment numbers) to `LABEL_MAPS/STUDY_UID/SERIES_UID.nii.gz`.
pub fn run_offline(cfg: &Config, pipeline: &str, inputs: &[PathBuf], output: &Path, label_maps: Option<&Path>) -> anyhow::Result<OfflineRun> {
    let studies = files_by_study(inputs)?;
    let p = Pipeline::load(pipeline, &cfg.pipelines)?;
    let settings = EncoderSettings::from_config(cfg);
    let mut summaries = Vec::new();
    let mut written = Vec::new();
    for (study, files) in &studies {
        let out = p.analyze(files).with_context(|| format!("study {study}"))?;
        let dir = output.join(crate::spool::safe_name(study));
        let w = write_results(&settings, &out, &dir).with_context(|| format!("study {study}: writing results"))?;
        let maps = match label_maps {
            Some(root) => write_label_maps(&root.join(crate::spool::safe_name(study)), &out.reports).with_context(|| format!("study {study}"))?,
            None => Vec::new(),
        };
        summaries.push(json!({
            "study_instance_uid": study,
            "model_version": out.model_version,
            "reports": out.reports.iter().map(|r| r.summary.clone()).collect::<Vec<_>>(),
            "results": w.iter().map(|w| json!({
                "path": w.path, "sop_class_uid": w.sop_class_uid, "sop_instance_uid": w.sop_instance_uid,
            })).collect::<Vec<_>>(),
            "label_maps": maps,
        }));
        written.extend(w);
    }
    Ok(OfflineRun { summary: json!({ "pipeline": pipeline, "studies": summaries }), written })
}

/// Each report's segmentation as `dir/SERIES_UID.nii.gz`; what was written, as JSON.
fn write_label_maps(dir: &Path, reports: &[crate::pipelines::Report]) -> anyhow::Result<Vec<serde_json::Value>> {
    let mut maps = Vec::new();
    for seg in reports.iter().filter_map(|r| r.segmentation.as_ref()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let series = &seg.labels.grid.series_instance_uid;
        let path = dir.join(format!("{}.nii.gz", crate::spool::safe_name(series)));
        crate::encode::labelmap::write_nifti(&seg.labels, &path).with_context(|| format!("label map of series {series}"))?;
        maps.push(json!({
            "series_instance_uid": series,
            "path": path,
            "segments": seg.segments.iter().map(|s| json!({"number": s.number, "label": s.label})).collect::<Vec<_>>(),
        }));
    }
    Ok(maps)
}

/// Runs `analyze` jobs until the process ends; one at a time (a pipeline
/// uses the whole CPU or GPU). Pipelines are loaded into `loaded` at start
/// (the rules' ones) or first use, and kept.
pub async fn run_analysis_worker(cfg: Arc<Config>, spool: Spool, jobs: JobQueue, loaded: Arc<PipelineCache>, metrics: Arc<Metrics>) {
    let span = tracing::info_span!("analyze");
    async move {
        // load what the rules use now, so that a missing or wrong weights file
        // shows at startup rather than at the first study
        let names: std::collections::BTreeSet<String> = cfg.rules.iter().filter_map(|r| r.analyze.clone()).collect();
        for name in names {
            let (c, map) = (cfg.clone(), loaded.clone());
            match tokio::task::spawn_blocking(move || map.get(&name, &c).map(|_| name)).await {
                Ok(Ok(name)) => info!(pipeline = %name, "pipeline loaded"),
                Ok(Err(e)) => warn!("a rule's pipeline cannot run; its studies become dead letters until this is fixed: {e:#}"),
                Err(e) => warn!("pipeline loading task: {e}"),
            }
        }
        let claim = {
            let jobs = jobs.clone();
            move || jobs.claim("analyze", "")
        };
        crate::node::jobs::run_jobs(claim, |job| {
            let (cfg, spool, jobs, loaded, metrics) = (cfg.clone(), spool.clone(), jobs.clone(), loaded.clone(), metrics.clone());
            async move {
                // its own thread at the compute niceness, not tokio's blocking pool
                // (whose threads also fsync received instances at normal priority)
                let nice = cfg.pipelines.nice;
                let (done, wait) = tokio::sync::oneshot::channel();
                let spawned = std::thread::Builder::new().name("analysis".into()).spawn(move || {
                    crate::models::threads::set_current_thread_nice(nice);
                    run_job(&cfg, &spool, &jobs, &loaded, &metrics, job);
                    let _ = done.send(());
                });
                match spawned {
                    Ok(_) => {
                        if wait.await.is_err() {
                            warn!("analysis thread ended without finishing its job (it resumes at the next start)");
                        }
                    }
                    Err(e) => warn!("cannot start an analysis thread: {e}"),
                }
            }
        })
        .await
    }
    .instrument(span)
    .await
}

/// Pipelines by name, loaded on first use and kept for the life of the
/// node, with the outcome of the last load for the status page: a failed
/// load (no weights yet, wrong weights) is tried again at the next job.
#[derive(Default)]
pub struct PipelineCache {
    slots: std::sync::Mutex<HashMap<String, Slot>>,
}

enum Slot {
    Loaded(Arc<Pipeline>),
    Failed(String),
}

/// Whether a pipeline's weights are in memory, for `/api/status`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PipelineStatus {
    pub name: String,
    /// The rules that run it.
    pub rules: Vec<String>,
    /// `loaded`, `failed` or `not loaded` (no rule has needed it yet).
    pub weights: &'static str,
    pub model_version: Option<String>,
    /// The load error, naming the weights file and how to make it.
    pub error: Option<String>,
}

impl PipelineCache {
    /// The pipeline `name`, loaded now if it is not yet.
    pub fn get(&self, name: &str, cfg: &Config) -> anyhow::Result<Arc<Pipeline>> {
        if let Some(Slot::Loaded(p)) = self.slots.lock().expect("pipeline cache").get(name) {
            return Ok(p.clone());
        }
        // loading takes seconds: not under the lock, so the status page never waits on it
        let loaded = Pipeline::load(name, &cfg.pipelines);
        let mut slots = self.slots.lock().expect("pipeline cache");
        match loaded {
            Ok(p) => {
                let p = Arc::new(p);
                slots.insert(name.to_string(), Slot::Loaded(p.clone()));
                Ok(p)
            }
            Err(e) => {
                slots.insert(name.to_string(), Slot::Failed(format!("{e:#}")));
                Err(e)
            }
        }
    }

    /// Every pipeline of this build, with the rules that use it.
    pub fn status(&self, cfg: &Config) -> Vec<PipelineStatus> {
        let slots = self.slots.lock().expect("pipeline cache");
        crate::pipelines::names()
            .into_iter()
            .map(|name| {
                let rules = cfg.rules.iter().filter(|r| r.analyze.as_deref() == Some(name)).map(|r| r.name.clone()).collect();
                let (weights, model_version, error) = match slots.get(name) {
                    Some(Slot::Loaded(p)) => ("loaded", Some(p.algorithm().version.clone()), None),
                    Some(Slot::Failed(e)) => ("failed", None, Some(e.clone())),
                    None => ("not loaded", None, None),
                };
                PipelineStatus { name: name.to_string(), rules, weights, model_version, error }
            })
            .collect()
    }
}

fn run_job(cfg: &Config, spool: &Spool, jobs: &JobQueue, loaded: &PipelineCache, metrics: &Metrics, job: Job) {
    let study = job.study_uid.clone();
    info!(study_uid = %study, job = job.id, pipeline = %job.pipeline, attempt = job.attempts, "analysing");
    let started = std::time::Instant::now();
    let pipeline = match loaded.get(&job.pipeline, cfg) {
        Ok(p) => p,
        Err(e) => {
            // retrying cannot help until someone installs weights or fixes the
            // config: a dead letter now (`ainode jobs retry ID` afterwards)
            Metrics::inc(&metrics.analyses_failed);
            warn!(study_uid = %study, job = job.id, "dead letter: pipeline {} cannot run: {e:#}", job.pipeline);
            let _ = jobs.fail(job.id, &format!("pipeline {} cannot run: {e:#}", job.pipeline), 0, None);
            return;
        }
    };
    let result = (|| -> anyhow::Result<usize> {
        let files: Vec<PathBuf> = spool.index.study_instances(&study)?.into_iter().map(|i| PathBuf::from(i.path)).collect();
        let out = pipeline.analyze(&files)?;
        let written = write_results(&EncoderSettings::from_config(cfg), &out, &spool.results_dir(&study))?;
        let results: Vec<StoredInstance> = written
            .iter()
            .map(|w| StoredInstance {
                sop_uid: w.sop_instance_uid.clone(),
                sop_class: w.sop_class_uid.clone(),
                series_uid: w.series_instance_uid.clone(),
                study_uid: study.clone(),
                transfer_syntax: crate::dicom_uids::EXPLICIT_VR_LE.to_string(),
                path: w.path.display().to_string(),
            })
            .collect();
        // the rule may have changed since the job was made: its current send_to counts
        let send_to = cfg.rules.iter().find(|r| r.name == job.rule).map(|r| r.send_to.clone()).unwrap_or_default();
        jobs.commit_results(&job, &results, &send_to)?;
        Ok(results.len())
    })();
    match result {
        Ok(n) => {
            Metrics::inc(&metrics.analyses_done);
            metrics.results_written.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
            info!(study_uid = %study, job = job.id, results = n, seconds = started.elapsed().as_secs_f64(), "analysis done")
        }
        Err(e) => {
            Metrics::inc(&metrics.analyses_failed);
            jobs.fail_or_retry(&job, &format!("{e:#}"), 0, &cfg.export)
        }
    }
}
