//! `ainode train lung-lesions` / `ainode eval lung-lesions`: Mask R-CNN on
//! the lung-medseg CT slices (ground-glass opacity = 1, consolidation = 2).
//!
//! Instances are the 8-connected components of each class (at least
//! `min_instance_pixels` pixels, counted after pre-processing for training
//! and on the original slice for evaluation). A slice goes through the
//! augmentations (on [0, 1] values), the letterbox to the network input and
//! the fixed normalisation. Evaluation pastes the detections' masks into a
//! label map (best score wins), maps it back onto the original slice and
//! reports Dice per class (mean over slices and pooled), and lesion-level
//! detection (a lesion is a ground-truth component; box IoU ≥ 0.5).
//!
//! Lesion-free slices (`negatives/` in the data folder, lung-medseg's layout,
//! written by `ainode data lung-negatives` from chest CT as the pipeline
//! crops and windows it) are trained on with an empty mask: all 45 training
//! slices of lung-medseg show COVID-19 lungs, so without them the network
//! never sees a normal lung. The test rows of `negatives/` are the held-out
//! lesion-free slices: evaluating the test split also reports the lesions
//! called on them (`negatives.*`).

use std::io::Write;
use std::ops::Range;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::models::blocks::boxes::box_rows;
use crate::models::lung_lesions::{instances_from_label_map, label_map, Instance, InstanceTargets, LungPreprocessConfig, MaskRcnn, MaskRcnnConfig};
use crate::train::data::augment::{Augmentation, BlurAug, BrightnessAug, ContrastAug, ElasticAug, FlipAug, GammaAug, NoiseAug, Pipeline, ScaleAug};
use crate::train::data::datasets::{Dataset, ImageMaskConfig, ImageMaskDataset};
use crate::train::data::preprocess::{letterbox, Transform2d};
use crate::train::data::sample::Sample;
use crate::train::data::split::{Split, ValidationCarveOut};
use crate::train::metrics::{self, DetectionEval, GroundTruth, LesionOverlapConfig, LesionOverlapEval, Metrics, SegmentationConfig, SegmentationEval};
use crate::train::task::{DataDescription, MetricGoal, ModelDescription, SplitData, StepContext, StepLoss, TaskOptions, TrainConfig, TrainTask};

/// Architecture, pre-processing and training data settings, stored in `lung-lesions.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LungTaskConfig {
    pub network: MaskRcnnConfig,
    pub preprocess: LungPreprocessConfig,
    /// Applied to training slices on [0, 1] values before the letterbox.
    pub augment: Pipeline,
    /// Connected components smaller than this are not instances.
    pub min_instance_pixels: usize,
    /// Share of the training split held out for validation.
    pub validation_fraction: f64,
}

impl Default for LungTaskConfig {
    fn default() -> Self {
        use Augmentation::*;
        LungTaskConfig {
            network: MaskRcnnConfig::default(),
            preprocess: LungPreprocessConfig::default(),
            augment: Pipeline::new(vec![
                Scale(ScaleAug { probability: 0.5, scale: (0.8, 1.25), image_fill: 0.0, label_fill: 0 }),
                // issue 17: lesion outlines bent, not only scaled and mirrored
                Elastic(ElasticAug::default()),
                Flip(FlipAug { horizontal: 0.5, vertical: 0.2, depth: 0.0, swap_pairs: Vec::new() }),
                Brightness(BrightnessAug { probability: 0.3, multiplier: (0.85, 1.15), offset: (0.0, 0.0) }),
                Contrast(ContrastAug { probability: 0.3, factor: (0.8, 1.2), preserve_range: true }),
                Gamma(GammaAug { probability: 0.3, gamma: (0.8, 1.25), retain_stats: true }),
                Noise(NoiseAug { probability: 0.2, sigma: (0.0, 0.03) }),
                Blur(BlurAug { probability: 0.1, sigma: (0.5, 1.0) }),
            ]),
            min_instance_pixels: 10,
            validation_fraction: 0.1,
        }
    }
}

/// One slice kept in memory: grey values on [0, 1] and its class map.
struct Slice {
    id: String,
    sample: Sample,
}

impl Slice {
    fn labels(&self) -> Vec<u8> {
        self.sample.labels.as_ref().map(|l| l.layer(0).iter().map(|&v| v as u8).collect()).unwrap_or_default()
    }

    fn hw(&self) -> (usize, usize) {
        (self.sample.image.height, self.sample.image.width)
    }
}

/// Folder of lesion-free slices inside the data folder (optional).
pub const NEGATIVES_DIR: &str = "negatives";

/// Writes the slices `slices` (all when None) of a lesion-free CT volume as
/// training / test negatives in lung-medseg's layout under `out`:
/// `SPLIT/images/NAME_kKKK.png` (8 bit: the slice cropped to its lung field,
/// turned and windowed as the pipeline does), `SPLIT/masks/NAME_kKKK.png`
/// (all 0), and their rows in `out/index.csv` (rows of the same images are
/// replaced). Slices without a lung field are skipped. Returns the count.
pub fn write_negatives(
    vol: &crate::imaging::volume::Volume,
    name: &str,
    slices: Option<Range<usize>>,
    split: Split,
    out: &Path,
    settings: &crate::pipelines::lung_lesions::LungLesionsSettings,
    preprocess: &LungPreprocessConfig,
) -> anyhow::Result<usize> {
    if split == Split::Val {
        bail!("negatives go to the train or the test split (validation is carved out of train)");
    }
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        bail!("negatives name {name:?}: letters, digits, - and _ only (it names the files)");
    }
    for d in ["images", "masks"] {
        std::fs::create_dir_all(out.join(split.to_string()).join(d)).with_context(|| format!("creating {}", out.display()))?;
    }
    let mut rows = Vec::new();
    for crop in crate::pipelines::lung_lesions::slice_crops(vol, settings, preprocess) {
        if slices.as_ref().is_some_and(|r| !r.contains(&crop.slice)) {
            continue;
        }
        let file = format!("{name}_k{:04}.png", crop.slice);
        let (image, mask) = (format!("{split}/images/{file}"), format!("{split}/masks/{file}"));
        let grey: Vec<u8> = crop.values.iter().map(|v| (v * 255.0).round().clamp(0.0, 255.0) as u8).collect();
        let (w, h) = (crop.width as u32, crop.height as u32);
        image::GrayImage::from_raw(w, h, grey).expect("width x height values").save(out.join(&image)).with_context(|| format!("writing {image}"))?;
        image::GrayImage::new(w, h).save(out.join(&mask)).with_context(|| format!("writing {mask}"))?;
        rows.push(format!("{image},{mask},{split},{w},{h},{},0,0", w * h));
    }
    let index = out.join("index.csv");
    let header = "image,mask,split,width,height,pixels_background,pixels_ggo,pixels_consolidation";
    let old = if index.is_file() { std::fs::read_to_string(&index).with_context(|| format!("reading {}", index.display()))? } else { String::new() };
    let fresh: std::collections::HashSet<&str> = rows.iter().map(|r| r.split(',').next().unwrap_or("")).collect();
    let mut f = std::fs::File::create(&index).with_context(|| format!("writing {}", index.display()))?;
    writeln!(f, "{header}")?;
    for line in old.lines().skip(1).filter(|l| !l.is_empty() && !fresh.contains(l.split(',').next().unwrap_or(""))) {
        writeln!(f, "{line}")?;
    }
    for r in &rows {
        writeln!(f, "{r}")?;
    }
    f.sync_all()?;
    Ok(rows.len())
}

pub struct LungTask {
    cfg: LungTaskConfig,
    net: MaskRcnn,
    varmap: VarMap,
    device: Device,
    train: SplitData<Slice>,
    val: SplitData<Slice>,
    test: SplitData<Slice>,
    /// Held-out lesion-free slices (test rows of `negatives/`), evaluated with the test split.
    test_negatives: SplitData<Slice>,
    /// Lesion-free slices among `train` (counted for the model card).
    train_negatives: usize,
    hash: String,
    licence: String,
}

/// One split of lung-medseg: its index (cheap: ids, counts), and its slices
/// decoded when the run asks for the split.
fn open_split(root: &std::path::Path, split: Split, carve_out: ValidationCarveOut, opts: &TaskOptions) -> anyhow::Result<(Vec<String>, SplitData<Slice>)> {
    let ds = ImageMaskDataset::open(&ImageMaskConfig { carve_out, ..ImageMaskConfig::lung_medseg(root) }, split)
        .with_context(|| format!("lung-medseg index in {}", root.display()))?;
    let ids: Vec<String> = (0..ds.len()).map(|i| ds.id(i).to_string()).collect();
    let data = SplitData::new(split, ds.len(), opts, || {
        let mut out = Vec::with_capacity(ds.len());
        for i in 0..ds.len() {
            let mut sample = ds.load(i)?;
            sample.image.channel_mut(0).iter_mut().for_each(|v| *v /= 255.0);
            let labels = sample.labels.as_ref().with_context(|| format!("{}: no mask", ds.id(i)))?;
            if labels.max_label() > 2 {
                bail!("{}: mask value {} (lung-medseg masks hold 0, 1, 2)", ds.id(i), labels.max_label());
            }
            out.push(Slice { id: ds.id(i).to_string(), sample });
        }
        Ok(out)
    })?;
    Ok((ids, data))
}

impl LungTask {
    pub fn open(opts: &TaskOptions) -> anyhow::Result<LungTask> {
        let cfg: LungTaskConfig = match &opts.architecture {
            Some(v) => serde_json::from_value(v.clone()).context("lung-lesions architecture config")?,
            None => LungTaskConfig::default(),
        };
        let root = &opts.data_dir;
        if !root.join("index.csv").is_file() {
            bail!("{}: no index.csv; expected the lung-medseg data set (../shared/data/lung-medseg)", root.display());
        }
        let carve = ValidationCarveOut { fraction: cfg.validation_fraction, seed: opts.seed };
        let (mut train_ids, mut train) = open_split(root, Split::Train, carve, opts)?;
        let negatives = root.join(NEGATIVES_DIR);
        let mut test_negatives = SplitData::new(Split::Test, 0, opts, || Ok(Vec::new()))?;
        let mut train_negatives = 0;
        if negatives.join("index.csv").is_file() {
            let all = ValidationCarveOut { fraction: 0.0, seed: opts.seed };
            let (ids, data) = open_split(&negatives, Split::Train, all, opts).with_context(|| format!("negatives in {}", negatives.display()))?;
            train_negatives = ids.len();
            train_ids.extend(ids.iter().map(|id| format!("{NEGATIVES_DIR}/{id}")));
            train.extend(data)?;
            test_negatives = open_split(&negatives, Split::Test, all, opts).with_context(|| format!("negatives in {}", negatives.display()))?.1;
        }
        let (val_ids, val) = open_split(root, Split::Val, carve, opts)?;
        let (_, test) = open_split(root, Split::Test, carve, opts)?;
        let files: Vec<PathBuf> = train_ids.iter().chain(&val_ids).map(PathBuf::from).collect();
        let hash = crate::models::weights::training_data_hash(root, &files)?;
        let licence =
            "MIT (Inf-Net repository, Copyright (c) 2020 Gepeng_Ji); images from the MedSeg COVID-19 CT segmentation dataset, whose own terms apply".into();
        let varmap = VarMap::new();
        let net = MaskRcnn::load(VarBuilder::from_varmap(&varmap, DType::F32, &opts.device), &cfg.network)?;
        crate::models::init::seeded_init(&varmap, opts.seed)?;
        Ok(LungTask { cfg, net, varmap, device: opts.device.clone(), train, val, test, test_negatives, train_negatives, hash, licence })
    }

    /// Letterboxed, normalised network input of one slice and the transform
    /// from slice pixels to input pixels.
    fn input(&self, s: &Sample) -> anyhow::Result<(Sample, Transform2d)> {
        let n = self.cfg.preprocess.input_size;
        let (mut boxed, t) = letterbox(s, n, n, 0.0)?;
        self.cfg.preprocess.normalise(boxed.image.channel_mut(0));
        Ok((boxed, t))
    }

    fn split(&self, split: Split) -> anyhow::Result<&[Slice]> {
        match split {
            Split::Train => self.train.items(),
            Split::Val => self.val.items(),
            Split::Test => self.test.items(),
        }
    }

    fn stack(&self, samples: &[Sample]) -> anyhow::Result<Tensor> {
        let n = self.cfg.preprocess.input_size;
        let data: Vec<f32> = samples.iter().flat_map(|s| s.image.channel(0).iter().copied()).collect();
        Ok(Tensor::from_vec(data, (samples.len(), 1, n, n), &self.device)?)
    }

    /// Calls `visit` for each slice with its detections (network input
    /// pixels, full-frame masks), the input transform, and their label map
    /// pasted at the mask threshold and mapped back onto the slice (the best
    /// score wins a pixel). A batch's detections are dropped before the next
    /// batch runs: held for a whole split, their masks would take gigabytes.
    fn predict_each(&self, slices: &[Slice], mut visit: impl FnMut(&Slice, &[Instance], &Transform2d, Vec<u8>) -> anyhow::Result<()>) -> anyhow::Result<()> {
        let n = self.cfg.preprocess.input_size;
        for chunk in slices.chunks(4) {
            let mut inputs = Vec::with_capacity(chunk.len());
            let mut transforms = Vec::with_capacity(chunk.len());
            for s in chunk {
                let (input, t) = self.input(&s.sample)?;
                inputs.push(input);
                transforms.push(t);
            }
            let detections = self.net.detect(&self.stack(&inputs)?)?;
            for ((s, t), instances) in chunk.iter().zip(transforms).zip(detections) {
                let pred = to_slice(&label_map(&instances, (n, n), self.cfg.network.mask_threshold), n, &t, s.hw());
                visit(s, &instances, &t, pred)?;
            }
        }
        Ok(())
    }
}

/// A label map on the network input mapped back onto the slice (nearest).
fn to_slice(labels: &[u8], n: usize, t: &Transform2d, hw: (usize, usize)) -> Vec<u8> {
    let mut out = vec![0u8; hw.0 * hw.1];
    for y in 0..hw.0 {
        for x in 0..hw.1 {
            let q = t.forward([x as f64, y as f64]);
            let (qx, qy) = (q[0].round(), q[1].round());
            if qx >= 0.0 && qy >= 0.0 && (qx as usize) < n && (qy as usize) < n {
                out[y * hw.1 + x] = labels[qy as usize * n + qx as usize];
            }
        }
    }
    out
}

impl TrainTask for LungTask {
    fn name(&self) -> &str {
        "lung-lesions"
    }

    fn varmap(&self) -> &VarMap {
        &self.varmap
    }

    fn num_train(&self) -> usize {
        self.train.len()
    }

    fn train_step(&mut self, samples: &[usize], ctx: &StepContext) -> anyhow::Result<StepLoss> {
        let n = self.cfg.preprocess.input_size;
        let classes = self.cfg.network.num_classes();
        let mut inputs = Vec::with_capacity(samples.len());
        let mut targets: Vec<InstanceTargets> = Vec::with_capacity(samples.len());
        for &i in samples {
            let s = &self.train.items()?[i];
            let augmented = self.cfg.augment.apply(s.sample.clone(), ctx.seed, ctx.epoch as u64, i as u64).with_context(|| format!("augmenting {}", s.id))?;
            let (input, _) = self.input(&augmented)?;
            let labels: Vec<u8> = input.labels.as_ref().map(|l| l.layer(0).iter().map(|&v| v as u8).collect()).unwrap_or_default();
            targets.push(instances_from_label_map(&labels, (n, n), classes, self.cfg.min_instance_pixels, &self.device)?);
            inputs.push(input);
        }
        let x = self.stack(&inputs)?;
        let seed = crate::models::blocks::rpn::image_seed(ctx.seed, ctx.step * 1000 + samples.first().copied().unwrap_or(0));
        let loss = self.net.loss(&x, &targets, seed)?;
        Ok(StepLoss::new(loss.total()?)
            .with_part("rpn_cls", &loss.rpn_objectness)
            .with_part("rpn_box", &loss.rpn_box)
            .with_part("cls", &loss.classifier)
            .with_part("box", &loss.box_regression)
            .with_part("mask", &loss.mask))
    }

    fn evaluate(&mut self, split: Split) -> anyhow::Result<Metrics> {
        let names: Vec<String> = std::iter::once("background".to_string()).chain(self.cfg.network.classes.iter().cloned()).collect();
        let mut seg = SegmentationEval::new(names.clone(), SegmentationConfig::default());
        let mut pooled_image = SegmentationEval::new(vec!["background".into(), "lesion".into()], SegmentationConfig::default());
        // lesion-level figures at the operating point stored with the weights
        let operating = metrics::DetectionConfig { iou_threshold: 0.5, score_threshold: self.cfg.network.score_threshold };
        let mut det = DetectionEval::new(self.cfg.network.classes.clone(), operating);
        let overlap_cfg = LesionOverlapConfig { min_pixels: self.cfg.min_instance_pixels, ..LesionOverlapConfig::default() };
        let mut overlap = LesionOverlapEval::new(overlap_cfg);
        let classes = self.cfg.network.num_classes();
        let binary = |l: &[u8]| l.iter().map(|&v| v > 0).collect::<Vec<bool>>();
        let slices = self.split(split)?;
        self.predict_each(slices, |s, instances, t, pred| {
            let (hw, truth) = (s.hw(), s.labels());
            seg.add_case(&pred, &truth)?;
            let (pred_lesion, truth_lesion) = (binary(&pred), binary(&truth));
            let as_u8 = |b: &[bool]| b.iter().map(|&v| u8::from(v)).collect::<Vec<u8>>();
            pooled_image.add_case(&as_u8(&pred_lesion), &as_u8(&truth_lesion))?;
            overlap.add_image(&pred_lesion, &truth_lesion, hw.1)?;
            let gt = instances_from_label_map(&truth, hw, classes, self.cfg.min_instance_pixels, &Device::Cpu)?;
            let truths = box_rows(&gt.annotations.boxes)?
                .iter()
                .zip(&gt.annotations.labels)
                .map(|(b, &l)| GroundTruth { bbox: b.map(f64::from), class: l as usize - 1 })
                .collect();
            det.add_image(instances.iter().map(|i| slice_detection(i, t)).collect(), truths)?;
            Ok(())
        })?;
        let mut m = seg.metrics();
        m.set("dice.lesion_any_class", pooled_image.metrics().get("dice.lesion").unwrap_or(f64::NAN));
        m.extend(det.metrics());
        m.extend(overlap.metrics());
        m.set("slices", slices.len() as f64);
        m.set("score_threshold", self.cfg.network.score_threshold);
        if split == Split::Test && !self.test_negatives.is_empty() {
            // every lesion called on a lesion-free slice is a false one
            let negatives = self.test_negatives.items()?;
            let mut called = LesionOverlapEval::new(overlap_cfg);
            let mut with_lesion = 0;
            let mut pixels = 0;
            self.predict_each(negatives, |s, _, _, pred| {
                let lesion = binary(&pred);
                with_lesion += usize::from(called.add_image(&lesion, &vec![false; lesion.len()], s.hw().1)? > 0);
                pixels += lesion.iter().filter(|&&v| v).count();
                Ok(())
            })?;
            let c = called.metrics();
            m.set("negatives.slices", negatives.len() as f64);
            m.set("negatives.lesions_per_slice", c.get("lesion_overlap.fp_per_image").unwrap_or(f64::NAN));
            m.set("negatives.slices_with_lesion", with_lesion as f64);
            m.set("negatives.lesion_pixels", pixels as f64);
        }
        Ok(m)
    }

    fn primary_metric(&self) -> MetricGoal {
        MetricGoal::higher("dice.mean")
    }

    fn describe(&self) -> ModelDescription {
        ModelDescription {
            architecture: serde_json::to_value(&self.cfg).expect("config serialises"),
            class_names: std::iter::once("background".to_string()).chain(self.cfg.network.classes.iter().cloned()).collect(),
            landmark_names: Vec::new(),
            preprocessing: json!(self.cfg.preprocess),
            summary: format!(
                "Mask R-CNN (ResNet-50 x{} + FPN P2-P6, RPN, RoIAlign, box / class / 28x28 mask heads) for lung lesions on axial CT slices",
                self.cfg.network.width_mult
            ),
        }
    }

    fn data(&self) -> DataDescription {
        DataDescription {
            source: "lung-medseg (Inf-Net MultiClassInfection, MedSeg COVID-19 CT slices)".into(),
            split: format!(
                "fixed Inf-Net split; train {} ({} of them lesion-free slices from `{NEGATIVES_DIR}/`) / validation {} (seeded carve-out of the training split) / test {} (+ {} held-out lesion-free slices)",
                self.train.len(),
                self.train_negatives,
                self.val.len(),
                self.test.len(),
                self.test_negatives.len()
            ),
            counts: vec![
                ("train".into(), self.train.len()),
                ("val".into(), self.val.len()),
                ("test".into(), self.test.len()),
                ("test lesion-free".into(), self.test_negatives.len()),
            ],
            licence: self.licence.clone(),
            hash: self.hash.clone(),
        }
    }

    fn train_defaults(&self) -> TrainConfig {
        let mut t = TrainConfig { epochs: 60, batch_size: 4, micro_batch: 2, ..TrainConfig::default() };
        t.optimizer.lr = 5e-4;
        t.optimizer.weight_decay = 1e-4;
        t
    }
}

/// A detection's box on the original slice, for lesion-level metrics.
fn slice_detection(i: &Instance, t: &Transform2d) -> metrics::Detection {
    // box corners are pixel edges; the transform maps pixel centres
    let a = t.inverse([i.bbox[0] as f64 - 0.5, i.bbox[1] as f64 - 0.5]);
    let b = t.inverse([i.bbox[2] as f64 - 0.5, i.bbox[3] as f64 - 0.5]);
    metrics::Detection { bbox: [a[0] + 0.5, a[1] + 0.5, b[0] + 0.5, b[1] + 0.5], score: i.score as f64, class: i.label as usize - 1 }
}

pub fn build(opts: &TaskOptions) -> anyhow::Result<Box<dyn TrainTask>> {
    Ok(Box::new(LungTask::open(opts)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data_dir() -> Option<PathBuf> {
        let d = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data/lung-medseg");
        if d.join("index.csv").is_file() {
            Some(d)
        } else {
            eprintln!("skipped: {} not present", d.display());
            None
        }
    }

    #[test]
    fn trains_and_evaluates_on_lung_medseg() -> anyhow::Result<()> {
        let Some(dir) = data_dir() else { return Ok(()) };
        let mut arch = LungTaskConfig::default();
        arch.network.width_mult = 0.0625;
        arch.network.fpn_channels = 8;
        arch.network.representation_size = 16;
        arch.network.mask_head_channels = 8;
        arch.network.score_threshold = 0.0;
        arch.preprocess.input_size = 128;
        let opts = TaskOptions {
            data_dir: dir,
            device: Device::Cpu,
            seed: 2,
            architecture: Some(serde_json::to_value(&arch)?),
            splits: TaskOptions::ALL_SPLITS.to_vec(),
        };
        let mut task = LungTask::open(&opts)?;
        assert_eq!((task.num_train(), task.val.len(), task.test.len()), (45, 5, 48));
        let loss = task.train_step(&[0, 1], &StepContext { epoch: 0, step: 0, seed: 2 })?;
        assert!(loss.total.to_scalar::<f32>()?.is_finite());
        assert_eq!(loss.parts.len(), 5);
        let m = task.evaluate(Split::Val)?;
        for key in
            ["dice.ground-glass opacity", "dice.consolidation", "dice.mean", "sensitivity", "fp_per_image", "lesion_overlap.precision", "score_threshold"]
        {
            assert!(m.get(key).is_some(), "{key} missing from {m}");
        }
        Ok(())
    }

    #[test]
    fn negatives_are_written_as_the_pipeline_crops_them_and_read_back() -> anyhow::Result<()> {
        use crate::imaging::volume::{Grid, Volume};
        // 3 slices of 60 x 50 at 1 mm: body (40 HU) in air; slices 1 and 2 hold two lungs
        let grid = Grid { dims: [50, 60, 3], spacing: [1.0, 1.0, 2.0], origin: [0.0; 3], direction: [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]] };
        let mut vol = Volume::filled(grid, -1000.0);
        for k in 0..3 {
            for r in 5..55 {
                for c in 3..47 {
                    let lung = k > 0 && (10..40).contains(&r) && ((8..20).contains(&c) || (28..40).contains(&c));
                    let i = vol.index(c, r, k);
                    vol.data[i] = if lung { -850.0 } else { 40.0 };
                }
            }
        }
        let dir = tempfile::tempdir()?;
        let out = dir.path().join(NEGATIVES_DIR);
        let (settings, pre) = (crate::pipelines::lung_lesions::LungLesionsSettings::default(), LungPreprocessConfig::default());
        assert_eq!(write_negatives(&vol, "chest-1", None, Split::Train, &out, &settings, &pre)?, 2);
        // again, and one slice to test: rows are replaced, not doubled
        assert_eq!(write_negatives(&vol, "chest-1", Some(1..2), Split::Train, &out, &settings, &pre)?, 1);
        assert_eq!(write_negatives(&vol, "chest-1", Some(2..3), Split::Test, &out, &settings, &pre)?, 1);
        let index = std::fs::read_to_string(out.join("index.csv"))?;
        assert_eq!(index.lines().count(), 4, "{index}");
        assert!(index.contains("test/images/chest-1_k0002.png,test/masks/chest-1_k0002.png,test,"), "{index}");
        // the crop: lungs 8..40 x 10..40 + 10 mm field margin + 5 mm crop margin, turned once
        let img = image::open(out.join("train/images/chest-1_k0001.png"))?.to_luma8();
        let (w, h) = img.dimensions();
        assert!(w > h && (40..=50).contains(&h) && (40..=60).contains(&w), "{w} x {h}");
        let lung_grey = (pre.window(-850.0) * 255.0).round() as u8;
        assert!(img.pixels().any(|p| p.0[0] == lung_grey));
        let mask = image::open(out.join("train/masks/chest-1_k0001.png"))?.to_luma8();
        assert_eq!(mask.dimensions(), (w, h));
        assert!(mask.pixels().all(|p| p.0[0] == 0));
        // the task's loader reads them as lung-medseg slices
        let cfg = ImageMaskConfig { carve_out: ValidationCarveOut { fraction: 0.0, seed: 0 }, ..ImageMaskConfig::lung_medseg(&out) };
        assert_eq!(ImageMaskDataset::open(&cfg, Split::Train)?.len(), 2);
        assert!(write_negatives(&vol, "chest-1", None, Split::Val, &out, &settings, &pre).is_err());
        assert!(write_negatives(&vol, "../x", None, Split::Train, &out, &settings, &pre).is_err());
        Ok(())
    }

    #[test]
    fn label_maps_return_to_the_slice() {
        // a 4 x 2 slice letterboxed into 4 x 4: rows 1..3 of the input hold it
        let t = Transform2d { scale_x: 1.0, scale_y: 1.0, offset_x: 0.0, offset_y: 1.0 };
        let mut input = vec![0u8; 16];
        input[4..8].copy_from_slice(&[1, 1, 2, 2]);
        assert_eq!(to_slice(&input, 4, &t, (2, 4)), vec![1, 1, 2, 2, 0, 0, 0, 0]);
        let d = slice_detection(&Instance { bbox: [0., 1., 4., 2.], score: 0.5, label: 2, mask: vec![] }, &t);
        assert_eq!((d.bbox, d.class), ([0., 0., 4., 1.], 1));
    }
}
