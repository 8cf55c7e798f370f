//! Small attribute readers over a data set, including the functional group
//! lookup of enhanced multi-frame objects (per-frame item first, then shared).

use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry, VirtualVr};
use dicom_core::value::{PrimitiveValue, Value};
use dicom_core::{Tag, VR};
use dicom_dictionary_std::{tags, StandardDataDictionary};
use dicom_object::mem::InMemElement;
use dicom_object::InMemDicomObject;

pub(crate) type Ds = InMemDicomObject;

/// Raw bytes of an element whose VR was not known when it was read (VR UN
/// in explicit VR, or a value kept as bytes): what the dictionary says the
/// VR is, and the bytes.
fn unknown_vr_bytes(e: &InMemElement) -> Option<(VR, &[u8])> {
    let bytes: &[u8] = match e.value() {
        Value::Primitive(PrimitiveValue::U8(b)) => b,
        _ => return None,
    };
    let dict_vr = match StandardDataDictionary.by_tag(e.header().tag).map(|en| en.vr()) {
        Some(VirtualVr::Exact(vr)) => vr,
        Some(VirtualVr::Xs) => VR::US,
        _ => return None,
    };
    if e.vr() == VR::UN || !matches!(dict_vr, VR::OB | VR::UN) {
        Some((dict_vr, bytes))
    } else {
        None
    }
}

fn is_text_vr(vr: VR) -> bool {
    matches!(
        vr,
        VR::AE | VR::AS | VR::CS | VR::DA | VR::DS | VR::DT | VR::IS | VR::LO | VR::LT | VR::PN | VR::SH | VR::ST | VR::TM | VR::UC | VR::UI | VR::UR | VR::UT
    )
}

fn trim(s: &str) -> &str {
    s.trim_matches(|c: char| c == '\0' || c.is_whitespace())
}

/// Trimmed string value; `None` when absent or empty.
pub(crate) fn string(ds: &Ds, tag: Tag) -> Option<String> {
    let e = ds.get(tag)?;
    let s = match unknown_vr_bytes(e) {
        Some((vr, bytes)) if is_text_vr(vr) => trim(&String::from_utf8_lossy(bytes)).to_string(),
        _ => trim(&e.to_str().ok()?).to_string(),
    };
    if s.is_empty() {
        None
    } else {
        Some(s)
    }
}

/// All numeric values (DS, FD, IS, US, ...) as f64; `None` when absent,
/// empty or not numeric.
pub(crate) fn floats(ds: &Ds, tag: Tag) -> Option<Vec<f64>> {
    let e = ds.get(tag)?;
    let v = match unknown_vr_bytes(e) {
        Some((vr, bytes)) => decode_un_numbers(vr, bytes)?,
        None => match e.to_multi_float64() {
            Ok(v) => v,
            // a single string holding several backslash-separated values
            Err(_) => decode_un_numbers(VR::DS, e.to_str().ok()?.as_bytes())?,
        },
    };
    if v.is_empty() {
        None
    } else {
        Some(v)
    }
}

/// Numbers from the bytes of a VR UN element (little endian: UN only occurs
/// in explicit VR little endian), by the dictionary VR.
fn decode_un_numbers(vr: VR, b: &[u8]) -> Option<Vec<f64>> {
    fn le<const N: usize>(b: &[u8], f: impl Fn([u8; N]) -> f64) -> Vec<f64> {
        b.chunks_exact(N).map(|c| f(c.try_into().expect("chunk size"))).collect()
    }
    Some(match vr {
        VR::DS | VR::IS => {
            let text = String::from_utf8_lossy(b);
            text.split('\\').map(trim).filter(|s| !s.is_empty()).map(|s| s.parse::<f64>().ok()).collect::<Option<Vec<_>>>()?
        }
        VR::US => le::<2>(b, |c| u16::from_le_bytes(c) as f64),
        VR::SS => le::<2>(b, |c| i16::from_le_bytes(c) as f64),
        VR::UL => le::<4>(b, |c| u32::from_le_bytes(c) as f64),
        VR::SL => le::<4>(b, |c| i32::from_le_bytes(c) as f64),
        VR::FL => le::<4>(b, |c| f32::from_le_bytes(c) as f64),
        VR::FD => le::<8>(b, f64::from_le_bytes),
        _ => return None,
    })
}

pub(crate) fn float(ds: &Ds, tag: Tag) -> Option<f64> {
    floats(ds, tag).and_then(|v| v.first().copied()).filter(|v| v.is_finite())
}

pub(crate) fn int(ds: &Ds, tag: Tag) -> Option<i64> {
    let e = ds.get(tag)?;
    if unknown_vr_bytes(e).is_none() {
        if let Ok(v) = e.to_int::<i64>() {
            return Some(v);
        }
    }
    // IS values with stray decimals ("1.0"), values read as VR UN
    float(ds, tag).map(|v| v.round() as i64)
}

pub(crate) fn items(ds: &Ds, tag: Tag) -> Option<&[Ds]> {
    ds.get(tag)?.items().filter(|i| !i.is_empty())
}

pub(crate) fn first_item(ds: &Ds, tag: Tag) -> Option<&Ds> {
    items(ds, tag).and_then(|i| i.first())
}

/// The functional group macro `group` for frame `frame` (0-based): the
/// per-frame item's macro if present, else the shared one.
pub(crate) fn functional_group(ds: &Ds, frame: usize, group: Tag) -> Option<&Ds> {
    if let Some(per_frame) = items(ds, tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE) {
        if let Some(item) = per_frame.get(frame) {
            if let Some(m) = first_item(item, group) {
                return Some(m);
            }
        }
    }
    first_item(ds, tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE).and_then(|shared| first_item(shared, group))
}

/// `attr` from the functional group `group` for frame `frame`, falling back
/// to the top level of the data set.
pub(crate) fn frame_floats(ds: &Ds, frame: usize, group: Tag, attr: Tag) -> Option<Vec<f64>> {
    functional_group(ds, frame, group).and_then(|m| floats(m, attr)).or_else(|| floats(ds, attr))
}

pub(crate) fn sop_instance_uid(ds: &Ds) -> String {
    string(ds, tags::SOP_INSTANCE_UID).unwrap_or_else(|| "(no SOP Instance UID)".to_string())
}

pub(crate) fn number_of_frames(ds: &Ds) -> usize {
    int(ds, tags::NUMBER_OF_FRAMES).filter(|n| *n > 0).map(|n| n as usize).unwrap_or(1)
}
