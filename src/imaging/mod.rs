//! The imaging layer: every analysis reads pixels in physical units.
//!
//! - [`decode`]: any stored instance to f32 in modality units (rescale per
//!   frame, MONOCHROME1 inverted, colour to RGB or luminance, palettes);
//! - [`geometry`]: 2D pixel spacing with its source, 3D frame planes;
//! - [`volume`]: series or enhanced multi-frame objects to a [`Volume`] in
//!   LPS, sorted along the slice normal, with gantry tilt, missing slices
//!   and uneven spacing detected (refused or resampled by policy);
//! - [`resample`]: trilinear / cubic B-spline / nearest resampling in
//!   physical space, windowing, cropping to the body;
//! - [`array`], [`separable`], [`intensity`]: the network side: dense
//!   `Image` / `LabelMap` arrays, separable index-space resampling (resize,
//!   zoom, letterbox, blur) and intensity steps (z-score, percentile clip,
//!   CLAHE), shared by pipelines, models and training.

pub mod array;
mod attrs;
pub mod components;
pub mod decode;
pub mod error;
pub mod geometry;
pub mod intensity;
pub mod nifti;
pub mod resample;
pub mod separable;
pub mod synth;
pub mod volume;

pub use array::{Image, LabelMap};
pub use decode::{decode_file, decode_object, ColorMode, DecodedImage, Rescale};
pub use error::ImagingError;
pub use geometry::{frame_plane, pixel_spacing, pixel_spacing_at, FramePlane, Spacing2D, SpacingSource, UltrasoundRegion};
pub use resample::{
    crop, crop_to_body, resample_like, resample_to_grid, resample_to_spacing, window, window_values, BodyCrop, BoundingBox, Interpolation, Sampler,
};
pub use volume::{
    group_by_series, load_multiframe, load_series, load_series_with, volume_from_object, Grid, ResampleOrRefuse, SeriesGroup, SeriesGrouping, SeriesOptions,
    SeriesReport, SharedFrameOfReference, SliceGap, SourceFrame, Volume,
};
