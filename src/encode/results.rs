//! A pipeline's output -> result objects on disk: per report a TID 1500 SR
//! (from its findings), a presentation state (from its overlay) and a SEG
//! (from its segmentation).
//! Used by `ainode run` and by the node's analysis worker alike, so both
//! write the same objects with the same deterministic UIDs.

use std::path::Path;

use super::commands::Written;
use super::common::{write_part10, EncoderSettings, ResultContext};
use super::error::EncodeError;
use super::gsps::{encode_presentation_state, GspsOptions};
use super::seg::{encode_seg, SegOptions};
use super::source::open_all;
use super::sr::{encode_sr, SrOptions};
use crate::pipelines::PipelineOutput;

/// Writes every result object of `output` into `dir` as `SOPInstanceUID.dcm`
/// (each written to a temporary name, fsync'd and renamed; a re-run replaces
/// the same files). Nothing is written for an image whose objects fail
/// validation; the error names the image.
pub fn write_results(settings: &EncoderSettings, output: &PipelineOutput, dir: &Path) -> Result<Vec<Written>, EncodeError> {
    std::fs::create_dir_all(dir).map_err(|error| EncodeError::Io { path: dir.display().to_string(), error })?;
    let ctx = ResultContext::new(settings.clone(), &output.pipeline, &output.model_version);
    let mut objects = Vec::new();
    // build everything first: a report that fails validation writes nothing
    let label = output.pipeline.to_ascii_uppercase().replace('-', "_");
    for r in &output.reports {
        let sources = open_all(&r.sources)?;
        let Some(first) = sources.first() else {
            return Err(EncodeError::invalid("report", format!("{}: a report without source instances", output.pipeline)));
        };
        let about = if sources.len() == 1 {
            format!("{} (SOP Instance {})", r.sources[0].display(), first.sop_instance_uid)
        } else {
            format!("series {} ({} instances)", first.series_instance_uid, sources.len())
        };
        let context = |e: EncodeError| match e {
            EncodeError::Invalid { attribute, reason } => EncodeError::Invalid { attribute: format!("{about}: {attribute}"), reason },
            e => e,
        };
        if let Some(seg) = &r.segmentation {
            let opts = SegOptions { content_label: label.clone(), ..SegOptions::new(&ctx) };
            let obj = encode_seg(&ctx, &sources, seg, &opts).map_err(context)?;
            objects.push((obj, format!("SEG: {} segments over {} source frames", seg.segments.len(), seg.labels.grid.frames.len())));
        }
        if let Some(f) = &r.findings {
            let obj = encode_sr(&ctx, &sources, f, &SrOptions::default()).map_err(context)?;
            objects.push((
                obj,
                format!("SR: {} landmarks, {} lesions, {} groups, {} evaluations", f.landmarks.len(), f.lesions.len(), f.groups.len(), f.evaluations.len()),
            ));
        }
        if let Some(o) = &r.overlay {
            let image = sources.iter().find(|s| s.sop_instance_uid == o.image.sop_instance_uid).ok_or_else(|| {
                EncodeError::invalid("overlay.image", format!("{about}: the overlay's image {} is not among the report's sources", o.image.sop_instance_uid))
            })?;
            let opts = GspsOptions { content_label: label.clone(), content_description: o.layer_description.clone() };
            let obj = encode_presentation_state(&ctx, image, o, &opts).map_err(context)?;
            objects.push((obj, format!("PR: {} graphics, {} texts", o.graphics.len(), o.texts.len())));
        }
    }
    let mut written = Vec::with_capacity(objects.len());
    for (obj, detail) in objects {
        let uid = super::dataset::get_str(&obj, dicom_dictionary_std::tags::SOP_INSTANCE_UID).unwrap_or_default();
        let path = dir.join(format!("{uid}.dcm"));
        write_part10(&path, &obj)?;
        written.push(super::commands::written(&path, &obj, detail));
    }
    Ok(written)
}
