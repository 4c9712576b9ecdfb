//! Group commit: ingest requests that arrive while a commit is running are committed
//! together in the next one, so that many clients with small requests pay for one
//! fsync and one catalog transaction between them instead of one each. Every request
//! is answered only after the commit that holds it is durable.

use super::api::ApiError;
use duetdb::{Db, Document, IngestReport};
use std::sync::mpsc;
use std::sync::Arc;
use tokio::sync::oneshot;

/// Documents one commit takes at most (the library's batch limit is far above it).
const MAX_GROUP_DOCS: usize = 4096;

/// One request's documents, their vectors and where its answer goes.
struct Job {
    docs: Vec<Document>,
    vectors: Vec<Vec<f32>>,
    fingerprint: String,
    reply: oneshot::Sender<Result<IngestReport, ApiError>>,
}

/// Handle to the commit thread; cloning it shares the thread.
#[derive(Clone)]
pub(crate) struct Committer {
    tx: mpsc::Sender<Job>,
}

impl Committer {
    /// Starts the commit thread. It ends when every handle is dropped, after
    /// committing what is queued.
    pub(crate) fn start(db: Arc<Db>) -> (Self, std::thread::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel();
        let worker = std::thread::Builder::new().name("duetdb-commit".into()).spawn(move || run(&db, &rx)).expect("spawning the commit thread");
        (Self { tx }, worker)
    }

    /// Commits `docs` with their `vectors` (computed by the embedder `fingerprint`
    /// names); resolves once they are durable.
    pub(crate) async fn commit(&self, docs: Vec<Document>, vectors: Vec<Vec<f32>>, fingerprint: String) -> Result<IngestReport, ApiError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Job { docs, vectors, fingerprint, reply }).map_err(|_| ApiError::from(duetdb::Error::Closed))?;
        rx.await.map_err(|_| ApiError::from(duetdb::Error::Closed))?
    }
}

fn run(db: &Db, rx: &mpsc::Receiver<Job>) {
    let mut carry: Option<Job> = None;
    loop {
        let Some(first) = super::next_job(&mut carry, rx) else { return };
        let mut docs = first.docs.len();
        let mut group = vec![first];
        while let Ok(j) = rx.try_recv() {
            if docs + j.docs.len() > MAX_GROUP_DOCS || j.fingerprint != group[0].fingerprint {
                carry = Some(j);
                break;
            }
            docs += j.docs.len();
            group.push(j);
        }
        commit_group(db, group);
    }
}

/// How many of `docs` are stored exactly as given already: the engine skips those (it
/// compares text and metadata the same way), and each request is told its own count.
fn unchanged(db: &Db, docs: &[Document]) -> usize {
    docs.iter().filter(|d| db.get(&d.id).ok().flatten().is_some_and(|s| s.text == d.text && s.metadata == d.metadata)).count()
}

fn commit_group(db: &Db, group: Vec<Job>) {
    let counts: Vec<usize> = group.iter().map(|j| unchanged(db, &j.docs)).collect();
    let (docs, vectors): (Vec<Document>, Vec<Vec<f32>>) = group.iter().flat_map(|j| j.docs.iter().cloned().zip(j.vectors.iter().cloned())).unzip();
    match db.ingest_embedded(&docs, &vectors, &group[0].fingerprint) {
        Ok(_) => {
            for (j, same) in group.into_iter().zip(counts) {
                let _ = j.reply.send(Ok(IngestReport { written: j.docs.len() - same, unchanged: same }));
            }
        }
        Err(e) if group.len() == 1 => {
            let j = group.into_iter().next().expect("one job");
            let _ = j.reply.send(Err(ApiError::from(e)));
        }
        // One request's failure must not fail the others': commit them one by one.
        Err(_) => {
            for j in group {
                let r = db.ingest_embedded(&j.docs, &j.vectors, &j.fingerprint).map_err(ApiError::from);
                let _ = j.reply.send(r);
            }
        }
    }
}
