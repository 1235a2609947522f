//! safetensors: `safetensors::parse_file_bytes` (the header reader, dtype and shape rules
//! `SafetensorsFolder` applies to every shard) on arbitrary bytes, then each tensor's rows
//! and the HF rotate-half row permutation round trip.
#![no_main]

use ferrollama_model::safetensors::{parse_file_bytes, permute, unpermute};
use libfuzzer_sys::fuzz_target;

const MAX_COLS: usize = 1 << 16;

fuzz_target!(|data: &[u8]| {
    let Ok(tensors) = parse_file_bytes(data) else {
        return;
    };
    for (_, t) in &tensors {
        if t.rows == 0 || t.cols > MAX_COLS {
            continue;
        }
        let mut out = vec![0f32; t.cols];
        for r in [0, t.rows - 1] {
            t.row_f32(r, &mut out)
                .expect("a float tensor's rows dequantize");
        }
        // Rows as two-row heads: unpermute then permute gives the tensor back.
        if t.rows % 2 == 0 && t.data().len() <= 1 << 20 {
            let u = unpermute(t, t.rows / 2, 2).expect("unpermute");
            let p = permute(&u, t.rows / 2, 2).expect("permute");
            assert_eq!(p.data(), t.data());
        }
    }
});
