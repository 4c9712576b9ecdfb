//! Micro-benchmark of the dot-product kernels that dominate graph build and search.

use criterion::{criterion_group, criterion_main, Criterion};
use duetdb::index::dot;
use std::hint::black_box;

fn bench(c: &mut Criterion) {
    for dim in [384usize, 576, 896] {
        let a: Vec<f32> = (0..dim).map(|i| (i as f32).sin()).collect();
        let b: Vec<f32> = (0..dim).map(|i| (i as f32).cos()).collect();
        c.bench_function(&format!("dot/{dim}"), |bch| bch.iter(|| dot(black_box(&a), black_box(&b))));
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
