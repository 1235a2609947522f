//! GGUF round trips and hostile inputs.

use ferrollama_tensor::DType;
use proptest::prelude::*;

use super::*;

fn sample() -> Vec<u8> {
    let mut w = GgufWriter::new();
    w.set("general.architecture", Value::String("llama".into()));
    w.set("llama.block_count", Value::U32(2));
    w.set("x.f", Value::F32(1.5));
    w.set(
        "tokenizer.ggml.tokens",
        Value::Array(
            ty::STRING,
            vec![Value::String("a".into()), Value::String("é".into())],
        ),
    );
    w.set(
        "nested",
        Value::Array(ty::ARRAY, vec![Value::Array(ty::I32, vec![Value::I32(-1)])]),
    );
    let data: Vec<u8> = (0..4 * 6).map(|i| i as u8).collect();
    w.add_tensor("t.weight", &[3, 2], DType::F32, data)
        .expect("tensor");
    w.add_tensor("u.weight", &[32], DType::Q8_0, vec![7; 34])
        .expect("tensor");
    w.to_bytes()
}

#[test]
fn round_trip() {
    let f = GgufFile::parse(Bytes::Owned(sample())).expect("parse");
    assert_eq!(f.version, 3);
    assert_eq!(
        f.get_str("general.architecture").expect("str"),
        Some("llama")
    );
    assert_eq!(f.get_u64("llama.block_count").expect("u64"), Some(2));
    assert_eq!(f.get_f64("x.f").expect("f64"), Some(1.5));
    assert_eq!(
        f.get_array("tokenizer.ggml.tokens")
            .expect("arr")
            .map(|a| a.len()),
        Some(2)
    );
    let t = f.tensor("t.weight").expect("tensor");
    assert_eq!(t.dims, [3, 2]);
    assert_eq!(t.matrix_shape(), (2, 3));
    assert_eq!(f.data(t)[5], 5);
    assert_eq!(t.start % 32, 0);
    let u = f.tensor("u.weight").expect("tensor");
    assert_eq!(f.data(u), &[7u8; 34][..]);
    assert!(
        f.get_u64("general.architecture").is_err(),
        "wrong type is an error"
    );
}

#[test]
fn every_truncation_is_an_error_not_a_panic() {
    let b = sample();
    for n in 0..b.len() {
        assert!(
            GgufFile::parse(Bytes::Owned(b[..n].to_vec())).is_err(),
            "prefix {n}"
        );
    }
}

#[test]
fn absurd_counts_are_rejected_without_allocating() {
    let mut b = b"GGUF".to_vec();
    b.extend_from_slice(&3u32.to_le_bytes());
    b.extend_from_slice(&0u64.to_le_bytes());
    b.extend_from_slice(&(1u64 << 60).to_le_bytes());
    assert!(GgufFile::parse(Bytes::Owned(b)).is_err());

    // One key whose value is an array claiming 2^62 strings.
    let mut b = b"GGUF".to_vec();
    b.extend_from_slice(&3u32.to_le_bytes());
    b.extend_from_slice(&0u64.to_le_bytes());
    b.extend_from_slice(&1u64.to_le_bytes());
    b.extend_from_slice(&1u64.to_le_bytes());
    b.push(b'k');
    b.extend_from_slice(&ty::ARRAY.to_le_bytes());
    b.extend_from_slice(&ty::STRING.to_le_bytes());
    b.extend_from_slice(&(1u64 << 62).to_le_bytes());
    b.extend_from_slice(&[0u8; 64]);
    let e = GgufFile::parse(Bytes::Owned(b)).expect_err("absurd");
    assert!(e.to_string().contains("array length"), "{e}");
}

#[test]
fn bad_magic_version_utf8_and_offsets() {
    assert!(matches!(
        GgufFile::parse(Bytes::Owned(b"GGML\0\0\0\0".to_vec())),
        Err(crate::ModelError::NotGguf(_))
    ));
    let mut b = sample();
    b[4] = 1;
    assert!(matches!(
        GgufFile::parse(Bytes::Owned(b)),
        Err(crate::ModelError::GgufVersion(1))
    ));
    let mut b = sample();
    // Corrupt the first key's bytes into invalid UTF-8.
    b[4 + 4 + 8 + 8 + 8] = 0xff;
    assert!(GgufFile::parse(Bytes::Owned(b)).is_err());
    // Point the first tensor far past the end.
    let mut b = sample();
    let f = GgufFile::parse(Bytes::Owned(b.clone())).expect("parse");
    let t = f.tensor("t.weight").expect("t").clone();
    let name_pos = b.windows(8).position(|w| w == b"t.weight").expect("name");
    let off_pos = name_pos + 8 + 4 + 16 + 4;
    b[off_pos..off_pos + 8].copy_from_slice(&(1u64 << 40).to_le_bytes());
    let e = GgufFile::parse(Bytes::Owned(b)).expect_err("offset");
    assert!(e.to_string().contains("t.weight"), "{e} {t:?}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]
    #[test]
    fn random_corruption_never_panics(pos in 0usize..400, byte in any::<u8>(), cut in 0usize..400) {
        let mut b = sample();
        let p = pos % b.len();
        b[p] = byte;
        b.truncate(b.len().saturating_sub(cut % 8));
        let _ = GgufFile::parse(Bytes::Owned(b));
    }
}
