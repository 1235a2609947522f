//! Prints the final-position logits of a token sequence as JSON, for comparisons with
//! other engines: `cargo run --release -p ferrollama-model --example logits -- MODEL.gguf
//! ID ID ...`.

use ferrollama_model::gguf::GgufFile;
use ferrollama_model::{KvCache, KvType, Llama};
use ferrollama_tensor::ThreadPool;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let path = args.get(1).ok_or("usage: logits MODEL.gguf ID...")?;
    let ids: Vec<u32> = args[2..]
        .iter()
        .map(|s| s.parse())
        .collect::<Result<_, _>>()?;
    let f = GgufFile::open(path)?;
    let llama = Llama::from_gguf(&f)?;
    let pool = ThreadPool::new(2);
    let mut kv = KvCache::new(&llama.config, 512, KvType::F16)?;
    let mut st = llama.new_state(1, 512, 2);
    // One token at a time, as generation runs after the prompt.
    let mut last = Vec::new();
    for &t in &ids {
        last = llama
            .forward(&pool, &[t], &mut kv, &mut st, false)?
            .to_vec();
    }
    println!("{}", serde_json::to_string(&last)?);
    Ok(())
}
