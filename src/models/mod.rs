//! candle networks. `blocks/` holds the trainable building blocks the five
//! analyses share (MODELS.md); each network file will use them.

pub mod blocks;
pub mod device;
pub mod weights;
