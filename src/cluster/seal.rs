//! Private keys at rest in the fleet: sealed with AES-256-GCM under the cluster secret key,
//! so that whoever can read etcd (a backup, a member's disk, `etcdctl get`) sees no key.
//!
//! Envelope (the etcd value, bytes): `"AKS1" | key id (8) | nonce (12) | ciphertext | tag
//! (16)`. The nonce is drawn by aws-lc for every seal (`RandomizedNonceKey`): a fleet seals
//! once per new key, far below the 2^32 seals per key that random 96-bit nonces allow. The
//! key id names the key that sealed, so rotation needs no trial decryption and an error can
//! say which key is missing. The associated data binds a secret to its slot (`keys/<id>`,
//! `accounts/<urlpart>/<id>`): a sealed key copied to another slot does not open.
//!
//! The secret key file holds one base64 key of 32 bytes per line; the first seals, every
//! line opens. Rotation: add a key as the second line everywhere, move it first, re-seal
//! (`cluster-rekey`), remove the old line (doc/cluster.md).

use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};
use aws_lc_rs::aead::{AES_256_GCM, Aad, NONCE_LEN, Nonce, RandomizedNonceKey};
use aws_lc_rs::digest;
use zeroize::Zeroizing;

const MAGIC: &[u8; 4] = b"AKS1";
/// Length of a cluster key id in the envelope.
pub const ID_LEN: usize = 8;
const TAG_LEN: usize = 16;
const HEAD_LEN: usize = MAGIC.len() + ID_LEN + NONCE_LEN;
const AAD_PREFIX: &[u8] = b"acmekeep-secret-v1\0";
/// Largest secret key file read.
pub const MAX_KEY_FILE: u64 = 4096;
/// Largest secret sealed or opened (a PEM private key is well under it).
pub const MAX_SECRET: usize = 16 * 1024;

/// The cluster secret keys of a node: the first seals, all open.
pub struct ClusterKeys {
    keys: Vec<([u8; ID_LEN], RandomizedNonceKey)>,
}

impl std::fmt::Debug for ClusterKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Key ids only: they are public (they are in every sealed value).
        f.debug_list()
            .entries(self.keys.iter().map(|(id, _)| show_id(id)))
            .finish()
    }
}

/// A key id as shown to people: 16 hex digits.
pub fn show_id(id: &[u8]) -> String {
    data_encoding::HEXLOWER.encode(id)
}

fn key_id(raw: &[u8]) -> [u8; ID_LEN] {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(b"acmekeep cluster key\0");
    ctx.update(raw);
    let d = ctx.finish();
    let mut id = [0u8; ID_LEN];
    id.copy_from_slice(&d.as_ref()[..ID_LEN]);
    id
}

impl ClusterKeys {
    /// Reads the secret key file: a regular file of ours (owned by this user, mode 0600 or
    /// stricter), at most [`MAX_KEY_FILE`] bytes.
    pub fn load(path: &Path) -> Result<ClusterKeys> {
        let text = read_secret_file(path, MAX_KEY_FILE)?;
        Self::parse(&text).with_context(|| format!("in {}", path.display()))
    }

    /// Parses the file's text: one base64 key (32 bytes) per line; `#` comments and blank
    /// lines skipped.
    pub fn parse(text: &str) -> Result<ClusterKeys> {
        let mut keys: Vec<([u8; ID_LEN], RandomizedNonceKey)> = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let raw = Zeroizing::new(
                data_encoding::BASE64
                    .decode(line.as_bytes())
                    .map_err(|_| anyhow!("line {}: not a base64 key", n + 1))?,
            );
            if raw.len() != 32 {
                bail!(
                    "line {}: a cluster key is 32 bytes, this one is {}",
                    n + 1,
                    raw.len()
                );
            }
            let id = key_id(&raw);
            if keys.iter().any(|(k, _)| *k == id) {
                bail!("line {}: the same key is listed twice", n + 1);
            }
            let key = RandomizedNonceKey::new(&AES_256_GCM, &raw)
                .map_err(|_| anyhow!("line {}: unusable key", n + 1))?;
            keys.push((id, key));
        }
        if keys.is_empty() {
            bail!("no key: add a line made by `acmekeep cluster-key new`");
        }
        Ok(ClusterKeys { keys })
    }

    /// A new key, as a line for the secret key file.
    pub fn new_line() -> Result<String> {
        let mut raw = Zeroizing::new([0u8; 32]);
        aws_lc_rs::rand::fill(raw.as_mut()).map_err(|_| anyhow!("no random numbers"))?;
        Ok(data_encoding::BASE64.encode(raw.as_ref()))
    }

    /// The id of the key that seals.
    pub fn sealing_id(&self) -> String {
        show_id(&self.keys[0].0)
    }

    /// The ids of every key, the sealing one first.
    pub fn ids(&self) -> Vec<String> {
        self.keys.iter().map(|(id, _)| show_id(id)).collect()
    }

    /// Seals `plaintext` for the slot `slot`.
    pub fn seal(&self, slot: &str, plaintext: &[u8]) -> Result<Vec<u8>> {
        if plaintext.len() > MAX_SECRET {
            bail!("{slot}: a secret of {} bytes is too large", plaintext.len());
        }
        let (id, key) = &self.keys[0];
        let mut buf = Zeroizing::new(Vec::with_capacity(plaintext.len() + TAG_LEN));
        buf.extend_from_slice(plaintext);
        let nonce = key
            .seal_in_place_append_tag(Aad::from(aad(slot).as_slice()), &mut *buf)
            .map_err(|_| anyhow!("{slot}: sealing failed"))?;
        let mut out = Vec::with_capacity(HEAD_LEN + buf.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(id);
        out.extend_from_slice(nonce.as_ref());
        out.extend_from_slice(&buf);
        Ok(out)
    }

    /// The id of the key that sealed `sealed`, if it is an envelope.
    pub fn sealed_by(sealed: &[u8]) -> Option<String> {
        (sealed.len() >= HEAD_LEN + TAG_LEN && sealed.starts_with(MAGIC))
            .then(|| show_id(&sealed[MAGIC.len()..MAGIC.len() + ID_LEN]))
    }

    /// Opens what [`ClusterKeys::seal`] sealed for `slot`; the plaintext is wiped when
    /// dropped.
    pub fn open(&self, slot: &str, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, OpenError> {
        if sealed.len() < HEAD_LEN + TAG_LEN || !sealed.starts_with(MAGIC) {
            return Err(OpenError::NotSealed);
        }
        if sealed.len() > HEAD_LEN + MAX_SECRET + TAG_LEN {
            return Err(OpenError::TooLarge);
        }
        let id = &sealed[MAGIC.len()..MAGIC.len() + ID_LEN];
        let Some((_, key)) = self.keys.iter().find(|(k, _)| k == id) else {
            return Err(OpenError::UnknownKey(show_id(id)));
        };
        let nonce = Nonce::try_assume_unique_for_key(&sealed[MAGIC.len() + ID_LEN..HEAD_LEN])
            .map_err(|_| OpenError::NotSealed)?;
        let mut buf = Zeroizing::new(sealed[HEAD_LEN..].to_vec());
        let len = key
            .open_in_place(nonce, Aad::from(aad(slot).as_slice()), &mut buf)
            .map_err(|_| OpenError::Altered)?
            .len();
        buf.truncate(len);
        Ok(buf)
    }
}

fn aad(slot: &str) -> Vec<u8> {
    [AAD_PREFIX, slot.as_bytes()].concat()
}

/// Why a sealed secret does not open.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OpenError {
    /// Not an envelope at all.
    #[error("not a sealed acmekeep secret")]
    NotSealed,
    /// Larger than any secret acmekeep seals.
    #[error("larger than any sealed secret")]
    TooLarge,
    /// Sealed under a key this node's file lacks.
    #[error(
        "sealed under cluster key {0}, which this node's secret key file lacks (copy the fleet's secret key file here)"
    )]
    UnknownKey(String),
    /// The tag does not match: altered, or sealed for another slot.
    #[error("does not open (altered, or sealed for another place)")]
    Altered,
}

/// Reads a secret file (cluster keys, etcd password, TLS client key): a regular file (links
/// followed: these live outside the state directory, where the operator chose), owned by
/// this user and readable by nobody else, at most `limit` bytes of UTF-8.
pub fn read_secret_file(path: &Path, limit: u64) -> Result<Zeroizing<String>> {
    use std::os::unix::fs::MetadataExt;
    let file = crate::files::open_regular(path, crate::files::Links::Follow)
        .with_context(|| format!("reading {}", path.display()))?;
    let meta = file
        .metadata()
        .with_context(|| format!("reading {}", path.display()))?;
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        bail!(
            "{} is readable by others (mode {mode:04o}): it holds a secret; chmod 600 it",
            path.display()
        );
    }
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me {
        bail!(
            "{} belongs to uid {}, not to this user (uid {me}): it holds a secret and must be this user's",
            path.display(),
            meta.uid()
        );
    }
    let mut data = Zeroizing::new(Vec::new());
    std::io::Read::read_to_end(&mut std::io::Read::take(&file, limit + 1), &mut data)
        .with_context(|| format!("reading {}", path.display()))?;
    if data.len() as u64 > limit {
        bail!(
            "{} is larger than the limit of {limit} bytes",
            path.display()
        );
    }
    let text =
        std::str::from_utf8(&data).map_err(|_| anyhow!("{} is not UTF-8 text", path.display()))?;
    Ok(Zeroizing::new(text.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(lines: &[&str]) -> ClusterKeys {
        ClusterKeys::parse(&lines.join("\n")).expect("keys")
    }

    const PEM: &[u8] = b"-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg\n-----END PRIVATE KEY-----\n";
    const SLOT: &str = "keys/abcdefghijklmnopqrstuvwxyz234567abcdefghijklmnop";

    #[test]
    fn a_sealed_key_opens_and_shows_no_pem() {
        let a = ClusterKeys::new_line().expect("key");
        let k = keys(&["# first seals", &a]);
        let sealed = k.seal(SLOT, PEM).expect("seal");
        assert_eq!(sealed.len(), PEM.len() + 40);
        assert!(!sealed.windows(5).any(|w| w == b"BEGIN"));
        assert_eq!(&**k.open(SLOT, &sealed).expect("opens"), PEM);
        assert_eq!(
            ClusterKeys::sealed_by(&sealed).as_deref(),
            Some(k.sealing_id().as_str())
        );
        // Random nonces: sealing twice gives two different envelopes.
        assert_ne!(k.seal(SLOT, PEM).expect("seal"), sealed);
    }

    #[test]
    fn tampering_another_slot_and_a_missing_key_are_told_apart() {
        let (a, b) = (
            ClusterKeys::new_line().expect("a"),
            ClusterKeys::new_line().expect("b"),
        );
        let old = keys(&[&a]);
        let sealed = old.seal(SLOT, PEM).expect("seal");
        assert_eq!(
            old.open("keys/other", &sealed).expect_err("other slot"),
            OpenError::Altered
        );
        let mut bad = sealed.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert_eq!(
            old.open(SLOT, &bad).expect_err("tampered"),
            OpenError::Altered
        );
        let new_only = keys(&[&b]);
        assert_eq!(
            new_only.open(SLOT, &sealed).expect_err("no key"),
            OpenError::UnknownKey(old.sealing_id())
        );
        assert_eq!(
            old.open(SLOT, PEM).expect_err("plain"),
            OpenError::NotSealed
        );
    }

    #[test]
    fn rotation_the_first_line_seals_every_line_opens() {
        let (a, b) = (
            ClusterKeys::new_line().expect("a"),
            ClusterKeys::new_line().expect("b"),
        );
        let old = keys(&[&a]);
        let both = keys(&[&b, &a]);
        let sealed = old.seal(SLOT, PEM).expect("seal");
        let opened = both.open(SLOT, &sealed).expect("both open the old");
        let resealed = both.seal(SLOT, &opened).expect("reseal");
        assert_eq!(
            ClusterKeys::sealed_by(&resealed),
            Some(keys(&[&b]).sealing_id())
        );
        assert_eq!(&**keys(&[&b]).open(SLOT, &resealed).expect("new"), PEM);
        assert_eq!(both.ids(), [keys(&[&b]).sealing_id(), old.sealing_id()]);
    }

    #[test]
    fn bad_key_files_name_the_line() {
        for (text, expect) in [
            ("", "no key"),
            ("# only a comment\n", "no key"),
            ("not base64!\n", "line 1: not a base64 key"),
            (
                "\nAAAA\n",
                "line 2: a cluster key is 32 bytes, this one is 3",
            ),
        ] {
            let e = ClusterKeys::parse(text).expect_err(text).to_string();
            assert!(e.contains(expect), "{text:?}: {e}");
        }
        let a = ClusterKeys::new_line().expect("a");
        let e = ClusterKeys::parse(&format!("{a}\n{a}\n")).expect_err("twice");
        assert!(
            e.to_string()
                .contains("line 2: the same key is listed twice")
        );
    }

    #[test]
    fn a_key_file_others_can_read_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("cluster.key");
        std::fs::write(&path, ClusterKeys::new_line().expect("key")).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let e = format!("{:#}", ClusterKeys::load(&path).expect_err("0644"));
        assert!(e.contains("readable by others (mode 0644)"), "{e}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        ClusterKeys::load(&path).expect("0600 loads");
    }

    #[test]
    fn debug_shows_ids_never_keys() {
        let a = ClusterKeys::new_line().expect("a");
        let k = keys(&[&a]);
        let shown = format!("{k:?}");
        assert!(shown.contains(&k.sealing_id()), "{shown}");
        assert!(!shown.contains(&a[..10]), "{shown}");
    }
}
