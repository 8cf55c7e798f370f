//! Evaluation metrics of the five analyses (MODELS.md) and the `Metrics`
//! table they report into: a summary (name → value, in the order added; the
//! trainer picks its primary metric from it by name) and detail tables (per
//! class, per landmark...). It prints as aligned text and serialises to JSON.
//!
//! Conventions, stated once:
//! - Dice/IoU of a class absent from both prediction and truth in a case
//!   ("empty/empty") is undefined; `EmptyCase` says whether such a case is
//!   left out of that class's mean (default, as nnU-Net does) or counts as 1.
//! - Landmark errors are in mm when the image spacing is known, else in
//!   pixels; one evaluation never mixes the two.
//! - Detection matching follows PASCAL VOC: detections in falling score
//!   order, each matched to the ground truth of its class with the largest
//!   IoU in its image; a match needs IoU ≥ threshold and an unmatched truth,
//!   otherwise it is a false positive.

use std::collections::BTreeMap;
use std::fmt;

use anyhow::{bail, ensure};
use serde::{Deserialize, Serialize};

/// A detail table: one row per class / landmark / parameter.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MetricTable {
    pub title: String,
    /// Header of the first column (e.g. "class").
    pub row_header: String,
    pub columns: Vec<String>,
    pub rows: Vec<MetricRow>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MetricRow {
    pub name: String,
    /// One per column; `None` = undefined (printed as "-", JSON null).
    pub values: Vec<Option<f64>>,
}

/// Results of one evaluation.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metrics {
    summary: Vec<(String, f64)>,
    tables: Vec<MetricTable>,
}

impl Metrics {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets a summary value (replacing one of the same name, keeping its place).
    pub fn set(&mut self, name: impl Into<String>, value: f64) {
        let name = name.into();
        match self.summary.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = value,
            None => self.summary.push((name, value)),
        }
    }

    pub fn get(&self, name: &str) -> Option<f64> {
        self.summary.iter().find(|(n, _)| n == name).map(|(_, v)| *v)
    }

    pub fn summary(&self) -> &[(String, f64)] {
        &self.summary
    }

    pub fn add_table(&mut self, t: MetricTable) {
        self.tables.push(t);
    }

    pub fn tables(&self) -> &[MetricTable] {
        &self.tables
    }

    /// Appends another evaluation's summary and tables (e.g. detection + Dice).
    pub fn extend(&mut self, other: Metrics) {
        for (n, v) in other.summary {
            self.set(n, v);
        }
        self.tables.extend(other.tables);
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("metrics serialise")
    }
}

struct OrderedSummary<'a>(&'a [(String, f64)]);

impl Serialize for OrderedSummary<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in self.0 {
            // NaN has no JSON form: null
            m.serialize_entry(k, &v.is_finite().then_some(*v))?;
        }
        m.end()
    }
}

impl Serialize for Metrics {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("Metrics", 2)?;
        st.serialize_field("summary", &OrderedSummary(&self.summary))?;
        st.serialize_field("tables", &self.tables)?;
        st.end()
    }
}

impl<'de> Deserialize<'de> for Metrics {
    /// Summary order comes back sorted by name (JSON objects have none).
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Raw {
            summary: BTreeMap<String, Option<f64>>,
            #[serde(default)]
            tables: Vec<MetricTable>,
        }
        let r = Raw::deserialize(d)?;
        Ok(Metrics { summary: r.summary.into_iter().map(|(k, v)| (k, v.unwrap_or(f64::NAN))).collect(), tables: r.tables })
    }
}

fn fmt_value(v: Option<f64>) -> String {
    match v {
        Some(x) if x.is_finite() => format!("{x:.4}"),
        Some(x) if x.is_nan() => "-".into(),
        Some(x) => format!("{x}"),
        None => "-".into(),
    }
}

impl fmt::Display for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let w = self.summary.iter().map(|(n, _)| n.chars().count()).max().unwrap_or(0);
        for (n, v) in &self.summary {
            writeln!(f, "{n:<w$}  {:>10}", fmt_value(Some(*v)))?;
        }
        for t in &self.tables {
            writeln!(f)?;
            writeln!(f, "{}", t.title)?;
            let cells: Vec<Vec<String>> = t.rows.iter().map(|r| r.values.iter().map(|v| fmt_value(*v)).collect()).collect();
            let w0 = t.rows.iter().map(|r| r.name.chars().count()).chain([t.row_header.chars().count()]).max().unwrap_or(0);
            let widths: Vec<usize> = (0..t.columns.len())
                .map(|j| cells.iter().filter_map(|r| r.get(j)).map(|c| c.len()).chain([t.columns[j].chars().count()]).max().unwrap_or(0))
                .collect();
            write!(f, "{:<w0$}", t.row_header)?;
            for (c, w) in t.columns.iter().zip(&widths) {
                write!(f, "  {c:>w$}")?;
            }
            writeln!(f)?;
            for (r, row) in t.rows.iter().zip(&cells) {
                write!(f, "{:<w0$}", r.name)?;
                for (j, w) in widths.iter().enumerate() {
                    write!(f, "  {:>w$}", row.get(j).map(String::as_str).unwrap_or("-"))?;
                }
                writeln!(f)?;
            }
        }
        Ok(())
    }
}

fn mean(v: &[f64]) -> Option<f64> {
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

/// Population standard deviation.
fn std_dev(v: &[f64]) -> Option<f64> {
    let m = mean(v)?;
    Some((v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / v.len() as f64).sqrt())
}

// ---------------------------------------------------------------- segmentation

/// How an empty/empty class in one case (no voxel of the class in prediction
/// nor truth) enters the per-class mean.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EmptyCase {
    /// Left out of that class's mean (the case says nothing about the class).
    #[default]
    Exclude,
    /// Counted as a perfect score of 1.
    CountAsOne,
}

/// Voxel counts of one class in one case.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClassOverlap {
    pub true_pos: u64,
    pub false_pos: u64,
    pub false_neg: u64,
}

impl ClassOverlap {
    /// 2TP / (2TP + FP + FN); `None` when the class is absent from both.
    pub fn dice(&self) -> Option<f64> {
        let d = 2 * self.true_pos + self.false_pos + self.false_neg;
        (d > 0).then(|| 2.0 * self.true_pos as f64 / d as f64)
    }

    /// TP / (TP + FP + FN); `None` when the class is absent from both.
    pub fn iou(&self) -> Option<f64> {
        let d = self.true_pos + self.false_pos + self.false_neg;
        (d > 0).then(|| self.true_pos as f64 / d as f64)
    }

    fn add(&mut self, o: &ClassOverlap) {
        self.true_pos += o.true_pos;
        self.false_pos += o.false_pos;
        self.false_neg += o.false_neg;
    }
}

/// Per-class overlap counts of two label maps of equal size.
pub fn overlap_counts<T: Copy + Into<u32>>(pred: &[T], truth: &[T], num_classes: usize) -> anyhow::Result<Vec<ClassOverlap>> {
    ensure!(pred.len() == truth.len(), "label maps differ in size: prediction {} voxels, truth {}", pred.len(), truth.len());
    let mut c = vec![ClassOverlap::default(); num_classes];
    for (i, (&p, &t)) in pred.iter().zip(truth).enumerate() {
        let (p, t) = (p.into() as usize, t.into() as usize);
        if p >= num_classes || t >= num_classes {
            bail!("label {} at voxel {i} is outside 0..{num_classes}", p.max(t));
        }
        if p == t {
            c[p].true_pos += 1;
        } else {
            c[p].false_pos += 1;
            c[t].false_neg += 1;
        }
    }
    Ok(c)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SegmentationConfig {
    pub empty_case: EmptyCase,
    /// Leave class 0 (background) out of `dice.mean` / `iou.mean`.
    pub exclude_background_from_mean: bool,
}

impl Default for SegmentationConfig {
    fn default() -> Self {
        SegmentationConfig { empty_case: EmptyCase::Exclude, exclude_background_from_mean: true }
    }
}

/// Dice and IoU per class over cases (images or volumes).
#[derive(Debug, Clone)]
pub struct SegmentationEval {
    class_names: Vec<String>,
    cfg: SegmentationConfig,
    cases: Vec<Vec<ClassOverlap>>,
}

impl SegmentationEval {
    /// `class_names[k]` names label value k (0 = background).
    pub fn new(class_names: Vec<String>, cfg: SegmentationConfig) -> Self {
        SegmentationEval { class_names, cfg, cases: Vec::new() }
    }

    pub fn add_case<T: Copy + Into<u32>>(&mut self, pred: &[T], truth: &[T]) -> anyhow::Result<()> {
        self.cases.push(overlap_counts(pred, truth, self.class_names.len())?);
        Ok(())
    }

    /// Mean over cases of class `k`'s score, with the empty/empty convention.
    fn case_mean(&self, k: usize, score: fn(&ClassOverlap) -> Option<f64>) -> Option<f64> {
        let v: Vec<f64> = self
            .cases
            .iter()
            .filter_map(|c| match (score(&c[k]), self.cfg.empty_case) {
                (Some(s), _) => Some(s),
                (None, EmptyCase::CountAsOne) => Some(1.0),
                (None, EmptyCase::Exclude) => None,
            })
            .collect();
        mean(&v)
    }

    /// Summary: `dice.CLASS`, `iou.CLASS` (means over cases), `dice.mean`,
    /// `iou.mean` (over classes); table: per class mean Dice, IoU, pooled
    /// Dice (all voxels of all cases together) and the number of cases counted.
    pub fn metrics(&self) -> Metrics {
        let mut m = Metrics::new();
        let mut t = MetricTable {
            title: format!("Segmentation ({} cases)", self.cases.len()),
            row_header: "class".into(),
            columns: vec!["dice".into(), "iou".into(), "dice_pooled".into(), "cases".into()],
            rows: vec![],
        };
        let (mut dices, mut ious) = (vec![], vec![]);
        for (k, name) in self.class_names.iter().enumerate() {
            let dice = self.case_mean(k, ClassOverlap::dice);
            let iou = self.case_mean(k, ClassOverlap::iou);
            let mut pooled = ClassOverlap::default();
            self.cases.iter().for_each(|c| pooled.add(&c[k]));
            let counted = self.cases.iter().filter(|c| c[k].dice().is_some() || self.cfg.empty_case == EmptyCase::CountAsOne).count();
            m.set(format!("dice.{name}"), dice.unwrap_or(f64::NAN));
            m.set(format!("iou.{name}"), iou.unwrap_or(f64::NAN));
            if k > 0 || !self.cfg.exclude_background_from_mean {
                dices.extend(dice);
                ious.extend(iou);
            }
            t.rows.push(MetricRow { name: name.clone(), values: vec![dice, iou, pooled.dice(), Some(counted as f64)] });
        }
        m.set("dice.mean", mean(&dices).unwrap_or(f64::NAN));
        m.set("iou.mean", mean(&ious).unwrap_or(f64::NAN));
        m.add_table(t);
        m
    }
}

// ---------------------------------------------------------------- landmarks

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LandmarkConfig {
    /// Success detection radii (mm, or px when spacing is unknown).
    pub sdr_thresholds: Vec<f64>,
}

impl Default for LandmarkConfig {
    /// The ISBI 2015 challenge radii, which the cephalometric source reports.
    fn default() -> Self {
        LandmarkConfig { sdr_thresholds: vec![2.0, 2.5, 3.0, 4.0] }
    }
}

/// Mean radial error and success detection rates, per landmark and overall.
#[derive(Debug, Clone)]
pub struct LandmarkEval {
    names: Vec<String>,
    cfg: LandmarkConfig,
    /// Radial errors per landmark.
    errors: Vec<Vec<f64>>,
    /// `Some(true)` = mm, `Some(false)` = px; set by the first image.
    in_mm: Option<bool>,
}

impl LandmarkEval {
    pub fn new(names: Vec<String>, cfg: LandmarkConfig) -> Self {
        let errors = vec![Vec::new(); names.len()];
        LandmarkEval { names, cfg, errors, in_mm: None }
    }

    /// One image: predicted and true (x, y) in pixels, per landmark in
    /// `names` order; a landmark without truth is skipped. `spacing` is
    /// (column, row) mm per pixel when known.
    pub fn add_image(&mut self, pred: &[[f64; 2]], truth: &[Option<[f64; 2]>], spacing: Option<[f64; 2]>) -> anyhow::Result<()> {
        let n = self.names.len();
        ensure!(pred.len() == n && truth.len() == n, "expected {n} landmarks, got {} predicted and {} true", pred.len(), truth.len());
        match self.in_mm {
            None => self.in_mm = Some(spacing.is_some()),
            Some(mm) if mm != spacing.is_some() => bail!(
                "an image {} spacing among images {} it: errors would mix mm and px",
                if mm { "without" } else { "with" },
                if mm { "with" } else { "without" }
            ),
            _ => {}
        }
        let [sx, sy] = spacing.unwrap_or([1.0, 1.0]);
        for (k, (p, t)) in pred.iter().zip(truth).enumerate() {
            if let Some(t) = t {
                self.errors[k].push(((p[0] - t[0]) * sx).hypot((p[1] - t[1]) * sy));
            }
        }
        Ok(())
    }

    fn unit(&self) -> &'static str {
        if self.in_mm == Some(false) {
            "px"
        } else {
            "mm"
        }
    }

    fn sdr(errors: &[f64], r: f64) -> Option<f64> {
        (!errors.is_empty()).then(|| errors.iter().filter(|&&e| e <= r).count() as f64 / errors.len() as f64)
    }

    /// Summary: `mre_UNIT`, `mre_std_UNIT`, `sdr_Rmm` per radius (fractions
    /// 0..1, an error equal to the radius counts as a success); table per landmark.
    pub fn metrics(&self) -> Metrics {
        let u = self.unit();
        let all: Vec<f64> = self.errors.iter().flatten().copied().collect();
        let mut m = Metrics::new();
        m.set(format!("mre_{u}"), mean(&all).unwrap_or(f64::NAN));
        m.set(format!("mre_std_{u}"), std_dev(&all).unwrap_or(f64::NAN));
        for &r in &self.cfg.sdr_thresholds {
            m.set(format!("sdr_{r}{u}"), Self::sdr(&all, r).unwrap_or(f64::NAN));
        }
        let mut columns = vec![format!("mre_{u}"), format!("std_{u}")];
        columns.extend(self.cfg.sdr_thresholds.iter().map(|r| format!("sdr_{r}{u}")));
        columns.push("n".into());
        let row = |name: &str, e: &[f64]| {
            let mut values = vec![mean(e), std_dev(e)];
            values.extend(self.cfg.sdr_thresholds.iter().map(|&r| Self::sdr(e, r)));
            values.push(Some(e.len() as f64));
            MetricRow { name: name.to_string(), values }
        };
        let mut rows: Vec<MetricRow> = self.names.iter().zip(&self.errors).map(|(n, e)| row(n, e)).collect();
        rows.push(row("overall", &all));
        m.add_table(MetricTable { title: format!("Landmarks (radial error, {u})"), row_header: "landmark".into(), columns, rows });
        m
    }
}

// ---------------------------------------------------------------- derived parameters

/// Mean absolute error of derived parameters (angles, offsets, ratios).
#[derive(Debug, Clone, Default)]
pub struct ParameterEval {
    /// name → (unit, absolute errors), in the order first seen.
    params: Vec<(String, String, Vec<f64>)>,
}

impl ParameterEval {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn add(&mut self, name: &str, unit: &str, predicted: f64, truth: f64) {
        let e = (predicted - truth).abs();
        match self.params.iter_mut().find(|p| p.0 == name) {
            Some(p) => p.2.push(e),
            None => self.params.push((name.to_string(), unit.to_string(), vec![e])),
        }
    }

    /// Summary: `mae.NAME`; table: MAE, SD, max, n per parameter.
    pub fn metrics(&self) -> Metrics {
        let mut m = Metrics::new();
        let mut t = MetricTable {
            title: "Derived parameters (absolute error)".into(),
            row_header: "parameter".into(),
            columns: vec!["mae".into(), "std".into(), "max".into(), "n".into()],
            rows: vec![],
        };
        for (name, unit, e) in &self.params {
            m.set(format!("mae.{name}"), mean(e).unwrap_or(f64::NAN));
            let max = e.iter().copied().fold(None, |a: Option<f64>, x| Some(a.map_or(x, |a| a.max(x))));
            let label = if unit.is_empty() { name.clone() } else { format!("{name} ({unit})") };
            t.rows.push(MetricRow { name: label, values: vec![mean(e), std_dev(e), max, Some(e.len() as f64)] });
        }
        m.add_table(t);
        m
    }
}

// ---------------------------------------------------------------- detection

/// Axis-aligned box (x1, y1, x2, y2), x2 > x1, in continuous coordinates.
pub type BBox = [f64; 4];

/// Intersection over union; 0 for boxes without area.
pub fn box_iou(a: &BBox, b: &BBox) -> f64 {
    let iw = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let ih = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = iw * ih;
    let area = |r: &BBox| (r[2] - r[0]).max(0.0) * (r[3] - r[1]).max(0.0);
    let union = area(a) + area(b) - inter;
    if union > 0.0 {
        inter / union
    } else {
        0.0
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Detection {
    pub bbox: BBox,
    pub score: f64,
    pub class: usize,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GroundTruth {
    pub bbox: BBox,
    pub class: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DetectionConfig {
    /// IoU needed for a match (VOC and the lesion detection literature: 0.5).
    pub iou_threshold: f64,
    /// Score from which a detection counts for sensitivity / FP per image
    /// (the operating point; AP uses all detections).
    pub score_threshold: f64,
}

impl Default for DetectionConfig {
    fn default() -> Self {
        DetectionConfig { iou_threshold: 0.5, score_threshold: 0.5 }
    }
}

/// Per-class AP (VOC all-point interpolation), sensitivity and false
/// positives per image at an operating score.
#[derive(Debug, Clone)]
pub struct DetectionEval {
    class_names: Vec<String>,
    cfg: DetectionConfig,
    images: Vec<(Vec<Detection>, Vec<GroundTruth>)>,
}

/// Outcome of matching one class's detections: (score, true positive) in
/// falling score order, and the number of truths.
struct Matched {
    hits: Vec<(f64, bool)>,
    truths: usize,
}

impl DetectionEval {
    /// `class_names[k]` names detection class k (no background entry).
    pub fn new(class_names: Vec<String>, cfg: DetectionConfig) -> Self {
        DetectionEval { class_names, cfg, images: Vec::new() }
    }

    pub fn add_image(&mut self, detections: Vec<Detection>, truths: Vec<GroundTruth>) -> anyhow::Result<()> {
        let n = self.class_names.len();
        if let Some(c) = detections.iter().map(|d| d.class).chain(truths.iter().map(|t| t.class)).find(|&c| c >= n) {
            bail!("detection class {c} outside 0..{n} (image {})", self.images.len());
        }
        self.images.push((detections, truths));
        Ok(())
    }

    /// VOC matching for `class`, using detections with score ≥ `min_score`.
    fn match_class(&self, class: usize, min_score: f64) -> Matched {
        let mut dets: Vec<(usize, usize, f64)> = Vec::new();
        let mut truths = 0;
        for (i, (d, t)) in self.images.iter().enumerate() {
            truths += t.iter().filter(|g| g.class == class).count();
            dets.extend(d.iter().enumerate().filter(|(_, d)| d.class == class && d.score >= min_score).map(|(j, d)| (i, j, d.score)));
        }
        // falling score; ties in input order so results do not depend on sort stability
        dets.sort_by(|a, b| b.2.total_cmp(&a.2).then(a.0.cmp(&b.0)).then(a.1.cmp(&b.1)));
        let mut used: Vec<Vec<bool>> = self.images.iter().map(|(_, t)| vec![false; t.len()]).collect();
        let hits = dets
            .into_iter()
            .map(|(i, j, score)| {
                let d = &self.images[i].0[j];
                let best = self.images[i]
                    .1
                    .iter()
                    .enumerate()
                    .filter(|(_, g)| g.class == class)
                    .map(|(k, g)| (k, box_iou(&d.bbox, &g.bbox)))
                    .max_by(|a, b| a.1.total_cmp(&b.1));
                let tp = match best {
                    Some((k, iou)) if iou >= self.cfg.iou_threshold && !used[i][k] => {
                        used[i][k] = true;
                        true
                    }
                    _ => false,
                };
                (score, tp)
            })
            .collect();
        Matched { hits, truths }
    }

    /// Average precision of `class`: area under the precision-recall curve
    /// with precision made monotone (VOC 2010+ all-point interpolation).
    /// `None` when the class has no ground truth.
    pub fn average_precision(&self, class: usize) -> Option<f64> {
        let m = self.match_class(class, f64::NEG_INFINITY);
        if m.truths == 0 {
            return None;
        }
        let (mut tp, mut fp) = (0usize, 0usize);
        let mut recall = vec![0.0];
        let mut precision = vec![0.0];
        for (_, hit) in &m.hits {
            if *hit {
                tp += 1
            } else {
                fp += 1
            }
            recall.push(tp as f64 / m.truths as f64);
            precision.push(tp as f64 / (tp + fp) as f64);
        }
        recall.push(1.0);
        precision.push(0.0);
        for i in (0..precision.len() - 1).rev() {
            precision[i] = precision[i].max(precision[i + 1]);
        }
        Some((1..recall.len()).map(|i| (recall[i] - recall[i - 1]) * precision[i]).sum())
    }

    /// (sensitivity, false positives per image) of `class` at the config's score threshold.
    pub fn sensitivity_fp(&self, class: usize) -> (Option<f64>, f64) {
        let m = self.match_class(class, self.cfg.score_threshold);
        let tp = m.hits.iter().filter(|h| h.1).count();
        let fp = m.hits.len() - tp;
        ((m.truths > 0).then(|| tp as f64 / m.truths as f64), fp as f64 / self.images.len().max(1) as f64)
    }

    /// Summary: `ap.CLASS`, `map` (mean over classes with truth),
    /// `sensitivity` (all classes pooled), `fp_per_image`; table per class.
    pub fn metrics(&self) -> Metrics {
        let iou = self.cfg.iou_threshold;
        let mut m = Metrics::new();
        let mut t = MetricTable {
            title: format!("Detection (IoU ≥ {iou}, score ≥ {} for sensitivity/FP, {} images)", self.cfg.score_threshold, self.images.len()),
            row_header: "class".into(),
            columns: vec!["ap".into(), "sensitivity".into(), "fp_per_image".into(), "truths".into()],
            rows: vec![],
        };
        let (mut aps, mut tp_all, mut truths_all, mut fp_all) = (vec![], 0.0, 0usize, 0.0);
        for (k, name) in self.class_names.iter().enumerate() {
            let ap = self.average_precision(k);
            let (sens, fp) = self.sensitivity_fp(k);
            let truths = self.images.iter().flat_map(|(_, t)| t).filter(|g| g.class == k).count();
            tp_all += sens.unwrap_or(0.0) * truths as f64;
            truths_all += truths;
            fp_all += fp;
            aps.extend(ap);
            m.set(format!("ap.{name}"), ap.unwrap_or(f64::NAN));
            t.rows.push(MetricRow { name: name.clone(), values: vec![ap, sens, Some(fp), Some(truths as f64)] });
        }
        m.set("map", mean(&aps).unwrap_or(f64::NAN));
        m.set("sensitivity", if truths_all > 0 { tp_all / truths_all as f64 } else { f64::NAN });
        m.set("fp_per_image", fp_all);
        m.add_table(t);
        m
    }
}

/// Lesion-level agreement of two binary lesion maps by overlap, for findings
/// that break into many irregular pieces (ground glass), where a box IoU of
/// 0.5 against one truth component is a poor test of a report: a predicted
/// lesion (8-connected component) is correct when at least
/// `min_correct_share` of it lies on truth; a true lesion is found when at
/// least `min_found_share` of it is covered by prediction. Components under
/// `min_pixels` are left out on both sides.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LesionOverlapConfig {
    pub min_correct_share: f64,
    pub min_found_share: f64,
    pub min_pixels: usize,
}

impl Default for LesionOverlapConfig {
    fn default() -> Self {
        LesionOverlapConfig { min_correct_share: 0.5, min_found_share: 0.25, min_pixels: 10 }
    }
}

/// Counts for `LesionOverlapConfig`, pooled over the images added.
#[derive(Debug, Clone, Default)]
pub struct LesionOverlapEval {
    cfg: LesionOverlapConfig,
    images: usize,
    predicted: usize,
    correct: usize,
    truths: usize,
    found: usize,
}

impl LesionOverlapEval {
    pub fn new(cfg: LesionOverlapConfig) -> Self {
        LesionOverlapEval { cfg, ..Default::default() }
    }

    /// One image of `width` columns: `pred` and `truth` mark lesion pixels.
    /// Returns the lesions predicted on it.
    pub fn add_image(&mut self, pred: &[bool], truth: &[bool], width: usize) -> anyhow::Result<usize> {
        ensure!(pred.len() == truth.len() && width > 0 && pred.len() % width == 0, "lesion maps of {} and {} pixels, width {width}", pred.len(), truth.len());
        let dims = [width, pred.len() / width, 1];
        let lesions = |map: &[bool]| -> Vec<Vec<usize>> {
            crate::imaging::components::components(dims, |i| map[i].then_some(()))
                .into_iter()
                .map(|(_, pixels)| pixels)
                .filter(|p| p.len() >= self.cfg.min_pixels)
                .collect()
        };
        let share = |pixels: &[usize], on: &[bool]| pixels.iter().filter(|&&i| on[i]).count() as f64 / pixels.len() as f64;
        let (predicted, truths) = (lesions(pred), lesions(truth));
        self.images += 1;
        self.predicted += predicted.len();
        self.correct += predicted.iter().filter(|p| share(p, truth) >= self.cfg.min_correct_share).count();
        self.truths += truths.len();
        self.found += truths.iter().filter(|t| share(t, pred) >= self.cfg.min_found_share).count();
        Ok(predicted.len())
    }

    /// `lesion_overlap.precision` (NaN when nothing was predicted),
    /// `.sensitivity` (NaN without truth), `.fp_per_image`, and the counts.
    pub fn metrics(&self) -> Metrics {
        let ratio = |a: usize, b: usize| if b == 0 { f64::NAN } else { a as f64 / b as f64 };
        let mut m = Metrics::new();
        m.set("lesion_overlap.precision", ratio(self.correct, self.predicted));
        m.set("lesion_overlap.sensitivity", ratio(self.found, self.truths));
        m.set("lesion_overlap.fp_per_image", ratio(self.predicted - self.correct, self.images));
        m.set("lesion_overlap.predicted", self.predicted as f64);
        m.set("lesion_overlap.truths", self.truths as f64);
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn dice_and_iou_hand_case_with_empty_convention() -> anyhow::Result<()> {
        let names = vec!["background".to_string(), "kidney".into(), "hydro".into()];
        // case 1: kidney 3 true, 1 predicted extra, 1 missed; hydro absent in both
        let truth: [u8; 8] = [0, 1, 1, 1, 1, 0, 0, 0];
        let pred: [u8; 8] = [1, 1, 1, 1, 0, 0, 0, 0];
        let c = overlap_counts(&pred, &truth, 3)?;
        assert_eq!(c[1], ClassOverlap { true_pos: 3, false_pos: 1, false_neg: 1 });
        assert_eq!(c[1].dice(), Some(6.0 / 8.0));
        assert_eq!(c[1].iou(), Some(3.0 / 5.0));
        assert_eq!(c[2].dice(), None);
        // case 2: hydro 1 of 2 found, kidney perfect
        let truth2: [u8; 4] = [2, 2, 1, 0];
        let pred2: [u8; 4] = [2, 0, 1, 0];
        for (empty, hydro_dice) in [(EmptyCase::Exclude, 2.0 / 3.0), (EmptyCase::CountAsOne, (2.0 / 3.0 + 1.0) / 2.0)] {
            let mut e = SegmentationEval::new(names.clone(), SegmentationConfig { empty_case: empty, ..Default::default() });
            e.add_case(&pred, &truth)?;
            e.add_case(&pred2, &truth2)?;
            let m = e.metrics();
            assert!(close(m.get("dice.kidney").unwrap(), (0.75 + 1.0) / 2.0));
            assert!(close(m.get("iou.kidney").unwrap(), (0.6 + 1.0) / 2.0));
            assert!(close(m.get("dice.hydro").unwrap(), hydro_dice));
            assert!(close(m.get("dice.mean").unwrap(), (0.875 + hydro_dice) / 2.0));
            // pooled kidney: TP 4, FP 1, FN 1 → 8/10
            assert_eq!(m.tables()[0].rows[1].values[2], Some(0.8));
        }
        assert!(overlap_counts(&[0u8, 3], &[0u8, 1], 3).unwrap_err().to_string().contains("label 3 at voxel 1"));
        assert!(overlap_counts(&[0u8], &[0u8, 1], 3).is_err());
        Ok(())
    }

    #[test]
    fn radial_error_and_sdr_hand_case() -> anyhow::Result<()> {
        let mut e = LandmarkEval::new(vec!["sella".into(), "nasion".into()], LandmarkConfig::default());
        // spacing 0.5 mm/px (exact in binary): errors 6 px → 3 mm and (6, 8) px → 5 mm
        e.add_image(&[[106.0, 100.0], [6.0, 8.0]], &[Some([100.0, 100.0]), Some([0.0, 0.0])], Some([0.5, 0.5]))?;
        // 1 mm and 2 mm; a missing truth is skipped
        e.add_image(&[[2.0, 0.0], [0.0, 4.0]], &[Some([0.0, 0.0]), Some([0.0, 0.0])], Some([0.5, 0.5]))?;
        e.add_image(&[[0.0, 0.0], [0.0, 0.0]], &[None, Some([0.0, 5.0])], Some([0.5, 0.5]))?;
        let m = e.metrics();
        // errors: sella 3, 1; nasion 5, 2, 2.5
        assert!(close(m.get("mre_mm").unwrap(), 13.5 / 5.0));
        assert!(close(m.get("sdr_2mm").unwrap(), 2.0 / 5.0));
        assert!(close(m.get("sdr_2.5mm").unwrap(), 3.0 / 5.0));
        assert!(close(m.get("sdr_3mm").unwrap(), 4.0 / 5.0));
        assert!(close(m.get("sdr_4mm").unwrap(), 4.0 / 5.0));
        let t = &m.tables()[0];
        assert_eq!(t.rows[0].name, "sella");
        assert!(close(t.rows[0].values[0].unwrap(), 2.0));
        assert!(close(t.rows[0].values[1].unwrap(), 1.0));
        assert!(close(t.rows[1].values[0].unwrap(), 9.5 / 3.0));
        assert_eq!(t.rows[1].values.last().unwrap(), &Some(3.0));
        assert_eq!(t.rows[2].name, "overall");
        // mixing mm and px is refused
        assert!(e.add_image(&[[0.0, 0.0], [0.0, 0.0]], &[None, None], None).is_err());
        let mut px = LandmarkEval::new(vec!["a".into()], LandmarkConfig { sdr_thresholds: vec![2.0] });
        px.add_image(&[[3.0, 4.0]], &[Some([0.0, 0.0])], None)?;
        assert_eq!(px.metrics().get("mre_px"), Some(5.0));
        assert_eq!(px.metrics().get("sdr_2px"), Some(0.0));
        Ok(())
    }

    #[test]
    fn parameter_mae_hand_case() {
        let mut p = ParameterEval::new();
        p.add("abduction", "deg", 42.0, 40.0);
        p.add("abduction", "deg", 38.0, 39.0);
        p.add("d0", "mm", -1.0, 2.0);
        let m = p.metrics();
        assert_eq!(m.get("mae.abduction"), Some(1.5));
        assert_eq!(m.get("mae.d0"), Some(3.0));
        assert_eq!(m.tables()[0].rows[0].name, "abduction (deg)");
        assert_eq!(m.tables()[0].rows[0].values, [Some(1.5), Some(0.5), Some(2.0), Some(2.0)]);
    }

    fn det(b: BBox, score: f64) -> Detection {
        Detection { bbox: b, score, class: 0 }
    }

    #[test]
    fn average_precision_voc_hand_case() -> anyhow::Result<()> {
        assert!(close(box_iou(&[0.0, 0.0, 10.0, 10.0], &[5.0, 0.0, 15.0, 10.0]), 50.0 / 150.0));
        assert_eq!(box_iou(&[0.0, 0.0, 1.0, 1.0], &[2.0, 2.0, 3.0, 3.0]), 0.0);
        let gts = vec![GroundTruth { bbox: [0.0, 0.0, 10.0, 10.0], class: 0 }, GroundTruth { bbox: [20.0, 20.0, 30.0, 30.0], class: 0 }];
        let dets = vec![
            det([0.0, 0.0, 10.0, 10.0], 0.9),
            det([50.0, 50.0, 60.0, 60.0], 0.8),
            det([20.0, 20.0, 30.0, 30.0], 0.7),
            // a duplicate of the first truth: false positive
            det([0.0, 0.0, 10.0, 9.0], 0.6),
        ];
        let mut e = DetectionEval::new(vec!["lesion".into(), "other".into()], DetectionConfig { iou_threshold: 0.5, score_threshold: 0.75 });
        e.add_image(dets, gts)?;
        // image without truth: one false positive
        e.add_image(vec![det([0.0, 0.0, 5.0, 5.0], 0.95)], vec![])?;
        // order: .95 FP, .9 TP, .8 FP, .7 TP, .6 FP → recall .5,.5,1 at precision 1/2, 2/4
        // interpolated: recall 0→.5 at max(1/2, 2/4) = .5, .5→1 at .5 → AP = .5
        assert!(close(e.average_precision(0).unwrap(), 0.5));
        assert_eq!(e.average_precision(1), None);
        // at score ≥ .75: detections .95 FP, .9 TP, .8 FP → sensitivity 1/2, FP 2 over 2 images
        assert_eq!(e.sensitivity_fp(0), (Some(0.5), 1.0));
        let m = e.metrics();
        assert!(close(m.get("map").unwrap(), 0.5));
        assert_eq!(m.get("sensitivity"), Some(0.5));
        assert_eq!(m.get("fp_per_image"), Some(1.0));
        assert!(m.get("ap.other").unwrap().is_nan());
        // without the high-scoring false positive: 1·0.5 + (2/3)·0.5
        let mut e2 = DetectionEval::new(vec!["lesion".into()], DetectionConfig::default());
        e2.add_image(
            vec![det([0.0, 0.0, 10.0, 10.0], 0.9), det([50.0, 50.0, 60.0, 60.0], 0.8), det([20.0, 20.0, 30.0, 30.0], 0.7)],
            vec![GroundTruth { bbox: [0.0, 0.0, 10.0, 10.0], class: 0 }, GroundTruth { bbox: [20.0, 20.0, 30.0, 30.0], class: 0 }],
        )?;
        assert!(close(e2.average_precision(0).unwrap(), 0.5 + 0.5 * 2.0 / 3.0));
        assert!(e2.add_image(vec![Detection { bbox: [0.0; 4], score: 1.0, class: 1 }], vec![]).is_err());
        Ok(())
    }

    #[test]
    fn table_prints_aligned_and_round_trips_through_json() {
        let mut m = Metrics::new();
        m.set("dice.mean", 0.87654);
        m.set("loss", 0.1);
        m.set("dice.mean", 0.5);
        m.set("undefined", f64::NAN);
        m.add_table(MetricTable {
            title: "Per class".into(),
            row_header: "class".into(),
            columns: vec!["dice".into(), "n".into()],
            rows: vec![
                MetricRow { name: "kidney".into(), values: vec![Some(0.9), Some(12.0)] },
                MetricRow { name: "hydronephrosis".into(), values: vec![None, Some(3.0)] },
            ],
        });
        let text = m.to_string();
        let want = "\
dice.mean      0.5000
loss           0.1000
undefined           -

Per class
class             dice        n
kidney          0.9000  12.0000
hydronephrosis       -   3.0000
";
        assert_eq!(text, want);
        let json = serde_json::to_string(&m).unwrap();
        assert!(json.starts_with(r#"{"summary":{"dice.mean":0.5,"loss":0.1,"undefined":null},"tables":[{"title":"Per class""#), "{json}");
        let back: Metrics = serde_json::from_str(&json).unwrap();
        assert_eq!(back.get("loss"), Some(0.1));
        assert!(back.get("undefined").unwrap().is_nan());
        assert_eq!(back.tables(), m.tables());
    }
    #[test]
    fn lesion_overlap_counts_correct_and_found_lesions_by_share() {
        // 6 x 4: truth = one lesion of 6 pixels (rows 0-1, columns 0-2);
        // prediction = columns 1-2 of it (4 px, all on truth: correct; covers 4/6 of the truth: found)
        // and a false 2-pixel speck at (5, 3)...(5, 2)
        let w = 6;
        let mut truth = vec![false; 24];
        let mut pred = vec![false; 24];
        for r in 0..2 {
            for c in 0..3 {
                truth[r * w + c] = true;
            }
            for c in 1..3 {
                pred[r * w + c] = true;
            }
        }
        pred[2 * w + 5] = true;
        pred[3 * w + 5] = true;
        let mut e = LesionOverlapEval::new(LesionOverlapConfig { min_pixels: 1, ..Default::default() });
        assert_eq!(e.add_image(&pred, &truth, w).unwrap(), 2);
        let m = e.metrics();
        assert_eq!(m.get("lesion_overlap.precision"), Some(0.5));
        assert_eq!(m.get("lesion_overlap.sensitivity"), Some(1.0));
        assert_eq!(m.get("lesion_overlap.fp_per_image"), Some(1.0));
        // the speck is under min_pixels 3: left out; an empty image adds to the images only
        let mut e = LesionOverlapEval::new(LesionOverlapConfig { min_pixels: 3, min_found_share: 0.9, ..Default::default() });
        e.add_image(&pred, &truth, w).unwrap();
        e.add_image(&[false; 24], &[false; 24], w).unwrap();
        let m = e.metrics();
        assert_eq!(
            (m.get("lesion_overlap.precision"), m.get("lesion_overlap.sensitivity"), m.get("lesion_overlap.fp_per_image")),
            (Some(1.0), Some(0.0), Some(0.0))
        );
        assert!(e.add_image(&pred, &truth[..20], w).is_err());
    }
}
