//! A small real model for the trainer's tests (test builds only; never in
//! the product registry): two convolutions segmenting a bright square in
//! noise, trained with softmax cross-entropy, evaluated with Dice.

use candle_core::{DType, Device, Tensor};
use candle_nn::{Conv2d, Conv2dConfig, Init, Module, VarBuilder, VarMap};
use serde_json::{json, Value};

use super::metrics::{Metrics, SegmentationConfig, SegmentationEval};
use super::task::{DataDescription, MetricGoal, ModelDescription, StepContext, StepLoss, TaskOptions, TrainConfig, TrainTask};
use crate::models::blocks::losses::softmax_cross_entropy;
use crate::train::data::Split;

const SIZE: usize = 8;

/// One image (1×8×8) and its label map (1 inside the square).
fn sample(seed: u64) -> (Vec<f32>, Vec<u8>) {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 11) as f64 / (1u64 << 53) as f64
    };
    let side = 2 + (next() * 3.0) as usize;
    let (y0, x0) = ((next() * (SIZE - side) as f64) as usize, (next() * (SIZE - side) as f64) as usize);
    let mut img = vec![0f32; SIZE * SIZE];
    let mut mask = vec![0u8; SIZE * SIZE];
    for y in 0..SIZE {
        for x in 0..SIZE {
            let inside = (y0..y0 + side).contains(&y) && (x0..x0 + side).contains(&x);
            img[y * SIZE + x] = if inside { 1.0 } else { 0.0 } + (next() as f32 - 0.5) * 0.6;
            mask[y * SIZE + x] = inside as u8;
        }
    }
    (img, mask)
}

pub struct ToyTask {
    varmap: VarMap,
    conv1: Conv2d,
    conv2: Conv2d,
    hidden: usize,
    train: Vec<(Vec<f32>, Vec<u8>)>,
    val: Vec<(Vec<f32>, Vec<u8>)>,
    test: Vec<(Vec<f32>, Vec<u8>)>,
    /// Validation values returned instead of Dice (to test model selection).
    pub scripted_val: Option<Vec<f64>>,
    pub goal: MetricGoal,
    /// Weights at each validation, in order.
    pub snapshots: Vec<Vec<(String, Vec<f32>)>>,
    validations: usize,
}

impl ToyTask {
    pub fn new(seed: u64, n_train: usize, hidden: usize) -> candle_core::Result<Self> {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let cfg = Conv2dConfig { padding: 1, ..Default::default() };
        let w1 = vb.pp("conv1").get_with_hints((hidden, 1, 3, 3), "weight", Init::Const(0.0))?;
        let b1 = vb.pp("conv1").get_with_hints(hidden, "bias", Init::Const(0.0))?;
        let w2 = vb.pp("conv2").get_with_hints((2, hidden, 1, 1), "weight", Init::Const(0.0))?;
        let b2 = vb.pp("conv2").get_with_hints(2, "bias", Init::Const(0.0))?;
        let task = ToyTask {
            conv1: Conv2d::new(w1, Some(b1), cfg),
            conv2: Conv2d::new(w2, Some(b2), Conv2dConfig::default()),
            varmap,
            hidden,
            train: (0..n_train as u64).map(|i| sample(1000 + i)).collect(),
            val: (0..8).map(|i| sample(2000 + i)).collect(),
            test: (0..8).map(|i| sample(3000 + i)).collect(),
            scripted_val: None,
            goal: MetricGoal::higher("dice.mean"),
            snapshots: Vec::new(),
            validations: 0,
        };
        // deterministic initial weights from the seed (candle's random init is not seedable on CPU)
        for (i, (name, var)) in super::optim::named_vars(&task.varmap).into_iter().enumerate() {
            let n = var.elem_count();
            let t = crate::models::blocks::testing::det_tensor(&[n], seed * 31 + i as u64).affine(0.5, 0.0)?;
            var.set(&t.to_dtype(DType::F32)?.reshape(var.shape())?).map_err(|e| candle_core::Error::Msg(format!("{name}: {e}")))?;
        }
        Ok(task)
    }

    fn batch(items: &[&(Vec<f32>, Vec<u8>)]) -> candle_core::Result<(Tensor, Tensor)> {
        let n = items.len();
        let img: Vec<f32> = items.iter().flat_map(|s| s.0.iter().copied()).collect();
        let mut onehot = vec![0f32; n * 2 * SIZE * SIZE];
        for (b, s) in items.iter().enumerate() {
            for (p, &l) in s.1.iter().enumerate() {
                onehot[(b * 2 + l as usize) * SIZE * SIZE + p] = 1.0;
            }
        }
        Ok((Tensor::from_vec(img, (n, 1, SIZE, SIZE), &Device::Cpu)?, Tensor::from_vec(onehot, (n, 2, SIZE, SIZE), &Device::Cpu)?))
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.conv2.forward(&self.conv1.forward(x)?.relu()?)
    }

    pub fn weights(&self) -> Vec<(String, Vec<f32>)> {
        super::optim::named_vars(&self.varmap).into_iter().map(|(n, v)| (n, v.flatten_all().unwrap().to_vec1().unwrap())).collect()
    }
}

impl TrainTask for ToyTask {
    fn name(&self) -> &str {
        "toy-squares"
    }

    fn varmap(&self) -> &VarMap {
        &self.varmap
    }

    fn num_train(&self) -> usize {
        self.train.len()
    }

    fn train_step(&mut self, samples: &[usize], _ctx: &StepContext) -> anyhow::Result<StepLoss> {
        let items: Vec<_> = samples.iter().map(|&i| &self.train[i]).collect();
        let (x, y) = Self::batch(&items)?;
        let logits = self.forward(&x)?;
        let ce = softmax_cross_entropy(&logits, &y, 1, None)?;
        Ok(StepLoss::new(ce.clone()).with_part("ce", &ce))
    }

    fn evaluate(&mut self, split: Split) -> anyhow::Result<Metrics> {
        let data = match split {
            Split::Train => &self.train,
            Split::Val => &self.val,
            Split::Test => &self.test,
        };
        let items: Vec<_> = data.iter().collect();
        let (x, y) = Self::batch(&items)?;
        let logits = self.forward(&x)?;
        let loss = softmax_cross_entropy(&logits, &y, 1, None)?.to_scalar::<f32>()? as f64;
        let pred = logits.argmax(1)?.to_dtype(DType::U8)?;
        let mut seg = SegmentationEval::new(vec!["background".into(), "square".into()], SegmentationConfig::default());
        for (b, item) in data.iter().enumerate() {
            let p: Vec<u8> = pred.get(b)?.flatten_all()?.to_vec1()?;
            seg.add_case(&p, &item.1)?;
        }
        let mut m = seg.metrics();
        m.set("loss", loss);
        if split == Split::Val {
            self.snapshots.push(self.weights());
            if let Some(s) = &self.scripted_val {
                m.set("scripted", s[self.validations]);
            }
            self.validations += 1;
        }
        Ok(m)
    }

    fn primary_metric(&self) -> MetricGoal {
        self.goal.clone()
    }

    fn describe(&self) -> ModelDescription {
        ModelDescription {
            architecture: json!({"hidden": self.hidden}),
            class_names: vec!["background".into(), "square".into()],
            preprocessing: json!({"size": SIZE}),
            summary: "Test model: two convolutions segmenting a square.".into(),
            ..Default::default()
        }
    }

    fn data(&self) -> DataDescription {
        DataDescription {
            source: "synthetic squares".into(),
            split: "fixed seeds".into(),
            counts: vec![("train".into(), self.train.len()), ("val".into(), 8), ("test".into(), 8)],
            licence: "generated".into(),
            hash: "sha256:toy".into(),
        }
    }

    fn train_defaults(&self) -> TrainConfig {
        TrainConfig {
            epochs: 4,
            batch_size: 4,
            optimizer: super::optim::AdamWConfig { lr: 0.05, weight_decay: 0.0, ..Default::default() },
            schedule: super::optim::ScheduleConfig { warmup_epochs: 0.5, floor_ratio: 0.1 },
            ..Default::default()
        }
    }
}

/// Registry constructor (for command tests): `{"hidden": N}` architecture.
pub fn build(opts: &TaskOptions) -> anyhow::Result<Box<dyn TrainTask>> {
    let hidden = match &opts.architecture {
        Some(Value::Object(o)) => o.get("hidden").and_then(Value::as_u64).ok_or_else(|| anyhow::anyhow!("toy config needs `hidden`"))? as usize,
        _ => 4,
    };
    Ok(Box::new(ToyTask::new(opts.seed, 16, hidden)?))
}
