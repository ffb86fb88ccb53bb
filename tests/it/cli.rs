//! The command line contract: event-id against the Python vectors, emit + lineage, exit codes.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::support::geoprov_bin;

fn run_with_stdin(args: &[&str], stdin: &[u8]) -> std::process::Output {
    let mut child = Command::new(geoprov_bin())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn event_id_prints_the_python_ids_for_ndjson() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/event_id_vectors.json"
    );
    let vectors: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let ndjson: String = vectors
        .iter()
        .map(|v| format!("{}\n", v["payload_json"].as_str().unwrap()))
        .collect();
    let out = run_with_stdin(&["event-id", "-"], ndjson.as_bytes());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ids: Vec<&str> = std::str::from_utf8(&out.stdout).unwrap().lines().collect();
    let expected: Vec<&str> = vectors
        .iter()
        .map(|v| v["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, expected);
}

#[test]
fn bad_usage_exits_2_with_one_line() {
    let out = Command::new(geoprov_bin())
        .args(["worker", "--broker", "kafka://x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("--broker"));
}

#[test]
fn emit_then_worker_then_lineage_on_the_embedded_default() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let scene = "11111111-1111-4111-8111-111111111111";
    let warped = "22222222-2222-4222-8222-222222222222";
    let tiles = "33333333-3333-4333-8333-333333333333";
    let events = format!(
        "{{\"dataset_uuid\": \"{warped}\", \"operation\": \"reproject\", \"crs_from\": \"EPSG:32633\", \"crs_to\": \"EPSG:3857\", \"processor_id\": \"gdalwarp\", \"inputs\": [\"{scene}\"]}}\n\
         {{\"dataset_uuid\": \"{tiles}\", \"operation\": \"tile\", \"processor_id\": \"tiler\", \"inputs\": [\"{warped}\"]}}\n\
         {{\"dataset_uuid\": \"bad\"}}\n"
    );
    let out = run_with_stdin(&["emit", "--data-dir", d], events.as_bytes());
    assert_eq!(out.status.code(), Some(1), "one item is refused");
    assert_eq!(std::str::from_utf8(&out.stdout).unwrap().lines().count(), 2);
    assert!(String::from_utf8_lossy(&out.stderr).contains("dataset_uuid"));

    let mut worker = Command::new(geoprov_bin())
        .args(["worker", "--data-dir", d])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let ok = crate::support::wait_until(std::time::Duration::from_secs(20), || {
        dir.path().join("lineage.db").exists() && crate::support::sqlite_row_count(dir.path()) == 2
    });
    let _ = Command::new("kill")
        .args(["-TERM", &worker.id().to_string()])
        .status();
    assert_eq!(worker.wait().unwrap().code(), Some(0));
    assert!(ok);

    let out = Command::new(geoprov_bin())
        .args([
            "lineage",
            tiles,
            "--upstream",
            "--format",
            "json",
            "--data-dir",
            d,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let graph: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let nodes: Vec<&str> = graph["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["dataset_uuid"].as_str().unwrap())
        .collect();
    assert_eq!(nodes.len(), 3, "{graph}");
    for id in [scene, warped, tiles] {
        assert!(nodes.contains(&id), "{id} missing from {graph}");
    }
    let out = Command::new(geoprov_bin())
        .args(["lineage", tiles, "--format", "dot", "--data-dir", d])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("digraph"));
}

/// SIGTERM while `worker` (and `serve`) still wait for a broker that is down: a clean stop,
/// exit 0, not the default action of the signal (which would kill the process).
#[test]
fn sigterm_while_waiting_for_the_broker_exits_zero() {
    for command in ["worker", "serve"] {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = crate::support::free_port();
        let listen = "127.0.0.1:0".to_string();
        let mut child = Command::new(geoprov_bin())
            .args([command, "--data-dir"])
            .arg(dir.path())
            .args(["--broker", &format!("redis://127.0.0.1:{port}/0")])
            .args(if command == "serve" {
                vec!["--listen", &listen]
            } else {
                vec![]
            })
            .env("GEOPROV_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        // Long enough to be waiting for the broker (nothing listens on that port).
        std::thread::sleep(std::time::Duration::from_millis(1500));
        let pid = child.id().to_string();
        let status = Command::new("kill").args(["-TERM", &pid]).status();
        assert!(status.is_ok_and(|s| s.success()), "kill -TERM");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
        let code = loop {
            if let Some(status) = child.try_wait().expect("wait") {
                break status.code();
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                break None;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        };
        let output = child.wait_with_output().expect("output");
        let log = String::from_utf8_lossy(&output.stderr);
        assert_eq!(code, Some(0), "{command}: exit code; log:\n{log}");
        assert!(log.contains("Stopped before"), "{command}: log:\n{log}");
    }
}
