//! How long operations report progress without knowing how it is drawn.
//!
//! The binary implements [`Progress`] with indicatif bars on stderr (hidden with `--quiet`
//! or when stderr is not a terminal); tests and library users pass [`NoProgress`].

/// Receives progress of a pull, one file at a time.
pub trait Progress {
    /// A step without a byte count, e.g. "running pip download".
    fn message(&mut self, text: &str);
    /// A file starts: `total` bytes if known, `done` of them already on disk (a resumed
    /// download starts above zero).
    fn start_file(&mut self, name: &str, total: Option<u64>, done: u64);
    /// `bytes` more bytes of the current file arrived.
    fn advance(&mut self, bytes: u64);
    /// The current file is complete (or failed); clear its bar.
    fn finish_file(&mut self);
}

/// Reports nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn message(&mut self, _text: &str) {}
    fn start_file(&mut self, _name: &str, _total: Option<u64>, _done: u64) {}
    fn advance(&mut self, _bytes: u64) {}
    fn finish_file(&mut self) {}
}
