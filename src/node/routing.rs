//! Rules -> actions. Pure: given what a study contains, which rules match
//! and what they ask for. Matching is case-insensitive. Series-level
//! criteria (modality, body part, series description) must hold for one and
//! the same series; study-level ones for the study.

use regex::{Regex, RegexBuilder};

use crate::config::{Config, MatchMode, Rule};
use crate::spool::index::SeriesSummary;
use crate::spool::StudySummary;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Forward { rule: String, peer: String },
    Analyze { rule: String, pipeline: String, send_to: Vec<String> },
}

struct CompiledRule {
    rule: Rule,
    series_description: Option<Regex>,
    study_description: Option<Regex>,
    expected_series: Vec<Regex>,
}

pub struct Router {
    rules: Vec<CompiledRule>,
    mode: MatchMode,
}

fn ci(p: &str) -> Regex {
    // Config validation compiled these already; a failure here is a bug.
    RegexBuilder::new(p).case_insensitive(true).build().expect("validated regex")
}

fn eq_any(list: &[String], value: &str) -> bool {
    list.iter().any(|v| v.trim().eq_ignore_ascii_case(value.trim()))
}

impl Router {
    pub fn new(cfg: &Config) -> Router {
        let rules = cfg
            .rules
            .iter()
            .map(|r| CompiledRule {
                rule: r.clone(),
                series_description: r.matcher.series_description.as_deref().map(ci),
                study_description: r.matcher.study_description.as_deref().map(ci),
                expected_series: r.expected_series.iter().map(|p| ci(p)).collect(),
            })
            .collect();
        Router { rules, mode: cfg.routing.mode }
    }

    fn series_matches(&self, r: &CompiledRule, s: &SeriesSummary, study: &StudySummary) -> bool {
        let m = &r.rule.matcher;
        if !m.modality.is_empty() && !eq_any(&m.modality, &s.modality) {
            return false;
        }
        if !m.body_part.is_empty() {
            let ok = if s.body_part.trim().is_empty() {
                // BodyPartExamined is often empty: look for the body part
                // names or extra keywords in the descriptions instead.
                let text = format!("{} {}", s.series_description, study.study_description).to_ascii_uppercase();
                m.body_part.iter().chain(&m.body_part_keywords).any(|k| !k.trim().is_empty() && text.contains(&k.trim().to_ascii_uppercase()))
            } else {
                eq_any(&m.body_part, &s.body_part)
            };
            if !ok {
                return false;
            }
        }
        if let Some(re) = &r.series_description {
            if !re.is_match(&s.series_description) {
                return false;
            }
        }
        true
    }

    fn matches(&self, r: &CompiledRule, study: &StudySummary) -> bool {
        let m = &r.rule.matcher;
        if let Some(re) = &r.study_description {
            if !re.is_match(&study.study_description) {
                return false;
            }
        }
        if !m.calling_ae.is_empty() && !study.calling_aes.iter().any(|a| eq_any(&m.calling_ae, a)) {
            return false;
        }
        if !m.sop_class.is_empty() && !study.sop_classes.iter().any(|c| m.sop_class.iter().any(|x| x.trim() == c)) {
            return false;
        }
        let series_level = !m.modality.is_empty() || !m.body_part.is_empty() || r.series_description.is_some();
        !series_level || study.series.iter().any(|s| self.series_matches(r, s, study))
    }

    /// Names of the rules that match, in config order (one at most in first_match mode).
    pub fn matching_rules(&self, study: &StudySummary) -> Vec<&Rule> {
        let mut out = Vec::new();
        for r in &self.rules {
            if self.matches(r, study) {
                out.push(&r.rule);
                if self.mode == MatchMode::FirstMatch {
                    break;
                }
            }
        }
        out
    }

    pub fn route(&self, study: &StudySummary) -> Vec<Action> {
        let mut actions = Vec::new();
        for rule in self.matching_rules(study) {
            for peer in &rule.forward_to {
                actions.push(Action::Forward { rule: rule.name.clone(), peer: peer.clone() });
            }
            if let Some(p) = &rule.analyze {
                actions.push(Action::Analyze { rule: rule.name.clone(), pipeline: p.clone(), send_to: rule.send_to.clone() });
            }
        }
        actions
    }

    /// True when some matching rule lists expected series and all are present.
    pub fn expected_series_present(&self, study: &StudySummary) -> bool {
        self.rules
            .iter()
            .filter(|r| !r.expected_series.is_empty() && self.matches(r, study))
            .any(|r| r.expected_series.iter().all(|re| study.series.iter().any(|s| re.is_match(&s.series_description))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(rules: &str) -> Config {
        let peers = "[[peers]]\nname=\"a\"\nae_title=\"A\"\nhost=\"127.0.0.1\"\nport=1\n[[peers]]\nname=\"b\"\nae_title=\"B\"\nhost=\"127.0.0.1\"\nport=2\n";
        Config::from_toml(&format!("{peers}{rules}")).unwrap()
    }

    fn study(series: &[(&str, &str, &str)], desc: &str) -> StudySummary {
        StudySummary {
            study_uid: "1.2".into(),
            study_description: desc.into(),
            calling_aes: vec!["MODALITY1".into()],
            sop_classes: vec!["1.2.840.10008.5.1.4.1.1.2".into()],
            series: series
                .iter()
                .enumerate()
                .map(|(i, (m, b, d))| SeriesSummary {
                    series_uid: format!("1.2.{i}"),
                    modality: m.to_string(),
                    body_part: b.to_string(),
                    series_description: d.to_string(),
                })
                .collect(),
            generation: 0,
        }
    }

    #[test]
    fn embedded_default_sends_ap_pelvis_radiographs_to_hip_tha() {
        let r = Router::new(&Config::load(None).unwrap());
        let hip = |rule: &str| vec![Action::Analyze { rule: rule.into(), pipeline: "hip-tha".into(), send_to: vec![] }];
        assert_eq!(r.route(&study(&[("DX", "PELVIS", "")], "")), hip("hip-tha"));
        assert_eq!(r.route(&study(&[("CR", "hip", "")], "")), hip("hip-tha"));
        // empty Body Part Examined: the descriptions decide
        assert_eq!(r.route(&study(&[("DX", "", "Becken a.p.")], "")), hip("hip-tha"));
        assert_eq!(r.route(&study(&[("CR", "", "")], "XR PELVIS 1 VIEW")), hip("hip-tha"));
        assert!(r.route(&study(&[("DX", "CHEST", "")], "")).is_empty());
        assert!(r.route(&study(&[("CT", "PELVIS", "")], "")).is_empty());
    }

    #[test]
    fn embedded_default_sends_chest_ct_to_lung_lesions() {
        let r = Router::new(&Config::load(None).unwrap());
        let lung = vec![Action::Analyze { rule: "lung-lesions".into(), pipeline: "lung-lesions".into(), send_to: vec![] }];
        assert_eq!(r.route(&study(&[("CT", "CHEST", "")], "")), lung);
        assert_eq!(r.route(&study(&[("CT", "lung", "")], "")), lung);
        // empty Body Part Examined: the descriptions decide
        assert_eq!(r.route(&study(&[("CT", "", "Thorax nativ 1mm")], "")), lung);
        assert_eq!(r.route(&study(&[("CT", "", "")], "TC TORACE")), lung);
        assert!(r.route(&study(&[("CT", "ABDOMEN", "")], "")).is_empty());
        assert!(r.route(&study(&[("MR", "CHEST", "")], "")).is_empty());
        assert!(r.route(&study(&[("DX", "CHEST", "")], "")).is_empty());
    }

    #[test]
    fn empty_match_matches_everything() {
        let r = Router::new(&cfg("[[rules]]\nname=\"all\"\nmatch={}\nforward_to=[\"a\"]\n"));
        assert_eq!(r.route(&study(&[("MR", "", "")], "")), vec![Action::Forward { rule: "all".into(), peer: "a".into() }]);
    }

    #[test]
    fn modality_and_body_part_case_insensitive_on_same_series() {
        let r = Router::new(&cfg("[[rules]]\nname=\"chest\"\nmatch={modality=[\"ct\"], body_part=[\"Chest\"]}\nforward_to=[\"a\"]\n"));
        assert_eq!(r.route(&study(&[("CT", "CHEST", "")], "")).len(), 1);
        assert!(r.route(&study(&[("CT", "ABDOMEN", "")], "")).is_empty());
        // criteria split across two series do not match
        assert!(r.route(&study(&[("CT", "ABDOMEN", ""), ("DX", "CHEST", "")], "")).is_empty());
    }

    #[test]
    fn body_part_falls_back_to_description_keywords() {
        let r = Router::new(&cfg(
            "[[rules]]\nname=\"lung\"\nmatch={modality=[\"CT\"], body_part=[\"CHEST\"], body_part_keywords=[\"thorax\",\"lung\"]}\nforward_to=[\"a\"]\n",
        ));
        assert_eq!(r.route(&study(&[("CT", "", "Lung 1.0 B70f")], "")).len(), 1);
        assert_eq!(r.route(&study(&[("CT", "", "axial")], "CT THORAX w/o")).len(), 1);
        assert_eq!(r.route(&study(&[("CT", "", "axial")], "Chest routine")).len(), 1);
        assert!(r.route(&study(&[("CT", "", "axial")], "abdomen")).is_empty());
        // a present but different body part is not overridden by the description
        assert!(r.route(&study(&[("CT", "HEAD", "lung window")], "")).is_empty());
    }

    #[test]
    fn first_match_versus_all_matches() {
        let rules = "[[rules]]\nname=\"one\"\nmatch={modality=[\"CT\"]}\nforward_to=[\"a\"]\n[[rules]]\nname=\"two\"\nmatch={}\nforward_to=[\"b\"]\n";
        let all = Router::new(&cfg(rules));
        assert_eq!(all.route(&study(&[("CT", "", "")], "")).len(), 2);
        let first = Router::new(&cfg(&format!("[routing]\nmode=\"first_match\"\n{rules}")));
        assert_eq!(first.route(&study(&[("CT", "", "")], "")), vec![Action::Forward { rule: "one".into(), peer: "a".into() }]);
        assert_eq!(first.route(&study(&[("MR", "", "")], "")), vec![Action::Forward { rule: "two".into(), peer: "b".into() }]);
    }

    #[test]
    fn regex_calling_ae_and_sop_class() {
        let r = Router::new(&cfg(
            "[[rules]]\nname=\"r\"\nmatch={series_description=\"^art\", study_description=\"liver\", calling_ae=[\"modality1\"], sop_class=[\"1.2.840.10008.5.1.4.1.1.2\"]}\nforward_to=[\"a\"]\n",
        ));
        assert_eq!(r.route(&study(&[("CT", "", "ARTERIAL")], "Liver 3-phase")).len(), 1);
        assert!(r.route(&study(&[("CT", "", "venous")], "Liver 3-phase")).is_empty());
        let mut s = study(&[("CT", "", "ARTERIAL")], "Liver");
        s.calling_aes = vec!["OTHER".into()];
        assert!(r.route(&s).is_empty());
    }

    #[test]
    fn expected_series() {
        let r = Router::new(&cfg("[[rules]]\nname=\"r\"\nmatch={modality=[\"CT\"]}\nexpected_series=[\"arterial\",\"venous\"]\nforward_to=[\"a\"]\n"));
        assert!(!r.expected_series_present(&study(&[("CT", "", "Arterial")], "")));
        assert!(r.expected_series_present(&study(&[("CT", "", "Arterial"), ("CT", "", "Portal venous")], "")));
    }
}
