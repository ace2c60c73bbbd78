//! Encryption at rest of the cache's disk tier (`cache.encryption_key_file`).
//!
//! - Chunks are sealed with AES-256-GCM (aws-lc-rs, a random 96-bit nonce per entry) when
//!   foyer writes them to disk, with the entry's key as associated data: an entry copied
//!   under another key, altered, or sealed with another key does not open and is a miss.
//!   The memory tier holds plain bytes; a chunk read back from disk is opened once and put
//!   back into memory opened.
//! - Entry keys name objects by a keyed hash (HMAC-SHA256) of their path, so the disk holds
//!   neither table names nor file names.
//! - The disk directory records which key (a fingerprint, not the key) wrote it. A start
//!   with another key, or none, empties the disk tier first: it never serves what it
//!   cannot open, and never keeps plaintext next to sealed entries.
//!
//! The encryption and hashing keys are derived from the configured 256-bit key with HMAC
//! under distinct labels.

use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;

use aws_lc_rs::aead::{AES_256_GCM, Aad, NONCE_LEN, Nonce, RandomizedNonceKey};
use aws_lc_rs::hmac;
use bytes::Bytes;
use foyer::Code;

use crate::error::{EngineError, Result};

/// The marker file in the disk directory that names the key its entries were sealed with.
const FORMAT_FILE: &str = "lancefleet-cache-format";
/// The prefix of foyer's block files in the disk directory.
const FOYER_FILE_PREFIX: &str = "foyer-storage-direct-fs-";

/// The disk tier's keys.
pub struct DiskCipher {
    aead: RandomizedNonceKey,
    names: hmac::Key,
    fingerprint: String,
}

impl std::fmt::Debug for DiskCipher {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("DiskCipher").field("fingerprint", &self.fingerprint).finish_non_exhaustive()
    }
}

impl DiskCipher {
    /// The cipher of the key in `path`: 64 hex digits, surrounding white space ignored.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|error| {
            EngineError::internal(format!("cannot read cache.encryption_key_file {}: {error}", path.display()))
        })?;
        let key = decode_hex(text.trim()).filter(|key| key.len() == 32).ok_or_else(|| {
            EngineError::internal(format!(
                "cache.encryption_key_file {} must hold 64 hex digits (a 256-bit key, e.g. `openssl rand -hex 32`)",
                path.display()
            ))
        })?;
        Self::new(&key)
    }

    /// The cipher of a 256-bit `key`.
    pub fn new(key: &[u8]) -> Result<Self> {
        let master = hmac::Key::new(hmac::HMAC_SHA256, key);
        let derive = |label: &[u8]| hmac::sign(&master, label);
        let aead = RandomizedNonceKey::new(&AES_256_GCM, derive(b"lancefleet cache: entry encryption").as_ref())
            .map_err(|_| EngineError::internal("cannot build the cache's AES-256-GCM key"))?;
        let names = hmac::Key::new(hmac::HMAC_SHA256, derive(b"lancefleet cache: entry names").as_ref());
        let fingerprint = hex(&derive(b"lancefleet cache: key fingerprint").as_ref()[..8]);
        Ok(Self { aead, names, fingerprint })
    }

    /// The name under which the entries of `object` are kept.
    pub fn name(&self, object: &str) -> String {
        hex(hmac::sign(&self.names, object.as_bytes()).as_ref())
    }

    /// `plain` sealed and bound to `context`: nonce, ciphertext, tag.
    fn seal(&self, context: &[u8], plain: &[u8]) -> foyer::Result<Vec<u8>> {
        let mut sealed = plain.to_vec();
        // AES-GCM refuses only inputs over 64 GiB (chunks are at most 8 MiB).
        let nonce = self
            .aead
            .seal_in_place_append_tag(Aad::from(context), &mut sealed)
            .map_err(|_| foyer::Error::io_error(std::io::Error::other("cannot seal a cache entry")))?;
        Ok([nonce.as_ref().as_slice(), &sealed].concat())
    }

    /// The plain bytes of `sealed`, if it was sealed by this key for `context`.
    fn open(&self, context: &[u8], sealed: &[u8]) -> Option<Bytes> {
        let (nonce, body) = sealed.split_at_checked(NONCE_LEN)?;
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut body = body.to_vec();
        let plain = self.aead.open_in_place(nonce, Aad::from(context), &mut body).ok()?.len();
        body.truncate(plain);
        Some(Bytes::from(body))
    }
}

/// Makes `dir` hold only entries of `cipher` (or only plain entries without one): when its
/// marker names another key, or is missing next to existing block files, foyer's block
/// files are removed before the cache opens.
pub fn prepare_disk_dir(dir: &Path, cipher: Option<&DiskCipher>) -> Result<()> {
    let wanted = match cipher {
        Some(cipher) => format!("aes-256-gcm {}\n", cipher.fingerprint),
        None => "plain\n".to_string(),
    };
    let marker = dir.join(FORMAT_FILE);
    let found = match std::fs::read_to_string(&marker) {
        Ok(found) => Some(found),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
        Err(error) => return Err(error.into()),
    };
    if found.as_deref() == Some(wanted.as_str()) {
        return Ok(());
    }
    let mut removed = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_name().to_string_lossy().starts_with(FOYER_FILE_PREFIX) {
            std::fs::remove_file(entry.path())?;
            removed += 1;
        }
    }
    if removed > 0 {
        tracing::warn!(
            dir = %dir.display(),
            files = removed,
            "the disk cache was written with another encryption setting or key: emptied"
        );
    }
    std::fs::write(&marker, wanted)?;
    Ok(())
}

/// A cached value: plain bytes in memory, sealed by the disk tier's cipher (when it has
/// one) on their way to disk.
#[derive(Debug, Clone)]
pub struct Chunk {
    bytes: Bytes,
    form: Form,
}

#[derive(Debug, Clone)]
enum Form {
    /// Plain bytes; `Some` seals them, bound to the entry's key, when written to disk.
    Plain(Option<Seal>),
    /// Read back from disk, still sealed: [`Chunk::open`] makes it plain.
    Sealed,
}

/// What seals a chunk: the cipher and the entry's key, its associated data.
#[derive(Debug, Clone)]
struct Seal {
    cipher: Arc<DiskCipher>,
    context: Arc<[u8]>,
}

/// The byte that tells plain from sealed entries on disk.
const PLAIN: u8 = 0;
const SEALED: u8 = 1;

impl Chunk {
    /// A chunk of plain `bytes`, to be sealed by `cipher` for `context` on disk.
    pub fn new(bytes: Bytes, cipher: Option<&Arc<DiskCipher>>, context: &[u8]) -> Self {
        let seal = cipher.map(|cipher| Seal { cipher: cipher.clone(), context: context.into() });
        Self { bytes, form: Form::Plain(seal) }
    }

    /// The bytes as cached: plain, or sealed when read back from disk.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// The plain bytes: as they are, or opened with `cipher` for `context`. `None` when a
    /// sealed chunk does not open (another key, another entry's bytes, corruption) or
    /// there is no cipher to open it.
    pub fn open(&self, cipher: Option<&DiskCipher>, context: &[u8]) -> Option<Bytes> {
        match &self.form {
            Form::Plain(_) => Some(self.bytes.clone()),
            Form::Sealed => cipher?.open(context, &self.bytes),
        }
    }

    /// Whether the chunk came back from disk sealed.
    pub fn is_sealed(&self) -> bool {
        matches!(self.form, Form::Sealed)
    }
}

impl Code for Chunk {
    fn encode(&self, writer: &mut impl Write) -> foyer::Result<()> {
        match &self.form {
            Form::Plain(None) => {
                PLAIN.encode(writer)?;
                self.bytes.encode(writer)
            }
            Form::Plain(Some(seal)) => {
                SEALED.encode(writer)?;
                Bytes::from(seal.cipher.seal(&seal.context, &self.bytes)?).encode(writer)
            }
            Form::Sealed => {
                SEALED.encode(writer)?;
                self.bytes.encode(writer)
            }
        }
    }

    fn decode(reader: &mut impl Read) -> foyer::Result<Self> {
        let form = match u8::decode(reader)? {
            PLAIN => Form::Plain(None),
            _ => Form::Sealed,
        };
        Ok(Self { bytes: Bytes::decode(reader)?, form })
    }

    fn estimated_size(&self) -> usize {
        let seal = if matches!(self.form, Form::Plain(Some(_))) { NONCE_LEN + AES_256_GCM.tag_len() } else { 0 };
        1 + self.bytes.estimated_size() + seal
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.is_ascii() {
        return None;
    }
    (0..text.len()).step_by(2).map(|at| u8::from_str_radix(&text[at..at + 2], 16).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cipher(byte: u8) -> Arc<DiskCipher> {
        Arc::new(DiskCipher::new(&[byte; 32]).expect("cipher"))
    }

    fn round_trip(chunk: &Chunk) -> Chunk {
        let mut disk = Vec::new();
        chunk.encode(&mut disk).expect("encode");
        Chunk::decode(&mut disk.as_slice()).expect("decode")
    }

    #[test]
    fn sealed_chunks_open_only_with_their_key_and_entry() {
        let key = cipher(1);
        let plain = Bytes::from_static(b"customer rows, column by column");
        let stored = round_trip(&Chunk::new(plain.clone(), Some(&key), b"t.lance/data/a.lance#0"));
        assert!(stored.is_sealed());
        assert!(!stored.bytes.windows(8).any(|window| plain.windows(8).any(|p| p == window)), "no plaintext on disk");
        assert_eq!(stored.open(Some(&key), b"t.lance/data/a.lance#0"), Some(plain.clone()));
        assert_eq!(stored.open(Some(&key), b"t.lance/data/a.lance#1"), None, "another entry's key");
        assert_eq!(stored.open(Some(&cipher(2)), b"t.lance/data/a.lance#0"), None, "another key");
        assert_eq!(stored.open(None, b"t.lance/data/a.lance#0"), None, "no key");
        let mut flipped = stored.clone();
        let mut bytes = flipped.bytes.to_vec();
        bytes[NONCE_LEN + 3] ^= 1;
        flipped.bytes = Bytes::from(bytes);
        assert_eq!(flipped.open(Some(&key), b"t.lance/data/a.lance#0"), None, "altered");
    }

    #[test]
    fn plain_chunks_stay_plain_without_a_key() {
        let plain = Bytes::from_static(b"rows");
        let stored = round_trip(&Chunk::new(plain.clone(), None, b"ctx"));
        assert!(!stored.is_sealed());
        assert_eq!(stored.open(None, b"ctx"), Some(plain));
    }

    #[test]
    fn names_hide_paths_and_depend_on_the_key() {
        let name = cipher(1).name("s3://bucket/secret_table.lance/data/x.lance");
        assert_eq!(name.len(), 64);
        assert!(!name.contains("secret"));
        assert_eq!(name, cipher(1).name("s3://bucket/secret_table.lance/data/x.lance"));
        assert_ne!(name, cipher(2).name("s3://bucket/secret_table.lance/data/x.lance"));
    }

    #[test]
    fn keys_are_read_as_64_hex_digits() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("key");
        std::fs::write(&path, format!("{}\n", "ab".repeat(32))).expect("write");
        assert!(DiskCipher::from_file(&path).is_ok());
        for bad in ["ab".repeat(31), "zz".repeat(32), String::new()] {
            std::fs::write(&path, bad).expect("write");
            let error = DiskCipher::from_file(&path).expect_err("refused").to_string();
            assert!(error.contains("64 hex digits"), "{error}");
        }
    }

    #[test]
    fn a_directory_written_with_another_key_is_emptied() {
        let dir = tempfile::tempdir().expect("dir");
        let block = dir.path().join(format!("{FOYER_FILE_PREFIX}00000000"));
        let other = dir.path().join("notes.txt");
        std::fs::write(&other, "kept").expect("write");
        prepare_disk_dir(dir.path(), Some(&cipher(1))).expect("prepare");
        std::fs::write(&block, "sealed with key 1").expect("write");
        prepare_disk_dir(dir.path(), Some(&cipher(1))).expect("same key");
        assert!(block.exists(), "kept for the same key");
        prepare_disk_dir(dir.path(), Some(&cipher(2))).expect("another key");
        assert!(!block.exists(), "emptied for another key");
        std::fs::write(&block, "sealed with key 2").expect("write");
        prepare_disk_dir(dir.path(), None).expect("no key");
        assert!(!block.exists(), "emptied without a key");
        assert!(other.exists(), "only foyer's files are removed");
    }
}
