//! `ainode bench cpu`: how fast the shipped networks run and train on this
//! machine, in figures (not a test). For each network at its shipped
//! configuration: inference ms per image (batch 1) and training-step ms per
//! image (forward, loss, backward, AdamW update at the training micro-batch),
//! the convolutions' GFLOP/s against this machine's sgemm peak measured in
//! the same run, and the most expensive layers. `benches/cpu.py` adds the
//! PyTorch and onnxruntime peers and the ratios.

use std::time::Instant;

use anyhow::Context;
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use serde::Serialize;

use crate::models::blocks::gemm::{matmul, threads, View};
use crate::models::hip_tha::HipSsd;
use crate::models::init::seeded_init;
use crate::models::lung_lesions::{instances_from_label_map, LungPreprocessConfig, MaskRcnn, MaskRcnnConfig};
use crate::models::profile::{self, OpStat};
use crate::rng::{Purpose, Rng};
use crate::train::optim::{accumulate_grads, named_vars, AdamW, AdamWConfig, NamedGrads};
use crate::train::tasks::hip_tha::HipTaskConfig;

/// The networks `ainode bench cpu` knows, by pipeline name.
pub const NETWORKS: [&str; 2] = ["hip-tha", "lung-lesions"];

#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub networks: Vec<String>,
    /// Timed repetitions per figure (the median is reported).
    pub rounds: usize,
    /// Images per training step (the recipes' micro-batch).
    pub train_batch: usize,
    /// Layers listed per network.
    pub top_layers: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct LayerFigure {
    pub layer: String,
    pub calls: u64,
    pub ms: f64,
    pub gflops: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct NetworkFigures {
    pub network: String,
    pub input: String,
    pub inference_ms_per_image: f64,
    pub train_step_ms_per_image: f64,
    pub train_batch: usize,
    /// Convolution work of one inference / one training step per image.
    pub inference_gflop: f64,
    pub train_gflop: f64,
    /// Convolution GFLOP/s within the convolutions' own time (inference, training).
    pub conv_gflops_inference: f64,
    pub conv_gflops_train: f64,
    /// Share of the step spent in convolutions.
    pub conv_share_train: f64,
    pub top_layers_inference: Vec<LayerFigure>,
    pub top_layers_train: Vec<LayerFigure>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub threads: usize,
    pub avx512: bool,
    pub sgemm_gflops: f64,
    pub networks: Vec<NetworkFigures>,
}

/// Times `f` once to warm up, then `rounds` times; the median in seconds.
fn median_seconds(rounds: usize, mut f: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<f64> {
    f()?;
    let mut t: Vec<f64> = (0..rounds.max(1))
        .map(|_| {
            let s = Instant::now();
            f().map(|_| s.elapsed().as_secs_f64())
        })
        .collect::<anyhow::Result<_>>()?;
    t.sort_by(f64::total_cmp);
    Ok(t[t.len() / 2])
}

/// GFLOP/s of a 2048³ f32 matrix product through the gemm our ops use (best of 3).
pub fn sgemm_peak() -> f64 {
    let n = 2048;
    let a: Vec<f32> = (0..n * n).map(|i| ((i % 17) as f32 - 8.0) / 8.0).collect();
    let b: Vec<f32> = (0..n * n).map(|i| ((i % 13) as f32 - 6.0) / 6.0).collect();
    let mut c = vec![0f32; n * n];
    let best = (0..3)
        .map(|_| {
            let t = Instant::now();
            matmul(&mut c, n, View::row_major(&a, n, n), View::row_major(&b, n, n), false);
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min);
    2.0 * (n * n * n) as f64 / best / 1e9
}

/// A reproducible image-like input (N, 1, S, S): smooth structure plus noise.
fn input(n: usize, side: usize, seed: u64) -> candle_core::Result<Tensor> {
    let mut rng = Rng::stream(Purpose::Benchmark, seed, 0, 0);
    let v: Vec<f32> = (0..n * side * side)
        .map(|i| {
            let (y, x) = (((i / side) % side) as f32, (i % side) as f32);
            ((x * 0.05).sin() * (y * 0.03).cos()) + 0.2 * rng.range(-1.0, 1.0) as f32
        })
        .collect();
    Tensor::from_vec(v, (n, 1, side, side), &Device::Cpu)
}

/// The network-specific parts of a benchmark: inference on a batch of one,
/// and the loss of a training micro-batch.
trait BenchNetwork {
    fn input_side(&self) -> usize;
    fn infer(&self, x: &Tensor) -> anyhow::Result<()>;
    fn loss(&self, x: &Tensor, seed: u64) -> anyhow::Result<Tensor>;
}

struct HipBench(HipSsd);

impl BenchNetwork for HipBench {
    fn input_side(&self) -> usize {
        self.0.config().input_size
    }

    fn infer(&self, x: &Tensor) -> anyhow::Result<()> {
        self.0.keypoints(x)?;
        Ok(())
    }

    fn loss(&self, x: &Tensor, seed: u64) -> anyhow::Result<Tensor> {
        let side = self.input_side() as f64;
        let mut rng = Rng::stream(Purpose::Benchmark, seed, 1, 0);
        let points: Vec<Vec<Option<[f64; 2]>>> = (0..x.dim(0)?)
            .map(|_| (0..self.0.config().points.len()).map(|_| Some([rng.range(0.2, 0.8) * side, rng.range(0.2, 0.8) * side])).collect())
            .collect();
        Ok(self.0.loss(x, &points)?.total()?)
    }
}

struct LungBench(MaskRcnn, usize);

impl BenchNetwork for LungBench {
    fn input_side(&self) -> usize {
        self.1
    }

    fn infer(&self, x: &Tensor) -> anyhow::Result<()> {
        self.0.detect(x)?;
        Ok(())
    }

    fn loss(&self, x: &Tensor, seed: u64) -> anyhow::Result<Tensor> {
        // two lesions per image: a ground-glass disc and a consolidation block
        let s = self.1;
        let mut labels = vec![0u8; s * s];
        for y in 0..s {
            for x in 0..s {
                let (dy, dx) = (y as f64 - s as f64 * 0.35, x as f64 - s as f64 * 0.3);
                if dy * dy + dx * dx < (s as f64 * 0.08).powi(2) {
                    labels[y * s + x] = 1;
                } else if (s * 6 / 10..s * 7 / 10).contains(&y) && (s * 6 / 10..s * 3 / 4).contains(&x) {
                    labels[y * s + x] = 2;
                }
            }
        }
        let classes = self.0.config().num_classes();
        let targets = (0..x.dim(0)?).map(|_| instances_from_label_map(&labels, (s, s), classes, 1, x.device())).collect::<candle_core::Result<Vec<_>>>()?;
        Ok(self.0.loss(x, &targets, seed)?.total()?)
    }
}

fn figures(name: &str, net: &dyn BenchNetwork, varmap: &VarMap, opts: &BenchOptions) -> anyhow::Result<NetworkFigures> {
    let side = net.input_side();
    let one = input(1, side, 1)?;
    let batch = input(opts.train_batch, side, 2)?;
    let infer_s = median_seconds(opts.rounds, || net.infer(&one))?;

    let vars = named_vars(varmap);
    let mut opt = AdamW::new(varmap, AdamWConfig { lr: 1e-5, ..AdamWConfig::default() });
    let mut step = |seed: u64| -> anyhow::Result<()> {
        let grads = net.loss(&batch, seed)?.backward()?;
        let mut named = NamedGrads::new();
        accumulate_grads(&grads, &vars, &mut named)?;
        opt.step(&named, 1e-5)?;
        Ok(())
    };
    let mut seed = 0;
    let train_s = median_seconds(opts.rounds, || {
        seed += 1;
        step(seed)
    })?;

    // one more of each with the per-layer profile on
    profile::enable(true);
    net.infer(&one)?;
    let inference_layers = profile::snapshot();
    profile::enable(true);
    let t = Instant::now();
    step(seed + 1)?;
    let profiled_step = t.elapsed().as_secs_f64();
    let train_layers = profile::snapshot();
    profile::enable(false);

    let conv = |layers: &[(String, OpStat)]| -> (f64, f64) {
        layers.iter().filter(|(k, _)| k.starts_with("conv")).fold((0.0, 0.0), |(f, s), (_, st)| (f + st.flops, s + st.seconds))
    };
    let (inf_flops, inf_conv_s) = conv(&inference_layers);
    let (train_flops, train_conv_s) = conv(&train_layers);
    let b = opts.train_batch as f64;
    Ok(NetworkFigures {
        network: name.into(),
        input: format!("1x{side}x{side}"),
        inference_ms_per_image: infer_s * 1e3,
        train_step_ms_per_image: train_s * 1e3 / b,
        train_batch: opts.train_batch,
        inference_gflop: inf_flops / 1e9,
        train_gflop: train_flops / 1e9 / b,
        conv_gflops_inference: inf_flops / inf_conv_s.max(1e-9) / 1e9,
        conv_gflops_train: train_flops / train_conv_s.max(1e-9) / 1e9,
        conv_share_train: train_conv_s / profiled_step.max(1e-9),
        top_layers_inference: top_layers(&inference_layers, opts.top_layers),
        top_layers_train: top_layers(&train_layers, opts.top_layers),
    })
}

/// The `n` most expensive layers of a profile.
fn top_layers(layers: &[(String, OpStat)], n: usize) -> Vec<LayerFigure> {
    layers
        .iter()
        .take(n)
        .map(|(k, s)| LayerFigure {
            layer: k.clone(),
            calls: s.calls,
            ms: s.seconds * 1e3,
            gflops: if s.flops > 0.0 { s.flops / s.seconds.max(1e-12) / 1e9 } else { 0.0 },
        })
        .collect()
}

/// Builds a network at its shipped configuration with seeded weights.
fn build(name: &str) -> anyhow::Result<(Box<dyn BenchNetwork>, VarMap)> {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let net: Box<dyn BenchNetwork> = match name {
        // the configuration the training recipe ships (batch norm on)
        "hip-tha" => Box::new(HipBench(HipSsd::load(vb, &HipTaskConfig::default().network)?)),
        "lung-lesions" => Box::new(LungBench(MaskRcnn::load(vb, &MaskRcnnConfig::default())?, LungPreprocessConfig::default().input_size)),
        other => anyhow::bail!("bench: unknown network {other:?} (known: {})", NETWORKS.join(", ")),
    };
    seeded_init(&varmap, 7)?;
    Ok((net, varmap))
}

pub fn run(opts: &BenchOptions) -> anyhow::Result<BenchReport> {
    let sgemm = sgemm_peak();
    let mut networks = Vec::new();
    for name in &opts.networks {
        let (net, varmap) = build(name)?;
        networks.push(figures(name, net.as_ref(), &varmap, opts).with_context(|| format!("bench {name}"))?);
    }
    Ok(BenchReport { threads: threads(), avx512: avx512(), sgemm_gflops: sgemm, networks })
}

fn avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The report as the table `ainode bench cpu` prints.
pub fn render(r: &BenchReport) -> String {
    let mut s =
        format!("CPU: {} threads, AVX-512 {}, sgemm 2048³ {:.1} GFLOP/s (the peak below)\n\n", r.threads, if r.avx512 { "yes" } else { "no" }, r.sgemm_gflops);
    s += "| network | input | inference ms/image | train step ms/image (batch) | conv GFLOP inf / train per image | conv GFLOP/s inf / train (% of sgemm) | conv share of step |\n";
    s += "| --- | --- | --- | --- | --- | --- | --- |\n";
    for n in &r.networks {
        s += &format!(
            "| {} | {} | {:.1} | {:.1} ({}) | {:.2} / {:.2} | {:.1} / {:.1} ({:.0} % / {:.0} %) | {:.0} % |\n",
            n.network,
            n.input,
            n.inference_ms_per_image,
            n.train_step_ms_per_image,
            n.train_batch,
            n.inference_gflop,
            n.train_gflop,
            n.conv_gflops_inference,
            n.conv_gflops_train,
            100.0 * n.conv_gflops_inference / r.sgemm_gflops,
            100.0 * n.conv_gflops_train / r.sgemm_gflops,
            100.0 * n.conv_share_train
        );
    }
    for n in &r.networks {
        for (what, layers) in [("one inference (batch 1)", &n.top_layers_inference), ("one training step", &n.top_layers_train)] {
            s += &format!("\n{}: most expensive layers of {what}\n\n| layer | calls | ms | GFLOP/s |\n| --- | --- | --- | --- |\n", n.network);
            for l in layers {
                let g = if l.gflops > 0.0 { format!("{:.1}", l.gflops) } else { "-".into() };
                s += &format!("| {} | {} | {:.1} | {} |\n", l.layer, l.calls, l.ms, g);
            }
        }
    }
    s
}
