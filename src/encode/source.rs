//! The input instances of a result: headers (no pixel data) and geometry.
//!
//! Encoders need only headers, never pixels: [`grid_of`] builds a label map's
//! [`SourceGrid`] from them (frames ordered along the slice normal, LPS
//! positions). Pipelines holding an imaging-layer `Volume` use
//! `SourceGrid::from_volume` instead; tests/encode_volume.rs checks that both
//! give the same SEG.

use std::path::{Path, PathBuf};

use dicom_dictionary_std::tags;
use dicom_object::{InMemDicomObject, OpenFileOptions};

use super::dataset::{first_item, get_f64, get_f64s, get_items, get_str, get_u32, Obj};
use super::error::EncodeError;
use crate::findings::{dot, GridFrame, SourceFrame, SourceGrid};

/// One input instance: header attributes, read up to Pixel Data.
#[derive(Debug, Clone)]
pub struct SourceInstance {
    pub path: PathBuf,
    pub obj: InMemDicomObject,
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
    pub study_instance_uid: String,
    pub series_instance_uid: String,
    pub modality: String,
    pub rows: Option<u16>,
    pub cols: Option<u16>,
    /// Number of Frames when present (multi-frame SOP classes).
    pub number_of_frames: Option<u32>,
    pub photometric: Option<String>,
    pub frame_of_reference_uid: Option<String>,
}

/// Geometry of one frame, from the classic attributes or the functional groups.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FrameGeometry {
    pub position: Option<[f64; 3]>,
    pub orientation: Option<[f64; 6]>,
    pub pixel_spacing: Option<[f64; 2]>,
    pub slice_thickness: Option<f64>,
}

impl SourceInstance {
    pub fn open(path: &Path) -> Result<SourceInstance, EncodeError> {
        let file = path.display().to_string();
        let fobj = OpenFileOptions::new()
            .read_until(tags::PIXEL_DATA)
            .open_file(path)
            .map_err(|e| EncodeError::Source { file: file.clone(), reason: format!("not a readable DICOM file: {e}") })?;
        Self::from_object(fobj.into_inner(), path)
    }

    /// From a data set already in memory (`path` only names it in errors).
    pub fn from_object(obj: InMemDicomObject, path: &Path) -> Result<SourceInstance, EncodeError> {
        let file = path.display().to_string();
        let need = |tag, name: &str| {
            get_str(&obj, tag).ok_or_else(|| EncodeError::SourceAttribute {
                file: file.clone(),
                attribute: name.to_string(),
                reason: "missing or empty (Type 1)".into(),
            })
        };
        let sop_class_uid = need(tags::SOP_CLASS_UID, "SOPClassUID (0008,0016)")?;
        let sop_instance_uid = need(tags::SOP_INSTANCE_UID, "SOPInstanceUID (0008,0018)")?;
        let study_instance_uid = need(tags::STUDY_INSTANCE_UID, "StudyInstanceUID (0020,000D)")?;
        let series_instance_uid = need(tags::SERIES_INSTANCE_UID, "SeriesInstanceUID (0020,000E)")?;
        let u16_of = |tag| get_u32(&obj, tag).and_then(|v| u16::try_from(v).ok()).filter(|v| *v > 0);
        Ok(SourceInstance {
            path: path.to_path_buf(),
            modality: get_str(&obj, tags::MODALITY).unwrap_or_else(|| "OT".into()),
            rows: u16_of(tags::ROWS),
            cols: u16_of(tags::COLUMNS),
            number_of_frames: get_u32(&obj, tags::NUMBER_OF_FRAMES).filter(|n| *n > 0),
            photometric: get_str(&obj, tags::PHOTOMETRIC_INTERPRETATION),
            frame_of_reference_uid: get_str(&obj, tags::FRAME_OF_REFERENCE_UID),
            sop_class_uid,
            sop_instance_uid,
            study_instance_uid,
            series_instance_uid,
            obj,
        })
    }

    pub fn file(&self) -> String {
        self.path.display().to_string()
    }

    pub fn is_image(&self) -> bool {
        self.rows.is_some() && self.cols.is_some()
    }

    /// Frames in the instance (1 for a single-frame image).
    pub fn frames(&self) -> u32 {
        self.number_of_frames.unwrap_or(1)
    }

    /// True when frame references carry a frame number: more than one frame,
    /// or a multi-frame SOP class (validators refuse Referenced Frame Number
    /// for an instance of a single-frame class).
    pub fn is_multiframe(&self) -> bool {
        match self.number_of_frames {
            Some(n) if n > 1 => true,
            Some(_) => is_multiframe_class(&self.sop_class_uid),
            None => false,
        }
    }

    pub fn is_enhanced(&self) -> bool {
        get_items(&self.obj, tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE).is_some_and(|i| !i.is_empty())
    }

    pub fn frame_ref(&self, frame: u32) -> SourceFrame {
        SourceFrame {
            sop_class_uid: self.sop_class_uid.clone(),
            sop_instance_uid: self.sop_instance_uid.clone(),
            frame_number: self.is_multiframe().then_some(frame),
        }
    }

    /// Geometry of frame `frame` (1-based).
    pub fn frame_geometry(&self, frame: u32) -> FrameGeometry {
        let o = &self.obj;
        let mut g = classic_geometry(o);
        if self.is_enhanced() {
            let shared = first_item(o, tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE);
            let per = get_items(o, tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE).and_then(|i| i.get(frame as usize - 1));
            for group in [shared, per].into_iter().flatten() {
                if let Some(p) = first_item(group, tags::PLANE_POSITION_SEQUENCE).and_then(|i| vec3(get_f64s(i, tags::IMAGE_POSITION_PATIENT))) {
                    g.position = Some(p);
                }
                if let Some(v) = first_item(group, tags::PLANE_ORIENTATION_SEQUENCE).and_then(|i| vec6(get_f64s(i, tags::IMAGE_ORIENTATION_PATIENT))) {
                    g.orientation = Some(v);
                }
                if let Some(pm) = first_item(group, tags::PIXEL_MEASURES_SEQUENCE) {
                    if let Some(s) = vec2(get_f64s(pm, tags::PIXEL_SPACING)) {
                        g.pixel_spacing = Some(s);
                    }
                    if let Some(t) = get_f64(pm, tags::SLICE_THICKNESS) {
                        g.slice_thickness = Some(t);
                    }
                }
            }
        }
        g
    }

    /// Pixel spacing for measurements on the image plane: Pixel Spacing, else
    /// Imager Pixel Spacing (projection radiography), else none.
    pub fn display_pixel_spacing(&self) -> Option<[f64; 2]> {
        self.frame_geometry(1).pixel_spacing.or_else(|| vec2(get_f64s(&self.obj, tags::IMAGER_PIXEL_SPACING)))
    }
}

/// Storage SOP classes whose instances are multi-frame by definition.
pub fn is_multiframe_class(uid: &str) -> bool {
    const SUFFIXES: &[&str] = &[
        "2.1", "2.2", "3.1", "4.1", "4.3", "4.4", "6.2", "6.3", "7.1", "7.2", "7.3", "7.4", "12.1", "12.1.1", "12.2", "12.2.1", "12.3", "13.1.3", "13.1.4",
        "13.1.5", "14.1", "14.2", "20", "30", "66.4", "77.1.1.1", "77.1.2.1", "77.1.4.1", "77.1.5.4", "77.1.5.5", "77.1.5.7", "77.1.5.8", "77.1.6", "128.1",
        "130", "481.1", "481.2",
    ];
    uid.strip_prefix("1.2.840.10008.5.1.4.1.1.").is_some_and(|s| SUFFIXES.contains(&s))
}

fn classic_geometry(o: &Obj) -> FrameGeometry {
    FrameGeometry {
        position: vec3(get_f64s(o, tags::IMAGE_POSITION_PATIENT)),
        orientation: vec6(get_f64s(o, tags::IMAGE_ORIENTATION_PATIENT)),
        pixel_spacing: vec2(get_f64s(o, tags::PIXEL_SPACING)),
        slice_thickness: get_f64(o, tags::SLICE_THICKNESS),
    }
}

fn vec2(v: Option<Vec<f64>>) -> Option<[f64; 2]> {
    v.filter(|v| v.len() >= 2 && v[0] > 0.0 && v[1] > 0.0).map(|v| [v[0], v[1]])
}

fn vec3(v: Option<Vec<f64>>) -> Option<[f64; 3]> {
    v.filter(|v| v.len() >= 3).map(|v| [v[0], v[1], v[2]])
}

fn vec6(v: Option<Vec<f64>>) -> Option<[f64; 6]> {
    v.filter(|v| v.len() >= 6).map(|v| [v[0], v[1], v[2], v[3], v[4], v[5]])
}

/// Opens every file; refuses an empty list.
pub fn open_all(paths: &[PathBuf]) -> Result<Vec<SourceInstance>, EncodeError> {
    if paths.is_empty() {
        return Err(EncodeError::invalid("inputs", "no input files"));
    }
    paths.iter().map(|p| SourceInstance::open(p)).collect()
}

/// Refuses inputs from more than one study (results belong to one study).
pub fn check_one_study(sources: &[SourceInstance]) -> Result<(), EncodeError> {
    let first = sources.first().ok_or_else(|| EncodeError::invalid("inputs", "no input instances"))?;
    for s in sources {
        if s.study_instance_uid != first.study_instance_uid {
            return Err(EncodeError::geometry(&first.study_instance_uid, format!("{} belongs to another study ({})", s.file(), s.study_instance_uid)));
        }
    }
    Ok(())
}

/// The pixel grid of one series of images (or one multi-frame image), frames
/// ordered along the slice normal when the images have patient geometry,
/// otherwise by Instance Number then frame.
pub fn grid_of(sources: &[SourceInstance]) -> Result<SourceGrid, EncodeError> {
    check_one_study(sources)?;
    let first = &sources[0];
    let study = first.study_instance_uid.clone();
    let (rows, cols) = match (first.rows, first.cols) {
        (Some(r), Some(c)) => (r, c),
        _ => return Err(EncodeError::SourceAttribute { file: first.file(), attribute: "Rows/Columns".into(), reason: "not an image".into() }),
    };
    let mut frames = Vec::new();
    let mut geoms = Vec::new();
    let mut ordered: Vec<&SourceInstance> = sources.iter().collect();
    ordered.sort_by_key(|s| get_u32(&s.obj, tags::INSTANCE_NUMBER).unwrap_or(0));
    for s in &ordered {
        if s.series_instance_uid != first.series_instance_uid {
            return Err(EncodeError::geometry(
                &study,
                format!("{} is in another series ({}); a label map lives on one series", s.file(), s.series_instance_uid),
            ));
        }
        if s.rows != Some(rows) || s.cols != Some(cols) {
            return Err(EncodeError::geometry(
                &study,
                format!("{} is {} x {}, the series is {rows} x {cols} (rows x columns)", s.file(), s.rows.unwrap_or(0), s.cols.unwrap_or(0)),
            ));
        }
        for f in 1..=s.frames() {
            let g = s.frame_geometry(f);
            frames.push(GridFrame { source: s.frame_ref(f), position: g.position });
            geoms.push(g);
        }
    }
    let for_uid = first.frame_of_reference_uid.clone();
    let orientation = geoms[0].orientation;
    let spatial = for_uid.is_some() && orientation.is_some() && geoms.iter().all(|g| g.position.is_some() && g.pixel_spacing.is_some());
    let mut grid = SourceGrid {
        study_instance_uid: study.clone(),
        series_instance_uid: first.series_instance_uid.clone(),
        rows,
        cols,
        pixel_spacing: if spatial { geoms[0].pixel_spacing } else { None },
        slice_thickness: if spatial { geoms[0].slice_thickness } else { None },
        orientation: if spatial { orientation } else { None },
        frame_of_reference_uid: if spatial { for_uid } else { None },
        frames,
    };
    if spatial {
        let o = orientation.unwrap();
        for (g, f) in geoms.iter().zip(&grid.frames) {
            let same = g.orientation.is_some_and(|v| v.iter().zip(o).all(|(a, b)| (a - b).abs() < 1e-4));
            let spacing_same = g
                .pixel_spacing
                .is_some_and(|p| (p[0] - geoms[0].pixel_spacing.unwrap()[0]).abs() < 1e-4 && (p[1] - geoms[0].pixel_spacing.unwrap()[1]).abs() < 1e-4);
            if !same || !spacing_same {
                return Err(EncodeError::geometry(
                    &study,
                    format!("frame {:?} of {} has another orientation or pixel spacing than the first frame", f.source.frame_number, f.source.sop_instance_uid),
                ));
            }
        }
        for s in sources {
            if s.frame_of_reference_uid != grid.frame_of_reference_uid {
                return Err(EncodeError::geometry(&study, format!("{} has another Frame of Reference", s.file())));
            }
        }
        let n = grid.normal().ok_or_else(|| EncodeError::geometry(&study, "Image Orientation (Patient) is degenerate"))?;
        let mut keyed: Vec<(f64, GridFrame)> = grid.frames.drain(..).map(|f| (dot(f.position.unwrap(), n), f)).collect();
        keyed.sort_by(|a, b| a.0.total_cmp(&b.0));
        for w in keyed.windows(2) {
            if (w[1].0 - w[0].0).abs() < 1e-3 {
                return Err(EncodeError::geometry(
                    &study,
                    format!(
                        "two frames at the same position ({} and {}); one label map cannot cover both",
                        w[0].1.source.sop_instance_uid, w[1].1.source.sop_instance_uid
                    ),
                ));
            }
        }
        grid.frames = keyed.into_iter().map(|(_, f)| f).collect();
    }
    Ok(grid)
}
