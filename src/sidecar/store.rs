//! A content-addressed blob store: CIDv1, raw codec, sha2-256.
//!
//! Blobs live in memory and, optionally, in a directory (one file per blob,
//! named by its CID), so that a restarted sidecar still has its inputs and
//! outputs. A blob's CID is computed from its bytes, so anyone can verify a
//! blob by hashing it again.
//!
//! ```
//! use nsn_lane1::sidecar::store::BlobStore;
//!
//! let store = BlobStore::in_memory();
//! let cid = store.put(b"hello".to_vec()).unwrap();
//! assert_eq!(store.get(&cid).unwrap().as_deref(), Some(&b"hello"[..]));
//! assert_eq!(cid, BlobStore::cid_of(b"hello"));
//! ```

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use sha2::{Digest, Sha256};

use crate::task::Cid;

/// Why the store could not read or write a blob.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The directory could not be read or written.
    #[error("blob store I/O on {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// A file in the directory does not hash to its name.
    #[error("blob {cid} on disk is corrupt (its bytes hash to {actual})")]
    Corrupt {
        /// The name it was stored under.
        cid: Cid,
        /// What its bytes hash to.
        actual: Cid,
    },
}

/// Blobs by the binary form of their CID.
type Blobs = HashMap<Vec<u8>, Arc<[u8]>>;

/// A content-addressed blob store. Clones share one store.
#[derive(Clone, Debug, Default)]
pub struct BlobStore {
    blobs: Arc<RwLock<Blobs>>,
    dir: Option<PathBuf>,
}

impl BlobStore {
    /// A store that keeps blobs in memory only.
    pub fn in_memory() -> Self {
        BlobStore::default()
    }

    /// A store that also keeps every blob in `dir` (created if missing).
    pub fn with_dir(dir: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(|source| StoreError::Io {
            path: dir.clone(),
            source,
        })?;
        Ok(BlobStore {
            blobs: Arc::default(),
            dir: Some(dir),
        })
    }

    /// The CID of some bytes: CIDv1, raw codec, sha2-256.
    pub fn cid_of(bytes: &[u8]) -> Cid {
        Cid::from_sha256_raw(Sha256::digest(bytes).into())
    }

    /// Stores a blob and returns its CID.
    pub fn put(&self, bytes: Vec<u8>) -> Result<Cid, StoreError> {
        let cid = Self::cid_of(&bytes);
        if let Some(dir) = &self.dir {
            let path = dir.join(cid.as_str());
            if !path.exists() {
                // Write to a temporary name, then rename: a crash never leaves
                // a half-written blob under a CID.
                let tmp = dir.join(format!(".{}.tmp", cid.as_str()));
                std::fs::write(&tmp, &bytes)
                    .and_then(|()| std::fs::rename(&tmp, &path))
                    .map_err(|source| StoreError::Io {
                        path: path.clone(),
                        source,
                    })?;
            }
        }
        self.write_lock()
            .insert(key(&cid), Arc::from(bytes.into_boxed_slice()));
        Ok(cid)
    }

    /// Stores a file's contents and returns its CID.
    pub fn put_file(&self, path: &Path) -> Result<Cid, StoreError> {
        let bytes = std::fs::read(path).map_err(|source| StoreError::Io {
            path: path.to_owned(),
            source,
        })?;
        self.put(bytes)
    }

    /// A blob by CID (any CID text form of the same content id matches).
    pub fn get(&self, cid: &Cid) -> Result<Option<Arc<[u8]>>, StoreError> {
        let k = key(cid);
        if let Some(b) = self.read_lock().get(&k) {
            return Ok(Some(b.clone()));
        }
        let Some(dir) = &self.dir else {
            return Ok(None);
        };
        let canonical = cid.parsed().to_string();
        let path = dir.join(&canonical);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(StoreError::Io { path, source }),
        };
        let actual = Self::cid_of(&bytes);
        if key(&actual) != k {
            return Err(StoreError::Corrupt {
                cid: cid.clone(),
                actual,
            });
        }
        let blob: Arc<[u8]> = Arc::from(bytes.into_boxed_slice());
        self.write_lock().insert(k, blob.clone());
        Ok(Some(blob))
    }

    /// True when the store holds the blob (in memory or on disk).
    pub fn contains(&self, cid: &Cid) -> bool {
        matches!(self.get(cid), Ok(Some(_)))
    }

    /// Blobs held in memory.
    pub fn len(&self) -> usize {
        self.read_lock().len()
    }

    /// True when no blob is held in memory.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn read_lock(&self) -> std::sync::RwLockReadGuard<'_, Blobs> {
        // The map is only ever left whole (inserts are single calls), so a
        // poisoned lock is still consistent.
        self.blobs
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write_lock(&self) -> std::sync::RwLockWriteGuard<'_, Blobs> {
        self.blobs
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The store's key: the CID's binary form, so every text encoding of one CID
/// finds the same blob.
fn key(cid: &Cid) -> Vec<u8> {
    cid.parsed().to_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cid_is_sha256_of_the_bytes() {
        let cid = BlobStore::cid_of(b"abc");
        let parsed = cid.parsed();
        assert_eq!(parsed.codec(), 0x55);
        assert_eq!(parsed.hash().digest(), Sha256::digest(b"abc").as_slice());
        // A well-known value: CIDv1 raw sha2-256 of the empty string.
        assert_eq!(
            BlobStore::cid_of(b"").as_str(),
            "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
        );
    }

    #[test]
    fn directory_store_survives_a_restart_and_detects_corruption() {
        let dir = std::env::temp_dir().join(format!("nsn-lane1-store-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let cid = BlobStore::with_dir(&dir)
            .unwrap()
            .put(b"kept".to_vec())
            .unwrap();
        let reopened = BlobStore::with_dir(&dir).unwrap();
        assert_eq!(reopened.get(&cid).unwrap().as_deref(), Some(&b"kept"[..]));

        let other = BlobStore::cid_of(b"original");
        std::fs::write(dir.join(other.as_str()), b"tampered").unwrap();
        assert!(matches!(
            BlobStore::with_dir(&dir).unwrap().get(&other),
            Err(StoreError::Corrupt { .. })
        ));
        assert_eq!(reopened.get(&BlobStore::cid_of(b"absent")).unwrap(), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
