//! The first thing to run: open a database, ingest the Debian sample in `fixtures/`, run
//! a query in each mode, update and delete a document.
//!
//! ```sh
//! ./scripts/fetch-models.sh                       # the default embedder's models, once
//! cargo run --release --example quickstart        # or: ... --example quickstart -- hash (no model)
//! ```
//!
//! The database goes to a temporary directory and is removed at the end.

use duetdb::{Db, Document, Mode};

fn main() -> duetdb::Result<()> {
    // The embedder: `default` (SmolLM2 prompting Gemma3), or any spec given as the first argument.
    let spec = std::env::args().nth(1).unwrap_or_else(|| duetdb::embed::DEFAULT_SPEC.to_string());
    let dir = tempfile_dir()?;
    let db = Db::options().embedder_spec(spec.as_str()).open(dir.join("quickstart.duet"))?;

    // JSON Lines documents: {"id", "text", "metadata"}; each ingest batch is durable when it returns.
    let sample = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/debian-sample.jsonl");
    let text = std::fs::read_to_string(&sample).map_err(|e| duetdb::Error::io(&sample, e))?;
    // The first 100 of the 505 sample documents: the default embedder takes a few tenths
    // of a second a document on two CPU cores, so this takes about half a minute.
    let docs: Vec<Document> = text.lines().take(100).filter_map(|l| serde_json::from_str(l).ok()).collect();
    let started = std::time::Instant::now();
    let report = db.ingest(docs)?;
    println!("ingested {} documents in {:.1} s with `{spec}`", report.written, started.elapsed().as_secs_f64());

    for mode in [Mode::Vector, Mode::Text, Mode::Hybrid] {
        println!("\n{mode:?}: remove unneeded include directives from C source");
        for h in db.query("remove unneeded include directives from C source").mode(mode).limit(3).run()? {
            println!("  {:.3}  {:<16} {}", h.score, h.id, h.text.chars().take(70).collect::<String>().replace('\n', " "));
        }
    }

    // Ingesting an existing id replaces the document; delete removes it.
    db.ingest([Document::new("6tunnel", "6tunnel forwards TCP connections between IPv4 and IPv6")])?;
    println!("\n6tunnel is now: {}", db.get("6tunnel")?.map(|d| d.text).unwrap_or_default());
    db.delete(&["6tunnel"])?;
    println!("after delete: {} documents", db.len());
    db.close()?;
    std::fs::remove_dir_all(&dir).map_err(|e| duetdb::Error::io(&dir, e))
}

/// A fresh directory under the system's temporary directory.
fn tempfile_dir() -> duetdb::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("duetdb-quickstart-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| duetdb::Error::io(&dir, e))?;
    Ok(dir)
}
