//! Findings to standard DICOM result objects.
//!
//! One file per object type, each a constructor that validates its input and
//! refuses an invalid object with an [`EncodeError`] naming the attribute,
//! study or file concerned:
//!
//! - [`seg`]: BINARY Segmentation (multi-frame, own bit packing);
//! - [`sr`]: TID 1500 Measurement Report as Comprehensive SR or
//!   Comprehensive 3D SR;
//! - [`gsps`]: Grayscale Softcopy Presentation State with graphic annotations;
//! - [`sc`]: (Multi-frame Grayscale Word) Secondary Capture for derived images.
//!
//! Shared parts: [`uids`] (deterministic UIDs), [`common`] (patient / study /
//! series / equipment attributes, Part 10 writing), [`source`] (reading the
//! input instances' headers and geometry). [`labelmap`] and [`json`] are the
//! input adapters of the `ainode encode` commands.

pub mod bits;
pub mod color;
pub mod commands;
pub mod common;
pub mod dataset;
pub mod gsps;
pub mod icc;
pub mod json;
pub mod labelmap;
pub mod results;
pub mod sc;
pub mod seg;
pub mod source;
pub mod sr;
pub mod uids;

pub use common::{EncoderSettings, ResultContext, ResultKind, SeriesSettings};
pub use source::SourceInstance;

#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// An input file cannot be read or is not a usable DICOM instance.
    #[error("{file}: {reason}")]
    Source { file: String, reason: String },
    /// An input instance lacks an attribute the result needs, or has a bad value.
    #[error("{file}: attribute {attribute}: {reason}")]
    SourceAttribute { file: String, attribute: String, reason: String },
    /// The findings (or a JSON input) are invalid; `attribute` names the field.
    #[error("{attribute}: {reason}")]
    Invalid { attribute: String, reason: String },
    /// The result does not fit the study's images (size, geometry, coverage).
    #[error("study {study}: {reason}")]
    Geometry { study: String, reason: String },
    #[error("{path}: {error}")]
    Io { path: String, error: std::io::Error },
    #[error("writing {path}: {reason}")]
    Write { path: String, reason: String },
}

impl EncodeError {
    pub(crate) fn invalid(attribute: impl Into<String>, reason: impl Into<String>) -> EncodeError {
        EncodeError::Invalid { attribute: attribute.into(), reason: reason.into() }
    }

    pub(crate) fn geometry(study: impl Into<String>, reason: impl Into<String>) -> EncodeError {
        EncodeError::Geometry { study: study.into(), reason: reason.into() }
    }
}

#[cfg(test)]
mod tests;
