//! `ferrollama tool code_interpreter`: the binary runs sandboxed Python and prints JSON.

use std::process::Command;

use serde_json::Value;

fn code_interpreter(args: &[&str]) -> (bool, Value, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ferrollama"))
        .args(["tool", "code_interpreter"])
        .args(args)
        .output()
        .expect("run ferrollama");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let v = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out.status.success(), v, stderr)
}

#[test]
fn prints_the_result_as_json() {
    let (ok, v, err) = code_interpreter(&["--code", "print(6*7)"]);
    assert!(ok, "{err}");
    assert_eq!(v["stdout"], "42\n", "{v}");
    assert_eq!(v["stderr"], "");
    assert_eq!(v["exit_code"], 0);
    assert_eq!(v["timed_out"], false);
}

#[test]
fn reports_a_timeout() {
    let (ok, v, err) = code_interpreter(&["--code", "while True: pass", "--timeout", "1"]);
    assert!(ok, "the tool ran, so the status is 0: {err}");
    assert_eq!(v["timed_out"], true, "{v}");
    assert_eq!(v["exit_code"], Value::Null, "{v}");
}

#[test]
fn failing_code_still_exits_zero() {
    let (ok, v, err) = code_interpreter(&["--code", "1/0"]);
    assert!(ok, "{err}");
    assert_eq!(v["exit_code"], 1, "{v}");
    assert!(
        v["stderr"]
            .as_str()
            .is_some_and(|s| s.contains("ZeroDivisionError")),
        "{v}"
    );
}

#[test]
fn bench_prints_percentiles() {
    let (ok, v, err) = code_interpreter(&["--bench", "3"]);
    assert!(ok, "{err}");
    assert!(v["cold_ms"]["p50"].as_f64().is_some_and(|x| x > 0.0), "{v}");
    assert!(v["warm_ms"]["p99"].as_f64().is_some_and(|x| x > 0.0), "{v}");
}
