//! Documents from the JSON Lines users already have: which field is the id, which the
//! text, and what becomes metadata, so that a file like Debian's
//! `{"package": .., "summary": .., "description": ..}` is ingested as it is.

use super::Document;
use crate::error::{Error, Result};
use serde_json::{Map, Value};

/// How a JSON object becomes a [`Document`].
///
/// The default reads `{"id": .., "text": .., "metadata": {..}}` and keeps every other
/// field as metadata too, so a file with more fields is never refused.
///
/// ```
/// use duetdb::db::JsonFields;
/// let fields = JsonFields { id: "package".into(), text: "description".into(), ..JsonFields::default() };
/// let d = fields.document(br#"{"package": "ripgrep", "description": "searches files", "summary": "grep, faster"}"#).unwrap();
/// assert_eq!((d.id.as_str(), d.text.as_str()), ("ripgrep", "searches files"));
/// assert_eq!(d.metadata["summary"], "grep, faster");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonFields {
    /// The field holding the document's id.
    pub id: String,
    /// The field holding the text that is embedded and indexed.
    pub text: String,
    /// What becomes metadata.
    pub metadata: MetadataFields,
    /// Accept an id that is a JSON number (as its decimal text); otherwise it is an
    /// error, since `1` and `"1"` would silently name one document.
    pub numeric_ids: bool,
}

/// Which fields of a JSON object become a document's metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetadataFields {
    /// The `metadata` object, if any, plus every field other than the id and the text.
    Rest,
    /// Only the `metadata` object; other fields are ignored.
    MetadataOnly,
    /// Only these fields (missing ones are left out).
    Named(Vec<String>),
}

impl Default for JsonFields {
    fn default() -> Self {
        Self { id: "id".into(), text: "text".into(), metadata: MetadataFields::Rest, numeric_ids: false }
    }
}

impl JsonFields {
    /// The document in one line of JSON (a leading byte-order mark is skipped); errors
    /// name the field and what was found.
    pub fn document(&self, line: &[u8]) -> Result<Document> {
        let line = line.strip_prefix("\u{feff}".as_bytes()).unwrap_or(line);
        let text = std::str::from_utf8(line).map_err(|e| Error::invalid(format!("invalid UTF-8 at byte {}", e.valid_up_to())))?;
        let value: Value = serde_json::from_str(text).map_err(|e| Error::invalid(format!("not JSON: {e}")))?;
        let Value::Object(mut obj) = value else {
            return Err(Error::invalid("a line must be a JSON object"));
        };
        let id = match obj.remove(&self.id) {
            Some(Value::String(s)) => s,
            Some(Value::Number(n)) if self.numeric_ids => n.to_string(),
            Some(Value::Number(n)) => {
                return Err(Error::invalid(format!("field `{}` is the number {n}; ids are strings (ask for numeric ids to take it as \"{n}\")", self.id)))
            }
            Some(other) => return Err(Error::invalid(format!("field `{}` must be a string, found {}", self.id, kind(&other)))),
            None => return Err(Error::invalid(format!("missing field `{}` (the id)", self.id))),
        };
        let text = match obj.remove(&self.text) {
            Some(Value::String(s)) => s,
            Some(other) => return Err(Error::invalid(format!("field `{}` must be a string, found {}", self.text, kind(&other)))),
            None => return Err(Error::invalid(format!("missing field `{}` (the text)", self.text))),
        };
        let mut meta = match obj.remove("metadata") {
            Some(Value::Object(m)) => m,
            Some(Value::Null) | None => Map::new(),
            Some(other) => return Err(Error::invalid(format!("field `metadata` must be an object, found {}", kind(&other)))),
        };
        match &self.metadata {
            MetadataFields::Rest => meta.extend(obj),
            MetadataFields::MetadataOnly => {}
            MetadataFields::Named(names) => {
                for n in names {
                    if let Some(v) = obj.remove(n) {
                        meta.insert(n.clone(), v);
                    }
                }
            }
        }
        let metadata = if meta.is_empty() { Value::Null } else { Value::Object(meta) };
        Ok(Document { id, text, metadata })
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extra_fields_become_metadata_and_a_bom_is_skipped() {
        let d =
            JsonFields::default().document("\u{feff}{\"id\": \"a\", \"text\": \"alpha\", \"metadata\": {\"x\": 1}, \"summary\": \"s\"}".as_bytes()).unwrap();
        assert_eq!(d.metadata, serde_json::json!({"x": 1, "summary": "s"}));
        let only = JsonFields { metadata: MetadataFields::MetadataOnly, ..JsonFields::default() };
        assert_eq!(only.document(br#"{"id": "a", "text": "alpha", "summary": "s"}"#).unwrap().metadata, Value::Null);
        let named = JsonFields { metadata: MetadataFields::Named(vec!["b".into(), "zz".into()]), ..JsonFields::default() };
        assert_eq!(named.document(br#"{"id": "a", "text": "t", "b": 2, "c": 3}"#).unwrap().metadata, serde_json::json!({"b": 2}));
    }

    #[test]
    fn numeric_ids_only_when_asked_and_errors_name_the_field() {
        let e = JsonFields::default().document(br#"{"id": 7, "text": "t"}"#).unwrap_err().to_string();
        assert!(e.contains("`id`") && e.contains("number 7"), "{e}");
        let d = JsonFields { numeric_ids: true, ..JsonFields::default() }.document(br#"{"id": 7, "text": "t"}"#).unwrap();
        assert_eq!(d.id, "7");
        let e = JsonFields { text: "body".into(), ..JsonFields::default() }.document(br#"{"id": "a", "text": "t"}"#).unwrap_err().to_string();
        assert!(e.contains("missing field `body`"), "{e}");
        assert!(JsonFields::default().document(b"[1, 2]").unwrap_err().to_string().contains("JSON object"));
    }
}
