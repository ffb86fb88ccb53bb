//! Event search over HTTP (`GET /v1/events`) and the command line (`geoprov search`), against a
//! real `geoprov serve --demo`: the same filters, the same pages, the same shapes.

use crate::support::tlog::{geoprov, text};
use crate::support::Server;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_and_cli_search_the_demo_alike() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--demo"]);
    assert!(crate::support::wait_until(
        std::time::Duration::from_secs(30),
        || crate::support::sqlite_row_count(dir.path()) == 15
    ));
    let client = reqwest::Client::new();
    let get = |query: String| {
        let client = client.clone();
        let url = format!("{}/v1/events?{query}", server.url());
        async move {
            let resp = client.get(url).send().await.unwrap();
            let status = resp.status().as_u16();
            (status, resp.json::<serde_json::Value>().await.unwrap())
        }
    };
    // Four tiling events, newest first, in pages of three.
    let (status, first) = get("operation=tile&limit=3".into()).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["events"].as_array().unwrap().len(), 3);
    let cursor = first["next_cursor"]
        .as_str()
        .expect("a next page")
        .to_owned();
    let (_, second) = get(format!("operation=tile&limit=3&cursor={cursor}")).await;
    assert_eq!(second["events"].as_array().unwrap().len(), 1);
    assert!(second["next_cursor"].is_null());
    let positions: Vec<u64> = first["events"]
        .as_array()
        .unwrap()
        .iter()
        .chain(second["events"].as_array().unwrap())
        .map(|e| e["log_position"].as_u64().expect("log_position"))
        .collect();
    assert!(positions.windows(2).all(|w| w[0] > w[1]), "{positions:?}");
    // The published layer's events; a CRS; bad filters are 400 with a JSON reason.
    let (_, published) = get("dataset=ef9a8eca-f983-44f4-8dfd-2ccc8a745f35".into()).await;
    assert_eq!(published["events"].as_array().unwrap().len(), 1);
    let (_, warped) = get("crs=EPSG:3857&operation=reproject".into()).await;
    assert_eq!(warped["events"].as_array().unwrap().len(), 4);
    for bad in [
        "dataset=nope",
        "since=yesterday",
        "limit=0",
        "since=2026-02-01T00:00:00Z&until=2026-01-01T00:00:00Z",
    ] {
        let (status, body) = get(bad.into()).await;
        assert_eq!(status, 400, "{bad}");
        assert!(body["error"].is_string(), "{bad}: {body}");
    }
    // The command line gives the same page and the same event shape.
    let out = geoprov(
        dir.path(),
        &[
            "search",
            "--operation",
            "tile",
            "--limit",
            "3",
            "--format",
            "json",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let cli: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(cli, first);
    let out = geoprov(
        dir.path(),
        &["search", "--operation", "tile", "--format", "ndjson"],
    );
    let lines: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4);
    let one = reqwest::get(format!(
        "{}/v1/events/{}",
        server.url(),
        lines[0]["event_id"].as_str().unwrap()
    ))
    .await
    .unwrap()
    .json::<serde_json::Value>()
    .await
    .unwrap();
    assert_eq!(
        one, lines[0],
        "ndjson lines are GET /v1/events/{{id}}'s shape"
    );
    let out = geoprov(dir.path(), &["search", "--operation", "publish"]);
    assert!(
        text(&out.stdout).contains("publisher-01"),
        "{}",
        text(&out.stdout)
    );
}
