//! The command line: every subcommand and its flags (clap), in one place so that `--help`
//! and the README's CLI section read from the same definitions.

use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "duetdb", version, about = "An embedded vector search engine with a built-in text embedder")]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) cmd: Cmd,
    /// Arithmetic of the embedder's batched products (ingest, eval, reindex): f32, bf16 (CPUs with AVX-512 BF16; f32 elsewhere), int8 (8-bit activations times the GGUF codes, CPUs with AVX2) or auto (bf16 where the CPU has it, else f32). Default: $DUETDB_PRECISION, else auto.
    #[arg(long, global = true)]
    pub(crate) precision: Option<String>,
    /// Where the model embedders run: cpu, cuda, cuda:N or auto (a GPU if this build has the `cuda` feature and the machine one). Default: $DUETDB_DEVICE, else cpu (auto with the feature).
    #[arg(long, global = true)]
    pub(crate) device: Option<String>,
}

#[derive(Subcommand)]
pub(crate) enum Cmd {
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
        #[command(flatten)]
        fields: FieldArgs,
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
        /// Metadata filter expression: comparisons (= != < <= > >=), `KEY in (A, B)`, `exists(KEY)`, and/or/not, parentheses;
        /// e.g. `year >= 2020 and section in (net, utils)`. Values are JSON (numbers, "strings", true, false, null) or bare words.
        #[arg(long = "where", value_name = "EXPR")]
        where_expr: Option<String>,
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
        /// JSON Lines file; several files (one per source) are evaluated each on its own
        /// corpus and reported with their macro-average.
        #[arg(required = true, num_args = 1..)]
        file: Vec<PathBuf>,
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
        /// already stored unchanged are not embedded again. With several files, one
        /// database per file under this directory, named after the file.
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
    /// Rewrite the database without the rows of replaced and deleted documents: vector files, catalog, graph and full-text index. Safe to kill; queries of a running `serve` go on meanwhile. Runs on its own after a write that leaves half the rows dead (`DUETDB_AUTO_COMPACT=off` or a fraction changes that).
    Compact {
        /// Database directory.
        db: PathBuf,
        /// Print JSON.
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
    /// Write every live document with its vector to a Parquet file (id, text, metadata as JSON, vector), for other engines.
    Export {
        /// Database directory.
        db: PathBuf,
        /// The Parquet file to write (replaced atomically).
        #[arg(long)]
        out: PathBuf,
        /// A kept generation's vectors instead of the active one's.
        #[arg(long)]
        generation: Option<u64>,
        /// Write vectors as a variable-length list instead of a fixed-size list, for engines that need it.
        #[arg(long)]
        list_vectors: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Ingest a Parquet file written by `export` (or any file with id, text, metadata and vector columns).
    Import {
        /// Database directory (created with the file's embedder if it does not exist).
        db: PathBuf,
        /// The Parquet file.
        file: PathBuf,
        /// Embed the texts again with the database's embedder instead of taking the file's vectors.
        #[arg(long)]
        reembed: bool,
        /// Embedder for a new database (a spec, as for `embed`); default: the one the file names.
        #[arg(long)]
        embedder: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Serve the database over HTTP: OpenAI- and TEI-shaped embeddings, query, ingest, delete.
    Serve(ServeArgs),
    /// Figures about a database.
    Stats {
        /// Database directory.
        db: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Which JSON fields make a document (`ingest`): the files users already have are taken
/// as they are.
#[derive(clap::Args, Clone)]
pub(crate) struct FieldArgs {
    /// The field holding each document's id.
    #[arg(long, default_value = "id")]
    pub(crate) id_field: String,
    /// The field holding the text to embed and index.
    #[arg(long, default_value = "text")]
    pub(crate) text_field: String,
    /// Only these fields (comma-separated) become metadata, beside a `metadata` object.
    /// Default: every field other than the id and the text.
    #[arg(long, value_delimiter = ',', conflicts_with = "ignore_extra")]
    pub(crate) metadata_fields: Option<Vec<String>>,
    /// Keep only the `metadata` object as metadata; ignore other fields.
    #[arg(long)]
    pub(crate) ignore_extra: bool,
    /// Accept ids that are JSON numbers, as their decimal text.
    #[arg(long)]
    pub(crate) numeric_ids: bool,
}

impl FieldArgs {
    pub(crate) fn json_fields(&self) -> duetdb::db::JsonFields {
        use duetdb::db::MetadataFields;
        let metadata = match (&self.metadata_fields, self.ignore_extra) {
            (Some(names), _) => MetadataFields::Named(names.clone()),
            (None, true) => MetadataFields::MetadataOnly,
            (None, false) => MetadataFields::Rest,
        };
        duetdb::db::JsonFields { id: self.id_field.clone(), text: self.text_field.clone(), metadata, numeric_ids: self.numeric_ids }
    }
}

/// How a query ranks: mode and hybrid fusion.
#[derive(clap::Args, Clone)]
pub(crate) struct RankArgs {
    /// Ranking: `vector` (embeddings), `text` (BM25) or `hybrid` (both, fused).
    #[arg(long, default_value = duetdb::db::DEFAULT_MODE.name(), value_parser = ["vector", "text", "hybrid"])]
    pub(crate) mode: String,
    /// Hybrid fusion: `weighted` (normalised scores) or `rrf` (reciprocal rank).
    #[arg(long, default_value = "weighted", value_parser = ["rrf", "weighted"])]
    pub(crate) fusion: String,
    /// RRF rank constant.
    #[arg(long, default_value_t = duetdb::db::DEFAULT_RRF_K)]
    pub(crate) rrf_k: f32,
    /// RRF weight of the BM25 ranking (the vector ranking weighs 1).
    #[arg(long, default_value_t = 1.0)]
    pub(crate) text_weight: f32,
    /// Weighted fusion: weight of the vector scores (BM25 gets the rest).
    #[arg(long, default_value_t = duetdb::db::DEFAULT_VECTOR_WEIGHT)]
    pub(crate) vector_weight: f32,
    /// Candidates each ranking contributes in hybrid mode.
    #[arg(long, default_value_t = duetdb::db::DEFAULT_CANDIDATES)]
    pub(crate) candidates: usize,
    /// HNSW search beam width (default: max(64, results wanted)); higher finds more of
    /// the true nearest vectors, at more cost per query.
    #[arg(long)]
    pub(crate) ef: Option<usize>,
}

impl RankArgs {
    pub(crate) fn apply<'a>(&self, q: duetdb::Query<'a>) -> duetdb::Query<'a> {
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
pub(crate) struct TrainArgs {
    /// Training pairs, JSON Lines (not needed with --resume).
    #[arg(long, required_unless_present = "resume")]
    pub(crate) data: Option<PathBuf>,
    /// Field holding the query.
    #[arg(long, default_value = "summary")]
    pub(crate) query_field: String,
    /// Field holding the document.
    #[arg(long, default_value = "description")]
    pub(crate) doc_field: String,
    /// Field naming a pair's group: pairs of one group are never each other's negatives.
    #[arg(long)]
    pub(crate) group_field: Option<String>,
    /// Field naming a pair's source: each micro-batch comes from one source, and the dev
    /// MRR@10 is averaged over sources (each on its own documents).
    #[arg(long)]
    pub(crate) domain_field: Option<String>,
    /// Dev pairs (same fields) for MRR@10 at evaluation points.
    #[arg(long)]
    pub(crate) dev: Option<PathBuf>,
    /// Run directory: the trained checkpoint and the state to resume from.
    #[arg(long)]
    pub(crate) out: PathBuf,
    /// What to train: prompt (P reads the instruction), prompt-prefix, prompt-text (P reads the text too), lora-m (baseline: LoRA on M),
    /// readout (a map from M's soft-position states to the vector, over a frozen --from checkpoint).
    #[arg(long, default_value = "prompt")]
    pub(crate) mode: String,
    /// Optimiser steps.
    #[arg(long, default_value_t = 1000)]
    pub(crate) steps: u64,
    /// Queries per micro-batch (each with its positive and one hard negative).
    #[arg(long, default_value_t = 16)]
    pub(crate) batch: usize,
    /// Micro-batches per step (gradient accumulation).
    #[arg(long, default_value_t = 1)]
    pub(crate) accum: usize,
    /// Peak learning rate of the adapters.
    #[arg(long, default_value_t = 1e-3)]
    pub(crate) lr: f64,
    /// Peak learning rate of the alignment.
    #[arg(long, default_value_t = 1e-3)]
    pub(crate) lr_align: f64,
    /// Warm-up steps.
    #[arg(long, default_value_t = 50)]
    pub(crate) warmup: u64,
    /// InfoNCE temperature.
    #[arg(long, default_value_t = 0.05)]
    pub(crate) temperature: f64,
    /// LoRA rank.
    #[arg(long, default_value_t = 8)]
    pub(crate) rank: usize,
    /// Soft tokens K (default 5; with --from, as the checkpoint has them).
    #[arg(long)]
    pub(crate) soft_tokens: Option<usize>,
    /// Run only M's first N blocks (an earlier exit: a document costs N / all of the
    /// forward); default: as --from has it, else all.
    #[arg(long)]
    pub(crate) m_layers: Option<usize>,
    /// What feeds the alignment: relaxed (mixtures of P's token embeddings) or hidden (P's hidden states).
    #[arg(long, value_parser = ["relaxed", "hidden"])]
    pub(crate) align_from: Option<String>,
    /// Document tokens kept in training.
    #[arg(long, default_value_t = 64)]
    pub(crate) max_doc_tokens: usize,
    /// Query tokens kept in training.
    #[arg(long, default_value_t = 32)]
    pub(crate) max_query_tokens: usize,
    /// Hard-negative candidates per query (0: in-batch negatives only).
    #[arg(long, default_value_t = 10)]
    pub(crate) hard_negatives: usize,
    /// Readout mode: BM25's best documents for each query (of its source, never its own
    /// or its group's) added to its hard-negative candidates (0: none).
    #[arg(long, default_value_t = 0)]
    pub(crate) text_negatives: usize,
    /// Readout mode: save the mean of the last N steps' weights instead of the last
    /// step's (0: the last step's); the log's last line reports the mean's dev figures.
    #[arg(long, default_value_t = 0)]
    pub(crate) average_last: usize,
    /// Steps between dev evaluations (0: only at the end; default 200). With --resume it
    /// applies to this process only: the run trains the same either way.
    #[arg(long)]
    pub(crate) eval_every: Option<u64>,
    /// Dev pairs evaluated.
    #[arg(long, default_value_t = 300)]
    pub(crate) eval_size: usize,
    /// Steps between saved states.
    #[arg(long, default_value_t = 25)]
    pub(crate) save_every: u64,
    /// Gradient caching: texts per differentiated forward pass. The same gradients as the
    /// whole batch for a fraction of the memory and one more forward pass; for a model
    /// too large to train at this batch otherwise.
    #[arg(long)]
    pub(crate) grad_cache: Option<usize>,
    /// Seed.
    #[arg(long, default_value_t = 0)]
    pub(crate) seed: u64,
    /// Continue the run in --out from its last saved state (its saved settings apply).
    #[arg(long)]
    pub(crate) resume: bool,
    /// Stop (after saving) once this many steps are done; a later --resume continues.
    #[arg(long)]
    pub(crate) stop_at: Option<u64>,
    /// With --resume: measure the saved state's dev MRR@10 (the run's own exact-search
    /// evaluation) and exit without training; for a state saved between evaluation points.
    #[arg(long, requires = "resume")]
    pub(crate) evaluate_only: bool,
    /// Transfer: the trained checkpoint directory whose Prompting LLM and adapters are kept.
    /// Prompt modes: the trained checkpoint to go on training (fine-tuning).
    #[arg(long)]
    pub(crate) from: Option<PathBuf>,
    /// The new Embedding LLM (qwen2.5, gemma3, smollm2 or a .gguf file): the target of a
    /// transfer, or the model a `--mode lora-m` run adapts (LoRA on M' from scratch).
    #[arg(long)]
    pub(crate) backbone: Option<String>,
    /// Transfer: how the new alignment starts: lstsq (least squares over shared token strings), identity, zero, or
    /// compose (the source's alignment followed by the least-squares map from its Embedding LLM into the new one).
    #[arg(long, default_value = "lstsq")]
    pub(crate) align_init: String,
    /// Readout: M's blocks after which the soft positions' states are read, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "15,18")]
    pub(crate) readout_blocks: Vec<usize>,
    /// Readout: read each soft position on its own instead of their mean.
    #[arg(long)]
    pub(crate) readout_per_position: bool,
    /// Readout: at most this many training pairs of each source (default: all).
    #[arg(long)]
    pub(crate) pairs_per_source: Option<usize>,
    /// Readout: another readout run's directory (same --from and readout shape) whose
    /// computed inputs are reused where the texts agree; only the rest is embedded.
    #[arg(long)]
    pub(crate) inputs_from: Option<PathBuf>,
    /// Print one JSON line per evaluation point and a final summary.
    #[arg(long)]
    pub(crate) json: bool,
}

/// `duetdb serve`: one process owns the database and answers HTTP.
#[derive(clap::Args, Clone)]
pub(crate) struct ServeArgs {
    /// Database directory (created with the default embedder, or --embedder, if it does not exist).
    pub(crate) db: PathBuf,
    /// Address to listen on; port 0 picks a free one (printed on the first line of stdout).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub(crate) addr: String,
    /// Require `Authorization: Bearer KEY` on every route but /health (default: no key). Also read from DUETDB_API_KEY.
    #[arg(long, env = "DUETDB_API_KEY", hide_env_values = true)]
    pub(crate) api_key: Option<String>,
    /// Embedder for a new database (a spec, as for `embed`); an existing database keeps its own.
    #[arg(long)]
    pub(crate) embedder: Option<String>,
    /// Largest request body in bytes.
    #[arg(long, default_value_t = 2 * 1024 * 1024)]
    pub(crate) max_body_bytes: usize,
    /// Most texts in one embeddings request (as text-embeddings-inference's default).
    #[arg(long, default_value_t = 32)]
    pub(crate) max_inputs: usize,
    /// Most documents in one ingest request.
    #[arg(long, default_value_t = 1000)]
    pub(crate) max_documents: usize,
    /// Longest text to embed, in bytes (documents also obey the database's own limit).
    #[arg(long, default_value_t = 64 * 1024)]
    pub(crate) max_text_bytes: usize,
    /// Texts the shared embedding queue puts in one batch at most.
    #[arg(long, default_value_t = 256)]
    pub(crate) batch_texts: usize,
    /// Bytes of text the shared embedding queue puts in one batch at most (its token budget).
    #[arg(long, default_value_t = 256 * 1024)]
    pub(crate) batch_bytes: usize,
}
