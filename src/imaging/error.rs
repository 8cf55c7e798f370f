//! The one error type of the imaging layer. Every variant names what it is
//! about: the file, the SOP Instance UID, the attribute, or the series.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ImagingError {
    #[error("cannot read DICOM file {path}: {reason}")]
    Open { path: PathBuf, reason: String },

    #[error("instance {sop_instance_uid}: missing attribute {attribute}")]
    MissingAttribute { sop_instance_uid: String, attribute: &'static str },

    #[error("instance {sop_instance_uid}: attribute {attribute} is invalid: {reason}")]
    InvalidAttribute { sop_instance_uid: String, attribute: &'static str, reason: String },

    /// A pixel format we do not decode (photometric interpretation, bit depth,
    /// transfer syntax without a decoder, ...).
    #[error("instance {sop_instance_uid}: unsupported pixel data: {reason}")]
    UnsupportedPixelData { sop_instance_uid: String, reason: String },

    /// Pixel data whose codec is an optional part of the build, left out of this one.
    #[error("instance {sop_instance_uid}: {what} is not decodable by this build: {enable}")]
    CodecNotBuilt { sop_instance_uid: String, what: String, enable: &'static str },

    /// A codec failed on the data (corrupt or a variant the codec cannot do).
    #[error("instance {sop_instance_uid}: cannot decode pixel data ({transfer_syntax}): {reason}")]
    Decode { sop_instance_uid: String, transfer_syntax: String, reason: String },

    /// An array whose values do not fit its shape, or parameters that do not fit the array.
    #[error("{0}")]
    InvalidArray(String),

    #[error("no image files given")]
    EmptySeries,

    #[error("the files hold {} series ({}); pick one (SeriesOptions::series_instance_uid) or use group_by_series", series.len(), series.join(", "))]
    MultipleSeries { series: Vec<String> },

    #[error("series {series_instance_uid}: no instance of the requested series")]
    SeriesNotFound { series_instance_uid: String },

    /// Slices of one volume that do not fit together (orientation, size,
    /// pixel spacing, frame of reference).
    #[error("series {series_instance_uid}: instance {sop_instance_uid} does not fit the volume: {reason}")]
    Inconsistent { series_instance_uid: String, sop_instance_uid: String, reason: String },

    #[error("series {series_instance_uid}: instances {first} and {second} lie at the same position ({distance_mm:.4} mm apart along the normal)")]
    DuplicatePosition { series_instance_uid: String, first: String, second: String, distance_mm: f64 },

    #[error("series {series_instance_uid}: gantry tilt of {angle_deg:.3} degrees (slice positions not along the slice normal); allow resampling to load it")]
    GantryTilt { series_instance_uid: String, angle_deg: f64 },

    #[error("series {series_instance_uid}: missing slice(s): gap of {gap_mm:.3} mm after instance {after_sop_instance_uid} where the median spacing is {median_mm:.3} mm")]
    MissingSlices { series_instance_uid: String, after_sop_instance_uid: String, gap_mm: f64, median_mm: f64 },

    #[error(
        "series {series_instance_uid}: uneven slice spacing: {min_mm:.4} to {max_mm:.4} mm (median {median_mm:.4}, tolerance {tolerance:.4} of the median)"
    )]
    UnevenSpacing { series_instance_uid: String, min_mm: f64, max_mm: f64, median_mm: f64, tolerance: f64 },

    #[error("geometry: {reason}")]
    Geometry { reason: String },
}

pub type Result<T, E = ImagingError> = std::result::Result<T, E>;
