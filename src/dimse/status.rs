//! DIMSE status codes the node sends and interprets (PS3.7 Annex C, PS3.4 B.2.3).

pub const SUCCESS: u16 = 0x0000;
/// Storage warnings: coercion of data elements, elements discarded, data set
/// does not match SOP class. The instance was stored.
pub const WARNING_COERCION: u16 = 0xB000;
pub const WARNING_ELEMENTS_DISCARDED: u16 = 0xB006;
pub const WARNING_DATA_SET_MISMATCH: u16 = 0xB007;
pub const OUT_OF_RESOURCES: u16 = 0xA700;
pub const DATA_SET_DOES_NOT_MATCH_SOP_CLASS: u16 = 0xA900;
pub const CANNOT_UNDERSTAND: u16 = 0xC000;
pub const SOP_CLASS_NOT_SUPPORTED: u16 = 0x0122;
pub const UNRECOGNIZED_OPERATION: u16 = 0x0211;

/// How a C-STORE response status is treated by the exporter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreResult {
    Success,
    /// Stored by the peer, with a warning worth logging.
    Warning,
    Failure,
}

pub fn classify_store(status: u16) -> StoreResult {
    match status {
        SUCCESS => StoreResult::Success,
        WARNING_COERCION | WARNING_ELEMENTS_DISCARDED | WARNING_DATA_SET_MISMATCH => StoreResult::Warning,
        _ => StoreResult::Failure,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        assert_eq!(classify_store(0x0000), StoreResult::Success);
        assert_eq!(classify_store(0xB007), StoreResult::Warning);
        assert_eq!(classify_store(0xA700), StoreResult::Failure);
        assert_eq!(classify_store(0xC000), StoreResult::Failure);
        assert_eq!(classify_store(0x0001), StoreResult::Failure);
    }
}
