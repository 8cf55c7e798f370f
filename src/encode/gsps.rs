//! Presentation states: graphics and text over one image.
//!
//! Grayscale Softcopy Presentation State for MONOCHROME1/2 images: Modality
//! LUT copied from the image (rescale, also from enhanced functional groups),
//! Softcopy VOI from the overlay or the image, Presentation LUT INVERSE for
//! MONOCHROME1 (so the image looks as intended). Color Softcopy Presentation
//! State for RGB / YBR / PALETTE COLOR images: an sRGB ICC profile instead of
//! the LUTs. Both: displayed area = the whole image, one graphic layer.

use dicom_core::VR;
use dicom_dictionary_std::tags;

use super::common::{base_dataset, ResultContext, ResultKind};
use super::dataset::*;
use super::error::EncodeError;
use super::seg::{validate_content_label, validate_lo};
use super::source::SourceInstance;
use crate::findings::{Graphic, GraphicType, Overlay};

pub const GRAYSCALE_SOFTCOPY_PRESENTATION_STATE: &str = "1.2.840.10008.5.1.4.1.1.11.1";
pub const COLOR_SOFTCOPY_PRESENTATION_STATE: &str = "1.2.840.10008.5.1.4.1.1.11.2";

fn is_grayscale(image: &SourceInstance) -> bool {
    matches!(image.photometric.as_deref(), Some("MONOCHROME1") | Some("MONOCHROME2"))
}

/// GSPS for a grayscale image, CSPS for a colour one.
pub fn encode_presentation_state(ctx: &ResultContext, image: &SourceInstance, overlay: &Overlay, opts: &GspsOptions) -> Result<Obj, EncodeError> {
    if is_grayscale(image) {
        encode_gsps(ctx, image, overlay, opts)
    } else {
        encode_csps(ctx, image, overlay, opts)
    }
}

/// Color Softcopy Presentation State (RGB, YBR or PALETTE COLOR images).
pub fn encode_csps(ctx: &ResultContext, image: &SourceInstance, overlay: &Overlay, opts: &GspsOptions) -> Result<Obj, EncodeError> {
    let photometric = image.photometric.clone().unwrap_or_default();
    if is_grayscale(image) || photometric.is_empty() {
        return Err(EncodeError::SourceAttribute {
            file: image.file(),
            attribute: "PhotometricInterpretation (0028,0004)".into(),
            reason: format!("`{photometric}`: a colour presentation state applies to colour images only"),
        });
    }
    let mut o = build(ctx, image, overlay, opts, COLOR_SOFTCOPY_PRESENTATION_STATE)?;
    put_ob(&mut o, tags::ICC_PROFILE, super::icc::srgb_profile());
    Ok(o)
}

#[derive(Debug, Clone)]
pub struct GspsOptions {
    pub content_label: String,
    pub content_description: Option<String>,
}

impl Default for GspsOptions {
    fn default() -> GspsOptions {
        GspsOptions { content_label: "AI_ANNOTATIONS".into(), content_description: None }
    }
}

/// Grayscale Softcopy Presentation State (MONOCHROME1/2 images).
pub fn encode_gsps(ctx: &ResultContext, image: &SourceInstance, overlay: &Overlay, opts: &GspsOptions) -> Result<Obj, EncodeError> {
    let photometric = image.photometric.clone().unwrap_or_default();
    if !is_grayscale(image) {
        return Err(EncodeError::SourceAttribute {
            file: image.file(),
            attribute: "PhotometricInterpretation (0028,0004)".into(),
            reason: format!("`{photometric}`: a grayscale presentation state applies to MONOCHROME1/2 images only"),
        });
    }
    let mut o = build(ctx, image, overlay, opts, GRAYSCALE_SOFTCOPY_PRESENTATION_STATE)?;
    let frame = overlay.image.frame_number.unwrap_or(1);
    // Modality LUT
    let rescale = rescale_of(image, frame);
    if let Some((slope, intercept, ty)) = &rescale {
        put_ds(&mut o, tags::RESCALE_INTERCEPT, &[*intercept]);
        put_ds(&mut o, tags::RESCALE_SLOPE, &[*slope]);
        put_str(&mut o, tags::RESCALE_TYPE, VR::LO, ty);
    }
    // Softcopy VOI LUT
    let (center, width) = match overlay.window.or_else(|| window_of(image, frame)) {
        Some(w) => w,
        None => default_window(image, rescale.as_ref().map(|r| (r.0, r.1))),
    };
    if !(width.is_finite() && center.is_finite() && width >= 1.0) {
        return Err(EncodeError::invalid("window", format!("centre {center}, width {width}: the width must be at least 1")));
    }
    let mut voi = new_obj();
    put_ds(&mut voi, tags::WINDOW_CENTER, &[center]);
    put_ds(&mut voi, tags::WINDOW_WIDTH, &[width]);
    put_seq(&mut o, tags::SOFTCOPY_VOILUT_SEQUENCE, vec![voi]);
    // Presentation LUT
    put_str(&mut o, tags::PRESENTATION_LUT_SHAPE, VR::CS, if photometric == "MONOCHROME1" { "INVERSE" } else { "IDENTITY" });
    Ok(o)
}

/// Everything but the colour handling.
fn build(ctx: &ResultContext, image: &SourceInstance, overlay: &Overlay, opts: &GspsOptions, class: &str) -> Result<Obj, EncodeError> {
    validate_content_label(&opts.content_label)?;
    validate_layer(&overlay.layer)?;
    if let Some(d) = &overlay.layer_description {
        validate_lo("layer_description", d)?;
    }
    if !image.is_image() {
        return Err(EncodeError::SourceAttribute { file: image.file(), attribute: "Rows/Columns".into(), reason: "not an image".into() });
    }
    if overlay.image.sop_instance_uid != image.sop_instance_uid {
        return Err(EncodeError::invalid("image", format!("the overlay is for {}, not {}", overlay.image.sop_instance_uid, image.file())));
    }
    let frame = match (overlay.image.frame_number, image.is_multiframe()) {
        (Some(f), true) if f >= 1 && f <= image.frames() => Some(f),
        (None, true) if image.frames() == 1 => Some(1),
        (None, false) => None,
        (f, _) => {
            return Err(EncodeError::invalid("frame", format!("frame {f:?} is not valid for {} ({} frames)", image.file(), image.frames())));
        }
    };
    if overlay.graphics.is_empty() && overlay.texts.is_empty() {
        return Err(EncodeError::invalid("annotations", "nothing to draw: no graphics and no texts"));
    }
    let (rows, cols) = (image.rows.unwrap() as f64, image.cols.unwrap() as f64);
    let inside = |field: &str, p: &[f64; 2]| -> Result<(), EncodeError> {
        if p[0].is_finite() && p[1].is_finite() && (0.0..=cols).contains(&p[0]) && (0.0..=rows).contains(&p[1]) {
            Ok(())
        } else {
            Err(EncodeError::invalid(field, format!("({}, {}) lies outside the image ({cols} columns x {rows} rows)", p[0], p[1])))
        }
    };

    let uids = ctx.uids(ResultKind::Gsps, std::slice::from_ref(image), &[])?;
    let mut o = base_dataset(ctx, ResultKind::Gsps, class, "PR", &uids, image);
    // the PR IOD has Presentation Creation Date/Time instead
    o.remove_element(tags::CONTENT_DATE);
    o.remove_element(tags::CONTENT_TIME);
    super::common::put_laterality(&mut o, image);
    // Presentation State Identification
    put_str(&mut o, tags::CONTENT_LABEL, VR::CS, &opts.content_label);
    match &opts.content_description {
        Some(d) => put_str(&mut o, tags::CONTENT_DESCRIPTION, VR::LO, d),
        None => put_empty(&mut o, tags::CONTENT_DESCRIPTION, VR::LO),
    }
    put_str(&mut o, tags::PRESENTATION_CREATION_DATE, VR::DA, &ctx.created.0);
    put_str(&mut o, tags::PRESENTATION_CREATION_TIME, VR::TM, &ctx.created.1);
    put_str(&mut o, tags::CONTENT_CREATOR_NAME, VR::PN, &ctx.settings.content_creator);

    let image_ref = || {
        let mut r = sop_ref_item(&image.sop_class_uid, &image.sop_instance_uid);
        if let Some(f) = frame {
            put_is(&mut r, tags::REFERENCED_FRAME_NUMBER, f as i64);
        }
        r
    };
    // Presentation State Relationship
    let mut series = new_obj();
    put_seq(&mut series, tags::REFERENCED_IMAGE_SEQUENCE, vec![image_ref()]);
    put_str(&mut series, tags::SERIES_INSTANCE_UID, VR::UI, &image.series_instance_uid);
    put_seq(&mut o, tags::REFERENCED_SERIES_SEQUENCE, vec![series]);

    // Displayed Area: the whole image
    let mut da = new_obj();
    put_sl(&mut da, tags::DISPLAYED_AREA_TOP_LEFT_HAND_CORNER, &[1, 1]);
    put_sl(&mut da, tags::DISPLAYED_AREA_BOTTOM_RIGHT_HAND_CORNER, &[cols as i32, rows as i32]);
    put_str(&mut da, tags::PRESENTATION_SIZE_MODE, VR::CS, "SCALE TO FIT");
    match image.display_pixel_spacing() {
        Some(s) => put_ds(&mut da, tags::PRESENTATION_PIXEL_SPACING, &s),
        None => put_strs(&mut da, tags::PRESENTATION_PIXEL_ASPECT_RATIO, VR::IS, &["1".into(), "1".into()]),
    }
    put_seq(&mut o, tags::DISPLAYED_AREA_SELECTION_SEQUENCE, vec![da]);

    // Graphic Annotation + Layer
    let mut ann = new_obj();
    put_seq(&mut ann, tags::REFERENCED_IMAGE_SEQUENCE, vec![image_ref()]);
    put_str(&mut ann, tags::GRAPHIC_LAYER, VR::CS, &overlay.layer);
    let mut texts = Vec::new();
    for (i, t) in overlay.texts.iter().enumerate() {
        let field = format!("texts[{i}]");
        if t.text.trim().is_empty() || t.text.len() > 1024 {
            return Err(EncodeError::invalid(format!("{field}.text"), "must be 1-1024 characters"));
        }
        let mut it = new_obj();
        put_str(&mut it, tags::UNFORMATTED_TEXT_VALUE, VR::ST, &t.text);
        if t.anchor.is_none() && t.bounding_box.is_none() {
            return Err(EncodeError::invalid(&field, "a text needs an anchor point or a box"));
        }
        if let Some([tl, br]) = &t.bounding_box {
            inside(&format!("{field}.box"), tl)?;
            inside(&format!("{field}.box"), br)?;
            if !(tl[0] < br[0] && tl[1] < br[1]) {
                return Err(EncodeError::invalid(format!("{field}.box"), "top-left must be above and left of bottom-right"));
            }
            put_str(&mut it, tags::BOUNDING_BOX_ANNOTATION_UNITS, VR::CS, "PIXEL");
            put_fl(&mut it, tags::BOUNDING_BOX_TOP_LEFT_HAND_CORNER, &[tl[0] as f32, tl[1] as f32]);
            put_fl(&mut it, tags::BOUNDING_BOX_BOTTOM_RIGHT_HAND_CORNER, &[br[0] as f32, br[1] as f32]);
            put_str(&mut it, tags::BOUNDING_BOX_TEXT_HORIZONTAL_JUSTIFICATION, VR::CS, "LEFT");
        }
        if let Some(a) = &t.anchor {
            inside(&format!("{field}.anchor"), a)?;
            put_str(&mut it, tags::ANCHOR_POINT_ANNOTATION_UNITS, VR::CS, "PIXEL");
            put_fl(&mut it, tags::ANCHOR_POINT, &[a[0] as f32, a[1] as f32]);
            put_str(&mut it, tags::ANCHOR_POINT_VISIBILITY, VR::CS, if t.bounding_box.is_some() { "Y" } else { "N" });
        }
        texts.push(it);
    }
    let mut graphics = Vec::new();
    for (i, g) in overlay.graphics.iter().enumerate() {
        let field = format!("graphics[{i}]");
        for (k, p) in g.points.iter().enumerate() {
            inside(&format!("{field}.points[{k}]"), p)?;
        }
        graphics.extend(graphic_items(&field, g)?);
    }
    if !texts.is_empty() {
        put_seq(&mut ann, tags::TEXT_OBJECT_SEQUENCE, texts);
    }
    if !graphics.is_empty() {
        put_seq(&mut ann, tags::GRAPHIC_OBJECT_SEQUENCE, graphics);
    }
    put_seq(&mut o, tags::GRAPHIC_ANNOTATION_SEQUENCE, vec![ann]);
    let mut layer = new_obj();
    put_str(&mut layer, tags::GRAPHIC_LAYER, VR::CS, &overlay.layer);
    put_is(&mut layer, tags::GRAPHIC_LAYER_ORDER, 1);
    put_us(&mut layer, tags::GRAPHIC_LAYER_RECOMMENDED_DISPLAY_GRAYSCALE_VALUE, &[0xFFFF]);
    if let Some(d) = &overlay.layer_description {
        put_str(&mut layer, tags::GRAPHIC_LAYER_DESCRIPTION, VR::LO, d);
    }
    put_seq(&mut o, tags::GRAPHIC_LAYER_SEQUENCE, vec![layer]);

    Ok(o)
}

fn validate_layer(layer: &str) -> Result<(), EncodeError> {
    validate_content_label(layer)
        .map_err(|_| EncodeError::invalid("layer", format!("graphic layer `{layer}` must be 1-16 characters of A-Z, 0-9, space and underscore")))
}

/// Graphic Object Sequence items for one graphic (a MULTIPOINT becomes POINTs).
fn graphic_items(field: &str, g: &Graphic) -> Result<Vec<Obj>, EncodeError> {
    let n = g.points.len();
    let one = |t: &str, pts: &[[f64; 2]], closed: bool, filled: bool| {
        let mut it = new_obj();
        put_str(&mut it, tags::GRAPHIC_ANNOTATION_UNITS, VR::CS, "PIXEL");
        put_us(&mut it, tags::GRAPHIC_DIMENSIONS, &[2]);
        let mut data: Vec<f32> = pts.iter().flat_map(|p| [p[0] as f32, p[1] as f32]).collect();
        if closed && pts.first() != pts.last() {
            data.extend_from_slice(&[pts[0][0] as f32, pts[0][1] as f32]);
        }
        put_us(&mut it, tags::NUMBER_OF_GRAPHIC_POINTS, &[(data.len() / 2) as u16]);
        put_fl(&mut it, tags::GRAPHIC_DATA, &data);
        put_str(&mut it, tags::GRAPHIC_TYPE, VR::CS, t);
        put_str(&mut it, tags::GRAPHIC_FILLED, VR::CS, if filled { "Y" } else { "N" });
        it
    };
    let bad = |what: &str| EncodeError::invalid(field, format!("{what} with {n} points"));
    if n > 16000 {
        return Err(bad("too many points"));
    }
    Ok(match g.graphic_type {
        GraphicType::Point if n == 1 => vec![one("POINT", &g.points, false, false)],
        GraphicType::Multipoint if n >= 1 => g.points.iter().map(|p| one("POINT", std::slice::from_ref(p), false, false)).collect(),
        GraphicType::Polyline if n >= 2 => vec![one("POLYLINE", &g.points, false, false)],
        GraphicType::Polygon if n >= 3 => vec![one("POLYLINE", &g.points, true, g.filled)],
        GraphicType::Circle if n == 2 => vec![one("CIRCLE", &g.points, false, g.filled)],
        GraphicType::Ellipse if n == 4 => vec![one("ELLIPSE", &g.points, false, g.filled)],
        t => return Err(bad(&format!("{t:?}"))),
    })
}

/// (slope, intercept, type) from the image or its functional groups.
fn rescale_of(image: &SourceInstance, frame: u32) -> Option<(f64, f64, String)> {
    let o = &image.obj;
    let mut found = get_f64(o, tags::RESCALE_SLOPE).zip(get_f64(o, tags::RESCALE_INTERCEPT)).map(|(s, i)| (s, i, get_str(o, tags::RESCALE_TYPE)));
    if image.is_enhanced() {
        let shared = first_item(o, tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE);
        let per = get_items(o, tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE).and_then(|i| i.get(frame as usize - 1));
        for g in [shared, per].into_iter().flatten() {
            if let Some(t) = first_item(g, tags::PIXEL_VALUE_TRANSFORMATION_SEQUENCE) {
                if let (Some(s), Some(i)) = (get_f64(t, tags::RESCALE_SLOPE), get_f64(t, tags::RESCALE_INTERCEPT)) {
                    found = Some((s, i, get_str(t, tags::RESCALE_TYPE)));
                }
            }
        }
    }
    let (s, i, t) = found?;
    let ty = match t {
        Some(t) if !t.is_empty() => t,
        _ if image.modality == "CT" => "HU".to_string(),
        _ => "US".to_string(),
    };
    Some((s, i, ty))
}

fn window_of(image: &SourceInstance, frame: u32) -> Option<(f64, f64)> {
    let o = &image.obj;
    let mut w = get_f64(o, tags::WINDOW_CENTER).zip(get_f64(o, tags::WINDOW_WIDTH));
    if image.is_enhanced() {
        let shared = first_item(o, tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE);
        let per = get_items(o, tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE).and_then(|i| i.get(frame as usize - 1));
        for g in [shared, per].into_iter().flatten() {
            if let Some(v) = first_item(g, tags::FRAME_VOILUT_SEQUENCE) {
                if let Some(x) = get_f64(v, tags::WINDOW_CENTER).zip(get_f64(v, tags::WINDOW_WIDTH)) {
                    w = Some(x);
                }
            }
        }
    }
    w.filter(|(_, width)| *width >= 1.0)
}

/// The full stored range, in modality units.
fn default_window(image: &SourceInstance, rescale: Option<(f64, f64)>) -> (f64, f64) {
    let bits = get_u32(&image.obj, tags::BITS_STORED).unwrap_or(8).clamp(1, 16) as i32;
    let signed = get_u32(&image.obj, tags::PIXEL_REPRESENTATION) == Some(1);
    let (lo, hi) = if signed { (-(2f64.powi(bits - 1)), 2f64.powi(bits - 1) - 1.0) } else { (0.0, 2f64.powi(bits) - 1.0) };
    let (s, i) = rescale.unwrap_or((1.0, 0.0));
    let (a, b) = (lo * s + i, hi * s + i);
    let (lo, hi) = (a.min(b), a.max(b));
    ((lo + hi + 1.0) / 2.0, (hi - lo + 1.0).max(1.0))
}
