//! Dense pixel arrays in index space: an image (C x D x H x W f32; D == 1
//! for 2D) and a label map (L x D x H x W u16). The network-side twin of
//! [`Volume`](super::Volume), which carries physical geometry: models,
//! pipelines and training all hand these between pre-processing steps.

use super::error::ImagingError;

/// Image values, channel-major then depth, row, column:
/// `data[((c * depth + z) * height + y) * width + x]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Image {
    pub channels: usize,
    pub depth: usize,
    pub height: usize,
    pub width: usize,
    pub data: Vec<f32>,
}

impl Image {
    pub fn new(channels: usize, dims: [usize; 3], data: Vec<f32>) -> Result<Self, ImagingError> {
        let want = channels * dims[0] * dims[1] * dims[2];
        if data.len() != want {
            return Err(ImagingError::InvalidArray(format!("image of {channels} x {dims:?} needs {want} values, got {}", data.len())));
        }
        Ok(Image { channels, depth: dims[0], height: dims[1], width: dims[2], data })
    }

    /// A 2D image (depth 1) from `C x H x W` values.
    pub fn new_2d(channels: usize, height: usize, width: usize, data: Vec<f32>) -> Result<Self, ImagingError> {
        Self::new(channels, [1, height, width], data)
    }

    pub fn filled(channels: usize, dims: [usize; 3], value: f32) -> Self {
        Image { channels, depth: dims[0], height: dims[1], width: dims[2], data: vec![value; channels * dims[0] * dims[1] * dims[2]] }
    }

    /// Spatial dims (D, H, W).
    pub fn dims(&self) -> [usize; 3] {
        [self.depth, self.height, self.width]
    }

    pub fn is_2d(&self) -> bool {
        self.depth == 1
    }

    /// Voxels per channel.
    pub fn plane_len(&self) -> usize {
        self.depth * self.height * self.width
    }

    pub fn channel(&self, c: usize) -> &[f32] {
        let n = self.plane_len();
        &self.data[c * n..(c + 1) * n]
    }

    pub fn channel_mut(&mut self, c: usize) -> &mut [f32] {
        let n = self.plane_len();
        &mut self.data[c * n..(c + 1) * n]
    }

    pub fn get(&self, c: usize, z: usize, y: usize, x: usize) -> f32 {
        self.data[((c * self.depth + z) * self.height + y) * self.width + x]
    }
}

/// Label values (class indices), layer-major like [`Image`]. Most data sets
/// have one layer; kidney-us has two (capsule, regions).
#[derive(Debug, Clone, PartialEq)]
pub struct LabelMap {
    pub layers: usize,
    pub depth: usize,
    pub height: usize,
    pub width: usize,
    pub data: Vec<u16>,
}

impl LabelMap {
    pub fn new(layers: usize, dims: [usize; 3], data: Vec<u16>) -> Result<Self, ImagingError> {
        let want = layers * dims[0] * dims[1] * dims[2];
        if data.len() != want {
            return Err(ImagingError::InvalidArray(format!("label map of {layers} x {dims:?} needs {want} values, got {}", data.len())));
        }
        Ok(LabelMap { layers, depth: dims[0], height: dims[1], width: dims[2], data })
    }

    pub fn dims(&self) -> [usize; 3] {
        [self.depth, self.height, self.width]
    }

    pub fn plane_len(&self) -> usize {
        self.depth * self.height * self.width
    }

    pub fn layer(&self, l: usize) -> &[u16] {
        let n = self.plane_len();
        &self.data[l * n..(l + 1) * n]
    }

    pub fn get(&self, l: usize, z: usize, y: usize, x: usize) -> u16 {
        self.data[((l * self.depth + z) * self.height + y) * self.width + x]
    }

    pub fn max_label(&self) -> u16 {
        self.data.iter().copied().max().unwrap_or(0)
    }
}
