//! Training data: (query, document) pairs from JSON Lines, hard negatives mined with the
//! lexical `hash` embedder, and a deterministic batch order that a resumed run replays.

use crate::embed::{Embedder, HashEmbedder, HashEmbedderConfig, Kind};
use crate::error::Result;
use rand::{rngs::StdRng, seq::SliceRandom, Rng, SeedableRng};

pub use crate::eval::{read_pairs, Fields, Pair};

/// Hard negatives from the lexical `hash` embedder: for a pair, the documents of other
/// groups of its own source that rank highest for its query (never its own document, nor
/// one with the same text). The documents are embedded once; each query is scored when its batch comes,
/// by exact search, so the result depends on the data alone and costs nothing up front.
pub struct NegativeMiner {
    docs: Vec<f32>,
    dim: usize,
    k: usize,
    hash: HashEmbedder,
}

impl NegativeMiner {
    /// A miner over the documents of `pairs` that keeps `k` candidates per query.
    pub fn new(pairs: &[Pair], k: usize) -> Result<Self> {
        let hash = HashEmbedder::new(HashEmbedderConfig::default())?;
        let dim = hash.dim();
        let mut docs = Vec::with_capacity(pairs.len() * dim);
        for chunk in pairs.chunks(4096) {
            let texts: Vec<&str> = chunk.iter().map(|p| p.doc.as_str()).collect();
            docs.extend(hash.embed(&texts, Kind::Passage)?.into_iter().flatten());
        }
        Ok(Self { docs, dim, k, hash })
    }

    /// Up to `k` hard-negative candidates for pair `i`, best first.
    pub fn candidates(&self, pairs: &[Pair], i: usize) -> Vec<u32> {
        use rayon::prelude::*;
        let me = &pairs[i];
        let q = self.hash.embed_one(&me.query);
        let scores: Vec<f32> = self.docs.par_chunks(self.dim).map(|d| d.iter().zip(&q).map(|(a, b)| a * b).sum()).collect();
        best_candidates(&scores, self.k, |j| {
            let o = &pairs[j as usize];
            o.group != me.group && o.doc != me.doc && o.domain == me.domain
        })
    }
}

/// The indices of the `k` best `scores` that `keep` accepts, best first (ties by index).
/// Hard-negative miners filter a short list: enough candidates to survive `keep` are
/// selected first, then put in exact order.
pub(crate) fn best_candidates(scores: &[f32], k: usize, keep: impl Fn(u32) -> bool) -> Vec<u32> {
    let mut idx: Vec<u32> = (0..scores.len() as u32).collect();
    let take = 4 * k + 16;
    let by_score = |a: &u32, b: &u32| scores[*b as usize].total_cmp(&scores[*a as usize]).then(a.cmp(b));
    if take < idx.len() {
        idx.select_nth_unstable_by(take, by_score);
        idx.truncate(take);
    }
    idx.sort_by(by_score);
    // Iterated by reference: `into_iter().collect()` would reuse `idx`'s allocation (one
    // slot per document), and a run's candidates for 57,832 Debian queries then held
    // 13 GB until the kernel killed it.
    idx.iter().copied().filter(|&j| keep(j)).take(k).collect()
}

/// One micro-batch: pair indices and, for each, the index of its hard negative's pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// Indices into the pairs.
    pub pairs: Vec<usize>,
    /// The pair whose document is each query's hard negative (`None` if it has none).
    pub negatives: Vec<Option<usize>>,
}

/// The deterministic order of examples: epoch `e` visits the pairs in a permutation
/// seeded by `(seed, e)`, and micro-batch `i` takes examples `i * size ..` of that
/// endless sequence. With sources ([`Schedule::by_domain`]), micro-batch `i` first draws
/// its source (seeded by `(seed, i)`), then takes the next `size` examples of that
/// source's own endless sequence. A resumed run only needs the micro-batch counter.
#[derive(Debug, Clone)]
pub struct Schedule {
    n: usize,
    size: usize,
    seed: u64,
    /// Pair indices of each source, and each source's share of the micro-batches.
    domains: Option<(Vec<Vec<usize>>, Vec<f64>)>,
}

impl Schedule {
    /// An order over `n` pairs in micro-batches of `size`.
    pub fn new(n: usize, size: usize, seed: u64) -> Self {
        Self { n, size, seed, domains: None }
    }

    /// An order in which each micro-batch comes from one source (`domain` of each pair),
    /// a source's share of batches proportional to the square root of its size: small
    /// sources are seen more often than their size alone would give, without the largest
    /// one being drowned.
    pub fn by_domain(domain: &[&str], size: usize, seed: u64) -> Self {
        let mut names: Vec<&str> = domain.to_vec();
        names.sort_unstable();
        names.dedup();
        let members: Vec<Vec<usize>> = names.iter().map(|n| (0..domain.len()).filter(|&i| domain[i] == *n).collect()).collect();
        let total: f64 = members.iter().map(|m| (m.len() as f64).sqrt()).sum();
        let share = members.iter().map(|m| (m.len() as f64).sqrt() / total).collect();
        Self { n: domain.len(), size, seed, domains: Some((members, share)) }
    }

    fn permutation(&self, n: usize, salt: u64, epoch: u64) -> Vec<usize> {
        let mut p: Vec<usize> = (0..n).collect();
        p.shuffle(&mut StdRng::seed_from_u64(self.seed ^ salt ^ epoch.wrapping_mul(0x9e37_79b9_7f4a_7c15)));
        p
    }

    /// Positions `start .. start + size` of an endless sequence of epochs over `n` items.
    fn take(&self, n: usize, salt: u64, start: usize) -> Vec<usize> {
        let mut perm: Option<(u64, Vec<usize>)> = None;
        (start..start + self.size)
            .map(|j| {
                let epoch = (j / n) as u64;
                if perm.as_ref().is_none_or(|(e, _)| *e != epoch) {
                    perm = Some((epoch, self.permutation(n, salt, epoch)));
                }
                perm.as_ref().expect("set above").1[j % n]
            })
            .collect()
    }

    /// The source micro-batch `i` is drawn from.
    fn domain_of(&self, share: &[f64], i: u64) -> usize {
        let x: f64 = StdRng::seed_from_u64(self.seed ^ 0xd0_0a11 ^ i.wrapping_mul(0x2545_f491_4f6c_dd1d)).random();
        let mut acc = 0.0;
        share
            .iter()
            .position(|s| {
                acc += s;
                x < acc
            })
            .unwrap_or(share.len() - 1)
    }

    /// Micro-batch number `i`, with one hard negative per query drawn from its
    /// candidates (`negatives(pair)`) by a generator seeded from `(seed, i)`.
    pub fn batch(&self, i: u64, negatives: &dyn Fn(usize) -> Vec<u32>) -> Batch {
        let pairs = match &self.domains {
            None => self.take(self.n, 0, i as usize * self.size),
            Some((members, share)) => {
                let d = self.domain_of(share, i);
                // The batches of this source before this one: where its sequence stands.
                let before = (0..i).filter(|&j| self.domain_of(share, j) == d).count();
                let salt = (d as u64).wrapping_mul(0x5851_f42d_4c95_7f2d);
                self.take(members[d].len(), salt, before * self.size).into_iter().map(|k| members[d][k]).collect()
            }
        };
        let mut rng = StdRng::seed_from_u64(self.seed.wrapping_add(1).wrapping_mul(0x2545_f491_4f6c_dd1d) ^ i);
        let negatives = pairs
            .iter()
            .map(|&p| {
                let c = negatives(p);
                (!c.is_empty()).then(|| c[rng.random_range(0..c.len())] as usize)
            })
            .collect();
        Batch { pairs, negatives }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(q: &str, d: &str, g: &str) -> Pair {
        Pair { query: q.into(), doc: d.into(), group: g.into(), domain: String::new() }
    }

    #[test]
    fn candidates_are_the_best_kept_ones_and_hold_no_slot_per_document() {
        let scores: Vec<f32> = (0..100_000).map(|i| ((i * 7919) % 100_000) as f32).collect();
        let best = best_candidates(&scores, 3, |j| j % 2 == 0);
        let expect: Vec<u32> = {
            let mut all: Vec<u32> = (0..100_000).filter(|j| j % 2 == 0).collect();
            all.sort_by(|a, b| scores[*b as usize].total_cmp(&scores[*a as usize]));
            all[..3].to_vec()
        };
        assert_eq!(best, expect);
        // A miner keeps one such list per training query: 57,832 of them once held 13 GB.
        assert!(best.capacity() < 64, "capacity {}", best.capacity());
    }

    #[test]
    fn hard_negatives_skip_the_positive_and_its_group() -> Result<()> {
        let pairs = vec![
            pair("regex search tool", "ripgrep searches files for a regex", "ripgrep"),
            pair("regex search tool data", "ripgrep regex search data files", "ripgrep"),
            pair("grep for regex", "GNU grep searches files for a regex pattern", "grep"),
            pair("music player", "a console music player for mp3 files", "moc"),
        ];
        let miner = NegativeMiner::new(&pairs, 2)?;
        let negs: Vec<Vec<u32>> = (0..pairs.len()).map(|i| miner.candidates(&pairs, i)).collect();
        assert_eq!(negs[0][0], 2, "grep is ripgrep's closest other-group document");
        for (i, n) in negs.iter().enumerate() {
            for &j in n {
                assert_ne!(pairs[j as usize].group, pairs[i].group);
            }
        }
        Ok(())
    }

    #[test]
    fn schedule_is_a_function_of_the_batch_number() {
        let s = Schedule::new(10, 4, 7);
        let negs = |i: usize| vec![(i as u32 + 1) % 10, (i as u32 + 2) % 10];
        let all: Vec<Batch> = (0..5).map(|i| s.batch(i, &negs)).collect();
        assert_eq!(Schedule::new(10, 4, 7).batch(3, &negs), all[3], "same batch when asked again");
        // The first epoch (10 examples) visits every pair once.
        let mut first: Vec<usize> = all.iter().flat_map(|b| b.pairs.clone()).take(10).collect();
        first.sort();
        assert_eq!(first, (0..10).collect::<Vec<_>>());
        assert_ne!(Schedule::new(10, 4, 8).batch(0, &negs), all[0], "another seed, another order");
    }

    #[test]
    fn a_batch_by_domain_comes_from_one_source_and_small_sources_are_not_drowned() {
        // 900 pairs of "big", 100 of "small": shares sqrt(900) : sqrt(100) = 3 : 1.
        let domain: Vec<&str> = (0..1000).map(|i| if i % 10 == 0 { "small" } else { "big" }).collect();
        let s = Schedule::by_domain(&domain, 8, 3);
        let none = |_: usize| Vec::new();
        let batches: Vec<Batch> = (0..400).map(|i| s.batch(i, &none)).collect();
        let mut small_batches = 0;
        let mut small_seen = Vec::new();
        for b in &batches {
            let d = domain[b.pairs[0]];
            assert!(b.pairs.iter().all(|&p| domain[p] == d), "a batch mixes sources");
            if d == "small" {
                small_batches += 1;
                small_seen.extend(b.pairs.iter().copied());
            }
        }
        assert!((70..130).contains(&small_batches), "{small_batches} of 400 batches from the small source, expected about 100");
        // The small source's first epoch visits each of its pairs once.
        let mut first: Vec<usize> = small_seen[..100].to_vec();
        first.sort();
        assert_eq!(first, (0..100).map(|i| i * 10).collect::<Vec<_>>());
        assert_eq!(Schedule::by_domain(&domain, 8, 3).batch(123, &none), batches[123], "a function of the batch number");
        // One source is the plain schedule's order too.
        let one = vec!["x"; 10];
        assert_eq!(Schedule::by_domain(&one, 4, 7).batch(2, &none).pairs, Schedule::new(10, 4, 7).batch(2, &none).pairs);
    }
}
