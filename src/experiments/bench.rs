//! Throughput benchmarks, the same workloads as `shared/reference/pytorch_bench.py` (f32,
//! Adam 1e-3, cross-entropy, random data, seed 0), each printing
//! `RESULT <workload> <value> <unit>` so the two can be run side by side and quoted as a ratio.

use crate::core::init::InitRng;
use crate::core::layer::Sequential;
use crate::core::ops::conv1d::conv1d;
use crate::core::ops::cross_entropy::CrossEntropy;
use crate::core::ops::{Flatten, Linear, Relu};
use crate::core::optim::{Optimizer, OptimizerConfig};
use crate::core::{Cpu, Layer, Mode, Tensor};
use crate::error::{Error, Result};
use crate::models::mlp;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;

/// A benchmark's outcome.
#[derive(Clone, Debug, PartialEq)]
pub struct BenchResult {
    pub workload: String,
    pub value: f64,
    pub unit: &'static str,
}

impl std::fmt::Display for BenchResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "RESULT {} {:.2} {}",
            self.workload, self.value, self.unit
        )
    }
}

/// The workloads `cnnlab bench` knows.
pub const WORKLOADS: [&str; 2] = ["w3a", "w3b"];

struct Workload {
    net: Sequential<Cpu>,
    input: Vec<usize>,
    batch: usize,
    warmup: usize,
    steps: usize,
}

fn workload(name: &str) -> Result<Workload> {
    let mut rng = InitRng::seed_from_u64(0);
    match name {
        // W3a: MLP 40-100-100-10, ReLU, batch 100
        "w3a" => Ok(Workload {
            net: Sequential::new(mlp::build(40, &[100, 100], false, 10, &mut rng)),
            input: vec![100, 40],
            batch: 100,
            warmup: 30,
            steps: 500,
        }),
        // W3b: conv1d(1->25,k5,p2), conv1d(25->25,k3,p1) x2, ReLU, flatten, linear(1000->10)
        "w3b" => {
            let layers: Vec<Box<dyn Layer<Cpu>>> = vec![
                Box::new(conv1d(1, 25, 5, 1, 2, &mut rng)),
                Box::new(Relu),
                Box::new(conv1d(25, 25, 3, 1, 1, &mut rng)),
                Box::new(Relu),
                Box::new(conv1d(25, 25, 3, 1, 1, &mut rng)),
                Box::new(Relu),
                Box::new(Flatten),
                Box::new(Linear::new(1000, 10, &mut rng)),
            ];
            Ok(Workload {
                net: Sequential::new(layers),
                input: vec![100, 40, 1],
                batch: 100,
                warmup: 30,
                steps: 300,
            })
        }
        other => Err(Error::Config(format!(
            "unknown benchmark '{other}' (known: {})",
            WORKLOADS.join(", ")
        ))),
    }
}

/// Runs training workload `name` and measures steps per second.
pub fn run(name: &str) -> Result<BenchResult> {
    let Workload {
        mut net,
        input,
        batch,
        warmup,
        steps,
    } = workload(name)?;
    crate::core::cpu::flush_denormals();
    let mut rng = InitRng::seed_from_u64(0);
    let xs: Vec<f32> = (0..input.iter().product::<usize>())
        .map(|_| rng.sample(StandardNormal))
        .collect();
    let ys: Vec<f32> = (0..batch).map(|_| rng.random_range(0..10) as f32).collect();
    let x = Tensor::<Cpu>::from_slice(&input, &xs);
    let mut loss = CrossEntropy::<Cpu>::default();
    loss.labels = Tensor::from_slice(&[batch], &ys);
    let mut logits = Tensor::empty();
    let mut opt = Optimizer::<Cpu>::new(OptimizerConfig::adam());
    let mut step = |net: &mut Sequential<Cpu>| -> f32 {
        net.forward(&x, &mut logits, Mode::Train);
        let (l, _) = loss.evaluate(&logits, true);
        net.backward(&x, &logits, &loss.dlogits, None);
        opt.step(net, 1e-3);
        l
    };
    for _ in 0..warmup {
        step(&mut net);
    }
    let t = std::time::Instant::now();
    let mut last = 0.0;
    for _ in 0..steps {
        last = step(&mut net);
    }
    let secs = t.elapsed().as_secs_f64();
    if !last.is_finite() {
        return Err(Error::Diverged {
            step: steps,
            loss: last,
        });
    }
    Ok(BenchResult {
        workload: name.into(),
        value: steps as f64 / secs,
        unit: "steps/s",
    })
}
