//! The cases of `geoprov verify` and of the proofs that read the same on every backend that
//! keeps a log: `tlog_sqlite.rs` and `tlog_postgres.rs` stamp them with
//! [`stamp_cases!`](super::stamp::stamp_cases) or call them with their own arguments. The
//! tampering itself is the backend's own SQL, behind [`Attacker`](super::tlog::Attacker).

use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use chrono::{TimeZone, Utc};
use geoprov::store::transparency_log;
use geoprov::tlog::Signer;

use super::pg::wait_for;
use super::tlog::{event, flip, geoprov, text, Fixture, LogDir};
use super::{post_events, valid_events, Server};

/// When the thorough and the lazy attacker say their forged rows were recorded.
fn forged_at() -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()
}

/// An intact log verifies, counts its events and checkpoints and names the uncovered ones; with
/// the verifier key given explicitly, an external checkpoint kept outside the database matches.
/// Returns the stdout of that second run.
pub async fn intact_log_verifies(f: &Fixture) -> String {
    let (stdout, stderr) = f.verify_ok(&[]);
    assert!(stdout.contains("OK: 40 events"), "{stdout}");
    assert!(stdout.contains("3 checkpoints checked"), "{stdout}");
    assert!(
        stderr.contains("10 events (positions 30..39) are not yet covered by a checkpoint"),
        "{stderr}"
    );
    // The verifier key given explicitly, and an external checkpoint kept outside the database.
    let key = f.signer.verifier_key_text();
    let note = f.path().join("checkpoint-20.txt");
    std::fs::write(&note, f.note_at(20).await).expect("write note");
    let note = note.to_string_lossy().into_owned();
    let (stdout, _) = f.verify_ok(&["--key", &key, "--checkpoint", &note]);
    assert!(stdout.contains("external checkpoint matches"), "{stdout}");
    stdout
}

/// Verified against `other`'s key, the first checkpoint (by the real key) fails.
pub fn first_checkpoint_fails_with(f: &Fixture, other: &Signer) {
    let stderr = f.verify_fails(&["--key", &other.verifier_key_text()]);
    assert!(
        stderr.contains("checkpoint at tree size 10: signature does not verify with key"),
        "{stderr}"
    );
}

/// On the fresh fixture `f`, the attacker runs `sql`; verify must fail with one line naming
/// `position`, its event id and `why`.
pub async fn tamper_is_named(f: Fixture, sql: &str, position: i64, why: &str) {
    let id = f.event_id_at(position).await;
    f.attacker().await.run(sql).await;
    f.verify_names(&format!("verify: position {position} (event {id}): {why}"));
}

/// On the fresh fixture `f`, which verifies, the attacker runs `sql`, which changes the lineage
/// edges; verify must fail naming `want`.
pub async fn edge_tamper_is_named(f: Fixture, sql: &str, want: &str) {
    f.verify_ok(&[]);
    f.attacker().await.run(sql).await;
    let stderr = f.verify_fails(&[]);
    assert!(stderr.contains(want), "{sql}: {stderr}");
}

/// A deleted row is named as a missing position.
pub async fn a_deleted_row_is_a_missing_position(f: Fixture) {
    f.attacker()
        .await
        .run("DELETE FROM lineage_events WHERE log_position = 5")
        .await;
    f.verify_names("verify: position 5 is missing");
}

/// A row inserted at position 12 by the thorough attacker, who recomputes every leaf hash and
/// the log head too, so every row is self-consistent: only the signed checkpoint at 20 can tell.
pub async fn a_thorough_insert_breaks_the_next_checkpoint(f: Fixture) {
    let raw = f.attacker().await;
    raw.make_room(12).await;
    raw.insert_forged(12, &event(1000), forged_at()).await;
    raw.rebuild_log().await;
    drop(raw);
    f.verify_names(
        "verify: checkpoint at tree size 20: root does not match the log (first divergence \
         between positions 10 and 19)",
    );
}

/// The lazy attacker (no leaf hashes recomputed) is caught at the first renumbered row.
pub async fn a_lazy_insert_is_named_at_the_first_moved_row(f: Fixture) {
    let moved = f.event_id_at(12).await;
    let raw = f.attacker().await;
    raw.make_room(12).await;
    raw.insert_forged(12, &event(1001), forged_at()).await;
    drop(raw);
    f.verify_names(&format!(
        "verify: position 13 (event {moved}): the stored leaf_hash does not match"
    ));
}

/// A row appended beyond the head, with a correct leaf hash, is named.
pub async fn a_row_appended_beyond_the_head_is_named(f: Fixture) {
    let forged = event(2000);
    f.attacker()
        .await
        .insert_forged(40, &forged, forged_at())
        .await;
    f.verify_names(&format!(
        "verify: position 40 (event {}): the row is beyond the log head (size 40)",
        forged.event_id
    ));
}

/// Each way of inserting a row, on a fresh log each: the thorough and the lazy attacker inside
/// the log, and a row appended beyond the head.
pub async fn an_inserted_row_is_named(f: Fixture) {
    a_thorough_insert_breaks_the_next_checkpoint(f.again().await).await;
    a_lazy_insert_is_named_at_the_first_moved_row(f.again().await).await;
    a_row_appended_beyond_the_head_is_named(f).await;
}

/// Two rows that swapped positions are named at the first of them.
pub async fn two_swapped_positions_are_named(f: Fixture) {
    let at_7 = f.event_id_at(7).await;
    f.attacker()
        .await
        .run(
            "UPDATE lineage_events SET log_position = 1000000 WHERE log_position = 3;
             UPDATE lineage_events SET log_position = 3 WHERE log_position = 7;
             UPDATE lineage_events SET log_position = 7 WHERE log_position = 1000000;",
        )
        .await;
    f.verify_names(&format!(
        "verify: position 3 (event {at_7}): the stored leaf_hash does not match"
    ));
}

/// A checkpoint at 20 whose root is forged: with the note's root line rewritten and its
/// signature kept, re-signed with another key of the same name, or signed with the log's own
/// key (a stolen key).
pub async fn a_checkpoint_with_a_forged_root_is_named(f: Fixture) {
    let forged_root = [7u8; 32];
    let forged = |signer: &Signer| {
        signer
            .sign(&geoprov::tlog::Checkpoint {
                origin: "geoprov/test-log".into(),
                size: 20,
                root_hash: forged_root,
            })
            .expect("sign")
    };
    let signature_fails = "verify: checkpoint at tree size 20: signature does not verify with key";

    // The note's root line rewritten, its signature kept.
    let note = f.note_at(20).await;
    let mut lines: Vec<String> = note.split('\n').map(str::to_owned).collect();
    lines[2] = BASE64.encode(forged_root);
    f.attacker()
        .await
        .replace_checkpoint(20, &lines.join("\n"), &forged_root)
        .await;
    f.verify_names(signature_fails);

    // The forged root re-signed with another key of the same name.
    let f = f.again().await;
    let other = Signer::generate("geoprov/test-log").expect("other key");
    f.attacker()
        .await
        .replace_checkpoint(20, &forged(&other), &forged_root)
        .await;
    f.verify_names(signature_fails);

    // A forged root signed with the log's own key (a stolen key) still does not match the rows.
    let f = f.again().await;
    f.attacker()
        .await
        .replace_checkpoint(20, &forged(&f.signer), &forged_root)
        .await;
    f.verify_names(
        "verify: checkpoint at tree size 20: root does not match the log (first divergence \
         between positions 10 and 19)",
    );
}

/// The checkpoint at 30 re-signed by another log's key is named with the log's own key; verified
/// against the other key instead, the first checkpoint (by the real key) fails.
pub async fn a_checkpoint_signed_by_another_key_is_named(f: Fixture) {
    let raw = f.attacker().await;
    let root = raw.checkpoint_root(30).await;
    let other = Signer::generate("geoprov/other-log").expect("other key");
    let note = other
        .sign(&geoprov::tlog::Checkpoint {
            origin: "geoprov/other-log".into(),
            size: 30,
            root_hash: root.as_slice().try_into().expect("32 bytes"),
        })
        .expect("sign");
    raw.replace_checkpoint(30, &note, &root).await;
    drop(raw);
    f.verify_names(&format!(
        "verify: checkpoint at tree size 30: signature does not verify with key {}",
        f.signer.verifier_key_text()
    ));
    first_checkpoint_fails_with(&f, &other);
}

/// `geoprov prove` writes inclusion and consistency proofs that `geoprov verify-proof` checks
/// offline (no data dir, no store); a changed byte, changed event content or another key fails
/// them; an uncovered event or a size without a checkpoint has no proof.
pub async fn proofs_verify_offline_and_tampered_ones_do_not(f: Fixture) {
    let key = f.signer.verifier_key_text();
    let id = f.event_id_at(13).await;

    let out = f.geoprov(&["prove", &id]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let proof: serde_json::Value = serde_json::from_slice(&out.stdout).expect("proof JSON");
    assert_eq!(proof["leaf_index"], 13);
    assert_eq!(proof["tree_size"], 30);
    assert_eq!(proof["event_id"], id.as_str());
    assert!(proof["checkpoint"]
        .as_str()
        .is_some_and(|n| n.starts_with("geoprov/test-log\n30\n")));
    assert_eq!(proof["audit_path"].as_array().map(Vec::len), Some(5));

    // Offline: no data dir, no store.
    let empty = tempfile::tempdir().expect("temp dir");
    let file = empty.path().join("proof.json");
    let file_arg = file.to_string_lossy().into_owned();
    let verify_proof = |proof: &serde_json::Value, key: &str| {
        std::fs::write(&file, proof.to_string()).expect("write proof");
        geoprov(empty.path(), &["verify-proof", &file_arg, "--key", key])
    };
    let out = verify_proof(&proof, &key);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(!empty.path().join("lineage.db").exists(), "no store opened");

    // One byte of one audit path entry changed.
    let mut bad = proof.clone();
    bad["audit_path"][2] = flip(proof["audit_path"][2].as_str().expect("hex")).into();
    let out = verify_proof(&bad, &key);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    // The event content changed: the leaf data no longer hashes to leaf_hash.
    let mut bad = proof.clone();
    bad["recorded_at"] = "2020-01-01T00:00:00.000000Z".into();
    assert_eq!(verify_proof(&bad, &key).status.code(), Some(1));
    // Another key.
    let other = Signer::generate("geoprov/test-log").expect("other");
    let out = verify_proof(&proof, &other.verifier_key_text());
    assert_eq!(out.status.code(), Some(1));

    // An event after the latest checkpoint has no proof yet.
    let uncovered = f.event_id_at(35).await;
    let out = f.geoprov(&["prove", &uncovered]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("not covered"),
        "{}",
        text(&out.stderr)
    );

    // Consistency between the checkpoints at 10 and 30.
    let out = f.geoprov(&["prove", "--consistency", "10", "30"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let proof: serde_json::Value = serde_json::from_slice(&out.stdout).expect("proof JSON");
    assert_eq!(proof["old_size"], 10);
    assert_eq!(proof["new_size"], 30);
    let out = verify_proof(&proof, &key);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let mut bad = proof.clone();
    bad["proof"][0] = flip(proof["proof"][0].as_str().expect("hex")).into();
    assert_eq!(verify_proof(&bad, &key).status.code(), Some(1));
    // A size with no stored checkpoint.
    let out = f.geoprov(&["prove", "--consistency", "10", "25"]);
    assert_eq!(out.status.code(), Some(1));
}

/// `geoprov serve` on an empty log answers the log endpoints: no checkpoint yet (404), then the
/// signed note of the checkpoint it writes on its interval, an inclusion proof that checks
/// offline with the key the server created at first start, and 404 for an unknown event.
pub async fn serve_answers_the_log_endpoints(log: LogDir) {
    let store_args = log.store_args();
    let mut args = vec!["--checkpoint-interval", "100ms"];
    args.extend(store_args.iter().map(String::as_str));
    let server = Server::start(log.path(), &args);
    let client = ::reqwest::Client::new();
    let base = server.url();
    let get = |path: &str| client.get(format!("{base}{path}")).send();
    let resp = get("/v1/log/checkpoint").await.expect("GET checkpoint");
    assert_eq!(resp.status().as_u16(), 404, "no checkpoint yet");
    let events = valid_events(50, "tlog-http");
    let (status, answer) = post_events(&base, format!("[{}]", events.join(","))).await;
    assert_eq!(status, 202, "{answer}");
    let first = answer["event_ids"][0].as_str().expect("id").to_owned();
    let store = log.open().await;
    let tlog = transparency_log(store.as_ref()).expect("a transparency log");
    assert!(
        wait_for(Duration::from_secs(30), || async {
            tlog.latest_checkpoint()
                .await
                .is_ok_and(|c| c.is_some_and(|c| c.tree_size == 50))
        })
        .await,
        "no checkpoint at 50"
    );
    let resp = get("/v1/log/checkpoint").await.expect("GET checkpoint");
    assert_eq!(resp.status().as_u16(), 200);
    assert!(resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/plain")));
    let note = resp.text().await.expect("note");
    assert!(note.contains("\n50\n"), "{note}");
    let resp = get(&format!("/v1/log/proof/{first}"))
        .await
        .expect("GET proof");
    assert_eq!(resp.status().as_u16(), 200);
    let proof: serde_json::Value = resp.json().await.expect("proof JSON");
    assert_eq!(proof["tree_size"], 50);
    assert_eq!(proof["checkpoint"].as_str(), Some(note.as_str()));
    // The proof checks offline with the key the server created at first start.
    let file = log.path().join("proof.json");
    std::fs::write(&file, proof.to_string()).expect("write proof");
    let key = log.path().join("log-signing.key");
    let empty = tempfile::tempdir().expect("temp dir");
    let out = geoprov(
        empty.path(),
        &[
            "verify-proof",
            &file.to_string_lossy(),
            "--key",
            &key.to_string_lossy(),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let resp = get(&format!("/v1/log/proof/{}", "ab".repeat(32)))
        .await
        .expect("GET proof");
    assert_eq!(resp.status().as_u16(), 404);
}

/// Stamps the cases above that take no arguments onto a backend's log tests, in the module that
/// calls it: `log_cases!(Backend::Sqlite)`.
macro_rules! log_cases {
    ($backend:expr) => {
        crate::support::stamp::stamp_cases!(
            crate::support::tlog::Fixture::new($backend),
            |f| crate::support::log_cases(f);
            a_deleted_row_is_a_missing_position,
            two_swapped_positions_are_named,
            a_checkpoint_with_a_forged_root_is_named,
            a_checkpoint_signed_by_another_key_is_named,
            proofs_verify_offline_and_tampered_ones_do_not,
        );
        crate::support::stamp::stamp_cases!(
            crate::support::tlog::LogDir::new($backend),
            |log| crate::support::log_cases(log);
            serve_answers_the_log_endpoints,
        );
    };
}

pub(crate) use log_cases;
