//! What a text-conditioned soft prompt carries: dev MRR@10 (exact search, queries against
//! their descriptions) of a checkpoint embedding each text with its own soft prompt, with
//! the mean soft prompt of its kind (a constant prompt, what an instruction-only
//! checkpoint has), and with another text's prompt (a fixed shuffle). If the text's own
//! prompt is no better than the mean, P's reading of the text adds nothing that M needs.
//!
//! Usage: `prompt_control CHECKPOINT PAIRS.jsonl QUERY_FIELD DOC_FIELD [N] [MAX_TOKENS]`
//! (N pairs from the top, default 300; texts cut to MAX_TOKENS, default 64, as in training;
//! `duetdb eval` and the trainer's evaluations cut them at the checkpoint's `max_text_tokens`).
//! `ONLY_OWN=1` measures the texts' own prompts only; `CHECK_PADDING=1` compares 16 texts'
//! prompts alone and in a padded batch.

use candle_core::Tensor;
use duetdb::embed::decoder::Kernels;
use duetdb::embed::prompt::PromptEmbedder;
use duetdb::Kind;

fn main() -> duetdb::Result<()> {
    let a: Vec<String> = std::env::args().collect();
    let e = PromptEmbedder::load(std::path::Path::new(&a[1]))?;
    let n: usize = a.get(5).map_or(300, |s| s.parse().unwrap());
    let max_tokens: usize = a.get(6).map_or(64, |s| s.parse().unwrap());
    let pairs: Vec<(String, String)> = std::fs::read_to_string(&a[2])
        .unwrap()
        .lines()
        .take(n)
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (v[&a[3]].as_str().unwrap().to_string(), v[&a[4]].as_str().unwrap().to_string())
        })
        .collect();
    if std::env::var("CHECK_PADDING").is_ok() {
        // Each text's prompt alone against the same text in a padded batch of 16.
        let texts: Vec<&str> = pairs.iter().take(16).map(|p| p.1.as_str()).collect();
        let batch = e.text_soft_prompts(&texts, Kind::Passage, max_tokens, Kernels::Fast)?;
        for (i, text) in texts.iter().enumerate() {
            let alone = e.text_soft_prompts(&[text], Kind::Passage, max_tokens, Kernels::Fast)?;
            let diff = duetdb::embed::decoder::max_abs_diff(&alone.squeeze(0)?, &batch.get(i)?)?;
            println!("{}", serde_json::json!({"text": i, "tokens": e.tokenize(text, max_tokens)?.len(), "max_abs_diff": diff}));
        }
        return Ok(());
    }
    let t = std::time::Instant::now();
    // Per kind: each text's ids and its own soft prompt, in batches of 16.
    let prepare = |texts: Vec<&str>, kind: Kind| -> duetdb::Result<(Vec<Vec<u32>>, Tensor)> {
        let ids = texts.iter().map(|x| e.tokenize(x, max_tokens)).collect::<duetdb::Result<Vec<_>>>()?;
        let mut soft = Vec::new();
        for chunk in texts.chunks(16) {
            soft.push(e.text_soft_prompts(chunk, kind, max_tokens, Kernels::Fast)?);
        }
        Ok((ids, Tensor::cat(&soft, 0)?))
    };
    let q = prepare(pairs.iter().map(|p| p.0.as_str()).collect(), Kind::Query)?;
    let d = prepare(pairs.iter().map(|p| p.1.as_str()).collect(), Kind::Passage)?;
    eprintln!("soft prompts of {} pairs in {:.0} s", pairs.len(), t.elapsed().as_secs_f64());
    let embed = |(ids, soft): &(Vec<Vec<u32>>, Tensor), how: &str| -> duetdb::Result<Vec<Vec<f32>>> {
        let n = ids.len();
        let soft = match how {
            "own" => soft.clone(),
            "mean" => soft.mean_keepdim(0)?.repeat((n, 1, 1))?,
            // A fixed derangement: text i gets text (i + n/2) mod n's prompt.
            _ => Tensor::cat(&[soft.narrow(0, n / 2, n - n / 2)?, soft.narrow(0, 0, n / 2)?], 0)?,
        };
        let mut out = Vec::with_capacity(n);
        for start in (0..n).step_by(16) {
            let len = 16.min(n - start);
            out.extend(e.embed_batch(&ids[start..start + len], Some(&soft.narrow(0, start, len)?), Kernels::Fast)?.to_vec2::<f32>()?);
        }
        Ok(out)
    };
    // ONLY_OWN: just the texts' own prompts (an instruction-only checkpoint's three are one).
    let ways: &[&str] = if std::env::var("ONLY_OWN").is_ok() { &["own"] } else { &["own", "mean", "shuffled"] };
    for &how in ways {
        let (qv, dv) = (embed(&q, how)?, embed(&d, how)?);
        // `mrr10` counts a document tied with the relevant one (within 1e-6: identical
        // texts after the cut) as below it; `mrr10_ties_random` is the expectation when
        // ties are broken at random, as a graph search does.
        let (mut mrr, mut mrr_random, mut tied) = (0.0, 0.0, 0);
        for (i, qi) in qv.iter().enumerate() {
            let s: Vec<f32> = dv.iter().map(|x| x.iter().zip(qi).map(|(a, b)| a * b).sum()).collect();
            let above = s.iter().filter(|&&x| x > s[i] + 1e-6).count();
            let ties = s.iter().filter(|&&x| (x - s[i]).abs() <= 1e-6).count();
            tied += usize::from(ties > 1);
            if above < 10 {
                mrr += 1.0 / (above + 1) as f64;
            }
            mrr_random += (above..above + ties).filter(|&r| r < 10).map(|r| 1.0 / (r + 1) as f64).sum::<f64>() / ties as f64;
        }
        let n = qv.len() as f64;
        println!(
            "{}",
            serde_json::json!({"checkpoint": a[1], "prompts": how, "pairs": qv.len(), "max_tokens": max_tokens, "mrr10": mrr / n, "mrr10_ties_random": mrr_random / n, "queries_with_ties": tied})
        );
    }
    Ok(())
}
