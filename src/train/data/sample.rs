//! Sample types: an image (C x D x H x W f32; D == 1 for 2D), an optional
//! label map (L x D x H x W u16), named points (2D only), spacing.

use super::error::{DataError, Result};
pub use crate::imaging::array::{Image, LabelMap};

/// A named point; `position` is `[x, y]` in pixel-centre coordinates, or
/// `None` when the annotation lacks it.
#[derive(Debug, Clone, PartialEq)]
pub struct Landmark {
    pub name: String,
    pub position: Option<[f64; 2]>,
}

/// One training or evaluation example.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Stable identifier (file name or case id), for errors and reports.
    pub id: String,
    pub image: Image,
    pub labels: Option<LabelMap>,
    /// 2D images only; in the data set's landmark order.
    pub points: Vec<Landmark>,
    /// mm along (D, H, W) when known (for 2D images the D entry is 1.0 and
    /// means nothing).
    pub spacing: Option<[f64; 3]>,
}

impl Sample {
    pub fn new(id: impl Into<String>, image: Image) -> Self {
        Sample { id: id.into(), image, labels: None, points: Vec::new(), spacing: None }
    }

    /// Checks that the label map covers the image exactly.
    pub fn validate(&self) -> Result<()> {
        if let Some(l) = &self.labels {
            if l.dims() != self.image.dims() {
                return Err(DataError::Invalid(format!("sample {}: label map is {:?} (D, H, W) but the image is {:?}", self.id, l.dims(), self.image.dims())));
            }
        }
        if !self.points.is_empty() && !self.image.is_2d() {
            return Err(DataError::Invalid(format!("sample {}: points are supported on 2D images only", self.id)));
        }
        Ok(())
    }

    pub fn point(&self, name: &str) -> Option<[f64; 2]> {
        self.points.iter().find(|p| p.name == name).and_then(|p| p.position)
    }
}
