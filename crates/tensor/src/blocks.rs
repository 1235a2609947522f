//! ggml's quantization block layouts, byte for byte.
//!
//! These structs are the single source of truth for where each field lives:
//! kernels read blocks straight out of (possibly unaligned, memory-mapped)
//! byte slices, so they either copy a whole block out with
//! [`read_block`] or use the `offset_of!` constants below. Sizes are asserted
//! at compile time because a single wrong byte would silently garble a model.

use core::mem::{offset_of, size_of};
use half::f16;

/// Elements per block of the "legacy" quants (Q8_0, Q8_1, Q4_0, Q4_1, Q5_0, Q5_1).
pub const QK8_0: usize = 32;
/// Elements per super-block of the k-quants (Q4_K, Q6_K, Q8_K).
pub const QK_K: usize = 256;

/// Q8_0: 32 signed bytes with one f16 scale. value = qs\[i\] * d.
#[derive(Debug, Clone, Copy)]
#[repr(C)]
pub struct BlockQ8_0 {
    pub d: f16,
    pub qs: [i8; 32],
}

/// Q8_1: like Q8_0 plus `s = d * sum(qs)`, used for Q4_1's min term.
#[derive(Debug, Clone, Copy)]
#[repr(C)]
pub struct BlockQ8_1 {
    pub d: f16,
    pub s: f16,
    pub qs: [i8; 32],
}

/// Q4_0: 32 nibbles; low nibbles are elements 0..16, high nibbles 16..32.
/// value = (q - 8) * d.
#[derive(Debug, Clone, Copy)]
#[repr(C)]
pub struct BlockQ4_0 {
    pub d: f16,
    pub qs: [u8; 16],
}

/// Q4_1: 32 nibbles (same order as Q4_0). value = q * d + m.
#[derive(Debug, Clone, Copy)]
#[repr(C)]
pub struct BlockQ4_1 {
    pub d: f16,
    pub m: f16,
    pub qs: [u8; 16],
}

/// Q5_0: 32 five-bit values: the low 4 bits as in Q4_0 (low nibbles are
/// elements 0..16, high nibbles 16..32), bit 4 of element `j` is bit `j` of
/// the little-endian u32 `qh`. value = (q - 16) * d.
#[derive(Debug, Clone, Copy)]
#[repr(C)]
pub struct BlockQ5_0 {
    pub d: f16,
    pub qh: [u8; 4],
    pub qs: [u8; 16],
}

/// Q5_1: Q5_0's bit layout with a min. value = q * d + m.
#[derive(Debug, Clone, Copy)]
#[repr(C)]
pub struct BlockQ5_1 {
    pub d: f16,
    pub m: f16,
    pub qh: [u8; 4],
    pub qs: [u8; 16],
}

/// The 5-bit value of element `j` (0..32) of a Q5_0/Q5_1 block.
#[inline(always)]
pub fn q5_value(qh: &[u8; 4], qs: &[u8; 16], j: usize) -> u8 {
    let h = ((u32::from_le_bytes(*qh) >> j) & 1) as u8;
    let l = if j < 16 {
        qs[j] & 0x0f
    } else {
        qs[j - 16] >> 4
    };
    l | (h << 4)
}

/// Q4_K: 256 elements in 8 sub-blocks of 32, each with a 6-bit scale and a
/// 6-bit min packed into `scales` (see [`get_scale_min_k4`]).
/// value = d * sc * q - dmin * m.
#[derive(Debug, Clone, Copy)]
#[repr(C)]
pub struct BlockQ4K {
    pub d: f16,
    pub dmin: f16,
    pub scales: [u8; 12],
    pub qs: [u8; 128],
}

/// Q6_K: 256 six-bit values (low 4 bits in `ql`, high 2 bits in `qh`), 16
/// sub-blocks of 16 with signed 8-bit scales. value = d * sc * (q - 32).
#[derive(Debug, Clone, Copy)]
#[repr(C)]
pub struct BlockQ6K {
    pub ql: [u8; 128],
    pub qh: [u8; 64],
    pub scales: [i8; 16],
    pub d: f16,
}

/// Q8_K: the activation format for k-quants. `bsums[j]` = sum of qs\[16j..16j+16\].
#[derive(Debug, Clone, Copy)]
#[repr(C)]
pub struct BlockQ8K {
    pub d: f32,
    pub qs: [i8; 256],
    pub bsums: [i16; 16],
}

const _: () = {
    assert!(size_of::<BlockQ8_0>() == 34);
    assert!(size_of::<BlockQ8_1>() == 36);
    assert!(size_of::<BlockQ4_0>() == 18);
    assert!(size_of::<BlockQ4_1>() == 20);
    assert!(size_of::<BlockQ5_0>() == 22);
    assert!(size_of::<BlockQ5_1>() == 24);
    assert!(offset_of!(BlockQ5_0, qh) == 2);
    assert!(offset_of!(BlockQ5_0, qs) == 6);
    assert!(offset_of!(BlockQ5_1, qh) == 4);
    assert!(offset_of!(BlockQ5_1, qs) == 8);
    assert!(size_of::<BlockQ4K>() == 144);
    assert!(size_of::<BlockQ6K>() == 210);
    assert!(size_of::<BlockQ8K>() == 292);
    assert!(offset_of!(BlockQ8_0, qs) == 2);
    assert!(offset_of!(BlockQ8_1, qs) == 4);
    assert!(offset_of!(BlockQ4_1, qs) == 4);
    assert!(offset_of!(BlockQ4K, scales) == 4);
    assert!(offset_of!(BlockQ4K, qs) == 16);
    assert!(offset_of!(BlockQ6K, qh) == 128);
    assert!(offset_of!(BlockQ6K, scales) == 192);
    assert!(offset_of!(BlockQ6K, d) == 208);
    assert!(offset_of!(BlockQ8K, qs) == 4);
    assert!(offset_of!(BlockQ8K, bsums) == 260);
};

/// Marker for plain-old-data blocks: every bit pattern is a valid value and
/// there is no padding, so copying one out of arbitrary bytes is sound.
///
/// # Safety
/// Implementors must be `repr(C)`, padding-free, and valid for all bit patterns.
pub unsafe trait Block: Copy {}
// SAFETY: all fields are integers or f16/f32 (valid for every bit pattern),
// and the size asserts above prove there is no padding.
unsafe impl Block for BlockQ8_0 {}
// SAFETY: as above.
unsafe impl Block for BlockQ8_1 {}
// SAFETY: as above.
unsafe impl Block for BlockQ4_0 {}
// SAFETY: as above.
unsafe impl Block for BlockQ4_1 {}
// SAFETY: as above.
unsafe impl Block for BlockQ5_0 {}
// SAFETY: as above.
unsafe impl Block for BlockQ5_1 {}
// SAFETY: as above.
unsafe impl Block for BlockQ4K {}
// SAFETY: as above.
unsafe impl Block for BlockQ6K {}
// SAFETY: as above.
unsafe impl Block for BlockQ8K {}

/// Copies block `i` out of `bytes` (no alignment requirement).
/// Returns `None` if the slice is too short.
#[inline(always)]
pub fn read_block<B: Block>(bytes: &[u8], i: usize) -> Option<B> {
    let sz = size_of::<B>();
    let start = i.checked_mul(sz)?;
    let chunk = bytes.get(start..start.checked_add(sz)?)?;
    // SAFETY: `chunk` holds exactly size_of::<B>() bytes, B is valid for all
    // bit patterns (Block contract), and read_unaligned has no alignment need.
    Some(unsafe { core::ptr::read_unaligned(chunk.as_ptr().cast::<B>()) })
}

/// Writes `b` as block `i` of `bytes`. Returns `None` if the slice is too short.
#[inline(always)]
pub fn write_block<B: Block>(bytes: &mut [u8], i: usize, b: &B) -> Option<()> {
    let sz = size_of::<B>();
    let start = i.checked_mul(sz)?;
    let chunk = bytes.get_mut(start..start.checked_add(sz)?)?;
    // SAFETY: `chunk` holds exactly size_of::<B>() writable bytes; B has no
    // padding so every byte written is initialized.
    unsafe { core::ptr::write_unaligned(chunk.as_mut_ptr().cast::<B>(), *b) };
    Some(())
}

/// Unpacks the 6-bit scale and min of sub-block `j` (0..8) of a Q4_K block,
/// exactly as ggml's `get_scale_min_k4`.
#[inline(always)]
pub fn get_scale_min_k4(j: usize, q: &[u8; 12]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// All 8 scales and 8 mins of a Q4_K block.
#[inline(always)]
pub fn q4k_scales_mins(q: &[u8; 12]) -> ([u8; 8], [u8; 8]) {
    let mut sc = [0u8; 8];
    let mut mn = [0u8; 8];
    for j in 0..8 {
        let (s, m) = get_scale_min_k4(j, q);
        sc[j] = s;
        mn[j] = m;
    }
    (sc, mn)
}

/// The 6-bit value of element `idx` (0..256) of a Q6_K block, before the -32.
#[inline(always)]
pub fn q6k_value(b: &BlockQ6K, idx: usize) -> u8 {
    let half = idx / 128;
    let r = idx % 128;
    let quarter = r / 32;
    let l = r % 32;
    let ql = &b.ql[half * 64..half * 64 + 64];
    let qh = b.qh[half * 32 + l];
    let low = match quarter {
        0 => ql[l] & 0xF,
        1 => ql[l + 32] & 0xF,
        2 => ql[l] >> 4,
        _ => ql[l + 32] >> 4,
    };
    low | (((qh >> (2 * quarter)) & 3) << 4)
}
