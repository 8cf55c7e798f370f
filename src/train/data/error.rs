//! The error type of the data layer; every variant names the file (and line
//! or sample) it is about.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{path}: {error}")]
    Io { path: PathBuf, error: std::io::Error },

    /// A malformed table: the file and 1-based line.
    #[error("{path}:{line}: {reason}")]
    Table { path: PathBuf, line: usize, reason: String },

    /// An image, mask or volume file that cannot be decoded or has the wrong form.
    #[error("{path}: {reason}")]
    File { path: PathBuf, reason: String },

    #[error(transparent)]
    Imaging(#[from] crate::imaging::error::ImagingError),

    /// Samples, shapes or configuration values that do not fit.
    #[error("{0}")]
    Invalid(String),

    #[error(transparent)]
    Tensor(#[from] candle_core::Error),
}

pub type Result<T, E = DataError> = std::result::Result<T, E>;

impl DataError {
    pub fn file(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        DataError::File { path: path.into(), reason: reason.into() }
    }
    pub fn table(path: impl Into<PathBuf>, line: usize, reason: impl Into<String>) -> Self {
        DataError::Table { path: path.into(), line, reason: reason.into() }
    }
}
