//! Image experiments on small synthetic data: every image model trains under every
//! condition, prefetching changes nothing, and an MLP cannot tell a fixed permutation of
//! pixel positions apart (the invariance the permutation experiment relies on).

use cnnlab::core::cpu::with_intra_op_threads;
use cnnlab::core::{Cpu, Layer, Tensor};
use cnnlab::data::{Condition, Dataset};
use cnnlab::models::{ImageArch, ModelKind};
use cnnlab::train::{train_cpu, train_cpu_with, Augment, PositionPermutation, TrainConfig, Trainer};
use rand::{Rng, SeedableRng};

/// 8×8 RGB images in 3 classes: a bright square in a class-specific corner, plus noise.
fn squares(n: usize, seed: u64) -> Vec<(Vec<f32>, u32)> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|i| {
            let label = (i % 3) as u32;
            let (oy, ox) = [(0, 0), (0, 4), (4, 2)][label as usize];
            let mut img: Vec<f32> = (0..8 * 8 * 3).map(|_| rng.random_range(-0.5..0.5)).collect();
            for y in oy..oy + 4 {
                for x in ox..ox + 4 {
                    for c in 0..3 {
                        img[(y * 8 + x) * 3 + c] += 1.5;
                    }
                }
            }
            (img, label)
        })
        .collect()
}

fn dataset() -> Dataset {
    let (train, test) = (squares(240, 1), squares(60, 2));
    Dataset {
        name: "squares".into(),
        example_shape: vec![8, 8, 3],
        classes: 3,
        vocab: None,
        x: train.iter().flat_map(|e| e.0.clone()).collect(),
        y: train.iter().map(|e| e.1).collect(),
        x_test: test.iter().flat_map(|e| e.0.clone()).collect(),
        y_test: test.iter().map(|e| e.1).collect(),
    }
}

fn arch() -> ImageArch {
    ImageArch {
        cnn_widths: vec![4, 8],
        pool_after: vec![0],
        batch_norm: true,
        global_pool: false,
        sequence_mlp_hidden: vec![100, 100],
        mlp_hidden: vec![32],
        mixer_patch: 2,
        mixer: cnnlab::models::dnn::MixerSize { dim: 8, depth: 1, token_hidden: 16, channel_hidden: 16 },
    }
}

fn config(steps: usize, seed: u64) -> TrainConfig {
    TrainConfig { steps, batch_size: 16, lr: 3e-3, eval_every: steps, seed, arch: arch(), ..TrainConfig::mnist1d() }
}

#[test]
fn every_image_model_learns_under_every_condition() {
    let d = dataset();
    for kind in [ModelKind::Cnn, ModelKind::Dnn, ModelKind::Mlp, ModelKind::Lcn, ModelKind::Logistic] {
        for cond in [Condition::Original, Condition::Permuted, Condition::PerExample] {
            let v = cond.apply(&d, 3);
            let r = with_intra_op_threads(1, || train_cpu(kind, &v, &config(60, 0), &mut |_| {})).unwrap();
            assert!(r.curve[0].train_loss.is_finite(), "{kind:?}/{cond:?}");
            if cond == Condition::Original {
                assert!(r.final_test_accuracy > 0.6, "{kind:?} on squares: {}", r.final_test_accuracy);
            }
        }
    }
}

#[test]
fn prefetching_and_augmentation_are_deterministic() {
    let d = dataset();
    let mut cfg = config(40, 5);
    cfg.augment = Some(Augment { crop_padding: 1, horizontal_flip: true });
    let plain = train_cpu_with(ModelKind::Cnn, &d, &cfg, PositionPermutation::PerExample, &mut |_| {}).unwrap();
    cfg.prefetch = true;
    let a = train_cpu_with(ModelKind::Cnn, &d, &cfg, PositionPermutation::PerExample, &mut |_| {}).unwrap();
    let b = train_cpu_with(ModelKind::Cnn, &d, &cfg, PositionPermutation::PerExample, &mut |_| {}).unwrap();
    assert_eq!(a.curve, b.curve);
    assert_eq!(a.curve, plain.curve, "prefetching must not change the batches");
}

/// An MLP trained on permuted images, from first-layer weights permuted the same way, follows
/// the original run: its weights are the original's, permuted (up to float rounding).
#[test]
fn mlp_on_permuted_images_reaches_the_permuted_weights() {
    let d = dataset();
    let permuted = Condition::Permuted.apply(&d, 17);
    let (positions, c) = (64, 3);
    // recover the pixel permutation from the first image: permuted position i = original perm[i]
    let perm: Vec<usize> = (0..positions)
        .map(|i| (0..positions).find(|&j| permuted.x[i * c..(i + 1) * c] == d.x[j * c..(j + 1) * c]).unwrap())
        .collect();
    let cfg = config(100, 4);
    let mut a = Trainer::<Cpu>::for_dataset(ModelKind::Mlp, &d, cfg.clone()).unwrap();
    let mut b = Trainer::<Cpu>::for_dataset(ModelKind::Mlp, &permuted, cfg).unwrap();
    let first = |t: &Trainer<Cpu>| {
        let mut w = None;
        t.model.net.visit_params_ref(&mut |p| {
            if w.is_none() {
                w = Some(p.value.to_vec());
            }
        });
        w.unwrap()
    };
    let inputs = positions * c;
    let permute_columns = |w: &[f32]| -> Vec<f32> {
        let mut out = vec![0.0; w.len()];
        for o in 0..w.len() / inputs {
            for i in 0..positions {
                for ch in 0..c {
                    out[o * inputs + i * c + ch] = w[o * inputs + perm[i] * c + ch];
                }
            }
        }
        out
    };
    let initial = first(&a);
    let wb = permute_columns(&initial);
    b.model.net.visit_params(&mut |p| {
        if p.value.len() == wb.len() {
            p.value = Tensor::from_slice(p.value.shape(), &wb);
        }
    });
    with_intra_op_threads(1, || {
        for step in 0..100 {
            a.step(&d, step).unwrap();
            b.step(&permuted, step).unwrap();
        }
    });
    let (want, got) = (permute_columns(&first(&a)), first(&b));
    // (f32::max passes over a NaN: the weights must be finite for the worst difference to count)
    assert!(want.iter().chain(&got).all(|v| v.is_finite()), "a weight is not finite");
    let worst = want.iter().zip(&got).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
    assert!(worst < 1e-4, "weights differ by {worst}");
    let moved = first(&a).iter().zip(&initial).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
    assert!(moved > 1e-2, "training barely moved the weights ({moved}): the comparison would be vacuous");
}

/// The same seed gives the same numbers on 1, 2 and 3 threads for every image model, with
/// layers large enough that the convolutions split the batch across threads (32×32 images,
/// several blocks of images per layer): weight gradients are reduced in a fixed order.
#[test]
fn image_models_do_not_depend_on_the_thread_count() {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
    let (n, side) = (96, 32);
    let mut x: Vec<f32> = (0..n * side * side * 3).map(|_| rng.random_range(-1.0..1.0)).collect();
    let y: Vec<u32> = (0..n as u32).map(|i| i % 3).collect();
    for (i, img) in x.chunks_exact_mut(side * side * 3).enumerate() {
        img[(i % 3) * 100] += 3.0;
    }
    let data = Dataset {
        name: "noise32".into(),
        example_shape: vec![side, side, 3],
        classes: 3,
        vocab: None,
        x: x[..64 * side * side * 3].to_vec(),
        y: y[..64].to_vec(),
        x_test: x[64 * side * side * 3..].to_vec(),
        y_test: y[64..].to_vec(),
    };
    let mut a = arch();
    a.cnn_widths = vec![16, 32];
    a.mixer_patch = 4;
    for kind in [ModelKind::Cnn, ModelKind::Lcn, ModelKind::Dnn, ModelKind::Mlp] {
        let cfg = TrainConfig { batch_size: 64, eval_every: 3, arch: a.clone(), ..config(3, 1) };
        let run = |threads| {
            with_intra_op_threads(threads, || {
                let mut t = Trainer::<Cpu>::for_dataset(kind, &data, cfg.clone()).unwrap();
                let r = t.fit(&data, &mut |_| {}).unwrap();
                (r.curve, cnnlab::train::checkpoint::state(&t.model.net))
            })
        };
        let one = run(1);
        for threads in [2, 3] {
            assert!(one == run(threads), "{kind:?}: {threads} threads differ from one");
        }
    }
}

/// Weights of a trained model, in visit order.
fn weights(t: &Trainer<Cpu>) -> Vec<Vec<f32>> {
    let mut out = Vec::new();
    t.model.net.visit_params_ref(&mut |p| out.push(p.value.to_vec()));
    out
}

/// Batches gathered by the backend from its copy of the training split (a GPU's way) train the
/// same run, bit for bit, as batches made on the host and uploaded (with and without a prefetch
/// thread): the same examples, crops, flips and permutations, under every kind of permutation.
#[test]
fn batches_gathered_by_the_backend_equal_host_batches() {
    let d = dataset();
    let augment = Some(Augment { crop_padding: 2, horizontal_flip: true });
    let perms = [
        PositionPermutation::None,
        PositionPermutation::Fixed((0..64).rev().collect()),
        PositionPermutation::PerExample,
    ];
    for kind in [ModelKind::Cnn, ModelKind::Mlp] {
        for perm in &perms {
            let run = |resident: bool, prefetch: bool| {
                let cfg = TrainConfig { augment, prefetch, eval_every: 7, ..config(20, 3) };
                let mut t = Trainer::<Cpu>::for_dataset(kind, &d, cfg).unwrap();
                t.sampler.permutation = perm.clone();
                t.keep_data_resident(resident);
                let r = with_intra_op_threads(1, || t.fit(&d, &mut |_| {})).unwrap();
                (r.curve, weights(&t), t.sampler.state())
            };
            let host = run(false, false);
            assert_eq!(run(true, false), host, "{kind:?}, {perm:?}: gathered batches");
            assert_eq!(run(false, true), host, "{kind:?}, {perm:?}: prefetched batches");
        }
    }
}

/// Noise images of `side`×`side`×3 in 3 classes (a bright pixel per class): shapes, not
/// learning, are what the evaluation tests need.
fn noise_images(n_train: usize, n_test: usize, side: usize) -> Dataset {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
    let n = n_train + n_test;
    let len = side * side * 3;
    let mut x: Vec<f32> = (0..n * len).map(|_| rng.random_range(-1.0..1.0)).collect();
    let y: Vec<u32> = (0..n as u32).map(|i| i % 3).collect();
    for (i, img) in x.chunks_exact_mut(len).enumerate() {
        img[(i % 3) * 7] += 3.0;
    }
    Dataset {
        name: format!("noise{side}"),
        example_shape: vec![side, side, 3],
        classes: 3,
        vocab: None,
        x: x[..n_train * len].to_vec(),
        y: y[..n_train].to_vec(),
        x_test: x[n_train * len..].to_vec(),
        y_test: y[n_train..].to_vec(),
    }
}

/// Evaluation's chunk: 1000 examples unless the model's layer outputs for 1000 would exceed
/// the budget, never fewer than a training batch, 1000 with no budget (the GPU's).
#[test]
fn evaluation_chunks_follow_the_memory_budget() {
    use cnnlab::train::{eval_rows, EVAL_ROWS};
    let mib = 1024.0 * 1024.0;
    assert_eq!(eval_rows(3000.0, 100, 256.0 * mib), EVAL_ROWS, "12 KB an example fits 1000 times");
    assert_eq!(eval_rows(1e6, 128, 256.0 * mib), 128, "4 MB an example: a training batch");
    assert_eq!(eval_rows(2e5, 128, 256.0 * mib), 335, "0.8 MB an example: 256 MiB of them");
    assert_eq!(eval_rows(1e9, 128, f64::INFINITY), EVAL_ROWS);
    assert_eq!(eval_rows(1e12, 2048, 256.0 * mib), EVAL_ROWS, "a batch over 1000 still evaluates 1000");
    assert_eq!(eval_rows(0.0, 0, 0.0), 1);
}

/// The chunk each model gets on the CPU: the MNIST-1D table's models evaluate 1000 at a time
/// (its published test sets are one chunk, so its numbers do not move), CIFAR-10's quick CNN
/// and Mixer in fewer.
#[test]
fn mnist1d_evaluates_in_one_chunk_and_cifar_shapes_in_smaller_ones() {
    let mnist1d = cnnlab::data::mnist1d_default().unwrap();
    for kind in ModelKind::CLASSIC {
        let t = Trainer::<Cpu>::for_dataset(kind, &mnist1d, TrainConfig::mnist1d()).unwrap();
        assert_eq!(t.eval_rows, 1000, "{kind:?} on MNIST-1D");
    }
    let cifar = noise_images(8, 8, 32);
    let quick = TrainConfig { batch_size: 128, ..TrainConfig::mnist1d() };
    for kind in [ModelKind::Cnn, ModelKind::Dnn, ModelKind::Lcn] {
        let t = Trainer::<Cpu>::for_dataset(kind, &cifar, quick.clone()).unwrap();
        eprintln!("{kind:?} on 32x32x3: {} at a time", t.eval_rows);
        assert!((128..1000).contains(&t.eval_rows), "{kind:?} on 32x32x3: {}", t.eval_rows);
    }
}

/// Evaluating in chunks of any size gives the same accuracy, and the same loss up to the
/// rounding of its sum: each example's logits do not depend on the others in its chunk.
#[test]
fn evaluation_does_not_depend_on_the_chunk_size() {
    let data = noise_images(64, 45, 16);
    let mut a = arch();
    a.mixer_patch = 4;
    for kind in [ModelKind::Cnn, ModelKind::Lcn, ModelKind::Dnn, ModelKind::Mlp] {
        let cfg = TrainConfig { batch_size: 16, arch: a.clone(), ..config(8, 2) };
        with_intra_op_threads(2, || {
            let mut t = Trainer::<Cpu>::for_dataset(kind, &data, cfg.clone()).unwrap();
            t.fit(&data, &mut |_| {}).unwrap();
            let mut results = Vec::new();
            for rows in [1000, 45, 16, 7, 1] {
                t.eval_rows = rows;
                results.push((rows, t.evaluate(&data).unwrap()));
            }
            let (_, (loss, accuracy)) = results[0];
            for &(rows, (l, acc)) in &results[1..] {
                assert_eq!(acc, accuracy, "{kind:?}: accuracy with {rows} at a time");
                assert!(
                    (l - loss).abs() <= 1e-6 * loss.abs(),
                    "{kind:?}: loss {l} with {rows} at a time, {loss} at once"
                );
            }
        });
    }
}
