//! The bfloat16 and int8 paths of the default embedder against its f32 path on real
//! weights and real texts (their own test binary: the precision is a process-wide
//! setting, so the tests take turns).

mod common;

use duetdb::embed::{from_spec, set_precision, Kind, Precision};
use std::sync::Mutex;

/// Held by each test while it changes the process's precision.
static PRECISION: Mutex<()> = Mutex::new(());

#[test]
fn bf16_vectors_stay_within_a_thousandth_of_f32() {
    let _ = need_model!("gemma-3-270m-q4_k_m.gguf");
    let _turn = PRECISION.lock().unwrap_or_else(|p| p.into_inner());
    if !duetdb::embed::decoder::bf16::available() {
        eprintln!("skipped: this CPU has no AVX-512 BF16, so `bf16` computes in f32");
        return;
    }
    let docs = common::sample_docs();
    let texts: Vec<&str> = docs.iter().take(24).map(|d| d.text.as_str()).collect();
    let e = from_spec("default").unwrap();
    set_precision(Precision::F32);
    let f32s = e.embed(&texts, Kind::Passage).unwrap();
    set_precision(Precision::Bf16);
    let bf16s = e.embed(&texts, Kind::Passage).unwrap();
    set_precision(Precision::F32);
    let mut worst = 1f32;
    for (a, b) in f32s.iter().zip(&bf16s) {
        let cos: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
        worst = worst.min(cos);
        assert_ne!(a, b, "the bf16 path was not taken");
    }
    println!("lowest cosine between the f32 and bf16 vectors of {} texts: {worst}", texts.len());
    assert!(worst > 0.999, "bf16 moved a vector to cosine {worst}");

    // In bfloat16, a document's vector alone and in a batch (padded, reordered) agree to
    // bfloat16's rounding: f32 sums of differently shaped attention products can tip a
    // value across a bfloat16 rounding boundary, so the bound is looser than f32's 1e-4.
    set_precision(Precision::Bf16);
    let reversed: Vec<&str> = texts.iter().rev().copied().collect();
    let mut batch = e.embed(&reversed, Kind::Passage).unwrap();
    batch.reverse();
    let mut largest = 0f32;
    for (i, t) in texts.iter().enumerate().step_by(4) {
        let alone = e.embed(&[t], Kind::Passage).unwrap().remove(0);
        let diff = alone.iter().zip(&batch[i]).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        largest = largest.max(diff);
    }
    set_precision(Precision::F32);
    println!("largest difference alone / in a reversed batch in bf16: {largest}");
    assert!(largest < 5e-3, "bf16 vectors depend on the batch by {largest}");
}

#[test]
fn int8_vectors_stay_close_to_f32_alone_and_in_a_batch() {
    let _ = need_model!("gemma-3-270m-q4_k_m.gguf");
    let _turn = PRECISION.lock().unwrap_or_else(|p| p.into_inner());
    if !duetdb::embed::decoder::int8::available() {
        eprintln!("skipped: this CPU has no AVX2, so `int8` computes in f32");
        return;
    }
    let docs = common::sample_docs();
    // 12 texts: each embedding here costs seconds on a 2-core CI machine.
    let texts: Vec<&str> = docs.iter().take(12).map(|d| d.text.as_str()).collect();
    let e = from_spec("default").unwrap();
    set_precision(Precision::F32);
    let f32s = e.embed(&texts, Kind::Passage).unwrap();
    set_precision(Precision::Int8);
    let int8s = e.embed(&texts, Kind::Passage).unwrap();
    let queries = e.embed(&["play music from the command line"], Kind::Query).unwrap();
    set_precision(Precision::F32);
    assert_eq!(queries, e.embed(&["play music from the command line"], Kind::Query).unwrap(), "queries stay in f32");
    let mut worst = 1f32;
    for (a, b) in f32s.iter().zip(&int8s) {
        let cos: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
        worst = worst.min(cos);
        assert_ne!(a, b, "the int8 path was not taken");
    }
    println!("lowest cosine between the f32 and int8 vectors of {} texts: {worst}", texts.len());
    // Rounding every activation to 8 bits a block moves vectors far more than bfloat16
    // (0.99 against 0.9999): docs/benchmarks.md measures what that does to retrieval.
    assert!(worst > 0.98, "int8 moved a vector to cosine {worst}");

    // Each row's activations are rounded on their own, but f32 sums of differently shaped
    // attention products (padding, another batch) tip some values across a rounding
    // boundary, and a step of 1/127 of a block's largest value moves the next layer's
    // inputs enough to tip others: a document alone and in a reversed, padded batch
    // differ by about as much as int8 differs from f32 (docs/benchmarks.md). Bounded by
    // the same cosine.
    set_precision(Precision::Int8);
    let reversed: Vec<&str> = texts.iter().rev().copied().collect();
    let mut batch = e.embed(&reversed, Kind::Passage).unwrap();
    batch.reverse();
    let mut lowest = 1f32;
    for (i, t) in texts.iter().enumerate().step_by(6) {
        let alone = e.embed(&[t], Kind::Passage).unwrap().remove(0);
        lowest = lowest.min(alone.iter().zip(&batch[i]).map(|(a, b)| a * b).sum());
    }
    set_precision(Precision::F32);
    println!("lowest cosine alone / in a reversed batch in int8: {lowest}");
    assert!(lowest > 0.98, "int8 vectors depend on the batch: cosine {lowest}");
}
