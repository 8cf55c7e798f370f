//! `ainode train hip-tha` / `ainode eval hip-tha`: the SSD512 keypoint model on
//! the synthetic post-THA radiographs of `ainode data synth hip-tha`.
//!
//! Data layout: `DIR/train/` and `DIR/test/`, each holding `case_NNNNN.dcm`
//! with its `case_NNNNN.json` labels (the generator's output; the fixed test
//! split is seed 1). Every image goes through the model's own pre-processing
//! once and is kept in memory (512 x 512 f32). Evaluation reports the keypoint
//! error in mm, the MAE of the four parameters computed from the predicted
//! points, the agreement of each risk rule, and risk flags on cases without a
//! prosthesis (which must be none).
//!
//! Real radiographs without a hip prosthesis (e.g. the DDH pelvis
//! radiographs of ../shared/data) may sit in `DIR/negatives/train/` and
//! `DIR/negatives/test/` (`*.dcm`, no labels): the first are trained on with
//! no point at all (every box background), the second are counted at
//! evaluation (`real_negatives`, `..._prosthesis`, `..._flagged`: a
//! prosthesis called, or a risk flag raised, on any of them is an error).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use serde_json::json;

use crate::imaging::decode::{decode_object, open, ColorMode};
use crate::imaging::geometry::{pixel_spacing, SpacingSource};
use crate::imaging::Image;
use crate::models::hip_tha::{preprocess, HipInput, HipPreprocessConfig, HipSsd, HipSsdConfig};
use crate::models::init::WeightInit;
use crate::pipelines::hip_geometry::{prosthesis_centre, HipParameters, HipPoints, HipRiskRules, Risk, P2};
use crate::synth::hip_tha::HipCase;
use crate::train::data::augment::{Augmentation, BrightnessAug, ClampAug, GammaAug, NoiseAug, Pipeline};
use crate::train::data::split::{assign, FileSplit, ValidationCarveOut};
use crate::train::data::Sample;
use crate::train::data::Split;
use crate::train::metrics::{LandmarkConfig, LandmarkEval, Metrics, ParameterEval};
use crate::train::task::{DataDescription, MetricGoal, ModelDescription, SplitData, StepContext, StepLoss, TaskOptions, TrainConfig, TrainTask};

/// Architecture, pre-processing and training settings, stored in `hip-tha.json`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HipTaskConfig {
    pub network: HipSsdConfig,
    pub preprocess: HipPreprocessConfig,
    /// Applied to the pre-processed [0, 1] inputs of training cases.
    /// Intensity only: the keypoints are fixed in input pixels.
    pub augment: Pipeline,
    /// Share of the training split held out for validation.
    pub validation_fraction: f64,
    /// Initial weights. He: the plain (no batch norm) VGG trunk from scratch
    /// with PyTorch's default init shrinks the signal ~6x per layer, so the
    /// deeper source maps are ~0, the biases decide alone and every image
    /// gets the same answer (the 226 mm of issue 16).
    pub init: WeightInit,
    /// Each real negative of `negatives/train/` enters a training epoch this
    /// many times (with its own augmentations): a handful of them among
    /// a thousand generated cases would otherwise weigh nothing.
    pub real_negative_repeat: usize,
}

impl Default for HipTaskConfig {
    fn default() -> Self {
        use Augmentation::*;
        HipTaskConfig {
            // batch norm: from scratch it learns in tens of steps where the
            // plain trunk sits for ~100 on a constant answer (docs/training.md)
            network: HipSsdConfig { batch_norm: true, min_negatives: 64, ..HipSsdConfig::default() },
            preprocess: HipPreprocessConfig::default(),
            augment: Pipeline::new(vec![
                Gamma(GammaAug { probability: 1.0, gamma: (0.7, 1.4), retain_stats: false }),
                Brightness(BrightnessAug { probability: 1.0, multiplier: (0.8, 1.2), offset: (-0.1, 0.1) }),
                Noise(NoiseAug { probability: 1.0, sigma: (0.0, 0.03) }),
                Clamp(ClampAug { min: 0.0, max: 1.0 }),
            ]),
            validation_fraction: 0.1,
            init: WeightInit::HeUniform,
            real_negative_repeat: 20,
        }
    }
}

#[derive(Clone)]
struct Case {
    id: String,
    /// A real radiograph without a prosthesis and without labels.
    real_negative: bool,
    input: HipInput,
    /// Ground truth in network-input pixels (index convention).
    points_input: Vec<Option<[f64; 2]>>,
    labels: HipCase,
}

pub struct HipTask {
    cfg: HipTaskConfig,
    net: HipSsd,
    varmap: VarMap,
    device: Device,
    train: SplitData<Case>,
    val: SplitData<Case>,
    test: SplitData<Case>,
    hash: String,
    /// Real negatives: files in negatives/train (each `real_negative_repeat`
    /// times in the train split) and in negatives/test.
    real_negatives: [usize; 2],
}

/// The label files (`case_*.json`) of a folder, in name order: cheap, so a
/// split is counted and carved without decoding its images.
fn read_labels(dir: &Path) -> anyhow::Result<Vec<HipCase>> {
    let mut jsons: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json") && p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("case_")))
        .collect();
    jsons.sort();
    jsons.iter().map(|j| serde_json::from_slice(&std::fs::read(j)?).with_context(|| format!("{}: not a hip-tha label file", j.display()))).collect()
}

/// A radiograph decoded and pre-processed into the network input, with its
/// (rows, cols, row spacing in mm).
fn read_input(dcm: &Path, cfg: &HipTaskConfig) -> anyhow::Result<(HipInput, usize, usize, f64)> {
    let obj = open(dcm)?;
    let sp = pixel_spacing(&obj);
    if sp.source == SpacingSource::Unknown {
        bail!("{}: no Pixel Spacing / Imager Pixel Spacing; hip-tha measures in mm", dcm.display());
    }
    let img = decode_object(&obj, ColorMode::Luminance).with_context(|| format!("decoding {}", dcm.display()))?;
    let input = preprocess(img.frame(0), img.rows, img.cols, [sp.row_mm, sp.col_mm], &cfg.preprocess, cfg.network.input_size)
        .with_context(|| format!("pre-processing {}", dcm.display()))?;
    Ok((input, img.rows, img.cols, sp.row_mm))
}

/// Decodes and pre-processes the images of labelled cases.
fn load_cases(dir: &Path, labels: Vec<HipCase>, cfg: &HipTaskConfig) -> anyhow::Result<Vec<Case>> {
    let mut cases = Vec::with_capacity(labels.len());
    for labels in labels {
        let (input, ..) = read_input(&dir.join(&labels.file), cfg)?;
        let points_input = (0..10).map(|k| labels.points_mm.get(k).map(|p| input.from_source_mm(p))).collect();
        cases.push(Case { id: labels.file.clone(), real_negative: false, input, points_input, labels });
    }
    Ok(cases)
}

/// The `*.dcm` files of a negatives folder in name order (none when it is absent).
fn negative_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x.eq_ignore_ascii_case("dcm")))
        .collect();
    files.sort();
    Ok(files)
}

/// Real radiographs without a prosthesis: pre-processed like the others,
/// labelled with no point at all.
fn load_negatives(files: &[PathBuf], cfg: &HipTaskConfig) -> anyhow::Result<Vec<Case>> {
    let rules = HipRiskRules::default();
    files
        .iter()
        .map(|dcm| {
            let (input, rows, cols, spacing_mm) = read_input(dcm, cfg)?;
            let file = dcm.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
            let parameters = HipParameters::from_points(&HipPoints::default());
            let labels = HipCase {
                file: file.clone(),
                seed: 0,
                index: 0,
                rows,
                cols,
                spacing_mm,
                side: None,
                bilateral: false,
                cemented: false,
                points_px: HipPoints::default(),
                points_mm: HipPoints::default(),
                risks: rules.assess(&parameters),
                parameters,
                design: Default::default(),
                other_side: None,
            };
            Ok(Case { id: format!("negatives/{file}"), real_negative: true, input, points_input: vec![None; cfg.network.points.len()], labels })
        })
        .collect()
}

impl HipTask {
    pub fn open(opts: &TaskOptions) -> anyhow::Result<HipTask> {
        let cfg: HipTaskConfig = match &opts.architecture {
            Some(v) => serde_json::from_value(v.clone()).context("hip-tha architecture config")?,
            None => HipTaskConfig::default(),
        };
        let (train_dir, test_dir) = (opts.data_dir.join("train"), opts.data_dir.join("test"));
        // evaluating the test split alone needs no training folder (e.g. cases
        // of a generator seed never trained on: DIR/test only)
        let test_only = !opts.splits.iter().any(|s| matches!(s, Split::Train | Split::Val));
        for d in [&train_dir, &test_dir] {
            if !d.is_dir() && !(test_only && d == &train_dir) {
                bail!(
                    "{} missing: make it with `ainode data synth hip-tha --out {} --seed {} --count N`",
                    d.display(),
                    d.display(),
                    if d == &test_dir { 1 } else { 0 }
                );
            }
        }
        let all = if train_dir.is_dir() { read_labels(&train_dir)? } else { Vec::new() };
        let test_labels = read_labels(&test_dir)?;
        // validation carve-out: a seeded choice of whole cases (each case its own group)
        let items: Vec<(FileSplit, String)> = all.iter().map(|c| (FileSplit::Train, c.file.clone())).collect();
        let splits = assign(&items, ValidationCarveOut { fraction: cfg.validation_fraction, seed: opts.seed });
        let (mut train_labels, mut val_labels) = (Vec::new(), Vec::new());
        for (c, s) in all.into_iter().zip(splits) {
            if s == Some(Split::Val) {
                val_labels.push(c)
            } else {
                train_labels.push(c)
            }
        }
        let negatives = opts.data_dir.join("negatives");
        let (train_negatives, test_negatives) = (negative_files(&negatives.join("train"))?, negative_files(&negatives.join("test"))?);
        let mut files: Vec<PathBuf> = train_labels.iter().chain(&val_labels).map(|c| PathBuf::from("train").join(&c.file)).collect();
        files.extend(train_negatives.iter().filter_map(|f| f.strip_prefix(&opts.data_dir).ok().map(Path::to_path_buf)));
        let hash = crate::models::weights::training_data_hash(&opts.data_dir, &files)?;
        let repeat = cfg.real_negative_repeat.max(1);
        let (n_train, n_val, n_test) = (train_labels.len() + repeat * train_negatives.len(), val_labels.len(), test_labels.len() + test_negatives.len());
        let with_negatives = |mut cases: Vec<Case>, negatives: &[PathBuf], repeat: usize| -> anyhow::Result<Vec<Case>> {
            let negatives = load_negatives(negatives, &cfg)?;
            for _ in 0..repeat {
                cases.extend(negatives.iter().cloned());
            }
            Ok(cases)
        };
        let train = SplitData::new(Split::Train, n_train, opts, || with_negatives(load_cases(&train_dir, train_labels, &cfg)?, &train_negatives, repeat))?;
        let val = SplitData::new(Split::Val, n_val, opts, || load_cases(&train_dir, val_labels, &cfg))?;
        let test = SplitData::new(Split::Test, n_test, opts, || with_negatives(load_cases(&test_dir, test_labels, &cfg)?, &test_negatives, 1))?;
        let varmap = VarMap::new();
        let net = HipSsd::load(VarBuilder::from_varmap(&varmap, DType::F32, &opts.device), &cfg.network)?;
        crate::models::init::seeded_init_as(&varmap, opts.seed, cfg.init)?;
        let real_negatives = [train_negatives.len(), test_negatives.len()];
        Ok(HipTask { cfg, net, varmap, device: opts.device.clone(), train, val, test, hash, real_negatives })
    }

    /// The network input of `cases`; with `augment = (seed, epoch)` each
    /// through the config's augmentations with its (seed, epoch, index) stream.
    fn batch(&self, cases: &[&Case], augment: Option<(u64, u64)>, indices: &[usize]) -> anyhow::Result<Tensor> {
        let n = self.cfg.network.input_size;
        let mut data = Vec::with_capacity(cases.len() * n * n);
        for (c, &i) in cases.iter().zip(indices) {
            match augment {
                Some((seed, epoch)) => {
                    let sample = Sample::new(c.id.clone(), Image::new_2d(1, n, n, c.input.pixels.clone())?);
                    data.extend(self.cfg.augment.apply(sample, seed, epoch, i as u64)?.image.data);
                }
                None => data.extend_from_slice(&c.input.pixels),
            }
        }
        Ok(Tensor::from_vec(data, (cases.len(), 1, n, n), &self.device)?)
    }

    fn split(&self, split: Split) -> anyhow::Result<&[Case]> {
        match split {
            Split::Train => self.train.items(),
            Split::Val => self.val.items(),
            Split::Test => self.test.items(),
        }
    }
}

impl TrainTask for HipTask {
    fn name(&self) -> &str {
        "hip-tha"
    }

    fn varmap(&self) -> &VarMap {
        &self.varmap
    }

    fn num_train(&self) -> usize {
        self.train.len()
    }

    fn train_step(&mut self, samples: &[usize], ctx: &StepContext) -> anyhow::Result<StepLoss> {
        let train = self.train.items()?;
        let cases: Vec<&Case> = samples.iter().map(|&i| &train[i]).collect();
        let x = self.batch(&cases, Some((ctx.seed, ctx.epoch as u64)), samples)?;
        let targets: Vec<Vec<Option<[f64; 2]>>> = cases.iter().map(|c| c.points_input.clone()).collect();
        let loss = self.net.loss(&x, &targets)?;
        let total = loss.total()?;
        Ok(StepLoss::new(total).with_part("cls", &loss.classification).with_part("loc", &loss.localization))
    }

    fn evaluate(&mut self, split: Split) -> anyhow::Result<Metrics> {
        let names: Vec<String> = self.cfg.network.points.clone();
        let mut landmarks = LandmarkEval::new(names.clone(), LandmarkConfig::default());
        // With a prosthesis on both sides the generator measures one side drawn
        // at random, which nothing in the image tells: such a case is judged on
        // the side the prediction measured (its cup centre nearer that cup's),
        // and also as labelled (`as_labelled.*`), with how often the other cup
        // was measured.
        let mut as_labelled = LandmarkEval::new(names.clone(), LandmarkConfig::default());
        let (mut bilateral, mut bilateral_other_cup) = (0usize, 0usize);
        let mut params = ParameterEval::new();
        let rules = HipRiskRules::default();
        let (mut agree, mut assessed) = ([0usize; 4], [0usize; 4]);
        let mut negative_flags = 0usize;
        let mut negatives = 0usize;
        let (mut real, mut real_prosthesis, mut real_flagged) = (0usize, 0usize, 0usize);
        let cases = self.split(split)?;
        for chunk in cases.chunks(4) {
            let refs: Vec<&Case> = chunk.iter().collect();
            let idx: Vec<usize> = (0..refs.len()).collect();
            let x = self.batch(&refs, None, &idx)?;
            for (case, kps) in chunk.iter().zip(self.net.keypoints_with_threshold(&x, 0.0)?) {
                // predicted points in source mm
                let mut pred = HipPoints::default();
                let mut pred_mm = Vec::with_capacity(names.len());
                for (k, kp) in kps.iter().enumerate() {
                    let p = kp.map(|kp| case.input.to_source_mm(kp.xy));
                    pred_mm.push(p.unwrap_or([f64::NAN, f64::NAN]));
                    if kp.is_some_and(|kp| kp.score >= self.cfg.network.min_score) {
                        pred.set(k, p);
                    }
                }
                let got = HipParameters::from_points(&pred);
                if case.real_negative {
                    // the pipeline's rule: a prosthesis is the cup's two ends or its centre
                    let prosthesis = pred.b.is_some() && pred.j.is_some() || pred.c.is_some();
                    let r = rules.assess(&got);
                    let flagged = [r.abduction, r.coverage, r.vertical, r.horizontal].iter().any(|g| !matches!(g, Risk::Acceptable | Risk::NotAssessed));
                    real += 1;
                    real_prosthesis += usize::from(prosthesis);
                    real_flagged += usize::from(flagged);
                    continue;
                }
                let labelled: Vec<Option<[f64; 2]>> = (0..names.len()).map(|k| case.labels.points_mm.get(k)).collect();
                as_labelled.add_image(&pred_mm, &labelled, Some([1.0, 1.0]))?;
                bilateral += usize::from(case.labels.bilateral);
                let distance = |a: P2, b: Option<P2>| b.map_or(f64::INFINITY, |b| (a[0] - b[0]).hypot(a[1] - b[1]));
                let other = match (&case.labels.other_side, prosthesis_centre(&pred)) {
                    (Some(o), Some(p)) if distance(p, o.points_mm.c) < distance(p, case.labels.points_mm.c) => Some(o),
                    _ => None,
                };
                bilateral_other_cup += usize::from(other.is_some());
                let (points, want, want_risks) = match other {
                    Some(o) => (&o.points_mm, &o.parameters, o.risks),
                    None => (&case.labels.points_mm, &case.labels.parameters, case.labels.risks),
                };
                let truth: Vec<Option<[f64; 2]>> = (0..names.len()).map(|k| points.get(k)).collect();
                landmarks.add_image(&pred_mm, &truth, Some([1.0, 1.0]))?;
                for (name, unit, g, w) in [
                    ("abduction", "deg", &got.abduction_deg, &want.abduction_deg),
                    ("coverage", "%", &got.coverage_pct, &want.coverage_pct),
                    ("vertical_offset", "mm", &got.vertical_offset_mm, &want.vertical_offset_mm),
                    ("horizontal_offset", "mm", &got.horizontal_offset_mm, &want.horizontal_offset_mm),
                ] {
                    if let (Some(g), Some(w)) = (g.value(), w.value()) {
                        params.add(name, unit, g, w);
                    }
                }
                let (gr, wr) = (rules.assess(&got), want_risks);
                let pairs = [(gr.abduction, wr.abduction), (gr.coverage, wr.coverage), (gr.vertical, wr.vertical), (gr.horizontal, wr.horizontal)];
                if case.labels.side.is_none() {
                    negatives += 1;
                    if pairs.iter().any(|(g, _)| !matches!(g, Risk::Acceptable | Risk::NotAssessed)) {
                        negative_flags += 1;
                    }
                } else {
                    for (r, (g, w)) in pairs.iter().enumerate() {
                        if *w != Risk::NotAssessed {
                            assessed[r] += 1;
                            agree[r] += usize::from(g == w);
                        }
                    }
                }
            }
        }
        let mut m = landmarks.metrics();
        for (name, value) in as_labelled.metrics().summary() {
            m.set(format!("as_labelled.{name}"), *value);
        }
        m.set("bilateral", bilateral as f64);
        m.set("bilateral_other_cup", bilateral_other_cup as f64);
        m.extend(params.metrics());
        for (r, name) in ["abduction", "coverage", "vertical", "horizontal"].iter().enumerate() {
            m.set(format!("risk_accuracy.{name}"), if assessed[r] > 0 { agree[r] as f64 / assessed[r] as f64 } else { f64::NAN });
        }
        m.set("negatives", negatives as f64);
        m.set("negatives_flagged", negative_flags as f64);
        if real > 0 {
            m.set("real_negatives", real as f64);
            m.set("real_negatives_prosthesis", real_prosthesis as f64);
            m.set("real_negatives_flagged", real_flagged as f64);
        }
        Ok(m)
    }

    fn primary_metric(&self) -> MetricGoal {
        MetricGoal::lower("mre_mm")
    }

    fn describe(&self) -> ModelDescription {
        ModelDescription {
            architecture: serde_json::to_value(&self.cfg).expect("config serialises"),
            class_names: std::iter::once("background".to_string()).chain(self.cfg.network.points.iter().cloned()).collect(),
            landmark_names: self.cfg.network.points.clone(),
            preprocessing: json!(self.cfg.preprocess),
            summary: "SSD512 (VGG16) keypoint detector for the ten points of a hip after total hip arthroplasty".into(),
        }
    }

    fn data(&self) -> DataDescription {
        let [neg_train, neg_test] = self.real_negatives;
        let mut source = "ainode data synth hip-tha (synthetic AP pelvis radiographs; train seed 0, test seed 1)".to_string();
        let mut licence = "generated by ainode (no third-party data)".to_string();
        if neg_train + neg_test > 0 {
            source += &format!(
                "; real radiographs without a prosthesis: {neg_train} in training (each x {}), {neg_test} in the test split (negatives/train, negatives/test)",
                self.cfg.real_negative_repeat.max(1)
            );
            licence += "; real negatives under their own licence (see the data set's README)";
        }
        DataDescription {
            source,
            split: format!("train {} / validation {} (seeded carve-out) / test {}", self.train.len(), self.val.len(), self.test.len()),
            counts: vec![("train".into(), self.train.len()), ("val".into(), self.val.len()), ("test".into(), self.test.len())],
            licence,
            hash: self.hash.clone(),
        }
    }

    fn train_defaults(&self) -> TrainConfig {
        TrainConfig { epochs: 60, batch_size: 8, micro_batch: 2, ..TrainConfig::default() }
    }
}

pub fn build(opts: &TaskOptions) -> anyhow::Result<Box<dyn TrainTask>> {
    Ok(Box::new(HipTask::open(opts)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::hip_tha::{write_dataset, HipSynthConfig};

    /// A folder of low-resolution generated cases (train seed 0, test seed 1)
    /// and the options to open it with `arch`.
    fn generated(train: u64, test: u64, negative_share: f64, arch: &HipTaskConfig, seed: u64) -> anyhow::Result<(tempfile::TempDir, TaskOptions)> {
        let dir = tempfile::tempdir()?;
        let gen = HipSynthConfig { spacing_mm: (0.4, 0.4), render_spacing_mm: 0.4, negative_share, ..Default::default() };
        write_dataset(&gen, &dir.path().join("train"), 0, train)?;
        write_dataset(&gen, &dir.path().join("test"), 1, test)?;
        let opts = TaskOptions {
            data_dir: dir.path().to_path_buf(),
            device: Device::Cpu,
            seed,
            architecture: Some(serde_json::to_value(arch)?),
            splits: TaskOptions::ALL_SPLITS.to_vec(),
        };
        Ok((dir, opts))
    }

    #[test]
    fn trains_and_evaluates_on_generated_cases() -> anyhow::Result<()> {
        let arch = HipTaskConfig { network: HipSsdConfig { width_mult: 0.0625, ..Default::default() }, validation_fraction: 0.2, ..Default::default() };
        let (dir, opts) = generated(6, 3, 0.3, &arch, 4)?;
        let mut task = HipTask::open(&opts)?;
        assert_eq!((task.num_train(), task.val.len(), task.test.len()), (5, 1, 3));
        // the labels survive pre-processing: every true point maps inside the input
        for c in task.train.items()?.iter().chain(task.test.items()?) {
            for p in c.points_input.iter().flatten() {
                assert!(p[0] > 0.0 && p[1] > 0.0 && p[0] < 511.0 && p[1] < 511.0, "{}: {p:?}", c.id);
            }
        }
        let loss = task.train_step(&[0, 1], &StepContext { epoch: 0, step: 0, seed: 4 })?;
        assert!(loss.total.to_scalar::<f32>()?.is_finite());
        let m = task.evaluate(Split::Test)?;
        for key in ["mre_mm", "risk_accuracy.abduction", "negatives", "negatives_flagged"] {
            assert!(m.get(key).is_some(), "{key} missing from {m}");
        }
        assert_eq!(m.get("negatives").unwrap() as usize, task.test.items()?.iter().filter(|c| c.labels.side.is_none()).count());
        // `ainode eval --split test` reads the test images only; the others are counted
        let test_only = HipTask::open(&TaskOptions { splits: vec![Split::Test], ..opts.clone() })?;
        assert_eq!((test_only.train.len(), test_only.val.len(), test_only.test.len()), (5, 1, 3));
        assert!(test_only.train.items().is_err() && test_only.test.items().is_ok());
        assert_eq!(test_only.hash, task.hash);
        // a folder with only test cases (another generator seed) evaluates
        std::fs::remove_dir_all(dir.path().join("train"))?;
        let unseen = HipTask::open(&TaskOptions { splits: vec![Split::Test], ..opts.clone() })?;
        assert_eq!((unseen.train.len(), unseen.test.len()), (0, 3));
        assert!(HipTask::open(&opts).is_err());
        Ok(())
    }

    /// The whole training path (generator labels -> pre-processing -> SSD
    /// targets, matching, encoding, loss, backward, AdamW, decoding) must
    /// fit eight generated radiographs: a broken link leaves the keypoints
    /// hundreds of mm off (every image the same answer), as in issue 16.
    #[test]
    fn overfits_eight_generated_radiographs() -> anyhow::Result<()> {
        use crate::train::trainer::{train, RunOptions};
        const OVERFIT_EPOCHS: usize = 60;
        let arch = HipTaskConfig {
            network: HipSsdConfig { width_mult: 0.0625, batch_norm: true, ..Default::default() },
            validation_fraction: 0.1,
            ..Default::default()
        };
        let (dir, opts) = generated(9, 1, 0.0, &arch, 0)?;
        let mut task = HipTask::open(&opts)?;
        assert_eq!(task.num_train(), 8);
        let before = task.evaluate(Split::Train)?.get("mre_mm").unwrap();
        let cfg = TrainConfig { epochs: OVERFIT_EPOCHS, batch_size: 2, validate_every: OVERFIT_EPOCHS, ..task.train_defaults() };
        let run = RunOptions { resume: false, stop_after: None, progress: Some(false), device: "cpu".into() };
        train(&mut task, &cfg, &dir.path().join("run"), &run)?;
        let m = task.evaluate(Split::Train)?;
        let after = m.get("mre_mm").unwrap();
        assert!(after < 5.0, "mean keypoint error on the training images {before:.1} mm -> {after:.2} mm (want < 5 mm)\n{m}");
        Ok(())
    }
}
