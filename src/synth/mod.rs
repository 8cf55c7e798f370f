//! Synthetic training and test data where no public data set exists
//! (`ainode data synth NAME`). Generators draw physically plausible images and
//! take every label from the drawn geometry.

pub mod hip_tha;
pub mod raster;
