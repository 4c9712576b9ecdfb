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
}
