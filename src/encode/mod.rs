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
mod error;
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
pub use error::EncodeError;
pub use source::SourceInstance;

#[cfg(test)]
mod tests;
