//! Batching: collate samples into candle tensors, a deterministic batch
//! order per epoch, and loading (with augmentation) of one batch.

use candle_core::{DType, Device, Tensor};

use super::augment::Pipeline;
use super::datasets::Dataset;
use super::error::{DataError, Result};
use super::sample::Sample;
use crate::rng::{Purpose, Rng};

/// Tensors of one batch.
#[derive(Debug, Clone)]
pub struct Batch {
    pub ids: Vec<String>,
    /// f32 `(N, C, H, W)` for 2D samples, `(N, C, D, H, W)` for volumes.
    pub images: Tensor,
    /// u32 class indices `(N, L, H, W)` / `(N, L, D, H, W)` when every sample has labels.
    pub labels: Option<Tensor>,
    /// f32 `(N, K, 2)` point coordinates (x, y) when the samples have points;
    /// missing points are 0 and flagged in `points_present`.
    pub points: Option<Tensor>,
    /// f32 `(N, K)`: 1 where the point exists.
    pub points_present: Option<Tensor>,
}

/// Stacks samples of equal shape. Errors name the sample that differs.
pub fn collate(samples: &[Sample], device: &Device) -> Result<Batch> {
    let first = samples.first().ok_or_else(|| DataError::Invalid("collate: no samples".into()))?;
    let n = samples.len();
    let im = &first.image;
    let spatial: Vec<usize> = if im.is_2d() { vec![im.height, im.width] } else { vec![im.depth, im.height, im.width] };
    for s in samples {
        if (s.image.channels, s.image.dims()) != (im.channels, im.dims()) {
            return Err(DataError::Invalid(format!(
                "collate: sample {} is {} x {:?} (C x D,H,W) but {} is {} x {:?}",
                s.id,
                s.image.channels,
                s.image.dims(),
                first.id,
                im.channels,
                im.dims()
            )));
        }
    }
    let mut shape = vec![n, im.channels];
    shape.extend(&spatial);
    let data: Vec<f32> = samples.iter().flat_map(|s| s.image.data.iter().copied()).collect();
    let images = Tensor::from_vec(data, shape, device)?;

    let labels = if samples.iter().all(|s| s.labels.is_some()) {
        let layers = first.labels.as_ref().unwrap().layers;
        let mut data = Vec::new();
        for s in samples {
            let l = s.labels.as_ref().unwrap();
            if l.layers != layers || l.dims() != im.dims() {
                return Err(DataError::Invalid(format!(
                    "collate: labels of sample {} are {} x {:?}, expected {layers} x {:?}",
                    s.id,
                    l.layers,
                    l.dims(),
                    im.dims()
                )));
            }
            data.extend(l.data.iter().map(|v| *v as u32));
        }
        let mut shape = vec![n, layers];
        shape.extend(&spatial);
        Some(Tensor::from_vec(data, shape, device)?)
    } else {
        None
    };

    let (points, points_present) = if first.points.is_empty() {
        (None, None)
    } else {
        let k = first.points.len();
        let (mut xy, mut present) = (Vec::with_capacity(n * k * 2), Vec::with_capacity(n * k));
        for s in samples {
            if s.points.len() != k || s.points.iter().zip(&first.points).any(|(a, b)| a.name != b.name) {
                return Err(DataError::Invalid(format!("collate: sample {} has other points than {}", s.id, first.id)));
            }
            for p in &s.points {
                let q = p.position.unwrap_or([0.0, 0.0]);
                xy.extend([q[0] as f32, q[1] as f32]);
                present.push(if p.position.is_some() { 1f32 } else { 0.0 });
            }
        }
        (Some(Tensor::from_vec(xy, (n, k, 2), device)?), Some(Tensor::from_vec(present, (n, k), device)?))
    };
    Ok(Batch { ids: samples.iter().map(|s| s.id.clone()).collect(), images, labels, points, points_present })
}

/// One-hot encoding of a `(N, L=1, ...)` or `(N, ...)` u32 label tensor
/// into `(N, classes, ...)` of `dtype` (the form the losses take).
pub fn one_hot(labels: &Tensor, classes: usize, dtype: DType) -> Result<Tensor> {
    let labels = if labels.rank() >= 2 && labels.dims()[1] == 1 { labels.squeeze(1)? } else { labels.clone() };
    let classes_t = Tensor::arange(0u32, classes as u32, labels.device())?;
    let mut shape = vec![1, classes];
    shape.extend(std::iter::repeat(1).take(labels.rank() - 1));
    let classes_t = classes_t.reshape(shape)?;
    Ok(labels.unsqueeze(1)?.broadcast_eq(&classes_t)?.to_dtype(dtype)?)
}

/// The batches of an epoch: a permutation of 0..n from the (seed, epoch)
/// stream (or 0..n in order without `shuffle`), cut into `batch_size`
/// pieces; the last smaller batch is kept unless `drop_last`.
pub fn epoch_batches(n: usize, batch_size: usize, seed: u64, epoch: u64, shuffle: bool, drop_last: bool) -> Vec<Vec<usize>> {
    let order: Vec<usize> = if shuffle { Rng::stream(Purpose::BatchOrder, seed, epoch, 0).permutation(n) } else { (0..n).collect() };
    order.chunks(batch_size.max(1)).filter(|c| !drop_last || c.len() == batch_size).map(|c| c.to_vec()).collect()
}

/// Optimiser steps in one epoch: the number of [`epoch_batches`].
pub fn steps_per_epoch(n: usize, batch_size: usize, drop_last: bool) -> usize {
    let b = batch_size.max(1);
    if drop_last {
        n / b
    } else {
        n.div_ceil(b)
    }
}

/// Loads items of a data set, augments each with its (seed, epoch, index)
/// stream, applies the fixed preparation (e.g. resizing to the network
/// input), and collates.
pub fn load_batch(
    dataset: &dyn Dataset,
    indices: &[usize],
    augment: &Pipeline,
    prepare: &dyn Fn(Sample) -> Result<Sample>,
    seed: u64,
    epoch: u64,
    device: &Device,
) -> Result<Batch> {
    let samples: Vec<Sample> = indices
        .iter()
        .map(|&i| {
            let s = dataset.load(i)?;
            prepare(augment.apply(s, seed, epoch, i as u64)?)
        })
        .collect::<Result<_>>()?;
    collate(&samples, device)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::data::sample::{Image, LabelMap, Landmark};

    fn sample(id: &str, v: f32, point: Option<[f64; 2]>) -> Sample {
        Sample {
            id: id.into(),
            image: Image::new_2d(1, 2, 3, vec![v; 6]).unwrap(),
            labels: Some(LabelMap::new(1, [1, 2, 3], vec![0, 1, 2, 0, 1, 2]).unwrap()),
            points: vec![Landmark { name: "a".into(), position: point }],
            spacing: None,
        }
    }

    #[test]
    fn collate_shapes_and_values() -> Result<()> {
        let b = collate(&[sample("x", 1.0, Some([1.0, 2.0])), sample("y", 2.0, None)], &Device::Cpu)?;
        assert_eq!(b.images.dims(), &[2, 1, 2, 3]);
        assert_eq!(b.images.sum_all()?.to_scalar::<f32>()?, 18.0);
        let l = b.labels.as_ref().unwrap();
        assert_eq!((l.dims(), l.dtype()), (&[2usize, 1, 2, 3][..], DType::U32));
        assert_eq!(b.points.unwrap().to_vec3::<f32>()?, vec![vec![vec![1.0, 2.0]], vec![vec![0.0, 0.0]]]);
        assert_eq!(b.points_present.unwrap().to_vec2::<f32>()?, vec![vec![1.0], vec![0.0]]);
        let oh = one_hot(l, 3, DType::F32)?;
        assert_eq!(oh.dims(), &[2, 3, 2, 3]);
        assert_eq!(oh.get(0)?.get(2)?.to_vec2::<f32>()?, vec![vec![0.0, 0.0, 1.0], vec![0.0, 0.0, 1.0]]);
        // a volume batch is 5D
        let v = Sample::new("v", Image::filled(2, [3, 4, 5], 0.0));
        assert_eq!(collate(&[v.clone(), v], &Device::Cpu)?.images.dims(), &[2, 2, 3, 4, 5]);
        let mut odd = sample("z", 0.0, None);
        odd.image = Image::new_2d(1, 3, 2, vec![0.0; 6])?;
        let e = collate(&[sample("x", 1.0, None), odd], &Device::Cpu).err().unwrap().to_string();
        assert!(e.contains("sample z is 1 x [1, 3, 2]"), "{e}");
        Ok(())
    }

    #[test]
    fn batch_order_is_a_seeded_permutation() {
        let a = epoch_batches(10, 4, 9, 2, true, false);
        assert_eq!(a.iter().map(Vec::len).collect::<Vec<_>>(), vec![4, 4, 2]);
        let mut all: Vec<usize> = a.concat();
        all.sort();
        assert_eq!(all, (0..10).collect::<Vec<_>>());
        assert_eq!(a, epoch_batches(10, 4, 9, 2, true, false));
        assert_ne!(a, epoch_batches(10, 4, 9, 3, true, false));
        assert_eq!(epoch_batches(10, 4, 9, 2, true, true).len(), 2);
        assert_eq!(epoch_batches(5, 2, 0, 0, false, false), vec![vec![0, 1], vec![2, 3], vec![4]]);
        for (n, b, drop) in [(10, 4, false), (10, 4, true), (8, 4, true), (3, 4, true), (0, 4, false)] {
            assert_eq!(epoch_batches(n, b, 1, 0, true, drop).len(), steps_per_epoch(n, b, drop), "{n} {b} {drop}");
        }
    }

    #[test]
    fn augmented_letterboxed_ceph_batch() -> Result<()> {
        use crate::train::data::augment::{Augmentation, FlipAug, ScaleAug, WindowAug};
        use crate::train::data::datasets::{ImagePointsConfig, ImagePointsDataset};
        use crate::train::data::preprocess::letterbox;
        use crate::train::data::split::Split;
        let Some(data) = crate::train::data::shared_data_dir() else { return Ok(()) };
        let ds = ImagePointsDataset::open(&ImagePointsConfig::ceph_hamedan(data.join("ceph-hamedan")), Split::Train)?;
        let pipe = Pipeline::new(vec![
            Augmentation::Window(WindowAug { probability: 1.0, ..Default::default() }),
            Augmentation::Scale(ScaleAug { probability: 1.0, scale: (0.9, 1.0), ..Default::default() }),
            Augmentation::Flip(FlipAug { horizontal: 0.5, vertical: 0.0, depth: 0.0, swap_pairs: vec![] }),
        ]);
        let prepare = |s: Sample| letterbox(&s, 96, 96, 0.5).map(|(s, _)| s);
        let a = load_batch(&ds, &[0, 5], &pipe, &prepare, 11, 2, &Device::Cpu)?;
        assert_eq!(a.images.dims(), &[2, 1, 96, 96]);
        let v = a.images.flatten_all()?.to_vec1::<f32>()?;
        // a convex combination of windowed values (f32 weights: rounding only)
        let (lo, hi) = v.iter().fold((f32::MAX, f32::MIN), |(a, b), x| (a.min(*x), b.max(*x)));
        assert!(lo >= -1e-5 && hi <= 1.0 + 1e-5, "{lo} {hi}");
        // 1671 x 1340 (h x w) into 96 x 96: content 96 high, grey bars left and right
        assert_eq!(a.images.get(0)?.get(0)?.get(48)?.get(0)?.to_scalar::<f32>()?, 0.5);
        let pts = a.points.as_ref().unwrap().to_vec3::<f32>()?;
        assert_eq!(pts[0].len(), 19);
        assert!(pts.iter().flatten().all(|p| p[0] > 0.0 && p[0] < 96.0 && p[1] > 0.0 && p[1] < 96.0), "{pts:?}");
        // same (seed, epoch) again: identical; another epoch: different
        let b = load_batch(&ds, &[0, 5], &pipe, &prepare, 11, 2, &Device::Cpu)?;
        assert_eq!(v, b.images.flatten_all()?.to_vec1::<f32>()?);
        assert_eq!(pts, b.points.unwrap().to_vec3::<f32>()?);
        let c = load_batch(&ds, &[0, 5], &pipe, &prepare, 11, 3, &Device::Cpu)?;
        assert_ne!(v, c.images.flatten_all()?.to_vec1::<f32>()?);
        Ok(())
    }
}
