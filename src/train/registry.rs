//! Which models `ainode train` / `ainode eval` know: a name → a constructor
//! of the model's `TrainTask` (its network, built from config, and its data).
//! The model issues add their entries to `Registry::builtin`.

use anyhow::bail;

use super::task::{TaskOptions, TrainTask};

pub type BuildTask = fn(&TaskOptions) -> anyhow::Result<Box<dyn TrainTask>>;

#[derive(Clone)]
pub struct ModelEntry {
    pub name: &'static str,
    /// One line for `--help` style listings.
    pub summary: &'static str,
    pub build: BuildTask,
}

/// A set of trainable models by name.
#[derive(Clone, Default)]
pub struct Registry {
    entries: Vec<ModelEntry>,
}

impl Registry {
    /// The models this build can train and evaluate.
    pub fn builtin() -> Self {
        Registry {
            entries: vec![
                ModelEntry {
                    name: "hip-tha",
                    summary: "SSD512 keypoints of a hip after total hip arthroplasty (data: ainode data synth hip-tha)",
                    build: super::tasks::hip_tha::build,
                },
                ModelEntry {
                    name: "lung-lesions",
                    summary: "Mask R-CNN for ground-glass opacity and consolidation on chest CT slices (data: ../shared/data/lung-medseg)",
                    build: super::tasks::lung_lesions::build,
                },
            ],
        }
    }

    /// A registry of the given entries (tests, tools).
    pub fn with(entries: Vec<ModelEntry>) -> Self {
        Registry { entries }
    }

    pub fn names(&self) -> Vec<&'static str> {
        self.entries.iter().map(|e| e.name).collect()
    }

    pub fn entries(&self) -> &[ModelEntry] {
        &self.entries
    }

    pub fn get(&self, name: &str) -> anyhow::Result<&ModelEntry> {
        match self.entries.iter().find(|e| e.name == name) {
            Some(e) => Ok(e),
            None => {
                let known = if self.entries.is_empty() { "(none registered yet)".to_string() } else { self.names().join(", ") };
                bail!("unknown model {name}; known: {known}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn never(_: &TaskOptions) -> anyhow::Result<Box<dyn TrainTask>> {
        bail!("not built in this test")
    }

    #[test]
    fn unknown_names_list_the_known_ones() {
        let e = Registry::builtin().get("ceph").err().unwrap();
        assert_eq!(e.to_string(), "unknown model ceph; known: hip-tha, lung-lesions");
        let r = Registry::with(vec![ModelEntry { name: "kidney-us", summary: "", build: never }, ModelEntry { name: "hip-ssd", summary: "", build: never }]);
        assert_eq!(r.get("x").err().unwrap().to_string(), "unknown model x; known: kidney-us, hip-ssd");
        assert_eq!(r.get("hip-ssd").unwrap().name, "hip-ssd");
    }
}
