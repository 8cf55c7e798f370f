//! The `ainode encode seg|sr|gsps` commands: files in, one result file out.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::common::{write_part10, EncoderSettings, ResultContext};
use super::dataset::get_str;
use super::error::EncodeError;
use super::gsps::{encode_presentation_state, GspsOptions};
use super::sc::encode_sc;
use super::seg::{encode_seg, SegOptions};
use super::source::{grid_of, SourceInstance};
use super::sr::{encode_sr, SrOptions};
use super::{json, labelmap};
use crate::findings::{DerivedImage, LabelMap, Segmentation};

/// What a command wrote.
#[derive(Debug, Clone)]
pub struct Written {
    pub path: PathBuf,
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
    pub series_instance_uid: String,
    pub detail: String,
}

pub(crate) fn written(path: &Path, obj: &super::dataset::Obj, detail: String) -> Written {
    use dicom_dictionary_std::tags;
    Written {
        path: path.to_path_buf(),
        sop_class_uid: get_str(obj, tags::SOP_CLASS_UID).unwrap_or_default(),
        sop_instance_uid: get_str(obj, tags::SOP_INSTANCE_UID).unwrap_or_default(),
        series_instance_uid: get_str(obj, tags::SERIES_INSTANCE_UID).unwrap_or_default(),
        detail,
    }
}

/// DICOM Part 10 files under `paths` (files, or folders searched recursively);
/// other files are skipped.
pub fn open_dicom(paths: &[PathBuf]) -> Result<Vec<SourceInstance>, EncodeError> {
    let mut files = Vec::new();
    for p in paths {
        if p.is_dir() {
            for e in walkdir::WalkDir::new(p).sort_by_file_name() {
                let e = e.map_err(|e| EncodeError::Source { file: p.display().to_string(), reason: e.to_string() })?;
                if e.file_type().is_file() {
                    files.push(e.into_path());
                }
            }
        } else if p.is_file() {
            files.push(p.clone());
        } else {
            return Err(EncodeError::Source { file: p.display().to_string(), reason: "no such file or folder".into() });
        }
    }
    let mut out = Vec::new();
    for f in files {
        if crate::part10::read_meta(&f).is_err() {
            if paths.contains(&f) {
                return Err(EncodeError::Source { file: f.display().to_string(), reason: "not a DICOM Part 10 file".into() });
            }
            continue;
        }
        out.push(SourceInstance::open(&f)?);
    }
    if out.is_empty() {
        return Err(EncodeError::Source {
            file: paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "),
            reason: "no DICOM files".into(),
        });
    }
    Ok(out)
}

#[derive(Debug, Clone)]
pub struct SegCommand {
    pub series: Vec<PathBuf>,
    pub labelmap: PathBuf,
    pub segments: PathBuf,
    pub out: PathBuf,
    pub pipeline: String,
    pub model_version: Option<String>,
    pub allow_empty: bool,
    pub omit_empty_frames: Option<bool>,
}

pub fn seg(settings: EncoderSettings, cmd: &SegCommand) -> Result<Written, EncodeError> {
    let sources = open_dicom(&cmd.series)?;
    let series: BTreeSet<&str> = sources.iter().map(|s| s.series_instance_uid.as_str()).collect();
    if series.len() > 1 {
        return Err(EncodeError::geometry(
            &sources[0].study_instance_uid,
            format!("--series holds {} series ({}); give one", series.len(), series.into_iter().collect::<Vec<_>>().join(", ")),
        ));
    }
    let spec = json::read_segments(&cmd.segments)?;
    let grid = grid_of(&sources)?;
    let vol = labelmap::read_nifti(&cmd.labelmap)?;
    let mut labels = labelmap::resample_to_grid(&vol, &grid)?;
    spec.remap(&mut labels)?;
    let labels = LabelMap::new(grid, labels).map_err(|r| EncodeError::invalid("label map", r))?;
    let version =
        cmd.model_version.clone().or_else(|| spec.segments.iter().find_map(|s| s.algorithm.as_ref().map(|a| a.version.clone()))).unwrap_or_else(|| "0".into());
    let ctx = ResultContext::new(settings, &cmd.pipeline, &version);
    let mut opts = SegOptions::new(&ctx);
    if let Some(l) = &spec.content_label {
        opts.content_label = l.clone();
    }
    opts.content_description = spec.content_description.clone();
    opts.allow_empty = cmd.allow_empty;
    if let Some(o) = cmd.omit_empty_frames {
        opts.omit_empty_frames = o;
    }
    let frames = labels.grid.frames.len();
    let seg = Segmentation { segments: spec.segments, labels };
    let obj = encode_seg(&ctx, &sources, &seg, &opts)?;
    write_part10(&cmd.out, &obj)?;
    let n = get_str(&obj, dicom_dictionary_std::tags::NUMBER_OF_FRAMES).unwrap_or_default();
    Ok(written(&cmd.out, &obj, format!("{} segments over {frames} source frames, {n} SEG frames", seg.segments.len())))
}

#[derive(Debug, Clone)]
pub struct SrCommand {
    pub evidence: Vec<PathBuf>,
    pub report: PathBuf,
    pub out: PathBuf,
    pub pipeline: String,
}

pub fn sr(settings: EncoderSettings, cmd: &SrCommand) -> Result<Written, EncodeError> {
    let evidence = open_dicom(&cmd.evidence)?;
    let spec = json::read_report(&cmd.report, &evidence)?;
    let ctx = ResultContext::new(settings, &cmd.pipeline, &spec.findings.algorithm.version);
    let mut opts = SrOptions::default();
    if let Some(t) = spec.title {
        opts.title = t;
    }
    if let Some(l) = spec.language {
        opts.language = l;
    }
    let obj = encode_sr(&ctx, &evidence, &spec.findings, &opts)?;
    write_part10(&cmd.out, &obj)?;
    let f = &spec.findings;
    Ok(written(
        &cmd.out,
        &obj,
        format!("{} landmarks, {} lesions, {} groups, {} evaluations", f.landmarks.len(), f.lesions.len(), f.groups.len(), f.evaluations.len()),
    ))
}

#[derive(Debug, Clone)]
pub struct GspsCommand {
    pub image: PathBuf,
    pub annotations: PathBuf,
    pub out: PathBuf,
    pub pipeline: String,
    pub model_version: String,
}

pub fn gsps(settings: EncoderSettings, cmd: &GspsCommand) -> Result<Written, EncodeError> {
    let image = SourceInstance::open(&cmd.image)?;
    let spec = json::read_annotations(&cmd.annotations, &image)?;
    let ctx = ResultContext::new(settings, &cmd.pipeline, &cmd.model_version);
    let mut opts = GspsOptions::default();
    if let Some(l) = spec.content_label {
        opts.content_label = l;
    }
    opts.content_description = spec.content_description;
    let obj = encode_presentation_state(&ctx, &image, &spec.overlay, &opts)?;
    write_part10(&cmd.out, &obj)?;
    Ok(written(&cmd.out, &obj, format!("{} graphics, {} texts", spec.overlay.graphics.len(), spec.overlay.texts.len())))
}

#[derive(Debug, Clone)]
pub struct ScCommand {
    pub sources: Vec<PathBuf>,
    /// NIfTI with (columns, rows[, frames]) unsigned integer voxels.
    pub image: PathBuf,
    pub description: String,
    pub pixel_spacing: Option<[f64; 2]>,
    pub rescale: Option<(f64, f64, String)>,
    pub window: Option<(f64, f64)>,
    pub out: PathBuf,
    pub pipeline: String,
    pub model_version: String,
}

pub fn sc(settings: EncoderSettings, cmd: &ScCommand) -> Result<Written, EncodeError> {
    let sources = open_dicom(&cmd.sources)?;
    let vol = labelmap::read_nifti(&cmd.image)?;
    let [cols, rows, frames] = vol.dims;
    let too_big = |n: usize| u16::try_from(n).map_err(|_| EncodeError::invalid("image", format!("{n} rows or columns is too many")));
    let img = DerivedImage {
        rows: too_big(rows)?,
        cols: too_big(cols)?,
        frames: frames as u32,
        pixels: vol.values,
        rescale: cmd.rescale.clone(),
        pixel_spacing: cmd.pixel_spacing,
        window: cmd.window,
        description: cmd.description.clone(),
        derived_from: sources.iter().filter(|s| s.is_image()).map(|s| s.frame_ref(1)).collect(),
    };
    let ctx = ResultContext::new(settings, &cmd.pipeline, &cmd.model_version);
    let obj = encode_sc(&ctx, &sources, &img)?;
    write_part10(&cmd.out, &obj)?;
    Ok(written(&cmd.out, &obj, format!("{cols} x {rows} x {frames} frames")))
}
