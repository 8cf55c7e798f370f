//! candle networks. `blocks/` holds the trainable building blocks the five
//! analyses share (MODELS.md); one file per analysis network (`hip_tha`: SSD512
//! keypoints), each with a `Config` and a `load`.

pub mod blocks;
pub mod device;
pub mod hip_tha;
pub mod init;
pub mod weights;
