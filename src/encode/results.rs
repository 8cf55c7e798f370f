//! A pipeline's output -> result objects on disk: per analysed image a TID
//! 1500 SR (from its findings) and a presentation state (from its overlay).
//! Used by `ainode run` and by the node's analysis worker alike, so both
//! write the same objects with the same deterministic UIDs.

use std::path::Path;

use super::commands::Written;
use super::common::{write_part10, EncoderSettings, ResultContext};
use super::gsps::{encode_presentation_state, GspsOptions};
use super::source::SourceInstance;
use super::sr::{encode_sr, SrOptions};
use super::EncodeError;
use crate::pipelines::PipelineOutput;

/// Writes every result object of `output` into `dir` as `SOPInstanceUID.dcm`
/// (each written to a temporary name, fsync'd and renamed; a re-run replaces
/// the same files). Nothing is written for an image whose objects fail
/// validation; the error names the image.
pub fn write_results(settings: &EncoderSettings, output: &PipelineOutput, dir: &Path) -> Result<Vec<Written>, EncodeError> {
    std::fs::create_dir_all(dir).map_err(|source| EncodeError::Io { path: dir.display().to_string(), source })?;
    let ctx = ResultContext::new(settings.clone(), &output.pipeline, &output.model_version);
    let mut objects = Vec::new();
    // build everything first: a report that fails validation writes nothing
    for r in &output.reports {
        let image = SourceInstance::open(&r.image)?;
        let context = |e: EncodeError| match e {
            EncodeError::Invalid { attribute, reason } => {
                EncodeError::Invalid { attribute: format!("{} (SOP Instance {}): {attribute}", r.image.display(), image.sop_instance_uid), reason }
            }
            e => e,
        };
        if let Some(f) = &r.findings {
            let obj = encode_sr(&ctx, std::slice::from_ref(&image), f, &SrOptions::default()).map_err(context)?;
            objects.push((obj, format!("SR: {} landmarks, {} groups, {} evaluations", f.landmarks.len(), f.groups.len(), f.evaluations.len())));
        }
        if let Some(o) = &r.overlay {
            let opts = GspsOptions { content_label: output.pipeline.to_ascii_uppercase().replace('-', "_"), content_description: o.layer_description.clone() };
            let obj = encode_presentation_state(&ctx, &image, o, &opts).map_err(context)?;
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
