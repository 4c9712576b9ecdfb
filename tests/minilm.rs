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
