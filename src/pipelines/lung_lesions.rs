//! `lung-lesions` (MODELS.md 2, source seeds/001): a chest CT series ->
//! lung window and fixed normalisation per axial slice -> Mask R-CNN
//! (`models::lung_lesions`) in batches -> instances outside a classical
//! lung-field mask dropped -> one label map per series -> 3D connected
//! components per class = lesions (volume, longest axial diameter, score,
//! side) -> a SEG (one segment per class found) and a TID 1500 Comprehensive
//! 3D SR (one measurement group per lesion, totals per class; "absent" per
//! class when nothing is found).
//!
//! Nothing here writes DICOM: `encode::results` turns the output into objects.

use std::path::PathBuf;

use anyhow::{bail, Context};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use super::report::{PipelineOutput, Report};
use super::trained::{load_trained, read_weights_meta};
use crate::findings::*;
use crate::imaging::components::components;
use crate::imaging::volume::{group_by_series, load_series_with, SeriesOptions, Volume};
use crate::models::lung_lesions::{label_map, Instance, LungPreprocessConfig, MaskRcnn, MaskRcnnConfig};

pub const NAME: &str = "lung-lesions";

/// The code of a class (SEG property type, SR finding).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassCode {
    /// A class name of the weights.
    pub class: String,
    pub value: String,
    pub scheme: String,
    pub meaning: String,
    /// SEG display colour (sRGB).
    pub color: [u8; 3],
}

/// `[pipelines.lung-lesions]` in the node config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LungLesionsSettings {
    /// Weights prefix (`PREFIX.safetensors` + `PREFIX.json`).
    pub weights: PathBuf,
    /// Minimum detection score; unset: the value stored with the weights.
    pub score_threshold: Option<f64>,
    /// Slices per forward pass.
    pub batch_size: usize,
    /// Modalities of the series analysed.
    pub modalities: Vec<String>,
    /// Quarter turns (counter-clockwise) applied to a radiological axial
    /// slice before the network: the lung-medseg training slices show the
    /// chest turned by one (spine on the right).
    pub quarter_turns: u8,
    /// Margin around the lung field's bounding box kept in the network input, mm.
    pub crop_margin_mm: f64,
    pub lung_field: LungFieldSettings,
    /// An instance is kept when at least this share of its mask lies in the lung field.
    pub min_lung_overlap: f64,
    /// Lesions (3D components) smaller than this are dropped, mm³.
    pub min_lesion_mm3: f64,
    /// Codes of the weights' classes.
    pub class_codes: Vec<ClassCode>,
}

/// The classical lung-field mask: air below a threshold, not connected to
/// the image border, components of a minimum area, each with its holes
/// filled (dense lesions inside a lung), dilated by a margin (lesions at the
/// pleura are dense, so they are not air).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LungFieldSettings {
    pub air_threshold_hu: f64,
    /// Air components smaller than this (mm²) per slice are not lung.
    pub min_component_mm2: f64,
    /// Dilation of the air region (square, mm).
    pub margin_mm: f64,
}

impl Default for LungFieldSettings {
    fn default() -> Self {
        LungFieldSettings { air_threshold_hu: -320.0, min_component_mm2: 100.0, margin_mm: 10.0 }
    }
}

impl Default for LungLesionsSettings {
    fn default() -> Self {
        LungLesionsSettings {
            weights: PathBuf::from("weights/lung-lesions"),
            score_threshold: None,
            batch_size: 4,
            modalities: vec!["CT".into()],
            quarter_turns: 1,
            crop_margin_mm: 5.0,
            lung_field: LungFieldSettings::default(),
            min_lung_overlap: 0.5,
            min_lesion_mm3: 10.0,
            class_codes: vec![
                ClassCode {
                    class: "ground-glass opacity".into(),
                    value: "112120".into(),
                    scheme: "DCM".into(),
                    meaning: "Ground glass opacity".into(),
                    color: [255, 200, 0],
                },
                ClassCode {
                    class: "consolidation".into(),
                    value: "95436008".into(),
                    scheme: "SCT".into(),
                    meaning: "Lung consolidation".into(),
                    color: [230, 60, 40],
                },
            ],
        }
    }
}

impl LungLesionsSettings {
    pub fn validate(&self) -> Result<(), String> {
        if self.batch_size == 0 {
            return Err("batch_size must be at least 1".into());
        }
        if !(0.0..=1.0).contains(&self.min_lung_overlap) {
            return Err(format!("min_lung_overlap {} is outside 0..1", self.min_lung_overlap));
        }
        if self.score_threshold.is_some_and(|s| !(0.0..=1.0).contains(&s)) {
            return Err("score_threshold must be in 0..1".into());
        }
        if self.quarter_turns > 3 {
            return Err(format!("quarter_turns {} must be 0..3", self.quarter_turns));
        }
        Ok(())
    }
}

/// One lesion: a 3D connected component of one class.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Lesion3d {
    /// 1-based class label.
    pub label: u8,
    pub voxels: usize,
    pub volume_ml: f64,
    /// Longest in-plane extent on any one slice (pixel corners), mm.
    pub longest_axial_diameter_mm: f64,
    /// Highest detection score among its voxels.
    pub score: f64,
    /// The slice with the most of its voxels, and there its bounding
    /// rectangle (column, row of pixel edges: c0, r0, c1, r1).
    pub key_slice: usize,
    pub key_box: [usize; 4],
    /// Centroid in voxel indices (i, j, k).
    pub centroid: [f64; 3],
    /// Bounding box in voxel indices: first (i, j, k), then one past the last.
    pub bbox: [usize; 6],
}

/// Lesions of a label volume (index (k · rows + j) · cols + i): 26-connected
/// components of equal label; `scores` per voxel. Components below
/// `min_voxels` are removed from `labels` too, so the SEG and the SR agree.
pub fn join_lesions(labels: &mut [u8], scores: &[f32], dims: [usize; 3], spacing: [f64; 3], min_voxels: usize) -> Vec<Lesion3d> {
    let found = components(dims, |p| (labels[p] > 0).then_some(labels[p]));
    let mut lesions = Vec::new();
    for (label, members) in found {
        if members.len() < min_voxels {
            members.iter().for_each(|&p| labels[p] = 0);
        } else {
            lesions.push(describe(&members, label, scores, dims, spacing));
        }
    }
    lesions
}

fn describe(members: &[usize], label: u8, scores: &[f32], dims: [usize; 3], spacing: [f64; 3]) -> Lesion3d {
    let [cols, rows, _] = dims;
    let plane = rows * cols;
    let mut by_slice: std::collections::BTreeMap<usize, Vec<(usize, usize)>> = Default::default();
    let mut centroid = [0f64; 3];
    let mut score = 0f32;
    let mut bbox = [usize::MAX, usize::MAX, usize::MAX, 0, 0, 0];
    for &p in members {
        let (k, j, i) = (p / plane, (p % plane) / cols, p % cols);
        bbox = [bbox[0].min(i), bbox[1].min(j), bbox[2].min(k), bbox[3].max(i + 1), bbox[4].max(j + 1), bbox[5].max(k + 1)];
        by_slice.entry(k).or_default().push((i, j));
        centroid = [centroid[0] + i as f64, centroid[1] + j as f64, centroid[2] + k as f64];
        score = score.max(scores[p]);
    }
    let n = members.len() as f64;
    let (key_slice, key_pixels) =
        by_slice.iter().max_by_key(|(k, px)| (px.len(), std::cmp::Reverse(**k))).map(|(k, px)| (*k, px)).expect("a lesion has voxels");
    let key_box = key_pixels.iter().fold([usize::MAX, usize::MAX, 0, 0], |b, &(i, j)| [b[0].min(i), b[1].min(j), b[2].max(i + 1), b[3].max(j + 1)]);
    let diameter = by_slice.values().map(|px| longest_extent(px, [spacing[0], spacing[1]])).fold(0.0, f64::max);
    Lesion3d {
        label,
        voxels: members.len(),
        volume_ml: n * spacing[0] * spacing[1] * spacing[2] / 1000.0,
        longest_axial_diameter_mm: diameter,
        score: score as f64,
        key_slice,
        key_box,
        centroid: [centroid[0] / n, centroid[1] / n, centroid[2] / n],
        bbox,
    }
}

/// Largest distance between corners of the given pixels (i, j) in mm: only
/// pixels on the region's boundary can hold the farthest corners.
fn longest_extent(pixels: &[(usize, usize)], spacing: [f64; 2]) -> f64 {
    let set: std::collections::HashSet<(usize, usize)> = pixels.iter().copied().collect();
    let inner = |&(i, j): &(usize, usize)| i > 0 && j > 0 && [(i - 1, j), (i + 1, j), (i, j - 1), (i, j + 1)].iter().all(|q| set.contains(q));
    let mut corners: Vec<[f64; 2]> = Vec::new();
    for p in pixels.iter().filter(|p| !inner(p)) {
        for (di, dj) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
            corners.push([(p.0 + di) as f64 * spacing[0], (p.1 + dj) as f64 * spacing[1]]);
        }
    }
    let mut best = 0f64;
    for a in 0..corners.len() {
        for b in a + 1..corners.len() {
            let (dx, dy) = (corners[a][0] - corners[b][0], corners[a][1] - corners[b][1]);
            best = best.max(dx * dx + dy * dy);
        }
    }
    best.sqrt()
}

// ---------------------------------------------------------------------------
// Lung field (per slice)
// ---------------------------------------------------------------------------

/// Square dilation of a mask by `r` pixels (separable running max).
fn dilate(mask: &[bool], rows: usize, cols: usize, r: usize) -> Vec<bool> {
    if r == 0 {
        return mask.to_vec();
    }
    let pass = |src: &[bool], n: usize, stride: usize, lines: usize, line_stride: usize| -> Vec<bool> {
        let mut out = vec![false; src.len()];
        for l in 0..lines {
            let base = l * line_stride;
            // prefix counts along the line
            let mut prefix = vec![0usize; n + 1];
            for t in 0..n {
                prefix[t + 1] = prefix[t] + usize::from(src[base + t * stride]);
            }
            for t in 0..n {
                let (lo, hi) = (t.saturating_sub(r), (t + r + 1).min(n));
                out[base + t * stride] = prefix[hi] > prefix[lo];
            }
        }
        out
    };
    let h = pass(mask, cols, 1, rows, cols);
    pass(&h, rows, cols, cols, 1)
}

/// Pixels of `open` reachable from the image border (4-connected).
fn reachable_from_border(open: &[bool], rows: usize, cols: usize) -> Vec<bool> {
    let mut seen = vec![false; open.len()];
    let mut stack: Vec<usize> = Vec::new();
    for r in 0..rows {
        for c in 0..cols {
            if (r == 0 || c == 0 || r == rows - 1 || c == cols - 1) && open[r * cols + c] {
                seen[r * cols + c] = true;
                stack.push(r * cols + c);
            }
        }
    }
    while let Some(p) = stack.pop() {
        let (r, c) = (p / cols, p % cols);
        let mut visit = |q: usize| {
            if open[q] && !seen[q] {
                seen[q] = true;
                stack.push(q);
            }
        };
        if r > 0 {
            visit(p - cols);
        }
        if r + 1 < rows {
            visit(p + cols);
        }
        if c > 0 {
            visit(p - 1);
        }
        if c + 1 < cols {
            visit(p + 1);
        }
    }
    seen
}

/// The lung field of one axial slice (HU), spacing (column, row) in mm.
pub fn lung_field(hu: &[f32], rows: usize, cols: usize, spacing: [f64; 2], s: &LungFieldSettings) -> Vec<bool> {
    let air: Vec<bool> = hu.iter().map(|&v| (v as f64) < s.air_threshold_hu).collect();
    let outside = reachable_from_border(&air, rows, cols);
    let inner: Vec<bool> = air.iter().zip(&outside).map(|(&a, &o)| a && !o).collect();
    // components of enclosed air with their areas
    let min_pixels = (s.min_component_mm2 / (spacing[0] * spacing[1])).ceil().max(1.0) as usize;
    let mut keep = vec![false; inner.len()];
    for (_, members) in components([cols, rows, 1], |p| inner[p].then_some(())) {
        if members.len() >= min_pixels {
            fill_component(&mut keep, &members, rows, cols);
        }
    }
    // Holes are filled per lung, before the margin: filled after it, the two
    // grown lungs meet in front of and behind the mediastinum and the heart
    // and great vessels became a "hole" of the field.
    let r = (s.margin_mm / spacing[0].min(spacing[1])).round() as usize;
    dilate(&keep, rows, cols, r)
}

/// Sets the pixels of one component and of its holes (what the border of
/// the component's bounding box cannot reach through non-members).
fn fill_component(mask: &mut [bool], members: &[usize], rows: usize, cols: usize) {
    // one pixel of room around the box so the outside is connected
    let Some([c0, r0, w, h]) = pixels_box(members.iter().copied(), rows, cols, 1) else { return };
    let mut open = vec![true; h * w];
    for &p in members {
        open[(p / cols - r0) * w + (p % cols - c0)] = false;
    }
    let outside = reachable_from_border(&open, h, w);
    for (q, &o) in outside.iter().enumerate() {
        if !o {
            mask[(r0 + q / w) * cols + c0 + q % w] = true;
        }
    }
}

// ---------------------------------------------------------------------------
// Slice geometry for the network
// ---------------------------------------------------------------------------

/// How a crop of a slice, turned by quarter turns, maps onto the square
/// network input (letterboxed, centred).
#[derive(Debug, Clone, Copy, PartialEq)]
struct SliceView {
    /// Crop in slice pixels: first column, first row, width, height.
    crop: [usize; 4],
    turns: u8,
    /// Input pixels per crop pixel and the letterbox offsets.
    scale: f64,
    offset: [f64; 2],
    size: usize,
}

impl SliceView {
    fn new(crop: [usize; 4], turns: u8, size: usize) -> SliceView {
        let (w, h) = if turns % 2 == 1 { (crop[3], crop[2]) } else { (crop[2], crop[3]) };
        let scale = (size as f64 / w as f64).min(size as f64 / h as f64);
        let (nw, nh) = ((w as f64 * scale).round(), (h as f64 * scale).round());
        SliceView { crop, turns, scale, offset: [((size as f64 - nw) / 2.0).floor(), ((size as f64 - nh) / 2.0).floor()], size }
    }

    /// Turned-crop pixel (x, y) of crop pixel (c, r); rotation is counter-clockwise.
    fn turn(&self, c: f64, r: f64) -> (f64, f64) {
        let (w, h) = (self.crop[2] as f64, self.crop[3] as f64);
        match self.turns % 4 {
            0 => (c, r),
            1 => (r, w - 1.0 - c),
            2 => (w - 1.0 - c, h - 1.0 - r),
            _ => (h - 1.0 - r, c),
        }
    }

    /// Inverse of `turn`.
    fn unturn(&self, x: f64, y: f64) -> (f64, f64) {
        let (w, h) = (self.crop[2] as f64, self.crop[3] as f64);
        match self.turns % 4 {
            0 => (x, y),
            1 => (w - 1.0 - y, x),
            2 => (w - 1.0 - x, h - 1.0 - y),
            _ => (y, h - 1.0 - x),
        }
    }

    /// Network input pixel centre of slice pixel (column, row).
    fn to_input(&self, col: usize, row: usize) -> (f64, f64) {
        let (x, y) = self.turn((col - self.crop[0]) as f64, (row - self.crop[1]) as f64);
        ((x + 0.5) * self.scale - 0.5 + self.offset[0], (y + 0.5) * self.scale - 0.5 + self.offset[1])
    }

    /// The network input (bilinear from the windowed slice; 0 outside).
    fn input(&self, windowed: &[f32], cols: usize) -> Vec<f32> {
        let n = self.size;
        let (tw, th) = if self.turns % 2 == 1 { (self.crop[3], self.crop[2]) } else { (self.crop[2], self.crop[3]) };
        let mut out = vec![0f32; n * n];
        for y in 0..n {
            let ty = (y as f64 + 0.5 - self.offset[1]) / self.scale - 0.5;
            if ty < -0.5 || ty > th as f64 - 0.5 {
                continue;
            }
            for x in 0..n {
                let tx = (x as f64 + 0.5 - self.offset[0]) / self.scale - 0.5;
                if tx < -0.5 || tx > tw as f64 - 0.5 {
                    continue;
                }
                let (c, r) = self.unturn(tx.clamp(0.0, tw as f64 - 1.0), ty.clamp(0.0, th as f64 - 1.0));
                let (c0, r0) = (c.floor(), r.floor());
                let (fc, fr) = (c - c0, r - r0);
                let at = |cc: f64, rr: f64| {
                    let cc = (cc as usize).min(self.crop[2] - 1) + self.crop[0];
                    let rr = (rr as usize).min(self.crop[3] - 1) + self.crop[1];
                    windowed[rr * cols + cc] as f64
                };
                let v = (1.0 - fr) * ((1.0 - fc) * at(c0, r0) + fc * at(c0 + 1.0, r0)) + fr * ((1.0 - fc) * at(c0, r0 + 1.0) + fc * at(c0 + 1.0, r0 + 1.0));
                out[y * n + x] = v as f32;
            }
        }
        out
    }
}

/// The network's view of each slice that has a lung field: the field's
/// bounding box grown by `crop_margin_mm`, turned by `quarter_turns`, onto
/// the `input_size` square. Also returns every slice's lung field.
fn slice_views(vol: &Volume, settings: &LungLesionsSettings, input_size: usize) -> (Vec<Vec<bool>>, Vec<(usize, SliceView)>) {
    let [cols, rows, slices] = vol.dims;
    let spacing = [vol.spacing[0], vol.spacing[1]];
    let fields: Vec<Vec<bool>> = (0..slices).map(|k| lung_field(vol.slice(k), rows, cols, spacing, &settings.lung_field)).collect();
    let margin = (settings.crop_margin_mm / spacing[0].min(spacing[1])).round() as usize;
    let views =
        (0..slices).filter_map(|k| bounding_box(&fields[k], rows, cols, margin).map(|b| (k, SliceView::new(b, settings.quarter_turns, input_size)))).collect();
    (fields, views)
}

/// One slice as the network sees it before the letterbox: cropped to the
/// lung field, turned, windowed to [0, 1]; what the training slices of
/// lung-medseg look like (`ainode data lung-negatives` writes these).
#[derive(Debug, Clone, PartialEq)]
pub struct SliceCrop {
    pub slice: usize,
    pub width: usize,
    pub height: usize,
    pub values: Vec<f32>,
}

/// The [`SliceCrop`] of every slice of `vol` with a lung field.
pub fn slice_crops(vol: &Volume, settings: &LungLesionsSettings, preprocess: &LungPreprocessConfig) -> Vec<SliceCrop> {
    let cols = vol.dims[0];
    let (_, views) = slice_views(vol, settings, preprocess.input_size);
    views
        .into_iter()
        .map(|(k, view)| {
            let hu = vol.slice(k);
            let (w, h) = if view.turns % 2 == 1 { (view.crop[3], view.crop[2]) } else { (view.crop[2], view.crop[3]) };
            let values = (0..h)
                .flat_map(|y| (0..w).map(move |x| (x, y)))
                .map(|(x, y)| {
                    let (c, r) = view.unturn(x as f64, y as f64);
                    preprocess.window(hu[(r as usize + view.crop[1]) * cols + c as usize + view.crop[0]])
                })
                .collect();
            SliceCrop { slice: k, width: w, height: h, values }
        })
        .collect()
}

/// Bounding box (first column, first row, width, height) of a mask, grown
/// by `margin` pixels and clipped to the slice.
fn bounding_box(mask: &[bool], rows: usize, cols: usize, margin: usize) -> Option<[usize; 4]> {
    pixels_box(mask.iter().enumerate().filter(|(_, &m)| m).map(|(p, _)| p), rows, cols, margin)
}

/// Bounding box, as [`bounding_box`], of pixels given by index.
fn pixels_box(pixels: impl IntoIterator<Item = usize>, rows: usize, cols: usize, margin: usize) -> Option<[usize; 4]> {
    let mut b = [usize::MAX, usize::MAX, 0, 0];
    for p in pixels {
        let (r, c) = (p / cols, p % cols);
        b = [b[0].min(c), b[1].min(r), b[2].max(c), b[3].max(r)];
    }
    if b[0] == usize::MAX {
        return None;
    }
    let (c0, r0) = (b[0].saturating_sub(margin), b[1].saturating_sub(margin));
    let (c1, r1) = ((b[2] + margin).min(cols - 1), (b[3] + margin).min(rows - 1));
    Some([c0, r0, c1 - c0 + 1, r1 - r0 + 1])
}

// ---------------------------------------------------------------------------
// The pipeline
// ---------------------------------------------------------------------------

/// What `lung-lesions` found in one series (printed by `ainode run`).
#[derive(Debug, Clone, Serialize)]
pub struct SeriesAnalysis {
    pub series_instance_uid: String,
    pub slices: usize,
    /// Slices with a lung field (the others are not run through the network).
    pub slices_with_lung: usize,
    pub instances_kept: usize,
    /// Instances dropped because they lie outside the lung field.
    pub instances_outside_lung: usize,
    pub lesions: Vec<LesionSummary>,
    /// Per class: lesion count and total volume (ml).
    pub totals: Vec<ClassTotal>,
    pub timing_ms: Timing,
}

#[derive(Debug, Clone, Serialize)]
pub struct LesionSummary {
    pub tracking_id: String,
    pub class: String,
    pub side: String,
    #[serde(flatten)]
    pub lesion: Lesion3d,
}

#[derive(Debug, Clone, Serialize)]
pub struct ClassTotal {
    pub class: String,
    pub lesions: usize,
    pub volume_ml: f64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Timing {
    pub load: f64,
    pub lung_field: f64,
    pub network: f64,
    pub total: f64,
}

pub struct LungLesionsPipeline {
    net: MaskRcnn,
    preprocess: LungPreprocessConfig,
    network: MaskRcnnConfig,
    settings: LungLesionsSettings,
    codes: Vec<ClassCode>,
    pub(super) algorithm: AlgorithmIdentity,
    device: Device,
}

/// The series' label map, per-voxel scores and what was counted on the way.
struct SeriesLabels {
    labels: Vec<u8>,
    scores: Vec<f32>,
    /// Lung-field pixels and the sum of their columns over the series: the
    /// field's mean column is the midline that sides a lesion.
    field_pixels: usize,
    field_column_sum: f64,
    slices_with_lung: usize,
    kept: usize,
    outside: usize,
}

impl LungLesionsPipeline {
    pub fn load(settings: &LungLesionsSettings, device: &Device) -> anyhow::Result<LungLesionsPipeline> {
        settings.validate().map_err(|e| anyhow::anyhow!("[pipelines.lung-lesions]: {e}"))?;
        let (prefix, meta) = read_weights_meta(NAME, &settings.weights)?;
        let arch = &meta.architecture;
        let mut network: MaskRcnnConfig = serde_json::from_value(arch["network"].clone()).context("lung-lesions weights: architecture.network")?;
        let preprocess: LungPreprocessConfig = serde_json::from_value(arch["preprocess"].clone()).context("lung-lesions weights: architecture.preprocess")?;
        let trained = load_trained(&prefix, meta, device, |vb| MaskRcnn::load(vb, &network).map(|_| ()))?;
        if let Some(s) = settings.score_threshold {
            network.score_threshold = s;
        }
        let net = MaskRcnn::load(VarBuilder::from_tensors(trained.tensors, DType::F32, device), &network)?;
        let codes = network
            .classes
            .iter()
            .map(|c| {
                settings.class_codes.iter().find(|k| &k.class == c).cloned().with_context(|| {
                    format!("[pipelines.lung-lesions] class_codes: the weights' class `{c}` has no code (add a [[pipelines.lung-lesions.class_codes]] entry)")
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let mut algorithm = AlgorithmIdentity::new("ainode lung-lesions Mask R-CNN", &trained.meta.model_version);
        algorithm.weights_sha256 = Some(trained.sha256);
        Ok(LungLesionsPipeline { net, preprocess, network, settings: settings.clone(), codes, algorithm, device: device.clone() })
    }

    /// Runs the network over every slice with a lung field.
    fn label_series(&self, vol: &Volume) -> anyhow::Result<(SeriesLabels, f64, f64)> {
        let [cols, rows, slices] = vol.dims;
        let plane = rows * cols;
        let t0 = std::time::Instant::now();
        let (fields, todo) = slice_views(vol, &self.settings, self.preprocess.input_size);
        let field_ms = t0.elapsed().as_secs_f64() * 1000.0;
        let mut out = SeriesLabels {
            labels: vec![0; plane * slices],
            scores: vec![0.0; plane * slices],
            field_pixels: 0,
            field_column_sum: 0.0,
            slices_with_lung: 0,
            kept: 0,
            outside: 0,
        };
        out.slices_with_lung = todo.len();
        let n = self.preprocess.input_size;
        let t1 = std::time::Instant::now();
        for chunk in todo.chunks(self.settings.batch_size) {
            let mut data = Vec::with_capacity(chunk.len() * n * n);
            for (k, view) in chunk {
                let windowed: Vec<f32> = vol.slice(*k).iter().map(|&v| self.preprocess.window(v)).collect();
                let mut input = view.input(&windowed, cols);
                self.preprocess.normalise(&mut input);
                data.extend(input);
            }
            let x = Tensor::from_vec(data, (chunk.len(), 1, n, n), &self.device)?;
            let detections = self.net.detect(&x)?;
            for ((k, view), instances) in chunk.iter().zip(detections) {
                let field = &fields[*k];
                self.place(&instances, view, field, *k * plane, cols, &mut out);
                for (p, _) in field.iter().enumerate().filter(|(_, &f)| f) {
                    out.field_column_sum += (p % cols) as f64;
                    out.field_pixels += 1;
                }
            }
        }
        Ok((out, field_ms, t1.elapsed().as_secs_f64() * 1000.0))
    }

    /// Pastes one slice's instances into the series label map (the slice
    /// starts at `base`): instances mostly outside the lung field are
    /// dropped, the rest clipped to it.
    fn place(&self, instances: &[Instance], view: &SliceView, field: &[bool], base: usize, cols: usize, out: &mut SeriesLabels) {
        let n = self.preprocess.input_size;
        let threshold = self.network.mask_threshold;
        let mut kept: Vec<Instance> = Vec::new();
        // each slice pixel of the crop reads the input pixel it maps to
        let [c0, r0, w, h] = view.crop;
        let lookup: Vec<(usize, usize, Option<usize>)> = (r0..r0 + h)
            .flat_map(|r| (c0..c0 + w).map(move |c| (r, c)))
            .map(|(r, c)| {
                let (x, y) = view.to_input(c, r);
                let (x, y) = (x.round(), y.round());
                let q = (x >= 0.0 && y >= 0.0 && (x as usize) < n && (y as usize) < n).then(|| y as usize * n + x as usize);
                (r, c, q)
            })
            .collect();
        for inst in instances {
            let (mut inside, mut total) = (0usize, 0usize);
            for &(r, c, q) in &lookup {
                if q.is_some_and(|q| inst.mask[q] as f64 >= threshold) {
                    total += 1;
                    inside += usize::from(field[r * cols + c]);
                }
            }
            if total == 0 {
                continue;
            }
            if (inside as f64) < self.settings.min_lung_overlap * total as f64 {
                out.outside += 1;
            } else {
                kept.push(inst.clone());
            }
        }
        out.kept += kept.len();
        let labels = label_map(&kept, (n, n), threshold);
        let mut best = vec![0f32; n * n];
        for inst in &kept {
            for (p, &m) in inst.mask.iter().enumerate() {
                if m as f64 >= threshold && labels[p] as u32 == inst.label {
                    best[p] = best[p].max(inst.score);
                }
            }
        }
        for &(r, c, q) in &lookup {
            if let Some(q) = q {
                if labels[q] > 0 && field[r * cols + c] {
                    out.labels[base + r * cols + c] = labels[q];
                    out.scores[base + r * cols + c] = best[q];
                }
            }
        }
    }

    /// Lesions of one CT series and the report that carries them; `Ok(None)`
    /// with the reason for a series that is not an axial stack (a localizer,
    /// a reformat in another plane), which is skipped, not failed.
    pub fn analyze_series(&self, files: &[PathBuf]) -> anyhow::Result<Result<Report, String>> {
        let t0 = std::time::Instant::now();
        let (vol, report) =
            load_series_with(files, &SeriesOptions::default()).with_context(|| format!("lung-lesions: loading {} files as one series", files.len()))?;
        if report.resampled {
            bail!("series {}: the slices are not a regular stack; a SEG must lie on the source images", vol.series_instance_uid);
        }
        let n = vol.direction[2];
        if n[2].abs() < 0.8 {
            return Ok(Err(format!("not axial (slice normal {:.2} {:.2} {:.2})", n[0], n[1], n[2])));
        }
        let load_ms = t0.elapsed().as_secs_f64() * 1000.0;
        let (mut labels, field_ms, network_ms) = self.label_series(&vol)?;
        let voxel = vol.spacing[0] * vol.spacing[1] * vol.spacing[2];
        let min_voxels = (self.settings.min_lesion_mm3 / voxel).ceil().max(1.0) as usize;
        let mut lesions = join_lesions(&mut labels.labels, &labels.scores, vol.dims, vol.spacing, min_voxels);
        // largest first: "lesion 1" is the biggest
        lesions.sort_by(|a, b| b.voxels.cmp(&a.voxels).then(a.key_slice.cmp(&b.key_slice)));
        let summaries: Vec<LesionSummary> = lesions
            .iter()
            .enumerate()
            .map(|(i, l)| LesionSummary {
                tracking_id: format!("lesion {}", i + 1),
                class: self.network.classes[l.label as usize - 1].clone(),
                side: side(&vol, l, (labels.field_pixels > 0).then(|| labels.field_column_sum / labels.field_pixels as f64)).to_string(),
                lesion: l.clone(),
            })
            .collect();
        let totals: Vec<ClassTotal> = self
            .network
            .classes
            .iter()
            .enumerate()
            .map(|(c, name)| {
                let of: Vec<&Lesion3d> = lesions.iter().filter(|l| l.label as usize == c + 1).collect();
                ClassTotal { class: name.clone(), lesions: of.len(), volume_ml: of.iter().map(|l| l.volume_ml).sum::<f64>() + 0.0 }
            })
            .collect();
        let segmentation = self.segmentation(&vol, &labels.labels)?;
        let findings = self.findings(&vol, &summaries, &totals)?;
        let analysis = SeriesAnalysis {
            series_instance_uid: vol.series_instance_uid.clone(),
            slices: vol.dims[2],
            slices_with_lung: labels.slices_with_lung,
            instances_kept: labels.kept,
            instances_outside_lung: labels.outside,
            lesions: summaries,
            totals,
            timing_ms: Timing { load: load_ms, lung_field: field_ms, network: network_ms, total: t0.elapsed().as_secs_f64() * 1000.0 },
        };
        Ok(Ok(Report { sources: files.to_vec(), findings: Some(findings), overlay: None, segmentation, summary: serde_json::to_value(&analysis)? }))
    }

    /// One segment per class present (numbered 1.. in class order); None
    /// when nothing was found, so that no empty SEG is ever sent.
    fn segmentation(&self, vol: &Volume, labels: &[u8]) -> anyhow::Result<Option<Segmentation>> {
        let present: Vec<u8> = (1..=self.network.classes.len() as u8).filter(|c| labels.contains(c)).collect();
        if present.is_empty() {
            return Ok(None);
        }
        let mut number = [0u16; 256];
        let segments = present
            .iter()
            .enumerate()
            .map(|(i, &c)| {
                number[c as usize] = i as u16 + 1;
                let code = &self.codes[c as usize - 1];
                Segment {
                    number: i as u16 + 1,
                    label: code.class.clone(),
                    category: Code::new("49755003", "SCT", "Morphologically Abnormal Structure"),
                    property_type: Code::new(&code.value, &code.scheme, &code.meaning),
                    type_modifiers: Vec::new(),
                    anatomic_region: Some(lung()),
                    color: Some(code.color),
                    algorithm_type: AlgorithmType::Automatic,
                    algorithm: Some(self.algorithm.clone()),
                    tracking_id: None,
                }
            })
            .collect();
        // the volume's index order (k, j, i) is the grid's (frame, row, column)
        let grid = SourceGrid::from_volume(vol).map_err(|e| anyhow::anyhow!("series {}: {e}", vol.series_instance_uid))?;
        let map = LabelMap::new(grid, labels.iter().map(|&l| number[l as usize]).collect())
            .map_err(|e| anyhow::anyhow!("series {}: {e}", vol.series_instance_uid))?;
        Ok(Some(Segmentation { segments, labels: map }))
    }

    fn findings(&self, vol: &Volume, lesions: &[LesionSummary], totals: &[ClassTotal]) -> anyhow::Result<Findings> {
        let mut f = Findings::new(self.algorithm.clone());
        f.procedure_reported = Some(Code::new("77477000", "SCT", "Computerized tomography"));
        let class_code = |name: &str| {
            let c = self.codes.iter().find(|c| c.class == name).expect("every class has a code");
            Code::new(&c.value, &c.scheme, &c.meaning)
        };
        for l in lesions {
            let mut g = MeasurementGroup::new(&l.tracking_id);
            g.finding = Some(class_code(&l.class));
            g.finding_site = Some(match l.side.as_str() {
                "left" => Code::new("44029006", "SCT", "Left lung"),
                "right" => Code::new("3341006", "SCT", "Right lung"),
                _ => lung(),
            });
            // bounding polyline on the key slice, closed, in patient space
            let [c0, r0, c1, r1] = l.lesion.key_box;
            let k = l.lesion.key_slice as f64;
            let corner = |c: usize, r: usize| vol.voxel_to_patient([c as f64 - 0.5, r as f64 - 0.5, k]);
            let points = vec![corner(c0, r0), corner(c1, r0), corner(c1, r1), corner(c0, r1), corner(c0, r0)];
            g.roi =
                Some(Roi::Patient(PatientRegion { frame_of_reference_uid: vol.frame_of_reference_uid.clone(), graphic_type: GraphicType::Polyline, points }));
            g.measurements.push(Measurement::new(codes::volume(), round(l.lesion.volume_ml, 3), codes::ml()));
            g.measurements.push(Measurement::new(codes::long_axis(), round(l.lesion.longest_axial_diameter_mm, 1), codes::mm()));
            g.measurements.push(Measurement::new(codes::certainty_of_finding(), round(l.lesion.score, 3), codes::no_units()));
            f.groups.push(g);
        }
        for t in totals {
            if t.lesions == 0 {
                f.evaluations.push(QualitativeEvaluation::coded(class_code(&t.class), Code::new("2667000", "SCT", "Absent")));
                continue;
            }
            let mut g = MeasurementGroup::new(&format!("all {}", t.class));
            g.finding = Some(class_code(&t.class));
            g.finding_site = Some(lung());
            g.measurements.push(Measurement::new(codes::volume(), round(t.volume_ml, 3), codes::ml()));
            g.measurements.push(Measurement::new(
                Code::new("LUNG-LESION-COUNT", "99AINODE", "Number of lesions"),
                t.lesions as f64,
                Code::ucum("{lesions}", "lesions"),
            ));
            f.groups.push(g);
        }
        Ok(f)
    }

    /// Every CT series of a study that is an axial stack; localizers and
    /// other planes are skipped (logged). At least one series must be
    /// analysed; a series that cannot be read fails the study, naming it.
    pub fn analyze(&self, files: &[PathBuf]) -> anyhow::Result<PipelineOutput> {
        let grouping = group_by_series(files);
        let mut reports = Vec::new();
        let mut skipped = Vec::new();
        for s in &grouping.series {
            let modality = s.modality.clone().unwrap_or_default();
            let why = if !self.settings.modalities.iter().any(|m| m.eq_ignore_ascii_case(modality.trim())) {
                Some(format!("modality {modality}"))
            } else if s.image_type.as_deref().is_some_and(|t| t.to_ascii_uppercase().contains("LOCALIZER")) {
                Some("a localizer".into())
            } else {
                match self.analyze_series(&s.paths).with_context(|| format!("series {}", s.series_instance_uid))? {
                    Ok(report) => {
                        reports.push(report);
                        None
                    }
                    Err(why) => Some(why),
                }
            };
            if let Some(why) = why {
                tracing::info!(series = %s.series_instance_uid, "lung-lesions: series skipped: {why}");
                skipped.push(format!("series {}: {why}", s.series_instance_uid));
            }
        }
        if reports.is_empty() {
            bail!("lung-lesions: no axial {} series among {} instances ({})", self.settings.modalities.join("/"), files.len(), skipped.join("; "));
        }
        Ok(PipelineOutput { pipeline: NAME.into(), model_version: self.algorithm.version.clone(), reports })
    }
}

fn lung() -> Code {
    Code::new("39607008", "SCT", "Lung")
}

fn round(v: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (v * f).round() / f
}

/// The patient's side of a lesion: its centroid against the midline (the
/// lung field's mean column over the series), along patient x (LPS: +x is
/// the patient's left).
fn side(vol: &Volume, l: &Lesion3d, midline_column: Option<f64>) -> &'static str {
    let Some(mid) = midline_column else { return "unknown" };
    let k = l.key_slice as f64;
    let at = vol.voxel_to_patient([l.centroid[0], l.centroid[1], k])[0];
    let centre = vol.voxel_to_patient([mid, l.centroid[1], k])[0];
    if (at - centre).abs() < 1e-6 {
        "unknown"
    } else if at > centre {
        "left"
    } else {
        "right"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lesions_join_across_slices_with_volumes_and_diameters() {
        // 3 slices of 6 x 5 (cols x rows), spacing 0.5 x 0.5 x 2 mm
        let (cols, rows, slices) = (6, 5, 3);
        let mut l = vec![0u8; cols * rows * slices];
        let at = |i: usize, j: usize, k: usize| (k * rows + j) * cols + i;
        // lesion A (class 1): a 3 x 4 block on slice 0 and one voxel diagonal on slice 1
        for j in 0..4 {
            for i in 0..3 {
                l[at(i, j, 0)] = 1;
            }
        }
        l[at(3, 4, 1)] = 1;
        // lesion B (class 2): two voxels on slice 2, far from A
        l[at(5, 0, 2)] = 2;
        l[at(5, 1, 2)] = 2;
        // a class-1 voxel touching B only: a separate lesion, below min size
        l[at(4, 0, 2)] = 1;
        let mut scores = vec![0f32; l.len()];
        scores[at(0, 0, 0)] = 0.7;
        scores[at(3, 4, 1)] = 0.9;
        scores[at(5, 0, 2)] = 0.4;
        let mut labels = l.clone();
        let lesions = join_lesions(&mut labels, &scores, [cols, rows, slices], [0.5, 0.5, 2.0], 2);
        assert_eq!(lesions.len(), 2);
        let a = &lesions[0];
        assert_eq!((a.label, a.voxels, a.key_slice, a.key_box, a.bbox), (1, 13, 0, [0, 0, 3, 4], [0, 0, 0, 4, 5, 2]));
        assert!((a.volume_ml - 13.0 * 0.5 / 1000.0).abs() < 1e-12);
        // 3 x 4 pixels of 0.5 mm: diagonal 2.5 mm
        assert!((a.longest_axial_diameter_mm - 2.5).abs() < 1e-9);
        assert_eq!(a.score, 0.9f32 as f64);
        let b = &lesions[1];
        assert_eq!((b.label, b.voxels), (2, 2));
        assert!((b.longest_axial_diameter_mm - (0.25f64 + 1.0).sqrt()).abs() < 1e-9);
        // the small component is gone from the label map too
        assert_eq!(labels[at(4, 0, 2)], 0);
        assert_eq!(labels.iter().filter(|&&v| v > 0).count(), 15);
    }

    /// Sets a rectangle of a slice `cols` wide to `v`.
    fn paint(hu: &mut [f32], cols: usize, rows: std::ops::Range<usize>, columns: std::ops::Range<usize>, v: f32) {
        for r in rows {
            hu[r * cols + columns.start..r * cols + columns.end].fill(v);
        }
    }

    #[test]
    fn lung_field_finds_enclosed_air_and_fills_holes() {
        // 40 x 40 slice at 1 mm: body (0 HU) with two air lungs (-800), one
        // holding a dense lesion (0 HU), outside air (-1000) around the body
        let (rows, cols) = (40, 40);
        let mut hu = vec![-1000f32; rows * cols];
        paint(&mut hu, cols, 5..35, 3..37, 0.0);
        paint(&mut hu, cols, 10..30, 6..17, -800.0);
        paint(&mut hu, cols, 10..30, 22..33, -800.0);
        paint(&mut hu, cols, 18..22, 10..13, 0.0);
        // a small gas bubble (4 mm²) below the minimum area
        paint(&mut hu, cols, 32..34, 20..22, -900.0);
        let s = LungFieldSettings { air_threshold_hu: -320.0, min_component_mm2: 10.0, margin_mm: 1.0 };
        let f = lung_field(&hu, rows, cols, [1.0, 1.0], &s);
        assert!(f[20 * cols + 11], "the lesion inside the lung is filled in");
        assert!(f[10 * cols + 6] && f[29 * cols + 32]);
        assert!(f[9 * cols + 5], "margin of 1 mm");
        assert!(!f[8 * cols + 5] && !f[2 * cols + 2] && !f[20 * cols + 19]);
        assert!(!f[32 * cols + 20], "small air pockets are not lung");
    }

    #[test]
    fn lung_field_leaves_out_the_mediastinum_between_the_lungs() {
        // 60 x 60 slice at 1 mm: two C-shaped lungs whose arms come within
        // 4 mm of each other in front of and behind a soft-tissue mediastinum
        // (the anterior and posterior junction lines); a 3 mm margin joins
        // the grown lungs around it, but it is no hole of either lung
        let (rows, cols) = (60, 60);
        let mut hu = vec![-1000f32; rows * cols];
        paint(&mut hu, cols, 5..55, 3..57, 40.0);
        for (lung, arm) in [(8..18, 8..28), (42..52, 32..52)] {
            paint(&mut hu, cols, 10..50, lung, -850.0);
            paint(&mut hu, cols, 10..14, arm.clone(), -850.0);
            paint(&mut hu, cols, 46..50, arm, -850.0);
        }
        let s = LungFieldSettings { air_threshold_hu: -320.0, min_component_mm2: 10.0, margin_mm: 3.0 };
        let f = lung_field(&hu, rows, cols, [1.0, 1.0], &s);
        assert!(f[12 * cols + 30], "the 4 mm gap at the junction is within both margins");
        assert!(f[30 * cols + 20] && f[30 * cols + 40], "the margin");
        assert!(!f[30 * cols + 30] && !f[30 * cols + 22] && !f[20 * cols + 30], "the mediastinum is not lung");
    }

    #[test]
    fn slice_views_turn_and_return() {
        let v = SliceView::new([10, 20, 30, 50], 1, 100);
        // turned crop is 50 wide, 30 high; scale 2, 30 px of padding above and below
        assert_eq!((v.scale, v.offset), (2.0, [0.0, 20.0]));
        // crop pixel (0, 0) (top-left) goes to the bottom-left of a CCW-turned image
        let (x, y) = v.to_input(10, 20);
        assert_eq!((x, y), (0.5, 20.0 + 29.0 * 2.0 + 0.5));
        for turns in 0..4 {
            let v = SliceView::new([3, 4, 7, 5], turns, 16);
            for (c, r) in [(0.0, 0.0), (6.0, 4.0), (2.0, 3.0)] {
                let (x, y) = v.turn(c, r);
                assert_eq!(v.unturn(x, y), (c, r), "turns {turns}");
            }
        }
        // the input of a slice reads it back at the mapped pixel
        let (rows, cols) = (60, 50);
        let slice: Vec<f32> = (0..rows * cols).map(|p| (p % cols) as f32 + 100.0 * (p / cols) as f32).collect();
        let v = SliceView::new([10, 20, 30, 20], 1, 40);
        let input = v.input(&slice, cols);
        let (x, y) = v.to_input(25, 30);
        let got = input[y.round() as usize * 40 + x.round() as usize];
        assert!((got - slice[30 * cols + 25]).abs() < 60.0, "{got}");
    }
}
