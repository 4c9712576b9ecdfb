//! Embeddings of one field of a JSON Lines file, written as raw little-endian f32 rows
//! (n x d, in line order) for offline studies of the vectors (issue 30: what a trained
//! map over a frozen embedder's vectors would gain, before building it into the crate).
//!
//! Usage: `features SPEC FILE.jsonl FIELD query|passage OUT.f32`

use duetdb::embed::{from_spec, Kind};
use std::io::Write;

fn main() -> duetdb::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [spec, file, field, kind, out] = args.as_slice() else {
        eprintln!("usage: features SPEC FILE.jsonl FIELD query|passage OUT.f32");
        std::process::exit(2);
    };
    let kind = if kind == "query" { Kind::Query } else { Kind::Passage };
    let texts: Vec<String> = std::fs::read_to_string(file)
        .map_err(|e| duetdb::Error::io(std::path::Path::new(file), e))?
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).ok().and_then(|v| v[field.as_str()].as_str().map(String::from)).unwrap_or_default())
        .collect();
    let e = from_spec(spec)?;
    let mut w = std::io::BufWriter::new(std::fs::File::create(out).map_err(|e| duetdb::Error::io(std::path::Path::new(out), e))?);
    let t0 = std::time::Instant::now();
    for (i, chunk) in texts.chunks(64).enumerate() {
        let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
        for v in e.embed(&refs, kind)? {
            for x in v {
                w.write_all(&x.to_le_bytes()).map_err(|e| duetdb::Error::io(std::path::Path::new(out), e))?;
            }
        }
        let done = (i + 1) * 64;
        eprintln!("{out}: {} / {} texts, {:.1} texts/s", done.min(texts.len()), texts.len(), done.min(texts.len()) as f64 / t0.elapsed().as_secs_f64());
    }
    w.flush().map_err(|e| duetdb::Error::io(std::path::Path::new(out), e))?;
    Ok(())
}
