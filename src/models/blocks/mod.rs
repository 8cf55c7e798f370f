//! Trainable building blocks built from differentiable candle primitives.
//!
//! candle 0.11 has ops whose backward pass is missing or silently wrong
//! (DESIGN.md "Known gaps"): no conv3d, pooling backward only for
//! kernel == stride, no bilinear upsampling backward, `softmax_last_dim` and
//! the fused `layer_norm` drop gradients. The replacements here are written
//! only with ops whose gradients candle computes, and every one has a
//! finite-difference gradient test (`testing::gradcheck`).

pub mod anchors;
pub mod boxes;
pub mod conv3d;
pub mod losses;
pub mod norm;
pub mod pool;
pub mod resize;
pub mod postprocess;
pub mod roi_align;
pub mod roi_loss;
pub mod rpn;
pub mod ssd_loss;

#[cfg(test)]
pub mod testing;
