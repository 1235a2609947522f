//! The `code_interpreter` tool: the model's Python, run in a bubblewrap sandbox.
//!
//! This module owns everything between "the model wrote some Python" and "here is the text
//! it gets back": finding `bwrap` and a system Python ([`SandboxConfig::detect`]), building
//! the sandbox (namespaces, read-only binds, a fresh tmpfs, rlimits, a non-root uid),
//! one long-lived interpreter per agent session so state persists between calls the way a
//! notebook keeps it ([`CodeInterpreter`]), wall-clock timeouts that kill the whole
//! sandbox, capped output, and the text the model sees ([`Execution::to_tool_output`]).
//!
//! Isolation, in layers (each one is exercised by `tests/escape.rs`):
//! - bubblewrap: new user, PID, IPC, UTS, network and (where possible) cgroup namespaces,
//!   nested user namespaces disabled, all capabilities dropped, a new terminal session
//!   (no TIOCSTI into the host's tty), a cleared environment, read-only `/usr` (plus the
//!   `/lib`, `/bin` symlinks), a private `/proc` and `/dev`, a read-only root, and a
//!   size-capped tmpfs as `/tmp`, the working directory. Nothing else of the host is visible: no `/etc`,
//!   `/home`, `/root`, project, cache or server data.
//! - rlimits set in the child before `exec` (so `bwrap` and Python inherit them): CPU
//!   seconds, address space, processes, file size, open files, no core dumps.
//! - When the server runs as root, `bwrap` itself is started as an unprivileged host uid
//!   (one per sandbox where the uid map allows): the kernel does not enforce
//!   `RLIMIT_NPROC` for host root even inside a user namespace, so without this a fork
//!   bomb would not be contained.
//! - `--die-with-parent` plus a dedicated long-lived spawner thread (the parent-death
//!   signal fires when the *thread* that forked `bwrap` exits, so sandboxes must not be
//!   forked from short-lived worker threads), and killing `bwrap`'s process group on
//!   timeout: `bwrap`'s death kills the sandbox's PID 1 and with it every process inside.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicI32, AtomicU32, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;

use crate::error::ToolError;

/// The driver run inside the sandbox: reads requests, executes them in one persistent
/// globals dict, captures fds 1/2, replies on a private fd.
const DRIVER: &str = include_str!("sandbox/driver.py");

/// How many sessions keep a live interpreter; the least recently used is evicted beyond.
pub const DEFAULT_MAX_SESSIONS: usize = 32;

/// The sandbox's uid and gid as seen inside (a normal user, not root).
const INNER_ID: &str = "1000";

/// Host uids for sandboxes when the server runs as root: one per live sandbox, so each
/// sandbox's `RLIMIT_NPROC` counts only its own processes. Used only where the process's
/// uid map covers the range; otherwise every sandbox runs as `nobody`.
const HOST_UID_BASE: u32 = 200_000;
const HOST_UID_COUNT: u32 = 4096;
const NOBODY: u32 = 65534;

/// The most bytes of `bwrap`'s own stderr (its errors, Python's fatal errors) kept.
const DIAG_CAP: usize = 4096;

/// How long a fresh interpreter may take to say it is ready.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);

/// Resource limits of one sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// CPU seconds one call may use (the driver lowers the soft `RLIMIT_CPU` to this much
    /// beyond what the interpreter has used; Python code sees an exception when it runs out).
    pub cpu_seconds: u64,
    /// Address space of each process (`RLIMIT_AS`).
    pub memory_bytes: u64,
    /// Processes and threads of the sandbox's uid (`RLIMIT_NPROC`).
    pub processes: u64,
    /// Largest file a process may write (`RLIMIT_FSIZE`); the tmpfs holds 4 of them.
    pub file_size_bytes: u64,
    /// Open file descriptors per process (`RLIMIT_NOFILE`).
    pub open_files: u64,
    /// Wall-clock time of one call; beyond it the whole sandbox is killed.
    pub wall_timeout: Duration,
    /// The most bytes of stdout, and of stderr, kept per call; the rest is discarded.
    pub output_bytes: usize,
    /// CPU seconds over the whole life of one interpreter (the hard `RLIMIT_CPU`).
    pub session_cpu_seconds: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            cpu_seconds: 10,
            memory_bytes: 1 << 30,
            processes: 64,
            file_size_bytes: 64 << 20,
            open_files: 256,
            wall_timeout: Duration::from_secs(30),
            output_bytes: 64 << 10,
            session_cpu_seconds: 300,
        }
    }
}

/// Where the sandbox's programs are, and its limits.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    pub bwrap: PathBuf,
    /// A Python under `/usr` (the only host tree bound into the sandbox).
    pub python: PathBuf,
    pub limits: Limits,
}

const INSTALL_HINT: &str = "install them with `apt-get install bubblewrap python3`";

impl SandboxConfig {
    /// Finds `bwrap` and a system `python3` under `/usr` (never a pyenv/venv shim, whose
    /// files would not be inside the sandbox), with default limits.
    pub fn detect() -> Result<SandboxConfig, ToolError> {
        let bwrap = first_executable(&["/usr/bin/bwrap", "/usr/local/bin/bwrap", "/bin/bwrap"])
            .ok_or_else(|| {
                ToolError::Unavailable(format!(
                    "code_interpreter: bubblewrap (bwrap) not found; {INSTALL_HINT}"
                ))
            })?;
        let python =
            first_executable(&["/usr/bin/python3", "/usr/local/bin/python3"]).ok_or_else(|| {
                ToolError::Unavailable(format!(
                    "code_interpreter: no system python3 under /usr; {INSTALL_HINT}"
                ))
            })?;
        Ok(SandboxConfig {
            bwrap,
            python,
            limits: Limits::default(),
        })
    }
}

fn first_executable(candidates: &[&str]) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    candidates.iter().map(PathBuf::from).find(|p| {
        std::fs::metadata(p)
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    })
}

/// The result of one call.
#[derive(Debug, Clone, Serialize)]
pub struct Execution {
    pub stdout: String,
    pub stderr: String,
    /// 0 when the code ran to the end, 1 after an uncaught exception, n for `sys.exit(n)`;
    /// when the interpreter itself died, its exit status (128 + signal for a signal);
    /// `None` when it was killed for running past the wall-clock timeout.
    pub exit_code: Option<i32>,
    pub timed_out: bool,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    /// This call started a fresh interpreter because the session's previous one died
    /// (timeout, crash, memory kill): earlier variables and files are gone.
    pub session_restarted: bool,
    /// The interpreter stopped during this call; its state was lost.
    pub state_lost: bool,
    /// Wall-clock time of the call, including starting an interpreter when one was needed.
    pub duration_ms: f64,
}

impl Execution {
    /// The text the model sees as the `ipython` message: a status line, then
    /// `[stdout]...[/stdout]` and `[stderr]...[/stderr]` (llama-stack's layout), then
    /// notes on truncation, timeouts and lost state.
    pub fn to_tool_output(&self) -> String {
        let mut out = String::new();
        if self.session_restarted {
            out.push_str(
                "note: the previous interpreter of this session stopped, so this code ran in a fresh one (earlier variables and files were lost)\n",
            );
        }
        out.push_str(&match (self.timed_out, self.exit_code, self.state_lost) {
            (true, _, _) => "timed out".to_string(),
            (false, Some(0), false) => "completed".to_string(),
            (false, Some(c), false) => format!("completed with exit code {c}"),
            (false, Some(c), true) => format!("the interpreter died (exit status {c})"),
            (false, None, _) => "the interpreter died".to_string(),
        });
        out.push('\n');
        for (name, text, cut) in [
            ("stdout", &self.stdout, self.stdout_truncated),
            ("stderr", &self.stderr, self.stderr_truncated),
        ] {
            if text.is_empty() && !cut {
                continue;
            }
            out.push_str(&format!("[{name}]\n{text}"));
            if !text.ends_with('\n') {
                out.push('\n');
            }
            if cut {
                out.push_str(&format!(
                    "[{name} truncated: output beyond the limit was discarded]\n"
                ));
            }
            out.push_str(&format!("[/{name}]\n"));
        }
        if self.timed_out {
            out.push_str("note: the code ran past the time limit and was killed; the interpreter's state was lost and the next call starts a fresh one\n");
        } else if self.state_lost {
            out.push_str("note: the interpreter stopped (e.g. out of memory, CPU limit, os._exit or a crash); its state was lost and the next call starts a fresh one\n");
        }
        out
    }
}

/// Runs code in sandboxed Python interpreters, one per session. `Send + Sync`: calls in
/// different sessions run in parallel, calls in one session one at a time. Dropping it
/// kills every sandbox.
pub struct CodeInterpreter {
    cfg: Arc<SandboxConfig>,
    spawner: Spawner,
    sessions: Mutex<Sessions>,
    max_sessions: usize,
    host_ids: HostIds,
}

impl std::fmt::Debug for CodeInterpreter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CodeInterpreter")
            .field("cfg", &self.cfg)
            .field("live_sessions", &self.live_sessions())
            .finish()
    }
}

#[derive(Default)]
struct Sessions {
    map: HashMap<String, Arc<Slot>>,
    clock: u64,
}

/// One session: its interpreter (if alive), behind a lock so calls take turns; `pid`
/// outside the lock so `close` and `Drop` can kill a sandbox in the middle of a call.
struct Slot {
    pid: Arc<AtomicI32>,
    last_used: std::sync::atomic::AtomicU64,
    state: Mutex<SlotState>,
}

#[derive(Default)]
struct SlotState {
    sandbox: Option<Sandbox>,
    /// The previous interpreter died: the next call says its state was lost.
    died: bool,
}

impl Slot {
    fn new() -> Slot {
        Slot {
            pid: Arc::new(AtomicI32::new(0)),
            last_used: std::sync::atomic::AtomicU64::new(0),
            state: Mutex::new(SlotState::default()),
        }
    }

    fn kill(&self) {
        kill_group(&self.pid);
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a lock leaves consistent data here (plain maps and options).
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl CodeInterpreter {
    pub fn new(cfg: SandboxConfig) -> CodeInterpreter {
        CodeInterpreter {
            cfg: Arc::new(cfg),
            spawner: Spawner::new(),
            sessions: Mutex::new(Sessions::default()),
            max_sessions: DEFAULT_MAX_SESSIONS,
            host_ids: HostIds::detect(),
        }
    }

    /// Bounds the number of live sessions (at least 1); beyond it the least recently used
    /// session's interpreter is killed.
    pub fn with_max_sessions(mut self, n: usize) -> CodeInterpreter {
        self.max_sessions = n.max(1);
        self
    }

    pub fn config(&self) -> &SandboxConfig {
        &self.cfg
    }

    /// Runs `code` in `session`'s interpreter (started on first use), whose variables and
    /// working-directory files persist between calls until [`close`](Self::close).
    pub fn run(&self, session: &str, code: &str) -> Result<Execution, ToolError> {
        let slot = {
            let mut s = lock(&self.sessions);
            s.clock += 1;
            let now = s.clock;
            let slot = s
                .map
                .entry(session.to_string())
                .or_insert_with(|| Arc::new(Slot::new()))
                .clone();
            slot.last_used.store(now, Ordering::Relaxed);
            while s.map.len() > self.max_sessions {
                let oldest = s
                    .map
                    .iter()
                    .filter(|(k, _)| k.as_str() != session)
                    .min_by_key(|(_, v)| v.last_used.load(Ordering::Relaxed))
                    .map(|(k, _)| k.clone());
                match oldest.and_then(|k| s.map.remove(&k)) {
                    Some(evicted) => evicted.kill(),
                    None => break,
                }
            }
            slot
        };
        let mut state = lock(&slot.state);
        self.run_in(&slot, &mut state, code)
    }

    /// Runs `code` in a fresh interpreter that is removed afterwards.
    pub fn run_once(&self, code: &str) -> Result<Execution, ToolError> {
        let slot = Slot::new();
        let mut state = lock(&slot.state);
        let result = self.run_in(&slot, &mut state, code);
        state.sandbox = None;
        result
    }

    /// Ends a session: kills its interpreter and drops its files.
    pub fn close(&self, session: &str) {
        let removed = lock(&self.sessions).map.remove(session);
        if let Some(slot) = removed {
            slot.kill();
        }
    }

    /// Sessions with an interpreter (or one being started).
    pub fn live_sessions(&self) -> usize {
        lock(&self.sessions).map.len()
    }

    fn run_in(
        &self,
        slot: &Slot,
        state: &mut SlotState,
        code: &str,
    ) -> Result<Execution, ToolError> {
        let start = Instant::now();
        let limits = &self.cfg.limits;
        let mut restarted = false;
        if state.sandbox.as_mut().is_none_or(|s| !s.alive()) {
            // A sandbox found dead here (killed by `close` racing, or died between calls)
            // counts as a restart too.
            restarted = state.died || state.sandbox.is_some();
            state.sandbox = None;
            let sandbox = Sandbox::start(&self.cfg, &self.spawner, &self.host_ids, &slot.pid)?;
            state.sandbox = Some(sandbox);
            state.died = false;
        }
        let Some(sandbox) = state.sandbox.as_mut() else {
            return Err(ToolError::Unavailable(
                "code_interpreter: no sandbox".into(),
            ));
        };
        let outcome = sandbox.call(code, limits);
        let mut exec = match outcome {
            CallOutcome::Reply(r) => Execution {
                stdout: r.stdout,
                stderr: r.stderr,
                exit_code: Some(r.exit_code),
                timed_out: false,
                stdout_truncated: r.stdout_truncated,
                stderr_truncated: r.stderr_truncated,
                session_restarted: false,
                state_lost: false,
                duration_ms: 0.0,
            },
            CallOutcome::TimedOut => {
                let _ = sandbox.kill_and_wait();
                Execution {
                    stdout: String::new(),
                    stderr: String::new(),
                    exit_code: None,
                    timed_out: true,
                    stdout_truncated: false,
                    stderr_truncated: false,
                    session_restarted: false,
                    state_lost: true,
                    duration_ms: 0.0,
                }
            }
            CallOutcome::Died => {
                let status = sandbox.kill_and_wait();
                let diag = sandbox.diagnostics();
                Execution {
                    stdout: String::new(),
                    stderr: diag,
                    exit_code: status,
                    timed_out: false,
                    stdout_truncated: false,
                    stderr_truncated: false,
                    session_restarted: false,
                    state_lost: true,
                    duration_ms: 0.0,
                }
            }
        };
        if exec.state_lost {
            state.sandbox = None;
            state.died = true;
        }
        exec.session_restarted = restarted;
        exec.duration_ms = start.elapsed().as_secs_f64() * 1000.0;
        Ok(exec)
    }
}

impl Drop for CodeInterpreter {
    fn drop(&mut self) {
        let slots: Vec<Arc<Slot>> = lock(&self.sessions).map.drain().map(|(_, v)| v).collect();
        for slot in &slots {
            slot.kill();
        }
        // Reap what is not in the middle of a call (those are reaped by their caller).
        for slot in slots {
            if let Ok(mut st) = slot.state.try_lock() {
                st.sandbox = None;
            }
        }
    }
}

/// SIGKILLs the process group of the `bwrap` whose pid is stored (0: none).
fn kill_group(pid: &AtomicI32) {
    let p = pid.load(Ordering::SeqCst);
    if p > 0 {
        // SAFETY: kill(2) with a negative pid signals a process group; no memory involved.
        unsafe {
            libc::kill(-p, libc::SIGKILL);
        }
    }
}

/// Host uids for unprivileged `bwrap` processes when we are root.
struct HostIds {
    root: bool,
    per_sandbox: bool,
    next: AtomicU32,
}

impl HostIds {
    fn detect() -> HostIds {
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        let per_sandbox = std::fs::read_to_string("/proc/self/uid_map")
            .map(|m| uid_map_covers(&m, HOST_UID_BASE, HOST_UID_COUNT))
            .unwrap_or(false);
        HostIds {
            root,
            per_sandbox,
            next: AtomicU32::new(0),
        }
    }

    /// The host uid for the next sandbox, or `None` to keep ours (not root).
    fn pick(&self) -> Option<u32> {
        if !self.root {
            return None;
        }
        if self.per_sandbox {
            Some(HOST_UID_BASE + self.next.fetch_add(1, Ordering::Relaxed) % HOST_UID_COUNT)
        } else {
            Some(NOBODY)
        }
    }
}

/// Whether a `/proc/self/uid_map` maps all of `base..base+count`.
fn uid_map_covers(map: &str, base: u32, count: u32) -> bool {
    map.lines().any(|line| {
        let f: Vec<u64> = line
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        matches!(f.as_slice(), [inside, _, len]
            if *inside <= u64::from(base) && u64::from(base) + u64::from(count) <= inside + len)
    })
}

/// A thread that lives as long as the interpreter and forks every `bwrap`: the
/// parent-death signal `--die-with-parent` sets fires when the forking *thread* exits,
/// so forking from the caller's (maybe short-lived) thread would kill sessions at random.
struct Spawner {
    tx: Option<Sender<SpawnJob>>,
    thread: Option<JoinHandle<()>>,
}

type SpawnJob = Box<dyn FnOnce() + Send>;

impl Spawner {
    fn new() -> Spawner {
        let (tx, rx) = mpsc::channel::<SpawnJob>();
        let thread = std::thread::Builder::new()
            .name("sandbox-spawner".into())
            .spawn(move || {
                for job in rx {
                    job();
                }
            })
            .ok();
        Spawner {
            tx: Some(tx),
            thread,
        }
    }

    fn spawn(&self, mut cmd: Command) -> std::io::Result<Child> {
        let (done_tx, done_rx) = mpsc::channel();
        let job: SpawnJob = Box::new(move || {
            let _ = done_tx.send(cmd.spawn());
        });
        let unavailable = || std::io::Error::other("the sandbox spawner thread is gone");
        self.tx
            .as_ref()
            .ok_or_else(unavailable)?
            .send(job)
            .map_err(|_| unavailable())?;
        done_rx.recv().map_err(|_| unavailable())?
    }
}

impl Drop for Spawner {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A reply of the driver.
#[derive(Debug, serde::Deserialize)]
struct Reply {
    exit_code: i32,
    stdout: String,
    stderr: String,
    stdout_truncated: bool,
    stderr_truncated: bool,
}

enum CallOutcome {
    Reply(Reply),
    TimedOut,
    Died,
}

/// One running sandboxed interpreter.
struct Sandbox {
    child: Child,
    stdin: ChildStdin,
    replies: Receiver<Result<Value, String>>,
    diag: Arc<Mutex<Vec<u8>>>,
    pid: Arc<AtomicI32>,
    next_id: u64,
    reaped: bool,
}

impl Sandbox {
    fn start(
        cfg: &SandboxConfig,
        spawner: &Spawner,
        ids: &HostIds,
        pid_slot: &Arc<AtomicI32>,
    ) -> Result<Sandbox, ToolError> {
        let cmd = command(cfg, ids.pick());
        let mut child = spawner.spawn(cmd).map_err(|e| {
            ToolError::Unavailable(format!(
                "code_interpreter: cannot start {}: {e}; {INSTALL_HINT}",
                cfg.bwrap.display()
            ))
        })?;
        let pid = i32::try_from(child.id()).unwrap_or(0);
        pid_slot.store(pid, Ordering::SeqCst);
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(ToolError::Unavailable(
                "code_interpreter: sandbox pipes missing".into(),
            ));
        };
        // Bounds one reply line: two capped streams JSON-escaped (up to 6 bytes per byte
        // for control characters) plus framing.
        let max_line = cfg
            .limits
            .output_bytes
            .saturating_mul(12)
            .saturating_add(64 << 10);
        let (tx, replies) = mpsc::channel();
        std::thread::Builder::new()
            .name("sandbox-replies".into())
            .spawn(move || read_replies(stdout, max_line, &tx))?;
        let diag = Arc::new(Mutex::new(Vec::new()));
        let diag2 = diag.clone();
        std::thread::Builder::new()
            .name("sandbox-stderr".into())
            .spawn(move || drain_capped(stderr, &diag2))?;
        let mut sandbox = Sandbox {
            child,
            stdin,
            replies,
            diag,
            pid: pid_slot.clone(),
            next_id: 0,
            reaped: false,
        };
        match sandbox.replies.recv_timeout(STARTUP_TIMEOUT) {
            Ok(Ok(v)) if v.get("ready").and_then(Value::as_bool) == Some(true) => Ok(sandbox),
            _ => {
                let status = sandbox.kill_and_wait();
                Err(ToolError::Unavailable(format!(
                    "code_interpreter: the sandbox did not start (exit status {status:?}): {}",
                    sandbox.diagnostics().trim()
                )))
            }
        }
    }

    fn alive(&mut self) -> bool {
        !self.reaped && matches!(self.child.try_wait(), Ok(None))
    }

    fn call(&mut self, code: &str, limits: &Limits) -> CallOutcome {
        self.next_id += 1;
        let id = self.next_id;
        let req = serde_json::json!({
            "id": id, "code": code, "cpu": limits.cpu_seconds, "cap": limits.output_bytes,
        });
        let mut line = req.to_string();
        line.push('\n');
        if self.stdin.write_all(line.as_bytes()).is_err() || self.stdin.flush().is_err() {
            return CallOutcome::Died;
        }
        let deadline = Instant::now() + limits.wall_timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.replies.recv_timeout(left) {
                // Replies are matched by id: a line the user's code forged on the private
                // fd is skipped (or, if malformed, ends the interpreter).
                Ok(Ok(v)) if v.get("id").and_then(Value::as_u64) == Some(id) => {
                    return match serde_json::from_value::<Reply>(v) {
                        Ok(r) => CallOutcome::Reply(r),
                        Err(_) => CallOutcome::Died,
                    };
                }
                Ok(Ok(_)) => continue,
                Ok(Err(_)) | Err(RecvTimeoutError::Disconnected) => return CallOutcome::Died,
                Err(RecvTimeoutError::Timeout) => return CallOutcome::TimedOut,
            }
        }
    }

    /// Kills the sandbox (its process group; PID 1 inside dies with `bwrap`, and every
    /// process inside with PID 1) and reaps `bwrap`. Returns its exit status.
    fn kill_and_wait(&mut self) -> Option<i32> {
        if self.reaped {
            return None;
        }
        kill_group(&self.pid);
        let status = self.child.wait().ok();
        self.pid.store(0, Ordering::SeqCst);
        self.reaped = true;
        status.and_then(|s| s.code().or_else(|| s.signal().map(|sig| 128 + sig)))
    }

    fn diagnostics(&self) -> String {
        String::from_utf8_lossy(&lock(&self.diag)).into_owned()
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = self.kill_and_wait();
    }
}

/// Forwards the driver's reply lines; stops at EOF or at a line longer than `max_line`.
fn read_replies(
    stdout: std::process::ChildStdout,
    max_line: usize,
    tx: &Sender<Result<Value, String>>,
) {
    let mut r = BufReader::new(stdout);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let limit = u64::try_from(max_line).unwrap_or(u64::MAX);
        match (&mut r).take(limit).read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => return,
            Ok(_) if buf.last() != Some(&b'\n') => {
                let _ = tx.send(Err("reply too long or cut".into()));
                return;
            }
            Ok(_) => {
                let v = serde_json::from_slice::<Value>(&buf).map_err(|e| e.to_string());
                if tx.send(v).is_err() {
                    return;
                }
            }
        }
    }
}

/// Keeps the first `DIAG_CAP` bytes of a stream and discards the rest.
fn drain_capped(mut src: impl Read, keep: &Mutex<Vec<u8>>) {
    let mut chunk = [0u8; 8192];
    loop {
        match src.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                let mut k = lock(keep);
                let room = DIAG_CAP.saturating_sub(k.len());
                k.extend_from_slice(&chunk[..n.min(room)]);
            }
        }
    }
}

/// The `bwrap` command line of one sandbox.
fn command(cfg: &SandboxConfig, host_uid: Option<u32>) -> Command {
    let l = &cfg.limits;
    let mut cmd = Command::new(&cfg.bwrap);
    let tmpfs_size = l.file_size_bytes.saturating_mul(4).max(1 << 20).to_string();
    cmd.args([
        "--unshare-all",
        "--unshare-user",
        "--disable-userns",
        "--die-with-parent",
        "--new-session",
    ])
    .args(["--cap-drop", "ALL", "--hostname", "sandbox", "--clearenv"])
    .args(["--setenv", "PATH", "/usr/local/bin:/usr/bin:/bin"])
    .args(["--setenv", "HOME", "/tmp", "--setenv", "TMPDIR", "/tmp"])
    .args([
        "--setenv",
        "LANG",
        "C.UTF-8",
        "--setenv",
        "PYTHONIOENCODING",
        "utf-8",
    ])
    .args(["--setenv", "MPLBACKEND", "Agg"])
    .args(["--ro-bind", "/usr", "/usr"])
    .args([
        "--symlink",
        "usr/lib",
        "/lib",
        "--symlink",
        "usr/lib64",
        "/lib64",
    ])
    .args([
        "--symlink",
        "usr/bin",
        "/bin",
        "--symlink",
        "usr/sbin",
        "/sbin",
    ])
    .args(["--proc", "/proc", "--dev", "/dev", "--remount-ro", "/dev"])
    .args(["--size", &tmpfs_size, "--tmpfs", "/tmp"])
    // bwrap's root and /dev are unbounded tmpfses: read-only (device nodes still
    // work), so /tmp (size-capped) is the
    // only place the code can write.
    .args(["--remount-ro", "/", "--chdir", "/tmp"])
    .args(["--uid", INNER_ID, "--gid", INNER_ID, "--"])
    .arg(&cfg.python)
    .args(["-I", "-c", DRIVER])
    .env_clear()
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    // Its own process group, so a timeout kills bwrap (and through it the sandbox)
    // without touching ours.
    .process_group(0);
    let nproc = match host_uid {
        Some(uid) => {
            cmd.uid(uid).gid(uid);
            l.processes
        }
        // Not root: RLIMIT_NPROC counts all of our uid's processes on the host, so the
        // sandbox's allowance comes on top of what runs already.
        None => l.processes.saturating_add(own_tasks()),
    };
    let rl = [
        (libc::RLIMIT_CPU, l.session_cpu_seconds.max(l.cpu_seconds)),
        (libc::RLIMIT_AS, l.memory_bytes),
        (libc::RLIMIT_NPROC, nproc),
        (libc::RLIMIT_FSIZE, l.file_size_bytes),
        (libc::RLIMIT_NOFILE, l.open_files),
        (libc::RLIMIT_CORE, 0),
    ];
    // SAFETY: the closure runs between fork and exec and only calls setrlimit(2), which
    // is async-signal-safe; it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            for (res, v) in rl {
                let lim = libc::rlimit {
                    rlim_cur: v,
                    rlim_max: v,
                };
                if libc::setrlimit(res, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    cmd
}

/// Tasks (processes and threads) running as our real uid, from /proc.
fn own_tasks() -> u64 {
    // SAFETY: getuid has no preconditions.
    let uid = unsafe { libc::getuid() };
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut n = 0;
    for e in dir.flatten() {
        let p = e.path();
        if !p
            .file_name()
            .and_then(|s| s.to_str())
            .is_some_and(|s| s.bytes().all(|b| b.is_ascii_digit()))
        {
            continue;
        }
        if let Ok(status) = std::fs::read_to_string(p.join("status")) {
            let mut mine = false;
            let mut threads = 1;
            for line in status.lines() {
                if let Some(rest) = line.strip_prefix("Uid:") {
                    mine = rest.split_whitespace().next() == Some(uid.to_string().as_str());
                } else if let Some(rest) = line.strip_prefix("Threads:") {
                    threads = rest.trim().parse().unwrap_or(1);
                }
            }
            if mine {
                n += threads;
            }
        }
    }
    n
}

#[allow(dead_code)]
fn _assert_send_sync() {
    fn is<T: Send + Sync>() {}
    is::<CodeInterpreter>();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uid_map_coverage() {
        assert!(uid_map_covers(
            "         0          0 4294967295\n",
            HOST_UID_BASE,
            HOST_UID_COUNT
        ));
        assert!(!uid_map_covers(
            "0 100000 65536\n",
            HOST_UID_BASE,
            HOST_UID_COUNT
        ));
    }

    #[test]
    fn tool_output_marks_truncation_and_timeouts() {
        let e = Execution {
            stdout: "42\n".into(),
            stderr: String::new(),
            exit_code: None,
            timed_out: true,
            stdout_truncated: true,
            stderr_truncated: false,
            session_restarted: false,
            state_lost: true,
            duration_ms: 1.0,
        };
        let t = e.to_tool_output();
        assert!(
            t.starts_with("timed out\n[stdout]\n42\n[stdout truncated"),
            "{t}"
        );
        assert!(t.contains("state was lost"), "{t}");
    }
}
