//! A small deterministic PRNG (SplitMix64) with streams derived from
//! (seed, epoch, sample index): a resumed run recreates exactly the data
//! order and augmentations of the interrupted one without saved RNG state,
//! and samples do not depend on each other or on the loading order.

/// SplitMix64 generator (Steele, Lea, Flood 2014): 64-bit state, passes
/// BigCrush, and its output function doubles as a good integer hash.
#[derive(Debug, Clone)]
pub struct Rng {
    state: u64,
}

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// The SplitMix64 finaliser: a bijective 64-bit mix.
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Purposes of derived streams, so that the batch order of an epoch and the
/// augmentation of sample 0 never share a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u64)]
pub enum Purpose {
    Augment = 1,
    BatchOrder = 2,
    ValidationSplit = 3,
    Clustering = 4,
    /// Synthetic data generators (`ainode data synth`): one stream per case.
    Synthesis = 5,
    /// Initial weights (`models::init`): one stream per tensor.
    Initialization = 6,
    /// Inputs of `ainode bench cpu`.
    Benchmark = 7,
}

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng { state: mix64(seed ^ GOLDEN) }
    }

    /// The stream for one (purpose, seed, epoch, index).
    pub fn stream(purpose: Purpose, seed: u64, epoch: u64, index: u64) -> Self {
        let mut h = mix64(seed.wrapping_add(GOLDEN));
        h = mix64(h ^ (purpose as u64).wrapping_mul(0xD1B5_4A32_D192_ED03));
        h = mix64(h ^ epoch.wrapping_mul(0x8CB9_2BA7_2F3D_8DD7).wrapping_add(1));
        h = mix64(h ^ index.wrapping_mul(0xA24B_AED4_963E_E407).wrapping_add(2));
        Rng { state: h }
    }

    /// The augmentation stream of sample `index` in `epoch`.
    pub fn for_sample(seed: u64, epoch: u64, index: u64) -> Self {
        Self::stream(Purpose::Augment, seed, epoch, index)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GOLDEN);
        mix64(self.state)
    }

    /// Uniform in [0, 1) with 53 random bits.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in [lo, hi) (lo when the range is empty).
    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.uniform()
    }

    /// Uniform integer in 0..n (n > 0), without modulo bias (Lemire).
    pub fn below(&mut self, n: usize) -> usize {
        assert!(n > 0, "Rng::below(0)");
        let n = n as u64;
        loop {
            let m = (self.next_u64() as u128) * (n as u128);
            let low = m as u64;
            if low >= n.wrapping_neg() % n {
                return (m >> 64) as usize;
            }
        }
    }

    /// True with probability p.
    pub fn chance(&mut self, p: f64) -> bool {
        self.uniform() < p
    }

    /// Standard normal (Box-Muller; one draw per call keeps streams simple).
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.uniform(); // (0, 1]
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// Fisher-Yates shuffle.
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i + 1);
            v.swap(i, j);
        }
    }

    /// A random permutation of 0..n.
    pub fn permutation(&mut self, n: usize) -> Vec<usize> {
        let mut p: Vec<usize> = (0..n).collect();
        self.shuffle(&mut p);
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix_reference_values() {
        // SplitMix64 with state 0 (reference implementation by Vigna): first outputs
        let mut r = Rng { state: 0 };
        assert_eq!(r.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(r.next_u64(), 0x6E78_9E6A_A1B9_65F4);
    }

    #[test]
    fn streams_are_reproducible_and_distinct() {
        let a: Vec<u64> = (0..4)
            .map({
                let mut r = Rng::for_sample(7, 3, 11);
                move |_| r.next_u64()
            })
            .collect();
        let b: Vec<u64> = (0..4)
            .map({
                let mut r = Rng::for_sample(7, 3, 11);
                move |_| r.next_u64()
            })
            .collect();
        assert_eq!(a, b);
        for (s, e, i) in [(8, 3, 11), (7, 4, 11), (7, 3, 12)] {
            assert_ne!(Rng::for_sample(s, e, i).next_u64(), a[0], "({s},{e},{i})");
        }
        assert_ne!(Rng::stream(Purpose::BatchOrder, 7, 3, 11).next_u64(), a[0]);
    }

    #[test]
    fn distributions() {
        let mut r = Rng::new(1);
        let n = 200_000;
        let (mut s, mut s2, mut su) = (0.0, 0.0, 0.0);
        let mut counts = [0usize; 3];
        for _ in 0..n {
            let z = r.normal();
            s += z;
            s2 += z * z;
            su += r.uniform();
            counts[r.below(3)] += 1;
        }
        let mean = s / n as f64;
        let var = s2 / n as f64 - mean * mean;
        assert!(mean.abs() < 0.01, "{mean}");
        assert!((var - 1.0).abs() < 0.02, "{var}");
        assert!((su / n as f64 - 0.5).abs() < 0.005);
        for c in counts {
            assert!((c as f64 / n as f64 - 1.0 / 3.0).abs() < 0.01, "{counts:?}");
        }
        let p = r.permutation(10);
        let mut sorted = p.clone();
        sorted.sort();
        assert_eq!(sorted, (0..10).collect::<Vec<_>>());
        assert_ne!(p, sorted);
    }
}
