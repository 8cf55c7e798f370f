//! The `TrainTask`s of the shipped analyses (data, loss and evaluation of each
//! model); `registry::Registry::builtin` lists them.

pub mod hip_tha;
pub mod lung_lesions;
