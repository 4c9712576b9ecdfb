//! `duetdb reindex`: move a live database to another embedder (a new generation), roll
//! back, or show where a reindex stands.

use crate::{open_existing, out, progress};
use duetdb::Result;
use serde_json::json;
use std::path::PathBuf;

pub(crate) fn reindex_cmd(db: PathBuf, spec: Option<String>, batch: usize, threads: Option<usize>, status: bool, rollback: bool, json: bool) -> Result<()> {
    let db = open_existing(&db)?;
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
    // Checked before the job is created: a refused value leaves no reindex target behind.
    duetdb::db::ReindexJob::check_settings(batch, threads.unwrap_or_else(duetdb::db::default_reindex_threads))?;
    let mut job = match &spec {
        Some(spec) => db.reindex(duetdb::embed::from_spec(spec)?)?,
        None => db.rollback()?,
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
        return db.close();
    }
    let p = job.progress();
    let bar = progress::counter(p.total, "rows");
    bar.set_position(p.done);
    let last = job.run(&mut |step| {
        if let duetdb::db::ReindexStep::Batch(p) = step {
            bar.set_length(p.total);
            bar.set_position(p.done);
            if json {
                out(json!({"reindexed": p.done, "total": p.total}));
            }
        }
    })?;
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
    db.close()
}
