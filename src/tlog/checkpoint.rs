//! Checkpoints (C2SP tlog-checkpoint) signed as C2SP signed notes with Ed25519.
//!
//! A checkpoint commits to the log at one size:
//!
//! ```text
//! <origin>\n
//! <tree size, decimal, no leading zeros>\n
//! <root hash, standard base64 with padding>\n
//! \n
//! — <key name> <base64(4-byte key id || 64-byte Ed25519 signature)>\n
//! ```
//!
//! The first three lines are the note *text* (the checkpoint body, which is what is signed,
//! final newline included); after the blank line come one or more signature lines, each an
//! em dash (U+2014), a space, the key name, a space and the base64 signature. The key id is
//! `SHA-256(name || 0x0A || 0x01 || public key)[:4]`, big-endian.
//!
//! Key texts, in the Go `golang.org/x/mod/sumdb/note` format:
//! - verifier key (public, printed by `geoprov keygen`): `<name>+<8 hex id>+<base64(0x01 || 32-byte public key)>`;
//! - signer key (secret, MUST be stored with mode 0600): `PRIVATE+KEY+<name>+<8 hex id>+<base64(0x01 || 32-byte seed)>`.
//!
//! Specs: <https://github.com/C2SP/C2SP/blob/main/tlog-checkpoint.md> and
//! <https://github.com/C2SP/C2SP/blob/main/signed-note.md>.
//!
//! Written by hand on `ed25519-dalek` rather than with the `signed_note` crate (cloudflare/azul,
//! checked at 0.2.0): that crate is a faithful port of Go's note package, but it is pre-1.0
//! (its API changed from 0.1 to 0.2), pulls second copies of `base64` (0.21) and `thiserror`
//! (1.x) into the build, cannot build a signer from an existing `SigningKey` nor print the key
//! texts of one, and its errors would still need mapping to [`TlogError`]. One algorithm, one
//! key per verifier and a three-line body are about two hundred lines here, pinned by the Go
//! reference vectors in the tests.
//!
//! Not here: where keys are stored, fetching or serving checkpoints, witness cosignatures,
//! and any key type but Ed25519.

use std::collections::HashSet;
use std::fmt;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

use super::{Hash, TlogError};

/// Signature type byte of Ed25519 in C2SP signed-note key ids and key texts.
const ALG_ED25519: u8 = 0x01;
/// What starts every signature line: EM DASH (U+2014) and a space.
const SIG_LINE_PREFIX: &str = "\u{2014} ";
/// Signature lines beyond this make a note malformed (Go's `note.Open` uses the same limit;
/// the spec requires accepting at least 16).
pub const MAX_NOTE_SIGNATURES: usize = 100;
/// Notes longer than this are refused before any parsing (a checkpoint is ~150 bytes).
pub const MAX_NOTE_BYTES: usize = 1 << 20;

/// A log's signed statement of its size and root hash (C2SP tlog-checkpoint).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// Identifies the log. MUST be non-empty and MUST NOT contain a newline or another control
    /// character; SHOULD be a schema-less URL without spaces or `+` (e.g. `geoprov.example/log`).
    pub origin: String,
    /// Number of leaves in the tree this checkpoint commits to.
    pub size: u64,
    /// `MTH(D[size])`, the RFC 6962 root at that size.
    pub root_hash: Hash,
}

impl Checkpoint {
    /// The note text: `"<origin>\n<size>\n<base64 root>\n"`.
    ///
    /// The result is only a valid checkpoint body when `origin` is valid (see the field); use
    /// [`Signer::sign`], which checks it, to produce notes.
    #[must_use]
    pub fn to_body(&self) -> String {
        format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            BASE64.encode(self.root_hash)
        )
    }

    /// Parses a checkpoint body (the note text, final newline included).
    ///
    /// Extension lines after the root hash are accepted if non-empty, as the spec allows, and
    /// are not kept: they are covered by the signature but carry nothing geoprov uses.
    ///
    /// # Errors
    ///
    /// [`TlogError::MalformedCheckpoint`] when the body does not end in a newline, has fewer
    /// than three lines, an empty origin, a size that is not canonical decimal or does not fit
    /// u64, a root that is not canonical base64 of 32 bytes, an empty extension line, or a
    /// control character other than newline.
    pub fn parse_body(body: &str) -> Result<Self, TlogError> {
        let bad = |why: &str| TlogError::MalformedCheckpoint(why.to_string());
        if body.chars().any(|c| c < ' ' && c != '\n') {
            return Err(bad("control character in checkpoint"));
        }
        let Some(content) = body.strip_suffix('\n') else {
            return Err(bad("checkpoint body does not end with a newline"));
        };
        let mut lines = content.split('\n');
        let (Some(origin), Some(size), Some(root)) = (lines.next(), lines.next(), lines.next())
        else {
            return Err(bad("checkpoint body has fewer than three lines"));
        };
        if origin.is_empty() {
            return Err(bad("empty origin line"));
        }
        let size = parse_size(size)?;
        let root_bytes = BASE64
            .decode(root)
            .map_err(|_| bad("root hash line is not standard base64"))?;
        let root_hash: Hash = root_bytes
            .try_into()
            .map_err(|_| bad("root hash is not 32 bytes"))?;
        if BASE64.encode(root_hash) != root {
            return Err(bad("root hash is not canonical base64"));
        }
        if lines.any(str::is_empty) {
            return Err(bad("empty extension line"));
        }
        Ok(Self {
            origin: origin.to_string(),
            size,
            root_hash,
        })
    }
}

/// Parses the tree size line: ASCII digits, no sign, no leading zero unless it is `0`.
fn parse_size(line: &str) -> Result<u64, TlogError> {
    let bad = |why: &str| TlogError::MalformedCheckpoint(format!("tree size {line:?}: {why}"));
    if line.is_empty() || !line.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad("not a decimal number"));
    }
    if line.len() > 1 && line.starts_with('0') {
        return Err(bad("leading zero"));
    }
    line.parse::<u64>().map_err(|_| bad("too large"))
}

/// Whether `name` is a valid key name: non-empty, no Unicode white space, no `+`, and (stricter
/// than the spec, since names end up in notes) no control characters.
fn is_valid_key_name(name: &str) -> bool {
    !name.is_empty()
        && !name
            .chars()
            .any(|c| c.is_whitespace() || c == '+' || c.is_control())
}

/// The C2SP signed-note key id of an Ed25519 key:
/// `SHA-256(name || 0x0A || 0x01 || public key)[:4]` as a big-endian u32.
#[must_use]
pub fn key_id(name: &str, public_key: &VerifyingKey) -> u32 {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update([b'\n', ALG_ED25519]);
    h.update(public_key.as_bytes());
    let digest = h.finalize();
    u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]])
}

/// Parses `<8 hex digits>` into a key id (either case, exactly 8 digits).
fn parse_key_id(text: &str) -> Option<u32> {
    if text.len() != 8 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(text, 16).ok()
}

/// Decodes `base64(0x01 || 32 bytes)` from a key text.
fn decode_key_material(text: &str) -> Result<[u8; 32], TlogError> {
    let raw = BASE64
        .decode(text)
        .map_err(|_| TlogError::MalformedKey("key material is not standard base64".into()))?;
    match raw.split_first() {
        Some((&ALG_ED25519, rest)) => rest
            .try_into()
            .map_err(|_| TlogError::MalformedKey("Ed25519 key material is not 32 bytes".into())),
        Some((alg, _)) => Err(TlogError::MalformedKey(format!(
            "unknown key algorithm {alg:#04x}; only Ed25519 (0x01) is supported"
        ))),
        None => Err(TlogError::MalformedKey("empty key material".into())),
    }
}

/// Base64 of `0x01 || bytes`, the key-material part of a key text.
fn encode_key_material(bytes: &[u8; 32]) -> String {
    let mut raw = Vec::with_capacity(33);
    raw.push(ALG_ED25519);
    raw.extend_from_slice(bytes);
    BASE64.encode(raw)
}

/// Signs checkpoints (and any note text) with one Ed25519 key under one key name.
///
/// `Debug` shows the name and key id only, never the key.
#[derive(Clone)]
pub struct Signer {
    /// The public half: the key name written in signature lines, the cached
    /// `key_id(name, public key)` and the public key.
    public: Verifier,
    /// The secret key. `SigningKey` zeroizes itself on drop.
    key: SigningKey,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer")
            .field("name", &self.public.name)
            .field("key_id", &format_args!("{:08x}", self.public.key_id))
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// A signer for `key` under the key name `name`.
    ///
    /// # Errors
    ///
    /// [`TlogError::MalformedKey`] when `name` is empty or contains white space, `+` or a
    /// control character.
    pub fn new(name: &str, key: SigningKey) -> Result<Self, TlogError> {
        if !is_valid_key_name(name) {
            return Err(TlogError::MalformedKey(format!(
                "invalid key name {name:?}: it MUST be non-empty, without spaces or '+'"
            )));
        }
        let public = key.verifying_key();
        Ok(Self {
            public: Verifier {
                name: name.to_string(),
                key_id: key_id(name, &public),
                key: public,
            },
            key,
        })
    }

    /// A signer with a fresh key from the operating system's CSPRNG.
    ///
    /// # Errors
    ///
    /// As [`Signer::new`].
    pub fn generate(name: &str) -> Result<Self, TlogError> {
        Self::new(name, SigningKey::generate(&mut rand::rngs::OsRng))
    }

    /// Parses `PRIVATE+KEY+<name>+<8 hex id>+<base64(0x01 || seed)>` (surrounding white space,
    /// such as a key file's final newline, is ignored).
    ///
    /// # Errors
    ///
    /// [`TlogError::MalformedKey`] when the text is not in that form, the algorithm is not
    /// Ed25519, or the key id does not match the name and key.
    pub fn from_private_key_text(text: &str) -> Result<Self, TlogError> {
        let bad = |why: &str| TlogError::MalformedKey(format!("signer key: {why}"));
        let mut parts = text.trim().splitn(5, '+');
        let (Some("PRIVATE"), Some("KEY"), Some(name), Some(id), Some(material)) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(bad("expected PRIVATE+KEY+<name>+<id>+<key>"));
        };
        let id = parse_key_id(id).ok_or_else(|| bad("key id is not 8 hex digits"))?;
        let seed = decode_key_material(material)?;
        let signer = Self::new(name, SigningKey::from_bytes(&seed))?;
        if signer.public.key_id != id {
            return Err(bad("key id does not match the name and key"));
        }
        Ok(signer)
    }

    /// The secret key text `PRIVATE+KEY+<name>+<id>+<base64(0x01 || seed)>`. Whoever holds it
    /// can sign as this log: it MUST be written only to a file of mode 0600 and MUST NOT be
    /// logged.
    #[must_use]
    pub fn private_key_text(&self) -> String {
        let material = encode_key_material(self.key.as_bytes());
        format!("PRIVATE+KEY+{}+{material}", self.public.label())
    }

    /// The public verifier key text `<name>+<id>+<base64(0x01 || public key)>`.
    #[must_use]
    pub fn verifier_key_text(&self) -> String {
        self.public.key_text()
    }

    /// The [`Verifier`] for this signer's key.
    #[must_use]
    pub fn verifier(&self) -> Verifier {
        self.public.clone()
    }

    /// The key name.
    #[must_use]
    pub fn name(&self) -> &str {
        self.public.name()
    }

    /// The key id (see [`key_id`]).
    #[must_use]
    pub fn key_id(&self) -> u32 {
        self.public.key_id()
    }

    /// The full signed note of `checkpoint`: its body, a blank line and one signature line.
    ///
    /// # Errors
    ///
    /// [`TlogError::MalformedCheckpoint`] when the origin is empty or contains a control
    /// character (a newline would change the meaning of the body).
    pub fn sign(&self, checkpoint: &Checkpoint) -> Result<String, TlogError> {
        if checkpoint.origin.is_empty() || checkpoint.origin.chars().any(char::is_control) {
            return Err(TlogError::MalformedCheckpoint(format!(
                "origin {:?} MUST be non-empty and free of control characters",
                checkpoint.origin
            )));
        }
        self.sign_note(&checkpoint.to_body())
    }

    /// Signs an arbitrary note text (what `note.Sign` does in Go) and returns
    /// `text || "\n" || "— <name> <base64(id || signature)>\n"`.
    ///
    /// # Errors
    ///
    /// [`TlogError::MalformedNote`] when `text` is empty, does not end with a newline, or
    /// contains a control character other than newline.
    pub fn sign_note(&self, text: &str) -> Result<String, TlogError> {
        if !text.ends_with('\n') {
            return Err(TlogError::MalformedNote(
                "note text MUST end with a newline".into(),
            ));
        }
        if text.chars().any(|c| c < ' ' && c != '\n') {
            return Err(TlogError::MalformedNote(
                "note text MUST NOT contain control characters".into(),
            ));
        }
        let signature = self.key.sign(text.as_bytes());
        let mut raw = Vec::with_capacity(4 + 64);
        raw.extend_from_slice(&self.public.key_id.to_be_bytes());
        raw.extend_from_slice(&signature.to_bytes());
        Ok(format!(
            "{text}\n{SIG_LINE_PREFIX}{} {}\n",
            self.public.name,
            BASE64.encode(raw)
        ))
    }
}

/// Verifies notes signed by one Ed25519 key (one name, one key id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verifier {
    /// Key name expected in signature lines.
    name: String,
    /// Key id expected in signature lines.
    key_id: u32,
    /// The public key.
    key: VerifyingKey,
}

impl Verifier {
    /// Parses `<name>+<8 hex id>+<base64(0x01 || public key)>` (surrounding white space is
    /// ignored).
    ///
    /// # Errors
    ///
    /// [`TlogError::MalformedKey`] when the text is not in that form, the algorithm is not
    /// Ed25519, the public key is invalid or weak (small order), or the key id does not match.
    pub fn from_key_text(text: &str) -> Result<Self, TlogError> {
        let bad = |why: &str| TlogError::MalformedKey(format!("verifier key: {why}"));
        let mut parts = text.trim().splitn(3, '+');
        let (Some(name), Some(id), Some(material)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(bad("expected <name>+<id>+<key>"));
        };
        if !is_valid_key_name(name) {
            return Err(bad("invalid key name"));
        }
        let id = parse_key_id(id).ok_or_else(|| bad("key id is not 8 hex digits"))?;
        let bytes = decode_key_material(material)?;
        let key =
            VerifyingKey::from_bytes(&bytes).map_err(|_| bad("not a valid Ed25519 public key"))?;
        if key.is_weak() {
            return Err(bad("weak (small-order) Ed25519 public key"));
        }
        if key_id(name, &key) != id {
            return Err(bad("key id does not match the name and key"));
        }
        Ok(Self {
            name: name.to_string(),
            key_id: id,
            key,
        })
    }

    /// The verifier key text `<name>+<8 hex id>+<base64(0x01 || public key)>`.
    #[must_use]
    pub fn key_text(&self) -> String {
        let material = encode_key_material(self.key.as_bytes());
        format!("{}+{material}", self.label())
    }

    /// The key name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key id (see [`key_id`]).
    #[must_use]
    pub fn key_id(&self) -> u32 {
        self.key_id
    }

    /// `<name>+<id>`, how errors name the key.
    fn label(&self) -> String {
        format!("{}+{:08x}", self.name, self.key_id)
    }

    /// Opens a signed note (Go's `note.Open` with this one key): checks the whole note's
    /// syntax and returns its text (final newline included) when a signature by this key
    /// verifies.
    ///
    /// Rules, per C2SP signed-note: the note MUST be at most [`MAX_NOTE_BYTES`], MUST NOT
    /// contain control characters other than newline, the text is separated from the
    /// signatures by the *last* blank line, every signature line MUST be well formed and there
    /// MUST be at most [`MAX_NOTE_SIGNATURES`] of them; signatures by other keys (another name
    /// or another key id) are ignored; only the first signature line for this key is checked,
    /// and if it does not verify the whole note is rejected. Ed25519 verification is strict
    /// (`verify_strict`: no malleable or small-order signatures).
    ///
    /// # Errors
    ///
    /// [`TlogError::MalformedNote`] for syntax, [`TlogError::InvalidSignature`] when this key's
    /// signature is wrong, [`TlogError::UnverifiedNote`] when there is none.
    pub fn open<'a>(&self, note: &'a str) -> Result<&'a str, TlogError> {
        let bad = |why: &str| TlogError::MalformedNote(why.to_string());
        if note.len() > MAX_NOTE_BYTES {
            return Err(bad("note is too large"));
        }
        if note.chars().any(|c| c < ' ' && c != '\n') {
            return Err(bad("control character in note"));
        }
        let Some(split) = note.rfind("\n\n") else {
            return Err(bad("no blank line before the signatures"));
        };
        let (text, signatures) = (&note[..=split], &note[split + 2..]);
        let Some(signatures) = signatures.strip_suffix('\n') else {
            return Err(bad(
                "signature block is empty or does not end with a newline",
            ));
        };
        if signatures.is_empty() {
            return Err(bad("no signature lines"));
        }
        let mut seen: HashSet<(&str, u32)> = HashSet::new();
        let mut verified = false;
        for (count, line) in signatures.split('\n').enumerate() {
            if count >= MAX_NOTE_SIGNATURES {
                return Err(bad("too many signature lines"));
            }
            let (name, id, signature) = parse_signature_line(line)?;
            if !seen.insert((name, id)) {
                // Go's note.Open checks only the first signature of a key.
                continue;
            }
            if name != self.name || id != self.key_id {
                continue; // Another key's signature: MUST be ignored.
            }
            let signature = Signature::from_slice(&signature)
                .map_err(|_| TlogError::InvalidSignature(self.label()))?;
            self.key
                .verify_strict(text.as_bytes(), &signature)
                .map_err(|_| TlogError::InvalidSignature(self.label()))?;
            verified = true;
        }
        if verified {
            Ok(text)
        } else {
            Err(TlogError::UnverifiedNote(self.label()))
        }
    }

    /// Verifies a signed checkpoint: [`open`](Self::open) it, then
    /// [`Checkpoint::parse_body`] its text.
    ///
    /// The origin is not compared with anything: callers that know which log they expect
    /// SHOULD check `origin` themselves.
    ///
    /// # Errors
    ///
    /// As [`open`](Self::open) and [`Checkpoint::parse_body`].
    pub fn verify_note(&self, note: &str) -> Result<Checkpoint, TlogError> {
        Checkpoint::parse_body(self.open(note)?)
    }
}

/// Splits `— <name> <base64(id || sig)>` into its name, key id and signature bytes.
fn parse_signature_line(line: &str) -> Result<(&str, u32, Vec<u8>), TlogError> {
    let bad = |why: &str| TlogError::MalformedNote(format!("signature line: {why}"));
    let rest = line
        .strip_prefix(SIG_LINE_PREFIX)
        .ok_or_else(|| bad("does not start with an em dash and a space"))?;
    let (name, encoded) = rest
        .split_once(' ')
        .ok_or_else(|| bad("no space between key name and signature"))?;
    if !is_valid_key_name(name) {
        return Err(bad("invalid key name"));
    }
    let raw = BASE64
        .decode(encoded)
        .map_err(|_| bad("signature is not standard base64"))?;
    match raw.as_slice() {
        [a, b, c, d, signature @ ..] if !signature.is_empty() => Ok((
            name,
            u32::from_be_bytes([*a, *b, *c, *d]),
            signature.to_vec(),
        )),
        _ => Err(bad("signature is shorter than five bytes")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tlog::merkle::{leaf_hash, CompactRange};
    use crate::tlog::TlogErrorKind;

    // The known test keys and signatures of Go's golang.org/x/mod/sumdb/note
    // (note_test.go, golang/mod commit 02c991387e35f9e4c0a9b7ce137717055f8d716d).
    const PETER_SKEY: &str =
        "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
    const PETER_VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
    const ENOCH_VKEY: &str = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop";
    const TEXT: &str = "If you think cryptography is the answer to your problem,\n\
                        then you don't know what your problem is.\n";
    const PETER_SIG: &str = "\u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";
    const ENOCH_SIG: &str = "\u{2014} EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ=\n";

    // A real checkpoint of the Go checksum database (sum.golang.org) and its published key,
    // as kept in transparency-dev/formats `log/note_test.go` (TestSumDBNoteParsing).
    const SUMDB_VKEY: &str = "sum.golang.org+033de0ae+Ac4zctda0e5eza+HJyk9SxEdh+s3Ux18htTTAD8OuAn8";
    const SUMDB_NOTE: &str = "go.sum database tree\n6476701\nmb8QLQIs0Z0yP5Cstq6guj87oXWeC9gEM8oVikmm9Wk=\n\n\u{2014} sum.golang.org Az3grsLX85Gz+s1SiTbgkuqxgItqFq7gsMUEyVnrsa9LM7Us9S+1xbFIGu95949rj4nPRYfvimWEPWL+o3GeoWwOoAw=\n";

    fn note(text: &str, sigs: &[&str]) -> String {
        format!("{text}\n{}", sigs.concat())
    }

    fn sample_checkpoint() -> Checkpoint {
        let mut range = CompactRange::new();
        for i in 0u32..10 {
            range.append(leaf_hash(&i.to_be_bytes()));
        }
        Checkpoint {
            origin: "geoprov.example/test-log".into(),
            size: range.size(),
            root_hash: range.root(),
        }
    }

    #[test]
    fn go_note_vector_signs_byte_for_byte_and_verifies() {
        let signer = Signer::from_private_key_text(PETER_SKEY).unwrap();
        assert_eq!(signer.key_id(), 0xc74f_20a3);
        assert_eq!(signer.verifier_key_text(), PETER_VKEY);
        assert_eq!(signer.private_key_text(), PETER_SKEY);
        let signed = signer.sign_note(TEXT).unwrap();
        assert_eq!(signed, note(TEXT, &[PETER_SIG]));
        let verifier = Verifier::from_key_text(PETER_VKEY).unwrap();
        assert_eq!(verifier.open(&signed).unwrap(), TEXT);
        assert_eq!(verifier.key_text(), PETER_VKEY);
    }

    #[test]
    fn real_sumdb_checkpoint_verifies() {
        let verifier = Verifier::from_key_text(SUMDB_VKEY).unwrap();
        let cp = verifier.verify_note(SUMDB_NOTE).unwrap();
        assert_eq!(cp.origin, "go.sum database tree");
        assert_eq!(cp.size, 6_476_701);
        assert_eq!(
            BASE64.encode(cp.root_hash),
            "mb8QLQIs0Z0yP5Cstq6guj87oXWeC9gEM8oVikmm9Wk="
        );
        assert_eq!(
            cp.to_body(),
            SUMDB_NOTE.split("\n\n").next().unwrap().to_owned() + "\n"
        );
        let tampered = SUMDB_NOTE.replace("6476701", "6476702");
        let err = verifier.verify_note(&tampered).unwrap_err();
        assert!(matches!(err, TlogError::InvalidSignature(_)), "{err}");
        assert_eq!(err.kind(), TlogErrorKind::VerificationFailed);
    }

    #[test]
    fn go_open_semantics() {
        // Cases of Go's TestOpen.
        let peter = Verifier::from_key_text(PETER_VKEY).unwrap();
        let enoch = Verifier::from_key_text(ENOCH_VKEY).unwrap();
        let both = note(TEXT, &[PETER_SIG, ENOCH_SIG]);
        assert_eq!(peter.open(&both).unwrap(), TEXT);
        assert_eq!(enoch.open(&both).unwrap(), TEXT);

        let other = Signer::generate("Other").unwrap().verifier();
        assert!(matches!(
            other.open(&both),
            Err(TlogError::UnverifiedNote(_))
        ));

        let many = note(TEXT, &vec![PETER_SIG; 101]);
        assert!(matches!(
            peter.open(&many),
            Err(TlogError::MalformedNote(_))
        ));
        let hundred = note(TEXT, &vec![PETER_SIG; 100]);
        assert_eq!(peter.open(&hundred).unwrap(), TEXT);

        // 60 bytes in lands inside the base64 (the em dash is 3 bytes).
        let corrupted = format!("{}ABCD{}", &PETER_SIG[..60], &PETER_SIG[60..]);
        let err = peter.open(&note(TEXT, &[&corrupted])).unwrap_err();
        assert!(matches!(err, TlogError::InvalidSignature(_)), "{err}");

        // Duplicated verified and unverified signatures: only the first of a key counts.
        let enoch_bad = format!("{}ABCD{}", &ENOCH_SIG[..60], &ENOCH_SIG[60..]);
        let dup = note(
            TEXT,
            &[PETER_SIG, PETER_SIG, ENOCH_SIG, ENOCH_SIG, &enoch_bad],
        );
        assert_eq!(peter.open(&dup).unwrap(), TEXT);

        let bad_msgs = [
            TEXT.to_string(),
            format!("{TEXT}\n"),
            format!("{TEXT}\n{}", &PETER_SIG[..PETER_SIG.len() - 1]),
            format!("\x01{TEXT}\n{PETER_SIG}"),
            format!("{TEXT}\n\u{2014} Bad Name x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM="),
            format!("{TEXT}\n{PETER_SIG}Unexpected line.\n"),
            format!("{TEXT}\n-- PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"),
            format!("{TEXT}\n\u{2014} PeterNeumann AAAA\n"),
        ];
        for msg in bad_msgs {
            let err = peter.open(&msg).unwrap_err();
            assert!(matches!(err, TlogError::MalformedNote(_)), "{msg:?}: {err}");
        }
        // A signature under this name with another key id, or this id under another name,
        // belongs to an unknown key and is ignored.
        let renamed = PETER_SIG.replace("PeterNeumann", "CarmenSandiego");
        assert!(matches!(
            peter.open(&note(TEXT, &[&renamed])),
            Err(TlogError::UnverifiedNote(_))
        ));
        let reid = PETER_SIG.replace("x08g", "xxxx");
        assert!(matches!(
            peter.open(&note(TEXT, &[&reid])),
            Err(TlogError::UnverifiedNote(_))
        ));
    }

    #[test]
    fn key_text_manglings_are_refused() {
        // Go's TestNewVerifier / TestNewSigner: every proper substring and every one-byte
        // increment of a valid key text must be refused.
        for (good, parse) in [
            (
                PETER_VKEY,
                (|s: &str| Verifier::from_key_text(s).is_ok()) as fn(&str) -> bool,
            ),
            (PETER_SKEY, |s: &str| {
                Signer::from_private_key_text(s).is_ok()
            }),
        ] {
            assert!(parse(good));
            let b = good.as_bytes();
            for i in 0..=b.len() {
                for j in i + 1..=b.len() {
                    if (i, j) != (0, b.len()) {
                        let sub = &good[i..j];
                        // Trimmed white space is the one accepted difference.
                        if sub.trim() != good {
                            assert!(!parse(sub), "accepted substring {sub:?}");
                        }
                    }
                }
            }
            for i in 0..b.len() {
                let mut m = b.to_vec();
                m[i] += 1;
                if let Ok(s) = String::from_utf8(m) {
                    assert!(!parse(&s), "accepted mangled {s:?}");
                }
            }
        }
        // Wrong length key and unknown algorithm, each with an adjusted key hash (Go's cases).
        assert!(Verifier::from_key_text(
            "PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY=="
        )
        .is_err());
        assert!(Verifier::from_key_text(
            "PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
        )
        .is_err());
        assert!(Signer::new("bad name", SigningKey::from_bytes(&[7; 32])).is_err());
        assert!(Signer::new("a+b", SigningKey::from_bytes(&[7; 32])).is_err());
        assert!(Signer::new("", SigningKey::from_bytes(&[7; 32])).is_err());
    }

    #[test]
    fn key_texts_round_trip() {
        let signer = Signer::generate("geoprov.example/log").unwrap();
        let again = Signer::from_private_key_text(&signer.private_key_text()).unwrap();
        assert_eq!(again.private_key_text(), signer.private_key_text());
        assert_eq!(again.verifier_key_text(), signer.verifier_key_text());
        let verifier = Verifier::from_key_text(&signer.verifier_key_text()).unwrap();
        assert_eq!(verifier, signer.verifier());
        assert_eq!(verifier.name(), "geoprov.example/log");
        assert_eq!(verifier.key_id(), signer.key_id());
        // A key file's trailing newline is fine.
        let with_nl = format!("{}\n", signer.private_key_text());
        assert!(Signer::from_private_key_text(&with_nl).is_ok());
        // The secret never shows in Debug output.
        let debug = format!("{signer:?}");
        assert!(debug.contains("geoprov.example/log"));
        // `PRIVATE+KEY+<name>+<id>+<base64>`: the base64 may itself hold '+', so split from
        // the left (the name cannot hold one).
        let text = signer.private_key_text();
        let secret = text.splitn(5, '+').nth(4).unwrap();
        assert!(secret.len() > 40, "{text}");
        assert!(!debug.contains(secret));
    }

    #[test]
    fn checkpoint_sign_verify_round_trip() {
        let signer = Signer::generate("geoprov.example/test-log").unwrap();
        let cp = sample_checkpoint();
        let signed = signer.sign(&cp).unwrap();
        assert!(signed.starts_with(&cp.to_body()));
        assert!(signed.contains("\n\n\u{2014} geoprov.example/test-log "));
        assert_eq!(signer.verifier().verify_note(&signed).unwrap(), cp);
    }

    #[test]
    fn checkpoint_verification_fails_on_any_change() {
        let signer = Signer::generate("geoprov.example/test-log").unwrap();
        let cp = sample_checkpoint();
        let signed = signer.sign(&cp).unwrap();
        let verifier = signer.verifier();

        // Another key, even under the same name: its signature is not there.
        let other = Signer::generate("geoprov.example/test-log").unwrap();
        let err = other.verifier().verify_note(&signed).unwrap_err();
        assert!(matches!(err, TlogError::UnverifiedNote(_)), "{err}");
        // The same body signed by the other key does not pass our verifier.
        let forged = other.sign(&cp).unwrap();
        assert!(verifier.verify_note(&forged).is_err());

        // Modified size.
        let bigger = signed.replacen("\n10\n", "\n11\n", 1);
        assert_ne!(bigger, signed);
        let err = verifier.verify_note(&bigger).unwrap_err();
        assert!(matches!(err, TlogError::InvalidSignature(_)), "{err}");

        // Modified root (one flipped bit, re-encoded canonically).
        let mut forged_root = cp.clone();
        forged_root.root_hash[0] ^= 1;
        let swapped = signed.replacen(
            &BASE64.encode(cp.root_hash),
            &BASE64.encode(forged_root.root_hash),
            1,
        );
        assert_ne!(swapped, signed);
        let err = verifier.verify_note(&swapped).unwrap_err();
        assert!(matches!(err, TlogError::InvalidSignature(_)), "{err}");

        // Modified origin.
        let renamed = signed.replacen("test-log\n", "test-log2\n", 1);
        assert!(verifier.verify_note(&renamed).is_err());

        // Signature removed.
        let body_only = cp.to_body();
        assert!(verifier.verify_note(&body_only).is_err());
    }

    #[test]
    fn checkpoint_bodies_are_parsed_strictly() {
        let root = BASE64.encode([9u8; 32]);
        let ok = format!("o\n5\n{root}\n");
        assert_eq!(Checkpoint::parse_body(&ok).unwrap().size, 5);
        let with_ext = format!("o\n0\n{root}\nextension\n");
        assert_eq!(Checkpoint::parse_body(&with_ext).unwrap().size, 0);
        let max = format!("o\n{}\n{root}\n", u64::MAX);
        assert_eq!(Checkpoint::parse_body(&max).unwrap().size, u64::MAX);
        let short_root = BASE64.encode([9u8; 31]);
        for bad in [
            format!("o\n5\n{root}"),
            format!("\n5\n{root}\n"),
            format!("o\n05\n{root}\n"),
            format!("o\n+5\n{root}\n"),
            format!("o\n-5\n{root}\n"),
            format!("o\n\n{root}\n"),
            format!("o\n5 \n{root}\n"),
            format!("o\n18446744073709551616\n{root}\n"),
            format!("o\n5\n{short_root}\n"),
            format!("o\n5\n{}\n", root.trim_end_matches('=')),
            "o\n5\n!!!!\n".to_string(),
            "o\n5\n".to_string(),
            format!("o\n5\n{root}\n\n"),
            format!("o\n5\n{root}\next\n\nmore\n"),
            format!("o\t\n5\n{root}\n"),
        ] {
            assert!(Checkpoint::parse_body(&bad).is_err(), "accepted {bad:?}");
        }
        // Non-canonical base64 (trailing bits set) of a 32-byte value is refused.
        let mut chars: Vec<char> = root.chars().collect();
        let last = chars.len() - 2; // the character before the single '='
        chars[last] = 'x';
        let noncanonical: String = chars.into_iter().collect();
        assert!(Checkpoint::parse_body(&format!("o\n5\n{noncanonical}\n")).is_err());
    }

    #[test]
    fn sign_refuses_text_that_would_not_verify() {
        let signer = Signer::generate("k").unwrap();
        assert!(signer.sign_note("no newline").is_err());
        assert!(signer.sign_note("").is_err());
        assert!(signer.sign_note("tab\there\n").is_err());
        let mut cp = sample_checkpoint();
        cp.origin = "two\nlines".into();
        assert!(signer.sign(&cp).is_err());
        cp.origin = String::new();
        assert!(signer.sign(&cp).is_err());
        // A text with inner blank lines still opens: the last blank line splits.
        let text = "a\n\nb\n";
        let signed = signer.sign_note(text).unwrap();
        assert_eq!(signer.verifier().open(&signed).unwrap(), text);
    }

    #[test]
    fn unknown_extra_signatures_are_ignored() {
        let log = Signer::generate("log.example").unwrap();
        let witness = Signer::generate("witness.example").unwrap();
        let cp = sample_checkpoint();
        let signed = log.sign(&cp).unwrap();
        let cosigned = witness.sign(&cp).unwrap();
        let cosig_line = cosigned.rsplit("\n\n").next().unwrap();
        let both = format!("{signed}{cosig_line}");
        assert_eq!(log.verifier().verify_note(&both).unwrap(), cp);
        assert_eq!(witness.verifier().verify_note(&both).unwrap(), cp);
    }
}
