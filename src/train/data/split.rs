//! Splits: the fixed train/test split the data sets ship (their own split
//! files) and a deterministic validation carve-out from train, because the
//! shared data has only train and test.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::rng::{Purpose, Rng};

/// Which part of a data set: loaded, trained on, or evaluated on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Train,
    /// The validation carve-out of the training split (model selection).
    #[value(alias = "validation")]
    Val,
    Test,
}

impl std::fmt::Display for Split {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Split::Train => "train",
            Split::Val => "val",
            Split::Test => "test",
        })
    }
}

/// A split file's entry for one item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileSplit {
    Train,
    Test,
    /// Used for neither training nor testing (e.g. ceph-hamedan's duplicates).
    Excluded,
}

impl FileSplit {
    /// Parses a split column value; `Val`/`validation` count as train rows
    /// that a carve-out may take (the carve-out is deterministic anyway).
    pub fn parse(s: &str) -> Option<FileSplit> {
        match s.trim().to_ascii_lowercase().as_str() {
            "train" | "training" => Some(FileSplit::Train),
            "test" | "testing" => Some(FileSplit::Test),
            "excluded" | "exclude" => Some(FileSplit::Excluded),
            _ => None,
        }
    }
}

/// How much of train becomes validation, chosen by seed.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ValidationCarveOut {
    /// Fraction of the train groups (0 = no validation set).
    pub fraction: f64,
    pub seed: u64,
}

impl Default for ValidationCarveOut {
    fn default() -> Self {
        // 10 %: the 9:1 proportion the cephalometric source uses for its own split (S23)
        ValidationCarveOut { fraction: 0.1, seed: 0 }
    }
}

impl ValidationCarveOut {
    pub const NONE: ValidationCarveOut = ValidationCarveOut { fraction: 0.0, seed: 0 };
}

/// Assigns each item its split: `Test` from the file, `Excluded` dropped
/// (`None`), train items whose group falls in the carve-out become `Val`.
/// Groups (patients, series) stay on one side; the carve-out takes
/// `round(fraction * train groups)` groups, chosen by a seeded shuffle of the
/// sorted group names, so it is independent of file order.
pub fn assign(items: &[(FileSplit, String)], carve: ValidationCarveOut) -> Vec<Option<Split>> {
    let groups: BTreeSet<&str> = items.iter().filter(|(s, _)| *s == FileSplit::Train).map(|(_, g)| g.as_str()).collect();
    let mut groups: Vec<&str> = groups.into_iter().collect();
    let n_val = (carve.fraction.clamp(0.0, 1.0) * groups.len() as f64).round() as usize;
    Rng::stream(Purpose::ValidationSplit, carve.seed, 0, 0).shuffle(&mut groups);
    let val: BTreeSet<&str> = groups.into_iter().take(n_val).collect();
    items
        .iter()
        .map(|(s, g)| match s {
            FileSplit::Excluded => None,
            FileSplit::Test => Some(Split::Test),
            FileSplit::Train if val.contains(g.as_str()) => Some(Split::Val),
            FileSplit::Train => Some(Split::Train),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn carve_out_keeps_groups_and_is_seeded() {
        let mut items: Vec<(FileSplit, String)> = (0..20).map(|i| (FileSplit::Train, format!("g{}", i / 2))).collect();
        items.push((FileSplit::Test, "t".into()));
        items.push((FileSplit::Excluded, "x".into()));
        let a = assign(&items, ValidationCarveOut { fraction: 0.2, seed: 5 });
        assert_eq!(a.iter().filter(|s| **s == Some(Split::Val)).count(), 4); // 2 of 10 groups
        assert_eq!(a[20], Some(Split::Test));
        assert_eq!(a[21], None);
        for pair in a[..20].chunks(2) {
            assert_eq!(pair[0], pair[1], "a group is split");
        }
        // same seed, other order of items: same assignment per item
        let mut rev = items.clone();
        rev.reverse();
        let b = assign(&rev, ValidationCarveOut { fraction: 0.2, seed: 5 });
        let mut b2 = b.clone();
        b2.reverse();
        assert_eq!(a, b2);
        let c = assign(&items, ValidationCarveOut { fraction: 0.2, seed: 6 });
        assert_ne!(a, c);
        assert!(assign(&items, ValidationCarveOut::NONE).iter().all(|s| *s != Some(Split::Val)));
    }
}
