//! Label maps from NIfTI files onto a DICOM series grid.
//!
//! Like dcmqi: a NIfTI voxel (i, j, k) is at `A * (i, j, k, 1)` in RAS
//! millimetres (A = sform if set, else qform); DICOM patient space is LPS, so
//! x and y change sign. Every pixel centre of the series is mapped into the
//! NIfTI voxel grid and takes the nearest voxel's label; a series pixel that
//! falls outside the label map is an error (the label map must cover the
//! series). Any voxel order / orientation of the NIfTI therefore gives the
//! same result.
//!
//! Images without patient geometry (ultrasound, projection X-ray): the NIfTI
//! must have exactly (columns, rows[, frames]) voxels and is read by index
//! (i = column, j = row, k = frame); its affine is ignored.
//!
//! The other way, [`write_nifti`] stores a pipeline's label map on its source
//! grid (i = column, j = row, k = frame) with that grid's affine, so that it
//! opens over the series in 3D Slicer or ITK-SNAP and reads back here to the
//! same labels.

use std::io::Write;
use std::path::Path;

use super::error::EncodeError;
use crate::findings::{LabelMap, SourceGrid};

/// A label volume: dims (i, j, k), values with i fastest, and the voxel to
/// RAS affine (3 x 4) when the file has one.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelVolume {
    pub dims: [usize; 3],
    pub values: Vec<u16>,
    pub affine: Option<[[f64; 4]; 3]>,
}

impl LabelVolume {
    pub fn get(&self, i: usize, j: usize, k: usize) -> u16 {
        self.values[i + self.dims[0] * (j + self.dims[1] * k)]
    }
}

/// Reads a NIfTI-1/2 label map (.nii or .nii.gz); values must be integers 0..=65535.
pub fn read_nifti(path: &Path) -> Result<LabelVolume, EncodeError> {
    let file = path.display().to_string();
    let err = |reason: String| EncodeError::Source { file: file.clone(), reason };
    let vol = crate::imaging::nifti::read_nifti(path).map_err(|e| err(e.to_string()))?;
    let mut values = Vec::with_capacity(vol.values.len());
    for (n, &v) in vol.values.iter().enumerate() {
        if !(0.0..=65535.0).contains(&v) || v.fract() != 0.0 {
            let (i, j, k) = (n % vol.dims[0], (n / vol.dims[0]) % vol.dims[1], n / (vol.dims[0] * vol.dims[1]));
            return Err(err(format!("voxel ({i}, {j}, {k}) = {v}: labels must be integers 0..=65535")));
        }
        values.push(v as u16);
    }
    Ok(LabelVolume { dims: vol.dims, values, affine: vol.affine })
}

/// Labels of every grid pixel (frame-major, row-major), nearest neighbour.
pub fn resample_to_grid(vol: &LabelVolume, grid: &SourceGrid) -> Result<Vec<u16>, EncodeError> {
    let study = &grid.study_instance_uid;
    let n = grid.frames.len() * grid.frame_len();
    if !grid.has_patient_geometry() {
        let want = [grid.cols as usize, grid.rows as usize, grid.frames.len()];
        if vol.dims != want {
            return Err(EncodeError::geometry(
                study,
                format!(
                    "the images have no patient geometry, so the label map must have exactly (columns, rows, frames) = {want:?} voxels; it has {:?}",
                    vol.dims
                ),
            ));
        }
        let mut out = Vec::with_capacity(n);
        for k in 0..want[2] {
            for j in 0..want[1] {
                for i in 0..want[0] {
                    out.push(vol.get(i, j, k));
                }
            }
        }
        return Ok(out);
    }
    let a = vol.affine.ok_or_else(|| EncodeError::geometry(study, "the label map has no sform or qform: cannot place it in patient space"))?;
    let inv = invert3([[a[0][0], a[0][1], a[0][2]], [a[1][0], a[1][1], a[1][2]], [a[2][0], a[2][1], a[2][2]]])
        .ok_or_else(|| EncodeError::geometry(study, "the label map's affine is singular"))?;
    let t = [a[0][3], a[1][3], a[2][3]];
    let mut out = Vec::with_capacity(n);
    let mut outside = 0usize;
    let mut first_outside = None;
    const TOL: f64 = 1e-3;
    for f in 0..grid.frames.len() {
        for r in 0..grid.rows as usize {
            for c in 0..grid.cols as usize {
                let p = grid.pixel_to_patient(f, c as f64, r as f64).expect("spatial grid");
                let ras = [-p[0] - t[0], -p[1] - t[1], p[2] - t[2]];
                let v = [
                    inv[0][0] * ras[0] + inv[0][1] * ras[1] + inv[0][2] * ras[2],
                    inv[1][0] * ras[0] + inv[1][1] * ras[1] + inv[1][2] * ras[2],
                    inv[2][0] * ras[0] + inv[2][1] * ras[1] + inv[2][2] * ras[2],
                ];
                let mut ijk = [0usize; 3];
                let mut inside = true;
                for d in 0..3 {
                    let x = v[d];
                    if x < -0.5 - TOL || x > vol.dims[d] as f64 - 0.5 + TOL {
                        inside = false;
                        break;
                    }
                    ijk[d] = (x.round().max(0.0) as usize).min(vol.dims[d] - 1);
                }
                if inside {
                    out.push(vol.get(ijk[0], ijk[1], ijk[2]));
                } else {
                    outside += 1;
                    first_outside.get_or_insert((f, r, c, v));
                    out.push(0);
                }
            }
        }
    }
    if outside > 0 {
        let (f, r, c, v) = first_outside.unwrap();
        return Err(EncodeError::geometry(
            study,
            format!(
                "the label map does not cover the series: {outside} of {n} pixel centres fall outside it (first: frame {}, row {r}, column {c} -> voxel ({:.2}, {:.2}, {:.2}) of {:?})",
                f + 1,
                v[0],
                v[1],
                v[2],
                vol.dims
            ),
        ));
    }
    Ok(out)
}

/// Writes `labels` as a NIfTI-1 label map (uint16, intent LABEL; `.nii.gz`
/// compressed), durably. Oriented grids get their voxel → RAS affine as the
/// sform; a grid with uneven slice spacing is refused, since NIfTI has one step.
pub fn write_nifti(labels: &LabelMap, path: &Path) -> Result<(), EncodeError> {
    let grid = &labels.grid;
    let (cols, rows, frames) = (grid.cols as usize, grid.rows as usize, grid.frames.len());
    if frames == 0 || labels.labels.len() != frames * grid.frame_len() {
        return Err(EncodeError::invalid("labels", format!("{} values for {frames} frames of {rows} x {cols}", labels.labels.len())));
    }
    let affine = if grid.has_patient_geometry() { Some(grid_affine_ras(grid)?) } else { None };
    let mut h = vec![0u8; 352];
    let put_i16 = |h: &mut Vec<u8>, at: usize, v: i16| h[at..at + 2].copy_from_slice(&v.to_le_bytes());
    let put_f32 = |h: &mut Vec<u8>, at: usize, v: f32| h[at..at + 4].copy_from_slice(&v.to_le_bytes());
    h[0..4].copy_from_slice(&348i32.to_le_bytes());
    h[38] = b'r';
    for (n, d) in [3, cols, rows, frames, 1, 1, 1, 1].into_iter().enumerate() {
        let d = i16::try_from(d).map_err(|_| EncodeError::invalid("labels", format!("dimension {d} is too large for NIfTI-1")))?;
        put_i16(&mut h, 40 + 2 * n, d);
    }
    put_i16(&mut h, 68, 1002); // intent: NIFTI_INTENT_LABEL
    put_i16(&mut h, 70, 512); // datatype: NIFTI_TYPE_UINT16
    put_i16(&mut h, 72, 16); // bitpix
    let spacing = match &affine {
        Some(a) => [0, 1, 2].map(|c| (a[0][c] * a[0][c] + a[1][c] * a[1][c] + a[2][c] * a[2][c]).sqrt()),
        None => [1.0; 3],
    };
    for (n, v) in [1.0, spacing[0], spacing[1], spacing[2], 1.0, 1.0, 1.0, 1.0].into_iter().enumerate() {
        put_f32(&mut h, 76 + 4 * n, v as f32);
    }
    put_f32(&mut h, 108, 352.0); // vox_offset
    put_f32(&mut h, 112, 1.0); // scl_slope
    h[123] = 2; // xyzt_units: mm
    put_f32(&mut h, 124, labels.labels.iter().copied().max().unwrap_or(0) as f32); // cal_max
    let descrip = format!("ainode label map, series {}", grid.series_instance_uid);
    let descrip = descrip.as_bytes();
    h[148..148 + descrip.len().min(79)].copy_from_slice(&descrip[..descrip.len().min(79)]);
    if let Some(a) = affine {
        put_i16(&mut h, 254, 1); // sform_code: NIFTI_XFORM_SCANNER_ANAT
        for (r, row) in a.iter().enumerate() {
            for (c, v) in row.iter().enumerate() {
                put_f32(&mut h, 280 + 16 * r + 4 * c, *v as f32);
            }
        }
    }
    h[344..348].copy_from_slice(b"n+1\0");
    // bytes 348..352: no extensions
    let mut bytes = h;
    bytes.reserve(2 * labels.labels.len());
    for v in &labels.labels {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    if path.extension().is_some_and(|e| e == "gz") {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        let io = |error| EncodeError::Io { path: path.display().to_string(), error };
        gz.write_all(&bytes).map_err(io)?;
        bytes = gz.finish().map_err(io)?;
    }
    super::common::write_durably(path, &bytes)
}

/// Voxel (column, row, frame) → RAS mm of an oriented grid whose frames are
/// evenly spaced (every step within 1 % of the first; the mean step is used).
fn grid_affine_ras(grid: &SourceGrid) -> Result<[[f64; 4]; 3], EncodeError> {
    let study = &grid.study_instance_uid;
    let (o, [dr, dc]) = (grid.orientation.expect("oriented"), grid.pixel_spacing.expect("oriented"));
    let pos: Vec<[f64; 3]> = grid.frames.iter().map(|f| f.position.expect("oriented")).collect();
    let step = if pos.len() > 1 {
        let n = (pos.len() - 1) as f64;
        let step = [0, 1, 2].map(|d| (pos[pos.len() - 1][d] - pos[0][d]) / n);
        let first = [0, 1, 2].map(|d| pos[1][d] - pos[0][d]);
        let len = first.iter().map(|v| v * v).sum::<f64>().sqrt();
        for (k, w) in pos.windows(2).enumerate() {
            let off = [0, 1, 2].map(|d| w[1][d] - w[0][d] - first[d]).iter().map(|v| v * v).sum::<f64>().sqrt();
            if len < 1e-6 || off > 0.01 * len {
                return Err(EncodeError::geometry(
                    study,
                    format!(
                        "series {}: frames {} and {} are not one even step apart; a NIfTI label map needs even slice spacing",
                        grid.series_instance_uid,
                        k + 1,
                        k + 2
                    ),
                ));
            }
        }
        step
    } else {
        let n = grid.normal().ok_or_else(|| EncodeError::geometry(study, "the image orientation has no normal"))?;
        n.map(|v| v * grid.slice_thickness.filter(|t| *t > 0.0).unwrap_or(1.0))
    };
    let lps = [0, 1, 2].map(|d| [o[d] * dc, o[3 + d] * dr, step[d], pos[0][d]]);
    Ok([lps[0].map(|v| -v), lps[1].map(|v| -v), lps[2]])
}

fn invert3(m: [[f64; 3]; 3]) -> Option<[[f64; 3]; 3]> {
    let det = m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1]) - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
        + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0]);
    if det.abs() < 1e-12 {
        return None;
    }
    let d = 1.0 / det;
    Some([
        [(m[1][1] * m[2][2] - m[1][2] * m[2][1]) * d, (m[0][2] * m[2][1] - m[0][1] * m[2][2]) * d, (m[0][1] * m[1][2] - m[0][2] * m[1][1]) * d],
        [(m[1][2] * m[2][0] - m[1][0] * m[2][2]) * d, (m[0][0] * m[2][2] - m[0][2] * m[2][0]) * d, (m[0][2] * m[1][0] - m[0][0] * m[1][2]) * d],
        [(m[1][0] * m[2][1] - m[1][1] * m[2][0]) * d, (m[0][1] * m[2][0] - m[0][0] * m[2][1]) * d, (m[0][0] * m[1][1] - m[0][1] * m[1][0]) * d],
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::findings::{GridFrame, SourceFrame};

    /// 4 columns x 3 rows x 2 slices, axial, spacing (row 0.5, col 0.25), slices 2 mm apart.
    fn grid() -> SourceGrid {
        SourceGrid {
            study_instance_uid: "1.2".into(),
            series_instance_uid: "1.3".into(),
            rows: 3,
            cols: 4,
            pixel_spacing: Some([0.5, 0.25]),
            slice_thickness: Some(2.0),
            orientation: Some([1.0, 0.0, 0.0, 0.0, 1.0, 0.0]),
            frame_of_reference_uid: Some("1.4".into()),
            frames: (0..2)
                .map(|k| GridFrame {
                    source: SourceFrame { sop_class_uid: "1.2.840.10008.5.1.4.1.1.2".into(), sop_instance_uid: format!("1.5.{k}"), frame_number: None },
                    position: Some([10.0, 20.0, -30.0 + 2.0 * k as f64]),
                })
                .collect(),
        }
    }

    /// Distinct label per pixel of the grid: 1 + index.
    fn expected() -> Vec<u16> {
        (0..24).map(|i| i as u16 + 1).collect()
    }

    /// The grid stored in LPS voxel order (i = column, j = row, k = slice), as dcm2niix does
    /// not: its affine flips x and y into RAS.
    fn lps_volume() -> LabelVolume {
        LabelVolume { dims: [4, 3, 2], values: expected(), affine: Some([[-0.25, 0.0, 0.0, -10.0], [0.0, -0.5, 0.0, -20.0], [0.0, 0.0, 2.0, -30.0]]) }
    }

    /// The same labels stored in RAS voxel order: i runs right-to-left reversed (i' = 3 - col),
    /// j reversed (j' = 2 - row), slices reversed too, with a positive-diagonal affine.
    fn ras_volume() -> LabelVolume {
        let mut values = vec![0u16; 24];
        for k in 0..2 {
            for r in 0..3 {
                for c in 0..4 {
                    let (i, j, kk) = (3 - c, 2 - r, 1 - k);
                    values[i + 4 * (j + 3 * kk)] = expected()[(k * 3 + r) * 4 + c];
                }
            }
        }
        // voxel (0,0,0) is column 3, row 2, slice 1: LPS (10.75, 21, -28) -> RAS (-10.75, -21, -28)
        LabelVolume { dims: [4, 3, 2], values, affine: Some([[0.25, 0.0, 0.0, -10.75], [0.0, 0.5, 0.0, -21.0], [0.0, 0.0, -2.0, -28.0]]) }
    }

    #[test]
    fn lps_and_ras_label_maps_give_the_same_labels() {
        let g = grid();
        assert_eq!(resample_to_grid(&lps_volume(), &g).unwrap(), expected());
        assert_eq!(resample_to_grid(&ras_volume(), &g).unwrap(), expected());
    }

    #[test]
    fn finer_label_map_is_resampled_by_nearest() {
        // twice as fine in-plane, same extent: voxel centres at -1/4 and +1/4 of a pixel
        let g = grid();
        let mut values = vec![0u16; 8 * 6 * 2];
        for k in 0..2 {
            for j in 0..6 {
                for i in 0..8 {
                    values[i + 8 * (j + 6 * k)] = expected()[(k * 3 + j / 2) * 4 + i / 2];
                }
            }
        }
        // voxel (0,0,0) centre at LPS (10 - 0.0625, 20 - 0.125, -30)
        let v = LabelVolume { dims: [8, 6, 2], values, affine: Some([[-0.125, 0.0, 0.0, -9.9375], [0.0, -0.25, 0.0, -19.875], [0.0, 0.0, 2.0, -30.0]]) };
        // pixel centres fall exactly between two fine voxels; rounding picks the upper one,
        // which belongs to the same coarse pixel
        assert_eq!(resample_to_grid(&v, &g).unwrap(), expected());
    }

    #[test]
    fn label_map_that_does_not_cover_the_series_is_refused() {
        let g = grid();
        let mut v = lps_volume();
        v.dims = [4, 3, 1];
        v.values.truncate(12);
        let e = resample_to_grid(&v, &g).unwrap_err().to_string();
        assert!(e.contains("does not cover") && e.contains("12 of 24"), "{e}");
        let mut shifted = lps_volume();
        shifted.affine.as_mut().unwrap()[0][3] = -20.0;
        assert!(resample_to_grid(&shifted, &g).is_err());
    }

    #[test]
    fn written_label_maps_read_back_to_the_same_labels() {
        let dir = tempfile::tempdir().unwrap();
        let mut flat = grid();
        flat.frame_of_reference_uid = None;
        flat.orientation = None;
        for (g, name) in [(grid(), "a.nii"), (grid(), "a.nii.gz"), (flat, "flat.nii")] {
            let path = dir.path().join(name);
            write_nifti(&LabelMap::new(g.clone(), expected()).unwrap(), &path).unwrap();
            let v = read_nifti(&path).unwrap();
            assert_eq!(v.dims, [4, 3, 2], "{name}");
            assert_eq!(v.values, expected(), "{name}: i = column, j = row, k = frame");
            assert_eq!(resample_to_grid(&v, &g).unwrap(), expected(), "{name}");
        }
        assert_eq!(read_nifti(&dir.path().join("a.nii")).unwrap().affine, lps_volume().affine);
    }

    #[test]
    fn uneven_slices_are_refused_for_nifti() {
        let mut g = grid();
        g.frames.push(GridFrame { source: g.frames[0].source.clone(), position: Some([10.0, 20.0, -25.0]) });
        let labels = LabelMap::new(g, (0..36).map(|i| i as u16).collect()).unwrap();
        let e = write_nifti(&labels, &tempfile::tempdir().unwrap().path().join("u.nii")).unwrap_err().to_string();
        assert!(e.contains("frames 2 and 3") && e.contains("even slice spacing"), "{e}");
    }

    #[test]
    fn no_affine_or_no_geometry() {
        let g = grid();
        let mut v = lps_volume();
        v.affine = None;
        assert!(resample_to_grid(&v, &g).unwrap_err().to_string().contains("no sform or qform"));
        let mut flat = grid();
        flat.frame_of_reference_uid = None;
        flat.orientation = None;
        assert_eq!(resample_to_grid(&v, &flat).unwrap(), expected());
        v.dims = [3, 4, 2];
        assert!(resample_to_grid(&v, &flat).unwrap_err().to_string().contains("exactly (columns, rows, frames)"));
    }
}
