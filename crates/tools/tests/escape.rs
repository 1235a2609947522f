//! Containment tests of the `code_interpreter` sandbox: each test is one escape attempt
//! by the sandboxed code, asserts the specific way it is stopped, and then checks that a
//! normal call in the same interpreter still works. Nothing is skipped: without
//! bubblewrap these tests fail and say how to get it (`scripts/test` installs it).

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use ferrollama_tools::sandbox::{CodeInterpreter, Execution, Limits, SandboxConfig};

fn config(limits: Limits) -> SandboxConfig {
    match SandboxConfig::detect() {
        Ok(mut c) => {
            c.limits = limits;
            c
        }
        Err(e) => panic!(
            "the code interpreter's sandbox is unavailable ({e}); scripts/test installs bubblewrap and python3 (apt-get install -y bubblewrap python3)"
        ),
    }
}

fn interp() -> CodeInterpreter {
    CodeInterpreter::new(config(Limits {
        wall_timeout: Duration::from_secs(20),
        ..Limits::default()
    }))
}

fn run(ci: &CodeInterpreter, session: &str, code: &str) -> Execution {
    match ci.run(session, code) {
        Ok(e) => e,
        Err(e) => panic!("sandbox failed to run {code:?}: {e}"),
    }
}

/// After an attempt: the same interpreter still answers a normal call.
fn still_works(ci: &CodeInterpreter, session: &str) {
    let e = run(ci, session, "6 * 7");
    assert_eq!(e.stdout, "42\n", "{e:?}");
    assert_eq!(e.exit_code, Some(0), "{e:?}");
}

/// A fresh host directory for canaries, outside the sandbox.
fn host_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ferrollama-escape-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("create host temp dir");
    d
}

/// Host pids whose command line contains `token`.
fn host_procs_with(token: &str) -> Vec<u32> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if let Ok(c) = std::fs::read(e.path().join("cmdline"))
            && String::from_utf8_lossy(&c).contains(token)
        {
            found.push(pid);
        }
    }
    found
}

/// Waits (up to 3 s: the kernel tears a PID namespace down asynchronously) until no host
/// process mentions `token`.
fn assert_no_procs(token: &str) {
    let start = Instant::now();
    loop {
        let left = host_procs_with(token);
        if left.is_empty() {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "orphans survive: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn py_str(s: &str) -> String {
    serde_json::to_string(s).expect("json string")
}

#[test]
fn reads_outside_fail() {
    let ci = interp();
    let project = host_dir("project");
    let canary = project.join("canary.txt");
    std::fs::write(&canary, "PROJECT-CANARY-7f3a").expect("write canary");
    let home = PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/root".into()));
    let home_canary = home.join(format!(".ferrollama-canary-{}", std::process::id()));
    std::fs::write(&home_canary, "HOME-CANARY-91bc").expect("write home canary");
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
    let paths = [
        canary.display().to_string(),
        home_canary.display().to_string(),
        manifest.to_string(),
        "/root/.bashrc".into(),
        "/work".into(),
        "/etc/passwd".into(),
        "/etc/shadow".into(),
        "/home".into(),
    ];
    let list = serde_json::to_string(&paths).expect("json");
    let code = format!(
        "import os\nfor p in {list}:\n    try:\n        print('LEAK', p, open(p).read()[:40] if os.path.isfile(p) else os.listdir(p))\n    except OSError as e:\n        print('blocked', p, type(e).__name__)\n"
    );
    let e = run(&ci, "s", &code);
    let _ = std::fs::remove_file(&home_canary);
    let _ = std::fs::remove_dir_all(&project);
    assert!(!e.stdout.contains("LEAK"), "{}", e.stdout);
    assert!(!e.stdout.contains("CANARY"), "{}", e.stdout);
    assert_eq!(e.stdout.matches("blocked").count(), paths.len(), "{e:?}");
    still_works(&ci, "s");
}

#[test]
fn writes_outside_do_not_reach_the_host() {
    let ci = interp();
    let dir = host_dir("write");
    let target = dir.join("pwned.txt");
    let code = format!(
        "import os\np = {t}\nos.makedirs(os.path.dirname(p), exist_ok=True)\nopen(p, 'w').write('x')\nprint('inside', os.path.exists(p))\nfor q in ['/usr/pwned', '/pwned', '/proc/pwned', '/dev/pwned']:\n    try:\n        open(q, 'w').write('x'); print('WROTE', q)\n    except OSError as e:\n        print('blocked', q, type(e).__name__)\n",
        t = py_str(&target.display().to_string())
    );
    let e = run(&ci, "s", &code);
    // Inside, /tmp is the sandbox's own tmpfs: the write lands there, not on the host.
    assert!(e.stdout.contains("inside True"), "{e:?}");
    assert!(!e.stdout.contains("WROTE"), "{e:?}");
    assert!(!target.exists(), "the sandbox wrote {}", target.display());
    assert_eq!(std::fs::read_dir(&dir).map(|d| d.count()).unwrap_or(99), 0);
    assert!(!std::path::Path::new("/usr/pwned").exists());
    let _ = std::fs::remove_dir_all(&dir);
    still_works(&ci, "s");
}

#[test]
fn loopback_and_network_are_unreachable() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let port = listener.local_addr().expect("addr").port();
    let ci = interp();
    let code = format!(
        "import socket\nfor host, port in [('127.0.0.1', {port}), ('1.1.1.1', 80), ('10.0.2.2', 22)]:\n    try:\n        socket.create_connection((host, port), timeout=2); print('CONNECTED', host)\n    except OSError as e:\n        print('refused', host, type(e).__name__, e.errno)\n"
    );
    let e = run(&ci, "s", &code);
    assert!(!e.stdout.contains("CONNECTED"), "{e:?}");
    assert_eq!(e.stdout.matches("refused").count(), 3, "{e:?}");
    match listener.accept() {
        Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("a connection reached the host listener: {other:?}"),
    }
    still_works(&ci, "s");
}

#[test]
fn fork_bomb_is_contained() {
    let ci = CodeInterpreter::new(config(Limits {
        processes: 24,
        wall_timeout: Duration::from_secs(30),
        ..Limits::default()
    }));
    let code = "import os, time\npids = []\ntry:\n    while True:\n        p = os.fork()\n        if p == 0:\n            try:\n                while True:\n                    os.fork()\n            except OSError:\n                pass\n            time.sleep(1)\n            os._exit(0)\n        pids.append(p)\nexcept OSError as e:\n    print('fork refused after', len(pids), e.errno)\nfor p in pids:\n    os.waitpid(p, 0)\n";
    let start = Instant::now();
    let e = run(&ci, "s", code);
    assert!(e.stdout.contains("fork refused after"), "{e:?}");
    assert!(!e.timed_out, "{e:?}");
    assert!(start.elapsed() < Duration::from_secs(30));
    // The host can still start processes.
    let ok = Command::new("/bin/true").status().expect("host fork works");
    assert!(ok.success());
    still_works(&ci, "s");
}

#[test]
fn memory_bomb_is_contained() {
    let ci = CodeInterpreter::new(config(Limits {
        memory_bytes: 512 << 20,
        wall_timeout: Duration::from_secs(30),
        ..Limits::default()
    }));
    let e = run(&ci, "s", "x = bytearray(4 * 1024**3)");
    assert!(e.stderr.contains("MemoryError"), "{e:?}");
    let e = run(
        &ci,
        "s",
        "a = []\nwhile True:\n    a.append(bytearray(32 * 1024**2))",
    );
    assert!(e.stderr.contains("MemoryError") || e.state_lost, "{e:?}");
    assert!(!e.timed_out, "{e:?}");
    still_works(&ci, "s");
}

#[test]
fn infinite_loop_is_killed_with_its_children() {
    let ci = CodeInterpreter::new(config(Limits {
        wall_timeout: Duration::from_secs(2),
        cpu_seconds: 60,
        ..Limits::default()
    }));
    let token = format!("{}.{}", 700_000 + std::process::id() % 1000, 4711);
    let code = format!(
        "import subprocess\nsubprocess.Popen(['/usr/bin/sleep', '{token}'])\nx = 0\nwhile True:\n    x += 1\n"
    );
    let start = Instant::now();
    let e = run(&ci, "s", &code);
    assert!(e.timed_out, "{e:?}");
    assert_eq!(e.exit_code, None);
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    assert!(e.to_tool_output().contains("state was lost"));
    assert_no_procs(&token);
    let e = run(&ci, "s", "6 * 7");
    assert!(e.session_restarted, "{e:?}");
    assert_eq!(e.stdout, "42\n");
}

#[test]
fn cpu_limit_stops_a_busy_loop_and_keeps_the_session() {
    let ci = CodeInterpreter::new(config(Limits {
        cpu_seconds: 1,
        wall_timeout: Duration::from_secs(30),
        ..Limits::default()
    }));
    run(&ci, "s", "kept = 'yes'");
    let e = run(&ci, "s", "while True:\n    pass");
    assert!(!e.timed_out, "{e:?}");
    assert!(e.stderr.contains("CPU time limit exceeded"), "{e:?}");
    let e = run(&ci, "s", "kept");
    assert_eq!(e.stdout, "'yes'\n", "{e:?}");
}

#[test]
fn huge_output_is_capped() {
    let ci = interp();
    let rss_before = rss_kib();
    let e = run(
        &ci,
        "s",
        "print('x' * (100 * 1024 * 1024))\nimport subprocess\nsubprocess.run(['/usr/bin/head', '-c', '100000000', '/dev/zero'])",
    );
    let cap = Limits::default().output_bytes;
    assert!(e.stdout.len() <= cap, "{}", e.stdout.len());
    assert!(e.stdout_truncated, "{e:?}");
    assert!(e.to_tool_output().contains("[stdout truncated"));
    let grown = rss_kib().saturating_sub(rss_before);
    assert!(grown < 50 * 1024, "host memory grew by {grown} KiB");
    still_works(&ci, "s");
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

#[test]
fn signals_do_not_reach_the_host() {
    let mut bystander = Command::new("/usr/bin/sleep")
        .arg("60")
        .spawn()
        .expect("spawn sleep");
    let ci = interp();
    let code = format!(
        "import os, signal\nfor pid in [os.getppid(), -1, {me}, {by}, 1]:\n    try:\n        os.kill(pid, signal.SIGKILL); print('sent', pid)\n    except OSError as e:\n        print('denied', pid, type(e).__name__)\n",
        me = std::process::id(),
        by = bystander.id()
    );
    let e = run(&ci, "s", &code);
    assert!(
        e.stdout
            .contains(&format!("denied {} ProcessLookupError", std::process::id())),
        "{e:?}"
    );
    assert!(
        e.stdout
            .contains(&format!("denied {} ProcessLookupError", bystander.id())),
        "{e:?}"
    );
    assert!(
        bystander.try_wait().expect("try_wait").is_none(),
        "the host process was killed"
    );
    let _ = bystander.kill();
    let _ = bystander.wait();
    still_works(&ci, "s");
}

#[test]
fn proc_shows_only_the_sandbox() {
    let ci = interp();
    let e = run(
        &ci,
        "s",
        "import os\npids = sorted(int(p) for p in os.listdir('/proc') if p.isdigit())\nprint(pids)\nprint(open('/proc/1/cmdline').read().split('\\0')[0])\nprint(max(len(open('/proc/%d/cmdline' % p).read()) for p in pids) > 0)",
    );
    let lines: Vec<&str> = e.stdout.lines().collect();
    let pids: Vec<u32> =
        serde_json::from_str(lines.first().copied().unwrap_or("x")).expect("pid list");
    assert!(pids.len() <= 4, "{pids:?}");
    assert!(pids.iter().all(|p| *p < 100), "{pids:?}");
    assert!(!pids.contains(&std::process::id()) || std::process::id() < 100);
    assert!(lines.get(1).is_some_and(|l| l.ends_with("bwrap")), "{e:?}");
    still_works(&ci, "s");
}

#[test]
fn symlink_and_dotdot_tricks_fail() {
    let ci = interp();
    let code = "import os\nos.symlink('/etc/shadow', 'shadow')\nos.symlink('../../../../../../root', 'up')\nfor p in ['shadow', 'up/.bashrc', '../../../../etc/passwd', '/proc/self/root/../../etc/shadow', '/proc/1/root/etc/passwd', '/proc/self/cwd/../../../work', '/tmp/../root', '/proc/1/cwd/../../home']:\n    try:\n        print('LEAK', p, open(p).read(20) if not os.path.isdir(p) else os.listdir(p))\n    except OSError as e:\n        print('blocked', p, type(e).__name__)\nprint(sorted(os.listdir('/')))";
    let e = run(&ci, "s", code);
    assert!(!e.stdout.contains("LEAK"), "{e:?}");
    assert_eq!(e.stdout.matches("blocked").count(), 8, "{e:?}");
    let root_listing = e.stdout.lines().last().unwrap_or("");
    for host_only in ["'etc'", "'root'", "'home'", "'work'", "'var'"] {
        assert!(!root_listing.contains(host_only), "{root_listing}");
    }
    still_works(&ci, "s");
}

#[test]
fn no_privilege_gain() {
    let ci = interp();
    let code = "import os, subprocess\nprint('uid', os.getuid(), os.geteuid())\ntry:\n    os.setuid(0); print('SETUID')\nexcept OSError as e:\n    print('setuid denied', type(e).__name__)\nst = open('/proc/self/status').read()\nprint([l for l in st.splitlines() if l.startswith(('NoNewPrivs', 'CapEff', 'CapPrm', 'CapBnd'))])\nfor cmd in [['unshare', '-r', 'id', '-u'], ['mount', '-t', 'tmpfs', 'none', '/tmp'], ['su', '-c', 'id'], ['chroot', '/', 'true']]:\n    try:\n        r = subprocess.run(cmd, capture_output=True, text=True, timeout=5)\n        print(cmd[0], 'rc', r.returncode, r.stdout.strip())\n    except OSError as e:\n        print(cmd[0], 'missing', type(e).__name__)\n";
    let e = run(&ci, "s", code);
    assert!(e.stdout.contains("uid 1000 1000"), "{e:?}");
    assert!(e.stdout.contains("setuid denied"), "{e:?}");
    assert!(!e.stdout.contains("SETUID"), "{e:?}");
    assert!(e.stdout.contains("'NoNewPrivs:\\t1'"), "{e:?}");
    assert!(e.stdout.contains("'CapEff:\\t0000000000000000'"), "{e:?}");
    for tool in ["unshare", "mount", "su", "chroot"] {
        let line = e
            .stdout
            .lines()
            .find(|l| l.starts_with(&format!("{tool} ")))
            .unwrap_or("");
        assert!(
            line.contains("missing") || (line.contains(" rc ") && !line.contains(" rc 0")),
            "{tool} succeeded: {line:?}\n{e:?}"
        );
    }
    still_works(&ci, "s");
}

#[test]
fn ptrace_and_proc_mem_fail() {
    let ci = interp();
    // Host processes are invisible (ESRCH). The only other process the code can reach
    // is the sandbox's own init (bwrap, PID 1): same uid, no capabilities and
    // no_new_privs, so attaching to it gains nothing; checked here too.
    let code = format!(
        "import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\nr = libc.ptrace(16, {host}, None, None)\nprint('attach', {host}, r, ctypes.get_errno())\nprint([l for l in open('/proc/1/status').read().splitlines() if l.startswith(('CapEff', 'CapPrm', 'NoNewPrivs', 'Uid'))])\nfor p in ['/proc/{host}/mem', '/proc/{host}/environ']:\n    try:\n        open(p, 'rb').read(1); print('READ', p)\n    except OSError as e:\n        print('blocked', p, type(e).__name__)\n",
        host = std::process::id()
    );
    let e = run(&ci, "s", &code);
    assert!(!e.stdout.contains("READ"), "{e:?}");
    assert_eq!(e.stdout.matches("blocked").count(), 2, "{e:?}");
    assert!(
        e.stdout
            .contains(&format!("attach {} -1 3", std::process::id())),
        "{e:?}"
    );
    for want in [
        "'CapEff:\\t0000000000000000'",
        "'CapPrm:\\t0000000000000000'",
        "'NoNewPrivs:\\t1'",
        "'Uid:\\t1000",
    ] {
        assert!(e.stdout.contains(want), "{want} {e:?}");
    }
    still_works(&ci, "s");
}

#[test]
fn host_environment_does_not_leak() {
    let ci = interp();
    let e = run(
        &ci,
        "s",
        "import os, json\nprint(json.dumps(sorted(os.environ)))",
    );
    let keys: Vec<String> = serde_json::from_str(e.stdout.trim()).expect("env keys");
    let allowed = [
        "HOME",
        "LANG",
        "LC_CTYPE",
        "MPLBACKEND",
        "PATH",
        "PWD",
        "PYTHONIOENCODING",
        "TMPDIR",
    ];
    for k in &keys {
        assert!(
            allowed.contains(&k.as_str()),
            "host env leaked: {k} in {keys:?}"
        );
    }
    assert!(std::env::var_os("CARGO_MANIFEST_DIR").is_some() || std::env::var_os("PATH").is_some());
    still_works(&ci, "s");
}

#[test]
fn sessions_are_isolated() {
    let ci = interp();
    run(&ci, "a", "secret = 41\nopen('a.txt', 'w').write('A')");
    let e = run(
        &ci,
        "b",
        "import os\nprint('secret' in globals(), os.listdir('.'))",
    );
    assert_eq!(e.stdout, "False []\n", "{e:?}");
    let e = run(&ci, "a", "import os\nprint(secret + 1, os.listdir('.'))");
    assert_eq!(e.stdout, "42 ['a.txt']\n", "{e:?}");
    assert_eq!(ci.live_sessions(), 2);
    ci.close("a");
    assert_eq!(ci.live_sessions(), 1);
    let e = run(&ci, "a", "print('secret' in globals())");
    assert_eq!(e.stdout, "False\n", "{e:?}");
    still_works(&ci, "b");
}

#[test]
fn interpreter_death_is_reported_and_restarted() {
    let ci = interp();
    run(&ci, "s", "v = 1");
    let e = run(&ci, "s", "import os\nos._exit(3)");
    assert_eq!(e.exit_code, Some(3), "{e:?}");
    assert!(
        e.state_lost && e.to_tool_output().contains("state was lost"),
        "{e:?}"
    );
    let e = run(&ci, "s", "print('v' in globals())");
    assert!(e.session_restarted, "{e:?}");
    assert_eq!(e.stdout, "False\n");
    assert!(e.to_tool_output().contains("fresh"));
    // A segfault.
    let e = run(&ci, "s", "import ctypes\nctypes.string_at(0)");
    assert!(e.state_lost, "{e:?}");
    still_works(&ci, "s");
}

#[test]
fn sessions_survive_their_callers_thread() {
    // --die-with-parent fires when the forking thread exits: the interpreter must fork
    // from its own long-lived thread, not the caller's.
    let ci = std::sync::Arc::new(interp());
    let ci2 = ci.clone();
    std::thread::spawn(move || run(&ci2, "s", "kept = 5"))
        .join()
        .expect("thread");
    std::thread::sleep(Duration::from_millis(300));
    let e = run(&ci, "s", "kept");
    assert_eq!(e.stdout, "5\n", "{e:?}");
    assert!(!e.session_restarted);
}

#[test]
fn dropping_the_interpreter_kills_every_sandbox() {
    let ci = interp();
    let token = format!("{}.{}", 800_000 + std::process::id() % 1000, 4242);
    for s in ["a", "b"] {
        run(
            &ci,
            s,
            &format!("import subprocess\np = subprocess.Popen(['/usr/bin/sleep', '{token}'])"),
        );
    }
    assert_eq!(host_procs_with(&token).len(), 2);
    drop(ci);
    assert_no_procs(&token);
}

#[test]
fn least_recently_used_session_is_evicted() {
    let ci = interp().with_max_sessions(2);
    run(&ci, "a", "x = 'a'");
    run(&ci, "b", "x = 'b'");
    run(&ci, "a", "x");
    run(&ci, "c", "x = 'c'");
    assert_eq!(ci.live_sessions(), 2);
    assert_eq!(run(&ci, "a", "x").stdout, "'a'\n");
    assert_eq!(run(&ci, "b", "print('x' in globals())").stdout, "False\n");
}

#[test]
fn notebook_semantics() {
    let ci = interp();
    let e = ci
        .run_once("import sys\nprint('out')\nprint('err', file=sys.stderr)\n[1, 2]")
        .expect("run_once");
    assert_eq!(e.stdout, "out\n[1, 2]\n");
    assert_eq!(e.stderr, "err\n");
    assert_eq!(ci.live_sessions(), 0);
    let e = run(&ci, "s", "1/0");
    assert_eq!(e.exit_code, Some(1));
    assert!(
        e.stderr.contains("ZeroDivisionError") && e.stderr.contains("<code>"),
        "{e:?}"
    );
    assert!(!e.stderr.contains("driver"), "{e:?}");
    let e = run(&ci, "s", "input()");
    assert!(
        e.stderr.contains("EOFError"),
        "stdin is not the protocol: {e:?}"
    );
    still_works(&ci, "s");
}
