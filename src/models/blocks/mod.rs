//! Trainable building blocks built from differentiable candle primitives.
//!
//! candle 0.11 has ops whose backward pass is missing or silently wrong
//! (DESIGN.md "Known gaps"): no conv3d, pooling backward only for
//! kernel == stride, no bilinear upsampling backward, `softmax_last_dim` and
//! the fused `layer_norm` drop gradients. The replacements here are written
//! only with ops whose gradients candle computes, and every one has a
//! finite-difference gradient test (`testing::gradcheck`). conv2d backward
//! with stride > 1 breaks on mixed-parity maps: use `conv::conv2d`/`Conv2d`.
//! candle's max_pool2d backward is wrong even for kernel == stride (the
//! gradient is scaled by 1/k^2): use `pool::max_pool2d`.

pub mod add_relu;
pub mod anchors;
pub mod attention;
pub mod batch_norm;
pub mod boxes;
pub mod conv;
pub mod conv3d;
pub mod cpu_data;
pub mod cpu_pool;
pub mod fpn;
pub mod gemm;
pub mod im2col;
pub mod losses;
pub mod mhsa;
pub mod norm;
pub mod pool;
pub mod postprocess;
pub mod psp;
pub mod resize;
pub mod resnet;
pub mod roi_align;
pub mod roi_loss;
pub mod rpn;
pub mod ssd_loss;
pub mod vgg;

#[cfg(test)]
pub mod testing;
