//! all-MiniLM-L6-v2 against sentence embeddings from Hugging Face `transformers`
//! (mean pooling, recorded in fixtures/hf-minilm.json). Opt-in:
//! `scripts/fetch-models.sh minilm && cargo test --release --test minilm -- --ignored`.

use duetdb::embed::{from_spec, Kind};

#[test]
#[ignore = "needs the 91 MB all-MiniLM-L6-v2 model: scripts/fetch-models.sh minilm"]
fn minilm_matches_transformers() {
    #[derive(serde::Deserialize)]
    struct Fx {
        texts: Vec<String>,
        embeddings: Vec<Vec<f32>>,
    }
    let fx: Fx = serde_json::from_str(&std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/hf-minilm.json")).unwrap()).unwrap();
    let e = from_spec("minilm").unwrap();
    let texts: Vec<&str> = fx.texts.iter().map(String::as_str).collect();
    let ours = e.embed(&texts, Kind::Query).unwrap();
    for (a, b) in ours.iter().zip(&fx.embeddings) {
        let diff = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
        assert!(diff < 1e-5, "differs by {diff}");
    }
}

#[test]
#[ignore = "needs the 91 MB all-MiniLM-L6-v2 model: scripts/fetch-models.sh minilm"]
fn minilm_vectors_do_not_depend_on_batching_order_or_padding() {
    // Texts of very different lengths (one past the 256-token cut), so that batches are
    // padded, split by the temporary-size budget, and sorted.
    let docs = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/debian-sample.jsonl")).unwrap();
    let mut texts: Vec<String> =
        docs.lines().take(40).map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["text"].as_str().unwrap().to_string()).collect();
    texts.push("word ".repeat(400));
    texts.push("a".into());
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let e = from_spec("minilm").unwrap();
    let together = e.embed(&refs, Kind::Passage).unwrap();
    let mut reversed = e.embed(&refs.iter().rev().copied().collect::<Vec<_>>(), Kind::Passage).unwrap();
    reversed.reverse();
    for (i, t) in refs.iter().enumerate() {
        let alone = e.embed(&[t], Kind::Passage).unwrap().remove(0);
        for other in [&together[i], &reversed[i]] {
            let diff = alone.iter().zip(other).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
            assert!(diff < 1e-5, "text {i}: differs by {diff}");
        }
    }
}
