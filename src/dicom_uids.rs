//! Which abstract and transfer syntaxes the node speaks.

use dicom_core::dictionary::UidDictionary;
use dicom_dictionary_std::StandardSopClassDictionary;

pub const APPLICATION_CONTEXT: &str = "1.2.840.10008.3.1.1.1";
pub const VERIFICATION: &str = "1.2.840.10008.1.1";

pub const IMPLICIT_VR_LE: &str = "1.2.840.10008.1.2";
pub const EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1";
pub const DEFLATED_EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1.99";
pub const EXPLICIT_VR_BE: &str = "1.2.840.10008.1.2.2";

/// Our implementation identity (A-ASSOCIATE user information, file meta).
pub const IMPLEMENTATION_CLASS_UID: &str = "1.2.826.0.1.3680043.10.1137.1";
pub const IMPLEMENTATION_VERSION_NAME: &str = concat!("AINODE_", env!("CARGO_PKG_VERSION"));

/// Transfer syntaxes accepted for storage, stored as received.
pub const STORAGE_TRANSFER_SYNTAXES: &[(&str, &str)] = &[
    (IMPLICIT_VR_LE, "Implicit VR Little Endian"),
    (EXPLICIT_VR_LE, "Explicit VR Little Endian"),
    (DEFLATED_EXPLICIT_VR_LE, "Deflated Explicit VR Little Endian"),
    (EXPLICIT_VR_BE, "Explicit VR Big Endian (retired)"),
    ("1.2.840.10008.1.2.4.50", "JPEG Baseline (Process 1)"),
    ("1.2.840.10008.1.2.4.51", "JPEG Extended (Process 2 & 4)"),
    ("1.2.840.10008.1.2.4.57", "JPEG Lossless, Non-Hierarchical (Process 14)"),
    ("1.2.840.10008.1.2.4.70", "JPEG Lossless, First-Order Prediction (Process 14 SV1)"),
    ("1.2.840.10008.1.2.4.80", "JPEG-LS Lossless"),
    ("1.2.840.10008.1.2.4.81", "JPEG-LS Near-Lossless"),
    ("1.2.840.10008.1.2.4.90", "JPEG 2000 (Lossless Only)"),
    ("1.2.840.10008.1.2.4.91", "JPEG 2000"),
    ("1.2.840.10008.1.2.4.92", "JPEG 2000 Part 2 Multi-component (Lossless Only)"),
    ("1.2.840.10008.1.2.4.93", "JPEG 2000 Part 2 Multi-component"),
    ("1.2.840.10008.1.2.4.201", "High-Throughput JPEG 2000 (Lossless Only)"),
    ("1.2.840.10008.1.2.4.202", "High-Throughput JPEG 2000 with RPCL (Lossless Only)"),
    ("1.2.840.10008.1.2.4.203", "High-Throughput JPEG 2000"),
    ("1.2.840.10008.1.2.5", "RLE Lossless"),
    ("1.2.840.10008.1.2.4.100", "MPEG2 Main Profile / Main Level"),
    ("1.2.840.10008.1.2.4.102", "MPEG-4 AVC/H.264 High Profile"),
    ("1.2.840.10008.1.2.4.103", "MPEG-4 AVC/H.264 BD-compatible High Profile"),
];

/// Uncompressed syntaxes an existing dataset can be re-encoded into
/// without touching pixel data compression.
pub fn is_uncompressed(ts: &str) -> bool {
    matches!(ts, IMPLICIT_VR_LE | EXPLICIT_VR_LE | EXPLICIT_VR_BE | DEFLATED_EXPLICIT_VR_LE)
}

pub fn is_supported_transfer_syntax(ts: &str) -> bool {
    STORAGE_TRANSFER_SYNTAXES.iter().any(|(u, _)| *u == ts)
}

/// A standard storage SOP class: the storage branch of the UID tree, or any
/// class the standard dictionary names "... Storage" (a few live elsewhere,
/// e.g. RT Ion and the 1.2.840.10008.5.1.4.xx families).
pub fn is_standard_storage_sop_class(uid: &str) -> bool {
    if uid.starts_with("1.2.840.10008.5.1.4.1.1.") {
        return true;
    }
    match StandardSopClassDictionary.by_uid(uid) {
        Some(e) => e.name.contains("Storage") && !e.name.contains("Commitment") && !e.name.contains("Directory"),
        None => false,
    }
}

pub fn sop_class_name(uid: &str) -> &'static str {
    StandardSopClassDictionary.by_uid(uid).map(|e| e.name).unwrap_or("private or unknown SOP class")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_classes() {
        assert!(is_standard_storage_sop_class("1.2.840.10008.5.1.4.1.1.2")); // CT
        assert!(is_standard_storage_sop_class("1.2.840.10008.5.1.4.1.1.66.4")); // SEG
        assert!(is_standard_storage_sop_class("1.2.840.10008.5.1.4.1.1.88.33")); // Comprehensive SR
        assert!(!is_standard_storage_sop_class(VERIFICATION));
        assert!(!is_standard_storage_sop_class("1.2.840.10008.1.20.1")); // storage commitment
        assert!(!is_standard_storage_sop_class("1.2.3.4.5.6.7"));
    }
}
