//! VGG16 trunk with SSD's changes (pool5 3x3 stride 1, dilated conv6, conv7),
//! the SSD512 extra layers, the L2 normalisation of conv4_3, and the per-source
//! class / box prediction convolutions (MODELS.md 3). Source maps for a 512x512
//! input: 64, 32, 16, 8, 4, 2, 1 cells.
//!
//! `batch_norm` puts a batch norm after every trunk convolution and the
//! extras down to 4 x 4 maps (ScratchDet: SSD trained from scratch with BN);
//! it is off in the published network. The 2 x 2 and 1 x 1 extras stay
//! without: their batch statistics would come from a handful of values.

use candle_core::{Module, ModuleT, Result, Tensor, D};
use candle_nn::{Init, VarBuilder};

use super::conv::{Conv2d, ConvBnAct, ConvConfig};
use super::pool::{max_pool2d, Pool2dConfig};
use super::resnet::scaled;

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct VggSsdConfig {
    pub in_channels: usize,
    /// Scales every width; 1.0 is the published network.
    pub width_mult: f64,
    /// Dilation of conv6 (6 in SSD).
    pub conv6_dilation: usize,
    /// Initial scale of the conv4_3 L2 normalisation (20 in SSD).
    pub l2norm_scale: f64,
    /// Batch norm after the trunk's and the larger extras' convolutions (not in SSD).
    pub batch_norm: bool,
}

impl Default for VggSsdConfig {
    fn default() -> Self {
        VggSsdConfig { in_channels: 3, width_mult: 1.0, conv6_dilation: 6, l2norm_scale: 20.0, batch_norm: false }
    }
}

/// Extras (of SSD512_EXTRAS) whose outputs are at least 4 x 4 and so get batch norm.
const EXTRAS_WITH_BN: usize = 3;

/// A convolution followed by ReLU, with or without batch norm in between.
#[derive(Debug, Clone)]
enum ConvRelu {
    Plain(Conv2d),
    Bn(ConvBnAct),
}

impl ConvRelu {
    fn load(vb: VarBuilder, name: &str, i: usize, o: usize, cfg: ConvConfig, bn: bool) -> Result<ConvRelu> {
        Ok(if bn { ConvRelu::Bn(ConvBnAct::load(vb.pp(name), i, o, cfg, true)?) } else { ConvRelu::Plain(conv(vb, name, i, o, cfg)?) })
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        match self {
            ConvRelu::Plain(c) => c.forward_relu(x),
            ConvRelu::Bn(c) => c.forward_t(x, train),
        }
    }
}

/// VGG16 blocks: (channels, convs) per block; a 2x2 max pool follows blocks 1-4.
const VGG16: [(usize, usize); 5] = [(64, 2), (128, 2), (256, 3), (512, 3), (512, 3)];
/// SSD512 extras: (1x1 width, 3x3 width, stride, kernel of the second conv).
const SSD512_EXTRAS: [(usize, usize, usize, usize); 5] = [(256, 512, 2, 3), (128, 256, 2, 3), (128, 256, 2, 3), (128, 256, 2, 3), (128, 256, 1, 4)];

fn conv(vb: VarBuilder, name: &str, i: usize, o: usize, cfg: ConvConfig) -> Result<Conv2d> {
    Conv2d::load(vb.pp(name), i, o, cfg)
}

#[derive(Debug, Clone)]
pub struct VggSsd {
    blocks: Vec<Vec<ConvRelu>>,
    conv6: ConvRelu,
    conv7: ConvRelu,
    extras: Vec<(ConvRelu, ConvRelu)>,
    l2norm_weight: Tensor,
    channels: Vec<usize>,
}

impl VggSsd {
    pub fn load(vb: VarBuilder, cfg: &VggSsdConfig) -> Result<VggSsd> {
        let w = |c| scaled(c, cfg.width_mult);
        let bn = cfg.batch_norm;
        let same3 = ConvConfig::same(3, 1, 1, true);
        let mut in_c = cfg.in_channels;
        let mut blocks = Vec::new();
        for (b, &(c, n)) in VGG16.iter().enumerate() {
            let mut convs = Vec::new();
            for k in 0..n {
                convs.push(ConvRelu::load(vb.clone(), &format!("conv{}_{}", b + 1, k + 1), in_c, w(c), same3, bn)?);
                in_c = w(c);
            }
            blocks.push(convs);
        }
        let conv4_3 = w(512);
        let d = cfg.conv6_dilation;
        let conv6 = ConvRelu::load(vb.clone(), "conv6", in_c, w(1024), ConvConfig::same(3, 1, d, true), bn)?;
        let conv7 = ConvRelu::load(vb.clone(), "conv7", w(1024), w(1024), ConvConfig::same(1, 1, 1, true), bn)?;
        let mut channels = vec![conv4_3, w(1024)];
        in_c = w(1024);
        let mut extras = Vec::new();
        for (e, &(c1, c2, stride, k)) in SSD512_EXTRAS.iter().enumerate() {
            let bn = bn && e < EXTRAS_WITH_BN;
            let a = ConvRelu::load(vb.clone(), &format!("conv{}_1", e + 8), in_c, w(c1), ConvConfig::same(1, 1, 1, true), bn)?;
            let b = ConvRelu::load(
                vb.clone(),
                &format!("conv{}_2", e + 8),
                w(c1),
                w(c2),
                ConvConfig { kernel: k, stride, padding: 1, dilation: 1, bias: true },
                bn,
            )?;
            extras.push((a, b));
            in_c = w(c2);
            channels.push(in_c);
        }
        let l2norm_weight = vb.get_with_hints(conv4_3, "conv4_3_norm.weight", Init::Const(cfg.l2norm_scale))?;
        Ok(VggSsd { blocks, conv6, conv7, extras, l2norm_weight, channels })
    }

    /// Channels of the seven source maps.
    pub fn source_channels(&self) -> &[usize] {
        &self.channels
    }

    /// The seven source maps: L2-normalised conv4_3, conv7, conv8_2 .. conv12_2.
    /// `train` selects batch statistics (and updates the running ones) when
    /// the trunk has batch norm.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Vec<Tensor>> {
        let pool2 = Pool2dConfig { kernel: 2, stride: 2, padding: 0 };
        let mut y = x.clone();
        let mut sources = Vec::with_capacity(7);
        for (b, convs) in self.blocks.iter().enumerate() {
            if b > 0 {
                y = max_pool2d(&y, &pool2)?;
            }
            for c in convs {
                y = c.forward_t(&y, train)?;
            }
            if b == 3 {
                sources.push(l2_normalize_channels(&y, &self.l2norm_weight)?);
            }
        }
        y = max_pool2d(&y, &Pool2dConfig { kernel: 3, stride: 1, padding: 1 })?;
        y = self.conv6.forward_t(&y, train)?;
        y = self.conv7.forward_t(&y, train)?;
        sources.push(y.clone());
        for (a, b) in &self.extras {
            y = b.forward_t(&a.forward_t(&y, train)?, train)?;
            sources.push(y.clone());
        }
        Ok(sources)
    }
}

/// x / ||x||_2 over channels, times a learned per-channel scale (SSD's L2Norm).
pub fn l2_normalize_channels(x: &Tensor, weight: &Tensor) -> Result<Tensor> {
    let norm = (x.sqr()?.sum_keepdim(1)? + 1e-10)?.sqrt()?;
    x.broadcast_div(&norm)?.broadcast_mul(&weight.reshape((1, (), 1, 1))?)
}

/// 3x3 class and box prediction convs on each source map (SSD's multibox head).
/// Outputs are ordered like the default boxes: map, row, column, box.
#[derive(Debug, Clone)]
pub struct MultiboxHead {
    cls: Vec<Conv2d>,
    loc: Vec<Conv2d>,
    num_classes: usize,
}

impl MultiboxHead {
    /// `num_classes` includes the background class 0.
    pub fn load(vb: VarBuilder, source_channels: &[usize], boxes_per_cell: &[usize], num_classes: usize) -> Result<MultiboxHead> {
        if source_channels.len() != boxes_per_cell.len() {
            candle_core::bail!("multibox head: {} source maps but {} box counts", source_channels.len(), boxes_per_cell.len());
        }
        let c3 = ConvConfig::same(3, 1, 1, true);
        let mut cls = Vec::new();
        let mut loc = Vec::new();
        for (i, (&c, &a)) in source_channels.iter().zip(boxes_per_cell).enumerate() {
            cls.push(Conv2d::load(vb.pp(format!("cls.{i}")), c, a * num_classes, c3)?);
            loc.push(Conv2d::load(vb.pp(format!("loc.{i}")), c, a * 4, c3)?);
        }
        Ok(MultiboxHead { cls, loc, num_classes })
    }

    /// (class logits (N, P, num_classes), box offsets (N, P, 4)).
    pub fn forward(&self, sources: &[Tensor]) -> Result<(Tensor, Tensor)> {
        if sources.len() != self.cls.len() {
            candle_core::bail!("multibox head: expected {} source maps, got {}", self.cls.len(), sources.len());
        }
        let flat = |t: Tensor, per: usize| -> Result<Tensor> {
            let n = t.dim(0)?;
            t.permute((0, 2, 3, 1))?.contiguous()?.reshape((n, (), per))
        };
        let mut cls = Vec::new();
        let mut loc = Vec::new();
        for (i, s) in sources.iter().enumerate() {
            cls.push(flat(self.cls[i].forward(s)?, self.num_classes)?);
            loc.push(flat(self.loc[i].forward(s)?, 4)?);
        }
        Ok((Tensor::cat(&cls, D::Minus2)?, Tensor::cat(&loc, D::Minus2)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::blocks::testing::{det_tensor, gradcheck};
    use candle_core::{DType, Device};
    use candle_nn::VarMap;

    #[test]
    fn ssd512_source_maps_and_prior_count() -> Result<()> {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
        let net = VggSsd::load(vb.clone(), &VggSsdConfig { width_mult: 0.0625, ..Default::default() })?;
        let x = Tensor::zeros((1, 3, 512, 512), DType::F32, &Device::Cpu)?;
        let src = net.forward_t(&x, false)?;
        let sizes: Vec<usize> = src.iter().map(|t| t.dim(2).unwrap()).collect();
        assert_eq!(sizes, vec![64, 32, 16, 8, 4, 2, 1]);
        let head = MultiboxHead::load(vb.pp("head"), net.source_channels(), &[4, 6, 6, 6, 6, 4, 4], 11)?;
        let (cls, loc) = head.forward(&src)?;
        assert_eq!(cls.dims(), &[1, 24564, 11]);
        assert_eq!(loc.dims(), &[1, 24564, 4]);
        Ok(())
    }

    #[test]
    fn full_size_vgg16_parameter_count() -> Result<()> {
        // ssd.pytorch's VGG16 base (conv1_1 .. conv7): 20_483_904 weights and biases,
        // plus 512 for the L2Norm scale.
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
        let _ = VggSsd::load(vb, &VggSsdConfig::default())?;
        let data = vm.data().lock().unwrap();
        let base: usize = data
            .iter()
            .filter(|(k, _)| {
                let n: usize = k.trim_start_matches("conv").split('_').next().unwrap().split('.').next().unwrap().parse().unwrap_or(99);
                n <= 7
            })
            .map(|(_, v)| v.elem_count())
            .sum();
        assert_eq!(base, 20_483_904 + 512);
        Ok(())
    }

    #[test]
    fn l2norm_values_and_gradient() -> Result<()> {
        let x = Tensor::new(&[3f64, 4.], &Device::Cpu)?.reshape((1, 2, 1, 1))?;
        let w = Tensor::new(&[20f64, 10.], &Device::Cpu)?;
        let y = l2_normalize_channels(&x, &w)?.flatten_all()?.to_vec1::<f64>()?;
        assert!((y[0] - 12.0).abs() < 1e-9 && (y[1] - 8.0).abs() < 1e-9);
        let x = det_tensor(&[1, 3, 2, 2], 5);
        let w = det_tensor(&[3], 6);
        let t = det_tensor(&[1, 3, 2, 2], 7);
        assert!(gradcheck(&x, |x| (l2_normalize_channels(x, &w)? * &t)?.sum_all())? < 1e-6);
        Ok(())
    }
}
