//! GGUF: `GgufFile::parse` on arbitrary bytes, then everything a loader does with a file
//! that parses: config, weights, tokenizer, and one dequantized row per tensor.
#![no_main]

use ferrollama_model::gguf::{Bytes, GgufFile};
use ferrollama_model::{LlamaConfig, ModelTokenizer, Tensor, Weights};
use libfuzzer_sys::fuzz_target;

/// Rows longer than this are not dequantized (the fuzzer's time goes to parsing, not to
/// filling huge buffers).
const MAX_COLS: usize = 1 << 16;
/// Tensors looked at per input.
const MAX_TENSORS: usize = 64;

/// Dequantizes the first and last row of `t` (if rows are short enough).
fn touch_rows(t: &Tensor) {
    if t.rows == 0 || t.cols > MAX_COLS {
        return;
    }
    let mut out = vec![0f32; t.cols];
    for r in [0, t.rows - 1] {
        let _ = t.row_f32(r, &mut out);
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(f) = GgufFile::parse(Bytes::Owned(data.to_vec())) else {
        return;
    };
    for info in f.tensors.iter().take(MAX_TENSORS) {
        // Invariants of a parsed file: every descriptor's range is in the file and is
        // exactly its shape in its dtype.
        assert_eq!(f.data(info).len(), info.len);
        let (rows, cols) = info.matrix_shape();
        let t = Tensor::view(
            info.dtype,
            rows,
            cols,
            f.bytes().clone(),
            info.start,
            info.len,
        )
        .expect("a parsed tensor is a valid view");
        touch_rows(&t);
    }
    if let Ok(cfg) = LlamaConfig::from_gguf(&f) {
        let _ = (cfg.q_dim(), cfg.kv_dim(), cfg.n_rep());
        if let Ok(w) = Weights::from_gguf(&f, &cfg) {
            touch_rows(&w.tok_embeddings);
            touch_rows(&w.output);
            for l in w.layers.iter().take(4) {
                for t in [&l.wq, &l.wk, &l.wv, &l.wo, &l.w1, &l.w2, &l.w3] {
                    touch_rows(t);
                }
            }
        }
    }
    if let Ok(tok) = ModelTokenizer::from_gguf(&f) {
        let ids = tok.bpe.encode("Hello, world! 123 <|eot_id|> ünï", true);
        let _ = tok.bpe.decode(&ids, true);
        for id in [tok.bos, tok.eos].into_iter().flatten().chain(tok.stop_ids) {
            let _ = tok.bpe.token_bytes(id, true);
        }
    }
});
