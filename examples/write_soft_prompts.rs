//! Rewrites a PromptEmbedder checkpoint directory in place with
//! [`PromptEmbedder::save`], which adds `soft_prompts.safetensors` where the soft prompt
//! reads only the instruction: the shipped checkpoints then embed without loading the
//! Prompting LLM. The other files come back byte for byte (`git diff` shows none).
//!
//! Usage: `cargo run --release --example write_soft_prompts -- checkpoints/default`

use duetdb::embed::prompt::PromptEmbedder;
use duetdb::embed::Embedder;
use std::path::Path;

fn main() -> duetdb::Result<()> {
    for dir in std::env::args().skip(1) {
        let e = PromptEmbedder::load(Path::new(&dir))?;
        e.save(Path::new(&dir))?;
        let back = PromptEmbedder::load(Path::new(&dir))?;
        assert_eq!(back.fingerprint(), e.fingerprint(), "{dir}: the fingerprint changed");
        println!("{dir}: {} (Prompting LLM loaded on open: {})", back.fingerprint(), back.prompting_loaded());
    }
    Ok(())
}
