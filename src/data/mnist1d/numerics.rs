//! The few NumPy/SciPy numerical routines the MNIST-1D generator uses, written to follow the
//! reference implementations' operation order so results agree to the last bits.

/// `np.linspace(start, stop, num)`: `i * step + start`, with the last point set to `stop`.
pub fn linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    if num == 0 {
        return Vec::new();
    }
    if num == 1 {
        return vec![start];
    }
    let step = (stop - start) / (num - 1) as f64;
    let mut y: Vec<f64> = (0..num).map(|i| i as f64 * step + start).collect();
    y[num - 1] = stop;
    y
}

/// NumPy's pairwise summation (`pairwise_sum` in `loops_utils.h`): blocks of 128 summed with
/// eight accumulators, larger arrays split in halves.
pub fn pairwise_sum(a: &[f64]) -> f64 {
    let n = a.len();
    if n < 8 {
        let mut res = 0.0;
        for &v in a {
            res += v;
        }
        res
    } else if n <= 128 {
        let mut r = [0.0f64; 8];
        r.copy_from_slice(&a[..8]);
        let mut i = 8;
        while i < n - (n % 8) {
            for j in 0..8 {
                r[j] += a[i + j];
            }
            i += 8;
        }
        let mut res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        while i < n {
            res += a[i];
            i += 1;
        }
        res
    } else {
        let mut n2 = n / 2;
        n2 -= n2 % 8;
        pairwise_sum(&a[..n2]) + pairwise_sum(&a[n2..])
    }
}

/// `x.mean()` as NumPy computes it.
pub fn mean(a: &[f64]) -> f64 {
    pairwise_sum(a) / a.len() as f64
}

/// `x.std()` (population, ddof = 0) as NumPy computes it.
pub fn std(a: &[f64]) -> f64 {
    let m = mean(a);
    let sq: Vec<f64> = a.iter().map(|v| (v - m) * (v - m)).collect();
    (pairwise_sum(&sq) / a.len() as f64).sqrt()
}

/// `np.interp(x_new, xp, fp)` for increasing `xp` (what SciPy's `interp1d(kind="linear")` calls
/// for 1-D float data): exact knots return the knot value, others `slope * (x - xp[j]) + fp[j]`.
pub fn interp(x_new: &[f64], xp: &[f64], fp: &[f64]) -> Vec<f64> {
    let n = xp.len();
    x_new
        .iter()
        .map(|&x| {
            if x <= xp[0] {
                return fp[0];
            }
            if x >= xp[n - 1] {
                return fp[n - 1];
            }
            // j with xp[j] <= x < xp[j + 1]
            let j = xp.partition_point(|&v| v <= x) - 1;
            if xp[j] == x {
                return fp[j];
            }
            let slope = (fp[j + 1] - fp[j]) / (xp[j + 1] - xp[j]);
            slope * (x - xp[j]) + fp[j]
        })
        .collect()
}

/// `mnist1d.transform.interpolate`: resample `x` (on `linspace(0, 1, len)`) at `n` points.
pub fn resample(x: &[f64], n: usize) -> Vec<f64> {
    let scale = linspace(0.0, 1.0, x.len());
    let new_scale = linspace(0.0, 1.0, n);
    interp(&new_scale, &scale, x)
}

/// `scipy.ndimage.gaussian_filter(x, sigma)` for 1-D input with the defaults (`mode="reflect"`,
/// `truncate=4.0`): the kernel of `_gaussian_kernel1d`, applied as `NI_Correlate1D` does for
/// symmetric kernels (centre term first, then symmetric pairs from the outside in).
pub fn gaussian_filter1d(x: &[f64], sigma: f64) -> Vec<f64> {
    let radius = (4.0 * sigma + 0.5) as isize;
    let sigma2 = sigma * sigma;
    let phi: Vec<f64> = (-radius..=radius).map(|i| (-0.5 / sigma2 * (i * i) as f64).exp()).collect();
    let total = pairwise_sum(&phi);
    let w: Vec<f64> = phi.iter().map(|v| v / total).collect();
    let n = x.len() as isize;
    // scipy "reflect": (d c b a | a b c d | d c b a)
    let at = |i: isize| -> f64 {
        let period = 2 * n;
        let mut k = i.rem_euclid(period);
        if k >= n {
            k = period - 1 - k;
        }
        x[k as usize]
    };
    (0..n)
        .map(|i| {
            let mut acc = at(i) * w[radius as usize];
            for jj in -radius..0 {
                acc += (at(i + jj) + at(i - jj)) * w[(radius + jj) as usize];
            }
            acc
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linspace_matches_numpy_endpoints() {
        let y = linspace(-0.5, 0.5, 5);
        assert_eq!(y, vec![-0.5, -0.25, 0.0, 0.25, 0.5]);
    }

    #[test]
    fn interp_hits_knots_and_midpoints() {
        let y = interp(&[0.0, 0.25, 0.5, 1.0], &[0.0, 0.5, 1.0], &[1.0, 3.0, 2.0]);
        assert_eq!(y, vec![1.0, 2.0, 3.0, 2.0]);
    }

    #[test]
    fn gaussian_filter_preserves_constants_and_mass() {
        let y = gaussian_filter1d(&[2.0; 30], 2.0);
        assert!(y.iter().all(|v| (v - 2.0).abs() < 1e-12));
        // reflect mode keeps the total of a signal away from the borders
        let mut x = vec![0.0; 41];
        x[20] = 1.0;
        let s: f64 = gaussian_filter1d(&x, 2.0).iter().sum();
        assert!((s - 1.0).abs() < 1e-12);
    }

    #[test]
    fn pairwise_sum_is_exact_on_integers() {
        let a: Vec<f64> = (0..1000).map(|i| i as f64).collect();
        assert_eq!(pairwise_sum(&a), 499_500.0);
    }
}
