//! The bfloat16 path of the default embedder against its f32 path on real weights and
//! real texts (its own test binary: the precision is a process-wide setting).

mod common;

use duetdb::embed::{from_spec, set_precision, Kind, Precision};

#[test]
fn bf16_vectors_stay_within_a_thousandth_of_f32() {
    let _ = need_model!("gemma-3-270m-q4_k_m.gguf");
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
