//! M's side: the forward over soft tokens and text (prefix or suffix, a cached prefix for
//! constant prompts) and the pooling of its last hidden states.

use super::*;

/// Length of the opening that all of a batch's token sequences share and that P can read
/// once for all of them: 0 for a single sequence (nothing to share), otherwise the common
/// prefix, short of each sequence's last token.
pub(super) fn shared_opening(seqs: &[Vec<u32>]) -> usize {
    let Some((first, others)) = seqs.split_first() else { return 0 };
    if others.is_empty() {
        return 0;
    }
    let shortest = seqs.iter().map(Vec::len).min().unwrap_or(0);
    let common = others.iter().map(|s| first.iter().zip(s).take_while(|(a, b)| a == b).count()).min().unwrap_or(0);
    common.min(shortest.saturating_sub(1))
}

/// Runs `f` as inference does: on rayon's threads (see `threads::on_pool`), documents in
/// the process's precision, queries too where that is AMX tiles, f32 elsewhere (see
/// `decoder/bf16.rs`).
pub(super) fn inference<R: Send>(kind: Kind, f: impl FnOnce() -> R + Send) -> R {
    crate::embed::threads::on_pool(|| match kind {
        Kind::Passage => crate::embed::decoder::bf16::for_documents(f),
        Kind::Query => crate::embed::decoder::bf16::for_queries(f),
    })
}

impl PromptEmbedder {
    /// M's cache over the constant soft prompt of a kind (one row, K positions).
    pub(super) fn prefix_kv(&self, kind: Kind) -> Result<KvCache> {
        if let Some(c) = self.prefix_cache.lock().unwrap().get(&kind) {
            return Ok(c.clone());
        }
        let m = &self.m.dec;
        let mut cache = m.new_cache(&[0]);
        m.forward(&self.constant_prompt(kind)?.unsqueeze(0)?, &[0], Some(&mut cache), Kernels::Fast)?;
        self.prefix_cache.lock().unwrap().insert(kind, cache.clone());
        Ok(cache)
    }

    /// [`PromptEmbedder::embed_batch`] for the constant prefix soft prompt, from M's
    /// cached keys and values: the same embeddings (up to float rounding), K positions
    /// fewer per text.
    pub(super) fn embed_batch_prefixed(&self, text_ids: &[Vec<u32>], kind: Kind) -> Result<Tensor> {
        let m = &self.m.dec;
        let (ids, pads) = m.pad_left(text_ids, 0)?;
        let mut cache = self.prefix_kv(kind)?.for_batch(&pads)?;
        let h = m.forward(&m.embed_ids(&ids)?, &pads, Some(&mut cache), Kernels::Fast)?;
        let total = ids.dim(1)?;
        let mut weights = vec![0f32; text_ids.len() * total];
        for (i, t) in text_ids.iter().enumerate() {
            self.pooling_weights(&mut weights[i * total..(i + 1) * total], pads[i]..pads[i] + t.len(), None)?;
        }
        self.pool(&h, weights)
    }

    /// One row's pooling weights over its positions `w`: the text occupies `text`, the
    /// soft tokens `soft` (when the row holds their states).
    pub(super) fn pooling_weights(&self, w: &mut [f32], text: std::ops::Range<usize>, soft: Option<std::ops::Range<usize>>) -> Result<()> {
        let mean = |w: &mut [f32], r: std::ops::Range<usize>| {
            let n = r.len() as f32;
            w[r].iter_mut().for_each(|x| *x = 1.0 / n);
        };
        match (self.cfg.pooling, soft) {
            (Pooling::LastToken, _) => *w.last_mut().expect("a row has positions") = 1.0,
            (Pooling::MeanText, _) => mean(w, text),
            (Pooling::MeanSoft, Some(r)) => mean(w, r),
            (Pooling::MeanSoft, None) => return Err(Error::invalid("mean over soft positions needs soft tokens in M's input")),
        }
        Ok(())
    }

    /// Weighted sum over positions (`weights` is (b, t) row-major), L2-normalised.
    pub(super) fn pool(&self, h: &Tensor, weights: Vec<f32>) -> Result<Tensor> {
        let (b, t, _) = h.dims3()?;
        let w = Tensor::from_vec(weights, (b, t, 1), &self.device)?;
        let pooled = h.broadcast_mul(&w)?.sum(1)?;
        crate::embed::normalize_rows(&pooled)
    }

    /// Embeddings of one batch, (b, d_e), L2-normalised, by one forward of M over the
    /// whole input (the reference path). `soft` holds each row's soft prompt (b, K, d_e)
    /// when K > 0.
    pub fn embed_batch(&self, text_ids: &[Vec<u32>], soft: Option<&Tensor>, path: Kernels) -> Result<Tensor> {
        self.embed_rows(text_ids, soft, path, None)
    }

    /// [`PromptEmbedder::embed_batch`]; with `inputs_of`, each row's input to a readout of
    /// that shape instead of its vector (see [`PromptEmbedder::readout_inputs`]).
    fn embed_rows(&self, text_ids: &[Vec<u32>], soft: Option<&Tensor>, path: Kernels, inputs_of: Option<&ReadoutConfig>) -> Result<Tensor> {
        let m = &self.m.dec;
        let k = self.cfg.soft_tokens;
        let b = text_ids.len();
        let lens: Vec<usize> = text_ids.iter().map(|t| t.len() + k).collect();
        let total = *lens.iter().max().unwrap_or(&0);
        let d = m.config().hidden;
        let mut rows = Vec::with_capacity(b);
        let mut pads = Vec::with_capacity(b);
        let mut weights = vec![0f32; b * total];
        for (i, ids) in text_ids.iter().enumerate() {
            let pad = total - lens[i];
            pads.push(pad);
            let text = m.embed_ids(&Tensor::new(ids.as_slice(), &self.device)?.unsqueeze(0)?)?.squeeze(0)?;
            let mut parts = Vec::with_capacity(3);
            if pad > 0 {
                parts.push(Tensor::zeros((pad, d), DType::F32, &self.device)?);
            }
            let (soft_at, text_at) = match self.cfg.placement {
                Placement::Prefix => (pad, pad + k),
                Placement::Suffix => (pad + ids.len(), pad),
            };
            match (soft, self.cfg.placement) {
                (Some(s), Placement::Prefix) => parts.extend([s.get(i)?, text]),
                (Some(s), Placement::Suffix) => parts.extend([text, s.get(i)?]),
                (None, _) => parts.push(text),
            }
            rows.push(Tensor::cat(&parts, 0)?);
            let soft_span = (k > 0).then_some(soft_at..soft_at + k);
            self.pooling_weights(&mut weights[i * total..(i + 1) * total], text_at..text_at + ids.len(), soft_span)?;
        }
        let x = Tensor::stack(&rows, 0)?;
        // Pooling that reads only the end of each row (soft tokens after the text, or
        // the last token; rows are left-padded) needs M's last block there alone.
        let first_read = (0..total).find(|&j| (0..b).any(|i| weights[i * total + j] != 0.0)).unwrap_or(0);
        let n = total - first_read;
        // A readout's inputs asked for, or the embedder's readout to apply to them.
        let readout = match (inputs_of, &self.readout) {
            (Some(rc), _) => Some((rc, None)),
            (None, Some(r)) => Some((r.config(), Some(r))),
            (None, None) => None,
        };
        if let Some((rc, apply)) = readout {
            // Soft tokens after left-padded rows: every row's are its last K positions.
            if path != Kernels::Fast || k == 0 || self.cfg.placement != Placement::Suffix || self.m_lora.is_some() {
                return Err(Error::invalid(
                    "a readout reads soft tokens after the text of a frozen M, on the inference path (`train --mode readout` trains it)",
                ));
            }
            let read = m.forward_tail_at(&x, &pads, path, None, k, &rc.blocks)?;
            return match apply {
                Some(r) => r.apply(&read),
                None => rc.inputs(&read),
            };
        }
        if path == Kernels::Fast && n < total {
            let h = m.forward_tail(&x, &pads, path, self.m_lora.as_ref(), n)?;
            let w: Vec<f32> = (0..b).flat_map(|i| weights[i * total + first_read..(i + 1) * total].iter().copied()).collect();
            return self.pool(&h, w);
        }
        let h = m.forward_adapted(&x, &pads, None, path, self.m_lora.as_ref())?;
        self.pool(&h, weights)
    }

    /// [`PromptEmbedder::embed_batch`] for soft tokens after the text: M's pass over the
    /// text runs on the fast path (no text position of a causal M depends on the soft
    /// tokens, so nothing there needs a gradient), and only the K soft positions, which
    /// attend to the text's cached keys and values, run on `path`. Same embeddings and
    /// gradients as the full forward, up to float rounding, at a fraction of the cost.
    pub fn embed_batch_suffix(&self, text_ids: &[Vec<u32>], soft: &Tensor, path: Kernels) -> Result<Tensor> {
        if self.cfg.placement != Placement::Suffix || self.m_lora.is_some() {
            return Err(Error::invalid("the cached suffix path needs soft tokens after the text and a frozen M"));
        }
        if self.readout.is_some() {
            return Err(Error::invalid("a checkpoint with a readout trains only its readout (`train --mode readout`)"));
        }
        let m = &self.m.dec;
        let (ids, pads) = m.pad_left(text_ids, 0)?;
        let mut cache = m.new_cache(&pads);
        let t0 = std::time::Instant::now();
        m.forward(&m.embed_ids(&ids)?, &pads, Some(&mut cache), Kernels::Fast)?;
        let t1 = std::time::Instant::now();
        let h = m.forward(soft, &pads, Some(&mut cache), path)?;
        tracing::debug!(text_s = (t1 - t0).as_secs_f64(), soft_s = t1.elapsed().as_secs_f64(), rows = text_ids.len(), "suffix forward");
        let k = soft.dim(1)?;
        let mut weights = vec![0f32; text_ids.len() * k];
        for w in weights.chunks_mut(k) {
            self.pooling_weights(w, 0..0, Some(0..k))?;
        }
        self.pool(&h, weights)
    }

    /// Embeds texts on either path; batches by the token budget (longest texts first,
    /// so padding stays small), returning (n, d_e) in input order.
    pub fn embed_tensor(&self, texts: &[&str], kind: Kind, path: Kernels) -> Result<Tensor> {
        self.embed_texts(texts, kind, path, self.cfg.max_text_tokens)
    }

    /// [`PromptEmbedder::embed_tensor`] with texts cut to `max_tokens` (at most the
    /// config's `max_text_tokens`); training uses shorter texts than inference.
    pub fn embed_texts(&self, texts: &[&str], kind: Kind, path: Kernels, max_tokens: usize) -> Result<Tensor> {
        self.embed_texts_with(texts, kind, path, max_tokens, None)
    }

    /// Soft prompts of both kinds, (query, passage), each (K, d_e), from one batched pass
    /// of P, for the mode that does not read the text: a training step computes them
    /// once and hands them to [`PromptEmbedder::embed_texts_with`].
    pub fn instruction_prompts(&self, path: Kernels) -> Result<(Tensor, Tensor)> {
        let s = self.soft_prompts(&[self.instruction_prompt(Kind::Query), self.instruction_prompt(Kind::Passage)], path)?;
        Ok((s.get(0)?, s.get(1)?))
    }

    /// [`PromptEmbedder::embed_texts`] with the kind's constant soft prompt given (from
    /// [`PromptEmbedder::instruction_prompts`]) instead of computed here; `None`: as
    /// `embed_texts`. Ignored when P reads the text.
    pub fn embed_texts_with(&self, texts: &[&str], kind: Kind, path: Kernels, max_tokens: usize, prompt: Option<Tensor>) -> Result<Tensor> {
        self.embed_texts_inner(texts, kind, path, max_tokens, prompt, None)
    }

    /// Each text's input to a readout of shape `rc` (see [`ReadoutConfig::inputs`]),
    /// (n, groups x d_e), in input order: what `train --mode readout` trains over. The
    /// embedder's own readout, if any, is not applied.
    pub fn readout_inputs(&self, texts: &[&str], kind: Kind, rc: &ReadoutConfig) -> Result<Tensor> {
        inference(kind, || self.embed_texts_inner(texts, kind, Kernels::Fast, self.cfg.max_text_tokens, None, Some(rc)))
    }

    fn embed_texts_inner(
        &self,
        texts: &[&str],
        kind: Kind,
        path: Kernels,
        max_tokens: usize,
        prompt: Option<Tensor>,
        inputs_of: Option<&ReadoutConfig>,
    ) -> Result<Tensor> {
        let ids: Vec<Vec<u32>> = texts.iter().map(|t| self.tokenize(t, max_tokens)).collect::<Result<_>>()?;
        let mut order: Vec<usize> = (0..ids.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(ids[i].len()));
        let k = self.cfg.soft_tokens;
        // The cached prompt has no autograd graph: the differentiable path recomputes it
        // so that gradients reach P (its adapters) and the alignment.
        let constant = match (k > 0 && !self.cfg.condition_on_text, path, prompt) {
            (false, _, _) => None,
            (true, _, Some(p)) => Some(p),
            (true, Kernels::Fast, None) => Some(self.constant_prompt(kind)?),
            (true, Kernels::Differentiable, None) => Some(self.soft_prompts(&[self.instruction_prompt(kind)], path)?.squeeze(0)?),
        };
        // A constant prefix prompt on the fast path: M's states over it are cached too.
        let prefixed = constant.is_some() && path == Kernels::Fast && self.cfg.placement == Placement::Prefix && self.cfg.pooling != Pooling::MeanSoft;
        // Soft tokens after the text of a frozen M: the text needs no gradient. (Inference
        // runs one forward over text and soft tokens instead: fewer, larger products.)
        let suffixed = k > 0 && path == Kernels::Differentiable && self.cfg.placement == Placement::Suffix && self.m_lora.is_none();
        let mut out: Vec<Option<Tensor>> = vec![None; ids.len()];
        let mut start = 0;
        while start < order.len() {
            let longest = ids[order[start]].len() + k;
            let n = (self.cfg.token_budget / longest).max(1).min(order.len() - start);
            let batch: Vec<usize> = order[start..start + n].to_vec();
            let batch_ids: Vec<Vec<u32>> = batch.iter().map(|&i| ids[i].clone()).collect();
            let e = if prefixed {
                self.embed_batch_prefixed(&batch_ids, kind)?
            } else {
                let soft = match (&constant, k) {
                    (_, 0) => None,
                    (Some(c), _) => Some(c.unsqueeze(0)?.repeat((n, 1, 1))?),
                    (None, _) => {
                        let prompts: Vec<Vec<u32>> = batch.iter().map(|&i| self.conditioned_prompt(kind, texts[i], max_tokens)).collect::<Result<_>>()?;
                        Some(self.soft_prompts_ids(&prompts, path)?)
                    }
                };
                match soft {
                    Some(s) if suffixed => self.embed_batch_suffix(&batch_ids, &s, path)?,
                    soft => self.embed_rows(&batch_ids, soft.as_ref(), path, inputs_of)?,
                }
            };
            for (j, &i) in batch.iter().enumerate() {
                out[i] = Some(e.get(j)?);
            }
            start += n;
        }
        let rows: Vec<Tensor> = out.into_iter().map(|t| t.expect("every text embedded")).collect();
        Ok(Tensor::stack(&rows, 0)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embed::decoder::max_abs_diff;

    #[test]
    fn shared_opening_keeps_each_rows_last_token() {
        assert_eq!(shared_opening(&[]), 0);
        assert_eq!(shared_opening(&[vec![1, 2, 3]]), 0, "one row has nothing to share");
        assert_eq!(shared_opening(&[vec![1, 2, 3, 4], vec![1, 2, 5]]), 2);
        assert_eq!(shared_opening(&[vec![1, 2, 3], vec![1, 2, 3]]), 2, "identical rows keep their last token");
        assert_eq!(shared_opening(&[vec![1, 2, 3], vec![1, 2, 3, 4], vec![1, 2]]), 1);
        assert_eq!(shared_opening(&[vec![7, 2], vec![1, 2]]), 0);
    }

    /// Needs SmolLM2 (`scripts/fetch-models.sh`, as for the test command).
    #[test]
    fn cached_prefix_gives_the_full_forward_embeddings() -> Result<()> {
        // The f32 kernels' agreement: the full forward has more rows than the cached one
        // and would take the bfloat16 path where the CPU has it (tests/precision.rs).
        crate::embed::set_precision(crate::embed::Precision::F32);
        let e = PromptEmbedder::builtin("untrained")?;
        let texts = ["regex search tool", "x", "GNU C compiler: the GNU compiler collection front end for C, with the usual optimisers and code generators"];
        let ids: Vec<Vec<u32>> = texts.iter().map(|t| e.text_ids(t)).collect::<Result<_>>()?;
        for kind in [Kind::Query, Kind::Passage] {
            let cached = e.embed_batch_prefixed(&ids, kind)?;
            let soft = e.constant_prompt(kind)?.unsqueeze(0)?.repeat((ids.len(), 1, 1))?;
            let full = e.embed_batch(&ids, Some(&soft), Kernels::Fast)?;
            let diff = max_abs_diff(&cached, &full)?;
            assert!(diff < 1e-5, "{kind:?}: cached prefix differs from the full forward by {diff}");
        }
        Ok(())
    }
}
