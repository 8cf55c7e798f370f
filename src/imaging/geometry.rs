//! Where pixels are: 2D physical spacing (with where it came from) and the
//! 3D plane of each frame in patient coordinates (LPS, mm).

use dicom_dictionary_std::tags;

use super::attrs::{self, Ds};

/// Where a 2D pixel spacing came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpacingSource {
    /// Pixel Spacing (0028,0030), top level or Pixel Measures Sequence.
    PixelSpacing,
    /// Imager Pixel Spacing (0018,1164) at the detector, no magnification known.
    ImagerPixelSpacing,
    /// Imager Pixel Spacing divided by Estimated Radiographic Magnification
    /// Factor (0018,1114).
    ImagerPixelSpacingMagnificationCorrected,
    /// Physical Delta X/Y of a Sequence of Ultrasound Regions (0018,6011) item.
    UltrasoundRegion,
    /// Nothing usable: spacing values are NaN.
    Unknown,
}

/// Spacing of one 2D image in mm, in DICOM Pixel Spacing order.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spacing2D {
    /// Distance between the centres of adjacent rows (vertical), mm.
    pub row_mm: f64,
    /// Distance between the centres of adjacent columns (horizontal), mm.
    pub col_mm: f64,
    pub source: SpacingSource,
    /// Index of the ultrasound region used, for `SpacingSource::UltrasoundRegion`.
    pub ultrasound_region: Option<usize>,
}

impl Spacing2D {
    pub const UNKNOWN: Spacing2D = Spacing2D { row_mm: f64::NAN, col_mm: f64::NAN, source: SpacingSource::Unknown, ultrasound_region: None };

    pub fn is_known(&self) -> bool {
        self.source != SpacingSource::Unknown
    }

    /// `[row_mm, col_mm]` when known.
    pub fn mm(&self) -> Option<[f64; 2]> {
        self.is_known().then_some([self.row_mm, self.col_mm])
    }
}

fn positive_pair(v: Option<Vec<f64>>) -> Option<[f64; 2]> {
    let v = v?;
    match v.as_slice() {
        [a, b, ..] if a.is_finite() && b.is_finite() && *a > 0.0 && *b > 0.0 => Some([*a, *b]),
        [a] if a.is_finite() && *a > 0.0 => Some([*a, *a]),
        _ => None,
    }
}

/// Spacing of frame 0, ultrasound: the largest usable 2D region.
pub fn pixel_spacing(ds: &Ds) -> Spacing2D {
    pixel_spacing_at(ds, 0, None)
}

/// Spacing of `frame` (0-based). For ultrasound, `point` (`[column, row]`
/// in pixels) picks the region that contains it; without a point the
/// largest usable 2D region is used. When a point is given and no usable
/// region contains it, the spacing is unknown.
///
/// Order: Pixel Spacing (top level, then functional groups); Imager Pixel
/// Spacing (divided by the Estimated Radiographic Magnification Factor when
/// present); ultrasound regions; unknown.
pub fn pixel_spacing_at(ds: &Ds, frame: usize, point: Option<[f64; 2]>) -> Spacing2D {
    let known = |[r, c]: [f64; 2], source| Spacing2D { row_mm: r, col_mm: c, source, ultrasound_region: None };
    if let Some(ps) = positive_pair(attrs::frame_floats(ds, frame, tags::PIXEL_MEASURES_SEQUENCE, tags::PIXEL_SPACING)) {
        return known(ps, SpacingSource::PixelSpacing);
    }
    if let Some([r, c]) = positive_pair(attrs::floats(ds, tags::IMAGER_PIXEL_SPACING)) {
        return match attrs::float(ds, tags::ESTIMATED_RADIOGRAPHIC_MAGNIFICATION_FACTOR).filter(|m| *m > 0.0) {
            Some(m) => known([r / m, c / m], SpacingSource::ImagerPixelSpacingMagnificationCorrected),
            None => known([r, c], SpacingSource::ImagerPixelSpacing),
        };
    }
    let regions = ultrasound_regions(ds);
    let usable = regions.iter().filter(|r| r.spacing_mm().is_some() && r.spatial_format == 1);
    let chosen = match point {
        Some([x, y]) => usable.filter(|r| r.contains(x, y)).max_by_key(|r| r.area()),
        None => usable.max_by_key(|r| r.area()),
    };
    if let Some(r) = chosen {
        let [row, col] = r.spacing_mm().expect("filtered");
        return Spacing2D { row_mm: row, col_mm: col, source: SpacingSource::UltrasoundRegion, ultrasound_region: Some(r.index) };
    }
    Spacing2D::UNKNOWN
}

/// One item of the Sequence of Ultrasound Regions (0018,6011).
#[derive(Debug, Clone, PartialEq)]
pub struct UltrasoundRegion {
    /// Position in the sequence (0-based).
    pub index: usize,
    /// Region Spatial Format (0018,6012): 1 = 2D, 2 = M-mode, 3 = spectral, ...
    pub spatial_format: i64,
    /// Region Data Type (0018,6014): 1 = tissue, 2 = colour flow, ...
    pub data_type: i64,
    /// Region Location Min X0, Min Y0, Max X1, Max Y1 (0018,6018-601E), pixels, inclusive.
    pub min_x0: i64,
    pub min_y0: i64,
    pub max_x1: i64,
    pub max_y1: i64,
    /// Physical Units X/Y Direction (0018,6024/6026): 3 = cm, 4 = seconds, ...
    pub units_x: i64,
    pub units_y: i64,
    /// Physical Delta X/Y (0018,602C/602E), in the units above per pixel.
    pub delta_x: f64,
    pub delta_y: f64,
}

impl UltrasoundRegion {
    pub fn contains(&self, x: f64, y: f64) -> bool {
        x >= self.min_x0 as f64 && x <= self.max_x1 as f64 && y >= self.min_y0 as f64 && y <= self.max_y1 as f64
    }

    pub fn area(&self) -> i64 {
        (self.max_x1 - self.min_x0 + 1).max(0) * (self.max_y1 - self.min_y0 + 1).max(0)
    }

    /// `[row_mm, col_mm]` when both directions are in cm with a positive delta.
    pub fn spacing_mm(&self) -> Option<[f64; 2]> {
        let ok = |d: f64| d.is_finite() && d > 0.0;
        (self.units_x == 3 && self.units_y == 3 && ok(self.delta_x) && ok(self.delta_y)).then_some([self.delta_y * 10.0, self.delta_x * 10.0])
    }
}

pub fn ultrasound_regions(ds: &Ds) -> Vec<UltrasoundRegion> {
    let Some(items) = attrs::items(ds, tags::SEQUENCE_OF_ULTRASOUND_REGIONS) else {
        return Vec::new();
    };
    items
        .iter()
        .enumerate()
        .map(|(index, it)| {
            let i = |t| attrs::int(it, t).unwrap_or(0);
            UltrasoundRegion {
                index,
                spatial_format: i(tags::REGION_SPATIAL_FORMAT),
                data_type: i(tags::REGION_DATA_TYPE),
                min_x0: i(tags::REGION_LOCATION_MIN_X0),
                min_y0: i(tags::REGION_LOCATION_MIN_Y0),
                max_x1: i(tags::REGION_LOCATION_MAX_X1),
                max_y1: i(tags::REGION_LOCATION_MAX_Y1),
                units_x: i(tags::PHYSICAL_UNITS_X_DIRECTION),
                units_y: i(tags::PHYSICAL_UNITS_Y_DIRECTION),
                delta_x: attrs::float(it, tags::PHYSICAL_DELTA_X).unwrap_or(0.0),
                delta_y: attrs::float(it, tags::PHYSICAL_DELTA_Y).unwrap_or(0.0),
            }
        })
        .collect()
}

/// The plane of one frame in patient coordinates.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FramePlane {
    /// Image Position (Patient): centre of the first transmitted pixel, LPS mm.
    pub position: [f64; 3],
    /// Direction of increasing column index (along a row), IOP[0..3], unit.
    pub row_dir: [f64; 3],
    /// Direction of increasing row index (down a column), IOP[3..6], unit.
    pub col_dir: [f64; 3],
    /// Pixel Spacing `[row_mm, col_mm]` when present.
    pub pixel_spacing: Option<[f64; 2]>,
    pub slice_thickness: Option<f64>,
}

impl FramePlane {
    /// Unit slice normal, `row_dir x col_dir`.
    pub fn normal(&self) -> [f64; 3] {
        normalize(cross(self.row_dir, self.col_dir))
    }
}

/// Image Position/Orientation (Patient) and Pixel Spacing of `frame`
/// (0-based): Plane Position Sequence (0020,9113), Plane Orientation
/// Sequence (0020,9116) and Pixel Measures Sequence (0028,9110) of the
/// per-frame, then shared functional groups, then the top level.
/// `None` when the position or a usable orientation is missing.
pub fn frame_plane(ds: &Ds, frame: usize) -> Option<FramePlane> {
    let pos = attrs::frame_floats(ds, frame, tags::PLANE_POSITION_SEQUENCE, tags::IMAGE_POSITION_PATIENT)?;
    let iop = attrs::frame_floats(ds, frame, tags::PLANE_ORIENTATION_SEQUENCE, tags::IMAGE_ORIENTATION_PATIENT)?;
    if pos.len() < 3 || iop.len() < 6 || pos.iter().chain(iop.iter()).any(|v| !v.is_finite()) {
        return None;
    }
    let row = [iop[0], iop[1], iop[2]];
    let col = [iop[3], iop[4], iop[5]];
    if norm(row) < 1e-6 || norm(col) < 1e-6 || norm(cross(row, col)) < 1e-6 {
        return None;
    }
    let pixel_spacing = positive_pair(attrs::frame_floats(ds, frame, tags::PIXEL_MEASURES_SEQUENCE, tags::PIXEL_SPACING));
    let slice_thickness = attrs::functional_group(ds, frame, tags::PIXEL_MEASURES_SEQUENCE)
        .and_then(|m| attrs::float(m, tags::SLICE_THICKNESS))
        .or_else(|| attrs::float(ds, tags::SLICE_THICKNESS))
        .filter(|t| *t > 0.0);
    Some(FramePlane { position: [pos[0], pos[1], pos[2]], row_dir: normalize(row), col_dir: normalize(col), pixel_spacing, slice_thickness })
}

// ---- small vector algebra on [f64; 3] ----

pub fn dot(a: [f64; 3], b: [f64; 3]) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

pub fn cross(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]]
}

pub fn sub(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [a[0] - b[0], a[1] - b[1], a[2] - b[2]]
}

pub fn add(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [a[0] + b[0], a[1] + b[1], a[2] + b[2]]
}

pub fn scale(a: [f64; 3], s: f64) -> [f64; 3] {
    [a[0] * s, a[1] * s, a[2] * s]
}

pub fn norm(a: [f64; 3]) -> f64 {
    dot(a, a).sqrt()
}

pub fn normalize(a: [f64; 3]) -> [f64; 3] {
    let n = norm(a);
    if n == 0.0 {
        a
    } else {
        scale(a, 1.0 / n)
    }
}

/// Angle between two vectors, degrees.
pub fn angle_deg(a: [f64; 3], b: [f64; 3]) -> f64 {
    let c = dot(a, b) / (norm(a) * norm(b));
    c.clamp(-1.0, 1.0).acos().to_degrees()
}

/// Inverse of a 3x3 matrix (rows), `None` when singular.
pub fn invert3(m: [[f64; 3]; 3]) -> Option<[[f64; 3]; 3]> {
    let c00 = m[1][1] * m[2][2] - m[1][2] * m[2][1];
    let c01 = m[1][2] * m[2][0] - m[1][0] * m[2][2];
    let c02 = m[1][0] * m[2][1] - m[1][1] * m[2][0];
    let det = m[0][0] * c00 + m[0][1] * c01 + m[0][2] * c02;
    let scale_of = m.iter().flatten().fold(0f64, |a, v| a.max(v.abs()));
    if !det.is_finite() || det.abs() <= 1e-12 * scale_of.powi(3).max(f64::MIN_POSITIVE) {
        return None;
    }
    let inv_det = 1.0 / det;
    Some([
        [c00 * inv_det, (m[0][2] * m[2][1] - m[0][1] * m[2][2]) * inv_det, (m[0][1] * m[1][2] - m[0][2] * m[1][1]) * inv_det],
        [c01 * inv_det, (m[0][0] * m[2][2] - m[0][2] * m[2][0]) * inv_det, (m[0][2] * m[1][0] - m[0][0] * m[1][2]) * inv_det],
        [c02 * inv_det, (m[0][1] * m[2][0] - m[0][0] * m[2][1]) * inv_det, (m[0][0] * m[1][1] - m[0][1] * m[1][0]) * inv_det],
    ])
}

pub fn mat_vec(m: [[f64; 3]; 3], v: [f64; 3]) -> [f64; 3] {
    [dot(m[0], v), dot(m[1], v), dot(m[2], v)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use dicom_core::{DataElement, PrimitiveValue, VR};
    use dicom_object::InMemDicomObject;

    fn ds_with(elems: Vec<DataElement<InMemDicomObject>>) -> InMemDicomObject {
        InMemDicomObject::from_element_iter(elems)
    }

    fn ds_str(tag: dicom_core::Tag, vr: VR, s: &str) -> DataElement<InMemDicomObject> {
        DataElement::new(tag, vr, PrimitiveValue::from(s))
    }

    #[test]
    fn pixel_spacing_wins_then_imager_then_magnification() {
        let ds = ds_with(vec![ds_str(tags::PIXEL_SPACING, VR::DS, "0.5\\0.25"), ds_str(tags::IMAGER_PIXEL_SPACING, VR::DS, "0.2\\0.2")]);
        let s = pixel_spacing(&ds);
        assert_eq!((s.row_mm, s.col_mm, s.source), (0.5, 0.25, SpacingSource::PixelSpacing));

        let ds = ds_with(vec![ds_str(tags::IMAGER_PIXEL_SPACING, VR::DS, "0.2\\0.3")]);
        let s = pixel_spacing(&ds);
        assert_eq!((s.row_mm, s.col_mm, s.source), (0.2, 0.3, SpacingSource::ImagerPixelSpacing));

        let ds = ds_with(vec![
            ds_str(tags::PIXEL_SPACING, VR::DS, "0\\0"),
            ds_str(tags::IMAGER_PIXEL_SPACING, VR::DS, "0.2\\0.3"),
            ds_str(tags::ESTIMATED_RADIOGRAPHIC_MAGNIFICATION_FACTOR, VR::DS, "1.25"),
        ]);
        let s = pixel_spacing(&ds);
        assert_eq!(s.source, SpacingSource::ImagerPixelSpacingMagnificationCorrected);
        assert!((s.row_mm - 0.16).abs() < 1e-12 && (s.col_mm - 0.24).abs() < 1e-12);

        let s = pixel_spacing(&ds_with(vec![]));
        assert_eq!(s.source, SpacingSource::Unknown);
        assert!(s.mm().is_none() && s.row_mm.is_nan());
    }

    fn region(x0: u32, y0: u32, x1: u32, y1: u32, units: u16, dx: f64, dy: f64) -> InMemDicomObject {
        let us = |t, v: u16| DataElement::new(t, VR::US, PrimitiveValue::from(v));
        let ul = |t, v: u32| DataElement::new(t, VR::UL, PrimitiveValue::from(v));
        let fd = |t, v: f64| DataElement::new(t, VR::FD, PrimitiveValue::from(v));
        ds_with(vec![
            us(tags::REGION_SPATIAL_FORMAT, 1),
            us(tags::REGION_DATA_TYPE, 1),
            ul(tags::REGION_LOCATION_MIN_X0, x0),
            ul(tags::REGION_LOCATION_MIN_Y0, y0),
            ul(tags::REGION_LOCATION_MAX_X1, x1),
            ul(tags::REGION_LOCATION_MAX_Y1, y1),
            us(tags::PHYSICAL_UNITS_X_DIRECTION, units),
            us(tags::PHYSICAL_UNITS_Y_DIRECTION, units),
            fd(tags::PHYSICAL_DELTA_X, dx),
            fd(tags::PHYSICAL_DELTA_Y, dy),
        ])
    }

    #[test]
    fn ultrasound_regions_largest_or_containing_point() {
        use dicom_core::value::DataSetSequence;
        let seq = DataSetSequence::from(vec![
            region(0, 0, 99, 99, 3, 0.01, 0.02),
            region(100, 0, 399, 299, 3, 0.03, 0.03),
            region(400, 0, 499, 99, 4, 0.5, 0.0), // spectral/time axis: unusable
        ]);
        let ds = ds_with(vec![DataElement::new(tags::SEQUENCE_OF_ULTRASOUND_REGIONS, VR::SQ, seq)]);
        let s = pixel_spacing(&ds);
        assert_eq!(s.source, SpacingSource::UltrasoundRegion);
        assert_eq!(s.ultrasound_region, Some(1));
        assert!((s.row_mm - 0.3).abs() < 1e-12);
        let s = pixel_spacing_at(&ds, 0, Some([10.0, 10.0]));
        assert_eq!(s.ultrasound_region, Some(0));
        assert!((s.row_mm - 0.2).abs() < 1e-12 && (s.col_mm - 0.1).abs() < 1e-12);
        assert_eq!(pixel_spacing_at(&ds, 0, Some([450.0, 10.0])).source, SpacingSource::Unknown);
    }

    #[test]
    #[allow(clippy::needless_range_loop)]
    fn invert3_roundtrip() {
        let m = [[0.3, -1.2, 2.0], [1.0, 0.5, 0.0], [-0.7, 0.1, 4.0]];
        let inv = invert3(m).unwrap();
        for (i, row) in m.iter().enumerate() {
            for j in 0..3 {
                let v: f64 = (0..3).map(|k| row[k] * inv[k][j]).sum();
                assert!((v - if i == j { 1.0 } else { 0.0 }).abs() < 1e-12);
            }
        }
        assert!(invert3([[1.0, 2.0, 3.0], [2.0, 4.0, 6.0], [0.0, 1.0, 1.0]]).is_none());
    }
}
