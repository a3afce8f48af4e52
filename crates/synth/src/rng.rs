//! Randomness that is a pure function of (seed, stream): every person draws from their own
//! ChaCha stream keyed by the run's seed, so persons can be generated in any order, on any
//! number of threads, and the output stays byte-identical for the same seed and arguments.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha12Rng;

/// Streams below this are persons; streams at or above are reserved for run-level choices
/// (institutions), so the two can never collide.
const RESERVED: u64 = 1 << 62;

/// A deterministic random source for one person or one run-level purpose.
pub struct Draw(ChaCha12Rng);

impl Draw {
    /// The stream of person `index` under `seed`.
    pub fn person(seed: u64, index: u64) -> Self {
        Self::stream(seed, index % RESERVED)
    }

    /// A run-level stream (`purpose` is a small constant per use).
    pub fn run(seed: u64, purpose: u64) -> Self {
        Self::stream(seed, RESERVED + purpose)
    }

    fn stream(seed: u64, stream: u64) -> Self {
        let key = ring::digest::digest(
            &ring::digest::SHA256,
            &[b"enclave-synth v1 ".as_slice(), &seed.to_le_bytes()].concat(),
        );
        let mut k = [0u8; 32];
        k.copy_from_slice(key.as_ref());
        let mut rng = ChaCha12Rng::from_seed(k);
        rng.set_stream(stream);
        Self(rng)
    }

    /// Uniform in `lo..=hi`.
    pub fn int(&mut self, lo: u64, hi: u64) -> u64 {
        self.0.gen_range(lo..=hi)
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        self.0.gen::<f64>()
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p.clamp(0.0, 1.0)
    }

    /// Normal(mean, sd) by Box–Muller.
    pub fn normal(&mut self, mean: f64, sd: f64) -> f64 {
        let u1 = 1.0 - self.unit(); // (0, 1], so ln is finite
        let u2 = self.unit();
        mean + sd * (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// Log-normal with the given median and multiplicative spread (sd of ln).
    pub fn lognormal(&mut self, median: f64, sigma: f64) -> f64 {
        median * self.normal(0.0, sigma).exp()
    }

    /// Poisson(λ) by inversion; λ here is small (visits per window).
    pub fn poisson(&mut self, lambda: f64) -> u32 {
        let l = (-lambda).exp();
        let (mut k, mut p) = (0u32, 1.0);
        loop {
            p *= self.unit();
            if p <= l || k >= 64 {
                return k;
            }
            k += 1;
        }
    }

    /// Index into a list, weighted by the cumulative table `cum` (last entry = total).
    pub fn weighted(&mut self, cum: &[u64]) -> usize {
        let total = cum.last().copied().unwrap_or(0);
        if total == 0 {
            return 0;
        }
        let x = self.int(0, total - 1);
        cum.partition_point(|&c| c <= x)
    }

    /// A uniformly chosen element.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        if items.is_empty() {
            return None;
        }
        items.get(self.int(0, items.len() as u64 - 1) as usize)
    }

    /// `n` decimal digits.
    pub fn digits(&mut self, n: usize) -> String {
        (0..n)
            .map(|_| char::from(b'0' + self.int(0, 9) as u8))
            .collect()
    }
}

/// Cumulative sums of `weights`, for [`Draw::weighted`].
pub fn cumulative(weights: impl IntoIterator<Item = u64>) -> Vec<u64> {
    let mut acc = 0u64;
    weights
        .into_iter()
        .map(|w| {
            acc += w;
            acc
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_reproducible_and_distinct() {
        let a: Vec<u64> = (0..4)
            .map(|_| Draw::person(7, 3).int(0, u64::MAX))
            .collect();
        assert!(a.windows(2).all(|w| w[0] == w[1]));
        assert_ne!(
            Draw::person(7, 3).int(0, u64::MAX),
            Draw::person(7, 4).int(0, u64::MAX)
        );
        assert_ne!(
            Draw::person(7, 3).int(0, u64::MAX),
            Draw::person(8, 3).int(0, u64::MAX)
        );
    }

    #[test]
    fn weighted_respects_zero_weights() {
        let cum = cumulative([0, 5, 0, 5]);
        let mut d = Draw::run(1, 1);
        for _ in 0..1000 {
            let i = d.weighted(&cum);
            assert!(i == 1 || i == 3, "{i}");
        }
    }
}
