//! Secondary Capture for images an analysis computes (e.g. a projection).
//!
//! One frame: Secondary Capture Image Storage, with a Modality LUT (rescale)
//! when the values have units. Several frames: Multi-frame Grayscale Word SC,
//! whose Modality LUT must be the identity (refused otherwise). Conversion
//! Type WSD (workstation), 16-bit unsigned MONOCHROME2, Pixel Spacing when known.

use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;

use super::common::{base_dataset, ResultContext, ResultKind};
use super::dataset::*;
use super::error::EncodeError;
use super::seg::validate_lo;
use super::source::SourceInstance;
use crate::findings::DerivedImage;

pub const SECONDARY_CAPTURE: &str = "1.2.840.10008.5.1.4.1.1.7";
pub const MULTIFRAME_GRAYSCALE_WORD_SC: &str = "1.2.840.10008.5.1.4.1.1.7.3";

/// Builds the SC data set; `sources` are the instances the image derives from.
pub fn encode_sc(ctx: &ResultContext, sources: &[SourceInstance], img: &DerivedImage) -> Result<Obj, EncodeError> {
    super::source::check_one_study(sources)?;
    validate_lo("description", &img.description)?;
    if img.rows == 0 || img.cols == 0 || img.frames == 0 {
        return Err(EncodeError::invalid("image", "rows, columns and frames must be at least 1"));
    }
    let want = img.rows as usize * img.cols as usize * img.frames as usize;
    if img.pixels.len() != want {
        return Err(EncodeError::invalid(
            "image.pixels",
            format!("{} values; {} x {} x {} frames needs {want}", img.pixels.len(), img.rows, img.cols, img.frames),
        ));
    }
    let multi = img.frames > 1;
    if let Some((s, i, t)) = &img.rescale {
        if !(s.is_finite() && i.is_finite()) || *s == 0.0 {
            return Err(EncodeError::invalid("image.rescale", "slope must be non-zero and finite"));
        }
        if multi && (*s != 1.0 || *i != 0.0) {
            return Err(EncodeError::invalid("image.rescale", "a multi-frame SC needs the identity rescale (slope 1, intercept 0)"));
        }
        validate_lo("image.rescale type", t)?;
    }
    if let Some(s) = img.pixel_spacing {
        if !(s[0] > 0.0 && s[1] > 0.0 && s[0].is_finite() && s[1].is_finite()) {
            return Err(EncodeError::invalid("image.pixel_spacing", "must be positive"));
        }
    }
    for r in &img.derived_from {
        if !sources.iter().any(|s| s.sop_instance_uid == r.sop_instance_uid) {
            return Err(EncodeError::invalid("image.derived_from", format!("{} is not among the source instances", r.sop_instance_uid)));
        }
    }

    let uids = ctx.uids(ResultKind::Sc, sources, &[&img.description])?;
    let class = if multi { MULTIFRAME_GRAYSCALE_WORD_SC } else { SECONDARY_CAPTURE };
    let mut o = base_dataset(ctx, ResultKind::Sc, class, "OT", &uids, &sources[0]);
    super::common::put_laterality(&mut o, &sources[0]);
    put_strs(&mut o, tags::IMAGE_TYPE, VR::CS, &["DERIVED".into(), "SECONDARY".into()]);
    put_str(&mut o, tags::CONVERSION_TYPE, VR::CS, "WSD");
    put_str(&mut o, tags::DERIVATION_DESCRIPTION, VR::ST, &img.description);
    put_str(&mut o, tags::BURNED_IN_ANNOTATION, VR::CS, "NO");
    put_empty(&mut o, tags::PATIENT_ORIENTATION, VR::CS);
    put_str(&mut o, tags::DATE_OF_SECONDARY_CAPTURE, VR::DA, &ctx.created.0);
    put_str(&mut o, tags::TIME_OF_SECONDARY_CAPTURE, VR::TM, &ctx.created.1);
    if !img.derived_from.is_empty() {
        let items = img
            .derived_from
            .iter()
            .map(|r| {
                let mut it = sop_ref_item(&r.sop_class_uid, &r.sop_instance_uid);
                if let Some(f) = r.frame_number {
                    put_is(&mut it, tags::REFERENCED_FRAME_NUMBER, f as i64);
                }
                it
            })
            .collect();
        put_seq(&mut o, tags::SOURCE_IMAGE_SEQUENCE, items);
    }
    if let Some(s) = img.pixel_spacing {
        put_ds(&mut o, tags::PIXEL_SPACING, &s);
    }
    put_us(&mut o, tags::SAMPLES_PER_PIXEL, &[1]);
    put_str(&mut o, tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2");
    put_us(&mut o, tags::ROWS, &[img.rows]);
    put_us(&mut o, tags::COLUMNS, &[img.cols]);
    put_us(&mut o, tags::BITS_ALLOCATED, &[16]);
    put_us(&mut o, tags::BITS_STORED, &[16]);
    put_us(&mut o, tags::HIGH_BIT, &[15]);
    put_us(&mut o, tags::PIXEL_REPRESENTATION, &[0]);
    if multi {
        put_is(&mut o, tags::NUMBER_OF_FRAMES, img.frames as i64);
        put_at(&mut o, tags::FRAME_INCREMENT_POINTER, &[tags::FRAME_LABEL_VECTOR]);
        let labels: Vec<String> = (1..=img.frames).map(|f| f.to_string()).collect();
        put_strs(&mut o, tags::FRAME_LABEL_VECTOR, VR::SH, &labels);
        put_str(&mut o, tags::PRESENTATION_LUT_SHAPE, VR::CS, "IDENTITY");
        put_ds(&mut o, tags::RESCALE_INTERCEPT, &[0.0]);
        put_ds(&mut o, tags::RESCALE_SLOPE, &[1.0]);
        put_str(&mut o, tags::RESCALE_TYPE, VR::LO, "US");
    } else if let Some((s, i, t)) = &img.rescale {
        put_ds(&mut o, tags::RESCALE_INTERCEPT, &[*i]);
        put_ds(&mut o, tags::RESCALE_SLOPE, &[*s]);
        put_str(&mut o, tags::RESCALE_TYPE, VR::LO, t);
    }
    if let Some((c, w)) = img.window {
        if !(w >= 1.0 && c.is_finite()) {
            return Err(EncodeError::invalid("image.window", "width must be at least 1"));
        }
        put_ds(&mut o, tags::WINDOW_CENTER, &[c]);
        put_ds(&mut o, tags::WINDOW_WIDTH, &[w]);
    }
    o.put(DataElement::new(tags::PIXEL_DATA, VR::OW, PrimitiveValue::U16(img.pixels.iter().copied().collect())));
    Ok(o)
}
