//! Model configuration text: Hugging Face `config.json` (`LlamaConfig::from_hf_json`) and
//! Meta `params.json` (`meta::config_from_params`) on arbitrary text, then the derived
//! sizes and the Llama 3.1 RoPE divisors of any configuration that validates.
#![no_main]

use ferrollama_model::LlamaConfig;
use ferrollama_model::meta::config_from_params;
use libfuzzer_sys::fuzz_target;

fn exercise(c: &LlamaConfig) {
    let _ = (c.q_dim(), c.kv_dim(), c.n_rep());
    if let Some(s) = c.rope_scaling {
        assert_eq!(
            s.freq_divisors(c.rope_dims, c.rope_theta).len(),
            c.rope_dims / 2
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(c) = LlamaConfig::from_hf_json(text) {
        exercise(&c);
    }
    if let Ok(c) = config_from_params(text) {
        exercise(&c);
    }
});
