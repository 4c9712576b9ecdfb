//! P's side: the instruction prompts and the K soft tokens written by relaxed decoding,
//! cached per kind when they read only the instruction.

use super::*;

impl PromptEmbedder {
    pub(super) fn instruction(&self, kind: Kind) -> &str {
        match kind {
            Kind::Query => &self.cfg.query_instruction,
            Kind::Passage => &self.cfg.passage_instruction,
        }
    }

    #[cfg(test)]
    pub(super) fn text_ids(&self, text: &str) -> Result<Vec<u32>> {
        self.tokenize(text, self.cfg.max_text_tokens)
    }

    /// Relaxed decoding: K soft tokens for each prompt, mapped into M's input space,
    /// (b, K, d_e). Differentiable on [`Kernels::Differentiable`].
    pub fn soft_prompts(&self, prompts: &[String], path: Kernels) -> Result<Tensor> {
        let tok = &self.prompting()?.model.tok;
        let seqs: Vec<Vec<u32>> = prompts.iter().map(|s| tok.encode(s)).collect::<Result<_>>()?;
        self.soft_prompts_ids(&seqs, path)
    }

    /// P's prompt for a text: the instruction, then the text cut to `max_text_tokens`.
    pub(super) fn conditioned_prompt(&self, kind: Kind, text: &str, max_tokens: usize) -> Result<Vec<u32>> {
        let head = format!("Instruct: {}\nQuery: ", self.instruction(kind));
        let tok = &self.prompting()?.model.tok;
        let keep = tok.encode(&head)?.len() + max_tokens.min(self.cfg.max_text_tokens);
        let mut ids = tok.encode(&format!("{head}{text}"))?;
        ids.truncate(keep);
        Ok(ids)
    }

    /// The soft prompt of each text (b, K, d_e), in M's input space: what P writes for
    /// it when the checkpoint reads the text (the text cut to `max_tokens`), the
    /// instruction's one prompt otherwise, repeated. For looking at what P contributes
    /// (`benches/prompt_control.rs` embeds texts with other texts' prompts).
    pub fn text_soft_prompts(&self, texts: &[&str], kind: Kind, max_tokens: usize, path: Kernels) -> Result<Tensor> {
        if !self.cfg.condition_on_text {
            // One prompt for every text: inference's cached one on the fast path.
            let one = match path {
                Kernels::Fast => self.constant_prompt(kind)?.unsqueeze(0)?,
                Kernels::Differentiable => self.soft_prompts(&[self.instruction_prompt(kind)], path)?,
            };
            return Ok(one.repeat((texts.len(), 1, 1))?);
        }
        let seqs: Vec<Vec<u32>> = texts.iter().map(|t| self.conditioned_prompt(kind, t, max_tokens)).collect::<Result<_>>()?;
        self.soft_prompts_ids(&seqs, path)
    }

    /// [`PromptEmbedder::soft_prompts`] from token ids of P.
    ///
    /// P runs in f32 whatever the precision: its relaxed decoding amplifies rounding,
    /// and the shipped prompts it must reproduce were computed in f32.
    pub fn soft_prompts_ids(&self, seqs: &[Vec<u32>], path: Kernels) -> Result<Tensor> {
        crate::embed::decoder::bf16::in_f32(|| self.soft_prompts_ids_f32(seqs, path))
    }

    fn soft_prompts_ids_f32(&self, seqs: &[Vec<u32>], path: Kernels) -> Result<Tensor> {
        let align_path = path;
        let path = if self.prompting_frozen { Kernels::Fast } else { path };
        let pr = self.prompting()?;
        let p = &pr.model;
        let lora = pr.lora.as_ref();
        // Every text's prompt opens with the same instruction: P reads the batch's common
        // opening once, as one row whose keys and values every row then continues from.
        // Each row keeps at least its last token, whose state starts the decoding. (The
        // instruction-only mode's two prompts share little, and keep their numbers as
        // they were.)
        let shared = if self.cfg.condition_on_text { shared_opening(seqs) } else { 0 };
        let rest: Vec<Vec<u32>> = seqs.iter().map(|s| s[shared..].to_vec()).collect();
        let (ids, pads) = p.dec.pad_left(&rest, p.tok.eos.unwrap_or(0))?;
        let mut cache = if shared > 0 {
            let opening = Tensor::new(&seqs[0][..shared], &self.device)?.unsqueeze(0)?;
            let mut one = p.dec.new_cache(&[0]);
            p.dec.forward_adapted(&p.dec.embed_ids(&opening)?, &[0], Some(&mut one), path, lora)?;
            one.for_batch(&pads)?
        } else {
            p.dec.new_cache(&pads)
        };
        let h = p.dec.forward_adapted(&p.dec.embed_ids(&ids)?, &pads, Some(&mut cache), path, lora)?;
        let mut last = Decoder::last(&h)?;
        let embed = p.dec.token_embeddings();
        let scale = p.dec.config().embed_scale;
        let mut feats = Vec::with_capacity(self.cfg.soft_tokens);
        for k in 0..self.cfg.soft_tokens {
            let more = k + 1 < self.cfg.soft_tokens;
            if self.cfg.align_from == AlignSource::Hidden {
                feats.push(last.clone());
                if !more {
                    // The last step's hidden state is the feature: no vocabulary-wide softmax.
                    break;
                }
            }
            let logits = (p.dec.logits(&last, path)? / self.cfg.temperature as f64)?;
            let probs = ops::softmax(&logits, path)?;
            // s_k = p_k E_p, in P's input space: a mixture of token embeddings.
            let s = (ops::linear(&probs, &embed.t()?, path)? * scale)?;
            if self.cfg.align_from == AlignSource::Relaxed {
                feats.push(s.clone());
            }
            if more {
                last = Decoder::last(&p.dec.forward_adapted(&s.unsqueeze(1)?, &pads, Some(&mut cache), path, lora)?)?;
            }
        }
        let s = Tensor::stack(&feats, 1)?; // (b, K, d_p)
                                           // A frozen P's adapters are variables still: cut them out of the graph.
        let s = if self.prompting_frozen { s.detach() } else { s };
        let (w, b) = match align_path {
            Kernels::Fast => (self.align_w.as_tensor().detach(), self.align_b.as_tensor().detach()),
            Kernels::Differentiable => (self.align_w.as_tensor().clone(), self.align_b.as_tensor().clone()),
        };
        Ok(s.broadcast_matmul(&w)?.broadcast_add(&b)?)
    }

    /// P's prompt in the mode that does not read the text.
    pub(super) fn instruction_prompt(&self, kind: Kind) -> String {
        format!("Instruct: {}\n", self.instruction(kind))
    }

    /// Forgets the cached soft prompts; training calls this after changing P's
    /// adapters or the alignment in place (their [`candle_core::Var`]s).
    pub fn clear_prompt_cache(&self) {
        self.prompt_cache.lock().unwrap_or_else(|e| e.into_inner()).clear();
        self.prefix_cache.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// The cached soft prompt of a kind (K, d_e), for the mode that does not read the text.
    pub(super) fn constant_prompt(&self, kind: Kind) -> Result<Tensor> {
        if let Some(t) = self.prompt_cache.lock().unwrap().get(&kind) {
            return Ok(t.clone());
        }
        let t = self.soft_prompts(&[self.instruction_prompt(kind)], Kernels::Fast)?.squeeze(0)?;
        self.prompt_cache.lock().unwrap().insert(kind, t.clone());
        Ok(t)
    }
}
