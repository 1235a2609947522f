//! PyTorch zip checkpoints: `pth::parse_bytes` (zip reader, restricted unpickler, torch
//! tensor records) on arbitrary bytes, then every tensor's data and matrix view.
#![no_main]

use ferrollama_model::pth::parse_bytes;
use libfuzzer_sys::fuzz_target;

const MAX_COLS: usize = 1 << 16;

fuzz_target!(|data: &[u8]| {
    let Ok(f) = parse_bytes(data) else {
        return;
    };
    for t in f.tensors() {
        // Invariants: the bytes are the shape in the dtype, and lookup by name finds it.
        assert_eq!(t.data().len(), t.n_elements() * t.dtype.size());
        assert!(f.get(&t.name).is_some());
        let Ok(m) = t.to_tensor() else {
            continue;
        };
        if m.rows > 0 && m.cols <= MAX_COLS {
            let mut out = vec![0f32; m.cols];
            for r in [0, m.rows - 1] {
                m.row_f32(r, &mut out)
                    .expect("a float tensor's rows dequantize");
            }
        }
    }
});
