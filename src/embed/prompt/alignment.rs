//! The alignment matrix's starting points: identity, least squares over the token strings
//! two vocabularies share, and the first state of a transfer to a new backbone.

use super::*;

/// The alignment of a P and M that are one model: the identity, no bias.
pub(super) fn identity_alignment(d: usize, device: &Device) -> Result<(Tensor, Tensor)> {
    Ok((Tensor::eye(d, DType::F32, device)?, Tensor::zeros(d, DType::F32, device)?))
}

/// Least-squares fit `E_m[t] ~ E_p[t] A + b` over the token strings both vocabularies
/// share (ridge-regularised normal equations, solved by Cholesky in f64).
pub(super) fn least_squares_alignment(p: &Model, m: &Model) -> Result<(Tensor, Tensor)> {
    let vp = p.tok.vocab();
    let vm = m.tok.vocab();
    let mut pairs: Vec<(u32, u32)> = vp.iter().filter_map(|(s, &i)| vm.get(s).map(|&j| (i, j))).collect();
    pairs.sort_unstable();
    if pairs.len() < 1000 {
        return Err(Error::model(format!("only {} token strings are shared by the two vocabularies", pairs.len())));
    }
    let dev = p.dec.device();
    let ip = Tensor::from_vec(pairs.iter().map(|x| x.0).collect::<Vec<_>>(), pairs.len(), dev)?;
    let im = Tensor::from_vec(pairs.iter().map(|x| x.1).collect::<Vec<_>>(), pairs.len(), dev)?;
    let x = (p.dec.token_embeddings().index_select(&ip, 0)? * p.dec.config().embed_scale)?;
    let y = (m.dec.token_embeddings().index_select(&im, 0)? * m.dec.config().embed_scale)?;
    let n = x.dim(0)?;
    let x1 = Tensor::cat(&[&x, &Tensor::ones((n, 1), DType::F32, dev)?], 1)?; // bias column
    let xtx: Vec<Vec<f32>> = x1.t()?.matmul(&x1)?.to_vec2()?;
    let xty: Vec<Vec<f32>> = x1.t()?.matmul(&y)?.to_vec2()?;
    let dp = xtx.len();
    let mut a: Vec<f64> = xtx.iter().flatten().map(|v| *v as f64).collect();
    let ridge = 1e-3 * (0..dp).map(|i| a[i * dp + i]).sum::<f64>() / dp as f64;
    for i in 0..dp {
        a[i * dp + i] += ridge;
    }
    // Cholesky A = L L^T, then solve for every column of X^T Y.
    for j in 0..dp {
        let mut s = a[j * dp + j] - (0..j).map(|k| a[j * dp + k] * a[j * dp + k]).sum::<f64>();
        if s <= 0.0 {
            s = 1e-12;
        }
        a[j * dp + j] = s.sqrt();
        for i in j + 1..dp {
            let v = (a[i * dp + j] - (0..j).map(|k| a[i * dp + k] * a[j * dp + k]).sum::<f64>()) / a[j * dp + j];
            a[i * dp + j] = v;
        }
    }
    let de = xty[0].len();
    let mut w = vec![0f32; dp * de];
    for c in 0..de {
        let mut z = vec![0f64; dp];
        for i in 0..dp {
            z[i] = (xty[i][c] as f64 - (0..i).map(|k| a[i * dp + k] * z[k]).sum::<f64>()) / a[i * dp + i];
        }
        for i in (0..dp).rev() {
            z[i] = (z[i] - (i + 1..dp).map(|k| a[k * dp + i] * z[k]).sum::<f64>()) / a[i * dp + i];
        }
        for i in 0..dp {
            w[i * de + c] = z[i] as f32;
        }
    }
    let w = Tensor::from_vec(w, (dp, de), dev)?;
    Ok((w.narrow(0, 0, dp - 1)?, w.get(dp - 1)?))
}

impl PromptEmbedder {
    /// The first state of a transfer: the checkpoint in `source` with its Prompting LLM
    /// and P's adapters as they are, a new Embedding LLM `embedding`, and a fresh
    /// alignment into it started as `init`. Training then changes only the alignment.
    ///
    /// When the source's soft prompt reads only the instruction, P's output is a constant
    /// per kind, so the new alignment is, in effect, a new constant prompt for the new
    /// backbone (prompt tuning through a linear map).
    pub fn transfer(source: &Path, embedding: Backbone, init: AlignInit) -> Result<Self> {
        let (mut cfg, files) = read_checkpoint(source)?;
        if cfg.embedding_lora.is_some() || cfg.soft_tokens == 0 {
            return Err(Error::invalid(format!("{} has no soft prompt to transfer (it adapts the Embedding LLM itself)", source.display())));
        }
        let device = Device::Cpu;
        let p = Arc::new(load_model(&cfg.prompting, &device)?);
        let m = if embedding == cfg.prompting { p.clone() } else { Arc::new(load_model(&embedding, &device)?) };
        let (dp, de) = (p.dec.config().hidden, m.dec.config().hidden);
        let (w, b) = match init {
            AlignInit::LeastSquares if embedding == cfg.prompting => identity_alignment(dp, &device)?,
            AlignInit::LeastSquares => least_squares_alignment(&p, &m)?,
            AlignInit::Identity => {
                let eye: Vec<f32> = (0..dp * de).map(|i| if i / de == i % de { 1.0 } else { 0.0 }).collect();
                (Tensor::from_vec(eye, (dp, de), &device)?, Tensor::zeros(de, DType::F32, &device)?)
            }
            AlignInit::Zero => (Tensor::zeros((dp, de), DType::F32, &device)?, Tensor::zeros(de, DType::F32, &device)?),
            AlignInit::Composed => {
                let (ws, bs) = files.alignment(source, &device)?;
                // The map from the source's M into M' (the identity when they are one model).
                let (lw, lb) = if embedding == cfg.embedding {
                    identity_alignment(m.dec.config().hidden, &device)?
                } else if cfg.embedding == cfg.prompting {
                    least_squares_alignment(&p, &m)?
                } else {
                    least_squares_alignment(&load_model(&cfg.embedding, &device)?, &m)?
                };
                if ws.dims() != [dp, lw.dim(0)?] {
                    return Err(Error::corrupt(
                        source.join("alignment.safetensors"),
                        format!("alignment has shape {:?}, expected [{dp}, {}]", ws.dims(), lw.dim(0)?),
                    ));
                }
                (ws.matmul(&lw)?, (bs.unsqueeze(0)?.matmul(&lw)?.squeeze(0)? + lb)?)
            }
        };
        let lora = match (&cfg.lora, &files.prompting_lora) {
            (Some(l), Some(bytes)) => Some(Lora::from_bytes(l.clone(), &p.dec, bytes, &source.join(LORA_FILE))?),
            _ => None,
        };
        cfg.embedding = embedding;
        // A depth counts the source M's blocks; the new backbone runs whole.
        cfg.m_layers = None;
        // A readout reads the source M's states; the new backbone's vector is its own.
        cfg.readout = None;
        Self::assemble(cfg, None, PromptingInput::Loaded(Prompting { model: p, lora }), m, (w, b), None, None, &device)
    }
}
