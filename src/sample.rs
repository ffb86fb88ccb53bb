//! A bundled sample pipeline, so that a newcomer sees a real lineage graph at once.
//!
//! Four Sentinel-2 L2A scenes over eastern Austria and southern Moravia (UTM zone 33N,
//! `EPSG:32633`) are ingested, each is reprojected to Web Mercator (`EPSG:3857`) and cut into
//! tiles, the four tile sets are mosaicked, the mosaic's topology is validated, and the validated
//! mosaic is published:
//!
//! ```text
//! scene 1..4 --reproject--> warped 1..4 --tile--> tiles 1..4 --mosaic--> mosaic
//!            --validate_topology--> validated mosaic --publish--> published mosaic
//! ```
//!
//! Every UUID, time and checksum is fixed, so the events and their `event_id`s are the same on
//! every run. Not for: tests of edge cases (the payloads are deliberately ordinary).

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// The four ingested Sentinel-2 scenes (the roots of the graph).
pub const SCENES: [&str; 4] = [
    "98498594-58b6-42db-b679-82f87ec58109",
    "54f49be1-edcc-45c5-a8d2-e15014cc6c2e",
    "3628d5d3-3e04-4ab7-9d48-5fb5996ad7f2",
    "9f87fff4-3242-4961-8d72-4ad0e105b239",
];

/// Each scene reprojected to `EPSG:3857`.
pub const WARPED: [&str; 4] = [
    "335d64da-4474-42f6-9386-70c4173d6398",
    "de2b01ac-4aee-4c99-9afa-cc235b24c5b9",
    "1d927bd0-8005-4e5f-85b8-d36c153f94e2",
    "4e5774df-9d32-4287-adb6-114009b33670",
];

/// Each reprojected scene cut into XYZ tiles.
pub const TILES: [&str; 4] = [
    "aba8fe77-c5b9-4732-9404-67a14c3f4b2e",
    "90324301-dab4-44a4-92aa-38ddf799634e",
    "936c6a0f-eaa6-454b-b073-ffd585fc6564",
    "719b089c-2659-403f-a449-725e857ea039",
];

/// The mosaic of the four tile sets.
pub const MOSAIC: &str = "6eafb512-d62a-4cd2-ac01-5e35178252fb";

/// The mosaic after topology validation.
pub const VALIDATED: &str = "26fbf83b-cd5e-4777-9bdc-f7c1c5493f51";

/// The published mosaic: the leaf of the graph, and a good start for
/// `geoprov lineage <uuid> --upstream`.
pub const PUBLISHED: &str = "ef9a8eca-f983-44f4-8dfd-2ccc8a745f35";

/// Sentinel-2 product ids and footprints (WGS 84 `[west, south, east, north]`) of the scenes.
const SCENE_PRODUCTS: [(&str, [f64; 4], f64); 4] = [
    (
        "S2B_MSIL2A_20240614T095559_N0510_R122_T33UWP_20240614T123310",
        [14.9987, 47.7434, 16.4713, 48.7412],
        3.1,
    ),
    (
        "S2B_MSIL2A_20240614T095559_N0510_R122_T33UXP_20240614T123310",
        [16.3406, 47.7242, 17.8451, 48.7301],
        7.8,
    ),
    (
        "S2B_MSIL2A_20240614T095559_N0510_R122_T33UWQ_20240614T123310",
        [14.9986, 48.6428, 16.5001, 49.6401],
        1.4,
    ),
    (
        "S2B_MSIL2A_20240614T095559_N0510_R122_T33UXQ_20240614T123310",
        [16.3655, 48.6229, 17.8986, 49.6291],
        12.6,
    ),
];

/// The union of the scene footprints.
const MOSAIC_BBOX: [f64; 4] = [14.9986, 47.7242, 17.8986, 49.6401];

/// The sample pipeline's events, one JSON payload each, in pipeline order.
///
/// Every payload is a valid lineage event (see `design.md`, "Events") with `dataset_uuid`,
/// `operation`, `crs_from`, `crs_to`, `processor_id`, `inputs`, `outputs`, `started_at`,
/// `ended_at`, `parameters`, `bbox` (WGS 84) and `checksums` (`sha256:` per output).
///
/// The graph it makes:
///
/// - 15 events: 4 `ingest`, 4 `reproject` (`EPSG:32633` -> `EPSG:3857`), 4 `tile`, 1 `mosaic`,
///   1 `validate_topology`, 1 `publish`.
/// - 15 datasets (lineage nodes): 4 scenes, 4 reprojected, 4 tile sets, the mosaic, the
///   validated mosaic, the published mosaic.
/// - 14 lineage edges (input -> output): 4 + 4 + 4 (mosaic) + 1 + 1; the ingests have none.
/// - 7 processors: `eo-ingest-01`, `gdal-warp-01`, `gdal-warp-02`, `tiler-01`, `mosaic-01`,
///   `qa-topology-01`, `publisher-01`.
///
/// Exported as PROV-JSON ([`crate::prov`]) that is 15 entities, 15 activities, 7 agents and
/// 58 relations: 14 `used`, 15 `wasGeneratedBy`, 15 `wasAssociatedWith`, 14 `wasDerivedFrom`.
/// Walking upstream from [`PUBLISHED`] reaches all 15 datasets.
#[must_use]
pub fn sample_pipeline() -> Vec<String> {
    let mut events = Vec::with_capacity(15);
    for (i, (scene, (product, bbox, cloud))) in (0u32..).zip(SCENES.iter().zip(SCENE_PRODUCTS)) {
        let minute = 2 * i;
        events.push(event(
            Step {
                output: scene,
                operation: "ingest",
                crs: ("EPSG:32633", "EPSG:32633"),
                processor: "eo-ingest-01",
                inputs: &[],
                started: time(10, minute, 0),
                ended: time(10, minute + 1, 34 + 3 * i),
                bbox,
            },
            json!({
                "source": "copernicus-dataspace",
                "product_id": product,
                "processing_level": "L2A",
                "bands": ["B02", "B03", "B04", "B08"],
                "resolution_m": 10,
                "cloud_cover_pct": cloud,
            }),
        ));
    }
    for (i, ((scene, warped), (_, bbox, _))) in
        (0u32..).zip(SCENES.iter().zip(WARPED).zip(SCENE_PRODUCTS))
    {
        let minute = 10 + 3 * i;
        events.push(event(
            Step {
                output: warped,
                operation: "reproject",
                crs: ("EPSG:32633", "EPSG:3857"),
                processor: if i % 2 == 0 {
                    "gdal-warp-01"
                } else {
                    "gdal-warp-02"
                },
                inputs: &[scene],
                started: time(10, minute, 5),
                ended: time(10, minute + 2, 41),
                bbox,
            },
            json!({
                "tool": "gdalwarp",
                "gdal_version": "3.8.4",
                "resampling": "bilinear",
                "target_resolution_m": 10.0,
                "nodata": 0,
                "creation_options": ["COMPRESS=DEFLATE", "TILED=YES"],
            }),
        ));
    }
    for (i, ((warped, tiles), (_, bbox, _))) in
        (0u32..).zip(WARPED.iter().zip(TILES).zip(SCENE_PRODUCTS))
    {
        let minute = 25 + 4 * i;
        events.push(event(
            Step {
                output: tiles,
                operation: "tile",
                crs: ("EPSG:3857", "EPSG:3857"),
                processor: "tiler-01",
                inputs: &[warped],
                started: time(10, minute, 0),
                ended: time(10, minute + 3, 12),
                bbox,
            },
            json!({
                "scheme": "xyz",
                "tile_size": 256,
                "min_zoom": 8,
                "max_zoom": 14,
                "format": "image/webp",
            }),
        ));
    }
    events.push(event(
        Step {
            output: MOSAIC,
            operation: "mosaic",
            crs: ("EPSG:3857", "EPSG:3857"),
            processor: "mosaic-01",
            inputs: &TILES,
            started: time(10, 42, 0),
            ended: time(10, 51, 27),
            bbox: MOSAIC_BBOX,
        },
        json!({
            "method": "least_cloud_first",
            "blend": "feather",
            "feather_px": 16,
            "order_by": "cloud_cover_pct",
        }),
    ));
    events.push(event(
        Step {
            output: VALIDATED,
            operation: "validate_topology",
            crs: ("EPSG:3857", "EPSG:3857"),
            processor: "qa-topology-01",
            inputs: &[MOSAIC],
            started: time(10, 52, 0),
            ended: time(10, 55, 48),
            bbox: MOSAIC_BBOX,
        },
        json!({
            "rules": ["no_gaps", "no_overlaps", "valid_footprint"],
            "tolerance_m": 0.5,
            "errors": 0,
            "warnings": 2,
        }),
    ));
    events.push(event(
        Step {
            output: PUBLISHED,
            operation: "publish",
            crs: ("EPSG:3857", "EPSG:3857"),
            processor: "publisher-01",
            inputs: &[VALIDATED],
            started: time(11, 0, 0),
            ended: time(11, 2, 9),
            bbox: MOSAIC_BBOX,
        },
        json!({
            "target": "s3://eo-public/mosaics/at-cz-2024-06-14/",
            "format": "PMTiles",
            "license": "CC-BY-4.0; contains modified Copernicus Sentinel data 2024",
        }),
    ));
    events
}

/// [`sample_pipeline`] as NDJSON (one event per line, ending in a newline), ready for
/// `geoprov emit`.
#[must_use]
pub fn sample_ndjson() -> String {
    let mut ndjson = String::new();
    for event in sample_pipeline() {
        ndjson.push_str(&event);
        ndjson.push('\n');
    }
    ndjson
}

/// What varies between the sample's events.
struct Step<'a> {
    output: &'a str,
    operation: &'a str,
    crs: (&'a str, &'a str),
    processor: &'a str,
    inputs: &'a [&'a str],
    started: String,
    ended: String,
    bbox: [f64; 4],
}

fn event(step: Step<'_>, parameters: Value) -> String {
    // A stand-in for the real file digest: fixed, and different for every dataset.
    let checksum = hex::encode(Sha256::digest(format!(
        "geoprov sample dataset {}",
        step.output
    )));
    json!({
        "dataset_uuid": step.output,
        "operation": step.operation,
        "crs_from": step.crs.0,
        "crs_to": step.crs.1,
        "processor_id": step.processor,
        "inputs": step.inputs,
        "outputs": [step.output],
        "started_at": step.started,
        "ended_at": step.ended,
        "parameters": parameters,
        "bbox": step.bbox,
        "checksums": { step.output: format!("sha256:{checksum}") },
    })
    .to_string()
}

/// An RFC 3339 UTC time on the sample's day.
fn time(hour: u32, minute: u32, second: u32) -> String {
    format!("2024-06-14T{hour:02}:{minute:02}:{second:02}Z")
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeSet, HashSet};

    use serde_json::Value;

    use super::*;
    use crate::event::{parse_event, DEFAULT_MAX_PAYLOAD_BYTES};

    fn payloads() -> Vec<Value> {
        sample_pipeline()
            .iter()
            .map(|text| serde_json::from_str(text).expect("sample payload is JSON"))
            .collect()
    }

    #[test]
    fn every_sample_event_validates_and_has_its_own_id() {
        let mut ids = HashSet::new();
        for text in sample_pipeline() {
            let event = parse_event(text.as_bytes(), DEFAULT_MAX_PAYLOAD_BYTES)
                .unwrap_or_else(|e| panic!("sample event refused: {e}: {text}"));
            assert!(ids.insert(event.event_id.to_hex()), "duplicate event id");
        }
        assert_eq!(ids.len(), 15);
    }

    #[test]
    fn sample_payloads_carry_every_recognised_field() {
        for payload in payloads() {
            for field in [
                "dataset_uuid",
                "operation",
                "crs_from",
                "crs_to",
                "processor_id",
                "inputs",
                "outputs",
                "started_at",
                "ended_at",
                "parameters",
                "bbox",
                "checksums",
            ] {
                assert!(payload.get(field).is_some(), "{field} missing in {payload}");
            }
            for time in ["started_at", "ended_at"] {
                let text = payload[time].as_str().expect("time is a string");
                chrono::DateTime::parse_from_rfc3339(text).expect("time is RFC 3339");
            }
            assert!(payload["started_at"].as_str() < payload["ended_at"].as_str());
        }
    }

    #[test]
    fn sample_graph_has_the_documented_shape() {
        let payloads = payloads();
        let mut datasets = BTreeSet::new();
        let mut processors = BTreeSet::new();
        let mut edges = 0;
        let mut produced = HashSet::new();
        for payload in &payloads {
            processors.insert(payload["processor_id"].as_str().unwrap_or_default());
            let inputs = payload["inputs"].as_array().expect("inputs");
            let outputs = payload["outputs"].as_array().expect("outputs");
            for input in inputs {
                let input = input.as_str().unwrap_or_default();
                // Pipeline order: every input was produced by an earlier event.
                assert!(produced.contains(input), "{input} used before produced");
                datasets.insert(input);
            }
            for output in outputs {
                let output = output.as_str().unwrap_or_default();
                produced.insert(output);
                datasets.insert(output);
            }
            edges += inputs.len() * outputs.len();
        }
        assert_eq!(payloads.len(), 15);
        assert_eq!(datasets.len(), 15);
        assert_eq!(edges, 14);
        assert_eq!(processors.len(), 7);
        let reprojections: Vec<_> = payloads
            .iter()
            .filter(|p| p["operation"] == "reproject")
            .collect();
        assert_eq!(reprojections.len(), 4);
        for p in reprojections {
            assert_eq!(p["crs_from"], "EPSG:32633");
            assert_eq!(p["crs_to"], "EPSG:3857");
        }
        assert!(datasets.contains(PUBLISHED));
    }

    #[test]
    fn sample_uuids_are_distinct_v4_uuids() {
        let all: Vec<&str> = SCENES
            .iter()
            .chain(&WARPED)
            .chain(&TILES)
            .chain([&MOSAIC, &VALIDATED, &PUBLISHED])
            .copied()
            .collect();
        let distinct: HashSet<_> = all.iter().collect();
        assert_eq!(distinct.len(), 15);
        for text in all {
            let uuid = uuid::Uuid::parse_str(text).expect("UUID");
            assert_eq!(uuid.get_version_num(), 4, "{text}");
            assert_eq!(uuid.hyphenated().to_string(), text, "canonical form");
        }
    }

    #[test]
    fn sample_is_deterministic_and_ndjson_matches() {
        assert_eq!(sample_pipeline(), sample_pipeline());
        let ndjson = sample_ndjson();
        assert!(ndjson.ends_with('\n'));
        let lines: Vec<String> = ndjson.lines().map(str::to_owned).collect();
        assert_eq!(lines, sample_pipeline());
    }
}
