//! `duetdb export` and `duetdb import`: one Parquet row per live document (`id`, `text`,
//! `metadata` as JSON, `vector`), the embedder's fingerprint and dimension in the file's
//! key-value metadata, so that another engine (LanceDB, Qdrant, ...) gets vectors in
//! the space duetdb's embedder queries in, and an import can refuse vectors of another.

use crate::{out, progress};
use arrow_array::builder::{FixedSizeListBuilder, Float32Builder, ListBuilder, StringBuilder};
use arrow_array::{Array, ArrayRef, FixedSizeListArray, LargeListArray, ListArray, RecordBatch};
use arrow_schema::{DataType, Field, Schema};
use duetdb::db::ExportInfo;
use duetdb::{Document, Error, Result};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Rows per record batch and per row group: what export holds in memory at a time.
const ROWS_PER_GROUP: usize = 4096;
/// Documents per durable commit on import.
const IMPORT_BATCH: usize = 256;

const KEY_FINGERPRINT: &str = "duetdb.embedder.fingerprint";
const KEY_SPEC: &str = "duetdb.embedder.spec";
const KEY_DIM: &str = "duetdb.embedder.dim";
const KEY_GENERATION: &str = "duetdb.generation";

fn parquet_err(path: &Path, e: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::invalid(format!("Parquet file {}: {e}", path.display()))
}

fn schema(dim: usize, list_vectors: bool) -> Result<Arc<Schema>> {
    let item = Arc::new(Field::new("item", DataType::Float32, false));
    let vector = if list_vectors {
        DataType::List(item)
    } else {
        let dim = i32::try_from(dim).map_err(|_| Error::invalid(format!("dimension {dim} does not fit a Parquet fixed-size list")))?;
        DataType::FixedSizeList(item, dim)
    };
    Ok(Arc::new(Schema::new(vec![
        Field::new("id", DataType::Utf8, false),
        Field::new("text", DataType::Utf8, false),
        Field::new("metadata", DataType::Utf8, true),
        Field::new("vector", vector, false),
    ])))
}

/// Builds one record batch of the export at a time.
struct Columns {
    ids: StringBuilder,
    texts: StringBuilder,
    metadata: StringBuilder,
    fixed: Option<FixedSizeListBuilder<Float32Builder>>,
    list: Option<ListBuilder<Float32Builder>>,
    rows: usize,
}

impl Columns {
    fn new(dim: usize, list_vectors: bool) -> Self {
        let item = Arc::new(Field::new("item", DataType::Float32, false));
        let (fixed, list) = if list_vectors {
            (None, Some(ListBuilder::new(Float32Builder::new()).with_field(item)))
        } else {
            (Some(FixedSizeListBuilder::new(Float32Builder::new(), dim as i32).with_field(item)), None)
        };
        Self { ids: StringBuilder::new(), texts: StringBuilder::new(), metadata: StringBuilder::new(), fixed, list, rows: 0 }
    }

    fn push(&mut self, d: &Document, v: &[f32]) {
        self.ids.append_value(&d.id);
        self.texts.append_value(&d.text);
        if d.metadata.is_null() {
            self.metadata.append_null();
        } else {
            self.metadata.append_value(d.metadata.to_string());
        }
        if let Some(b) = &mut self.fixed {
            b.values().append_slice(v);
            b.append(true);
        }
        if let Some(b) = &mut self.list {
            b.values().append_slice(v);
            b.append(true);
        }
        self.rows += 1;
    }

    fn finish(&mut self, schema: &Arc<Schema>) -> Result<RecordBatch> {
        let vector: ArrayRef = match (&mut self.fixed, &mut self.list) {
            (Some(b), _) => Arc::new(b.finish()),
            (_, Some(b)) => Arc::new(b.finish()),
            _ => unreachable!("one vector builder is always set"),
        };
        self.rows = 0;
        let cols: Vec<ArrayRef> = vec![Arc::new(self.ids.finish()), Arc::new(self.texts.finish()), Arc::new(self.metadata.finish()), vector];
        RecordBatch::try_new(schema.clone(), cols).map_err(|e| Error::invalid(format!("building a record batch: {e}")))
    }
}

/// `duetdb export DB --out FILE.parquet [--generation G] [--list-vectors]`.
pub(crate) fn export_cmd(db: PathBuf, file: PathBuf, generation: Option<u64>, list_vectors: bool, json: bool) -> Result<()> {
    duetdb::store::Layout::refuse_inside_database("--out", &file)?;
    // Only the catalog and one vector file: no graph, no full-text index, flat memory.
    let export = duetdb::db::ExportAt::open(&db, generation)?;
    let info = export.info().clone();
    let schema = schema(info.dim, list_vectors)?;
    let mut kv = vec![
        KeyValue::new(KEY_FINGERPRINT.to_string(), info.fingerprint.clone()),
        KeyValue::new(KEY_DIM.to_string(), info.dim.to_string()),
        KeyValue::new(KEY_GENERATION.to_string(), info.generation.to_string()),
    ];
    if let Some(s) = &info.spec {
        kv.push(KeyValue::new(KEY_SPEC.to_string(), s.clone()));
    }
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(ROWS_PER_GROUP))
        .set_key_value_metadata(Some(kv))
        .build();
    let bar = progress::counter(info.documents, "documents");
    let mut written = 0u64;
    duetdb::durable::replace_file(&file, |tmp| {
        let fh = std::fs::File::create(tmp).map_err(|e| Error::io(tmp, e))?;
        let mut w = ArrowWriter::try_new(fh, schema.clone(), Some(props)).map_err(|e| parquet_err(tmp, e))?;
        let mut cols = Columns::new(info.dim, list_vectors);
        export.for_each(&mut |d, v| {
            cols.push(&d, v);
            written += 1;
            if cols.rows == ROWS_PER_GROUP {
                w.write(&cols.finish(&schema)?).map_err(|e| parquet_err(tmp, e))?;
                bar.set_position(written);
            }
            Ok(())
        })?;
        if cols.rows > 0 {
            w.write(&cols.finish(&schema)?).map_err(|e| parquet_err(tmp, e))?;
        }
        // `close` writes the footer; replace_file then fsyncs and renames.
        w.close().map_err(|e| parquet_err(tmp, e))?;
        Ok(())
    })?;
    bar.finish_and_clear();
    if json {
        out(json!({"exported": written, "out": file, "generation": info.generation, "dim": info.dim, "embedder": info.fingerprint}));
    } else {
        out(format!("exported {written} documents of generation {} ({}, {} dimensions) to {}", info.generation, info.fingerprint, info.dim, file.display()));
    }
    Ok(())
}

/// What a file's key-value metadata says about its vectors.
fn file_info(path: &Path, kv: Option<&Vec<KeyValue>>, rows: i64) -> Result<ExportInfo> {
    let get = |k: &str| kv.and_then(|kv| kv.iter().find(|e| e.key == k)).and_then(|e| e.value.clone());
    let fingerprint = get(KEY_FINGERPRINT).ok_or_else(|| {
        Error::invalid(format!("{} has no `{KEY_FINGERPRINT}` in its metadata: not a duetdb export (import it with --reembed)", path.display()))
    })?;
    let dim =
        get(KEY_DIM).and_then(|d| d.parse().ok()).ok_or_else(|| Error::invalid(format!("{} has no valid `{KEY_DIM}` in its metadata", path.display())))?;
    let generation = get(KEY_GENERATION).and_then(|g| g.parse().ok()).unwrap_or(0);
    Ok(ExportInfo { generation, dim, fingerprint, spec: get(KEY_SPEC), documents: rows.max(0) as u64 })
}

fn strings<'a>(path: &Path, batch: &'a RecordBatch, name: &str, required: bool) -> Result<Option<Vec<Option<&'a str>>>> {
    let Some(col) = batch.column_by_name(name) else {
        return if required { Err(Error::invalid(format!("{} has no `{name}` column", path.display()))) } else { Ok(None) };
    };
    if let Some(a) = col.as_any().downcast_ref::<arrow_array::StringArray>() {
        return Ok(Some(a.iter().collect()));
    }
    if let Some(a) = col.as_any().downcast_ref::<arrow_array::LargeStringArray>() {
        return Ok(Some(a.iter().collect()));
    }
    Err(Error::invalid(format!("{}: column `{name}` is {}, not a string", path.display(), col.data_type())))
}

/// The vector of every row of `batch`, from a fixed-size or variable list of float32.
fn vectors(path: &Path, batch: &RecordBatch) -> Result<Vec<Option<Vec<f32>>>> {
    let col = batch.column_by_name("vector").ok_or_else(|| Error::invalid(format!("{} has no `vector` column", path.display())))?;
    let floats = |a: ArrayRef| -> Result<Vec<f32>> {
        let f = a
            .as_any()
            .downcast_ref::<arrow_array::Float32Array>()
            .ok_or_else(|| Error::invalid(format!("{}: `vector` items are {}, not float32", path.display(), a.data_type())))?;
        Ok(f.values().to_vec())
    };
    let mut out = Vec::with_capacity(col.len());
    let any = col.as_any();
    for i in 0..col.len() {
        if col.is_null(i) {
            out.push(None);
            continue;
        }
        let items = if let Some(a) = any.downcast_ref::<FixedSizeListArray>() {
            a.value(i)
        } else if let Some(a) = any.downcast_ref::<ListArray>() {
            a.value(i)
        } else if let Some(a) = any.downcast_ref::<LargeListArray>() {
            a.value(i)
        } else {
            return Err(Error::invalid(format!("{}: column `vector` is {}, not a list of float32", path.display(), col.data_type())));
        };
        out.push(Some(floats(items)?));
    }
    Ok(out)
}

/// Arguments of `duetdb import`.
pub(crate) struct ImportArgs {
    pub(crate) db: PathBuf,
    pub(crate) file: PathBuf,
    pub(crate) embedder: Option<String>,
    pub(crate) reembed: bool,
    pub(crate) json: bool,
}

/// `duetdb import DB FILE.parquet [--reembed] [--embedder SPEC]`.
pub(crate) fn import_cmd(a: ImportArgs) -> Result<()> {
    let path = a.file.as_path();
    let fh = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(fh).map_err(|e| parquet_err(path, e))?;
    let meta = builder.metadata().file_metadata();
    let info = if a.reembed { None } else { Some(file_info(path, meta.key_value_metadata(), meta.num_rows())?) };
    let total = meta.num_rows().max(0) as u64;
    let reader = builder.with_batch_size(IMPORT_BATCH).build().map_err(|e| parquet_err(path, e))?;

    let mut opts = crate::db_options()?;
    // A new database takes the embedder the vectors came from, unless told otherwise;
    // an existing one keeps its own (and the check below compares).
    match (&a.embedder, info.as_ref().and_then(|i| i.spec.clone())) {
        (Some(e), _) => opts = opts.embedder_spec(e.clone()),
        (None, Some(spec)) if !a.db.exists() => opts = opts.embedder_spec(spec),
        _ => {}
    }
    let db = opts.open(&a.db)?;
    if let Some(i) = &info {
        let active = db.embedder()?.fingerprint();
        if active != i.fingerprint || db.dimension() != i.dim {
            return Err(Error::invalid(format!(
                "{} holds vectors of embedder {} ({} dimensions), but {} uses {} ({} dimensions): import with --reembed to embed the texts again",
                path.display(),
                i.fingerprint,
                i.dim,
                a.db.display(),
                active,
                db.dimension()
            )));
        }
    }
    let bar = progress::counter(total, "documents");
    let (mut rows, mut written) = (0u64, 0usize);
    for batch in reader {
        let batch = batch.map_err(|e| parquet_err(path, e))?;
        let ids = strings(path, &batch, "id", true)?.expect("required");
        let texts = strings(path, &batch, "text", true)?.expect("required");
        let metadata = strings(path, &batch, "metadata", false)?;
        let vecs = if info.is_some() { Some(vectors(path, &batch)?) } else { None };
        let mut docs = Vec::with_capacity(ids.len());
        for i in 0..ids.len() {
            let row = rows + i as u64 + 1;
            let (Some(id), Some(text)) = (ids[i], texts[i]) else {
                return Err(Error::invalid(format!("{} row {row}: `id` or `text` is null", path.display())));
            };
            let meta = match metadata.as_ref().and_then(|m| m[i]) {
                Some(m) => serde_json::from_str(m).map_err(|e| Error::invalid(format!("{} row {row}: `metadata` is not JSON: {e}", path.display())))?,
                None => serde_json::Value::Null,
            };
            docs.push(Document::new(id, text).with_metadata(meta));
        }
        let report = match (vecs, &info) {
            (Some(v), Some(i)) => {
                let v: Vec<Vec<f32>> = v
                    .into_iter()
                    .enumerate()
                    .map(|(k, v)| v.ok_or_else(|| Error::invalid(format!("{} row {}: `vector` is null", path.display(), rows + k as u64 + 1))))
                    .collect::<Result<_>>()?;
                db.ingest_embedded(&docs, &v, &i.fingerprint)
            }
            _ => db.ingest_batch(&docs),
        }
        .map_err(|e| e.context(format!("{} rows {}-{}", path.display(), rows + 1, rows + docs.len() as u64)))?;
        rows += docs.len() as u64;
        written += report.written;
        bar.set_position(rows);
    }
    bar.finish_and_clear();
    if a.json {
        out(json!({"imported": rows, "written": written, "reembedded": a.reembed}));
    } else {
        out(format!(
            "imported {rows} documents ({written} written, {} unchanged){}",
            rows as usize - written,
            if a.reembed { ", texts embedded again" } else { "" }
        ));
    }
    db.close()
}
