//! W3C PROV-JSON export of the bundled sample pipeline, checked by the reference Python `prov`
//! package, and the `--dataset` filter (that dataset and its upstream, nothing else).

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use geoprov::sample;

use crate::support::tlog::{geoprov, text};

/// A data dir whose SQLite store holds the sample pipeline.
async fn store_with_sample() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("lineage.db").display());
    let store = geoprov::store::open(&url.parse().unwrap()).await.unwrap();
    store.migrate().await.unwrap();
    let events: Vec<_> = sample::sample_pipeline()
        .iter()
        .map(|p| geoprov::event::parse_event(p.as_bytes(), 1 << 20).unwrap())
        .collect();
    let report = store.commit_batch(&events).await.unwrap();
    assert_eq!(report.inserted, 15);
    dir
}

fn export(dir: &Path, extra: &[&str]) -> Vec<u8> {
    let out = geoprov(dir, &[&["export", "prov"], extra].concat());
    assert!(out.status.success(), "{}", text(&out.stderr));
    out.stdout
}

fn ids(doc: &serde_json::Value, kind: &str) -> BTreeSet<String> {
    doc[kind]
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn the_sample_export_round_trips_through_the_python_prov_package() {
    let dir = store_with_sample().await;
    let doc = export(dir.path(), &[]);
    let file = dir.path().join("sample.prov.json");
    std::fs::write(&file, &doc).unwrap();

    let parsed: serde_json::Value = serde_json::from_slice(&doc).unwrap();
    assert_eq!(ids(&parsed, "entity").len(), 15);
    assert_eq!(ids(&parsed, "activity").len(), 15);
    assert_eq!(ids(&parsed, "agent").len(), 7);

    let Some(python) = crate::redis_support::python() else {
        return;
    };
    let out = Command::new(python)
        .arg(crate::redis_support::python_dir().join("prov_roundtrip.py"))
        .arg(&file)
        .arg("--expect")
        .arg(r#"{"entities": 15, "activities": 15, "agents": 7, "relations": 58}"#)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "prov round trip failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn the_export_of_one_dataset_holds_its_upstream_and_nothing_else() {
    let dir = store_with_sample().await;
    let doc: serde_json::Value =
        serde_json::from_slice(&export(dir.path(), &["--dataset", sample::MOSAIC])).unwrap();
    let mut expected: BTreeSet<String> = BTreeSet::new();
    expected.insert(format!("dataset:{}", sample::MOSAIC));
    for group in [sample::SCENES, sample::WARPED, sample::TILES] {
        for id in group {
            expected.insert(format!("dataset:{id}"));
        }
    }
    assert_eq!(ids(&doc, "entity"), expected);
    // The operations that made them: 4 ingests, 4 reprojections, 4 tilings, 1 mosaic.
    assert_eq!(ids(&doc, "activity").len(), 13);
    let text = doc.to_string();
    assert!(!text.contains(sample::VALIDATED));
    assert!(!text.contains(sample::PUBLISHED));
}

#[tokio::test]
async fn since_and_until_select_by_record_time() {
    let dir = store_with_sample().await;
    let all: serde_json::Value = serde_json::from_slice(&export(dir.path(), &[])).unwrap();
    assert_eq!(ids(&all, "activity").len(), 15);
    let none: serde_json::Value =
        serde_json::from_slice(&export(dir.path(), &["--until", "2000-01-01T00:00:00Z"])).unwrap();
    assert!(ids(&none, "activity").is_empty());
    let out = geoprov(dir.path(), &["export", "prov", "--since", "yesterday"]);
    assert_eq!(out.status.code(), Some(2));
}
