//! A newcomer's first hour, through the real binary: read commands that create nothing and say
//! where they looked, unknown datasets that are errors, errors that keep their cause, JSON
//! errors over HTTP, flags and environment variables as people expect them, and the commands
//! that answer "is it up", "what is the key", "which checkpoints".

use std::path::Path;
use std::process::{Command, Output};

use crate::support::tlog::{geoprov, text};
use crate::support::{geoprov_bin, Server};

/// The sample's published layer and one of its source scenes (`geoprov serve --demo`).
const PUBLISHED: &str = "ef9a8eca-f983-44f4-8dfd-2ccc8a745f35";
const UNKNOWN: &str = "00000000-0000-4000-8000-000000000000";

/// Every file and folder under `dir`, relative, sorted.
fn tree(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        if let Ok(entries) = std::fs::read_dir(&d) {
            for e in entries.flatten() {
                let p = e.path();
                out.push(p.strip_prefix(dir).unwrap().display().to_string());
                if p.is_dir() {
                    stack.push(p);
                }
            }
        }
    }
    out.sort();
    out
}

fn run(cwd: &Path, args: &[&str]) -> Output {
    Command::new(geoprov_bin())
        .current_dir(cwd)
        .args(args)
        .env("GEOPROV_LOG", "warn")
        .env_remove("GEOPROV_DATA_DIR")
        .env_remove("GEOPROV_STORE")
        .env_remove("GEOPROV_BROKER")
        .output()
        .expect("run geoprov")
}

#[test]
fn read_commands_create_nothing_and_say_where_they_looked() {
    let cwd = tempfile::tempdir().unwrap();
    for args in [
        vec!["lineage", PUBLISHED],
        vec!["export", "prov"],
        vec!["verify"],
        vec!["prove", &"a".repeat(64)],
        vec!["dlq", "list"],
        vec!["checkpoints"],
    ] {
        let out = run(cwd.path(), &args);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.contains("geoprov-data") && err.contains("--data-dir"),
            "{args:?} names the path and the way out: {err}"
        );
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: one line: {err}");
        assert!(
            tree(cwd.path()).is_empty(),
            "{args:?} created {:?}",
            tree(cwd.path())
        );
    }
    // status says the same, degraded, and creates nothing either.
    let out = run(cwd.path(), &["status"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stdout).contains("no store at"),
        "{}",
        text(&out.stdout)
    );
    assert!(tree(cwd.path()).is_empty());
}

#[test]
fn only_the_data_dir_itself_is_created() {
    let cwd = tempfile::tempdir().unwrap();
    let deep = cwd.path().join("no/such/dir");
    let out = run(
        cwd.path(),
        &["keygen", "--data-dir", deep.to_str().unwrap()],
    );
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("does not exist") && err.contains("no/such"),
        "{err}"
    );
    assert!(tree(cwd.path()).is_empty(), "{:?}", tree(cwd.path()));
    let one = cwd.path().join("data");
    let out = run(cwd.path(), &["keygen", "--data-dir", one.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(one.join("log-signing.key").is_file());
    // `key` prints the same verifier key again later.
    let verifier = text(&out.stdout).trim().to_owned();
    let out = run(cwd.path(), &["key", "--data-dir", one.to_str().unwrap()]);
    assert_eq!(text(&out.stdout).trim(), verifier);
}

#[test]
fn a_serve_on_a_taken_port_suggests_listen_and_creates_nothing() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = taken.local_addr().unwrap().to_string();
    let cwd = tempfile::tempdir().unwrap();
    let out = run(cwd.path(), &["serve", "--listen", &listen]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("--listen"), "{err}");
    assert!(tree(cwd.path()).is_empty(), "{:?}", tree(cwd.path()));
}

#[test]
fn flags_and_environment_variables_as_people_expect_them() {
    let cwd = tempfile::tempdir().unwrap();
    // A broker's flags only where a broker is used, under their heading.
    let help = text(&run(cwd.path(), &["event-id", "--help"]).stdout);
    assert!(
        !help.contains("--broker") && !help.contains("--celery"),
        "{help}"
    );
    let help = text(&run(cwd.path(), &["worker", "--help"]).stdout);
    for want in [
        "Broker:",
        "--broker",
        "-Q, --queue",
        "-c, --concurrency",
        "-l, --log",
    ] {
        assert!(help.contains(want), "{want} in\n{help}");
    }
    // Boolean variables take 1/0/yes/no; a bad log filter is an error, not a fallback.
    let out = Command::new(geoprov_bin())
        .current_dir(cwd.path())
        .args(["dlq", "list"])
        .env("GEOPROV_CELERY", "1")
        .output()
        .unwrap();
    let err = text(&out.stderr);
    assert!(err.contains("--celery needs a Celery broker"), "{err}");
    let out = run(cwd.path(), &["event-id", "--log", "geoprov=loud"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("not a log filter"));
    // A malformed dead-letter id says what one looks like (before opening anything).
    let out = run(cwd.path(), &["dlq", "purge", "--id", "x1"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("a number, e.g. 42"),
        "{}",
        text(&out.stderr)
    );
    // Completion scripts.
    let out = run(cwd.path(), &["completions", "bash"]);
    assert!(text(&out.stdout).contains("_geoprov()"));
}

/// `serve --demo`, its lineage in pipeline order, unknown datasets, JSON errors, event id
/// prefixes, status, checkpoints and JSON logs, on one server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_answers_the_questions_a_newcomer_asks() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        dir.path(),
        &[
            "--demo",
            "--checkpoint-interval",
            "1s",
            "--log-format",
            "json",
        ],
    );
    let ok = crate::support::wait_until(std::time::Duration::from_secs(30), || {
        crate::support::sqlite_row_count(dir.path()) == 15
    });
    assert!(ok, "the sample is stored");

    // Each edge with its operation, processor and time, in pipeline order.
    let out = geoprov(dir.path(), &["lineage", PUBLISHED, "--upstream"]);
    let listing = text(&out.stdout);
    let edges: Vec<&str> = listing.lines().filter(|l| l.contains("-->")).collect();
    assert_eq!(edges.len(), 14, "{listing}");
    let ops: Vec<&str> = edges
        .iter()
        .map(|l| l.split("--").nth(1).unwrap_or(""))
        .collect();
    let first = |op: &str| ops.iter().position(|o| *o == op).unwrap();
    let last = |op: &str| ops.iter().rposition(|o| *o == op).unwrap();
    assert!(
        last("reproject") < first("tile") && last("tile") < first("mosaic"),
        "{listing}"
    );
    assert!(edges[13].contains("--publish-->") && edges[13].contains("publisher-01"));
    assert!(edges[0].contains("2024-06-14T"), "{listing}");

    // A dataset no event mentions: exit 1 on the CLI, 404 over HTTP; a source is no error.
    let out = geoprov(dir.path(), &["lineage", UNKNOWN]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("no event mentions dataset"));
    let out = geoprov(dir.path(), &["export", "prov", "--dataset", UNKNOWN]);
    assert_eq!(out.status.code(), Some(1));
    let client = reqwest::Client::new();
    let url = server.url();
    let resp = client
        .get(format!("{url}/v1/datasets/{UNKNOWN}/lineage"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let resp = client
        .get(format!("{url}/v1/export/prov?dataset={UNKNOWN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);

    // Every error answer is JSON, the extractors' and the router's too.
    for (path, status) in [
        (format!("/v1/datasets/{PUBLISHED}/lineage?depth=deep"), 400),
        (
            format!("/v1/datasets/{PUBLISHED}/lineage?direction=sideways"),
            400,
        ),
        ("/no/such/route".to_string(), 404),
    ] {
        let resp = client.get(format!("{url}{path}")).send().await.unwrap();
        assert_eq!(resp.status(), status, "{path}");
        let body: serde_json::Value = resp.json().await.expect("a JSON error body");
        assert!(
            body["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{path}: {body}"
        );
    }

    // An event id prefix of 12 hex digits, as the listing shows them.
    let short = edges[13]
        .rsplit("event ")
        .next()
        .unwrap()
        .trim_end_matches(')');
    assert_eq!(short.len(), 12);
    let resp = client
        .get(format!("{url}/v1/events/{short}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let event: serde_json::Value = resp.json().await.unwrap();
    let full = event["event_id"].as_str().unwrap().to_owned();
    assert!(full.starts_with(short));
    let resp = client
        .get(format!("{url}/v1/events/abc"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);

    // A checkpoint is signed; `checkpoints` lists it and `prove` takes the short id.
    let signed = crate::support::wait_until(std::time::Duration::from_secs(20), || {
        text(&geoprov(dir.path(), &["checkpoints", "--json"]).stdout).contains("\"tree_size\":15")
    });
    assert!(signed, "a checkpoint at 15");
    let out = geoprov(dir.path(), &["prove", short]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains(&full));

    // status: healthy, text and JSON, over the CLI and HTTP.
    let out = geoprov(dir.path(), &["status", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["healthy"], true);
    assert_eq!(status["store"]["events"], 15);
    assert_eq!(status["store"]["last_checkpoint_size"], 15);
    let resp = client.get(format!("{url}/v1/status")).send().await.unwrap();
    assert_eq!(resp.status(), 200);

    // emit --server takes a bare host:port.
    let events = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/events.ndjson");
    let out = Command::new(geoprov_bin())
        .args(["emit", events.to_str().unwrap(), "--server"])
        .arg(url.trim_start_matches("http://"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).lines().count(), 5);

    // The log is one JSON object per line, with no terminal colour codes.
    let log = std::fs::read_to_string(&server.log).unwrap();
    assert!(!log.contains('\u{1b}'), "no ANSI escapes");
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let entry: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(entry.get("level").is_some(), "{line}");
    }
}

#[test]
fn postgres_errors_keep_the_servers_words_and_name_the_server() {
    let server = crate::support::pg::server_url();
    let Some(base) = server.rsplit_once('/').map(|(b, _)| b.to_owned()) else {
        return;
    };
    let cwd = tempfile::tempdir().unwrap();
    let out = run(
        cwd.path(),
        &[
            "migrate",
            "--store",
            &format!("{base}/geoprov_no_such_database"),
        ],
    );
    let err = text(&out.stderr);
    if err.contains("Connection refused") {
        crate::support::require_or_skip(&format!("no PostgreSQL server at {server}"));
        return;
    }
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("geoprov_no_such_database") && err.contains("does not exist"),
        "{err}"
    );
    assert!(
        err.contains("127.0.0.1") || err.contains("localhost"),
        "{err}"
    );
}
