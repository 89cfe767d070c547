//! Checkpoints of a node's audit log and their signatures, in the formats
//! transparency logs share (C2SP), so any tool that speaks them can check
//! ours:
//! - a checkpoint (`c2sp.org/tlog-checkpoint`) is three lines: the log's
//!   origin, its size, and its Merkle root in base64, then our one extension
//!   line, `time <unix seconds>`;
//! - it travels as a signed note (`c2sp.org/signed-note`): the text, a blank
//!   line, and one line a signature, `— <key name> <base64(key id ||
//!   signature)>`. The log signs with its Ed25519 key (key id: the first 4
//!   bytes of SHA-256(name, "\n", 0x01, public key));
//! - a witness cosigns (`c2sp.org/tlog-cosignature`): it signs
//!   `cosignature/v1\ntime <t>\n` followed by the checkpoint's text, with
//!   key id type 0x04, and its line carries the time as well.
//!
//! A node's one Ed25519 key signs its own checkpoints and cosigns its peers'
//! (the message formats and key ids keep the two apart). Ed25519 is ring's:
//! one crypto implementation in the node, as for TLS.
//!
//! Everything parsed here can come from a peer: lengths and counts are
//! bounded, and nothing panics on any input.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};

/// A signed checkpoint longer than this is refused unread.
pub const MAX_NOTE_BYTES: usize = 16 * 1024;
/// Signature lines a note may carry (the log's and its witnesses').
pub const MAX_SIGNATURES: usize = 64;
const ALGORITHM_ED25519: u8 = 0x01;
const ALGORITHM_COSIGNATURE_V1: u8 = 0x04;
const SIGNATURE_PREFIX: &str = "\u{2014} ";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    #[error("not a signed checkpoint: {0}")]
    Malformed(String),
    #[error("{0}")]
    Key(String),
    #[error("no valid signature by {0}")]
    NotSigned(String),
}

fn malformed(why: impl Into<String>) -> CheckpointError {
    CheckpointError::Malformed(why.into())
}

/// A log's state at one moment: what a checkpoint says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The log's name, unique to it (`<trust domain><path>/audit`).
    pub origin: String,
    /// Entries in the log.
    pub size: u64,
    /// The Merkle root over them (RFC 6962).
    pub root: [u8; 32],
    /// When the log signed it, Unix seconds.
    pub time_unix: i64,
}

impl Checkpoint {
    /// The origin of the audit log of the node with SPIFFE id `identity`.
    pub fn origin_of(identity: &str) -> String {
        let name = identity.strip_prefix("spiffe://").unwrap_or(identity);
        format!("{name}/audit")
    }

    /// The checkpoint's text: what the signatures cover.
    pub fn text(&self) -> String {
        format!(
            "{}\n{}\n{}\ntime {}\n",
            self.origin,
            self.size,
            BASE64.encode(self.root),
            self.time_unix
        )
    }

    /// Reads a checkpoint's text.
    pub fn parse(text: &str) -> Result<Self, CheckpointError> {
        let mut lines = text.split_terminator('\n');
        let origin = lines
            .next()
            .filter(|o| valid_name(o))
            .ok_or_else(|| malformed("no origin"))?;
        let size = lines
            .next()
            .and_then(|s| (s == "0" || !s.starts_with('0')).then_some(s))
            .and_then(|s| s.parse::<u64>().ok())
            .ok_or_else(|| malformed("no tree size"))?;
        let root = lines
            .next()
            .and_then(|r| BASE64.decode(r).ok())
            .and_then(|r| <[u8; 32]>::try_from(r).ok())
            .ok_or_else(|| malformed("no 32-byte root"))?;
        let time_unix = lines
            .next()
            .and_then(|l| l.strip_prefix("time "))
            .and_then(|t| t.parse::<i64>().ok())
            .ok_or_else(|| malformed("no time line"))?;
        if !text.ends_with('\n') {
            return Err(malformed("the text does not end with a newline"));
        }
        Ok(Checkpoint {
            origin: origin.to_owned(),
            size,
            root,
            time_unix,
        })
    }
}

/// A key name: no spaces, no plus, no newline (signed-note's rule).
fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 256 && !name.chars().any(|c| c.is_whitespace() || c == '+')
}

fn key_id(name: &str, algorithm: u8, public_key: &[u8]) -> [u8; 4] {
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    context.update(name.as_bytes());
    context.update(b"\n");
    context.update(&[algorithm]);
    context.update(public_key);
    let digest = context.finish();
    let mut id = [0u8; 4];
    id.copy_from_slice(&digest.as_ref()[..4]);
    id
}

/// A node's checkpoint key: signs its log's checkpoints, cosigns peers'.
#[derive(Debug)]
pub struct SigningKey {
    name: String,
    pair: Ed25519KeyPair,
}

impl SigningKey {
    /// A new key's PKCS#8 bytes (to be stored 0600).
    pub fn generate() -> Result<Vec<u8>, CheckpointError> {
        let rng = ring::rand::SystemRandom::new();
        Ed25519KeyPair::generate_pkcs8(&rng)
            .map(|doc| doc.as_ref().to_vec())
            .map_err(|_| CheckpointError::Key("could not generate an Ed25519 key".into()))
    }

    /// The key in `pkcs8`, signing as `name` (the node's log origin).
    pub fn from_pkcs8(name: &str, pkcs8: &[u8]) -> Result<Self, CheckpointError> {
        if !valid_name(name) {
            return Err(CheckpointError::Key(format!("{name:?} cannot name a key")));
        }
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8)
            .map_err(|_| CheckpointError::Key("not an Ed25519 key in PKCS#8".into()))?;
        Ok(SigningKey {
            name: name.to_owned(),
            pair,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The verifier key others check this key's signatures with:
    /// `<name>+<key id, hex>+<base64(0x01 || public key)>`.
    pub fn verifier_key(&self) -> String {
        let public = self.pair.public_key().as_ref();
        let mut encoded = vec![ALGORITHM_ED25519];
        encoded.extend_from_slice(public);
        format!(
            "{}+{}+{}",
            self.name,
            hex::encode(key_id(&self.name, ALGORITHM_ED25519, public)),
            BASE64.encode(encoded)
        )
    }

    /// `checkpoint` as a note signed by this key.
    pub fn sign(&self, checkpoint: &Checkpoint) -> String {
        let text = checkpoint.text();
        let public = self.pair.public_key().as_ref();
        let mut signature = key_id(&self.name, ALGORITHM_ED25519, public).to_vec();
        signature.extend_from_slice(self.pair.sign(text.as_bytes()).as_ref());
        format!(
            "{text}\n{SIGNATURE_PREFIX}{} {}\n",
            self.name,
            BASE64.encode(signature)
        )
    }

    /// A cosignature line for the checkpoint `text`, made at `time_unix`.
    pub fn cosign(&self, text: &str, time_unix: u64) -> String {
        let public = self.pair.public_key().as_ref();
        let message = cosigned_message(text, time_unix);
        let mut signature = key_id(&self.name, ALGORITHM_COSIGNATURE_V1, public).to_vec();
        signature.extend_from_slice(&time_unix.to_be_bytes());
        signature.extend_from_slice(self.pair.sign(message.as_bytes()).as_ref());
        format!(
            "{SIGNATURE_PREFIX}{} {}\n",
            self.name,
            BASE64.encode(signature)
        )
    }
}

fn cosigned_message(text: &str, time_unix: u64) -> String {
    format!("cosignature/v1\ntime {time_unix}\n{text}")
}

/// Someone's public key, as a verifier key string names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifierKey {
    pub name: String,
    public: [u8; 32],
}

impl VerifierKey {
    pub fn parse(encoded: &str) -> Result<Self, CheckpointError> {
        let bad = |why: &str| CheckpointError::Key(format!("not a verifier key ({why})"));
        let mut parts = encoded.trim().splitn(3, '+');
        let name = parts
            .next()
            .filter(|n| valid_name(n))
            .ok_or_else(|| bad("name"))?;
        let id = parts
            .next()
            .and_then(|h| hex::decode(h).ok())
            .and_then(|h| <[u8; 4]>::try_from(h).ok())
            .ok_or_else(|| bad("key id"))?;
        let key = parts
            .next()
            .and_then(|k| BASE64.decode(k).ok())
            .ok_or_else(|| bad("key"))?;
        let (&algorithm, public) = key.split_first().ok_or_else(|| bad("key"))?;
        let public = <[u8; 32]>::try_from(public).map_err(|_| bad("not 32 bytes"))?;
        if algorithm != ALGORITHM_ED25519 {
            return Err(bad("not Ed25519"));
        }
        if key_id(name, ALGORITHM_ED25519, &public) != id {
            return Err(bad("its key id does not match its key"));
        }
        Ok(VerifierKey {
            name: name.to_owned(),
            public,
        })
    }

    /// The string [`VerifierKey::parse`] reads.
    pub fn encode(&self) -> String {
        let mut encoded = vec![ALGORITHM_ED25519];
        encoded.extend_from_slice(&self.public);
        format!(
            "{}+{}+{}",
            self.name,
            hex::encode(key_id(&self.name, ALGORITHM_ED25519, &self.public)),
            BASE64.encode(encoded)
        )
    }

    fn verifies(&self, message: &[u8], signature: &[u8]) -> bool {
        UnparsedPublicKey::new(&ED25519, self.public)
            .verify(message, signature)
            .is_ok()
    }
}

/// One signature line of a note.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SignatureLine {
    name: String,
    /// Key id, then the rest.
    bytes: Vec<u8>,
}

/// A signed checkpoint as received: its text, its checkpoint, its lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedCheckpoint {
    pub checkpoint: Checkpoint,
    text: String,
    signatures: Vec<SignatureLine>,
}

impl SignedCheckpoint {
    /// Reads a signed note holding a checkpoint (signatures not checked).
    pub fn parse(note: &str) -> Result<Self, CheckpointError> {
        if note.len() > MAX_NOTE_BYTES {
            return Err(malformed(format!("longer than {MAX_NOTE_BYTES} bytes")));
        }
        let split = note
            .rfind("\n\n")
            .ok_or_else(|| malformed("no signatures"))?;
        let (text, rest) = note.split_at(split + 1);
        let rest = &rest[1..];
        if !rest.ends_with('\n') {
            return Err(malformed("the last signature line has no newline"));
        }
        let mut signatures = Vec::new();
        for line in rest.split_terminator('\n') {
            if signatures.len() == MAX_SIGNATURES {
                return Err(malformed(format!("more than {MAX_SIGNATURES} signatures")));
            }
            let line = line
                .strip_prefix(SIGNATURE_PREFIX)
                .ok_or_else(|| malformed("a signature line does not start with an em dash"))?;
            let (name, encoded) = line
                .split_once(' ')
                .filter(|(name, _)| valid_name(name))
                .ok_or_else(|| malformed("a signature line has no key name"))?;
            let bytes = BASE64
                .decode(encoded)
                .ok()
                .filter(|b| b.len() > 4)
                .ok_or_else(|| malformed("a signature is not base64"))?;
            signatures.push(SignatureLine {
                name: name.to_owned(),
                bytes,
            });
        }
        if signatures.is_empty() {
            return Err(malformed("no signatures"));
        }
        Ok(SignedCheckpoint {
            checkpoint: Checkpoint::parse(text)?,
            text: text.to_owned(),
            signatures,
        })
    }

    /// The note, text and every signature line, as it travels.
    pub fn note(&self) -> String {
        let mut note = format!("{}\n", self.text);
        for line in &self.signatures {
            note.push_str(&format!(
                "{SIGNATURE_PREFIX}{} {}\n",
                line.name,
                BASE64.encode(&line.bytes)
            ));
        }
        note
    }

    /// Checks the log's own signature by `key`.
    pub fn verify_signed_by(&self, key: &VerifierKey) -> Result<(), CheckpointError> {
        let id = key_id(&key.name, ALGORITHM_ED25519, &key.public);
        let signed = self.signatures.iter().any(|line| {
            line.name == key.name
                && line.bytes.len() == 4 + 64
                && line.bytes[..4] == id
                && key.verifies(self.text.as_bytes(), &line.bytes[4..])
        });
        if signed {
            Ok(())
        } else {
            Err(CheckpointError::NotSigned(key.name.clone()))
        }
    }

    /// Checks a cosignature by the witness `key`; its time, if valid.
    pub fn cosigned_by(&self, key: &VerifierKey) -> Result<u64, CheckpointError> {
        let id = key_id(&key.name, ALGORITHM_COSIGNATURE_V1, &key.public);
        self.signatures
            .iter()
            .filter(|line| {
                line.name == key.name && line.bytes.len() == 4 + 8 + 64 && line.bytes[..4] == id
            })
            .find_map(|line| {
                let mut time = [0u8; 8];
                time.copy_from_slice(&line.bytes[4..12]);
                let time = u64::from_be_bytes(time);
                key.verifies(
                    cosigned_message(&self.text, time).as_bytes(),
                    &line.bytes[12..],
                )
                .then_some(time)
            })
            .ok_or_else(|| CheckpointError::NotSigned(key.name.clone()))
    }

    /// Adds a cosignature line (as [`SigningKey::cosign`] makes), replacing
    /// any earlier one of the same name.
    pub fn add_cosignature(&mut self, line: &str) -> Result<(), CheckpointError> {
        let parsed = SignedCheckpoint::parse(&format!("{}\n{line}", self.text))?;
        let [added] = parsed.signatures.as_slice() else {
            return Err(malformed("not one cosignature line"));
        };
        self.signatures
            .retain(|s| s.name != added.name || s.bytes.len() != added.bytes.len());
        if self.signatures.len() == MAX_SIGNATURES {
            return Err(malformed(format!("more than {MAX_SIGNATURES} signatures")));
        }
        self.signatures.push(added.clone());
        Ok(())
    }

    /// Keeps only the signature lines whose key name `keep` accepts (the
    /// log's own and a witness's), so a note kept for later never grows
    /// with lines someone else added.
    pub fn retain_signatures(&mut self, keep: impl Fn(&str) -> bool) {
        self.signatures.retain(|line| keep(&line.name));
    }

    /// The checkpoint's text (what the signatures cover).
    pub fn text(&self) -> &str {
        &self.text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> SigningKey {
        SigningKey::from_pkcs8(name, &SigningKey::generate().expect("generate")).expect("key")
    }

    fn checkpoint() -> Checkpoint {
        Checkpoint {
            origin: Checkpoint::origin_of("spiffe://surrey.patchwork.uk/node/guildford"),
            size: 1_234,
            root: [7; 32],
            time_unix: 1_796_000_000,
        }
    }

    #[test]
    fn a_signed_and_cosigned_checkpoint_verifies_and_a_changed_one_does_not() {
        let log = key("surrey.patchwork.uk/node/guildford/audit");
        let witness = key("brighton.patchwork.uk/node/hove/audit");
        let note = log.sign(&checkpoint());
        assert!(
            note.starts_with("surrey.patchwork.uk/node/guildford/audit\n1234\n"),
            "{note}"
        );
        let mut signed = SignedCheckpoint::parse(&note).expect("parse");
        assert_eq!(signed.checkpoint, checkpoint());
        let log_key = VerifierKey::parse(&log.verifier_key()).expect("verifier");
        let witness_key = VerifierKey::parse(&witness.verifier_key()).expect("verifier");
        signed
            .verify_signed_by(&log_key)
            .expect("signed by the log");
        assert!(signed.verify_signed_by(&witness_key).is_err());
        signed
            .add_cosignature(&witness.cosign(signed.text(), 1_796_000_060))
            .expect("cosign");
        let again = SignedCheckpoint::parse(&signed.note()).expect("round trip");
        again.verify_signed_by(&log_key).expect("still signed");
        assert_eq!(
            again.cosigned_by(&witness_key).expect("cosigned"),
            1_796_000_060
        );
        assert!(
            again.cosigned_by(&log_key).is_err(),
            "a log signature is not a cosignature"
        );

        // One digit of the size, or of the root, changed: neither verifies.
        let forged = signed.note().replacen("\n1234\n", "\n1233\n", 1);
        let forged = SignedCheckpoint::parse(&forged).expect("parses");
        assert!(forged.verify_signed_by(&log_key).is_err());
        assert!(forged.cosigned_by(&witness_key).is_err());
    }

    #[test]
    fn hostile_notes_and_keys_are_refused_without_panicking() {
        let log = key("log");
        let note = log.sign(&checkpoint());
        for bad in [
            String::new(),
            "\n\n".into(),
            note.replace('\u{2014}', "-"),
            note.trim_end().to_owned(),
            format!("{}{}", note, "\u{2014} x AAAA\n".repeat(MAX_SIGNATURES)),
            "x".repeat(MAX_NOTE_BYTES + 1),
            note.replacen("1234", "01234", 1),
            note.replacen("time ", "tim ", 1),
        ] {
            assert!(SignedCheckpoint::parse(&bad).is_err(), "{bad:?}");
        }
        for bad in ["", "a+b+c", "log+00000000+AQ==", "log+zz+AAAA", "log"] {
            assert!(VerifierKey::parse(bad).is_err(), "{bad:?}");
        }
        let mut wrong_id = log.verifier_key();
        let digit = if wrong_id.as_bytes()[4] == b'0' {
            "1"
        } else {
            "0"
        };
        wrong_id.replace_range(4..5, digit);
        assert!(VerifierKey::parse(&wrong_id).is_err());
        assert!(SigningKey::from_pkcs8("a b", &SigningKey::generate().expect("key")).is_err());
        assert!(SigningKey::from_pkcs8("log", b"not a key").is_err());
    }
}
