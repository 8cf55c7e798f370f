//! Deterministic UIDs for result objects.
//!
//! A result's UIDs are `ROOT.DIGITS`, DIGITS being the decimal form of a
//! SHA-256 over (the input instance UIDs, sorted; the pipeline id; the model
//! version; the object kind; the purpose of the UID). The same inputs give the
//! same UIDs, so a re-run replaces a result instead of duplicating it; any
//! different input gives different UIDs.

use sha2::{Digest, Sha256};

use super::error::EncodeError;

/// Generates the UIDs of one result object.
#[derive(Debug, Clone)]
pub struct UidGenerator {
    root: String,
    seed: [u8; 32],
}

impl UidGenerator {
    /// `root`: the organisation root (`node.uid_root`); `inputs`: the SOP
    /// Instance UIDs of every input instance (any order); `kind`: e.g. "SEG".
    pub fn new(root: &str, inputs: &[&str], pipeline: &str, model_version: &str, kind: &str) -> Result<UidGenerator, EncodeError> {
        check_root(root)?;
        let mut sorted: Vec<&str> = inputs.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        let mut h = Sha256::new();
        for part in [pipeline, model_version, kind] {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part.as_bytes());
        }
        h.update((sorted.len() as u64).to_le_bytes());
        for uid in sorted {
            h.update((uid.len() as u64).to_le_bytes());
            h.update(uid.as_bytes());
        }
        Ok(UidGenerator { root: root.to_string(), seed: h.finalize().into() })
    }

    /// The UID for one purpose ("series", "instance", "tracking/lesion 1" ...).
    pub fn uid(&self, purpose: &str) -> String {
        let mut h = Sha256::new();
        h.update(self.seed);
        h.update(purpose.as_bytes());
        let d: [u8; 32] = h.finalize().into();
        digits_uid(&self.root, &d)
    }

    pub fn series(&self) -> String {
        self.uid("series")
    }

    pub fn instance(&self) -> String {
        self.uid("instance")
    }
}

/// A UID under `root` for a stable name (e.g. the device observer UID of a pipeline).
pub fn named_uid(root: &str, name: &str) -> Result<String, EncodeError> {
    check_root(root)?;
    let d: [u8; 32] = Sha256::digest(name.as_bytes()).into();
    Ok(digits_uid(root, &d))
}

fn check_root(root: &str) -> Result<(), EncodeError> {
    let ok = !root.is_empty()
        && root.len() <= 40
        && root.split('.').all(|c| !c.is_empty() && c.bytes().all(|b| b.is_ascii_digit()) && (c == "0" || !c.starts_with('0')));
    if ok {
        Ok(())
    } else {
        Err(EncodeError::Invalid {
            attribute: "node.uid_root".into(),
            reason: format!("`{root}` is not a UID root (digits and dots, no leading zeros, at most 40 characters)"),
        })
    }
}

/// ROOT.N where N has as many digits as fit in 64 characters (at most 38),
/// taken from the first 16 bytes of the digest; the first digit is never 0.
fn digits_uid(root: &str, digest: &[u8; 32]) -> String {
    let room = (64 - root.len() - 1).min(38);
    let n = u128::from_be_bytes(digest[..16].try_into().unwrap());
    let lo = 10u128.pow(room as u32 - 1);
    let v = lo + n % (9 * lo);
    format!("{root}.{v}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOT: &str = "1.2.826.0.1.3680043.10.1137";

    fn valid(uid: &str) -> bool {
        uid.len() <= 64 && uid.split('.').all(|c| !c.is_empty() && c.bytes().all(|b| b.is_ascii_digit()) && (c == "0" || !c.starts_with('0')))
    }

    #[test]
    fn same_inputs_same_uids_in_any_order() {
        let a = UidGenerator::new(ROOT, &["1.2.3", "1.2.4"], "lung", "1.0", "SEG").unwrap();
        let b = UidGenerator::new(ROOT, &["1.2.4", "1.2.3"], "lung", "1.0", "SEG").unwrap();
        assert_eq!(a.series(), b.series());
        assert_eq!(a.instance(), b.instance());
        assert_ne!(a.series(), a.instance());
    }

    #[test]
    fn any_different_input_gives_different_uids() {
        let base = UidGenerator::new(ROOT, &["1.2.3", "1.2.4"], "lung", "1.0", "SEG").unwrap().instance();
        for other in [
            UidGenerator::new(ROOT, &["1.2.3"], "lung", "1.0", "SEG").unwrap(),
            UidGenerator::new(ROOT, &["1.2.3", "1.2.5"], "lung", "1.0", "SEG").unwrap(),
            UidGenerator::new(ROOT, &["1.2.3", "1.2.4"], "liver", "1.0", "SEG").unwrap(),
            UidGenerator::new(ROOT, &["1.2.3", "1.2.4"], "lung", "1.1", "SEG").unwrap(),
            UidGenerator::new(ROOT, &["1.2.3", "1.2.4"], "lung", "1.0", "SR").unwrap(),
            // length-prefixing: moving a character between fields changes the hash
            UidGenerator::new(ROOT, &["1.2.3", "1.2.4"], "lung1", ".0", "SEG").unwrap(),
        ] {
            assert_ne!(other.instance(), base);
        }
    }

    #[test]
    fn uids_are_valid_and_fill_64_characters() {
        for root in [ROOT, "1.2", "2.25.1", "1.2.826.0.1.3680043.10.1137.99999"] {
            let g = UidGenerator::new(root, &["1.2.3"], "p", "v", "SEG").unwrap();
            for purpose in ["series", "instance", "tracking/1", "x"] {
                let u = g.uid(purpose);
                assert!(valid(&u), "{u}");
                assert!(u.starts_with(&format!("{root}.")));
                assert!(u.len() >= 40, "{u}");
            }
        }
        assert_eq!(UidGenerator::new(ROOT, &[], "p", "v", "SEG").unwrap().series().len(), 64);
        let n = named_uid(ROOT, "device/lung").unwrap();
        assert!(valid(&n) && n == named_uid(ROOT, "device/lung").unwrap());
    }

    #[test]
    fn bad_roots_are_refused() {
        for root in ["", "1..2", "1.02", "a.b", "1.2.", &"1.2".repeat(20)] {
            assert!(UidGenerator::new(root, &[], "p", "v", "SEG").is_err(), "{root}");
        }
    }
}
