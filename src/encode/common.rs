//! What every result object shares: patient / study attributes copied from
//! the input, the result series, equipment, creation date/time, UIDs, and
//! writing the Part 10 file.

use std::io::Write;
use std::path::Path;

use dicom_core::{Tag, VR};
use dicom_dictionary_std::tags;
use dicom_transfer_syntax_registry::TransferSyntaxIndex;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;

use super::dataset::{new_obj, put_empty, put_is, put_str, Obj};
use super::error::EncodeError;
use super::source::SourceInstance;
use super::uids::{named_uid, UidGenerator};
use crate::dicom_uids::EXPLICIT_VR_LE;

/// The kinds of result object; each has its own series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResultKind {
    Seg,
    Sr,
    Gsps,
    Sc,
}

impl ResultKind {
    pub fn name(self) -> &'static str {
        match self {
            ResultKind::Seg => "SEG",
            ResultKind::Sr => "SR",
            ResultKind::Gsps => "PR",
            ResultKind::Sc => "SC",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct SeriesSettings {
    pub number: i32,
    pub description: String,
}

/// Site settings for result objects (config `[results]`).
#[derive(Debug, Clone)]
pub struct EncoderSettings {
    pub uid_root: String,
    pub manufacturer: String,
    pub model_name: String,
    pub device_serial_number: String,
    pub software_versions: String,
    pub institution_name: Option<String>,
    /// Content Creator's Name (PN) of SEG and presentation states.
    pub content_creator: String,
    pub seg_series: SeriesSettings,
    pub sr_series: SeriesSettings,
    pub pr_series: SeriesSettings,
    pub sc_series: SeriesSettings,
    /// SEG: leave out frames with no foreground (default false: keep them).
    pub seg_omit_empty_frames: bool,
}

impl EncoderSettings {
    pub fn from_config(cfg: &crate::config::Config) -> EncoderSettings {
        let r = &cfg.results;
        let serial = if r.device_serial_number.trim().is_empty() { cfg.node.ae_title.trim().to_string() } else { r.device_serial_number.clone() };
        let series = |n: i32, d: &str| SeriesSettings { number: n, description: d.to_string() };
        EncoderSettings {
            uid_root: cfg.node.uid_root.clone(),
            manufacturer: r.manufacturer.clone(),
            model_name: r.model_name.clone(),
            device_serial_number: serial,
            software_versions: env!("CARGO_PKG_VERSION").to_string(),
            institution_name: (!r.institution_name.trim().is_empty()).then(|| r.institution_name.clone()),
            content_creator: r.content_creator.clone(),
            seg_series: series(r.seg_series_number, &r.seg_series_description),
            sr_series: series(r.sr_series_number, &r.sr_series_description),
            pr_series: series(r.pr_series_number, &r.pr_series_description),
            sc_series: series(r.sc_series_number, &r.sc_series_description),
            seg_omit_empty_frames: r.seg_omit_empty_frames,
        }
    }

    /// The embedded default configuration's settings.
    pub fn defaults() -> EncoderSettings {
        EncoderSettings::from_config(&crate::config::Config::from_toml("").expect("embedded default config is valid"))
    }

    pub fn series(&self, kind: ResultKind) -> &SeriesSettings {
        match kind {
            ResultKind::Seg => &self.seg_series,
            ResultKind::Sr => &self.sr_series,
            ResultKind::Gsps => &self.pr_series,
            ResultKind::Sc => &self.sc_series,
        }
    }
}

/// Who makes a result: settings + pipeline + model version, and when.
#[derive(Debug, Clone)]
pub struct ResultContext {
    pub settings: EncoderSettings,
    /// Pipeline id (e.g. "lung"); also the device observer's model name in SR.
    pub pipeline: String,
    pub model_version: String,
    /// Creation (date YYYYMMDD, time HHMMSS) in UTC; `now` unless fixed.
    pub created: (String, String),
}

impl ResultContext {
    pub fn new(settings: EncoderSettings, pipeline: &str, model_version: &str) -> ResultContext {
        ResultContext { settings, pipeline: pipeline.into(), model_version: model_version.into(), created: utc_now() }
    }

    /// The UID generator of one result object over its input instances.
    pub fn uids(&self, kind: ResultKind, sources: &[SourceInstance], extra: &[&str]) -> Result<UidGenerator, EncodeError> {
        let mut inputs: Vec<&str> = sources.iter().map(|s| s.sop_instance_uid.as_str()).collect();
        inputs.extend_from_slice(extra);
        UidGenerator::new(&self.settings.uid_root, &inputs, &self.pipeline, &self.model_version, kind.name())
    }

    /// Stable UID of this pipeline as a device (SR device observer).
    pub fn device_uid(&self) -> Result<String, EncodeError> {
        named_uid(&self.settings.uid_root, &format!("device/{}", self.pipeline))
    }
}

/// Patient, Clinical Trial Subject, General Study, Patient Study and Clinical
/// Trial Study attributes copied from the input so that the result joins the
/// same patient and study (dcentvfy). Type 2 ones are written empty if absent.
const COPIED: &[(u16, u16)] = &[
    // Patient
    (0x0010, 0x0010),
    (0x0010, 0x0020),
    (0x0010, 0x0021),
    (0x0010, 0x0022),
    (0x0010, 0x0024),
    (0x0010, 0x0030),
    (0x0010, 0x0032),
    (0x0010, 0x0033),
    (0x0010, 0x0034),
    (0x0010, 0x0035),
    (0x0010, 0x0040),
    (0x0010, 0x0200),
    (0x0010, 0x0212),
    (0x0010, 0x0213),
    (0x0010, 0x0214),
    (0x0010, 0x0215),
    (0x0010, 0x0216),
    (0x0010, 0x0217),
    (0x0010, 0x0218),
    (0x0010, 0x0219),
    (0x0010, 0x0221),
    (0x0010, 0x0222),
    (0x0010, 0x0223),
    (0x0010, 0x0229),
    (0x0010, 0x1002),
    (0x0010, 0x1100),
    (0x0010, 0x2160),
    (0x0010, 0x2201),
    (0x0010, 0x2202),
    (0x0010, 0x2292),
    (0x0010, 0x2293),
    (0x0010, 0x2294),
    (0x0010, 0x2295),
    (0x0010, 0x2296),
    (0x0010, 0x2297),
    (0x0010, 0x2298),
    (0x0010, 0x2299),
    (0x0010, 0x4000),
    (0x0012, 0x0062),
    (0x0012, 0x0063),
    (0x0012, 0x0064),
    // Clinical Trial Subject
    (0x0012, 0x0010),
    (0x0012, 0x0020),
    (0x0012, 0x0021),
    (0x0012, 0x0030),
    (0x0012, 0x0031),
    (0x0012, 0x0040),
    (0x0012, 0x0042),
    (0x0012, 0x0081),
    (0x0012, 0x0082),
    // General Study
    (0x0008, 0x0020),
    (0x0008, 0x0030),
    (0x0008, 0x0050),
    (0x0008, 0x0051),
    (0x0008, 0x0090),
    (0x0008, 0x0096),
    (0x0008, 0x009C),
    (0x0008, 0x009D),
    (0x0008, 0x1030),
    (0x0008, 0x1032),
    (0x0008, 0x1048),
    (0x0008, 0x1049),
    (0x0008, 0x1060),
    (0x0008, 0x1062),
    (0x0008, 0x1110),
    (0x0020, 0x000D),
    (0x0020, 0x0010),
    (0x0032, 0x1033),
    (0x0032, 0x1034),
    (0x0040, 0x1012),
    // Patient Study
    (0x0008, 0x1080),
    (0x0008, 0x1084),
    (0x0010, 0x1010),
    (0x0010, 0x1020),
    (0x0010, 0x1021),
    (0x0010, 0x1022),
    (0x0010, 0x1023),
    (0x0010, 0x1024),
    (0x0010, 0x1030),
    (0x0010, 0x2000),
    (0x0010, 0x2110),
    (0x0010, 0x2180),
    (0x0010, 0x21A0),
    (0x0010, 0x21B0),
    (0x0010, 0x21C0),
    (0x0010, 0x21D0),
    (0x0038, 0x0010),
    (0x0038, 0x0014),
    (0x0038, 0x0060),
    (0x0038, 0x0062),
    (0x0038, 0x0064),
    (0x0038, 0x0500),
    // Clinical Trial Study
    (0x0012, 0x0050),
    (0x0012, 0x0051),
    (0x0012, 0x0052),
    (0x0012, 0x0053),
    (0x0012, 0x0083),
];

/// Type 2 attributes of Patient and General Study: present, maybe empty.
const TYPE2: &[(Tag, VR)] = &[
    (tags::PATIENT_NAME, VR::PN),
    (tags::PATIENT_ID, VR::LO),
    (tags::PATIENT_BIRTH_DATE, VR::DA),
    (tags::PATIENT_SEX, VR::CS),
    (tags::STUDY_DATE, VR::DA),
    (tags::STUDY_TIME, VR::TM),
    (tags::REFERRING_PHYSICIAN_NAME, VR::PN),
    (tags::STUDY_ID, VR::SH),
    (tags::ACCESSION_NUMBER, VR::SH),
];

/// The attributes every result object starts with.
pub fn base_dataset(ctx: &ResultContext, kind: ResultKind, sop_class: &str, modality: &str, uids: &UidGenerator, source: &SourceInstance) -> Obj {
    let mut o = new_obj();
    let s = &ctx.settings;
    if let Some(e) = source.obj.element_opt(tags::SPECIFIC_CHARACTER_SET).ok().flatten() {
        o.put(e.clone());
    }
    for (g, e) in COPIED {
        if let Some(el) = source.obj.element_opt(Tag(*g, *e)).ok().flatten() {
            o.put(el.clone());
        }
    }
    for (tag, vr) in TYPE2 {
        if o.element_opt(*tag).ok().flatten().is_none() {
            put_empty(&mut o, *tag, *vr);
        }
    }
    put_str(&mut o, tags::SOP_CLASS_UID, VR::UI, sop_class);
    put_str(&mut o, tags::SOP_INSTANCE_UID, VR::UI, &uids.instance());
    let (date, time) = &ctx.created;
    put_str(&mut o, tags::INSTANCE_CREATION_DATE, VR::DA, date);
    put_str(&mut o, tags::INSTANCE_CREATION_TIME, VR::TM, time);
    put_str(&mut o, tags::CONTENT_DATE, VR::DA, date);
    put_str(&mut o, tags::CONTENT_TIME, VR::TM, time);
    put_str(&mut o, tags::SERIES_DATE, VR::DA, date);
    put_str(&mut o, tags::SERIES_TIME, VR::TM, time);
    put_str(&mut o, tags::TIMEZONE_OFFSET_FROM_UTC, VR::SH, "+0000");
    // General / specialised series
    put_str(&mut o, tags::MODALITY, VR::CS, modality);
    put_str(&mut o, tags::SERIES_INSTANCE_UID, VR::UI, &uids.series());
    let series = s.series(kind);
    put_is(&mut o, tags::SERIES_NUMBER, series.number as i64);
    if !series.description.is_empty() {
        put_str(&mut o, tags::SERIES_DESCRIPTION, VR::LO, &series.description);
    }
    put_is(&mut o, tags::INSTANCE_NUMBER, 1);
    // (Enhanced) General Equipment
    put_str(&mut o, tags::MANUFACTURER, VR::LO, &s.manufacturer);
    put_str(&mut o, tags::MANUFACTURER_MODEL_NAME, VR::LO, &s.model_name);
    put_str(&mut o, tags::DEVICE_SERIAL_NUMBER, VR::LO, &s.device_serial_number);
    put_str(&mut o, tags::SOFTWARE_VERSIONS, VR::LO, &s.software_versions);
    if let Some(i) = &s.institution_name {
        put_str(&mut o, tags::INSTITUTION_NAME, VR::LO, i);
    }
    o
}

/// General Series Laterality (Type 2C): the source's Laterality or Image
/// Laterality when R or L, otherwise empty (unknown).
pub fn put_laterality(o: &mut Obj, source: &SourceInstance) {
    let lat = super::dataset::get_str(&source.obj, tags::LATERALITY)
        .or_else(|| super::dataset::get_str(&source.obj, tags::IMAGE_LATERALITY))
        .filter(|l| l == "R" || l == "L");
    match lat {
        Some(l) => put_str(o, tags::LATERALITY, VR::CS, &l),
        None => put_empty(o, tags::LATERALITY, VR::CS),
    }
}

/// Writes `obj` as a Part 10 file (Explicit VR Little Endian, our
/// implementation class UID): temporary file, fsync, rename.
pub fn write_part10(path: &Path, obj: &Obj) -> Result<(), EncodeError> {
    let buf = encode_part10(obj).map_err(|reason| EncodeError::Write { path: path.display().to_string(), reason })?;
    write_durably(path, &buf)
}

/// Writes `bytes` to `path` so that a crash leaves the old file or the whole
/// new one: temporary file in the same folder, fsync, rename.
pub fn write_durably(path: &Path, bytes: &[u8]) -> Result<(), EncodeError> {
    let p = path.display().to_string();
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let tmp = dir.join(format!(".{}.tmp", path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default()));
    let io = |error| EncodeError::Io { path: p.clone(), error };
    let mut f = std::fs::File::create(&tmp).map_err(io)?;
    f.write_all(bytes).map_err(io)?;
    f.sync_all().map_err(io)?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(io)?;
    Ok(())
}

/// Serialises `obj` as Part 10 bytes (for tests and in-memory use).
pub fn part10_bytes(obj: &Obj) -> Result<Vec<u8>, EncodeError> {
    encode_part10(obj).map_err(|reason| EncodeError::Write { path: "(memory)".into(), reason })
}

/// Part 10 bytes in the source's character set; when a text (a label, an
/// annotation) does not fit it, the whole data set is written in UTF-8
/// (ISO_IR 192) instead: values stay the same, only their bytes change.
fn encode_part10(obj: &Obj) -> Result<Vec<u8>, String> {
    match encode_once(obj) {
        Ok(b) => Ok(b),
        Err(first) => {
            let mut utf8 = obj.clone();
            put_str(&mut utf8, tags::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 192");
            encode_once(&utf8).map_err(|e| format!("{first}; in UTF-8: {e}"))
        }
    }
}

fn encode_once(obj: &Obj) -> Result<Vec<u8>, String> {
    let class = super::dataset::get_str(obj, tags::SOP_CLASS_UID).ok_or("no SOP Class UID")?;
    let inst = super::dataset::get_str(obj, tags::SOP_INSTANCE_UID).ok_or("no SOP Instance UID")?;
    let ts = TransferSyntaxRegistry.get(EXPLICIT_VR_LE).ok_or("Explicit VR LE not registered")?;
    let mut buf = Vec::with_capacity(1 << 16);
    crate::part10::write_meta(&mut buf, &class, &inst, EXPLICIT_VR_LE, "").map_err(|e| e.to_string())?;
    obj.write_dataset_with_ts(&mut buf, ts).map_err(|e| crate::error_chain(&e))?;
    Ok(buf)
}

/// Current UTC date (YYYYMMDD) and time (HHMMSS).
pub fn utc_now() -> (String, String) {
    let [y, m, d, hh, mm, ss] = crate::clock::utc_parts(crate::clock::now_secs());
    (format!("{y:04}{m:02}{d:02}"), format!("{hh:02}{mm:02}{ss:02}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_outside_the_character_set_switches_to_utf8() {
        let mut o = new_obj();
        put_str(&mut o, tags::SOP_CLASS_UID, VR::UI, "1.2.840.10008.5.1.4.1.1.11.1");
        put_str(&mut o, tags::SOP_INSTANCE_UID, VR::UI, "1.2.3");
        put_str(&mut o, tags::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 100");
        put_str(&mut o, tags::PATIENT_NAME, VR::PN, "Müller");
        let latin1 = part10_bytes(&o).unwrap();
        assert!(latin1.windows(6).any(|w| w == b"M\xfcller"));
        put_str(&mut o, tags::CONTENT_DESCRIPTION, VR::LO, "β 42.5° 中文");
        let bytes = part10_bytes(&o).unwrap();
        let back = dicom_object::from_reader(&bytes[128..]).unwrap();
        assert_eq!(super::super::dataset::get_str(&back, tags::SPECIFIC_CHARACTER_SET).unwrap(), "ISO_IR 192");
        assert_eq!(super::super::dataset::get_str(&back, tags::CONTENT_DESCRIPTION).unwrap(), "β 42.5° 中文");
        assert_eq!(super::super::dataset::get_str(&back, tags::PATIENT_NAME).unwrap(), "Müller");
    }

    #[test]
    fn utc_now_is_well_formed() {
        let (d, t) = utc_now();
        assert_eq!(d.len(), 8);
        assert!(d.as_str() > "20240101");
        assert_eq!(t.len(), 6);
        assert!(t.as_str() < "240000");
    }
}
