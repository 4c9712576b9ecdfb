//! A lexical baseline embedder: signed feature hashing of word and character n-grams.

use super::{normalize, Embedder, Kind};
use crate::error::{Error, Result};

/// Parameters of [`HashEmbedder`]; every field is part of the fingerprint.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct HashEmbedderConfig {
    /// Output dimension.
    pub dim: usize,
    /// Longest word n-gram (1 = words only, 2 = words and word pairs).
    pub word_ngrams: usize,
    /// Character n-gram lengths, inclusive range, taken inside `<word>` boundaries.
    pub char_ngrams: (usize, usize),
    /// Weight of a character n-gram relative to a word feature.
    pub char_weight: f32,
}

impl Default for HashEmbedderConfig {
    fn default() -> Self {
        Self { dim: 384, word_ngrams: 2, char_ngrams: (3, 5), char_weight: 0.5 }
    }
}

/// Feature hashing of lower-cased words, word pairs and character n-grams into a fixed
/// number of buckets, with a hash-derived sign (which keeps collisions unbiased), a
/// sublinear term weight and L2 normalisation.
///
/// It needs no model, is fully deterministic across platforms (FNV-1a over UTF-8
/// bytes) and is what the engine's tests use; it is also the lexical baseline in the
/// evaluation tables.
///
/// ```
/// use duetdb::embed::{Embedder, HashEmbedder, Kind};
/// let e = HashEmbedder::default();
/// let v = e.embed(&["search files for a regex"], Kind::Query).unwrap();
/// assert_eq!(v[0].len(), e.dim());
/// ```
#[derive(Debug, Clone, Default)]
pub struct HashEmbedder {
    cfg: HashEmbedderConfig,
}

impl HashEmbedder {
    /// Creates an embedder; rejects a zero dimension or an empty n-gram range.
    pub fn new(cfg: HashEmbedderConfig) -> Result<Self> {
        crate::limits::check("the hash embedder's dimension", cfg.dim, 1, crate::limits::MAX_DIM)?;
        // Longer n-grams only add hashing work: no text feature is usefully longer.
        crate::limits::check("the hash embedder's word n-gram length", cfg.word_ngrams, 1, 8)?;
        crate::limits::check("the hash embedder's longest character n-gram", cfg.char_ngrams.1, 1, 16)?;
        if cfg.char_ngrams.0 == 0 || cfg.char_ngrams.0 > cfg.char_ngrams.1 {
            return Err(Error::invalid(format!("hash embedder config out of range: {cfg:?}")));
        }
        Ok(Self { cfg })
    }

    /// Embeds one text.
    pub fn embed_one(&self, text: &str) -> Vec<f32> {
        let mut v = vec![0f32; self.cfg.dim];
        let lower = text.to_lowercase();
        let words: Vec<&str> = lower.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).collect();
        let mut add = |bytes: &[&[u8]], tag: u8, w: f32| {
            let h = fnv1a(tag, bytes);
            let bucket = (h % self.cfg.dim as u64) as usize;
            let sign = if (h >> 63) == 0 { 1.0 } else { -1.0 };
            v[bucket] += sign * w;
        };
        for n in 1..=self.cfg.word_ngrams {
            for win in words.windows(n) {
                let parts: Vec<&[u8]> = win.iter().map(|w| w.as_bytes()).collect();
                add(&parts, n as u8, 1.0);
            }
        }
        let (lo, hi) = self.cfg.char_ngrams;
        for w in &words {
            let chars: Vec<char> = std::iter::once('<').chain(w.chars()).chain(std::iter::once('>')).collect();
            let mut buf = String::new();
            for n in lo..=hi {
                for win in chars.windows(n) {
                    buf.clear();
                    buf.extend(win);
                    add(&[buf.as_bytes()], 100 + n as u8, self.cfg.char_weight);
                }
            }
        }
        // Sublinear term frequency: repeated words should not dominate the direction.
        v.iter_mut().for_each(|x| *x = x.signum() * x.abs().ln_1p());
        normalize(&mut v);
        v
    }
}

/// FNV-1a, 64 bit, over a tag byte and the parts separated by a unit separator.
/// Chosen because it is stable forever: the fingerprint promises identical vectors.
fn fnv1a(tag: u8, parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |b: u8| {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    };
    eat(tag);
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            eat(0x1f);
        }
        p.iter().for_each(|&b| eat(b));
    }
    // FNV's high bits mix poorly; a final avalanche (from splitmix64) fixes bucket and sign.
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

impl Embedder for HashEmbedder {
    fn embed(&self, texts: &[&str], _kind: Kind) -> Result<Vec<Vec<f32>>> {
        use rayon::prelude::*;
        Ok(texts.par_iter().map(|t| self.embed_one(t)).collect())
    }

    fn dim(&self) -> usize {
        self.cfg.dim
    }

    fn fingerprint(&self) -> String {
        let c = &self.cfg;
        format!("hash-v1:d{}:w{}:c{}-{}:cw{}", c.dim, c.word_ngrams, c.char_ngrams.0, c.char_ngrams.1, c.char_weight)
    }

    fn spec(&self) -> Option<String> {
        if self.cfg == HashEmbedderConfig::default() {
            Some("hash".into())
        } else if self.cfg == (HashEmbedderConfig { dim: self.cfg.dim, ..Default::default() }) {
            Some(format!("hash:{}", self.cfg.dim))
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dot(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    #[test]
    fn normalised_deterministic_and_lexical() {
        let e = HashEmbedder::default();
        let v = e.embed(&["recursive regex search in files", "recursive regex search in files", "a music player for GNOME"], Kind::Passage).unwrap();
        let n: f32 = v[0].iter().map(|x| x * x).sum();
        assert!((n - 1.0).abs() < 1e-5);
        assert_eq!(v[0], v[1]);
        let q = e.embed_one("search files with a regex");
        assert!(dot(&q, &v[0]) > dot(&q, &v[2]) + 0.2, "lexical overlap must score higher");
    }

    #[test]
    fn fingerprint_tracks_config_and_spec_roundtrips() {
        let a = HashEmbedder::default();
        let b = HashEmbedder::new(HashEmbedderConfig { dim: 128, ..Default::default() }).unwrap();
        assert_ne!(a.fingerprint(), b.fingerprint());
        let b2 = crate::embed::from_spec(&b.spec().unwrap()).unwrap();
        assert_eq!(b2.fingerprint(), b.fingerprint());
        assert!(HashEmbedder::new(HashEmbedderConfig { dim: 0, ..Default::default() }).is_err());
    }

    #[test]
    fn empty_text_is_zero_vector_not_nan() {
        let v = HashEmbedder::default().embed_one("   ");
        assert!(v.iter().all(|x| *x == 0.0));
    }
}
