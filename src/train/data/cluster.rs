//! Data analysis of the cephalometric source (MODELS.md S21): intensity
//! histograms per image, K-means (k-means++ initialisation, seeded), and
//! the separation measure DP = mean pairwise distance between cluster
//! centres (larger = better separated), to expose vendor / scanner groups.
//! The chosen k is the one with the largest DP, as the source defines its
//! quality measure; the silhouette is reported beside it as a check.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::datasets::{read_image, Channels};
use super::error::{DataError, Result};
use crate::imaging::decode::{decode_file, ColorMode};
use crate::rng::{Purpose, Rng};

/// Which k to try.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum KChoice {
    Fixed(usize),
    /// Inclusive range.
    Range(usize, usize),
}

impl std::str::FromStr for KChoice {
    type Err = String;
    /// `K` or `LO..HI` (inclusive).
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let bad = || format!("'{s}': expected K or LO..HI (e.g. 2..8)");
        match s.split_once("..") {
            Some((a, b)) => {
                let (a, b): (usize, usize) = (a.trim().parse().map_err(|_| bad())?, b.trim().trim_start_matches('=').parse().map_err(|_| bad())?);
                if a < 1 || b < a {
                    return Err(format!("'{s}': need 1 <= LO <= HI"));
                }
                Ok(KChoice::Range(a, b))
            }
            None => match s.trim().parse() {
                Ok(k) if k >= 1 => Ok(KChoice::Fixed(k)),
                _ => Err(bad()),
            },
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClusterConfig {
    pub k: KChoice,
    pub bins: usize,
    pub seed: u64,
    /// Intensity range of the histograms; `None` = each image's own min..max
    /// (compares histogram shapes across images in different units).
    pub range: Option<(f64, f64)>,
    /// k-means++ restarts per k; the lowest within-cluster sum of squares wins.
    pub restarts: usize,
    pub max_iterations: usize,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig { k: KChoice::Range(2, 8), bins: 64, seed: 0, range: None, restarts: 10, max_iterations: 300 }
    }
}

/// Result of one K-means run.
#[derive(Debug, Clone, PartialEq)]
pub struct KMeans {
    pub centres: Vec<Vec<f64>>,
    pub assignment: Vec<usize>,
    /// Within-cluster sum of squared distances.
    pub inertia: f64,
}

fn dist2(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

fn nearest(p: &[f64], centres: &[Vec<f64>]) -> (usize, f64) {
    centres.iter().enumerate().map(|(i, c)| (i, dist2(p, c))).fold((0, f64::INFINITY), |a, b| if b.1 < a.1 { b } else { a })
}

/// Lloyd's K-means from a k-means++ start (Arthur & Vassilvitskii 2007),
/// best of `restarts` runs.
pub fn kmeans(points: &[Vec<f64>], k: usize, seed: u64, restarts: usize, max_iterations: usize) -> Result<KMeans> {
    if k == 0 || k > points.len() {
        return Err(DataError::Invalid(format!("k-means: k = {k} with {} points", points.len())));
    }
    let mut best: Option<KMeans> = None;
    for run in 0..restarts.max(1) {
        let mut rng = Rng::stream(Purpose::Clustering, seed, k as u64, run as u64);
        let mut centres = vec![points[rng.below(points.len())].clone()];
        while centres.len() < k {
            let d: Vec<f64> = points.iter().map(|p| nearest(p, &centres).1).collect();
            let total: f64 = d.iter().sum();
            let pick = if total <= 0.0 {
                rng.below(points.len())
            } else {
                let mut r = rng.uniform() * total;
                d.iter()
                    .position(|x| {
                        r -= x;
                        r < 0.0
                    })
                    .unwrap_or(points.len() - 1)
            };
            centres.push(points[pick].clone());
        }
        let mut assignment = vec![usize::MAX; points.len()];
        for _ in 0..max_iterations {
            let next: Vec<usize> = points.iter().map(|p| nearest(p, &centres).0).collect();
            if next == assignment {
                break;
            }
            assignment = next;
            for (c, centre) in centres.iter_mut().enumerate() {
                let members: Vec<&Vec<f64>> = points.iter().zip(&assignment).filter(|(_, a)| **a == c).map(|(p, _)| p).collect();
                if members.is_empty() {
                    continue; // handled below
                }
                for (j, v) in centre.iter_mut().enumerate() {
                    *v = members.iter().map(|m| m[j]).sum::<f64>() / members.len() as f64;
                }
            }
            // an empty cluster takes the point farthest from its centre
            for c in 0..k {
                if !assignment.contains(&c) {
                    let far = (0..points.len())
                        .max_by(|&a, &b| dist2(&points[a], &centres[assignment[a]]).total_cmp(&dist2(&points[b], &centres[assignment[b]])))
                        .unwrap();
                    centres[c] = points[far].clone();
                    assignment[far] = c;
                }
            }
        }
        let inertia = points.iter().zip(&assignment).map(|(p, a)| dist2(p, &centres[*a])).sum();
        if best.as_ref().map(|b| inertia < b.inertia).unwrap_or(true) {
            best = Some(KMeans { centres, assignment, inertia });
        }
    }
    Ok(best.unwrap())
}

/// DP: the mean Euclidean distance over all pairs of cluster centres (0 for one centre).
pub fn separation_dp(centres: &[Vec<f64>]) -> f64 {
    let mut sum = 0.0;
    let mut pairs = 0usize;
    for i in 0..centres.len() {
        for j in i + 1..centres.len() {
            sum += dist2(&centres[i], &centres[j]).sqrt();
            pairs += 1;
        }
    }
    if pairs == 0 {
        0.0
    } else {
        sum / pairs as f64
    }
}

/// Mean silhouette (Rousseeuw 1987); points alone in their cluster count 0.
pub fn silhouette(points: &[Vec<f64>], assignment: &[usize], k: usize) -> f64 {
    let n = points.len();
    let mut total = 0.0;
    for i in 0..n {
        let mut sums = vec![0.0; k];
        let mut counts = vec![0usize; k];
        for j in 0..n {
            if i != j {
                sums[assignment[j]] += dist2(&points[i], &points[j]).sqrt();
                counts[assignment[j]] += 1;
            }
        }
        let own = assignment[i];
        if counts[own] == 0 {
            continue;
        }
        let a = sums[own] / counts[own] as f64;
        let b = (0..k).filter(|c| *c != own && counts[*c] > 0).map(|c| sums[c] / counts[c] as f64).fold(f64::INFINITY, f64::min);
        if b.is_finite() {
            total += (b - a) / a.max(b).max(f64::MIN_POSITIVE);
        }
    }
    total / n.max(1) as f64
}

/// Normalised intensity histogram (sums to 1) over `range` or the values' min..max.
pub fn histogram(values: &[f32], bins: usize, range: Option<(f64, f64)>) -> Vec<f64> {
    let (lo, hi) = range.unwrap_or_else(|| values.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(*v as f64), b.max(*v as f64))));
    let mut h = vec![0f64; bins];
    let width = (hi - lo).max(f64::MIN_POSITIVE);
    for v in values {
        let t = ((*v as f64 - lo) / width * bins as f64).floor();
        h[(t.max(0.0) as usize).min(bins - 1)] += 1.0;
    }
    let n = values.len().max(1) as f64;
    h.iter_mut().for_each(|c| *c /= n);
    h
}

const IMAGE_EXTENSIONS: [&str; 6] = ["png", "jpg", "jpeg", "tif", "tiff", "bmp"];

/// The grey values of an image file (by extension) or of any DICOM file
/// (all frames, modality units).
pub fn read_values(path: &Path) -> Result<Vec<f32>> {
    let ext = path.extension().and_then(|e| e.to_str()).map(|e| e.to_ascii_lowercase()).unwrap_or_default();
    if IMAGE_EXTENSIONS.contains(&ext.as_str()) {
        return Ok(read_image(path, Channels::Grey)?.data);
    }
    Ok(decode_file(path, ColorMode::Luminance)?.data)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KSummary {
    pub k: usize,
    pub dp: f64,
    pub inertia: f64,
    pub silhouette: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterInfo {
    pub cluster: usize,
    pub size: usize,
    /// Paths relative to the data folder.
    pub members: Vec<String>,
    pub centre: Vec<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Skipped {
    pub path: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterReport {
    pub data: PathBuf,
    pub config: ClusterConfig,
    pub images: usize,
    pub skipped: Vec<Skipped>,
    pub per_k: Vec<KSummary>,
    pub chosen_k: usize,
    pub clusters: Vec<ClusterInfo>,
}

/// Histogram features of every image / DICOM file under `data` (recursively),
/// K-means for each k, DP per k, the clusters of the chosen k.
pub fn cluster_folder(data: &Path, cfg: &ClusterConfig) -> Result<ClusterReport> {
    if cfg.bins == 0 {
        return Err(DataError::Invalid("--bins must be at least 1".into()));
    }
    let mut files = Vec::new();
    for entry in walkdir::WalkDir::new(data).sort_by_file_name() {
        let entry = entry.map_err(|e| DataError::file(data, format!("cannot list: {e}")))?;
        if entry.file_type().is_file() {
            files.push(entry.into_path());
        }
    }
    // decode in parallel: each file is independent and decoding dominates
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).min(8);
    let chunk = files.len().div_ceil(threads).max(1);
    let results: Vec<(PathBuf, std::result::Result<Vec<f64>, String>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = files
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || {
                    part.iter().map(|p| (p.clone(), read_values(p).map(|v| histogram(&v, cfg.bins, cfg.range)).map_err(|e| e.to_string()))).collect::<Vec<_>>()
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().expect("feature thread panicked")).collect()
    });
    let rel = |p: &Path| p.strip_prefix(data).unwrap_or(p).display().to_string();
    let (mut names, mut features, mut skipped) = (Vec::new(), Vec::new(), Vec::new());
    for (p, r) in results {
        match r {
            Ok(f) => {
                names.push(rel(&p));
                features.push(f);
            }
            Err(reason) => skipped.push(Skipped { path: rel(&p), reason }),
        }
    }
    let (lo, hi) = match cfg.k {
        KChoice::Fixed(k) => (k, k),
        KChoice::Range(a, b) => (a, b.min(features.len())),
    };
    if features.is_empty() || lo > features.len() {
        return Err(DataError::Invalid(format!("{}: {} images found, too few for k = {lo}", data.display(), features.len())));
    }
    let mut per_k = Vec::new();
    let mut runs = Vec::new();
    for k in lo..=hi {
        let km = kmeans(&features, k, cfg.seed, cfg.restarts, cfg.max_iterations)?;
        per_k.push(KSummary { k, dp: separation_dp(&km.centres), inertia: km.inertia, silhouette: silhouette(&features, &km.assignment, k) });
        runs.push(km);
    }
    let best = (0..per_k.len()).max_by(|&a, &b| per_k[a].dp.total_cmp(&per_k[b].dp)).unwrap();
    let km = &runs[best];
    let clusters = (0..km.centres.len())
        .map(|c| {
            let members: Vec<String> = names.iter().zip(&km.assignment).filter(|(_, a)| **a == c).map(|(n, _)| n.clone()).collect();
            ClusterInfo { cluster: c, size: members.len(), members, centre: km.centres[c].clone() }
        })
        .collect();
    let chosen_k = per_k[best].k;
    Ok(ClusterReport { data: data.to_path_buf(), config: cfg.clone(), images: names.len(), skipped, per_k, chosen_k, clusters })
}

impl ClusterReport {
    /// The per-k table and the clusters of the chosen k, as text.
    pub fn to_text(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let _ =
            writeln!(s, "{} images in {} ({} other files skipped), {} histogram bins", self.images, self.data.display(), self.skipped.len(), self.config.bins);
        let _ = writeln!(s, "{:>4}  {:>10}  {:>12}  {:>10}", "k", "DP", "inertia", "silhouette");
        for r in &self.per_k {
            let mark = if r.k == self.chosen_k { "  <- chosen (largest DP)" } else { "" };
            let _ = writeln!(s, "{:>4}  {:>10.5}  {:>12.5}  {:>10.4}{mark}", r.k, r.dp, r.inertia, r.silhouette);
        }
        let _ = writeln!(s, "\n{:>7}  {:>5}  members", "cluster", "size");
        for c in &self.clusters {
            let _ = writeln!(s, "{:>7}  {:>5}  {}", c.cluster, c.size, c.members.join(" "));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn two_blobs() -> Vec<Vec<f64>> {
        let mut v = Vec::new();
        for (cx, cy) in [(0.0, 0.0), (10.0, 0.0)] {
            for (dx, dy) in [(0.0, 0.0), (0.0, 1.0), (1.0, 0.0), (1.0, 1.0)] {
                v.push(vec![cx + dx, cy + dy]);
            }
        }
        v
    }

    #[test]
    fn kmeans_finds_two_blobs_and_dp_is_the_centre_distance() -> Result<()> {
        let pts = two_blobs();
        for seed in 0..5 {
            let km = kmeans(&pts, 2, seed, 3, 100)?;
            let a = km.assignment[0];
            assert!(km.assignment[..4].iter().all(|x| *x == a) && km.assignment[4..].iter().all(|x| *x != a), "seed {seed}: {:?}", km.assignment);
            let mut c = km.centres.clone();
            c.sort_by(|x, y| x[0].total_cmp(&y[0]));
            assert_eq!(c, vec![vec![0.5, 0.5], vec![10.5, 0.5]]);
            // centres 10 apart
            assert!((separation_dp(&km.centres) - 10.0).abs() < 1e-12);
            assert!((km.inertia - 8.0 * 0.5).abs() < 1e-12);
        }
        // DP of three centres: distances 3, 4, 5 -> 4
        assert_eq!(separation_dp(&[vec![0.0, 0.0], vec![3.0, 0.0], vec![0.0, 4.0]]), 4.0);
        // silhouette: a = mean distance in own blob, b = to the other
        let km = kmeans(&pts, 2, 0, 1, 100)?;
        let s = silhouette(&pts, &km.assignment, 2);
        assert!(s > 0.85 && s < 1.0, "{s}");
        assert!(kmeans(&pts, 9, 0, 1, 10).is_err());
        Ok(())
    }

    #[test]
    fn histogram_bins() {
        let h = histogram(&[0.0, 1.0, 2.0, 3.0], 2, None);
        assert_eq!(h, vec![0.5, 0.5]);
        let h = histogram(&[0.0, 1.0, 2.0, 10.0], 4, Some((0.0, 4.0)));
        assert_eq!(h, vec![0.25, 0.25, 0.25, 0.25]);
    }

    #[test]
    fn k_choice_parsing() {
        assert_eq!("3".parse::<KChoice>(), Ok(KChoice::Fixed(3)));
        assert_eq!("2..8".parse::<KChoice>(), Ok(KChoice::Range(2, 8)));
        assert_eq!("2..=8".parse::<KChoice>(), Ok(KChoice::Range(2, 8)));
        assert!("8..2".parse::<KChoice>().is_err());
        assert!("x".parse::<KChoice>().is_err());
    }

    #[test]
    fn folder_of_two_kinds_of_images() -> Result<()> {
        // 3 images with dark-skewed histograms, 3 bright-skewed, a text file that is no image
        let dir = tempfile::tempdir().unwrap();
        for i in 0..6u32 {
            let bright = i % 2 == 1;
            let img = image::GrayImage::from_fn(16, 16, |x, y| {
                let t = ((x + 16 * y + i) % 256) as u8;
                let v = if (x + y) % 4 == 0 { 255 - t / 8 } else { t / 8 };
                image::Luma([if bright { 255 - v } else { v }])
            });
            img.save(dir.path().join(format!("{}{i}.png", if bright { "b" } else { "d" }))).unwrap();
        }
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/notes.txt"), "not an image").unwrap();
        let cfg = ClusterConfig { k: KChoice::Range(2, 3), bins: 16, ..Default::default() };
        let r = cluster_folder(dir.path(), &cfg)?;
        assert_eq!((r.images, r.skipped.len()), (6, 1));
        assert_eq!(r.skipped[0].path, "sub/notes.txt");
        assert_eq!(r.per_k.iter().map(|k| k.k).collect::<Vec<_>>(), vec![2, 3]);
        assert_eq!(r.chosen_k, 2);
        let mut groups: Vec<Vec<String>> = r.clusters.iter().map(|c| c.members.clone()).collect();
        groups.sort();
        assert_eq!(groups, vec![vec!["b1.png", "b3.png", "b5.png"], vec!["d0.png", "d2.png", "d4.png"]]);
        assert!(r.to_text().contains("<- chosen"));
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<ClusterReport>(&json).unwrap(), r);
        Ok(())
    }
}
