//! Gemma3-270M, the default embedder's Embedding LLM (fetched by `scripts/fetch-models.sh`
//! with no argument, as for the test command).

mod common;

use candle_core::{DType, Device, Tensor, D};
use duetdb::embed::decoder::{max_abs_diff, Activation, Decoder, Kernels};
use duetdb::embed::gguf::Gguf;
use duetdb::embed::tokenizer::TextTokenizer;
use std::path::PathBuf;

/// Gemma3 and its tokenizer, or `None` after saying they are missing.
fn gemma() -> Option<(PathBuf, TextTokenizer)> {
    let p = common::model("gemma-3-270m-q4_k_m.gguf", "gemma3")?;
    let t = common::model("gemma3-tokenizer.json", "gemma3")?;
    let g = Gguf::open(&p).unwrap();
    let bos = g.meta_u32("tokenizer.ggml.bos_token_id").ok();
    let tok = TextTokenizer::from_file(&t, bos, None).unwrap();
    Some((p, tok))
}

#[test]
fn tokenizer_json_agrees_with_the_gguf_vocabulary() {
    let Some((p, tok)) = gemma() else { return };
    let g = Gguf::open(&p).unwrap();
    let vocab: Vec<String> = g.meta("tokenizer.ggml.tokens").unwrap().to_vec().unwrap().iter().map(|v| v.to_string().unwrap().clone()).collect();
    let by_id: std::collections::HashMap<u32, String> = tok.vocab().into_iter().map(|(s, i)| (i, s)).collect();
    for s in ["The capital of France is", "fn main() { println!(\"{}\", 42); }", "日本語 émigré 🚀"] {
        let ids = tok.encode(s).unwrap();
        assert_eq!(ids[0], 2, "BOS first");
        for id in ids {
            assert_eq!(by_id[&id], vocab[id as usize], "token {id} differs between tokenizer.json and the GGUF");
        }
    }
}

#[test]
fn matches_candle_stock_gemma3_and_predicts_paris() {
    let Some((p, tok)) = gemma() else { return };
    let mut dec = Decoder::load(&p, &Device::Cpu, DType::F32).unwrap();
    // The 270M base model continues the bare "The capital of France is" with " the"
    // (" Paris" ranks third); one example sentence makes the answer unambiguous.
    let ids = tok.encode("The capital of Germany is Berlin. The capital of France is").unwrap();
    let input = Tensor::new(ids.as_slice(), &Device::Cpu).unwrap().unsqueeze(0).unwrap();
    let emb = dec.embed_ids(&input).unwrap();
    let logits =
        |dec: &Decoder| dec.logits(&Decoder::last(&dec.forward(&emb, &[0], None, Kernels::Fast).unwrap()).unwrap(), Kernels::Fast).unwrap().squeeze(0).unwrap();

    // With Gemma3's own activation (GELU, tanh) the model completes the sentence, and
    // the runners-up are French cities; with SiLU they are " the", " in", " ".
    let ours = logits(&dec);
    let best = ours.argmax(D::Minus1).unwrap().to_scalar::<u32>().unwrap();
    assert_eq!(tok.decode(&[best]).unwrap(), " Paris");
    let (a, b) = (dec.forward(&emb, &[0], None, Kernels::Fast).unwrap(), dec.forward(&emb, &[0], None, Kernels::Differentiable).unwrap());
    assert!(max_abs_diff(&a, &b).unwrap() < 1e-2 * a.abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap());
    // That short text took the packed fast path for every projection of the 18 blocks
    // (Q5_0, Q8_0, Q4_K in blocks of 32; Q6_K in blocks of 16).
    if duetdb::embed::decoder::skinny::available() && std::env::var("DUETDB_PACKED").as_deref() != Ok("0") {
        assert_eq!(dec.packed_projections(), 7 * 18);
    }

    // candle-transformers' quantized gemma3 uses SiLU in the MLP; with the same
    // activation everything else must agree with it.
    std::env::set_var("CANDLE_DEQUANTIZE_ALL", "1");
    let mut f = std::fs::File::open(&p).unwrap();
    let content = candle_core::quantized::gguf_file::Content::read(&mut f).unwrap();
    let mut stock = candle_transformers::models::quantized_gemma3::ModelWeights::from_gguf(content, &mut f, &Device::Cpu).unwrap();
    let reference = stock.forward(&input, 0).unwrap().squeeze(0).unwrap();
    dec.set_activation(Activation::Silu);
    let silu = logits(&dec);
    let scale = reference.abs().unwrap().max(D::Minus1).unwrap().to_scalar::<f32>().unwrap();
    let diff = max_abs_diff(&silu, &reference).unwrap();
    let stock_best = reference.argmax(D::Minus1).unwrap().to_scalar::<u32>().unwrap();
    println!("max |logit difference| with SiLU {diff} (logits up to {scale}); stock predicts {:?}", tok.decode(&[stock_best]).unwrap());
    assert!(diff < 1e-3 * scale.max(1.0), "logits differ by {diff}");
}

#[test]
fn the_tail_forward_equals_the_full_forwards_last_positions() {
    // `forward_tail` runs the last block for the last n positions only (what the
    // default embedder pools over: 5 soft tokens after the text, rows left-padded).
    let Some((p, tok)) = gemma() else { return };
    let dec = Decoder::load(&p, &Device::Cpu, DType::F32).unwrap();
    let texts = ["ripgrep recursively searches directories for a regex pattern and respects gitignore", "vim", "A music player daemon"];
    let ids: Vec<Vec<u32>> = texts.iter().map(|t| tok.encode(t).unwrap()).collect();
    let (padded, pads) = dec.pad_left(&ids, 0).unwrap();
    let emb = dec.embed_ids(&padded).unwrap();
    let t = emb.dim(1).unwrap();
    let full = dec.forward(&emb, &pads, None, Kernels::Fast).unwrap();
    for n in [1, 5, t] {
        let tail = dec.forward_tail(&emb, &pads, Kernels::Fast, None, n).unwrap();
        let d = max_abs_diff(&full.narrow(1, t - n, n).unwrap(), &tail).unwrap();
        assert!(d < 1e-3, "last {n} positions differ by {d}");
    }
    assert!(dec.forward_tail(&emb, &pads, Kernels::Fast, None, t + 1).is_err());
    assert!(dec.forward_tail(&emb, &pads, Kernels::Fast, None, 0).is_err());
}

#[test]
fn a_decoder_cut_after_n_blocks_is_the_same_model_up_to_there() {
    // `first_blocks` is how an embedder runs an earlier exit of M (`m_layers`): the cut
    // shares the weights, so all blocks must give the whole model's states bit for bit,
    // and cutting twice must equal cutting once.
    let Some((p, tok)) = gemma() else { return };
    let dec = Decoder::load(&p, &Device::Cpu, DType::F32).unwrap();
    let layers = dec.config().layers;
    let ids: Vec<Vec<u32>> = ["grep searches files for a pattern", "vim"].iter().map(|t| tok.encode(t).unwrap()).collect();
    let (padded, pads) = dec.pad_left(&ids, 0).unwrap();
    let emb = dec.embed_ids(&padded).unwrap();
    let run = |d: &Decoder| d.forward(&emb, &pads, None, Kernels::Fast).unwrap();
    let full = run(&dec);
    assert_eq!(max_abs_diff(&run(&dec.first_blocks(layers).unwrap()), &full).unwrap(), 0.0, "all blocks kept");
    let half = dec.first_blocks(layers / 2).unwrap();
    assert_eq!(half.config().layers, layers / 2);
    let h = run(&half);
    assert!(max_abs_diff(&h, &full).unwrap() > 1e-2, "a cut model must not give the whole model's states");
    assert_eq!(max_abs_diff(&run(&dec.first_blocks(layers).unwrap().first_blocks(layers / 2).unwrap()), &h).unwrap(), 0.0, "cut twice");
    assert!(dec.first_blocks(0).is_err());
    assert!(dec.first_blocks(layers + 1).is_err());
}

#[test]
fn the_unpadded_tail_forward_reads_what_the_padded_forward_does() {
    // `forward_tail_at` skips the padding of a batch (`unpadded.rs`): each row's read
    // states must be the padded forward's, also past the sliding window (512 positions)
    // and after the blocks a readout reads; and a row's states must not depend on the
    // rows beside it.
    let Some((p, tok)) = gemma() else { return };
    let dec = Decoder::load(&p, &Device::Cpu, DType::F32).unwrap();
    let long = "apt downloads packages from the configured sources and installs them with their dependencies. ".repeat(40);
    let texts = ["vim", "ripgrep recursively searches directories for a regex pattern", long.as_str(), "A music player daemon"];
    let ids: Vec<Vec<u32>> = texts.iter().map(|t| tok.encode(t).unwrap().into_iter().take(600).collect()).collect();
    assert!(ids[2].len() > dec.config().sliding_window.unwrap() + 5, "a row longer than the window");
    let (padded, pads) = dec.pad_left(&ids, 0).unwrap();
    let emb = dec.embed_ids(&padded).unwrap();
    let t = emb.dim(1).unwrap();
    let (n, blocks) = (2, [9, 18, 15]);
    // All t positions: the padded forward (rows shorter than n take it, pads included).
    let padded_reads = dec.forward_tail_at(&emb, &pads, Kernels::Fast, None, t, &blocks).unwrap();
    let reads = dec.forward_tail_at(&emb, &pads, Kernels::Fast, None, n, &blocks).unwrap();
    for ((k, want), got) in blocks.iter().zip(&padded_reads).zip(&reads) {
        let d = max_abs_diff(&want.narrow(1, t - n, n).unwrap(), got).unwrap();
        assert!(d < 1e-3, "after block {k}: unpadded and padded differ by {d}");
    }
    for (i, row) in ids.iter().enumerate() {
        let alone = dec.embed_ids(&Tensor::new(row.as_slice(), &Device::Cpu).unwrap().unsqueeze(0).unwrap()).unwrap();
        let own = dec.forward_tail(&alone, &[0], Kernels::Fast, None, n).unwrap();
        let d = max_abs_diff(&own, &reads[1].narrow(0, i, 1).unwrap()).unwrap();
        assert!(d < 1e-3, "row {i} alone and in the batch differ by {d}");
    }
}
