//! Volumes in patient space (LPS, mm) from a series of instances or from
//! one enhanced multi-frame object.
//!
//! Frames are sorted by the projection of Image Position (Patient) on the
//! slice normal (`row x column` of Image Orientation (Patient)), never by
//! Instance Number or file order. The spacing between slices comes from the
//! positions, not from Slice Thickness. Gantry tilt, missing slices and
//! uneven spacing are detected; each is refused with a typed error or, if the
//! caller allows it ([`ResampleOrRefuse::Resample`]), resampled onto a
//! regular orthogonal grid (bilinear in-plane where tilt shifts the slices,
//! linear along the normal).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;

use dicom_dictionary_std::tags;
use dicom_object::{DefaultDicomObject, OpenFileOptions};

use super::attrs::{self, Ds};
use super::decode::{decode_file, decode_object, ColorMode, DecodedImage};
use super::error::{ImagingError, Result};
use super::geometry::{self, add, angle_deg, cross, dot, frame_plane, invert3, mat_vec, normalize, scale, sub, FramePlane, SpacingSource};

/// The instance (and frame) one slice of a volume comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFrame {
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
    /// 1-based frame number for multi-frame sources; `None` for single-frame.
    pub frame_number: Option<u32>,
}

/// A regular grid in patient space: the geometry of a [`Volume`] without
/// its voxels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Grid {
    /// `[cols (i), rows (j), slices (k)]`
    pub dims: [usize; 3],
    /// mm along i, j, k
    pub spacing: [f64; 3],
    /// LPS position of the centre of voxel (0, 0, 0)
    pub origin: [f64; 3],
    /// `direction[a]`: unit vector of axis a in LPS
    pub direction: [[f64; 3]; 3],
}

impl Grid {
    /// The 3x3 matrix M with `p = origin + M * ijk` (columns: direction * spacing).
    pub fn linear(&self) -> [[f64; 3]; 3] {
        let mut m = [[0.0; 3]; 3];
        for (r, row) in m.iter_mut().enumerate() {
            for (a, v) in row.iter_mut().enumerate() {
                *v = self.direction[a][r] * self.spacing[a];
            }
        }
        m
    }

    pub fn voxel_to_patient(&self, ijk: [f64; 3]) -> [f64; 3] {
        add(self.origin, mat_vec(self.linear(), ijk))
    }

    /// Continuous voxel coordinates of a patient position.
    ///
    /// Panics if the grid is degenerate (zero spacing or parallel directions),
    /// which the loaders never produce.
    pub fn patient_to_voxel(&self, p: [f64; 3]) -> [f64; 3] {
        let inv = invert3(self.linear()).expect("grid with a singular direction/spacing matrix");
        mat_vec(inv, sub(p, self.origin))
    }

    /// 4x4 voxel-to-patient (LPS) matrix: `[p; 1] = A * [i, j, k, 1]`.
    pub fn affine(&self) -> [[f64; 4]; 4] {
        let m = self.linear();
        let mut a = [[0.0; 4]; 4];
        for r in 0..3 {
            a[r][..3].copy_from_slice(&m[r]);
            a[r][3] = self.origin[r];
        }
        a[3][3] = 1.0;
        a
    }

    pub fn len(&self) -> usize {
        self.dims[0] * self.dims[1] * self.dims[2]
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A scalar volume in patient space.
#[derive(Debug, Clone)]
pub struct Volume {
    /// `[cols (i), rows (j), slices (k)]`
    pub dims: [usize; 3],
    /// index = (k * rows + j) * cols + i
    pub data: Vec<f32>,
    /// mm along i, j, k
    pub spacing: [f64; 3],
    /// LPS position of the centre of voxel (0, 0, 0)
    pub origin: [f64; 3],
    /// `direction[0]` = +i (row direction, IOP[0..3]); `[1]` = +j (column
    /// direction, IOP[3..6]); `[2]` = +k (slice normal, pointing the way k
    /// increases).
    pub direction: [[f64; 3]; 3],
    pub frame_of_reference_uid: String,
    pub study_instance_uid: String,
    pub series_instance_uid: String,
    /// One per k. For a volume resampled along k, the nearest source slice.
    pub sources: Vec<SourceFrame>,
}

impl Volume {
    pub fn grid(&self) -> Grid {
        Grid { dims: self.dims, spacing: self.spacing, origin: self.origin, direction: self.direction }
    }

    /// A volume on `grid` filled with `value`, without identity or sources.
    pub fn filled(grid: Grid, value: f32) -> Volume {
        Volume {
            dims: grid.dims,
            data: vec![value; grid.len()],
            spacing: grid.spacing,
            origin: grid.origin,
            direction: grid.direction,
            frame_of_reference_uid: String::new(),
            study_instance_uid: String::new(),
            series_instance_uid: String::new(),
            sources: Vec::new(),
        }
    }

    pub fn index(&self, i: usize, j: usize, k: usize) -> usize {
        (k * self.dims[1] + j) * self.dims[0] + i
    }

    pub fn get(&self, i: usize, j: usize, k: usize) -> f32 {
        self.data[self.index(i, j, k)]
    }

    /// The voxels of slice k, row-major.
    pub fn slice(&self, k: usize) -> &[f32] {
        let n = self.dims[0] * self.dims[1];
        &self.data[k * n..(k + 1) * n]
    }

    pub fn voxel_to_patient(&self, ijk: [f64; 3]) -> [f64; 3] {
        self.grid().voxel_to_patient(ijk)
    }

    pub fn patient_to_voxel(&self, p: [f64; 3]) -> [f64; 3] {
        self.grid().patient_to_voxel(p)
    }

    pub fn affine(&self) -> [[f64; 4]; 4] {
        self.grid().affine()
    }
}

/// What to do with a series that is not a regular stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ResampleOrRefuse {
    /// Fail with a typed error that says what is wrong.
    #[default]
    Refuse,
    /// Resample onto a regular orthogonal grid (linear along the normal).
    Resample,
}

/// How to build a volume from a series.
#[derive(Debug, Clone)]
pub struct SeriesOptions {
    /// Load this series when the files hold several.
    pub series_instance_uid: Option<String>,
    /// Slice spacings may differ from the median by this fraction of it.
    pub spacing_tolerance: f64,
    /// A gap larger than this many median spacings is a missing slice.
    pub missing_slice_factor: f64,
    /// Angle (degrees) between the slice positions' line and the normal
    /// above which the series counts as tilted.
    pub tilt_tolerance_deg: f64,
    pub gantry_tilt: ResampleOrRefuse,
    pub missing_slices: ResampleOrRefuse,
    pub uneven_spacing: ResampleOrRefuse,
    /// Value where resampling falls outside the data (tilted series);
    /// `None`: the smallest value in the series (air for CT).
    pub fill_value: Option<f32>,
}

impl Default for SeriesOptions {
    fn default() -> Self {
        SeriesOptions {
            series_instance_uid: None,
            spacing_tolerance: 0.02,
            missing_slice_factor: 1.5,
            tilt_tolerance_deg: 0.05,
            gantry_tilt: ResampleOrRefuse::Refuse,
            missing_slices: ResampleOrRefuse::Refuse,
            uneven_spacing: ResampleOrRefuse::Refuse,
            fill_value: None,
        }
    }
}

impl SeriesOptions {
    /// Resample whatever is irregular (tilt, gaps, uneven spacing).
    pub fn resample_all() -> Self {
        SeriesOptions {
            gantry_tilt: ResampleOrRefuse::Resample,
            missing_slices: ResampleOrRefuse::Resample,
            uneven_spacing: ResampleOrRefuse::Resample,
            ..Default::default()
        }
    }
}

/// A gap between two consecutive slices larger than the missing-slice limit.
#[derive(Debug, Clone, PartialEq)]
pub struct SliceGap {
    pub after_sop_instance_uid: String,
    pub gap_mm: f64,
}

/// What was found while building a volume.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesReport {
    pub series_instance_uid: String,
    pub frame_of_reference_uid: String,
    /// Number of source frames used.
    pub source_frames: usize,
    /// Distances between consecutive slices along the normal (mm).
    pub min_spacing_mm: f64,
    pub max_spacing_mm: f64,
    pub median_spacing_mm: f64,
    /// Angle between the line of slice positions and the slice normal.
    pub gantry_tilt_deg: f64,
    pub gaps: Vec<SliceGap>,
    pub uneven: bool,
    /// The voxels were resampled (tilt, gaps or uneven spacing).
    pub resampled: bool,
    pub pixel_spacing_source: SpacingSource,
}

/// Load one series with the default options: regular stacks only.
pub fn load_series(paths: &[PathBuf]) -> Result<Volume> {
    load_series_with(paths, &SeriesOptions::default()).map(|(v, _)| v)
}

/// Load one series (files of single- or multi-frame instances).
pub fn load_series_with(paths: &[PathBuf], opts: &SeriesOptions) -> Result<(Volume, SeriesReport)> {
    if paths.is_empty() {
        return Err(ImagingError::EmptySeries);
    }
    let headers: Vec<DefaultDicomObject> = paths.iter().map(|p| open_header(p)).collect::<Result<_>>()?;
    let header_refs: Vec<&Ds> = headers.iter().map(|h| &**h).collect();
    let plan = plan_volume(&header_refs, opts)?;
    let decoder = |i: usize| decode_file(&paths[i], ColorMode::Luminance);
    build(plan, &decoder, paths.len(), opts)
}

/// Load the volume of one enhanced (or any multi-frame) object with the
/// default options.
pub fn load_multiframe(path: &Path) -> Result<Volume> {
    let obj = super::decode::open(path)?;
    volume_from_object(&obj, &SeriesOptions::default()).map(|(v, _)| v)
}

/// The volume of one multi-frame object: every frame's plane from the
/// per-frame / shared functional groups (or the top level).
pub fn volume_from_object(obj: &DefaultDicomObject, opts: &SeriesOptions) -> Result<(Volume, SeriesReport)> {
    let plan = plan_volume(&[&**obj], opts)?;
    let decoder = |_: usize| decode_object(obj, ColorMode::Luminance);
    build(plan, &decoder, 1, opts)
}

/// Open a Part 10 file without its pixel data.
pub(crate) fn open_header(path: &Path) -> Result<DefaultDicomObject> {
    OpenFileOptions::new().read_until(tags::PIXEL_DATA).open_file(path).map_err(|e| ImagingError::Open { path: path.to_path_buf(), reason: e.to_string() })
}

/// One frame of one source, with its plane.
#[derive(Debug, Clone)]
struct FrameRef {
    source: usize,
    frame: usize,
    plane: FramePlane,
    d: f64,
    id: SourceFrame,
}

/// Sorted frames and the checks' verdict, before any pixel is decoded.
#[derive(Debug)]
struct Plan {
    frames: Vec<FrameRef>,
    rows: usize,
    cols: usize,
    pixel_spacing: [f64; 2],
    normal: [f64; 3],
    single_slice_spacing: f64,
    study_instance_uid: String,
    series_instance_uid: String,
    frame_of_reference_uid: String,
    report: SeriesReport,
}

fn plan_volume(sources: &[&Ds], opts: &SeriesOptions) -> Result<Plan> {
    if sources.is_empty() {
        return Err(ImagingError::EmptySeries);
    }
    // which series
    let series_of = |ds: &Ds| attrs::string(ds, tags::SERIES_INSTANCE_UID).unwrap_or_default();
    let all_series: BTreeSet<String> = sources.iter().map(|ds| series_of(ds)).collect();
    let wanted = match &opts.series_instance_uid {
        Some(uid) => {
            if !all_series.contains(uid) {
                return Err(ImagingError::SeriesNotFound { series_instance_uid: uid.clone() });
            }
            uid.clone()
        }
        None if all_series.len() > 1 => return Err(ImagingError::MultipleSeries { series: all_series.into_iter().collect() }),
        None => all_series.into_iter().next().unwrap_or_default(),
    };
    let chosen: Vec<usize> = (0..sources.len()).filter(|&i| series_of(sources[i]) == wanted).collect();
    let series_label = if wanted.is_empty() { "(no Series Instance UID)".to_string() } else { wanted.clone() };
    let first = sources[chosen[0]];
    let for_uid = attrs::string(first, tags::FRAME_OF_REFERENCE_UID).unwrap_or_default();
    let study_uid = attrs::string(first, tags::STUDY_INSTANCE_UID).unwrap_or_default();

    let inconsistent =
        |sop: &str, reason: String| ImagingError::Inconsistent { series_instance_uid: series_label.clone(), sop_instance_uid: sop.to_string(), reason };

    // every frame with its plane
    let mut frames: Vec<FrameRef> = Vec::new();
    let mut size: Option<(usize, usize)> = None;
    for &s in &chosen {
        let ds = sources[s];
        let sop = attrs::sop_instance_uid(ds);
        let sop_class = attrs::string(ds, tags::SOP_CLASS_UID).unwrap_or_default();
        let rows = attrs::int(ds, tags::ROWS).ok_or(ImagingError::MissingAttribute { sop_instance_uid: sop.clone(), attribute: "Rows (0028,0010)" })? as usize;
        let cols =
            attrs::int(ds, tags::COLUMNS).ok_or(ImagingError::MissingAttribute { sop_instance_uid: sop.clone(), attribute: "Columns (0028,0011)" })? as usize;
        match size {
            None => size = Some((rows, cols)),
            Some((r, c)) if (r, c) != (rows, cols) => return Err(inconsistent(&sop, format!("{rows} x {cols} pixels where the series has {r} x {c}"))),
            _ => {}
        }
        let this_for = attrs::string(ds, tags::FRAME_OF_REFERENCE_UID).unwrap_or_default();
        if this_for != for_uid {
            return Err(inconsistent(&sop, format!("Frame of Reference {this_for:?} where the series has {for_uid:?}")));
        }
        let n = attrs::number_of_frames(ds);
        let multi = n > 1 || attrs::items(ds, tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE).is_some();
        for f in 0..n {
            let plane = frame_plane(ds, f).ok_or(ImagingError::MissingAttribute {
                sop_instance_uid: sop.clone(),
                attribute: "Image Position/Orientation (Patient) (0020,0032/0037) or Plane Position/Orientation Sequence",
            })?;
            frames.push(FrameRef {
                source: s,
                frame: f,
                plane,
                d: 0.0,
                id: SourceFrame { sop_class_uid: sop_class.clone(), sop_instance_uid: sop.clone(), frame_number: multi.then_some(f as u32 + 1) },
            });
        }
    }
    let (rows, cols) = size.expect("at least one source");

    // same orientation and pixel spacing everywhere
    let reference = frames[0].plane;
    let spacing_of =
        |fr: &FrameRef| -> Option<[f64; 2]> { fr.plane.pixel_spacing.or_else(|| geometry::pixel_spacing_at(sources[fr.source], fr.frame, None).mm()) };
    let ref_spacing = spacing_of(&frames[0]);
    for fr in &frames[1..] {
        let p = &fr.plane;
        if angle_deg(p.row_dir, reference.row_dir) > 0.01 || angle_deg(p.col_dir, reference.col_dir) > 0.01 {
            return Err(inconsistent(
                &fr.id.sop_instance_uid,
                format!("orientation {:?} {:?} differs from {:?} {:?}", p.row_dir, p.col_dir, reference.row_dir, reference.col_dir),
            ));
        }
        let sp = spacing_of(fr);
        let same = match (sp, ref_spacing) {
            (Some(a), Some(b)) => (a[0] - b[0]).abs() <= 1e-4 * b[0].max(1.0) && (a[1] - b[1]).abs() <= 1e-4 * b[1].max(1.0),
            (None, None) => true,
            _ => false,
        };
        if !same {
            return Err(inconsistent(&fr.id.sop_instance_uid, format!("pixel spacing {sp:?} where the series has {ref_spacing:?}")));
        }
    }
    let spacing2 = geometry::pixel_spacing_at(sources[frames[0].source], frames[0].frame, None);
    let (pixel_spacing, pixel_spacing_source) = match ref_spacing {
        Some(ps) => (ps, if spacing2.is_known() { spacing2.source } else { SpacingSource::PixelSpacing }),
        None => ([1.0, 1.0], SpacingSource::Unknown),
    };

    // sort along the normal
    let normal = normalize(cross(reference.row_dir, reference.col_dir));
    for fr in frames.iter_mut() {
        fr.d = dot(fr.plane.position, normal);
    }
    frames.sort_by(|a, b| a.d.total_cmp(&b.d));
    for w in frames.windows(2) {
        if (w[1].d - w[0].d).abs() < 1e-3 {
            return Err(ImagingError::DuplicatePosition {
                series_instance_uid: series_label.clone(),
                first: describe(&w[0].id),
                second: describe(&w[1].id),
                distance_mm: (w[1].d - w[0].d).abs(),
            });
        }
    }

    // spacing, tilt, gaps
    let steps: Vec<f64> = frames.windows(2).map(|w| w[1].d - w[0].d).collect();
    let (min, max, median) = if steps.is_empty() {
        (0.0, 0.0, 0.0)
    } else {
        let mut s = steps.clone();
        s.sort_by(f64::total_cmp);
        (s[0], s[s.len() - 1], median_of_sorted(&s))
    };
    let tilt = if frames.len() > 1 { angle_deg(sub(frames[frames.len() - 1].plane.position, frames[0].plane.position), normal) } else { 0.0 };
    let gaps: Vec<SliceGap> = frames
        .windows(2)
        .filter(|w| w[1].d - w[0].d > opts.missing_slice_factor * median)
        .map(|w| SliceGap { after_sop_instance_uid: describe(&w[0].id), gap_mm: w[1].d - w[0].d })
        .collect();
    let regular_steps: Vec<f64> = steps.iter().copied().filter(|s| *s <= opts.missing_slice_factor * median).collect();
    let uneven = regular_steps.iter().any(|s| (s - median).abs() > opts.spacing_tolerance * median);

    let tilted = tilt > opts.tilt_tolerance_deg;
    if tilted && opts.gantry_tilt == ResampleOrRefuse::Refuse {
        return Err(ImagingError::GantryTilt { series_instance_uid: series_label, angle_deg: tilt });
    }
    if let (Some(g), ResampleOrRefuse::Refuse) = (gaps.first(), opts.missing_slices) {
        return Err(ImagingError::MissingSlices {
            series_instance_uid: series_label,
            after_sop_instance_uid: g.after_sop_instance_uid.clone(),
            gap_mm: g.gap_mm,
            median_mm: median,
        });
    }
    if uneven && opts.uneven_spacing == ResampleOrRefuse::Refuse {
        let lo = regular_steps.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = regular_steps.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        return Err(ImagingError::UnevenSpacing {
            series_instance_uid: series_label,
            min_mm: lo,
            max_mm: hi,
            median_mm: median,
            tolerance: opts.spacing_tolerance,
        });
    }
    let resampled = tilted || !gaps.is_empty() || uneven;

    let single_slice_spacing = attrs::float(first, tags::SPACING_BETWEEN_SLICES).filter(|v| *v > 0.0).or(reference.slice_thickness).unwrap_or(1.0);

    Ok(Plan {
        rows,
        cols,
        pixel_spacing,
        normal,
        single_slice_spacing,
        study_instance_uid: study_uid,
        series_instance_uid: wanted.clone(),
        frame_of_reference_uid: for_uid.clone(),
        report: SeriesReport {
            series_instance_uid: wanted,
            frame_of_reference_uid: for_uid,
            source_frames: frames.len(),
            min_spacing_mm: min,
            max_spacing_mm: max,
            median_spacing_mm: median,
            gantry_tilt_deg: tilt,
            gaps,
            uneven,
            resampled,
            pixel_spacing_source,
        },
        frames,
    })
}

fn describe(id: &SourceFrame) -> String {
    match id.frame_number {
        Some(n) => format!("{} frame {n}", id.sop_instance_uid),
        None => id.sop_instance_uid.clone(),
    }
}

fn median_of_sorted(s: &[f64]) -> f64 {
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        0.5 * (s[n / 2 - 1] + s[n / 2])
    }
}

/// Decode the sources (in parallel when there are several) and hand each
/// decoded image to `sink` on this thread.
fn decode_all<F>(n_sources: usize, decoder: &F, mut sink: impl FnMut(usize, DecodedImage) -> Result<()>) -> Result<()>
where
    F: Fn(usize) -> Result<DecodedImage> + Sync,
{
    let workers = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).min(n_sources).max(1);
    if workers == 1 {
        for i in 0..n_sources {
            sink(i, decoder(i)?)?;
        }
        return Ok(());
    }
    let next = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        // a bounded channel keeps at most a few decoded images waiting
        let (tx, rx) = mpsc::sync_channel::<(usize, Result<DecodedImage>)>(workers * 2);
        for _ in 0..workers {
            let tx = tx.clone();
            let next = &next;
            scope.spawn(move || loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n_sources {
                    break;
                }
                if tx.send((i, decoder(i))).is_err() {
                    break;
                }
            });
        }
        drop(tx);
        let mut result = Ok(());
        for (i, img) in rx {
            if result.is_ok() {
                result = img.and_then(|img| sink(i, img));
                if result.is_err() {
                    // make the workers stop picking new sources
                    next.store(n_sources, Ordering::Relaxed);
                }
            }
        }
        result
    })
}

fn build<F>(plan: Plan, decoder: &F, n_sources: usize, opts: &SeriesOptions) -> Result<(Volume, SeriesReport)>
where
    F: Fn(usize) -> Result<DecodedImage> + Sync,
{
    let (rows, cols) = (plan.rows, plan.cols);
    let slice_len = rows * cols;
    let n = plan.frames.len();
    // where each (source, frame) goes
    let mut slot: BTreeMap<(usize, usize), usize> = BTreeMap::new();
    for (k, fr) in plan.frames.iter().enumerate() {
        slot.insert((fr.source, fr.frame), k);
    }
    let mut stack = vec![0f32; n * slice_len];
    decode_all(n_sources, decoder, |s, img| {
        if img.rows != rows || img.cols != cols || img.samples != 1 {
            return Err(ImagingError::Inconsistent {
                series_instance_uid: plan.series_instance_uid.clone(),
                sop_instance_uid: img.sop_instance_uid.clone(),
                reason: format!("decoded {} x {} x {} where the header said {rows} x {cols} x 1", img.rows, img.cols, img.samples),
            });
        }
        for f in 0..img.frames {
            if let Some(&k) = slot.get(&(s, f)) {
                stack[k * slice_len..(k + 1) * slice_len].copy_from_slice(img.frame(f));
            }
        }
        Ok(())
    })?;

    let first = &plan.frames[0];
    let direction = [first.plane.row_dir, first.plane.col_dir, plan.normal];
    let in_plane = [plan.pixel_spacing[1], plan.pixel_spacing[0]];
    let mut volume = Volume {
        dims: [cols, rows, n],
        data: Vec::new(),
        spacing: [in_plane[0], in_plane[1], plan.single_slice_spacing],
        origin: first.plane.position,
        direction,
        frame_of_reference_uid: plan.frame_of_reference_uid.clone(),
        study_instance_uid: plan.study_instance_uid.clone(),
        series_instance_uid: plan.series_instance_uid.clone(),
        sources: plan.frames.iter().map(|f| f.id.clone()).collect(),
    };
    if n > 1 {
        let extent = plan.frames[n - 1].d - plan.frames[0].d;
        volume.spacing[2] = extent / (n - 1) as f64;
    }
    if !plan.report.resampled {
        volume.data = stack;
        return Ok((volume, plan.report));
    }

    // resample onto a regular grid along the normal
    let extent = plan.frames[n - 1].d - plan.frames[0].d;
    let step = plan.report.median_spacing_mm;
    let nk = ((extent / step).round() as usize).max(1) + 1;
    let sk = extent / (nk - 1) as f64;
    volume.dims[2] = nk;
    volume.spacing[2] = sk;
    let fill = opts.fill_value.unwrap_or_else(|| stack.iter().copied().fold(f32::INFINITY, f32::min));
    let d0 = plan.frames[0].d;
    let mut data = vec![fill; nk * slice_len];
    let mut sources = Vec::with_capacity(nk);
    let mut s = 0usize; // frames[s].d <= d < frames[s + 1].d
    for k in 0..nk {
        let d = d0 + k as f64 * sk;
        while s + 2 < n && plan.frames[s + 1].d <= d {
            s += 1;
        }
        let (a, b) = (&plan.frames[s], &plan.frames[s + 1]);
        let t = ((d - a.d) / (b.d - a.d)).clamp(0.0, 1.0);
        sources.push(if t < 0.5 { a.id.clone() } else { b.id.clone() });
        let out = &mut data[k * slice_len..(k + 1) * slice_len];
        let sa = &stack[s * slice_len..(s + 1) * slice_len];
        let sb = &stack[(s + 1) * slice_len..(s + 2) * slice_len];
        for j in 0..rows {
            for i in 0..cols {
                // the output voxel in patient space
                let p = add(
                    add(volume.origin, scale(direction[0], i as f64 * in_plane[0])),
                    add(scale(direction[1], j as f64 * in_plane[1]), scale(direction[2], k as f64 * sk)),
                );
                let va = sample_plane(sa, &a.plane, in_plane, rows, cols, p);
                let vb = sample_plane(sb, &b.plane, in_plane, rows, cols, p);
                let v = match (va, vb) {
                    (Some(x), Some(y)) => Some(x + (y - x) * t as f32),
                    (Some(x), None) if t < 0.5 => Some(x),
                    (None, Some(y)) if t >= 0.5 => Some(y),
                    _ => None,
                };
                if let Some(v) = v {
                    out[j * cols + i] = v;
                }
            }
        }
    }
    volume.data = data;
    volume.sources = sources;
    Ok((volume, plan.report))
}

/// Bilinear sample of a slice at the in-plane projection of `p`; `None`
/// outside the slice (more than half a pixel beyond its edge pixels).
fn sample_plane(slice: &[f32], plane: &FramePlane, in_plane: [f64; 2], rows: usize, cols: usize, p: [f64; 3]) -> Option<f32> {
    let rel = sub(p, plane.position);
    let x = dot(rel, plane.row_dir) / in_plane[0];
    let y = dot(rel, plane.col_dir) / in_plane[1];
    if x < -0.5 || y < -0.5 || x > cols as f64 - 0.5 || y > rows as f64 - 0.5 {
        return None;
    }
    let x = x.clamp(0.0, (cols - 1) as f64);
    let y = y.clamp(0.0, (rows - 1) as f64);
    let (x0, y0) = (x.floor() as usize, y.floor() as usize);
    let (x1, y1) = ((x0 + 1).min(cols - 1), (y0 + 1).min(rows - 1));
    let (fx, fy) = ((x - x0 as f64) as f32, (y - y0 as f64) as f32);
    let at = |xx: usize, yy: usize| slice[yy * cols + xx];
    let top = at(x0, y0) + (at(x1, y0) - at(x0, y0)) * fx;
    let bottom = at(x0, y1) + (at(x1, y1) - at(x0, y1)) * fx;
    Some(top + (bottom - top) * fy)
}

/// One series found among files.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesGroup {
    pub series_instance_uid: String,
    pub study_instance_uid: String,
    /// Empty when the instances have none.
    pub frame_of_reference_uid: String,
    pub modality: Option<String>,
    pub series_number: Option<i64>,
    pub series_description: Option<String>,
    /// Image Type of the first instance as stored, values joined by backslashes
    /// (e.g. ORIGINAL, PRIMARY, LOCALIZER).
    pub image_type: Option<String>,
    pub paths: Vec<PathBuf>,
    /// Frames over all instances.
    pub frames: usize,
}

/// A Frame of Reference that several series share (e.g. CT phases, or an
/// MR's sequences): their voxels can be related without registration.
#[derive(Debug, Clone, PartialEq)]
pub struct SharedFrameOfReference {
    pub frame_of_reference_uid: String,
    pub series_instance_uids: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct SeriesGrouping {
    /// Image series, ordered by Series Number then UID.
    pub series: Vec<SeriesGroup>,
    pub shared_frames_of_reference: Vec<SharedFrameOfReference>,
    /// Files that could not be read or hold no image, with the reason.
    pub skipped: Vec<(PathBuf, String)>,
}

/// Group image files by Series Instance UID (headers only) and report the
/// Frames of Reference shared by more than one series.
pub fn group_by_series(paths: &[PathBuf]) -> SeriesGrouping {
    let mut by_series: BTreeMap<String, SeriesGroup> = BTreeMap::new();
    let mut skipped = Vec::new();
    for p in paths {
        let h = match open_header(p) {
            Ok(h) => h,
            Err(e) => {
                skipped.push((p.clone(), e.to_string()));
                continue;
            }
        };
        if attrs::int(&h, tags::ROWS).is_none() {
            skipped.push((p.clone(), "no image (no Rows)".into()));
            continue;
        }
        let uid = attrs::string(&h, tags::SERIES_INSTANCE_UID).unwrap_or_default();
        let g = by_series.entry(uid.clone()).or_insert_with(|| SeriesGroup {
            series_instance_uid: uid,
            study_instance_uid: attrs::string(&h, tags::STUDY_INSTANCE_UID).unwrap_or_default(),
            frame_of_reference_uid: attrs::string(&h, tags::FRAME_OF_REFERENCE_UID).unwrap_or_default(),
            modality: attrs::string(&h, tags::MODALITY),
            series_number: attrs::int(&h, tags::SERIES_NUMBER),
            series_description: attrs::string(&h, tags::SERIES_DESCRIPTION),
            image_type: attrs::string(&h, tags::IMAGE_TYPE),
            paths: Vec::new(),
            frames: 0,
        });
        g.paths.push(p.clone());
        g.frames += attrs::number_of_frames(&h);
    }
    let mut series: Vec<SeriesGroup> = by_series.into_values().collect();
    series
        .sort_by(|a, b| a.series_number.unwrap_or(i64::MAX).cmp(&b.series_number.unwrap_or(i64::MAX)).then(a.series_instance_uid.cmp(&b.series_instance_uid)));
    let mut by_for: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for s in &series {
        if !s.frame_of_reference_uid.is_empty() {
            by_for.entry(&s.frame_of_reference_uid).or_default().push(s.series_instance_uid.clone());
        }
    }
    let shared_frames_of_reference = by_for
        .into_iter()
        .filter(|(_, v)| v.len() > 1)
        .map(|(f, v)| SharedFrameOfReference { frame_of_reference_uid: f.to_string(), series_instance_uids: v })
        .collect();
    SeriesGrouping { series, shared_frames_of_reference, skipped }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn oblique_grid() -> Grid {
        // rotation about an arbitrary axis, anisotropic spacing
        let (a, b) = (0.3f64, -0.7f64);
        let row = normalize([a.cos(), a.sin() * b.cos(), a.sin() * b.sin()]);
        let col0 = normalize(cross([0.2, 0.1, 1.0], row));
        let col = normalize(cross(row, cross(col0, row)));
        let normal = cross(row, col);
        Grid { dims: [7, 5, 4], spacing: [0.7, 0.9, 2.5], origin: [-100.25, 30.5, 12.0], direction: [row, col, normal] }
    }

    #[test]
    fn voxel_patient_roundtrip_oblique() {
        let g = oblique_grid();
        for ijk in [[0.0, 0.0, 0.0], [1.5, -2.25, 3.0], [100.0, 250.5, -7.75]] {
            let back = g.patient_to_voxel(g.voxel_to_patient(ijk));
            for a in 0..3 {
                assert!((back[a] - ijk[a]).abs() < 1e-9, "{ijk:?} -> {back:?}");
            }
        }
        // the affine agrees with voxel_to_patient
        let aff = g.affine();
        let ijk = [2.0, 3.0, 1.0];
        let p = g.voxel_to_patient(ijk);
        for r in 0..3 {
            let v = aff[r][0] * ijk[0] + aff[r][1] * ijk[1] + aff[r][2] * ijk[2] + aff[r][3];
            assert!((v - p[r]).abs() < 1e-12);
        }
        assert_eq!(aff[3], [0.0, 0.0, 0.0, 1.0]);
    }

    #[test]
    fn volume_indexing() {
        let g = Grid { dims: [3, 2, 2], spacing: [1.0; 3], origin: [0.0; 3], direction: [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]] };
        let mut v = Volume::filled(g, 0.0);
        v.data = (0..12).map(|x| x as f32).collect();
        assert_eq!(v.get(2, 1, 1), 11.0);
        assert_eq!(v.get(1, 0, 1), 7.0);
        assert_eq!(v.slice(1), &[6.0, 7.0, 8.0, 9.0, 10.0, 11.0]);
    }

    #[test]
    fn sample_plane_bilinear_and_outside() {
        let plane =
            FramePlane { position: [0.0; 3], row_dir: [1.0, 0.0, 0.0], col_dir: [0.0, 1.0, 0.0], pixel_spacing: Some([2.0, 1.0]), slice_thickness: None };
        let slice = [0.0f32, 1.0, 10.0, 11.0]; // 2 x 2
        assert_eq!(sample_plane(&slice, &plane, [1.0, 2.0], 2, 2, [0.5, 1.0, 0.0]), Some(5.5));
        assert_eq!(sample_plane(&slice, &plane, [1.0, 2.0], 2, 2, [1.4, 0.0, 0.0]), Some(1.0));
        assert_eq!(sample_plane(&slice, &plane, [1.0, 2.0], 2, 2, [1.6, 0.0, 0.0]), None);
    }
}
