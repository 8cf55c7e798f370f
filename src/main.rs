//! Command line: parse, load config, call into the library.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};

use ainode::config::Config;

// mimalloc keeps freed pages for the next allocation of the process: with
// glibc's malloc every large tensor and image buffer (above its mmap
// threshold) was a fresh mapping, so each inference and training step paid
// the kernel to fault in and zero its pages again.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use ainode::dicom_uids as uids;
use ainode::dimse::scu::{Association, ScuOptions};
use ainode::dimse::RemoteAe;
use ainode::models::device::DeviceSpec;
use ainode::models::weights::StorageDtype;
use ainode::node::jobs::JobQueue;
use ainode::spool::{Index, StoredInstance};
use ainode::train::commands::{self as train_cmd, EvalCommand, TrainCommand};
use ainode::train::data::Split;
use ainode::train::registry::Registry;

#[derive(Parser)]
#[command(name = "ainode", version, about = "DICOM node: receive, route, forward and analyse studies")]
struct Cli {
    /// Config file (TOML), merged over the embedded default.
    #[arg(long, global = true, env = "AINODE_CONFIG")]
    config: Option<PathBuf>,
    /// CPU threads for the networks (training, inference, benchmarks); default: all cores.
    #[arg(long, global = true, env = "AINODE_THREADS")]
    threads: Option<usize>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the node: C-STORE SCP, routing, forwarding.
    Serve,
    /// C-ECHO a remote AE: AE@HOST:PORT.
    Echo {
        target: RemoteAe,
        /// Calling AE title (default: node.ae_title).
        #[arg(long)]
        calling_ae: Option<String>,
    },
    /// C-STORE files and folders (recursively) to a remote AE.
    Send {
        target: RemoteAe,
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        #[arg(long)]
        calling_ae: Option<String>,
        /// Instances per association.
        #[arg(long, default_value_t = 1000)]
        batch: usize,
    },
    /// List jobs (state, attempts, last error), or retry one.
    Jobs {
        #[arg(long)]
        json: bool,
        #[command(subcommand)]
        action: Option<JobsAction>,
    },
    /// Run an analysis pipeline offline on files: result objects (SR,
    /// presentation states) into OUTPUT, the findings as JSON on stdout.
    Run {
        /// Pipeline name (hip-tha, lung-lesions).
        #[arg(long)]
        pipeline: String,
        /// DICOM files or folders (searched recursively); each study in them is analysed.
        #[arg(long, required = true)]
        input: Vec<PathBuf>,
        /// Folder for the result objects.
        #[arg(long)]
        output: PathBuf,
        /// auto, cpu or cuda:N (default: pipelines.device of the config).
        #[arg(long)]
        device: Option<DeviceSpec>,
        /// Also write each segmentation's label map (the SEG's voxels) as
        /// NIfTI: LABEL_MAPS/STUDY_UID/SERIES_UID.nii.gz.
        #[arg(long, value_name = "LABEL_MAPS")]
        label_maps: Option<PathBuf>,
    },
    /// Write a result object (SEG, SR, GSPS) from files; see docs/encode-json.md.
    Encode {
        #[command(subcommand)]
        what: EncodeCmd,
    },
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Train a model: checkpoints in OUT.run/, then OUT.safetensors + OUT.json + OUT.md.
    Train {
        /// Registered model name.
        name: String,
        /// Dataset folder.
        #[arg(long)]
        data: PathBuf,
        /// Weights prefix, e.g. weights/NAME.
        #[arg(long)]
        out: PathBuf,
        /// Epochs (default: the model's recipe).
        #[arg(long)]
        epochs: Option<usize>,
        /// Nominal batch size: samples per optimiser step.
        #[arg(long)]
        batch: Option<usize>,
        /// Most samples per forward pass; larger batches accumulate gradients.
        #[arg(long)]
        micro_batch: Option<usize>,
        /// auto, cpu or cuda:N.
        #[arg(long, default_value = "auto")]
        device: DeviceSpec,
        /// Continue from the checkpoint in the run folder.
        #[arg(long)]
        resume: bool,
        #[arg(long)]
        seed: Option<u64>,
        /// Run folder (default: OUT.run).
        #[arg(long)]
        run_dir: Option<PathBuf>,
        /// Architecture config (JSON) overriding the model's default.
        #[arg(long)]
        model_config: Option<PathBuf>,
        /// Training recipe (JSON: optimizer, schedule, batch, ...) merged over
        /// the model's; --epochs, --batch, --micro-batch and --seed win over it.
        #[arg(long)]
        recipe: Option<PathBuf>,
        /// Storage of the exported weights: f32 or f16.
        #[arg(long, default_value = "f32")]
        storage: StorageDtype,
        /// Version recorded in OUT.json.
        #[arg(long, default_value = "0.1.0")]
        model_version: String,
    },
    /// Evaluate weights on a split; prints the metrics table.
    Eval {
        name: String,
        #[arg(long)]
        data: PathBuf,
        /// train, val or test.
        #[arg(long, default_value = "test")]
        split: Split,
        /// Weights prefix (default: weights/NAME).
        #[arg(long)]
        weights: Option<PathBuf>,
        #[arg(long, default_value = "auto")]
        device: DeviceSpec,
        /// Seed of the validation carve-out (for --split val).
        #[arg(long)]
        seed: Option<u64>,
        /// Also write the metrics as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Architecture settings to change for this evaluation, a JSON object merged over the
        /// weights' own (operating points, e.g. '{"network": {"score_threshold": 0.3}}'); the
        /// tensors must still fit
        #[arg(long = "set", value_name = "JSON")]
        overrides: Option<String>,
    },
    /// Benchmarks that print figures (not tests).
    Bench {
        #[command(subcommand)]
        what: BenchWhat,
    },
    /// Data tools: clustering (S21), synthetic data sets.
    Data {
        #[command(subcommand)]
        action: DataAction,
    },
}

#[derive(Subcommand)]
enum BenchWhat {
    /// Inference and training-step speed of the shipped networks on the CPU,
    /// convolution GFLOP/s against this machine's sgemm peak, the most
    /// expensive layers (benches/cpu.py adds the PyTorch and onnxruntime peers).
    Cpu {
        /// Networks, comma separated (default: all shipped).
        #[arg(long, value_delimiter = ',')]
        networks: Option<Vec<String>>,
        /// Timed repetitions per figure (the median is reported).
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Images per training step (the recipes' micro-batch).
        #[arg(long, default_value_t = 2)]
        batch: usize,
        /// Layers listed per network.
        #[arg(long, default_value_t = 10)]
        top: usize,
        /// Also write the figures as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum DataAction {
    /// K-means over intensity histograms of every image / DICOM file under
    /// DATA, with the separation DP per k (cephalometric source, S21).
    Cluster {
        #[arg(long)]
        data: PathBuf,
        /// One k (default: the range 2..8).
        #[arg(long, conflicts_with = "k_range")]
        k: Option<usize>,
        /// Inclusive range of k to try, LO..HI; the largest DP is chosen.
        #[arg(long)]
        k_range: Option<ainode::train::data::cluster::KChoice>,
        #[arg(long, default_value_t = 64)]
        bins: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Also write the report as JSON.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Write a NIfTI CT volume (HU) as a DICOM CT series, e.g. to send a
    /// research volume to the node. UIDs are derived from the file's content,
    /// so the same file always makes the same study.
    NiftiToDicom {
        #[arg(long)]
        nifti: PathBuf,
        /// Folder for the slices (IM_00001.dcm, ...).
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value = "Anonymous^Nifti")]
        patient_name: String,
        #[arg(long, default_value = "NIFTI")]
        patient_id: String,
        #[arg(long, default_value = "CT CHEST")]
        study_description: String,
        #[arg(long, default_value = "converted from NIfTI")]
        series_description: String,
        /// Body Part Examined.
        #[arg(long, default_value = "CHEST")]
        body_part: String,
    },
    /// Write slices of a lesion-free chest CT as lung-lesions negatives
    /// (lung-medseg's layout: SPLIT/images, SPLIT/masks, index.csv), cropped,
    /// turned and windowed as the pipeline does; OUT is the data folder's
    /// `negatives/`.
    LungNegatives {
        /// A folder with one DICOM CT series, read as the pipeline reads it
        /// (a NIfTI volume: `ainode data nifti-to-dicom` first).
        #[arg(long)]
        series: PathBuf,
        /// Names the files (NAME_kSLICE.png).
        #[arg(long)]
        name: String,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, value_enum)]
        split: ainode::train::data::split::Split,
        /// Slice indices FIRST..END (end excluded); default all.
        #[arg(long)]
        slices: Option<String>,
    },
    /// Write a synthetic data set (DICOM + JSON labels): `hip-tha`.
    Synth {
        /// Which generator.
        name: String,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 100)]
        count: u64,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Generator settings (JSON), merged over the defaults.
        #[arg(long)]
        settings: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum EncodeCmd {
    /// Segmentation from a NIfTI label map on a DICOM series.
    Seg {
        /// The series: a folder (searched recursively) or files.
        #[arg(long, required = true, num_args = 1..)]
        series: Vec<PathBuf>,
        /// Label map (.nii or .nii.gz), any orientation; placed by its affine.
        #[arg(long)]
        labelmap: PathBuf,
        /// Segments file (JSON): label values, names, codes, colours.
        #[arg(long)]
        segments: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// Pipeline id (enters the deterministic UIDs).
        #[arg(long, default_value = "encode")]
        pipeline: String,
        /// Model version (default: the segments' algorithm version).
        #[arg(long)]
        model_version: Option<String>,
        /// Accept a label map without foreground.
        #[arg(long)]
        allow_empty: bool,
        /// Leave out frames without foreground (default: results.seg_omit_empty_frames).
        #[arg(long)]
        omit_empty_frames: Option<bool>,
    },
    /// TID 1500 Structured Report from a report file (JSON).
    Sr {
        /// The images (and SEGs) the report refers to: files or folders.
        #[arg(long, required = true, num_args = 1..)]
        evidence: Vec<PathBuf>,
        #[arg(long)]
        report: PathBuf,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value = "encode")]
        pipeline: String,
    },
    /// Grayscale Softcopy Presentation State from an annotations file (JSON).
    Gsps {
        #[arg(long)]
        image: PathBuf,
        #[arg(long)]
        annotations: PathBuf,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value = "encode")]
        pipeline: String,
        #[arg(long, default_value = "0")]
        model_version: String,
    },
    /// Secondary Capture of a derived image given as NIfTI (columns, rows[, frames]) of integers 0..=65535.
    Sc {
        /// The images it derives from (files or folders).
        #[arg(long, required = true, num_args = 1..)]
        source: Vec<PathBuf>,
        #[arg(long)]
        image: PathBuf,
        #[arg(long)]
        description: String,
        /// ROW,COLUMN spacing in mm.
        #[arg(long, value_parser = parse_pair)]
        pixel_spacing: Option<(f64, f64)>,
        /// SLOPE,INTERCEPT[,TYPE] (type default "US").
        #[arg(long)]
        rescale: Option<String>,
        /// CENTER,WIDTH in rescaled units.
        #[arg(long, value_parser = parse_pair)]
        window: Option<(f64, f64)>,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value = "encode")]
        pipeline: String,
        #[arg(long, default_value = "0")]
        model_version: String,
    },
}

fn parse_pair(s: &str) -> Result<(f64, f64), String> {
    let v: Vec<f64> = s.split(',').map(|x| x.trim().parse::<f64>().map_err(|e| format!("`{x}`: {e}"))).collect::<Result<_, _>>()?;
    match v[..] {
        [a, b] => Ok((a, b)),
        _ => Err("expected two numbers: A,B".into()),
    }
}

fn parse_rescale(s: &str) -> anyhow::Result<(f64, f64, String)> {
    let parts: Vec<&str> = s.split(',').map(str::trim).collect();
    match parts[..] {
        [a, b] | [a, b, _] => Ok((a.parse()?, b.parse()?, parts.get(2).unwrap_or(&"US").to_string())),
        _ => bail!("--rescale: expected SLOPE,INTERCEPT[,TYPE]"),
    }
}

#[derive(Subcommand)]
enum JobsAction {
    /// Put a job (e.g. a dead letter) back in the queue.
    Retry { id: i64 },
}

#[derive(Subcommand)]
enum ConfigAction {
    /// Validate and print the effective configuration.
    Check,
}

fn main() {
    let cli = Cli::parse();
    // before any thread exists: the networks' threads (--threads, or for serve
    // pipelines.threads) and, for serve, their niceness (pipelines.nice);
    // serve's config is read here, once
    let serve_cfg = matches!(cli.cmd, Cmd::Serve).then(|| Config::load(cli.config.as_deref()));
    let (threads, nice) = match &serve_cfg {
        Some(Ok(c)) => (cli.threads.unwrap_or(c.pipelines.threads), c.pipelines.nice),
        _ => (cli.threads.unwrap_or(0), 0),
    };
    ainode::models::threads::configure(threads, nice);
    // openjpeg reports every JPEG 2000 header it reads at info level (through
    // the jpeg2k crate): warnings and errors only, unless AINODE_LOG asks
    let filter = tracing_subscriber::EnvFilter::try_from_env("AINODE_LOG").unwrap_or_else(|_| "info,jpeg2k=warn".into());
    use std::io::IsTerminal;
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(std::io::stderr().is_terminal()).with_target(false).init();
    let code = match run(cli, serve_cfg) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            1
        }
    };
    std::process::exit(code);
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

/// Runs the command; `serve_cfg` is serve's config as main read it.
fn run(cli: Cli, serve_cfg: Option<Result<Config, ainode::config::ConfigError>>) -> anyhow::Result<i32> {
    let load = || Config::load(cli.config.as_deref());
    match cli.cmd {
        Cmd::Bench { what: BenchWhat::Cpu { networks, rounds, batch, top, json } } => {
            use ainode::train::bench;
            let networks = networks.unwrap_or_else(|| bench::NETWORKS.iter().map(|s| s.to_string()).collect());
            let report = bench::run(&bench::BenchOptions { networks, rounds, train_batch: batch.max(1), top_layers: top })?;
            print!("{}", bench::render(&report));
            if let Some(path) = json {
                std::fs::write(&path, serde_json::to_vec_pretty(&report)?).with_context(|| format!("writing {}", path.display()))?;
            }
            Ok(0)
        }
        Cmd::Config { action: ConfigAction::Check } => match load() {
            Ok(cfg) => {
                print!("{}", cfg.to_toml());
                eprintln!("config OK ({})", cli.config.as_deref().map(|p| p.display().to_string()).unwrap_or("embedded default".into()));
                Ok(0)
            }
            Err(e) => {
                eprintln!("{e}");
                Ok(2)
            }
        },
        Cmd::Data { action: DataAction::NiftiToDicom { nifti, out, patient_name, patient_id, study_description, series_description, body_part } } => {
            let vol = ainode::imaging::nifti::read_nifti(&nifti)?;
            let bytes = std::fs::read(&nifti).with_context(|| format!("reading {}", nifti.display()))?;
            let uid = |purpose: &str| {
                use sha2::Digest;
                let mut h = sha2::Sha256::new();
                h.update(&bytes);
                h.update(purpose.as_bytes());
                let d = h.finalize();
                format!("2.25.{}", u128::from_be_bytes(d[..16].try_into().expect("16 bytes")))
            };
            let ids = ainode::imaging::synth::CtSeriesIdentity {
                patient_name,
                patient_id,
                study_instance_uid: uid("study"),
                series_instance_uid: uid("series"),
                frame_of_reference_uid: uid("frame of reference"),
                study_description,
                series_description,
                body_part,
            };
            let paths = ainode::imaging::synth::write_ct_series(&vol, &ids, &out)?;
            println!("{} slices of study {} series {} in {}", paths.len(), ids.study_instance_uid, ids.series_instance_uid, out.display());
            Ok(0)
        }
        Cmd::Data { action: DataAction::LungNegatives { series, name, out, split, slices } } => {
            let files: Vec<PathBuf> = ainode::encode::commands::open_dicom(std::slice::from_ref(&series))?.into_iter().map(|s| s.path).collect();
            let vol = ainode::imaging::volume::load_series(&files).with_context(|| format!("{}: not one CT series", series.display()))?;
            let range = match slices {
                Some(r) => {
                    let (a, b) = r.split_once("..").with_context(|| format!("--slices {r:?}: expected FIRST..END"))?;
                    Some(
                        a.trim().parse::<usize>().with_context(|| format!("--slices {r:?}"))?
                            ..b.trim().parse::<usize>().with_context(|| format!("--slices {r:?}"))?,
                    )
                }
                None => None,
            };
            let settings = ainode::pipelines::lung_lesions::LungLesionsSettings::default();
            let preprocess = ainode::models::lung_lesions::LungPreprocessConfig::default();
            let n = ainode::train::tasks::lung_lesions::write_negatives(&vol, &name, range, split, &out, &settings, &preprocess)?;
            println!("{n} slices with a lung field written to {} ({split})", out.display());
            Ok(0)
        }
        Cmd::Data { action: DataAction::Synth { name, out, count, seed, settings } } => {
            if name != "hip-tha" {
                bail!("unknown generator {name:?}; known: hip-tha");
            }
            let cfg: ainode::synth::hip_tha::HipSynthConfig = match settings {
                Some(p) => serde_json::from_slice(&std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?)
                    .with_context(|| format!("{}: not valid hip-tha generator settings", p.display()))?,
                None => Default::default(),
            };
            let t = Instant::now();
            ainode::synth::hip_tha::write_dataset(&cfg, &out, seed, count)?;
            eprintln!("wrote {count} cases to {} in {:.1} s", out.display(), t.elapsed().as_secs_f64());
            Ok(0)
        }
        Cmd::Serve => {
            let cfg = serve_cfg.unwrap_or_else(load)?;
            runtime()?.block_on(ainode::node::serve(cfg))?;
            Ok(0)
        }
        Cmd::Echo { target, calling_ae } => {
            let opts = scu_opts(load()?, calling_ae);
            runtime()?.block_on(async {
                let t = Instant::now();
                let proposals = vec![(uids::VERIFICATION.to_string(), vec![uids::IMPLICIT_VR_LE.to_string(), uids::EXPLICIT_VR_LE.to_string()])];
                let mut a = Association::connect(&target, &opts, &proposals).await?;
                let st = a.echo().await?;
                a.release().await;
                if st != 0 {
                    bail!("C-ECHO to {target}: status {st:04X}");
                }
                println!("C-ECHO to {target}: success in {:.1} ms", t.elapsed().as_secs_f64() * 1000.0);
                Ok(0)
            })
        }
        Cmd::Send { target, paths, calling_ae, batch } => {
            let opts = scu_opts(load()?, calling_ae);
            send(&target, &opts, &paths, batch)
        }
        Cmd::Run { pipeline, input, output, device, label_maps } => {
            let mut cfg = load()?;
            if let Some(d) = device {
                cfg.pipelines.device = d.to_string();
            }
            let run = ainode::node::analyze::run_offline(&cfg, &pipeline, &input, &output, label_maps.as_deref())?;
            println!("{}", serde_json::to_string_pretty(&run.summary)?);
            for w in &run.written {
                eprintln!("wrote {} (SOP Class {}, SOP Instance {}): {}", w.path.display(), w.sop_class_uid, w.sop_instance_uid, w.detail);
            }
            Ok(0)
        }
        Cmd::Encode { what } => {
            use ainode::encode::commands;
            let settings = ainode::encode::EncoderSettings::from_config(&load()?);
            let w = match what {
                EncodeCmd::Seg { series, labelmap, segments, out, pipeline, model_version, allow_empty, omit_empty_frames } => {
                    commands::seg(settings, &commands::SegCommand { series, labelmap, segments, out, pipeline, model_version, allow_empty, omit_empty_frames })?
                }
                EncodeCmd::Sr { evidence, report, out, pipeline } => commands::sr(settings, &commands::SrCommand { evidence, report, out, pipeline })?,
                EncodeCmd::Sc { source, image, description, pixel_spacing, rescale, window, out, pipeline, model_version } => {
                    let rescale = rescale.as_deref().map(parse_rescale).transpose()?;
                    commands::sc(
                        settings,
                        &commands::ScCommand {
                            sources: source,
                            image,
                            description,
                            pixel_spacing: pixel_spacing.map(|(r, c)| [r, c]),
                            rescale,
                            window,
                            out,
                            pipeline,
                            model_version,
                        },
                    )?
                }
                EncodeCmd::Gsps { image, annotations, out, pipeline, model_version } => {
                    commands::gsps(settings, &commands::GspsCommand { image, annotations, out, pipeline, model_version })?
                }
            };
            println!("wrote {} (SOP Class {}, SOP Instance {}): {}", w.path.display(), w.sop_class_uid, w.sop_instance_uid, w.detail);
            Ok(0)
        }
        Cmd::Train { name, data, out, epochs, batch, micro_batch, device, resume, seed, run_dir, model_config, recipe, storage, model_version } => {
            let cmd = TrainCommand {
                name,
                data,
                out,
                epochs,
                batch,
                micro_batch,
                seed,
                device,
                resume,
                run_dir,
                config: model_config,
                recipe,
                storage,
                model_version,
                stop_after: None,
                progress: None,
            };
            let outcome = train_cmd::train_command(&Registry::builtin(), &cmd)?;
            if let Some(m) = &outcome.test_metrics {
                print!("{m}");
            }
            match &outcome.weights {
                Some(p) => println!("wrote {}, {}, {}", p.tensors.display(), p.meta.display(), p.card.display()),
                None => println!("stopped after epoch {}", outcome.summary.epochs_done),
            }
            Ok(0)
        }
        Cmd::Eval { name, data, split, weights, device, seed, json, overrides } => {
            let overrides = overrides.map(|o| serde_json::from_str(&o).with_context(|| format!("--set {o}: not JSON"))).transpose()?;
            let metrics = train_cmd::eval_command(&Registry::builtin(), &EvalCommand { name, data, split, weights, device, seed, json, overrides })?;
            print!("{metrics}");
            Ok(0)
        }
        Cmd::Data { action: DataAction::Cluster { data, k, k_range, bins, seed, json } } => {
            use ainode::train::data::cluster::{cluster_folder, ClusterConfig, KChoice};
            let mut cfg = ClusterConfig { bins, seed, ..Default::default() };
            if let Some(k) = k {
                cfg.k = KChoice::Fixed(k);
            } else if let Some(r) = k_range {
                cfg.k = r;
            }
            let report = cluster_folder(&data, &cfg)?;
            print!("{}", report.to_text());
            if let Some(path) = json {
                std::fs::write(&path, serde_json::to_string_pretty(&report)?).with_context(|| format!("writing {}", path.display()))?;
            }
            Ok(0)
        }
        Cmd::Jobs { json, action } => {
            let cfg = load()?;
            let db = cfg.node.data_dir.join("index.sqlite");
            if !db.exists() {
                bail!("no index at {} (has the node run with this config?)", db.display());
            }
            let index = Index::open(&db)?;
            let q = JobQueue::new(index.clone());
            match action {
                Some(JobsAction::Retry { id }) => {
                    if !q.retry(id)? {
                        bail!("job {id} does not exist or is pending/running");
                    }
                    println!("job {id} queued again");
                }
                None if json => println!("{}", serde_json::to_string_pretty(&q.list()?)?),
                None => print!("{}", jobs_listing(&index, &q, cfg.http.page_size)?),
            }
            Ok(0)
        }
    }
}

/// `ainode jobs`: the recent studies with what happened to them (the
/// status page's view), then every job.
fn jobs_listing(index: &Index, q: &JobQueue, studies: usize) -> anyhow::Result<String> {
    use std::fmt::Write;
    let mut out = String::new();
    let page = ainode::node::overview::recent_studies(index, q, studies, 0)?;
    writeln!(out, "RECENT STUDIES")?;
    writeln!(out, "{:10} {:24} {:16} {:8} {:>5}  {:28} STUDY", "STATE", "DETAIL", "PATIENT ID", "MODALITY", "INST", "DESCRIPTION")?;
    for s in &page.studies {
        writeln!(
            out,
            "{:10} {:24} {:16} {:8} {:>5}  {:28} {}",
            s.state.as_str(),
            s.detail,
            s.study.patient_id,
            s.study.modalities.join(","),
            s.study.instances,
            s.study.study_description,
            s.study.study_uid
        )?;
    }
    if page.more {
        writeln!(out, "(older studies on the status page and at /api/studies?offset={studies})")?;
    }
    writeln!(out, "\nJOBS")?;
    writeln!(out, "{:>5}  {:8} {:8} {:>3}  {:12} {:>5}  {:44} LAST ERROR", "ID", "KIND", "STATE", "TRY", "DEST", "INST", "STUDY")?;
    for j in q.list()? {
        let dest = if j.kind == "forward" { j.destination.clone() } else { j.pipeline.clone() };
        writeln!(
            out,
            "{:>5}  {:8} {:8} {:>3}  {:12} {:>5}  {:44} {}",
            j.id,
            j.kind,
            j.state,
            j.attempts,
            dest,
            j.instances,
            j.study_uid,
            j.last_error.unwrap_or_default()
        )?;
    }
    Ok(out)
}

fn scu_opts(cfg: Config, calling_ae: Option<String>) -> ScuOptions {
    let mut o = ainode::node::export::scu_options(&cfg);
    if let Some(ae) = calling_ae {
        o.calling_ae = ae;
    }
    o
}

fn send(target: &RemoteAe, opts: &ScuOptions, paths: &[PathBuf], batch: usize) -> anyhow::Result<i32> {
    let mut items = Vec::new();
    let mut bytes = 0u64;
    let mut skipped = 0;
    for root in paths {
        if !root.exists() {
            bail!("{}: no such file or folder", root.display());
        }
        for entry in walkdir::WalkDir::new(root).sort_by_file_name() {
            let entry = entry.with_context(|| format!("reading {}", root.display()))?;
            if !entry.file_type().is_file() {
                continue;
            }
            match ainode::part10::read_meta(entry.path()) {
                Ok(m) => {
                    bytes += entry.metadata().map(|m| m.len()).unwrap_or(0);
                    items.push(StoredInstance {
                        sop_uid: m.sop_instance_uid,
                        sop_class: m.sop_class_uid,
                        series_uid: String::new(),
                        study_uid: String::new(),
                        transfer_syntax: m.transfer_syntax,
                        path: entry.path().to_string_lossy().into(),
                    });
                }
                Err(e) => {
                    skipped += 1;
                    tracing::warn!("skipped: {e}");
                }
            }
        }
    }
    if items.is_empty() {
        bail!("no DICOM Part 10 files found ({skipped} other files skipped)");
    }
    let t = Instant::now();
    let report = runtime()?.block_on(ainode::node::export::send_instances(target, opts, &items, batch, |_, _| {}));
    let secs = t.elapsed().as_secs_f64();
    let report = report.map_err(|e| anyhow::anyhow!("sending to {target}: {e}"))?;
    println!(
        "sent {} of {} instances to {target} in {:.2} s ({:.1} instances/s, {:.1} MB/s, round trip p50 {:.2} ms p99 {:.2} ms); {} warnings, {} failed, {} non-DICOM files skipped",
        report.sent,
        items.len(),
        secs,
        report.sent as f64 / secs,
        bytes as f64 / 1e6 / secs,
        report.round_trip_quantile(0.5),
        report.round_trip_quantile(0.99),
        report.warnings,
        report.failures.len(),
        skipped
    );
    for f in &report.failures {
        eprintln!("failed: {f}");
    }
    Ok(if report.failures.is_empty() { 0 } else { 3 })
}
