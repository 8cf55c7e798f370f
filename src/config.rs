//! Typed configuration. The embedded default is `conf/node.toml`; a user file
//! is merged over it key by key, so a file only needs the keys it changes.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The default configuration, compiled into the binary.
pub const DEFAULT_TOML: &str = include_str!("../conf/node.toml");

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {error}")]
    Read { path: PathBuf, error: std::io::Error },
    #[error("config {origin}: {message}")]
    Parse { origin: String, message: String },
    #[error("config {origin}: field `{field}`: {reason}")]
    Invalid { origin: String, field: String, reason: String },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub node: NodeConfig,
    pub assembly: AssemblyConfig,
    pub routing: RoutingConfig,
    pub export: ExportConfig,
    pub retention: RetentionConfig,
    pub http: HttpConfig,
    pub results: ResultsConfig,
    /// Settings of the analysis pipelines (`[pipelines]`, `[pipelines.NAME]`).
    #[serde(default)]
    pub pipelines: crate::pipelines::PipelinesConfig,
    #[serde(default)]
    pub peers: Vec<Peer>,
    #[serde(default)]
    pub accept: Vec<AcceptEntry>,
    #[serde(default)]
    pub rules: Vec<Rule>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    pub ae_title: String,
    pub bind: String,
    pub port: u16,
    pub data_dir: PathBuf,
    pub max_associations: usize,
    pub max_pdu: u32,
    pub artim_seconds: u64,
    pub idle_seconds: u64,
    pub min_free_disk_mb: u64,
    pub duplicates: DuplicatePolicy,
    pub private_sop_classes: Vec<String>,
    pub uid_root: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DuplicatePolicy {
    KeepFirst,
    Replace,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssemblyConfig {
    pub quiet_seconds: u64,
    pub force_complete_seconds: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MatchMode {
    FirstMatch,
    AllMatches,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingConfig {
    pub mode: MatchMode,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportConfig {
    pub batch_size: usize,
    pub connect_timeout_seconds: u64,
    pub dimse_timeout_seconds: u64,
    pub max_attempts: u32,
    pub backoff_initial_seconds: u64,
    pub backoff_max_seconds: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    pub keep_seconds: u64,
    pub sweep_seconds: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    pub enabled: bool,
    pub bind: String,
    pub port: u16,
    /// Studies per page on the status page and `/api/studies` (most 500).
    pub page_size: usize,
    /// How often the status page reloads its data.
    pub refresh_seconds: u64,
    /// Accept actions (`POST /api/jobs/ID/retry`) from other hosts than the
    /// node's own. Off: only a client on loopback may act, whatever `bind`.
    pub remote_actions: bool,
}

/// Attributes of the result objects the node writes (SEG, SR, GSPS, SC).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResultsConfig {
    pub manufacturer: String,
    pub model_name: String,
    /// Empty: the node's AE title.
    pub device_serial_number: String,
    pub institution_name: String,
    /// Content Creator's Name (DICOM PN, e.g. "AINODE^AI").
    pub content_creator: String,
    pub seg_series_number: i32,
    pub seg_series_description: String,
    pub sr_series_number: i32,
    pub sr_series_description: String,
    pub pr_series_number: i32,
    pub pr_series_description: String,
    pub sc_series_number: i32,
    pub sc_series_description: String,
    /// Leave SEG frames without foreground out (default: keep them).
    pub seg_omit_empty_frames: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Peer {
    pub name: String,
    pub ae_title: String,
    pub host: String,
    pub port: u16,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcceptEntry {
    /// Calling AE title; empty or absent = any.
    #[serde(default)]
    pub calling_ae: String,
    /// Host (IP address); empty or absent = any.
    #[serde(default)]
    pub host: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub name: String,
    #[serde(rename = "match", default)]
    pub matcher: RuleMatch,
    /// Peers the study is forwarded to, as received.
    #[serde(default)]
    pub forward_to: Vec<String>,
    /// Analysis pipeline to run on the study.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analyze: Option<String>,
    /// Peers the analysis results are sent to.
    #[serde(default)]
    pub send_to: Vec<String>,
    /// Series description patterns (regex) that must all be present for the
    /// study to count as complete before the quiet period ends.
    #[serde(default)]
    pub expected_series: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleMatch {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub modality: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub body_part: Vec<String>,
    /// Extra words looked for in the study/series description when
    /// BodyPartExamined is empty (the `body_part` values are always tried).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub body_part_keywords: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sop_class: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub series_description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub study_description: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub calling_ae: Vec<String>,
}

impl Config {
    /// Loads the embedded default, merges `path` over it when given, and validates.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let mut merged: toml::Value =
            toml::from_str(DEFAULT_TOML).map_err(|e| ConfigError::Parse { origin: "(embedded default)".into(), message: e.to_string() })?;
        let origin = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|error| ConfigError::Read { path: p.to_path_buf(), error })?;
                let user: toml::Value = toml::from_str(&text).map_err(|e| ConfigError::Parse { origin: p.display().to_string(), message: e.to_string() })?;
                merge(&mut merged, user);
                p.display().to_string()
            }
            None => "(embedded default)".to_string(),
        };
        let cfg: Config = merged.try_into().map_err(|e: toml::de::Error| ConfigError::Parse { origin: origin.clone(), message: e.to_string() })?;
        cfg.validate(&origin)?;
        Ok(cfg)
    }

    /// Parses a complete config from text (tests and examples).
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let mut merged: toml::Value = toml::from_str(DEFAULT_TOML).expect("embedded default parses");
        let user: toml::Value = toml::from_str(text).map_err(|e| ConfigError::Parse { origin: "(text)".into(), message: e.to_string() })?;
        merge(&mut merged, user);
        let cfg: Config = merged.try_into().map_err(|e: toml::de::Error| ConfigError::Parse { origin: "(text)".into(), message: e.to_string() })?;
        cfg.validate("(text)")?;
        Ok(cfg)
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("config serialises")
    }

    pub fn peer(&self, name: &str) -> Option<&Peer> {
        self.peers.iter().find(|p| p.name == name)
    }

    fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        let bad = |field: &str, reason: String| ConfigError::Invalid { origin: origin.to_string(), field: field.to_string(), reason };
        check_ae("node.ae_title", &self.node.ae_title).map_err(|r| bad("node.ae_title", r))?;
        if self.node.max_associations == 0 {
            return Err(bad("node.max_associations", "must be at least 1".into()));
        }
        if !(4096..=16 * 1024 * 1024).contains(&self.node.max_pdu) {
            return Err(bad("node.max_pdu", "must be between 4096 and 16777216 bytes".into()));
        }
        if !is_uid(&self.node.uid_root) || self.node.uid_root.len() > 30 {
            return Err(bad("node.uid_root", "must be a UID of digits and dots, at most 30 characters".into()));
        }
        for uid in &self.node.private_sop_classes {
            if !is_uid(uid) {
                return Err(bad("node.private_sop_classes", format!("`{uid}` is not a UID")));
            }
        }
        let r = &self.results;
        for (field, value, max) in [
            ("results.manufacturer", &r.manufacturer, 64),
            ("results.model_name", &r.model_name, 64),
            ("results.device_serial_number", &r.device_serial_number, 64),
            ("results.institution_name", &r.institution_name, 64),
            ("results.content_creator", &r.content_creator, 64),
            ("results.seg_series_description", &r.seg_series_description, 64),
            ("results.sr_series_description", &r.sr_series_description, 64),
            ("results.pr_series_description", &r.pr_series_description, 64),
            ("results.sc_series_description", &r.sc_series_description, 64),
        ] {
            if value.len() > max || value.contains('\\') || value.chars().any(|c| c.is_control()) {
                return Err(bad(field, format!("at most {max} characters, no backslash or control characters")));
            }
        }
        if r.manufacturer.trim().is_empty() || r.model_name.trim().is_empty() {
            return Err(bad("results.manufacturer/model_name", "must not be empty (Type 1 in SEG)".into()));
        }
        for (field, n) in [
            ("results.seg_series_number", r.seg_series_number),
            ("results.sr_series_number", r.sr_series_number),
            ("results.pr_series_number", r.pr_series_number),
            ("results.sc_series_number", r.sc_series_number),
        ] {
            if n < 0 {
                return Err(bad(field, "must not be negative".into()));
            }
        }
        if !(1..=500).contains(&self.http.page_size) {
            return Err(bad("http.page_size", "must be between 1 and 500".into()));
        }
        if self.http.refresh_seconds == 0 {
            return Err(bad("http.refresh_seconds", "must be at least 1".into()));
        }
        if self.assembly.quiet_seconds == 0 {
            return Err(bad("assembly.quiet_seconds", "must be at least 1".into()));
        }
        if self.assembly.force_complete_seconds < self.assembly.quiet_seconds {
            return Err(bad("assembly.force_complete_seconds", "must be >= assembly.quiet_seconds".into()));
        }
        if self.export.batch_size == 0 {
            return Err(bad("export.batch_size", "must be at least 1".into()));
        }
        if self.export.max_attempts == 0 {
            return Err(bad("export.max_attempts", "must be at least 1".into()));
        }
        if self.export.backoff_max_seconds < self.export.backoff_initial_seconds {
            return Err(bad("export.backoff_max_seconds", "must be >= export.backoff_initial_seconds".into()));
        }
        let mut names = HashSet::new();
        for (i, p) in self.peers.iter().enumerate() {
            let f = format!("peers[{i}]");
            if p.name.is_empty() || !names.insert(p.name.as_str()) {
                return Err(bad(&format!("{f}.name"), format!("`{}` is empty or used twice", p.name)));
            }
            check_ae(&format!("{f}.ae_title"), &p.ae_title).map_err(|r| bad(&format!("{f}.ae_title"), r))?;
            if p.host.is_empty() {
                return Err(bad(&format!("{f}.host"), "must not be empty".into()));
            }
        }
        for (i, a) in self.accept.iter().enumerate() {
            if !a.calling_ae.is_empty() {
                check_ae("", &a.calling_ae).map_err(|r| bad(&format!("accept[{i}].calling_ae"), r))?;
            }
            if !a.host.is_empty() && a.host.parse::<std::net::IpAddr>().is_err() {
                return Err(bad(&format!("accept[{i}].host"), format!("`{}` is not an IP address", a.host)));
            }
        }
        let mut rule_names = HashSet::new();
        for (i, r) in self.rules.iter().enumerate() {
            let f = format!("rules[{i}] ({})", r.name);
            if r.name.is_empty() || !rule_names.insert(r.name.as_str()) {
                return Err(bad(&format!("rules[{i}].name"), format!("`{}` is empty or used twice", r.name)));
            }
            for peer in r.forward_to.iter().chain(&r.send_to) {
                if self.peer(peer).is_none() {
                    return Err(bad(&format!("{f}.forward_to/send_to"), format!("no [[peers]] entry named `{peer}`")));
                }
            }
            if let Some(p) = &r.analyze {
                let known = crate::pipelines::names();
                if !known.contains(&p.as_str()) {
                    return Err(bad(&format!("{f}.analyze"), format!("unknown pipeline `{p}`; available: [{}]", known.join(", "))));
                }
            }
            if r.analyze.is_none() && !r.send_to.is_empty() {
                return Err(bad(&format!("{f}.send_to"), "send_to needs `analyze`; use forward_to to route studies".into()));
            }
            if r.analyze.is_none() && r.forward_to.is_empty() {
                return Err(bad(&format!("{f}"), "a rule needs forward_to and/or analyze".into()));
            }
            for (key, pattern) in [("match.series_description", &r.matcher.series_description), ("match.study_description", &r.matcher.study_description)] {
                if let Some(p) = pattern {
                    regex::RegexBuilder::new(p).case_insensitive(true).build().map_err(|e| bad(&format!("{f}.{key}"), e.to_string()))?;
                }
            }
            for p in &r.expected_series {
                regex::RegexBuilder::new(p).case_insensitive(true).build().map_err(|e| bad(&format!("{f}.expected_series"), e.to_string()))?;
            }
        }
        let pl = &self.pipelines;
        pl.device.parse::<crate::models::device::DeviceSpec>().map_err(|e| bad("pipelines.device", e.to_string()))?;
        if !(0..=19).contains(&pl.nice) {
            return Err(bad("pipelines.nice", format!("{} is not in 0..19", pl.nice)));
        }
        let hip = &pl.hip_tha;
        if let Some(s) = hip.min_score {
            if !(0.0..=1.0).contains(&s) {
                return Err(bad("pipelines.hip-tha.min_score", format!("{s} is not in [0, 1]")));
            }
        }
        let r = &hip.risk;
        for (field, lo, hi) in [
            ("abduction_min_deg/abduction_max_deg", r.abduction_min_deg, r.abduction_max_deg),
            ("vertical_low_mm/vertical_high_mm", r.vertical_low_mm, r.vertical_high_mm),
            ("horizontal_medial_mm/horizontal_lateral_mm", r.horizontal_medial_mm, r.horizontal_lateral_mm),
        ] {
            if !(lo.is_finite() && hi.is_finite() && lo <= hi) {
                return Err(bad(&format!("pipelines.hip-tha.risk.{field}"), format!("the range {lo}..{hi} is empty")));
            }
        }
        if !(0.0..=100.0).contains(&r.coverage_min_pct) {
            return Err(bad("pipelines.hip-tha.risk.coverage_min_pct", format!("{} is not a percentage", r.coverage_min_pct)));
        }
        pl.lung_lesions.validate().map_err(|e| bad("pipelines.lung-lesions", e))?;
        Ok(())
    }
}

/// Merges `over` into `base`: tables recursively, everything else replaced.
fn merge(base: &mut toml::Value, over: toml::Value) {
    match (base, over) {
        (toml::Value::Table(b), toml::Value::Table(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(existing) => merge(existing, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, o) => *b = o,
    }
}

fn check_ae(_field: &str, ae: &str) -> Result<(), String> {
    let t = ae.trim();
    if t.is_empty() || t.len() > 16 {
        return Err(format!("AE title `{ae}` must be 1 to 16 characters"));
    }
    if t.chars().any(|c| !c.is_ascii() || c.is_ascii_control() || c == '\\') {
        return Err(format!("AE title `{ae}` has characters outside the DICOM default repertoire"));
    }
    Ok(())
}

pub fn is_uid(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.split('.').all(|c| !c.is_empty() && c.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_is_valid() {
        let cfg = Config::load(None).unwrap();
        assert_eq!(cfg.node.ae_title, "AINODE");
        assert_eq!(cfg.node.port, 11112);
        assert_eq!(cfg.assembly.quiet_seconds, 10);
        assert_eq!(cfg.assembly.force_complete_seconds, 900);
    }

    #[test]
    fn user_file_overrides_single_keys() {
        let cfg = Config::from_toml("[node]\nport = 4000\n[assembly]\nquiet_seconds = 2\n").unwrap();
        assert_eq!(cfg.node.port, 4000);
        assert_eq!(cfg.node.ae_title, "AINODE");
        assert_eq!(cfg.assembly.quiet_seconds, 2);
        assert_eq!(cfg.assembly.force_complete_seconds, 900);
    }

    #[test]
    fn unknown_peer_in_rule_names_the_field() {
        let err = Config::from_toml("[[rules]]\nname = \"r\"\nmatch = {}\nforward_to = [\"nowhere\"]\n").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("rules[0] (r).forward_to"), "{msg}");
        assert!(msg.contains("nowhere"), "{msg}");
    }

    #[test]
    fn unknown_key_is_rejected() {
        let err = Config::from_toml("[node]\nae_tittle = \"X\"\n").unwrap_err();
        assert!(err.to_string().contains("ae_tittle"), "{err}");
    }

    #[test]
    fn bad_regex_and_ae_are_rejected() {
        let e = Config::from_toml(
            "[[peers]]\nname=\"p\"\nae_title=\"P\"\nhost=\"127.0.0.1\"\nport=1\n[[rules]]\nname=\"r\"\nforward_to=[\"p\"]\nmatch={series_description=\"(\"}\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("match.series_description"), "{e}");
        let e = Config::from_toml("[node]\nae_title = \"MUCH_TOO_LONG_AE_TITLE\"\n").unwrap_err();
        assert!(e.to_string().contains("node.ae_title"), "{e}");
    }

    #[test]
    fn results_settings_are_validated() {
        let c = Config::from_toml("[results]\nseg_series_number = 42\n").unwrap();
        assert_eq!(c.results.seg_series_number, 42);
        assert_eq!(c.results.manufacturer, "ainode");
        let e = Config::from_toml("[results]\nmanufacturer = \"\"\n").unwrap_err();
        assert!(e.to_string().contains("results.manufacturer"), "{e}");
        let e = Config::from_toml("[results]\nsr_series_description = \"a\\\\b\"\n").unwrap_err();
        assert!(e.to_string().contains("results.sr_series_description"), "{e}");
        let e = Config::from_toml("[results]\npr_series_number = -1\n").unwrap_err();
        assert!(e.to_string().contains("results.pr_series_number"), "{e}");
    }

    #[test]
    fn pipeline_settings_default_to_the_source_and_are_validated() {
        let c = Config::load(None).unwrap();
        let hip = &c.pipelines.hip_tha;
        assert_eq!((hip.risk.abduction_min_deg, hip.risk.abduction_max_deg, hip.risk.coverage_min_pct), (30.0, 50.0, 70.0));
        assert_eq!(
            (hip.risk.vertical_low_mm, hip.risk.vertical_high_mm, hip.risk.horizontal_medial_mm, hip.risk.horizontal_lateral_mm),
            (-6.0, 6.0, -5.0, 5.0)
        );
        assert_eq!(hip, &crate::pipelines::hip_tha::HipThaSettings::default(), "conf/node.toml and the code agree");
        assert_eq!(c.rules.iter().filter_map(|r| r.analyze.as_deref()).collect::<Vec<_>>(), vec!["hip-tha", "lung-lesions"]);
        assert_eq!(&c.pipelines.lung_lesions, &crate::pipelines::lung_lesions::LungLesionsSettings::default(), "conf/node.toml and the code agree");
        let e = Config::from_toml("[pipelines.lung-lesions]\nmin_lung_overlap = 1.5\n").unwrap_err().to_string();
        assert!(e.contains("pipelines.lung-lesions") && e.contains("min_lung_overlap"), "{e}");
        let e = Config::from_toml("[pipelines.hip-tha.risk]\nabduction_min_deg = 60.0\n").unwrap_err().to_string();
        assert!(e.contains("pipelines.hip-tha.risk.abduction_min_deg"), "{e}");
        let e = Config::from_toml("[pipelines.hip-tha]\nmin_score = 2.0\n").unwrap_err().to_string();
        assert!(e.contains("pipelines.hip-tha.min_score"), "{e}");
        let e = Config::from_toml("[pipelines]\ndevice = \"tpu\"\n").unwrap_err().to_string();
        assert!(e.contains("pipelines.device"), "{e}");
        let e = Config::from_toml("[[rules]]\nname = \"x\"\nanalyze = \"nope\"\n").unwrap_err().to_string();
        assert!(e.contains("unknown pipeline `nope`; available: [hip-tha, lung-lesions]"), "{e}");
        // a user's rules replace the default list
        let c = Config::from_toml("[[peers]]\nname=\"p\"\nae_title=\"P\"\nhost=\"h\"\nport=1\n[[rules]]\nname = \"f\"\nforward_to = [\"p\"]\n").unwrap();
        assert_eq!(c.rules.len(), 1);
    }

    #[test]
    fn uid_check() {
        assert!(is_uid("1.2.840.10008.1.1"));
        assert!(!is_uid("1..2"));
        assert!(!is_uid("1.2a"));
    }
}
