//! The one error type of the encoders: each variant names the input file,
//! attribute / JSON field or study it is about.

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
