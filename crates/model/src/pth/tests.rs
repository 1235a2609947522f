//! The checkpoint reader against files written the way torch.save writes them
//! (`testdata/meta/make_meta.py`), and against hostile inputs: every one must be an error,
//! never a panic.
#![allow(clippy::unwrap_used)]

use std::io::Cursor;
use std::path::PathBuf;

use proptest::prelude::*;
use zip::ZipWriter;
use zip::write::SimpleFileOptions;

use super::fixture::{Pkl, torch_zip};
use super::*;

fn testdata(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/meta")
        .join(name)
}

fn read(name: &str) -> Vec<u8> {
    std::fs::read(testdata(name)).unwrap()
}

/// Element values as f64 (int64 too: the fixture's fit exactly).
fn values(t: &PthTensor) -> Vec<f64> {
    let d = t.data();
    match t.dtype {
        TorchDtype::F32 => d
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()).into())
            .collect(),
        TorchDtype::F16 => d
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes(c.try_into().unwrap()).into())
            .collect(),
        TorchDtype::BF16 => d
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes(c.try_into().unwrap()).into())
            .collect(),
        TorchDtype::I64 => d
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f64)
            .collect(),
        other => panic!("no test decoder for {other:?}"),
    }
}

fn storage_dtype(name: &str) -> TorchDtype {
    match name {
        "FloatStorage" => TorchDtype::F32,
        "HalfStorage" => TorchDtype::F16,
        "BFloat16Storage" => TorchDtype::BF16,
        "LongStorage" => TorchDtype::I64,
        other => panic!("{other}"),
    }
}

/// Every tensor of the record files is what the Python writer put there: dtype, shape and
/// values, including a view at an offset into a shared storage, 0-d and empty tensors, a
/// Parameter, and size-1 dimensions with arbitrary strides. Protocol 4 (FRAME, MEMOIZE,
/// STACK_GLOBAL, SHORT_BINUNICODE) reads the same.
#[test]
fn record_files_match_the_python_writer() {
    let expect: serde_json::Value = serde_json::from_slice(&read("records.json")).unwrap();
    let expect = expect.as_object().unwrap();
    for file in ["records.pth", "records-p4.pth"] {
        let f = PthFile::open(&testdata(file)).unwrap();
        let names: Vec<&str> = f.tensors().iter().map(|t| t.name.as_str()).collect();
        let want: Vec<&str> = expect.keys().map(String::as_str).collect();
        assert_eq!(
            names, want,
            "{file}: tensors in pickle order, non-tensors skipped"
        );
        for (name, e) in expect {
            let t = f.get(name).unwrap();
            assert_eq!(
                t.dtype,
                storage_dtype(e["storage"].as_str().unwrap()),
                "{name}"
            );
            let shape: Vec<usize> = e["shape"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_u64().unwrap() as usize)
                .collect();
            assert_eq!(t.shape, shape, "{file} {name}");
            let vals: Vec<f64> = e["values"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect();
            // serde_json's float parsing is not correctly rounded: compare to 1e-12.
            let got = values(t);
            assert_eq!(got.len(), vals.len(), "{file} {name}");
            for (a, b) in got.iter().zip(&vals) {
                assert!(
                    (a - b).abs() <= 1e-12 * b.abs().max(1.0),
                    "{file} {name}: {got:?}"
                );
            }
        }
        // Matrix views for the weight types; others are refused by name.
        let m = f.get("bf16").unwrap().to_tensor().unwrap();
        assert_eq!((m.rows, m.cols), (3, 5));
        assert_eq!(m.to_f32().unwrap()[7], 0.5);
        let v = f.get("param").unwrap().to_tensor().unwrap();
        assert_eq!((v.rows, v.cols), (1, 4));
        let e = f.get("i64").unwrap().to_tensor().unwrap_err().to_string();
        assert!(e.contains("i64") && e.contains("int64"), "{e}");
        assert!(f.get("f32.3d").unwrap().to_tensor().is_err());
    }
}

#[test]
fn a_transposed_tensor_is_refused_by_name() {
    let e = PthFile::open(&testdata("noncontig.pth")).unwrap_err();
    let s = format!("{:#}", anyhow_like(&e));
    assert!(s.contains("\"t\"") && s.contains("not contiguous"), "{s}");
}

/// The error and its sources on one line, as the CLI prints them.
fn anyhow_like(e: &ModelError) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

// ---- building hostile pickles and zips ----------------------------------------------

/// `{"w": tensor}` for one FloatStorage tensor.
fn one_tensor(numel: i64, offset: i64, shape: &[i64], stride: &[i64]) -> Vec<u8> {
    Pkl::new()
        .op(b"}")
        .str("w")
        .tensor("FloatStorage", "0", numel, offset, shape, stride)
        .op(b"s")
        .done()
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn parse_err(bytes: &[u8]) -> String {
    anyhow_like(&parse_bytes(bytes).unwrap_err())
}

fn pickle_err(pkl: &[u8]) -> String {
    anyhow_like(&pickle::load(pkl).unwrap_err())
}

#[test]
fn a_hand_built_checkpoint_reads_stored_and_deflated() {
    let data = f32_bytes(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    let pkl = one_tensor(6, 2, &[2, 2], &[2, 1]);
    for deflate in [false, true] {
        let f = parse_bytes(&torch_zip(&pkl, &[("data/0", &data)], deflate)).unwrap();
        let t = f.get("w").unwrap();
        assert_eq!(t.shape, [2, 2]);
        assert_eq!(
            values(t),
            [3.0, 4.0, 5.0, 6.0],
            "offset 2 elements, deflate={deflate}"
        );
    }
}

#[test]
fn code_running_globals_are_refused_by_name() {
    let cases = [
        ("os", "system"),
        ("builtins", "eval"),
        ("__builtin__", "getattr"),
        ("posix", "system"),
        ("torch", "load"),
        ("torch._utils", "_rebuild_device_tensor_from_numpy"),
        ("collections", "defaultdict"),
    ];
    for (m, n) in cases {
        let pkl = Pkl::new()
            .global(m, n)
            .str("echo pwned")
            .op(&[0x85])
            .op(b"R")
            .done();
        let e = pickle::load(&pkl).unwrap_err();
        assert!(
            matches!(&e, ModelError::PickleGlobal(g) if *g == format!("{m}.{n}")),
            "{m}.{n}: {e}"
        );
        // The same through STACK_GLOBAL (protocol 4) and inside a whole zip.
        let pkl4 = Pkl::new().str(m).str(n).op(&[0x93]).op(b")R").done();
        assert!(matches!(
            pickle::load(&pkl4),
            Err(ModelError::PickleGlobal(_))
        ));
        let s = parse_err(&torch_zip(&pkl, &[], false));
        assert!(
            s.contains(&format!("{m}.{n}")) && s.contains("not allowed"),
            "{s}"
        );
    }
    // Allowlisted names may not be "called" beyond their meaning.
    let s = pickle_err(&Pkl::new().global("torch", "FloatStorage").op(b")R").done());
    assert!(s.contains("called"), "{s}");
    let s = pickle_err(&Pkl::new().op(b"N)R").done());
    assert!(s.contains("REDUCE calls a None"), "{s}");
}

#[test]
fn object_building_and_unknown_opcodes_are_errors() {
    for (op, name) in [
        (&b"i"[..], "INST"),
        (b"o", "OBJ"),
        (&[0x81], "NEWOBJ"),
        (&[0x92], "NEWOBJ_EX"),
        (&[0x82, 1], "EXT1"),
        (b"P", "PERSID"),
    ] {
        let s = pickle_err(&Pkl::new().op(b"N)").op(op).done());
        assert!(s.contains(name) && s.contains("not allowed"), "{name}: {s}");
    }
    let s = pickle_err(&Pkl::new().op(&[0xff]).done());
    assert!(s.contains("unknown opcode 0xff"), "{s}");
    let s = pickle_err(&[0x80, 9, b'N', b'.']);
    assert!(s.contains("protocol 9"), "{s}");
}

#[test]
fn stack_and_memo_misuse_are_errors() {
    let cases: [(&[u8], &str); 9] = [
        (b"\x80\x02.", "underflow"),
        (b"\x80\x02s.", "underflow"),
        (b"\x80\x02t.", "no MARK"),
        (b"\x80\x02(.", "underflow"),
        (b"\x80\x02N(R.", "underflow"),
        (b"\x80\x02h\x05.", "memo entry 5"),
        (b"\x80\x02j\xff\xff\xff\xff.", "memo entry 4294967295"),
        (b"\x80\x02N", "without STOP"),
        (b"\x80\x02NNNs.", "adding items to a None"),
    ];
    for (pkl, want) in cases {
        let s = pickle_err(pkl);
        assert!(s.contains(want), "{pkl:?}: {s}");
    }
    // BUILD on a dict (a state_dict's `_metadata`) drops the state.
    assert_eq!(
        pickle::load(b"\x80\x02}Nb.").unwrap(),
        Value::Dict(Vec::new())
    );
    let s = pickle_err(b"\x80\x02NNb.");
    assert!(s.contains("BUILD on a None"), "{s}");
}

#[test]
fn absurd_lengths_and_bad_utf8_are_errors_without_allocating() {
    let cases: [(&[u8], &str); 7] = [
        (b"\x80\x02X\xff\xff\xff\xff.", "runs past the end"),
        (
            b"\x80\x02\x8d\xff\xff\xff\xff\xff\xff\xff\x7f.",
            "runs past the end",
        ),
        (
            b"\x80\x02\x8e\x00\x00\x00\x00\x00\x00\x00\x80.",
            "runs past the end",
        ),
        (b"\x80\x02T\xff\xff\xff\xff.", "negative"),
        (b"\x80\x02\x8b\xff\xff\xff\x7f.", "does not fit in 64 bits"),
        (b"\x80\x02X\x02\x00\x00\x00\xff\xfe.", "not valid UTF-8"),
        (
            b"\x80\x02\x95\xff\xff\xff\xff\xff\xff\xff\xffN.",
            "runs past the end",
        ),
    ];
    for (pkl, want) in cases {
        let s = pickle_err(pkl);
        assert!(s.contains(want), "{pkl:?}: {s}");
    }
    // A non-UTF-8 state_dict key inside a whole checkpoint.
    let pkl = Pkl::new().op(b"}X\x01\x00\x00\x00\xc3N").op(b"s").done();
    assert!(parse_err(&torch_zip(&pkl, &[], false)).contains("UTF-8"));
    // GLOBAL lines must end.
    assert!(pickle_err(b"\x80\x02cos\nsystem").contains("newline"));
}

#[test]
fn integers_decode_as_python_does() {
    let cases: [(&[u8], i64); 6] = [
        (b"\x80\x02\x8a\x00.", 0),
        (b"\x80\x02\x8a\x01\xff.", -1),
        (b"\x80\x02\x8a\x02\x00\x80.", -32768),
        (b"\x80\x02\x8a\x06\x00\x00\x00\x00\x00\x01.", 1 << 40),
        (b"\x80\x02J\xfe\xff\xff\xff.", -2),
        (b"\x80\x02M\xff\xff.", 65535),
    ];
    for (pkl, want) in cases {
        assert_eq!(pickle::load(pkl).unwrap(), Value::Int(want), "{pkl:?}");
    }
}

#[test]
fn deep_nesting_and_self_expanding_pickles_are_stopped() {
    // 100 nested lists.
    let mut p = b"\x80\x02".to_vec();
    p.extend(std::iter::repeat_n(b']', 100));
    p.extend(std::iter::repeat_n(b'a', 99));
    p.push(b'.');
    assert!(pickle_err(&p).contains("nested deeper"));
    // 10,000 nested tuples.
    let mut p = b"\x80\x02N".to_vec();
    p.extend(std::iter::repeat_n(0x85, 10_000));
    p.push(b'.');
    assert!(pickle_err(&p).contains("nested deeper"));
    // A list of two copies of a list of two copies ... (doubling through the memo), wide
    // rather than deep: stopped by the copy budget.
    let mut p = b"\x80\x02(NNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNl".to_vec();
    p.extend_from_slice(b"q\x00");
    for _ in 0..40 {
        p.extend_from_slice(b"(h\x00h\x00h\x00h\x00h\x00h\x00h\x00h\x00lq\x00");
    }
    p.push(b'.');
    let s = pickle_err(&p);
    assert!(
        s.contains("expands itself") || s.contains("nested deeper"),
        "{s}"
    );
    // DUP doubling.
    let mut p = b"\x80\x02]".to_vec();
    for _ in 0..60 {
        p.extend_from_slice(b"2\x86");
    }
    p.push(b'.');
    let s = pickle_err(&p);
    assert!(
        s.contains("expands itself") || s.contains("nested deeper"),
        "{s}"
    );
}

/// Found while writing the `pth` fuzz target (by review, then reproduced with the target:
/// libFuzzer out-of-memory at its 2 GB RSS limit). The copy budget counted value nodes
/// only, so a long string copied through the memo was nearly free: this 14 KB checkpoint
/// (one 8,000-byte string, a tuple of 1,000 memo copies of it, then 2,000 memo copies of
/// that tuple) made the reader allocate about 16 GB.
#[test]
fn pickle_string_bomb() {
    let pkl = [
        &b"\x80\x02X\x40\x1f\x00\x00"[..], // PROTO 2, BINUNICODE of 8,000 bytes
        &[b'a'; 8000],
        b"q\x00(",              // BINPUT 0, MARK
        &b"h\x00".repeat(1000), // BINGET 0 (x1,000)
        b"tq\x01",              // TUPLE, BINPUT 1
        &b"h\x01".repeat(2000), // BINGET 1 (x2,000)
        b".",
    ]
    .concat();
    let s = pickle_err(&pkl);
    assert!(s.contains("expands itself"), "{s}");
    let s = parse_err(&torch_zip(&pkl, &[], false));
    assert!(s.contains("expands itself"), "{s}");
    // The same shape at a size real checkpoints use (short strings) still reads.
    let small = [
        &b"\x80\x02X\x03\x00\x00\x00cpuq\x00("[..],
        &b"h\x00".repeat(100),
        b"tq\x01",
        &b"h\x01".repeat(100),
        b".",
    ]
    .concat();
    assert!(pickle::load(&small).is_ok());
}

#[test]
fn tensor_records_are_checked_against_their_storage() {
    let data = f32_bytes(&[0.0; 4]);
    let zip = |pkl: &[u8]| torch_zip(pkl, &[("data/0", &data)], false);
    let cases: Vec<(Vec<u8>, &str)> = vec![
        // shape x stride beyond the storage
        (
            one_tensor(4, 0, &[10, 10], &[10, 1]),
            "needs elements up to 100",
        ),
        (one_tensor(4, 3, &[2], &[1]), "needs elements up to 5"),
        // 2^40 x 2^40 elements
        (
            one_tensor(4, 0, &[1 << 40, 1 << 40], &[1 << 40, 1]),
            "overflows",
        ),
        (
            one_tensor(4, i64::MAX, &[2], &[1]),
            "needs elements up to 9223372036854775809",
        ),
        (
            one_tensor(4, i64::MAX, &[1 << 40, 1 << 30], &[1 << 30, 1]),
            "overflows",
        ),
        (one_tensor(4, -1, &[2], &[1]), "storage offset -1"),
        (one_tensor(4, 0, &[-2], &[1]), "size holds -2"),
        (one_tensor(4, 0, &[2, 2], &[1, 2]), "not contiguous"),
        (one_tensor(4, 0, &[2, 2], &[2]), "differ in length"),
        // the pickle claims more elements than the record holds
        (one_tensor(100, 0, &[2], &[1]), "holds 16 bytes"),
        (one_tensor(1 << 62, 0, &[2], &[1]), "holds 16 bytes"),
        (one_tensor(-5, 0, &[2], &[1]), "numel -5"),
        (one_tensor(4, 0, &[1; 17], &[1; 17]), "17 dimensions"),
    ];
    for (pkl, want) in cases {
        let s = parse_err(&zip(&pkl));
        assert!(s.contains(want), "want {want:?}: {s}");
    }
    // The same storage key named once as 4 floats and once as 16 bytes' worth of doubles.
    let pkl = Pkl::new()
        .op(b"}")
        .str("a")
        .tensor("FloatStorage", "0", 4, 0, &[4], &[1])
        .op(b"s")
        .str("b")
        .tensor("DoubleStorage", "0", 4, 0, &[4], &[1])
        .op(b"s")
        .done();
    assert!(parse_err(&zip(&pkl)).contains("holds 16 bytes"));
    // Missing storage record, duplicate names, a non-dict root, big-endian.
    let s = parse_err(&torch_zip(&one_tensor(4, 0, &[4], &[1]), &[], false));
    assert!(s.contains("data/0 is missing"), "{s}");
    let pkl = Pkl::new()
        .op(b"}")
        .str("w")
        .tensor("FloatStorage", "0", 4, 0, &[4], &[1])
        .op(b"s")
        .str("w")
        .tensor("FloatStorage", "0", 4, 0, &[4], &[1])
        .op(b"s")
        .done();
    assert!(parse_err(&zip(&pkl)).contains("appears twice"));
    assert!(parse_err(&torch_zip(b"\x80\x02N.", &[], false)).contains("holds a None"));
    let big = torch_zip(
        &one_tensor(4, 0, &[4], &[1]),
        &[("data/0", &data), ("byteorder", b"big")],
        false,
    );
    assert!(parse_err(&big).contains("little-endian"));
}

#[test]
fn broken_zips_are_errors() {
    assert!(parse_err(b"").contains("not a zip"));
    assert!(parse_err(b"\x80\x02}.").contains("not a zip"));
    let good = read("records.pth");
    assert!(parse_bytes(&good).is_ok());
    // Every truncation.
    for n in (0..good.len()).step_by(7) {
        assert!(parse_bytes(&good[..n]).is_err(), "truncated to {n} bytes");
    }
    // A central-directory entry whose local header offset points past the end.
    let mut bad = good.clone();
    let cd = find(&bad, b"PK\x01\x02").unwrap();
    bad[cd + 42..cd + 46].copy_from_slice(&0xffff_fff0u32.to_le_bytes());
    assert!(parse_bytes(&bad).is_err());
    // A stored record whose sizes are raised past the end of the file.
    let mut bad = good.clone();
    let last_cd = rfind(&bad, b"PK\x01\x02").unwrap();
    for at in [last_cd + 20, last_cd + 24] {
        bad[at..at + 4].copy_from_slice(&0x7fff_0000u32.to_le_bytes());
    }
    assert!(parse_bytes(&bad).is_err());
    // No data.pkl / two archives.
    let z = {
        let mut z = ZipWriter::new(Cursor::new(Vec::new()));
        z.start_file("x/other.pkl", SimpleFileOptions::default())
            .unwrap();
        z.finish().unwrap().into_inner()
    };
    assert!(parse_err(&z).contains("no <archive>/data.pkl"));
}

fn find(h: &[u8], n: &[u8]) -> Option<usize> {
    h.windows(n.len()).position(|w| w == n)
}

fn rfind(h: &[u8], n: &[u8]) -> Option<usize> {
    h.windows(n.len()).rposition(|w| w == n)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = parse_bytes(&bytes);
        let _ = pickle::load(&bytes);
        let mut p = vec![0x80, 2];
        p.extend_from_slice(&bytes);
        let _ = pickle::load(&p);
    }

    /// Mutations of a real checkpoint: flipped bytes anywhere (headers, directory, pickle,
    /// data) and truncation.
    #[test]
    fn mutated_checkpoints_never_panic(
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let mut b = read("records-p4.pth");
        for (i, v) in flips {
            let at = i.index(b.len());
            b[at] ^= v | 1;
        }
        if truncate {
            b.truncate(cut.index(b.len()));
        }
        if let Ok(f) = parse_bytes(&b) {
            for t in f.tensors() {
                let _ = t.data().len();
                let _ = t.to_tensor();
            }
        }
    }

    /// Mutations of a real data.pkl inside an intact zip: the pickle machine and the tensor
    /// checks see every kind of damage.
    #[test]
    fn mutated_pickles_never_panic(
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        insert in proptest::option::of((any::<prop::sample::Index>(), any::<u8>())),
    ) {
        let src = parse_records();
        let mut pkl = src.0.clone();
        for (i, v) in flips {
            let at = i.index(pkl.len());
            pkl[at] = v;
        }
        if let Some((i, v)) = insert {
            let at = i.index(pkl.len());
            pkl.insert(at, v);
        }
        let refs: Vec<(&str, &[u8])> =
            src.1.iter().map(|(n, d)| (n.as_str(), d.as_slice())).collect();
        if let Ok(f) = parse_bytes(&torch_zip(&pkl, &refs, false)) {
            for t in f.tensors() {
                let _ = t.data().len();
            }
        }
    }
}

/// records.pth's data.pkl and storage records (as `data/N`).
fn parse_records() -> (Vec<u8>, Vec<(String, Vec<u8>)>) {
    let b = read("records.pth");
    let mut z = zip::ZipArchive::new(Cursor::new(&b[..])).unwrap();
    let mut pkl = Vec::new();
    let mut recs = Vec::new();
    for i in 0..z.len() {
        let mut f = z.by_index(i).unwrap();
        let name = f.name().to_string();
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut f, &mut data).unwrap();
        match name.strip_prefix("archive/") {
            Some("data.pkl") => pkl = data,
            Some(rest) if rest.starts_with("data/") => recs.push((rest.to_string(), data)),
            _ => {}
        }
    }
    (pkl, recs)
}
