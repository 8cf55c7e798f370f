//! Small helpers to build and read `InMemDicomObject`s.

use dicom_core::value::DataSetSequence;
use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_object::InMemDicomObject;

use crate::findings::Code;

pub type Obj = InMemDicomObject;

pub fn new_obj() -> Obj {
    InMemDicomObject::new_empty()
}

pub fn put_str(o: &mut Obj, tag: Tag, vr: VR, s: &str) {
    o.put(DataElement::new(tag, vr, PrimitiveValue::from(s)));
}

pub fn put_strs(o: &mut Obj, tag: Tag, vr: VR, values: &[String]) {
    o.put(DataElement::new(tag, vr, PrimitiveValue::Strs(values.iter().cloned().collect())));
}

/// A Type 2 attribute with no value.
pub fn put_empty(o: &mut Obj, tag: Tag, vr: VR) {
    o.put(DataElement::empty(tag, vr));
}

pub fn put_us(o: &mut Obj, tag: Tag, values: &[u16]) {
    o.put(DataElement::new(tag, VR::US, PrimitiveValue::U16(values.iter().copied().collect())));
}

pub fn put_ul(o: &mut Obj, tag: Tag, values: &[u32]) {
    o.put(DataElement::new(tag, VR::UL, PrimitiveValue::U32(values.iter().copied().collect())));
}

pub fn put_sl(o: &mut Obj, tag: Tag, values: &[i32]) {
    o.put(DataElement::new(tag, VR::SL, PrimitiveValue::I32(values.iter().copied().collect())));
}

pub fn put_fl(o: &mut Obj, tag: Tag, values: &[f32]) {
    o.put(DataElement::new(tag, VR::FL, PrimitiveValue::F32(values.iter().copied().collect())));
}

pub fn put_fd(o: &mut Obj, tag: Tag, values: &[f64]) {
    o.put(DataElement::new(tag, VR::FD, PrimitiveValue::F64(values.iter().copied().collect())));
}

/// Decimal String values, each formatted to fit 16 characters.
pub fn put_ds(o: &mut Obj, tag: Tag, values: &[f64]) {
    let s: Vec<String> = values.iter().map(|v| format_ds(*v)).collect();
    put_strs(o, tag, VR::DS, &s);
}

pub fn put_is(o: &mut Obj, tag: Tag, value: i64) {
    put_str(o, tag, VR::IS, &value.to_string());
}

pub fn put_at(o: &mut Obj, tag: Tag, values: &[Tag]) {
    o.put(DataElement::new(tag, VR::AT, PrimitiveValue::Tags(values.iter().copied().collect())));
}

pub fn put_ob(o: &mut Obj, tag: Tag, bytes: Vec<u8>) {
    o.put(DataElement::new(tag, VR::OB, PrimitiveValue::U8(bytes.into())));
}

pub fn put_seq(o: &mut Obj, tag: Tag, items: Vec<Obj>) {
    o.put(DataElement::new(tag, VR::SQ, DataSetSequence::from(items)));
}

/// A code sequence item (Code Value, or Long Code Value / URN Code Value
/// when the value is too long for SH; scheme; meaning).
pub fn code_item(c: &Code) -> Obj {
    let mut o = new_obj();
    if c.value.starts_with("urn:") || c.value.starts_with("http") {
        put_str(&mut o, Tag(0x0008, 0x0120), VR::UR, &c.value);
    } else if c.value.len() > 16 {
        put_str(&mut o, Tag(0x0008, 0x0119), VR::UC, &c.value);
    } else {
        put_str(&mut o, Tag(0x0008, 0x0100), VR::SH, &c.value);
    }
    put_str(&mut o, Tag(0x0008, 0x0102), VR::SH, &c.scheme);
    put_str(&mut o, Tag(0x0008, 0x0104), VR::LO, &c.meaning);
    o
}

pub fn put_code(o: &mut Obj, tag: Tag, c: &Code) {
    put_seq(o, tag, vec![code_item(c)]);
}

/// (Referenced SOP Class UID, Referenced SOP Instance UID) item.
pub fn sop_ref_item(class: &str, instance: &str) -> Obj {
    let mut o = new_obj();
    put_str(&mut o, Tag(0x0008, 0x1150), VR::UI, class);
    put_str(&mut o, Tag(0x0008, 0x1155), VR::UI, instance);
    o
}

/// DS: at most 16 characters, shortest exact representation when it fits.
pub fn format_ds(v: f64) -> String {
    let v = if v == 0.0 { 0.0 } else { v }; // no "-0"
    let s = format!("{v}");
    if s.len() <= 16 {
        return s;
    }
    for prec in (0..=15).rev() {
        let mut t = format!("{v:.prec$}");
        if t.contains('.') {
            t = t.trim_end_matches('0').trim_end_matches('.').to_string();
        }
        if t.len() <= 16 {
            return t;
        }
    }
    // magnitude too large for fixed notation
    for prec in (0..=10).rev() {
        let t = format!("{v:.prec$e}");
        if t.len() <= 16 {
            return t;
        }
    }
    format!("{v:e}")
}

// --- reading -----------------------------------------------------------------

pub fn get_str(o: &Obj, tag: Tag) -> Option<String> {
    let e = o.element_opt(tag).ok().flatten()?;
    let s = e.to_str().ok()?;
    let s = s.trim_end_matches(['\0', ' ']).trim_start().to_string();
    (!s.is_empty()).then_some(s)
}

pub fn get_strs(o: &Obj, tag: Tag) -> Option<Vec<String>> {
    let e = o.element_opt(tag).ok().flatten()?;
    let v = e.value().to_multi_str().ok()?;
    Some(v.iter().map(|s| s.trim_matches(['\0', ' ']).to_string()).collect())
}

pub fn get_f64s(o: &Obj, tag: Tag) -> Option<Vec<f64>> {
    let e = o.element_opt(tag).ok().flatten()?;
    let v = e.to_multi_float64().ok()?;
    (!v.is_empty()).then_some(v)
}

pub fn get_f64(o: &Obj, tag: Tag) -> Option<f64> {
    get_f64s(o, tag).and_then(|v| v.first().copied())
}

pub fn get_u32(o: &Obj, tag: Tag) -> Option<u32> {
    let e = o.element_opt(tag).ok().flatten()?;
    e.to_int::<u32>().ok()
}

pub fn get_items(o: &Obj, tag: Tag) -> Option<&[Obj]> {
    o.element_opt(tag).ok().flatten()?.items()
}

pub fn first_item(o: &Obj, tag: Tag) -> Option<&Obj> {
    get_items(o, tag)?.first()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ds_fits_16_characters() {
        assert_eq!(format_ds(0.9765625), "0.9765625");
        assert_eq!(format_ds(-249.51171875), "-249.51171875");
        assert_eq!(format_ds(-0.0), "0");
        assert_eq!(format_ds(2.0), "2");
        let s = format_ds(1.0 / 3.0);
        assert!(s.len() <= 16 && s.starts_with("0.33333"), "{s}");
        let s = format_ds(-123456.78901234567);
        assert!(s.len() <= 16 && s.starts_with("-123456.789"), "{s}");
        let s = format_ds(1e300);
        assert!(s.len() <= 16, "{s}");
    }
}
