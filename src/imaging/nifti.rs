//! NIfTI-1/2 volumes (.nii, .nii.gz): voxels with i fastest and the voxel →
//! RAS affine from the sform, else the qform. Label maps (`encode::labelmap`)
//! and CT series written from NIfTI (`synth::write_ct_series`) read them here.

use std::path::Path;

use nifti::{IntoNdArray, NiftiObject, NiftiVolume as _, ReaderOptions};

use super::error::{ImagingError, Result};

#[derive(Debug, Clone, PartialEq)]
pub struct NiftiVolume {
    /// (i, j, k) sizes.
    pub dims: [usize; 3],
    /// Values (scaled by scl_slope / scl_inter), i fastest, then j, then k.
    pub values: Vec<f64>,
    /// Voxel (i, j, k) → RAS mm, when the file has an sform or a qform.
    pub affine: Option<[[f64; 4]; 3]>,
}

impl NiftiVolume {
    pub fn get(&self, i: usize, j: usize, k: usize) -> f64 {
        self.values[i + self.dims[0] * (j + self.dims[1] * k)]
    }
}

fn error(path: &Path, reason: String) -> ImagingError {
    ImagingError::Open { path: path.to_path_buf(), reason }
}

/// Reads a 2D or 3D NIfTI file.
pub fn read_nifti(path: &Path) -> Result<NiftiVolume> {
    let obj = ReaderOptions::new().read_file(path).map_err(|e| error(path, format!("not a readable NIfTI file: {e}")))?;
    let h = obj.header().clone();
    let vol = obj.into_volume();
    let shape: Vec<usize> = vol.dim().iter().map(|d| *d as usize).collect();
    if shape.is_empty() || shape.len() > 7 || shape.iter().skip(3).any(|d| *d != 1) {
        return Err(error(path, format!("a 2D or 3D volume is needed (dims {shape:?})")));
    }
    let dims = [shape[0], *shape.get(1).unwrap_or(&1), *shape.get(2).unwrap_or(&1)];
    let arr = vol.into_ndarray::<f64>().map_err(|e| error(path, format!("cannot read voxels: {e}")))?;
    let mut values = Vec::with_capacity(dims.iter().product());
    let mut idx = vec![0usize; shape.len()];
    for k in 0..dims[2] {
        for j in 0..dims[1] {
            for i in 0..dims[0] {
                idx[0] = i;
                if shape.len() > 1 {
                    idx[1] = j;
                }
                if shape.len() > 2 {
                    idx[2] = k;
                }
                values.push(arr[idx.as_slice()]);
            }
        }
    }
    let affine = if h.sform_code > 0 {
        Some([h.srow_x.map(|v| v as f64), h.srow_y.map(|v| v as f64), h.srow_z.map(|v| v as f64)])
    } else if h.qform_code > 0 {
        Some(qform_affine(&h))
    } else {
        None
    };
    Ok(NiftiVolume { dims, values, affine })
}

fn qform_affine(h: &nifti::NiftiHeader) -> [[f64; 4]; 3] {
    let (b, c, d) = (h.quatern_b as f64, h.quatern_c as f64, h.quatern_d as f64);
    let a = (1.0 - (b * b + c * c + d * d)).max(0.0).sqrt();
    let r = [
        [a * a + b * b - c * c - d * d, 2.0 * (b * c - a * d), 2.0 * (b * d + a * c)],
        [2.0 * (b * c + a * d), a * a + c * c - b * b - d * d, 2.0 * (c * d - a * b)],
        [2.0 * (b * d - a * c), 2.0 * (c * d + a * b), a * a + d * d - c * c - b * b],
    ];
    let qfac = if h.pixdim[0] < 0.0 { -1.0 } else { 1.0 };
    let s = [h.pixdim[1] as f64, h.pixdim[2] as f64, h.pixdim[3] as f64 * qfac];
    let t = [h.quatern_x as f64, h.quatern_y as f64, h.quatern_z as f64];
    let mut m = [[0.0; 4]; 3];
    for row in 0..3 {
        for col in 0..3 {
            m[row][col] = r[row][col] * s[col];
        }
        m[row][3] = t[row];
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qform_is_used_without_sform() {
        // 180 degrees about z: x -> -x, y -> -y (quaternion b=c=0, d=1)
        let h = nifti::NiftiHeader {
            pixdim: [-1.0, 0.25, 0.5, 2.0, 0.0, 0.0, 0.0, 0.0],
            quatern_d: 1.0,
            quatern_x: -10.0,
            quatern_y: -20.0,
            quatern_z: -30.0,
            ..Default::default()
        };
        let m = qform_affine(&h);
        // qfac -1 flips k
        assert_eq!(m, [[-0.25, 0.0, 0.0, -10.0], [0.0, -0.5, 0.0, -20.0], [0.0, 0.0, -2.0, -30.0]]);
    }
}
