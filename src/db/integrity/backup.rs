//! `duetdb backup`: a consistent copy of an open database, taken between commits.

use super::*;

impl Db {
    /// Writes a consistent copy of this database to `dest` (which must not exist) while
    /// readers keep querying: the catalog as of one commit, the vector rows it counts
    /// and the graph snapshot it names. The copy is a database of its own (its
    /// full-text index is built on its first open). Writes wait while the catalog is
    /// copied, not while the vector files are.
    ///
    /// ```
    /// let dir = tempfile::tempdir().unwrap();
    /// let db = duetdb::Db::options().embedder_spec("hash").open(dir.path().join("db")).unwrap();
    /// db.ingest([duetdb::Document::new("a", "alpha")]).unwrap();
    /// db.backup(dir.path().join("copy")).unwrap();
    /// let copy = duetdb::Db::open(dir.path().join("copy")).unwrap();
    /// assert_eq!(copy.get("a").unwrap().unwrap().text, "alpha");
    /// ```
    pub fn backup(&self, dest: impl AsRef<Path>) -> Result<()> {
        let dest = Layout::new(dest.as_ref());
        if dest.root().exists() {
            return Err(Error::invalid(format!("backup destination {} already exists", dest.root().display())));
        }
        Layout::refuse_inside_database("the backup destination", dest.root())?;
        dest.create_atomically(FORMAT_VERSION, |tmp| {
            // Under the writer lock: the catalog as of the last commit, and handles on the
            // files it names (rows below the committed counts never change; a snapshot
            // file replaced meanwhile stays readable through its open handle).
            let (copy, m, files, graph) = {
                let w = self.writer.lock().unwrap();
                if w.closed {
                    return Err(Error::Closed);
                }
                self.catalog().flush()?;
                let copy = self.catalog().export_to(&tmp.catalog())?;
                let m = w.manifest.clone();
                let mut gens: Vec<GenerationRecord> = vec![m.active_generation()];
                gens.extend(m.reindex.iter().cloned());
                gens.extend(m.kept.iter().cloned());
                let mut files = Vec::new();
                for g in gens {
                    let p = self.layout.vectors(g.generation);
                    files.push((File::open(&p).map_err(|e| Error::io(&p, e))?, g));
                }
                let graph = match &m.graph {
                    Some(s) => crate::index::snapshot_files(&self.layout.graph_dir(), &s.basename)
                        .iter()
                        .map(|p| File::open(p).ok().map(|f| (f, p.file_name().unwrap().to_owned())))
                        .collect::<Option<Vec<_>>>(),
                    None => None,
                };
                (copy, m, files, graph)
            };
            for (f, g) in &files {
                copy_prefix(f, &tmp.vectors(g.generation), VECTOR_HEADER_BYTES as u64 + g.rows * row_len(g.dim))?;
            }
            let copied_graph = match graph {
                Some(files) => files.iter().all(|(f, name)| {
                    let to = tmp.graph_dir().join(name);
                    f.metadata().is_ok_and(|md| copy_prefix(f, &to, md.len()).is_ok())
                }),
                None => false,
            };
            if !copied_graph && m.graph.is_some() {
                // The next open of the copy rebuilds the graph.
                let mut m2 = m.clone();
                m2.graph = None;
                copy.put_manifest(&m2)?;
            }
            let (state, _) = copy.commit_state()?.ok_or_else(|| Error::corrupt(tmp.catalog(), "the copied catalog has no manifest"))?;
            RecordFile::open(&tmp.record(), &state, true)?;
            copy.flush()
        })
    }
}

pub(super) fn copy_prefix(from: &File, to: &Path, len: u64) -> Result<()> {
    let out = File::create(to).map_err(|e| Error::io(to, e))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut off = 0u64;
    while off < len {
        let n = (len - off).min(buf.len() as u64) as usize;
        from.read_exact_at(&mut buf[..n], off).map_err(|e| Error::io(to, e))?;
        out.write_all_at(&buf[..n], off).map_err(|e| Error::io(to, e))?;
        off += n as u64;
    }
    out.sync_all().map_err(|e| Error::io(to, e))
}
