//! candle networks. `blocks/` holds the trainable building blocks the five
//! analyses share (MODELS.md); one file per analysis network (`hip_tha`: SSD512
//! keypoints; `lung_lesions`: Mask R-CNN), each with a `Config` and a `load`.

pub mod blocks;
pub mod device;
pub mod hip_tha;
pub mod init;
pub mod lung_lesions;
pub mod profile;
pub mod threads;
pub mod weights;
