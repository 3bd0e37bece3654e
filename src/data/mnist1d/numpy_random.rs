//! NumPy's legacy `RandomState` (the `np.random.*` functions) on top of MT19937.
//!
//! The reference MNIST-1D generator draws every random number through `np.random`, so matching
//! its arrays bit for bit means reproducing these draws exactly: `rand` (53-bit doubles),
//! `randn` (the polar Box–Muller method with its cached second value), `randint`/`choice`
//! (masked rejection sampling) and `permutation` (Fisher–Yates with `random_interval`).
//! Each function names the NumPy C routine it mirrors.

use rand_mt::Mt;

/// NumPy's `RandomState` seeded like `np.random.seed(seed)`.
pub struct NumpyRandomState {
    mt: Mt,
    cached_gauss: Option<f64>,
}

impl NumpyRandomState {
    /// `np.random.seed(seed)`: MT19937 `init_genrand`, and no cached Gaussian.
    pub fn new(seed: u32) -> Self {
        Self { mt: Mt::new(seed), cached_gauss: None }
    }

    fn next_u32(&mut self) -> u32 {
        self.mt.next_u32()
    }

    /// `np.random.rand()`: `legacy_double`, 53 random bits from two 32-bit draws.
    pub fn rand(&mut self) -> f64 {
        let a = (self.next_u32() >> 5) as f64;
        let b = (self.next_u32() >> 6) as f64;
        (a * 67_108_864.0 + b) / 9_007_199_254_740_992.0
    }

    /// `np.random.randn()`: `legacy_gauss`, the polar method; every second call returns the
    /// value cached by the first.
    pub fn randn(&mut self) -> f64 {
        if let Some(g) = self.cached_gauss.take() {
            return g;
        }
        loop {
            let x1 = 2.0 * self.rand() - 1.0;
            let x2 = 2.0 * self.rand() - 1.0;
            let r2 = x1 * x1 + x2 * x2;
            if r2 < 1.0 && r2 != 0.0 {
                let f = (-2.0 * r2.ln() / r2).sqrt();
                self.cached_gauss = Some(f * x1);
                return f * x2;
            }
        }
    }

    /// `np.random.randint(0, high)` for a scalar: `random_bounded_uint64_fill` with the legacy
    /// masked method (ranges below 2^32 draw 32-bit words).
    pub fn randint(&mut self, high: u64) -> u64 {
        debug_assert!(high > 0 && high - 1 < u32::MAX as u64);
        let rng = high - 1;
        if rng == 0 {
            return 0;
        }
        let mask = smallest_mask(rng);
        loop {
            let v = self.next_u32() as u64 & mask;
            if v <= rng {
                return v;
            }
        }
    }

    /// `np.random.choice(n)` with replacement and no weights: a `randint(0, n)`.
    pub fn choice(&mut self, n: u64) -> u64 {
        self.randint(n)
    }

    /// `random_interval(max)`: a uniform integer in `0..=max` by masked rejection.
    fn random_interval(&mut self, max: u64) -> u64 {
        if max == 0 {
            return 0;
        }
        let mask = smallest_mask(max);
        if max <= u32::MAX as u64 {
            loop {
                let v = self.next_u32() as u64 & mask;
                if v <= max {
                    return v;
                }
            }
        } else {
            loop {
                let hi = self.next_u32() as u64;
                let lo = self.next_u32() as u64;
                let v = ((hi << 32) | lo) & mask;
                if v <= max {
                    return v;
                }
            }
        }
    }

    /// `np.random.permutation(n)`: `arange(n)` shuffled in place by the legacy Fisher–Yates.
    pub fn permutation(&mut self, n: usize) -> Vec<usize> {
        let mut out: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            let j = self.random_interval(i as u64) as usize;
            out.swap(i, j);
        }
        out
    }
}

/// The smallest all-ones bit mask that covers `max`.
fn smallest_mask(max: u64) -> u64 {
    let mut mask = max;
    mask |= mask >> 1;
    mask |= mask >> 2;
    mask |= mask >> 4;
    mask |= mask >> 8;
    mask |= mask >> 16;
    mask |= mask >> 32;
    mask
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values printed by NumPy 2.x: `np.random.seed(42); np.random.rand(3)`,
    /// then `np.random.seed(42); np.random.randn(3)`, `np.random.seed(0); np.random.permutation(10)`
    /// and `np.random.seed(1); [np.random.choice(48) for _ in range(5)]`.
    #[test]
    fn matches_numpy_legacy_draws() {
        let mut r = NumpyRandomState::new(42);
        let u: Vec<f64> = (0..3).map(|_| r.rand()).collect();
        let want = [0.3745401188473625, 0.9507143064099162, 0.7319939418114051];
        for (a, b) in u.iter().zip(want) {
            assert_eq!(*a, b);
        }
        let mut r = NumpyRandomState::new(42);
        let g: Vec<f64> = (0..3).map(|_| r.randn()).collect();
        let want = [0.4967141530112327, -0.13826430117118466, 0.6476885381006925];
        for (a, b) in g.iter().zip(want) {
            assert!((a - b).abs() < 1e-15, "{a} vs {b}");
        }
        let mut r = NumpyRandomState::new(0);
        assert_eq!(r.permutation(10), vec![2, 8, 4, 9, 1, 6, 7, 3, 0, 5]);
        let mut r = NumpyRandomState::new(1);
        let c: Vec<u64> = (0..5).map(|_| r.choice(48)).collect();
        assert_eq!(c, NUMPY_CHOICE_SEED1);
    }

    const NUMPY_CHOICE_SEED1: [u64; 5] = [37, 43, 12, 8, 9];
}
