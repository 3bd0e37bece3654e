//! Receptive fields of a convolutional network, in theory and as measured.
//!
//! Theory: a unit's window in the input grows with each layer. With kernel `k`, stride `s`
//! and padding `p`, the size grows by `(k−1)·jump`, the window start moves by `−p·jump`, and
//! the jump (input pixels between neighbouring units) multiplies by `s`: 3×3 → 5×5 → 7×7 for
//! stacked 3×3 convolutions, faster after pooling.
//!
//! Measurement (the effective receptive field, Luo et al. 2016): the gradient of a central
//! unit of a layer (summed over its channels) with respect to the input, in absolute value,
//! averaged over images. It is zero outside the theoretical window and usually concentrated
//! near its centre: the unit effectively sees less than its theoretical field.

use crate::core::layer::{Reads, Sequential};
use crate::core::{Backend, Layer, Mode, Tensor};
use crate::error::{Error, Result};
use serde::Serialize;

/// The theoretical window of one unit along one axis: `start + u·jump .. + size` for unit `u`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Axis {
    pub size: usize,
    pub jump: usize,
    /// Window start of unit 0 in input coordinates (negative: it begins in the padding).
    pub start: i64,
}

impl Axis {
    const INPUT: Axis = Axis { size: 1, jump: 1, start: 0 };

    fn through(self, k: usize, s: usize, p: usize) -> Axis {
        Axis { size: self.size + (k - 1) * self.jump, jump: self.jump * s, start: self.start - (p * self.jump) as i64 }
    }

    /// The input range `[lo, hi)` that unit `u` reads, clipped to an input of length `len`.
    pub fn window(&self, u: usize, len: usize) -> (usize, usize) {
        let lo = self.start + (u * self.jump) as i64;
        let hi = lo + self.size as i64;
        (lo.clamp(0, len as i64) as usize, hi.clamp(0, len as i64) as usize)
    }
}

/// One measured layer: the output of a convolution block (after its nonlinearity).
#[derive(Clone, Debug, Serialize)]
pub struct LayerField {
    /// Index of the measured layer in the network, and the block's convolution.
    pub layer: usize,
    pub describe: String,
    /// Output positions (rows, columns) of the layer.
    pub output: (usize, usize),
    /// The central unit measured.
    pub unit: (usize, usize),
    /// Theoretical field (rows, columns axes).
    pub theory: (Axis, Axis),
    /// Its window in the input, clipped: rows `[r0, r1)`, columns `[c0, c1)`.
    pub window: ((usize, usize), (usize, usize)),
    /// Mean |gradient| of the unit with respect to each input position (rows × columns,
    /// channels summed), scaled to a maximum of 1.
    pub map: Vec<f32>,
    /// Share of the gradient mass inside the theoretical window (1 by construction of
    /// backprop: a check of the theory).
    pub mass_inside_theory: f64,
    /// Side of the smallest square around the window's centre that holds 90% of the mass.
    pub effective_size_90: usize,
    /// Root-mean-square distance of the mass from the window's centre, in input pixels.
    pub rms_radius: f64,
}

/// The input's spatial shape (rows, columns, channels) for `[L, C]` or `[H, W, C]` examples.
pub fn spatial(example_shape: &[usize]) -> Result<(usize, usize, usize)> {
    match *example_shape {
        [l, c] => Ok((1, l, c)),
        [h, w, c] => Ok((h, w, c)),
        _ => Err(Error::Shape(format!("no positions in examples of shape {example_shape:?}"))),
    }
}

/// The theoretical field after each layer of `net` (`None` once a layer mixes all positions).
pub fn theory(net: &Sequential<impl Backend>) -> Vec<Option<(Axis, Axis)>> {
    let mut field = Some((Axis::INPUT, Axis::INPUT));
    net.layers()
        .iter()
        .map(|l| {
            field = match (field, l.reads()) {
                (Some(f), Reads::Pointwise) => Some(f),
                (Some((r, c)), Reads::Window { kernel, stride, padding, .. }) => {
                    Some((r.through(kernel.0, stride.0, padding.0), c.through(kernel.1, stride.1, padding.1)))
                }
                _ => None,
            };
            field
        })
        .collect()
}

/// The layers to measure: the last pointwise layer after each weighted window layer (the
/// block's output, after its nonlinearity), while the network still keeps positions.
pub fn block_outputs(net: &Sequential<impl Backend>) -> Vec<usize> {
    blocks(net).into_iter().map(|(_, end)| end).collect()
}

/// (weighted window layer, last layer of its block) for every block.
fn blocks(net: &Sequential<impl Backend>) -> Vec<(usize, usize)> {
    let layers = net.layers();
    let theory = theory(net);
    let mut out = Vec::new();
    for (i, l) in layers.iter().enumerate() {
        if !matches!(l.reads(), Reads::Window { weighted: true, .. }) || theory[i].is_none() {
            continue;
        }
        let mut end = i;
        while end + 1 < layers.len() && layers[end + 1].reads() == Reads::Pointwise {
            end += 1;
        }
        if end + 1 < layers.len() {
            out.push((i, end));
        }
    }
    out
}

/// Measures the effective receptive field of every block output of `net` on the examples `x`
/// (`[N, example_shape..]`), in eval mode.
pub fn measure<B: Backend>(net: &mut Sequential<B>, x: &Tensor<B>, example_shape: &[usize]) -> Result<Vec<LayerField>> {
    let (h, w, _) = spatial(example_shape)?;
    let theory = theory(net);
    let targets = blocks(net);
    if targets.is_empty() {
        return Err(Error::Config(
            "the network has no convolution or locally-connected layer whose output keeps positions; \
             receptive fields are defined for cnn and lcn runs"
                .into(),
        ));
    }
    let shapes = net.shapes(x.shape())?;
    let mut logits = Tensor::empty();
    net.forward(x, &mut logits, Mode::Eval);
    let n = x.rows();
    let mut fields = Vec::new();
    let mut dx = Tensor::empty();
    for &(conv, layer) in &targets {
        let Some((ra, ca)) = theory[layer] else { continue };
        let out_shape = &shapes[layer + 1];
        let (oh, ow, oc) = spatial(&out_shape[1..])?;
        let unit = (oh / 2, ow / 2);
        // d(sum of the unit's channels)/d(input), for every example at once
        let mut d = vec![0.0f32; out_shape.iter().product()];
        for e in 0..n {
            let base = ((e * oh + unit.0) * ow + unit.1) * oc;
            d[base..base + oc].fill(1.0);
        }
        net.backward_from(x, layer, &Tensor::from_slice(out_shape, &d), &mut dx)?;
        let g = dx.to_vec();
        let c = g.len() / (n * h * w);
        let mut map = vec![0.0f64; h * w];
        for e in 0..n {
            for (p, m) in map.iter_mut().enumerate() {
                let at = (e * h * w + p) * c;
                *m += g[at..at + c].iter().map(|v| v.abs() as f64).sum::<f64>();
            }
        }
        let window = (ra.window(unit.0, h), ca.window(unit.1, w));
        fields.push(summarise(layer, net.layers()[conv].describe(), (oh, ow), unit, (ra, ca), window, &map, (h, w)));
    }
    Ok(fields)
}

#[allow(clippy::too_many_arguments)]
fn summarise(
    layer: usize,
    describe: String,
    output: (usize, usize),
    unit: (usize, usize),
    theory: (Axis, Axis),
    window: ((usize, usize), (usize, usize)),
    map: &[f64],
    (h, w): (usize, usize),
) -> LayerField {
    let total: f64 = map.iter().sum();
    let ((r0, r1), (c0, c1)) = window;
    let inside: f64 = (r0..r1).flat_map(|r| (c0..c1).map(move |c| r * w + c)).map(|i| map[i]).sum();
    // the centre of the unclipped window
    let cy = theory.0.start as f64 + (unit.0 * theory.0.jump) as f64 + (theory.0.size as f64 - 1.0) / 2.0;
    let cx = theory.1.start as f64 + (unit.1 * theory.1.jump) as f64 + (theory.1.size as f64 - 1.0) / 2.0;
    let mut second = 0.0;
    for r in 0..h {
        for c in 0..w {
            second += map[r * w + c] * ((r as f64 - cy).powi(2) + (c as f64 - cx).powi(2));
        }
    }
    let rms_radius = if total > 0.0 { (second / total).sqrt() } else { 0.0 };
    // smallest centred square (Chebyshev distance ≤ half side) holding 90% of the mass
    let mut effective_size_90 = theory.0.size.max(theory.1.size);
    for side in 1..=h.max(w).max(theory.0.size).max(theory.1.size) {
        let half = (side as f64 - 1.0) / 2.0 + 1e-9;
        let mass: f64 = (0..h)
            .flat_map(|r| (0..w).map(move |c| (r, c)))
            .filter(|&(r, c)| (r as f64 - cy).abs() <= half && (c as f64 - cx).abs() <= half)
            .map(|(r, c)| map[r * w + c])
            .sum();
        if total > 0.0 && mass >= 0.9 * total {
            effective_size_90 = side;
            break;
        }
    }
    let max = map.iter().cloned().fold(0.0, f64::max);
    LayerField {
        layer,
        describe,
        output,
        unit,
        theory,
        window,
        map: map.iter().map(|&m| if max > 0.0 { (m / max) as f32 } else { 0.0 }).collect(),
        mass_inside_theory: if total > 0.0 { inside / total } else { 0.0 },
        effective_size_90,
        rms_radius,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::init::InitRng;
    use crate::core::ops::{Conv, Flatten, Linear, Pool, PoolKind, Relu};
    use crate::core::Cpu;
    use rand::SeedableRng;

    /// All-ones kernels, zero biases, positive inputs: every path is open, so the gradient of
    /// the central unit is non-zero exactly on its theoretical window, and its values are the
    /// number of paths (for two 3×3 layers: the 5×5 "tent" (1 2 3 2 1)ᵀ(1 2 3 2 1)).
    fn ones_net(layers: Vec<Box<dyn Layer<Cpu>>>) -> Sequential<Cpu> {
        let mut net = Sequential::new(layers);
        net.visit_params(&mut |p| {
            let v = if p.name == "bias" { 0.0 } else { 1.0 };
            p.value.buf_mut().iter_mut().for_each(|x| *x = v);
        });
        net
    }

    #[test]
    fn stacked_3x3_fields_match_theory_with_all_ones_kernels() {
        let mut rng = InitRng::seed_from_u64(0);
        let mut net = ones_net(vec![
            Box::new(Conv::new_2d(1, 2, 3, 1, 1, &mut rng)),
            Box::new(Relu),
            Box::new(Conv::new_2d(2, 2, 3, 1, 1, &mut rng)),
            Box::new(Relu),
            Box::new(Conv::new_2d(2, 2, 3, 1, 1, &mut rng)),
            Box::new(Relu),
            Box::new(Flatten),
            Box::new(Linear::new(2 * 11 * 11, 2, &mut rng)),
        ]);
        let x = Tensor::<Cpu>::from_slice(&[2, 11, 11, 1], &vec![0.5; 2 * 121]);
        let fields = measure(&mut net, &x, &[11, 11, 1]).unwrap();
        assert_eq!(fields.len(), 3);
        for (f, size) in fields.iter().zip([3, 5, 7]) {
            assert_eq!((f.theory.0.size, f.theory.1.size), (size, size));
            let lo = 5 - size / 2;
            assert_eq!(f.window, ((lo, lo + size), (lo, lo + size)));
            for r in 0..11 {
                for c in 0..11 {
                    let inside = (lo..lo + size).contains(&r) && (lo..lo + size).contains(&c);
                    assert_eq!(f.map[r * 11 + c] > 0.0, inside, "layer {} at ({r},{c})", f.layer);
                }
            }
            assert!((f.mass_inside_theory - 1.0).abs() < 1e-9);
        }
        // the 5x5 tent: value ∝ (3−|dr|)(3−|dc|), maximum 9 at the centre
        let tent = &fields[1].map;
        for (dr, dc) in [(0i32, 0i32), (1, 0), (2, 1), (2, 2)] {
            let want = ((3 - dr.abs()) * (3 - dc.abs())) as f32 / 9.0;
            let got = tent[((5 + dr) * 11 + 5 + dc) as usize];
            assert!((got - want).abs() < 1e-6, "({dr},{dc}): {got} vs {want}");
        }
        // per axis the 7-wide profile is (1 3 6 7 6 3 1)/27 with variance 2: rms radius √(2+2)
        assert!((fields[2].rms_radius - 2.0).abs() < 1e-9, "{}", fields[2].rms_radius);
        assert!((fields[1].rms_radius - (24.0f64 / 9.0).sqrt()).abs() < 1e-9);
    }

    #[test]
    fn pooling_and_stride_grow_the_field_as_theory_says() {
        let mut rng = InitRng::seed_from_u64(1);
        // conv3 p1 -> avg-pool 2 -> conv3 p1: field 3, then 4 (jump 2), then 4 + 2·2 = 8
        let mut net = ones_net(vec![
            Box::new(Conv::new_2d(1, 1, 3, 1, 1, &mut rng)),
            Box::new(Relu),
            Box::new(Pool::new_2d(PoolKind::Avg, 2, 2)),
            Box::new(Conv::new_2d(1, 1, 3, 1, 1, &mut rng)),
            Box::new(Relu),
            Box::new(Flatten),
            Box::new(Linear::new(16, 2, &mut rng)),
        ]);
        let x = Tensor::<Cpu>::from_slice(&[1, 8, 8, 1], &vec![1.0; 64]);
        let fields = measure(&mut net, &x, &[8, 8, 1]).unwrap();
        let last = fields.last().unwrap();
        assert_eq!(last.theory.0, Axis { size: 8, jump: 2, start: -3 });
        // unit (2, 2) of the 4x4 map reads rows -3 + 4 .. +8 = [1, 9) clipped to [1, 8)
        assert_eq!(last.window, ((1, 8), (1, 8)));
        for r in 0..8 {
            for c in 0..8 {
                assert_eq!(last.map[r * 8 + c] > 0.0, r >= 1 && c >= 1, "({r},{c})");
            }
        }
    }

    #[test]
    fn one_dimensional_cnn_fields() {
        // the MNIST-1D CNN's geometry: k5 s2 p1, then k3 s2 p1 twice: 5, 9, 17 positions wide
        let mut rng = InitRng::seed_from_u64(2);
        let layers = crate::models::cnn::build_1d::<Cpu>(40, 1, 10, false, &mut rng).unwrap();
        let net = Sequential::new(layers);
        let t = theory(&net);
        let sizes: Vec<usize> = block_outputs(&net).iter().map(|&i| t[i].unwrap().1.size).collect();
        assert_eq!(sizes, vec![5, 9, 17]);
    }
}
