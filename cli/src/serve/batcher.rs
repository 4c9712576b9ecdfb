//! The shared embedding queue: requests from every client wait here and are embedded
//! together, so that many small requests make the large batches an embedder is fast
//! on (text-embeddings-inference's queue, with a byte budget standing in for its token
//! budget). One thread embeds; handlers await their share of the result.

use duetdb::{Db, Embedder, Error, Kind, Result};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// The longest a batch waits for more requests after its first.
const MAX_WINDOW: Duration = Duration::from_millis(5);

/// One request's texts and where its vectors go.
struct Job {
    texts: Vec<String>,
    kind: Kind,
    reply: oneshot::Sender<Result<Embedded>>,
}

/// Vectors of one request, and the embedder that computed them.
pub(crate) struct Embedded {
    pub(crate) vectors: Vec<Vec<f32>>,
    /// The fingerprint of the embedder, for committing passages with
    /// [`Db::ingest_embedded`] (which refuses vectors of another).
    pub(crate) fingerprint: String,
}

/// How much one batch may hold.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Budget {
    pub(crate) texts: usize,
    pub(crate) bytes: usize,
}

/// Handle to the queue; cloning it shares the queue.
#[derive(Clone)]
pub(crate) struct Batcher {
    tx: mpsc::Sender<Job>,
}

impl Batcher {
    /// Starts the embedding thread. It ends when every handle is dropped, after
    /// answering what is queued.
    pub(crate) fn start(db: Arc<Db>, budget: Budget) -> (Self, std::thread::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel();
        let worker = std::thread::Builder::new().name("duetdb-embed".into()).spawn(move || run(&db, &rx, budget)).expect("spawning the embedding thread");
        (Self { tx }, worker)
    }

    /// Embeds `texts` in the next shared batch.
    pub(crate) async fn embed(&self, texts: Vec<String>, kind: Kind) -> Result<Embedded> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Job { texts, kind, reply }).map_err(|_| Error::Closed)?;
        rx.await.map_err(|_| Error::embed("the embedding thread stopped"))?
    }
}

fn run(db: &Db, rx: &mpsc::Receiver<Job>, budget: Budget) {
    // A job that did not fit the last batch starts the next one.
    let mut carry: Option<Job> = None;
    let mut window = Duration::ZERO;
    loop {
        let Some(first) = super::next_job(&mut carry, rx) else { return };
        let (mut texts, mut bytes) = (first.texts.len(), size(&first));
        let mut jobs = vec![first];
        // Take what is waiting or arrives within a short window, up to the budget. The
        // window is a hundredth of the last batch's time (at most 5 ms): clients that
        // send together are embedded together (a lone first request would otherwise
        // make a batch of its own and stagger the rest), and a fast embedder, whose
        // batches take microseconds, adds no latency.
        let deadline = Instant::now() + window;
        while let Ok(j) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            if texts + j.texts.len() > budget.texts || bytes + size(&j) > budget.bytes {
                carry = Some(j);
                break;
            }
            texts += j.texts.len();
            bytes += size(&j);
            jobs.push(j);
        }
        let started = Instant::now();
        let (queries, passages): (Vec<Job>, Vec<Job>) = jobs.into_iter().partition(|j| j.kind == Kind::Query);
        for (group, kind) in [(queries, Kind::Query), (passages, Kind::Passage)] {
            if !group.is_empty() {
                embed_group(db, group, kind);
            }
        }
        window = (started.elapsed() / 100).min(MAX_WINDOW);
    }
}

fn size(j: &Job) -> usize {
    j.texts.iter().map(String::len).sum()
}

/// Embeds the texts of every job of one kind in one call and hands each job its slice.
fn embed_group(db: &Db, group: Vec<Job>, kind: Kind) {
    let embedder: Result<Arc<dyn Embedder>> = db.embedder();
    let result = embedder.and_then(|e| {
        let texts: Vec<&str> = group.iter().flat_map(|j| j.texts.iter().map(String::as_str)).collect();
        let vectors = e.embed(&texts, kind)?;
        if vectors.len() != texts.len() {
            return Err(Error::embed(format!("embedder returned {} vectors for {} texts", vectors.len(), texts.len())));
        }
        Ok((vectors, e.fingerprint()))
    });
    match result {
        Ok((vectors, fingerprint)) => {
            let mut rest = vectors.into_iter();
            for j in group {
                let mine: Vec<Vec<f32>> = rest.by_ref().take(j.texts.len()).collect();
                // A client that went away dropped its receiver: nothing to do.
                let _ = j.reply.send(Ok(Embedded { vectors: mine, fingerprint: fingerprint.clone() }));
            }
        }
        Err(e) => {
            let msg = e.to_string();
            for j in group {
                let _ = j.reply.send(Err(Error::embed(msg.clone())));
            }
        }
    }
}
