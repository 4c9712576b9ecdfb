//! Filtered queries: every kind of condition, through the graph walk and the exact path
//! for selective filters, with the metadata cache kept current by later commits.

mod common;

use duetdb::{Db, Document, Filter, Mode};
use serde_json::json;

fn docs(from: usize, to: usize) -> Vec<Document> {
    (from..to)
        .map(|i| {
            Document::new(format!("d{i}"), format!("document {i} about topic {} and words {}", i % 37, i % 11)).with_metadata(json!({"n": i, "mod": i % 100}))
        })
        .collect()
}

fn ids(db: &Db, f: Filter, k: usize) -> Vec<String> {
    let mut v: Vec<String> = db.query("document about topic").mode(Mode::Vector).limit(k).matching(f).run().unwrap().into_iter().map(|h| h.id).collect();
    v.sort();
    v
}

#[test]
fn filters_see_every_commit_after_the_cache_is_built() {
    let (_dir, path) = common::temp_db();
    let db = Db::options().embedder_spec("hash:64").open(&path).unwrap();
    db.ingest(docs(0, 3000)).unwrap();
    // Selective (30 rows match: the exact path) and broad (the graph walk).
    assert_eq!(ids(&db, Filter::eq("mod", 7), 100).len(), 30);
    let broad = db.query("document about topic").mode(Mode::Vector).limit(50).matching(Filter::lt("mod", 50)).run().unwrap();
    assert_eq!(broad.len(), 50);
    assert!(broad.iter().all(|h| h.metadata["mod"].as_u64().unwrap() < 50));

    // After the cache exists: new rows, a changed metadata and a delete.
    db.ingest(docs(3000, 3100)).unwrap();
    db.ingest([Document::new("d7", "document 7 about topic 7 and words 7").with_metadata(json!({"n": 7, "mod": 1000}))]).unwrap();
    db.delete(&["d107"]).unwrap();
    let seven = ids(&db, Filter::eq("mod", 7), 100);
    assert_eq!(seven.len(), 29, "d7 moved away, d107 deleted, d3007 added: {seven:?}");
    assert!(seven.contains(&"d3007".to_string()) && !seven.contains(&"d7".to_string()) && !seven.contains(&"d107".to_string()));
    assert_eq!(ids(&db, Filter::ge("mod", 1000), 10), ["d7"]);
    assert_eq!(ids(&db, Filter::parse("n >= 3098 or (mod = 1000 and exists(n))").unwrap(), 10), ["d3098", "d3099", "d7"]);
    assert!(ids(&db, Filter::exists("nothing"), 10).is_empty());
    // Reopened: the cache is built again from the catalog.
    db.close().unwrap();
    let db = Db::options().create_if_missing(false).open(&path).unwrap();
    assert_eq!(ids(&db, Filter::is_in("mod", [7, 1000]), 100).len(), 30);
}
