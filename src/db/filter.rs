//! Metadata filters: equality, ranges, `in`, `exists`, combined with `and`, `or` and
//! `not`; built in Rust ([`Filter::gt`] and friends) or parsed from the CLI's `--where`
//! grammar ([`Filter::parse`], in `filter_parse.rs`). A query applies them while it walks the graph, and falls
//! back to an exact scan when the walk finds too few matches.

use crate::error::Error;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::cmp::Ordering;

/// A condition on a document's metadata (a JSON object).
///
/// A key is a field name; `a.b` reaches into nested objects. Comparisons (`lt`, `le`,
/// `gt`, `ge`) hold between two numbers or two strings and never across types. `eq`
/// and `is_in` compare numbers by value (`3` equals `3.0`), anything else as JSON, and
/// hold for an array field when one of its elements matches (`tags = "net"` finds
/// `{"tags": ["net", "cli"]}`). Every condition but [`Filter::not`] and [`Filter::exists`]
/// is false when the key is absent; `ne` too (as SQL's `<>` with a null).
///
/// ```
/// use duetdb::db::Filter;
/// use serde_json::json;
/// let f = Filter::ge("year", 2020).and(Filter::is_in("section", ["net", "utils"])).and(Filter::exists("homepage").not());
/// assert!(f.matches(&json!({"year": 2021, "section": "net"})));
/// assert!(!f.matches(&json!({"year": 2019, "section": "net"})));
/// assert_eq!(Filter::parse("year >= 2020 and section in (net, utils) and not exists(homepage)").unwrap(), f);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Filter {
    /// `key = value`.
    Eq(String, Value),
    /// `key != value` (false when the key is absent).
    Ne(String, Value),
    /// `key < value`.
    Lt(String, Value),
    /// `key <= value`.
    Le(String, Value),
    /// `key > value`.
    Gt(String, Value),
    /// `key >= value`.
    Ge(String, Value),
    /// `key in (v1, v2, ...)`.
    In(String, Vec<Value>),
    /// The key is present (with any value, null included).
    Exists(String),
    /// Every condition holds (true when empty).
    And(Vec<Filter>),
    /// At least one condition holds (false when empty).
    Or(Vec<Filter>),
    /// The condition does not hold.
    Not(Box<Filter>),
}

impl Filter {
    /// `key = value`.
    pub fn eq(key: impl Into<String>, value: impl Into<Value>) -> Self {
        Filter::Eq(key.into(), value.into())
    }
    /// `key != value`.
    pub fn ne(key: impl Into<String>, value: impl Into<Value>) -> Self {
        Filter::Ne(key.into(), value.into())
    }
    /// `key < value`.
    pub fn lt(key: impl Into<String>, value: impl Into<Value>) -> Self {
        Filter::Lt(key.into(), value.into())
    }
    /// `key <= value`.
    pub fn le(key: impl Into<String>, value: impl Into<Value>) -> Self {
        Filter::Le(key.into(), value.into())
    }
    /// `key > value`.
    pub fn gt(key: impl Into<String>, value: impl Into<Value>) -> Self {
        Filter::Gt(key.into(), value.into())
    }
    /// `key >= value`.
    pub fn ge(key: impl Into<String>, value: impl Into<Value>) -> Self {
        Filter::Ge(key.into(), value.into())
    }
    /// `lo <= key < hi`.
    pub fn range(key: impl Into<String>, lo: impl Into<Value>, hi: impl Into<Value>) -> Self {
        let key = key.into();
        Filter::And(vec![Filter::Ge(key.clone(), lo.into()), Filter::Lt(key, hi.into())])
    }
    /// `key in (values...)`.
    pub fn is_in<V: Into<Value>>(key: impl Into<String>, values: impl IntoIterator<Item = V>) -> Self {
        Filter::In(key.into(), values.into_iter().map(Into::into).collect())
    }
    /// The key is present.
    pub fn exists(key: impl Into<String>) -> Self {
        Filter::Exists(key.into())
    }
    /// Both this and `other`.
    pub fn and(self, other: Filter) -> Self {
        match self {
            Filter::And(mut v) => {
                v.push(other);
                Filter::And(v)
            }
            f => Filter::And(vec![f, other]),
        }
    }
    /// This or `other`.
    pub fn or(self, other: Filter) -> Self {
        match self {
            Filter::Or(mut v) => {
                v.push(other);
                Filter::Or(v)
            }
            f => Filter::Or(vec![f, other]),
        }
    }
    /// Not this.
    #[allow(clippy::should_implement_trait)]
    pub fn not(self) -> Self {
        Filter::Not(Box::new(self))
    }

    /// Whether `metadata` (a document's JSON object, or null) satisfies the condition.
    pub fn matches(&self, metadata: &Value) -> bool {
        let field = |k: &str| k.split('.').try_fold(metadata, |v, part| v.get(part));
        let any = |k: &str, test: &dyn Fn(&Value) -> bool| match field(k) {
            Some(Value::Array(items)) => items.iter().any(test),
            Some(v) => test(v),
            None => false,
        };
        let cmp = |k: &str, want: &Value, ok: fn(Ordering) -> bool| field(k).and_then(|v| order(v, want)).is_some_and(ok);
        match self {
            Filter::Eq(k, v) => any(k, &|x| same(x, v)),
            Filter::Ne(k, v) => field(k).is_some_and(|x| !same(x, v)),
            Filter::Lt(k, v) => cmp(k, v, Ordering::is_lt),
            Filter::Le(k, v) => cmp(k, v, Ordering::is_le),
            Filter::Gt(k, v) => cmp(k, v, Ordering::is_gt),
            Filter::Ge(k, v) => cmp(k, v, Ordering::is_ge),
            Filter::In(k, vs) => any(k, &|x| vs.iter().any(|v| same(x, v))),
            Filter::Exists(k) => field(k).is_some(),
            Filter::And(fs) => fs.iter().all(|f| f.matches(metadata)),
            Filter::Or(fs) => fs.iter().any(|f| f.matches(metadata)),
            Filter::Not(f) => !f.matches(metadata),
        }
    }
}

/// Numbers by value, the rest as JSON.
fn same(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

/// Numbers with numbers, strings with strings; nothing across types.
fn order(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64()?.partial_cmp(&y.as_f64()?),
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

/// A filter error: where, and what.
pub(super) fn error_at(text: &str, pos: usize, what: impl std::fmt::Display) -> Error {
    let col = text.char_indices().take_while(|(i, _)| *i < pos).count() + 1;
    Error::invalid(format!("invalid filter at position {col} of `{text}`: {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn conditions_on_numbers_strings_arrays_and_absent_keys() {
        let m = json!({"year": 2021, "name": "ripgrep", "tags": ["cli", "search"], "size": 3.0, "meta": {"lang": "rust"}});
        assert!(Filter::eq("size", 3).matches(&m));
        assert!(Filter::eq("tags", "cli").matches(&m));
        assert!(Filter::eq("meta.lang", "rust").matches(&m));
        assert!(Filter::gt("name", "r").matches(&m) && !Filter::gt("name", 5).matches(&m));
        assert!(Filter::range("year", 2020, 2022).matches(&m) && !Filter::range("year", 2022, 2030).matches(&m));
        assert!(!Filter::ne("missing", 1).matches(&m) && Filter::eq("missing", 1).not().matches(&m));
        assert!(Filter::is_in("tags", ["x", "search"]).matches(&m));
        assert!(Filter::exists("meta.lang").matches(&m) && !Filter::exists("meta.os").matches(&m));
        assert!(Filter::Or(vec![]).not().matches(&m) && Filter::And(vec![]).matches(&m));
        assert!(!Filter::eq("year", 2021).matches(&Value::Null));
    }
}
