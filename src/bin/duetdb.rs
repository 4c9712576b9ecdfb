//! The `duetdb` command-line tool: ingest, query, get, delete and stats on a local
//! database. Every command prints JSON with `--json`; errors are one line on stderr
//! and a non-zero exit status.

use clap::{Parser, Subcommand};
use duetdb::{Db, Document, Error};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "duetdb", version, about = "An embedded vector search engine with a built-in text embedder")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Ingest JSON Lines documents ({"id": str, "text": str, "metadata": {..}}), creating the database if needed.
    Ingest {
        /// Database directory.
        db: PathBuf,
        /// JSON Lines file, or `-` for standard input.
        input: String,
        /// Embedder for a new database (a spec, as for `embed`); an existing database keeps its own.
        #[arg(long)]
        embedder: Option<String>,
        /// Documents per atomic, durable batch.
        #[arg(long, default_value_t = 256)]
        batch: usize,
        /// Print one JSON line per durable batch and a final summary.
        #[arg(long)]
        json: bool,
        /// Report and skip bad lines instead of stopping at the first.
        #[arg(long)]
        skip_bad: bool,
    },
    /// Semantic search.
    Query {
        /// Database directory.
        db: PathBuf,
        /// Query text.
        text: String,
        /// Number of hits.
        #[arg(short, default_value_t = 10)]
        k: usize,
        /// HNSW search beam width (higher: better recall, slower).
        #[arg(long)]
        ef: Option<usize>,
        /// Metadata equality filter KEY=VALUE (VALUE is parsed as JSON if it can be, else taken as a string); repeatable.
        #[arg(long = "filter", value_name = "KEY=VALUE")]
        filters: Vec<String>,
        #[command(flatten)]
        rank: RankArgs,
        /// Print `{"hits": [...]}`.
        #[arg(long)]
        json: bool,
    },
    /// Print one document.
    Get {
        /// Database directory.
        db: PathBuf,
        /// Document id.
        id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Delete documents by id.
    Delete {
        /// Database directory.
        db: PathBuf,
        /// Document ids.
        #[arg(required = true)]
        ids: Vec<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the vectors of texts.
    Embed {
        /// Texts to embed.
        #[arg(required = true)]
        texts: Vec<String>,
        /// Embedder spec: hash, hash:DIM, default, prompt-text, m-mean, m-last, minilm, or a checkpoint directory.
        #[arg(long, default_value = duetdb::embed::DEFAULT_SPEC)]
        embedder: String,
        /// Embed as queries or as passages.
        #[arg(long, default_value = "query", value_parser = ["query", "passage"])]
        kind: String,
        /// Print `{"embeddings", "dimension", "embedder"}`.
        #[arg(long)]
        json: bool,
    },
    /// Retrieval quality of an embedder on a JSON Lines file of (query, document) pairs:
    /// every document is indexed, every query run; its relevant document is the one on its line.
    Eval {
        /// JSON Lines file.
        file: PathBuf,
        /// Field holding the query.
        #[arg(long)]
        query_field: String,
        /// Field holding the document.
        #[arg(long)]
        doc_field: String,
        /// Embedder spec (as for `embed`; default: `default`). With `--db`, only for a new
        /// database: an existing one answers with its active generation.
        #[arg(long)]
        embedder: Option<String>,
        /// Keep the indexed documents in this database (created if missing) instead of a
        /// temporary one, so it can be measured again, e.g. after `reindex`. Documents
        /// already stored unchanged are not embedded again.
        #[arg(long)]
        db: Option<PathBuf>,
        /// Only the first N usable lines.
        #[arg(long)]
        limit: Option<usize>,
        #[command(flatten)]
        rank: RankArgs,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Train an embedder contrastively on (query, document) pairs; prints the checkpoint
    /// directory (usable as `--embedder DIR`) and a summary.
    Train(TrainArgs),
    /// Move a trained embedder to a new Embedding LLM: its Prompting LLM and adapters and
    /// the new backbone frozen, only a fresh alignment trained (`train --mode transfer`).
    /// Prints the checkpoint directory and a summary.
    Transfer(TrainArgs),
    /// Re-embed every document with another embedder into a new generation, while the
    /// database keeps answering queries with the active one; then switch to it. Resumes
    /// an interrupted reindex. With `--status` or `--rollback`, see or undo instead.
    Reindex {
        /// Database directory.
        db: PathBuf,
        /// The new embedder (a spec, as for `embed`, or a checkpoint directory).
        #[arg(long, required_unless_present_any = ["status", "rollback"], conflicts_with_all = ["status", "rollback"])]
        embedder: Option<String>,
        /// Documents per durable batch.
        #[arg(long, default_value_t = 64)]
        batch: usize,
        /// Threads to embed with (default: half the cores, so queries keep the rest).
        #[arg(long)]
        threads: Option<usize>,
        /// Print the active, target and kept generations and exit.
        #[arg(long, conflicts_with = "rollback")]
        status: bool,
        /// Switch back to the newest kept generation (embeds only rows ingested since).
        #[arg(long)]
        rollback: bool,
        /// Print one JSON line per durable batch and a final one.
        #[arg(long)]
        json: bool,
    },
    /// Delete the generations kept for rollback.
    Gc {
        /// Database directory.
        db: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Full consistency check (like SQLite's integrity_check): commit record, documents and id map, vector files and their checksums, tombstones, graph snapshot. Lists every problem; exits non-zero if there is any. Works on a database that refuses to open.
    Check {
        /// Database directory.
        db: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Export every document that can still be read, as the JSON Lines `ingest` takes. Works on a database that refuses to open; says on stderr what it could not read.
    Dump {
        /// Database directory.
        db: PathBuf,
        /// Output file (standard output if absent).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Copy a database consistently (as of one commit) to a new directory, which opens on its own.
    Backup {
        /// Database directory.
        db: PathBuf,
        /// Destination directory (must not exist).
        dest: PathBuf,
    },
    /// Figures about a database.
    Stats {
        /// Database directory.
        db: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// How a query ranks: mode and hybrid fusion.
#[derive(clap::Args, Clone)]
struct RankArgs {
    /// Ranking: `vector` (embeddings), `text` (BM25) or `hybrid` (both, fused).
    #[arg(long, default_value = duetdb::db::DEFAULT_MODE.name(), value_parser = ["vector", "text", "hybrid"])]
    mode: String,
    /// Hybrid fusion: `weighted` (normalised scores) or `rrf` (reciprocal rank).
    #[arg(long, default_value = "weighted", value_parser = ["rrf", "weighted"])]
    fusion: String,
    /// RRF rank constant.
    #[arg(long, default_value_t = duetdb::db::DEFAULT_RRF_K)]
    rrf_k: f32,
    /// RRF weight of the BM25 ranking (the vector ranking weighs 1).
    #[arg(long, default_value_t = 1.0)]
    text_weight: f32,
    /// Weighted fusion: weight of the vector scores (BM25 gets the rest).
    #[arg(long, default_value_t = duetdb::db::DEFAULT_VECTOR_WEIGHT)]
    vector_weight: f32,
    /// Candidates each ranking contributes in hybrid mode.
    #[arg(long, default_value_t = duetdb::db::DEFAULT_CANDIDATES)]
    candidates: usize,
    /// HNSW search beam width (default: max(64, results wanted)); higher finds more of
    /// the true nearest vectors, at more cost per query.
    #[arg(long)]
    ef: Option<usize>,
}

impl RankArgs {
    fn apply<'a>(&self, q: duetdb::Query<'a>) -> duetdb::Query<'a> {
        use duetdb::db::Fusion;
        let fusion = match self.fusion.as_str() {
            "weighted" => Fusion::Weighted { vector_weight: self.vector_weight },
            _ => Fusion::Rrf { k: self.rrf_k, text_weight: self.text_weight },
        };
        let q = q.mode(duetdb::db::Mode::parse(&self.mode).expect("clap checked the mode")).fusion(fusion).candidates(self.candidates);
        match self.ef {
            Some(ef) => q.ef(ef),
            None => q,
        }
    }
}

/// Arguments of `duetdb train`.
#[derive(clap::Args)]
struct TrainArgs {
    /// Training pairs, JSON Lines (not needed with --resume).
    #[arg(long, required_unless_present = "resume")]
    data: Option<PathBuf>,
    /// Field holding the query.
    #[arg(long, default_value = "summary")]
    query_field: String,
    /// Field holding the document.
    #[arg(long, default_value = "description")]
    doc_field: String,
    /// Field naming a pair's group: pairs of one group are never each other's negatives.
    #[arg(long)]
    group_field: Option<String>,
    /// Dev pairs (same fields) for MRR@10 at evaluation points.
    #[arg(long)]
    dev: Option<PathBuf>,
    /// Run directory: the trained checkpoint and the state to resume from.
    #[arg(long)]
    out: PathBuf,
    /// What to train: prompt (P reads the instruction), prompt-prefix, prompt-text (P reads the text too), lora-m (baseline: LoRA on M).
    #[arg(long, default_value = "prompt")]
    mode: String,
    /// Optimiser steps.
    #[arg(long, default_value_t = 1000)]
    steps: u64,
    /// Queries per micro-batch (each with its positive and one hard negative).
    #[arg(long, default_value_t = 16)]
    batch: usize,
    /// Micro-batches per step (gradient accumulation).
    #[arg(long, default_value_t = 1)]
    accum: usize,
    /// Peak learning rate of the adapters.
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
    /// Peak learning rate of the alignment.
    #[arg(long, default_value_t = 1e-3)]
    lr_align: f64,
    /// Warm-up steps.
    #[arg(long, default_value_t = 50)]
    warmup: u64,
    /// InfoNCE temperature.
    #[arg(long, default_value_t = 0.05)]
    temperature: f64,
    /// LoRA rank.
    #[arg(long, default_value_t = 8)]
    rank: usize,
    /// Soft tokens K (default 5).
    #[arg(long)]
    soft_tokens: Option<usize>,
    /// What feeds the alignment: relaxed (mixtures of P's token embeddings) or hidden (P's hidden states).
    #[arg(long, value_parser = ["relaxed", "hidden"])]
    align_from: Option<String>,
    /// Document tokens kept in training.
    #[arg(long, default_value_t = 64)]
    max_doc_tokens: usize,
    /// Query tokens kept in training.
    #[arg(long, default_value_t = 32)]
    max_query_tokens: usize,
    /// Hard-negative candidates per query (0: in-batch negatives only).
    #[arg(long, default_value_t = 10)]
    hard_negatives: usize,
    /// Steps between dev evaluations (0: only at the end; default 200). With --resume it
    /// applies to this process only: the run trains the same either way.
    #[arg(long)]
    eval_every: Option<u64>,
    /// Dev pairs evaluated.
    #[arg(long, default_value_t = 300)]
    eval_size: usize,
    /// Steps between saved states.
    #[arg(long, default_value_t = 25)]
    save_every: u64,
    /// Gradient caching: texts per differentiated forward pass. The same gradients as the
    /// whole batch for a fraction of the memory and one more forward pass; for a model
    /// too large to train at this batch otherwise.
    #[arg(long)]
    grad_cache: Option<usize>,
    /// Seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Continue the run in --out from its last saved state (its saved settings apply).
    #[arg(long)]
    resume: bool,
    /// Stop (after saving) once this many steps are done; a later --resume continues.
    #[arg(long)]
    stop_at: Option<u64>,
    /// With --resume: measure the saved state's dev MRR@10 (the run's own exact-search
    /// evaluation) and exit without training; for a state saved between evaluation points.
    #[arg(long, requires = "resume")]
    evaluate_only: bool,
    /// Transfer: the trained checkpoint directory whose Prompting LLM and adapters are kept.
    #[arg(long)]
    from: Option<PathBuf>,
    /// The new Embedding LLM (qwen2.5, gemma3, smollm2 or a .gguf file): the target of a
    /// transfer, or the model a `--mode lora-m` run adapts (LoRA on M' from scratch).
    #[arg(long)]
    backbone: Option<String>,
    /// Transfer: how the new alignment starts: lstsq (least squares over shared token strings), identity, zero, or
    /// compose (the source's alignment followed by the least-squares map from its Embedding LLM into the new one).
    #[arg(long, default_value = "lstsq")]
    align_init: String,
    /// Print one JSON line per evaluation point and a final summary.
    #[arg(long)]
    json: bool,
}

/// Writes a line to stdout; a closed pipe (`| head`) ends the program quietly.
fn out(line: impl std::fmt::Display) {
    let mut o = std::io::stdout().lock();
    if writeln!(o, "{line}").and_then(|_| o.flush()).is_err() {
        std::process::exit(0);
    }
}

fn open_existing(db: &PathBuf) -> Result<Db, Error> {
    Db::options().create_if_missing(false).open(db)
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct InputLine {
    id: String,
    text: String,
    #[serde(default)]
    metadata: Value,
}

fn parse_line(raw: &[u8], lineno: usize) -> Result<Document, String> {
    let text = std::str::from_utf8(raw).map_err(|e| format!("line {lineno}: invalid UTF-8 at byte {}", e.valid_up_to()))?;
    let l: InputLine = serde_json::from_str(text).map_err(|e| format!("line {lineno}: {e}"))?;
    Ok(Document { id: l.id, text: l.text, metadata: l.metadata })
}

fn ingest(db: PathBuf, input: String, embedder: Option<String>, batch: usize, json: bool, skip_bad: bool) -> Result<(), String> {
    let batch = batch.max(1);
    let mut opts = Db::options();
    if let Some(e) = embedder {
        opts = opts.embedder_spec(e);
    }
    let db = opts.open(&db).map_err(|e| e.to_string())?;
    let (reader, total): (Box<dyn BufRead>, Option<u64>) = if input == "-" {
        (Box::new(std::io::stdin().lock()), None)
    } else {
        let f = std::fs::File::open(&input).map_err(|e| format!("cannot read {input}: {e}"))?;
        let len = f.metadata().ok().map(|m| m.len());
        (Box::new(std::io::BufReader::with_capacity(1 << 20, f)), len)
    };
    // indicatif draws only when stderr is a terminal, so scripts see clean output.
    let bar = match total {
        Some(n) => ProgressBar::new(n).with_style(
            ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:40} {bytes}/{total_bytes} {msg} ({eta})").unwrap(),
        ),
        None => ProgressBar::new_spinner().with_style(ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bytes} {msg}").unwrap()),
    };
    let (mut committed, mut skipped, mut written) = (0usize, 0usize, 0usize);
    let mut pending: Vec<(usize, Document)> = Vec::with_capacity(batch);
    let flush = |pending: &mut Vec<(usize, Document)>, committed: &mut usize, written: &mut usize| -> Result<(), String> {
        if pending.is_empty() {
            return Ok(());
        }
        let docs: Vec<Document> = pending.iter().map(|(_, d)| d.clone()).collect();
        let r = db.ingest_batch(&docs).map_err(|e| format!("batch ending at line {}: {e}", pending.last().unwrap().0))?;
        *committed += docs.len();
        *written += r.written;
        if json {
            out(json!({"committed": *committed, "last_id": docs.last().unwrap().id}));
        }
        bar.set_message(format!("{committed} documents"));
        pending.clear();
        Ok(())
    };
    let mut reader = reader;
    let mut buf = Vec::new();
    let mut lineno = 0;
    loop {
        buf.clear();
        let n = reader.read_until(b'\n', &mut buf).map_err(|e| format!("reading {input}: {e}"))?;
        if n == 0 {
            break;
        }
        lineno += 1;
        bar.inc(n as u64);
        let raw = buf.strip_suffix(b"\n").unwrap_or(&buf);
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        if raw.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let doc = parse_line(raw, lineno).and_then(|d| db.check_document(&d).map(|_| d).map_err(|e| format!("line {lineno}: {e}")));
        match doc {
            Ok(d) => pending.push((lineno, d)),
            Err(e) if skip_bad => {
                skipped += 1;
                bar.suspend(|| eprintln!("skipped {e}"));
            }
            Err(e) => {
                flush(&mut pending, &mut committed, &mut written)?;
                return Err(e);
            }
        }
        if pending.len() >= batch {
            flush(&mut pending, &mut committed, &mut written)?;
        }
    }
    flush(&mut pending, &mut committed, &mut written)?;
    bar.finish_and_clear();
    if json {
        out(json!({"done": true, "committed": committed, "skipped": skipped}));
    } else {
        out(format!("ingested {committed} documents ({written} written, {} unchanged), skipped {skipped} bad lines", committed - written));
    }
    db.close().map_err(|e| e.to_string())
}

fn parse_filter(f: &str) -> Result<(String, Value), String> {
    let (k, v) = f.split_once('=').ok_or_else(|| format!("filter `{f}` is not KEY=VALUE"))?;
    let v = serde_json::from_str(v).unwrap_or_else(|_| Value::String(v.to_string()));
    Ok((k.to_string(), v))
}

fn embed_cmd(texts: Vec<String>, spec: String, kind: String, json: bool) -> Result<(), String> {
    let e = duetdb::embed::from_spec(&spec).map_err(|e| e.to_string())?;
    let kind = if kind == "passage" { duetdb::Kind::Passage } else { duetdb::Kind::Query };
    if let Some(i) = texts.iter().position(|t| t.trim().is_empty()) {
        return Err(format!("text {} is empty", i + 1));
    }
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let v = e.embed(&refs, kind).map_err(|e| e.to_string())?;
    if json {
        out(json!({"embeddings": v, "dimension": e.dim(), "embedder": e.fingerprint()}));
    } else {
        for (t, v) in texts.iter().zip(&v) {
            let head: Vec<String> = v.iter().take(6).map(|x| format!("{x:+.4}")).collect();
            out(format!("{} [{} ...] ({} dims) {t}", e.fingerprint(), head.join(" "), v.len()));
        }
    }
    Ok(())
}

/// Metrics of one eval run; the relevant document of query i is document i.
#[allow(clippy::too_many_arguments)]
fn eval_cmd(file: PathBuf, qf: String, df: String, spec: Option<String>, keep: Option<PathBuf>, limit: Option<usize>, rank: RankArgs, json: bool) -> Result<(), String> {
    let text = std::fs::read_to_string(&file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let mut pairs = Vec::new();
    let mut skipped = 0;
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: Value = serde_json::from_str(line).map_err(|e| format!("line {}: {e}", n + 1))?;
        let field = |f: &str| v.get(f).and_then(Value::as_str).map(str::trim).unwrap_or("").to_string();
        let (q, d) = (field(&qf), field(&df));
        if q.is_empty() || d.is_empty() {
            skipped += 1;
            continue;
        }
        pairs.push((q, d));
        if limit.is_some_and(|l| pairs.len() >= l) {
            break;
        }
    }
    if pairs.is_empty() {
        return Err(format!("no line of {} has both `{qf}` and `{df}`", file.display()));
    }
    let dir = keep.clone().unwrap_or_else(|| std::env::temp_dir().join(format!("duetdb-eval-{}", std::process::id())));
    if keep.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    let result = (|| -> Result<Value, String> {
        let mut opts = Db::options();
        match &spec {
            Some(s) => opts = opts.embedder_spec(s.as_str()),
            None if keep.is_none() || !dir.exists() => opts = opts.embedder_spec(duetdb::embed::DEFAULT_SPEC),
            None => {}
        }
        let db = opts.open(&dir).map_err(|e| e.to_string())?;
        let embedder = db.embedder().map_err(|e| e.to_string())?;
        let bar = ProgressBar::new(2 * pairs.len() as u64)
            .with_style(ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} {msg} ({eta})").unwrap());
        bar.set_message("documents");
        let t = std::time::Instant::now();
        for (i, chunk) in pairs.chunks(64).enumerate() {
            let docs: Vec<Document> = chunk.iter().enumerate().map(|(j, (_, d))| Document::new((i * 64 + j).to_string(), d.clone())).collect();
            db.ingest_batch(&docs).map_err(|e| e.to_string())?;
            bar.inc(chunk.len() as u64);
        }
        let docs_per_s = pairs.len() as f64 / t.elapsed().as_secs_f64();
        bar.set_message("queries");
        let t = std::time::Instant::now();
        let (mut mrr, mut ndcg, mut r1, mut r10) = (0f64, 0f64, 0f64, 0f64);
        for (i, (q, _)) in pairs.iter().enumerate() {
            let hits = rank.apply(db.query(q).limit(10)).run().map_err(|e| e.to_string())?;
            if let Some(rank) = hits.iter().position(|h| h.id == i.to_string()) {
                mrr += 1.0 / (rank + 1) as f64;
                ndcg += 1.0 / ((rank + 2) as f64).log2();
                r1 += (rank == 0) as u8 as f64;
                r10 += 1.0;
            }
            bar.inc(1);
        }
        let queries_per_s = pairs.len() as f64 / t.elapsed().as_secs_f64();
        bar.finish_and_clear();
        let n = pairs.len() as f64;
        Ok(json!({"mrr10": mrr / n, "ndcg10": ndcg / n, "recall1": r1 / n, "recall10": r10 / n,
                  "docs_per_s": docs_per_s, "queries_per_s": queries_per_s, "pairs": pairs.len(), "skipped": skipped,
                  "embedder": embedder.fingerprint(), "mode": rank.mode}))
    })();
    if keep.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    let r = result?;
    if json {
        out(r);
    } else {
        out(format!(
            "{} pairs ({} skipped), embedder {}, mode {}\nMRR@10 {:.4}  nDCG@10 {:.4}  Recall@1 {:.4}  Recall@10 {:.4}\n{:.1} documents/s, {:.1} queries/s",
            r["pairs"], r["skipped"], r["embedder"], r["mode"], r["mrr10"].as_f64().unwrap(), r["ndcg10"].as_f64().unwrap(),
            r["recall1"].as_f64().unwrap(), r["recall10"].as_f64().unwrap(), r["docs_per_s"].as_f64().unwrap(), r["queries_per_s"].as_f64().unwrap()
        ));
    }
    Ok(())
}

/// Makes glibc keep the memory a training step frees for the next step instead of
/// handing it back to the kernel. A step allocates and frees the same large activations
/// every time; by default glibc trims them off the heap or unmaps them, and the next step
/// pays a page fault for every page again. Measured on the 2-core machine (LoRA on Gemma3,
/// batch 16, `benches/train_cost.sh`, median of steps 2-4): 11.70 s a step against
/// 14.71 s, and 16.39 s against 36.94 s with `--grad-cache 16`, whose slices allocate and
/// free three times a step. The peak resident memory is that of the largest step either way.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn keep_freed_memory() {
    // Trimming off (-1), and no block served by its own mapping (an mmap threshold can be
    // at most 32 MiB, and the larger activations would still come and go).
    let settings = [(libc::M_TRIM_THRESHOLD, -1), (libc::M_MMAP_MAX, 0)];
    for (param, value) in settings {
        // SAFETY: mallopt only changes allocator parameters; it is called before the
        // training threads start.
        if unsafe { libc::mallopt(param, value) } != 1 {
            tracing::warn!(param, value, "mallopt refused a setting: training may run slower");
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn keep_freed_memory() {}

fn train_cmd(args: TrainArgs) -> Result<(), String> {
    use duetdb::train::{Mode, TrainConfig, Trainer};
    keep_freed_memory();
    let s = |e: Error| e.to_string();
    if args.evaluate_only {
        let (step, m) = Trainer::evaluate_saved(&args.out).map_err(s)?;
        let m = m.ok_or("the run has no dev pairs to evaluate")?;
        match args.json {
            true => out(json!({"step": step, "dev_mrr10": m}).to_string()),
            false => out(format!("step {step}: dev MRR@10 {m:.4}")),
        }
        return Ok(());
    }
    let mut t = if args.resume {
        Trainer::resume(&args.out).map_err(s)?
    } else {
        let data = args.data.ok_or("--data is needed for a new run")?;
        let mut c = TrainConfig::new(data, &args.query_field, &args.doc_field, Mode::parse(&args.mode).map_err(s)?);
        c.group_field = args.group_field;
        c.dev = args.dev;
        c.steps = args.steps;
        c.batch = args.batch;
        c.accum = args.accum;
        c.optim.lr = args.lr;
        c.optim.lr_align = args.lr_align;
        c.optim.warmup = args.warmup;
        c.temperature = args.temperature;
        c.lora_rank = args.rank;
        c.soft_tokens = args.soft_tokens;
        c.align_from = args.align_from.map(|a| match a.as_str() {
            "hidden" => duetdb::embed::prompt::AlignSource::Hidden,
            _ => duetdb::embed::prompt::AlignSource::Relaxed,
        });
        c.max_doc_tokens = args.max_doc_tokens;
        c.max_query_tokens = args.max_query_tokens;
        c.hard_negatives = args.hard_negatives;
        c.eval_every = args.eval_every.unwrap_or(200);
        c.eval_size = args.eval_size;
        c.save_every = args.save_every;
        c.grad_cache = args.grad_cache;
        c.seed = args.seed;
        c.backbone = args.backbone.as_deref().map(duetdb::embed::prompt::backbone).transpose().map_err(s)?;
        if c.mode == Mode::Transfer {
            c.from = args.from;
            c.align_init = Some(duetdb::embed::prompt::AlignInit::parse(&args.align_init).map_err(s)?);
        }
        Trainer::create(c, &args.out).map_err(s)?
    };
    t.stop_at = args.stop_at;
    if args.resume {
        t.eval_every = args.eval_every;
    }
    let total = t.config().steps;
    let bar = ProgressBar::new(total).with_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} steps {msg} ({eta})").unwrap(),
    );
    bar.set_position(t.step());
    let json = args.json;
    let summary = t
        .run(&mut |l| {
            bar.set_position(l.step);
            bar.set_message(format!("loss {:.4}", l.loss));
            if let Some(m) = l.dev_mrr10 {
                if json {
                    out(serde_json::to_string(l).unwrap());
                } else {
                    bar.println(format!("step {}: loss {:.4}, dev MRR@10 {m:.4}", l.step, l.loss));
                }
            }
        })
        .map_err(s)?;
    bar.finish_and_clear();
    if json {
        out(json!({"done": summary.steps >= total, "summary": summary}));
    } else {
        out(format!(
            "checkpoint {}\n{} of {} steps, {} trainable values, median step {:.2} s, peak memory {:.0} MiB, recent loss {:.4}, dev MRR@10 {}",
            summary.checkpoint.display(),
            summary.steps,
            total,
            summary.parameters,
            summary.median_step_s,
            summary.peak_rss_mib,
            summary.recent_loss,
            summary.last_dev_mrr10.map_or("not measured".to_string(), |m| format!("{m:.4}"))
        ));
    }
    Ok(())
}

fn reindex_cmd(db: PathBuf, spec: Option<String>, batch: usize, threads: Option<usize>, status: bool, rollback: bool, json: bool) -> Result<(), String> {
    let s = |e: Error| e.to_string();
    let db = open_existing(&db).map_err(s)?;
    if status {
        let g = db.generations();
        if json {
            out(serde_json::to_string(&g).unwrap());
        } else {
            let a = &g.active;
            out(format!("active: generation {} ({}, {} dimensions, {} rows)", a.generation, a.embedder_spec.as_deref().unwrap_or("custom"), a.dim, a.rows));
            match &g.reindex {
                Some(t) => out(format!(
                    "reindex: generation {} ({}), {} of {} rows done",
                    t.generation,
                    t.embedder_spec.as_deref().unwrap_or("custom"),
                    t.rows,
                    a.rows
                )),
                None => out("reindex: none"),
            }
            for k in &g.kept {
                out(format!("kept: generation {} ({}, {} rows)", k.generation, k.embedder_spec.as_deref().unwrap_or("custom"), k.rows));
            }
        }
        return Ok(());
    }
    let mut job = match &spec {
        Some(spec) => db.reindex(duetdb::embed::from_spec(spec).map_err(s)?).map_err(s)?,
        None => db.rollback().map_err(s)?,
    };
    job = job.batch_size(batch);
    if let Some(t) = threads {
        job = job.threads(t);
    }
    if job.is_noop() {
        if json {
            out(json!({"done": true, "generation": job.generation(), "already_active": true}));
        } else {
            out(format!("embedder already active (generation {}): nothing to do", job.generation()));
        }
        drop(job);
        return db.close().map_err(s);
    }
    let p = job.progress();
    let bar = ProgressBar::new(p.total).with_style(ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} rows ({eta})").unwrap());
    bar.set_position(p.done);
    let last = job
        .run(&mut |step| {
            if let duetdb::db::ReindexStep::Batch(p) = step {
                bar.set_length(p.total);
                bar.set_position(p.done);
                if json {
                    out(json!({"reindexed": p.done, "total": p.total}));
                }
            }
        })
        .map_err(s)?;
    bar.finish_and_clear();
    let generation = match last {
        duetdb::db::ReindexStep::Switched { generation } => generation,
        _ => job.generation(),
    };
    if json {
        out(json!({"done": true, "generation": generation}));
    } else {
        out(format!("switched to generation {generation} ({})", if rollback { "rolled back" } else { "reindexed" }));
    }
    drop(job);
    db.close().map_err(s)
}

fn run(cli: Cli) -> Result<(), String> {
    let s = |e: Error| e.to_string();
    match cli.cmd {
        Cmd::Ingest { db, input, embedder, batch, json, skip_bad } => ingest(db, input, embedder, batch, json, skip_bad),
        Cmd::Query { db, text, k, ef, filters, rank, json } => {
            let db = open_existing(&db).map_err(s)?;
            let mut q = rank.apply(db.query(&text).limit(k));
            if let Some(ef) = ef {
                q = q.ef(ef);
            }
            for f in &filters {
                let (k, v) = parse_filter(f)?;
                q = q.filter(k, v);
            }
            let hits = q.run().map_err(s)?;
            if json {
                out(json!({ "hits": hits }));
            } else {
                for h in hits {
                    let text: String = h.text.chars().take(100).collect::<String>().replace('\n', " ");
                    out(format!("{:.4}  {}  {}", h.score, h.id, text));
                }
            }
            Ok(())
        }
        Cmd::Get { db, id, json } => {
            let db = open_existing(&db).map_err(s)?;
            let d = db.get(&id).map_err(s)?.ok_or_else(|| format!("no document with id `{id}`"))?;
            if json {
                out(serde_json::to_string(&d).unwrap());
            } else {
                out(format!("{}\n{}\n{}", d.id, d.metadata, d.text));
            }
            Ok(())
        }
        Cmd::Delete { db, ids, json } => {
            let db = open_existing(&db).map_err(s)?;
            let n = db.delete(&ids).map_err(s)?;
            if json {
                out(json!({"deleted": n, "requested": ids.len()}));
            } else {
                out(format!("deleted {n} of {} documents", ids.len()));
            }
            db.close().map_err(s)
        }
        Cmd::Embed { texts, embedder, kind, json } => embed_cmd(texts, embedder, kind, json),
        Cmd::Eval { file, query_field, doc_field, embedder, db, limit, rank, json } => eval_cmd(file, query_field, doc_field, embedder, db, limit, rank, json),
        Cmd::Train(args) => train_cmd(args),
        Cmd::Transfer(mut args) => {
            args.mode = "transfer".into();
            if !args.resume && (args.from.is_none() || args.backbone.is_none()) {
                return Err("transfer needs --from CHECKPOINT and --backbone qwen2.5|gemma3|FILE.gguf".into());
            }
            train_cmd(args)
        }
        Cmd::Reindex { db, embedder, batch, threads, status, rollback, json } => reindex_cmd(db, embedder, batch, threads, status, rollback, json),
        Cmd::Gc { db, json } => {
            let db = open_existing(&db).map_err(s)?;
            let gone = db.gc().map_err(s)?;
            if json {
                out(json!({"removed_generations": gone}));
            } else {
                out(format!("removed {} kept generation(s) {gone:?}", gone.len()));
            }
            db.close().map_err(s)
        }
        Cmd::Check { db, json } => {
            let report = duetdb::db::check_at(&db).map_err(s)?;
            if json {
                out(serde_json::to_string(&report).unwrap());
            } else {
                for p in &report.problems {
                    let kind = if p.derived { "derived state, rebuilt on open" } else { "damage" };
                    out(format!("problem ({kind}): {}: {}", p.path.display(), p.detail));
                }
                out(format!("checked {} documents and {} rows: {} problem(s)", report.documents, report.rows, report.problems.len()));
            }
            if report.is_ok() {
                Ok(())
            } else {
                Err(format!("{} problem(s) found in {}", report.problems.len(), db.display()))
            }
        }
        Cmd::Dump { db, out: file } => {
            let report = match &file {
                Some(f) => {
                    let tmp = f.with_extension("partial");
                    let fh = std::fs::File::create(&tmp).map_err(|e| s(Error::io(&tmp, e)))?;
                    let mut w = std::io::BufWriter::new(fh);
                    let r = duetdb::db::dump_at(&db, &mut w).map_err(s)?;
                    w.into_inner().map_err(|e| e.to_string())?.sync_all().map_err(|e| s(Error::io(&tmp, e)))?;
                    std::fs::rename(&tmp, f).map_err(|e| s(Error::io(f, e)))?;
                    r
                }
                None => duetdb::db::dump_at(&db, &mut std::io::stdout().lock()).map_err(s)?,
            };
            for u in &report.unreadable {
                eprintln!("unreadable: {u}");
            }
            eprintln!("dumped {} documents; {} could not be read", report.documents, report.unreadable.len());
            Ok(())
        }
        Cmd::Backup { db, dest } => {
            let src = open_existing(&db).map_err(s)?;
            src.backup(&dest).map_err(s)?;
            out(format!("backed up {} documents to {}", src.len(), dest.display()));
            src.close().map_err(s)
        }
        Cmd::Stats { db, json } => {
            let db = open_existing(&db).map_err(s)?;
            let st = db.stats().map_err(s)?;
            if json {
                out(serde_json::to_string(&st).unwrap());
            } else {
                let v = serde_json::to_value(&st).unwrap();
                for (k, v) in v.as_object().unwrap() {
                    out(format!("{k:>18}: {v}"));
                }
            }
            Ok(())
        }
    }
}

static LAST_PANIC: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .init();
    // A bug must still end as one line on stderr, not a backtrace. Panics that the
    // library catches at a dependency's boundary (and turns into errors) only log.
    std::panic::set_hook(Box::new(|info| {
        tracing::debug!("panic: {info}");
        *LAST_PANIC.lock().unwrap_or_else(|e| e.into_inner()) = Some(info.to_string());
    }));
    let cli = Cli::parse();
    match std::panic::catch_unwind(move || run(cli)) {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
        Err(_) => {
            let msg = LAST_PANIC.lock().unwrap_or_else(|e| e.into_inner()).take();
            eprintln!("error: internal error: {}", msg.as_deref().unwrap_or("panic"));
            ExitCode::from(101)
        }
    }
}
