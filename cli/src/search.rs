//! `duetdb embed` and the query helpers.

use crate::out;
use duetdb::{Error, Result};
use serde_json::{json, Value};

pub(crate) fn parse_filter(f: &str) -> Result<(String, Value)> {
    let (k, v) = f.split_once('=').ok_or_else(|| Error::invalid(format!("filter `{f}` is not KEY=VALUE")))?;
    let v = serde_json::from_str(v).unwrap_or_else(|_| Value::String(v.to_string()));
    Ok((k.to_string(), v))
}

pub(crate) fn embed_cmd(texts: Vec<String>, spec: String, kind: String, json: bool) -> Result<()> {
    let e = duetdb::embed::from_spec(&spec)?;
    let kind = if kind == "passage" { duetdb::Kind::Passage } else { duetdb::Kind::Query };
    if let Some(i) = texts.iter().position(|t| t.trim().is_empty()) {
        return Err(Error::invalid(format!("text {} is empty", i + 1)));
    }
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let v = e.embed(&refs, kind)?;
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
