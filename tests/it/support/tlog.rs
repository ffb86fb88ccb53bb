//! Transparency-log helpers shared by the SQLite and PostgreSQL log tests: the real `geoprov`
//! binary on a data dir, `geoprov verify` expected to pass or to fail with one line, distinct
//! events, and a one-digit change of a hex hash.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use geoprov::event::LineageEvent;

use crate::store_suite::event_from;

/// Runs `geoprov --data-dir DIR ARGS...` and returns its output. The broker and store come from
/// `ARGS` (or the data dir's defaults), never from the environment.
pub fn geoprov(dir: &Path, args: &[&str]) -> Output {
    Command::new(super::geoprov_bin())
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .env("GEOPROV_LOG", "warn")
        .env_remove("GEOPROV_STORE")
        .env_remove("GEOPROV_BROKER")
        .stdin(Stdio::null())
        .output()
        .expect("run geoprov")
}

/// Lossy UTF-8 text of a child's output.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `geoprov verify ARGS...`, asserting it exits 1 with exactly one `verify: ` line; returns its
/// stderr.
pub fn verify_fails(dir: &Path, extra: &[&str]) -> String {
    let mut args = vec!["verify"];
    args.extend_from_slice(extra);
    let out = geoprov(dir, &args);
    let stderr = text(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "verify should fail; stdout: {} stderr: {stderr}",
        text(&out.stdout)
    );
    assert_eq!(
        stderr.lines().filter(|l| l.starts_with("verify: ")).count(),
        1,
        "one line naming the failure: {stderr}"
    );
    stderr
}

/// `geoprov verify ARGS...`, asserting it exits 0; returns (stdout, stderr).
pub fn verify_ok(dir: &Path, extra: &[&str]) -> (String, String) {
    let mut args = vec!["verify"];
    args.extend_from_slice(extra);
    let out = geoprov(dir, &args);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(
        out.status.code(),
        Some(0),
        "verify should pass; stdout: {stdout} stderr: {stderr}"
    );
    (stdout, stderr)
}

/// The event with sequence number `i` (distinct payloads, all valid).
pub fn event(i: usize) -> LineageEvent {
    event_from(&serde_json::json!({
        "dataset_uuid": uuid::Uuid::new_v4(),
        "operation": "reproject",
        "crs_from": "EPSG:32633",
        "crs_to": "EPSG:3857",
        "processor_id": "tlog-test",
        "inputs": [uuid::Uuid::new_v4()],
        "sequence": i,
    }))
}

/// Flips the first hex digit of `hash` (a different byte, same length).
pub fn flip(hash: &str) -> String {
    let mut chars: Vec<char> = hash.chars().collect();
    chars[0] = if chars[0] == '0' { '1' } else { '0' };
    chars.into_iter().collect()
}

/// SIGTERM a child and wait (up to 30 s) for its exit code; SIGKILL it if it does not stop.
pub fn terminate(child: &mut Child) -> Option<i32> {
    let pid = child.id().to_string();
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    for _ in 0..1500 {
        if let Ok(Some(status)) = child.try_wait() {
            return status.code();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    None
}
