//! Training data: samples, loaders for the shared data sets, deterministic
//! random streams, augmentations, fixed preprocessing, batching, and the
//! data-analysis clustering of MODELS.md S21.
//!
//! Conventions (every module follows them):
//! - Images are `C x D x H x W` f32 (a 2D image has `D == 1`); label maps
//!   are `L x D x H x W` u16 (L label layers, usually 1).
//! - Pixel-centre coordinates: the centre of pixel (column i, row j) is at
//!   `x = i, y = j`; x to the right, y down. Points use these coordinates.
//! - Spacing is millimetres along (D, H, W), when known.

pub mod augment;
pub mod batch;
pub mod cluster;
mod csv;
pub mod datasets;
pub mod error;
pub mod preprocess;
pub mod sample;
pub mod split;
pub mod volumes;

pub use error::{DataError, Result};
pub use sample::{Image, LabelMap, Landmark, Sample};
pub use split::Split;

/// The shared data folder for tests: `$AINODE_DATA`, else `../shared/data`
/// next to the checkout. `None` (with a printed reason) when absent, so that
/// tests on real data skip cleanly on machines without it.
pub fn shared_data_dir() -> Option<std::path::PathBuf> {
    let dir = match std::env::var_os("AINODE_DATA") {
        Some(d) => std::path::PathBuf::from(d),
        None => std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data"),
    };
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!("SKIP: shared data not found at {} (set AINODE_DATA)", dir.display());
        None
    }
}
