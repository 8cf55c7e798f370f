//! 2D data sets: images with landmarks (ceph-hamedan layout) and images
//! with label masks (lung-medseg layout, and the kidney-us layout where only
//! masks exist). Items are listed when a data set is opened (so that missing
//! files and bad rows are reported up front) and decoded on `load`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::csv::Table;
use super::error::{DataError, Result};
use super::sample::{Image, LabelMap, Landmark, Sample};
use super::split::{assign, FileSplit, Split, ValidationCarveOut};

/// A list of samples of one split.
pub trait Dataset: Send + Sync {
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The identifier of item `index` (file name or case id).
    fn id(&self, index: usize) -> &str;
    /// Reads and decodes item `index`.
    fn load(&self, index: usize) -> Result<Sample>;
}

/// How colour images become channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Channels {
    /// One channel; colour images become 0.299 R + 0.587 G + 0.114 B (as the imaging layer does).
    #[default]
    Grey,
    /// Three channels R, G, B (grey images are repeated).
    Rgb,
}

/// Decodes a PNG / TIFF / JPEG (anything the `image` crate reads) into
/// stored values (0..255 for 8-bit, 0..65535 for 16-bit, as-is for float).
pub fn read_image(path: &Path, channels: Channels) -> Result<Image> {
    let img = image::open(path).map_err(|e| DataError::file(path, format!("cannot decode image: {e}")))?;
    let (w, h) = (img.width() as usize, img.height() as usize);
    let n = w * h;
    let color = img.color();
    let sixteen = matches!(
        img,
        image::DynamicImage::ImageLuma16(_) | image::DynamicImage::ImageLumaA16(_) | image::DynamicImage::ImageRgb16(_) | image::DynamicImage::ImageRgba16(_)
    );
    let float = matches!(img, image::DynamicImage::ImageRgb32F(_) | image::DynamicImage::ImageRgba32F(_));
    let rgb: Vec<f32> = if !color.has_color() {
        let grey: Vec<f32> = if sixteen {
            img.to_luma16().into_raw().into_iter().map(f32::from).collect()
        } else if float {
            img.to_luma32f().into_raw()
        } else {
            img.to_luma8().into_raw().into_iter().map(f32::from).collect()
        };
        return Ok(match channels {
            Channels::Grey => Image::new_2d(1, h, w, grey)?,
            Channels::Rgb => Image::new_2d(3, h, w, grey.repeat(3))?,
        });
    } else if sixteen {
        img.to_rgb16().into_raw().into_iter().map(f32::from).collect()
    } else if float {
        img.to_rgb32f().into_raw()
    } else {
        img.to_rgb8().into_raw().into_iter().map(f32::from).collect()
    };
    match channels {
        Channels::Grey => {
            let grey = rgb.chunks_exact(3).map(|p| 0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2]).collect();
            Ok(Image::new_2d(1, h, w, grey)?)
        }
        Channels::Rgb => {
            let mut planar = vec![0f32; 3 * n];
            for (i, p) in rgb.chunks_exact(3).enumerate() {
                for c in 0..3 {
                    planar[c * n + i] = p[c];
                }
            }
            Ok(Image::new_2d(3, h, w, planar)?)
        }
    }
}

/// Reads a single-channel 8- or 16-bit PNG label mask (values are class indices).
pub fn read_mask(path: &Path) -> Result<LabelMap> {
    let img = image::open(path).map_err(|e| DataError::file(path, format!("cannot decode mask: {e}")))?;
    let (w, h) = (img.width() as usize, img.height() as usize);
    let data: Vec<u16> = match img {
        image::DynamicImage::ImageLuma8(m) => m.into_raw().into_iter().map(u16::from).collect(),
        image::DynamicImage::ImageLuma16(m) => m.into_raw(),
        other => {
            return Err(DataError::file(path, format!("a label mask must be a single-channel grey image of class indices; this one is {:?}", other.color())))
        }
    };
    Ok(LabelMap::new(1, [1, h, w], data)?)
}

fn require_file(path: &Path, table: &Path, line: usize) -> Result<()> {
    if path.is_file() {
        Ok(())
    } else {
        Err(DataError::table(table, line, format!("file {} does not exist", path.display())))
    }
}

fn read_split_column(table: &Table, line: usize, fields: &[String], col: usize) -> Result<FileSplit> {
    FileSplit::parse(&fields[col]).ok_or_else(|| DataError::table(&table.path, line, format!("split '{}' is not train, test or excluded", fields[col])))
}

// ---------------------------------------------------------------- landmarks

/// Which annotation of a multi-annotator landmark file to use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Annotation {
    /// The mean of the available annotators (the usual ground truth).
    Mean,
    /// One annotator by name (column `annotator` of the landmark file).
    Annotator(String),
}

/// Images with named points, ceph-hamedan layout: `images/<image>`,
/// `landmarks.csv` (image,annotator,landmark,x,y), `landmarks_mean.csv`
/// (image,landmark,x,y,...), `landmark_names.csv` (landmark,abbreviation,...),
/// `split.csv` (image,split with train/test/excluded).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImagePointsConfig {
    pub root: PathBuf,
    pub images_dir: String,
    pub landmarks_csv: String,
    pub mean_csv: String,
    pub names_csv: String,
    pub split_csv: String,
    /// Optional `image_a,image_b,...` pairs of the same radiograph or patient;
    /// linked images stay on one side of the validation carve-out.
    pub duplicates_csv: Option<String>,
    pub annotation: Annotation,
    pub carve_out: ValidationCarveOut,
    pub channels: Channels,
    /// Pixel spacing (mm, row and column) when the data set states one;
    /// ceph-hamedan has none, so errors are in pixels.
    pub pixel_spacing_mm: Option<[f64; 2]>,
}

impl ImagePointsConfig {
    pub fn ceph_hamedan(root: impl Into<PathBuf>) -> Self {
        ImagePointsConfig {
            root: root.into(),
            images_dir: "images".into(),
            landmarks_csv: "landmarks.csv".into(),
            mean_csv: "landmarks_mean.csv".into(),
            names_csv: "landmark_names.csv".into(),
            split_csv: "split.csv".into(),
            // 014 = 087 (both train) and 057 / 102 (same patient) must not straddle train and val
            duplicates_csv: Some("duplicates.csv".into()),
            annotation: Annotation::Mean,
            carve_out: ValidationCarveOut::default(),
            channels: Channels::Grey,
            pixel_spacing_mm: None,
        }
    }
}

#[derive(Debug, Clone)]
struct PointsItem {
    id: String,
    path: PathBuf,
    points: Vec<Landmark>,
}

#[derive(Debug, Clone)]
pub struct ImagePointsDataset {
    items: Vec<PointsItem>,
    landmark_names: Vec<String>,
    abbreviations: Vec<String>,
    excluded: Vec<String>,
    channels: Channels,
    spacing: Option<[f64; 3]>,
}

impl ImagePointsDataset {
    pub fn open(cfg: &ImagePointsConfig, split: Split) -> Result<Self> {
        let root = &cfg.root;
        let names = Table::read(&root.join(&cfg.names_csv))?;
        let (c_id, c_abbr) = (names.column("landmark")?, names.column("abbreviation").ok());
        let landmark_names: Vec<String> = names.rows.iter().map(|(_, f)| f[c_id].trim().to_string()).collect();
        let abbreviations = names.rows.iter().map(|(_, f)| c_abbr.map(|c| f[c].trim().to_string()).unwrap_or_default()).collect();
        let order: HashMap<&str, usize> = landmark_names.iter().enumerate().map(|(i, n)| (n.as_str(), i)).collect();

        // points per image: from the mean file or one annotator's rows
        let (table, want_annotator) = match &cfg.annotation {
            Annotation::Mean => (Table::read(&root.join(&cfg.mean_csv))?, None),
            Annotation::Annotator(a) => (Table::read(&root.join(&cfg.landmarks_csv))?, Some(a.as_str())),
        };
        let (c_img, c_lm, c_x, c_y) = (table.column("image")?, table.column("landmark")?, table.column("x")?, table.column("y")?);
        let c_ann = if want_annotator.is_some() { Some(table.column("annotator")?) } else { None };
        let mut points: HashMap<String, Vec<Option<[f64; 2]>>> = HashMap::new();
        let mut annotators = std::collections::BTreeSet::new();
        for (line, f) in &table.rows {
            if let (Some(c), Some(want)) = (c_ann, want_annotator) {
                annotators.insert(f[c].trim().to_string());
                if f[c].trim() != want {
                    continue;
                }
            }
            let lm = f[c_lm].trim();
            let k = *order.get(lm).ok_or_else(|| DataError::table(&table.path, *line, format!("landmark '{lm}' is not in {}", cfg.names_csv)))?;
            let p = [table.number(*line, f, c_x)?, table.number(*line, f, c_y)?];
            let slot = &mut points.entry(f[c_img].trim().to_string()).or_insert_with(|| vec![None; landmark_names.len()])[k];
            if slot.is_some() {
                return Err(DataError::table(&table.path, *line, format!("landmark '{lm}' of {} given twice", f[c_img].trim())));
            }
            *slot = Some(p);
        }
        if let Some(want) = want_annotator {
            if !annotators.contains(want) {
                return Err(DataError::Invalid(format!(
                    "{}: no annotator '{want}' (annotators: {})",
                    table.path.display(),
                    annotators.into_iter().collect::<Vec<_>>().join(", ")
                )));
            }
        }

        let splits = Table::read(&root.join(&cfg.split_csv))?;
        let (s_img, s_split) = (splits.column("image")?, splits.column("split")?);
        let mut entries = Vec::new();
        for (line, f) in &splits.rows {
            entries.push((read_split_column(&splits, *line, f, s_split)?, f[s_img].trim().to_string(), *line));
        }
        let groups = match &cfg.duplicates_csv {
            Some(d) => linked_groups(&Table::read(&root.join(d))?)?,
            None => HashMap::new(),
        };
        let keys: Vec<(FileSplit, String)> = entries.iter().map(|(s, id, _)| (*s, groups.get(id).unwrap_or(id).clone())).collect();
        let assigned = assign(&keys, cfg.carve_out);
        let mut items = Vec::new();
        let mut excluded = Vec::new();
        for ((fs, id, line), a) in entries.into_iter().zip(assigned) {
            if fs == FileSplit::Excluded {
                excluded.push(id);
                continue;
            }
            if a != Some(split) {
                continue;
            }
            let path = root.join(&cfg.images_dir).join(&id);
            require_file(&path, &splits.path, line)?;
            let pts = points.remove(&id).unwrap_or_else(|| vec![None; landmark_names.len()]);
            let points = landmark_names.iter().zip(pts).map(|(n, p)| Landmark { name: n.clone(), position: p }).collect();
            items.push(PointsItem { id, path, points });
        }
        let spacing = cfg.pixel_spacing_mm.map(|[r, c]| [1.0, r, c]);
        Ok(ImagePointsDataset { items, landmark_names, abbreviations, excluded, channels: cfg.channels, spacing })
    }

    /// Landmark ids in the data set's order (e.g. l1..l19).
    pub fn landmark_names(&self) -> &[String] {
        &self.landmark_names
    }

    /// Abbreviations (S, N, Or, ...) in the same order; empty strings where none.
    pub fn abbreviations(&self) -> &[String] {
        &self.abbreviations
    }

    /// Images the split file marks `excluded` (used in no split).
    pub fn excluded(&self) -> &[String] {
        &self.excluded
    }

    /// The points of item `index` without decoding its image.
    pub fn points(&self, index: usize) -> &[Landmark] {
        &self.items[index].points
    }
}

/// Connected components of the `image_a`-`image_b` links: image -> the
/// smallest name in its component.
fn linked_groups(table: &Table) -> Result<HashMap<String, String>> {
    let (ca, cb) = (table.column("image_a")?, table.column("image_b")?);
    let mut group: HashMap<String, String> = HashMap::new();
    for (_, f) in &table.rows {
        let (a, b) = (f[ca].trim().to_string(), f[cb].trim().to_string());
        let ga = group.get(&a).cloned().unwrap_or_else(|| a.clone());
        let gb = group.get(&b).cloned().unwrap_or_else(|| b.clone());
        let root = ga.clone().min(gb.clone());
        // relabel both components to the smaller root
        for g in group.values_mut() {
            if *g == ga || *g == gb {
                *g = root.clone();
            }
        }
        group.insert(a, root.clone());
        group.insert(b, root);
    }
    Ok(group)
}

impl Dataset for ImagePointsDataset {
    fn len(&self) -> usize {
        self.items.len()
    }
    fn id(&self, index: usize) -> &str {
        &self.items[index].id
    }
    fn load(&self, index: usize) -> Result<Sample> {
        let it = &self.items[index];
        let image = read_image(&it.path, self.channels)?;
        Ok(Sample { id: it.id.clone(), image, labels: None, points: it.points.clone(), spacing: self.spacing })
    }
}

// ---------------------------------------------------------------- masks

/// Where images and masks are.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum MaskLayout {
    /// lung-medseg: the index names the image and the mask, relative to the root.
    ImageAndMask { image_column: String, mask_column: String },
    /// kidney-us: only masks; the index names a file that exists in each
    /// layer folder (e.g. `masks/capsule`, `masks/regions`), one label layer
    /// per folder. The samples' images have zero channels (a synthetic image
    /// generator fills them).
    MasksOnly { file_column: String, layer_dirs: Vec<String> },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageMaskConfig {
    pub root: PathBuf,
    /// A CSV with a split column (train/test/excluded).
    pub index_csv: String,
    pub split_column: String,
    /// Items sharing a group (patient / series) stay on one side of the
    /// validation carve-out; `None` = every item is its own group.
    pub group_column: Option<String>,
    pub layout: MaskLayout,
    pub carve_out: ValidationCarveOut,
    pub channels: Channels,
}

impl ImageMaskConfig {
    pub fn lung_medseg(root: impl Into<PathBuf>) -> Self {
        ImageMaskConfig {
            root: root.into(),
            index_csv: "index.csv".into(),
            split_column: "split".into(),
            group_column: None,
            layout: MaskLayout::ImageAndMask { image_column: "image".into(), mask_column: "mask".into() },
            carve_out: ValidationCarveOut::default(),
            channels: Channels::Grey,
        }
    }

    pub fn kidney_us_masks(root: impl Into<PathBuf>) -> Self {
        ImageMaskConfig {
            root: root.into(),
            index_csv: "index.csv".into(),
            split_column: "split".into(),
            group_column: Some("group_id".into()),
            layout: MaskLayout::MasksOnly { file_column: "filename".into(), layer_dirs: vec!["masks/capsule".into(), "masks/regions".into()] },
            carve_out: ValidationCarveOut::default(),
            channels: Channels::Grey,
        }
    }
}

#[derive(Debug, Clone)]
struct MaskItem {
    id: String,
    image: Option<PathBuf>,
    masks: Vec<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct ImageMaskDataset {
    items: Vec<MaskItem>,
    channels: Channels,
    layer_names: Vec<String>,
}

impl ImageMaskDataset {
    pub fn open(cfg: &ImageMaskConfig, split: Split) -> Result<Self> {
        let table = Table::read(&cfg.root.join(&cfg.index_csv))?;
        let c_split = table.column(&cfg.split_column)?;
        let c_group = cfg.group_column.as_deref().map(|g| table.column(g)).transpose()?;
        let mut rows = Vec::new();
        let mut keys = Vec::new();
        for (line, f) in &table.rows {
            let s = read_split_column(&table, *line, f, c_split)?;
            let item = match &cfg.layout {
                MaskLayout::ImageAndMask { image_column, mask_column } => {
                    let (ci, cm) = (table.column(image_column)?, table.column(mask_column)?);
                    let image = cfg.root.join(f[ci].trim());
                    MaskItem { id: f[ci].trim().to_string(), image: Some(image), masks: vec![cfg.root.join(f[cm].trim())] }
                }
                MaskLayout::MasksOnly { file_column, layer_dirs } => {
                    let cf = table.column(file_column)?;
                    let name = f[cf].trim();
                    MaskItem { id: name.to_string(), image: None, masks: layer_dirs.iter().map(|d| cfg.root.join(d).join(name)).collect() }
                }
            };
            let group = c_group.map(|c| f[c].trim().to_string()).unwrap_or_else(|| item.id.clone());
            keys.push((s, group));
            rows.push((*line, item));
        }
        let assigned = assign(&keys, cfg.carve_out);
        let mut items = Vec::new();
        for ((line, item), a) in rows.into_iter().zip(assigned) {
            if a != Some(split) {
                continue;
            }
            for p in item.image.iter().chain(&item.masks) {
                require_file(p, &table.path, line)?;
            }
            items.push(item);
        }
        let layer_names = match &cfg.layout {
            MaskLayout::ImageAndMask { mask_column, .. } => vec![mask_column.clone()],
            MaskLayout::MasksOnly { layer_dirs, .. } => layer_dirs.clone(),
        };
        Ok(ImageMaskDataset { items, channels: cfg.channels, layer_names })
    }

    /// One name per label layer (the mask column or the layer folder).
    pub fn layer_names(&self) -> &[String] {
        &self.layer_names
    }
}

impl Dataset for ImageMaskDataset {
    fn len(&self) -> usize {
        self.items.len()
    }
    fn id(&self, index: usize) -> &str {
        &self.items[index].id
    }
    fn load(&self, index: usize) -> Result<Sample> {
        let it = &self.items[index];
        let mut layers: Vec<LabelMap> = Vec::with_capacity(it.masks.len());
        for (p, l) in it.masks.iter().map(|p| (p, read_mask(p))) {
            let l = l?;
            if let Some(first) = layers.first() {
                if first.dims() != l.dims() {
                    return Err(DataError::file(p, format!("mask is {:?} (D, H, W) but {} is {:?}", l.dims(), it.masks[0].display(), first.dims())));
                }
            }
            layers.push(l);
        }
        let dims = layers[0].dims();
        let labels = LabelMap::new(layers.len(), dims, layers.into_iter().flat_map(|l| l.data).collect())?;
        let image = match &it.image {
            Some(p) => {
                let img = read_image(p, self.channels)?;
                if img.dims() != dims {
                    return Err(DataError::file(p, format!("image is {:?} (D, H, W) but its mask {} is {:?}", img.dims(), it.masks[0].display(), dims)));
                }
                img
            }
            None => Image::filled(0, dims, 0.0),
        };
        Ok(Sample { id: it.id.clone(), image, labels: Some(labels), points: Vec::new(), spacing: None })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::data::shared_data_dir;

    #[test]
    fn ceph_hamedan_counts_and_points() -> Result<()> {
        let Some(data) = shared_data_dir() else { return Ok(()) };
        let mut cfg = ImagePointsConfig::ceph_hamedan(data.join("ceph-hamedan"));
        cfg.carve_out = ValidationCarveOut::NONE;
        let train = ImagePointsDataset::open(&cfg, Split::Train)?;
        let test = ImagePointsDataset::open(&cfg, Split::Test)?;
        assert_eq!((train.len(), test.len(), train.excluded().len()), (120, 27, 3));
        assert_eq!(train.excluded(), ["129.png", "134.png", "144.png"]);
        assert!(ImagePointsDataset::open(&cfg, Split::Val)?.is_empty());
        assert_eq!(train.landmark_names().len(), 19);
        assert_eq!(train.abbreviations()[0], "S");
        // landmarks_mean.csv: 001.png,l1,370.934,601.627
        assert_eq!(train.id(0), "001.png");
        assert_eq!(train.points(0)[0], Landmark { name: "l1".into(), position: Some([370.934, 601.627]) });
        let s = train.load(0)?;
        assert_eq!((s.image.channels, s.image.height, s.image.width), (1, 1671, 1340));
        assert_eq!(s.point("l2"), Some([854.311, 501.583]));
        // one annotator: landmarks.csv 001.png,mollabashi,l1,374.462,604.949
        cfg.annotation = Annotation::Annotator("mollabashi".into());
        let moll = ImagePointsDataset::open(&cfg, Split::Train)?;
        assert_eq!(moll.points(0)[0].position, Some([374.462, 604.949]));
        // 086 has no l16 from mollabashi; 123 has no farhadifar points at all
        let i86 = (0..moll.len()).find(|&i| moll.id(i) == "086.png").unwrap();
        assert_eq!(moll.points(i86)[15].position, None);
        cfg.annotation = Annotation::Annotator("farhadifar".into());
        let farh = ImagePointsDataset::open(&cfg, Split::Test)?;
        let i123 = (0..farh.len()).find(|&i| farh.id(i) == "123.png").unwrap();
        assert!(farh.points(i123).iter().all(|p| p.position.is_none()));
        cfg.annotation = Annotation::Annotator("nobody".into());
        let e = ImagePointsDataset::open(&cfg, Split::Train).err().unwrap().to_string();
        assert!(e.contains("no annotator 'nobody'") && e.contains("farhadifar, mollabashi"), "{e}");
        // every mean point equals its CSV row
        let mean = Table::read(&data.join("ceph-hamedan/landmarks_mean.csv"))?;
        cfg.annotation = Annotation::Mean;
        let all: Vec<ImagePointsDataset> = [Split::Train, Split::Test].iter().map(|s| ImagePointsDataset::open(&cfg, *s)).collect::<Result<_>>()?;
        let mut checked = 0;
        for (_, f) in &mean.rows {
            for ds in &all {
                if let Some(i) = (0..ds.len()).find(|&i| ds.id(i) == f[0]) {
                    let k: usize = f[1][1..].parse::<usize>().unwrap() - 1;
                    assert_eq!(ds.points(i)[k].position, Some([f[2].parse().unwrap(), f[3].parse().unwrap()]));
                    checked += 1;
                }
            }
        }
        assert_eq!(checked, 147 * 19);
        // carve-out: 10 % of the 118 train groups (014 = 087 and 057 ~ 102 are linked), deterministic
        for seed in 0..20 {
            cfg.carve_out = ValidationCarveOut { fraction: 0.1, seed };
            let (t, v) = (ImagePointsDataset::open(&cfg, Split::Train)?, ImagePointsDataset::open(&cfg, Split::Val)?);
            assert_eq!(t.len() + v.len(), 120);
            assert!((12..=14).contains(&v.len()), "{}", v.len());
            let in_val = |id: &str| (0..v.len()).any(|i| v.id(i) == id);
            assert_eq!(in_val("014.png"), in_val("087.png"), "seed {seed}");
            assert_eq!(in_val("057.png"), in_val("102.png"), "seed {seed}");
        }
        Ok(())
    }

    #[test]
    fn lung_medseg_counts_and_masks() -> Result<()> {
        let Some(data) = shared_data_dir() else { return Ok(()) };
        let mut cfg = ImageMaskConfig::lung_medseg(data.join("lung-medseg"));
        cfg.carve_out = ValidationCarveOut::NONE;
        let (train, test) = (ImageMaskDataset::open(&cfg, Split::Train)?, ImageMaskDataset::open(&cfg, Split::Test)?);
        assert_eq!((train.len(), test.len()), (50, 48));
        let s = train.load(0)?;
        // index.csv: train/images/0.jpg,...,273,369,64956,8136,27645
        assert_eq!((s.image.width, s.image.height), (273, 369));
        let l = s.labels.as_ref().unwrap();
        let count = |v: u16| l.data.iter().filter(|x| **x == v).count();
        assert_eq!((count(0), count(1), count(2)), (64956, 8136, 27645));
        Ok(())
    }

    #[test]
    fn kidney_masks_only() -> Result<()> {
        let Some(data) = shared_data_dir() else { return Ok(()) };
        let mut cfg = ImageMaskConfig::kidney_us_masks(data.join("kidney-us-masks"));
        cfg.carve_out = ValidationCarveOut::NONE;
        let train = ImageMaskDataset::open(&cfg, Split::Train)?;
        let test = ImageMaskDataset::open(&cfg, Split::Test)?;
        assert_eq!((train.len(), test.len()), (427, 107));
        // index.csv: 100_IM-0246-0082_anon.png,100,test,1024,768,...,88945,29824,21864,19345
        let i = (0..test.len()).find(|&i| test.id(i) == "100_IM-0246-0082_anon.png").unwrap();
        let s = test.load(i)?;
        assert_eq!((s.image.channels, s.image.width, s.image.height), (0, 1024, 768));
        let l = s.labels.unwrap();
        assert_eq!(l.layers, 2);
        let count = |layer: usize, v: u16| l.layer(layer).iter().filter(|x| **x == v).count();
        assert_eq!((count(0, 1), count(1, 1), count(1, 2), count(1, 3)), (88945, 29824, 21864, 19345));
        // carve-out keeps group ids together
        cfg.carve_out = ValidationCarveOut { fraction: 0.1, seed: 3 };
        let t = ImageMaskDataset::open(&cfg, Split::Train)?;
        let v = ImageMaskDataset::open(&cfg, Split::Val)?;
        assert_eq!(t.len() + v.len(), 427);
        let group = |id: &str| id.split('_').next().unwrap().to_string();
        let tg: std::collections::HashSet<String> = (0..t.len()).map(|i| group(t.id(i))).collect();
        assert!((0..v.len()).all(|i| !tg.contains(&group(v.id(i)))));
        Ok(())
    }

    #[test]
    fn linked_images_form_one_group() {
        let t = Table::parse(Path::new("d.csv"), "image_a,image_b\nc,d\na,b\nb,c\nx,y\n").unwrap();
        let g = linked_groups(&t).unwrap();
        for k in ["a", "b", "c", "d"] {
            assert_eq!(g[k], "a");
        }
        assert_eq!((g["x"].as_str(), g["y"].as_str()), ("x", "x"));
    }

    #[test]
    fn bad_rows_name_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("index.csv"), "image,mask,split\na.png,b.png,train\nc.png,d.png,maybe\n").unwrap();
        let cfg = ImageMaskConfig::lung_medseg(dir.path());
        let e = ImageMaskDataset::open(&cfg, Split::Train).err().unwrap().to_string();
        assert!(e.ends_with("index.csv:3: split 'maybe' is not train, test or excluded"), "{e}");
        std::fs::write(dir.path().join("index.csv"), "image,mask,split\na.png,b.png,train\n").unwrap();
        let e = ImageMaskDataset::open(&cfg, Split::Train).err().unwrap().to_string();
        assert!(e.contains("index.csv:2: file") && e.contains("a.png does not exist"), "{e}");
    }
}
