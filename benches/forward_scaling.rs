//! How a SmolLM2 forward's time grows with the number of positions of one text, and a
//! single matrix product at a few sizes: the measurement behind the few-rows kernel's
//! range (`duetdb::embed::decoder::skinny::ROWS`).
//!
//! Usage: `forward_scaling` (needs `scripts/fetch-models.sh`); prints p50 milliseconds.

use candle_core::{DType, Device, Tensor};
use duetdb::embed::decoder::{Decoder, Kernels};
use std::time::Instant;

fn p50(n: usize, mut f: impl FnMut()) -> f64 {
    let mut ms: Vec<f64> = (0..n)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    ms.sort_by(f64::total_cmp);
    ms[n / 2]
}

fn main() -> duetdb::Result<()> {
    let dev = Device::Cpu;
    let dec = Decoder::load(&duetdb::embed::model_path("SmolLM2-135M-Instruct.Q4_1.gguf")?, &dev, DType::F32)?;
    for t in [1usize, 2, 4, 8, 12, 16, 24, 32, 64] {
        let ids = Tensor::from_vec((0..t as u32).map(|i| 100 + i).collect::<Vec<_>>(), (1, t), &dev)?;
        let x = dec.embed_ids(&ids)?;
        dec.forward(&x, &[0], None, Kernels::Fast)?;
        println!("forward, {t:3} positions: p50 {:.1} ms", p50(30, || drop(dec.forward(&x, &[0], None, Kernels::Fast).unwrap())));
    }
    let w = Tensor::randn(0f32, 1., (1536, 576), &dev)?;
    for t in [1usize, 12, 64] {
        let x = Tensor::randn(0f32, 1., (t, 576), &dev)?;
        println!("gemm ({t}, 576) x (576, 1536): p50 {:.3} ms", p50(500, || drop(x.matmul(&w.t().unwrap()).unwrap())));
    }
    Ok(())
}
