//! A content-addressed blob store: CIDv1, raw codec, sha2-256.
//!
//! Blobs live in memory and, optionally, in a directory (one file per blob,
//! named by its CID), so that a restarted sidecar still has its inputs and
//! outputs. A blob's CID is computed from its bytes, so anyone can verify a
//! blob by hashing it again.
//!
//! Memory is bounded ([`DEFAULT_MEMORY_LIMIT`], or
//! [`with_memory_limit`](BlobStore::with_memory_limit)): past the limit the
//! blobs stored longest ago leave memory — a directory store still has them
//! on disk; an in-memory store forgets them. Files are written under a
//! unique temporary name, synced, renamed into place, and the directory
//! synced, so a crash leaves either the whole blob or none.
//!
//! ```
//! use nsn_lane1::sidecar::store::BlobStore;
//!
//! let store = BlobStore::in_memory();
//! let cid = store.put(b"hello".to_vec()).unwrap();
//! assert_eq!(store.get(&cid).unwrap().as_deref(), Some(&b"hello"[..]));
//! assert_eq!(cid, BlobStore::cid_of(b"hello"));
//! ```

use std::collections::{HashMap, VecDeque};
use std::io::{self, Write as _};
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

/// Bytes of blobs a store keeps in memory unless told otherwise (1 GiB).
pub const DEFAULT_MEMORY_LIMIT: usize = 1 << 30;

/// Blobs held in memory, by the binary form of their CID, with the order
/// they came in (for eviction) and their total size.
#[derive(Debug)]
struct Blobs {
    by_key: HashMap<Vec<u8>, Arc<[u8]>>,
    order: VecDeque<Vec<u8>>,
    bytes: usize,
    limit: usize,
}

impl Blobs {
    fn insert(&mut self, key: Vec<u8>, blob: Arc<[u8]>) {
        if self.by_key.contains_key(&key) {
            return;
        }
        self.bytes += blob.len();
        self.order.push_back(key.clone());
        self.by_key.insert(key, blob);
        // The newest blob stays even if it alone is over the limit: it is
        // the one a caller is about to read.
        while self.bytes > self.limit && self.order.len() > 1 {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            if let Some(b) = self.by_key.remove(&old) {
                self.bytes -= b.len();
            }
        }
    }
}

impl Default for Blobs {
    fn default() -> Self {
        Blobs {
            by_key: HashMap::new(),
            order: VecDeque::new(),
            bytes: 0,
            limit: DEFAULT_MEMORY_LIMIT,
        }
    }
}

/// A content-addressed blob store. Clones share one store.
#[derive(Clone, Debug, Default)]
pub struct BlobStore {
    blobs: Arc<RwLock<Blobs>>,
    dir: Option<PathBuf>,
}

/// Tells temporary file names of one process apart.
static TMP_SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl BlobStore {
    /// A store that keeps blobs in memory only.
    pub fn in_memory() -> Self {
        BlobStore::default()
    }

    /// Keeps at most `bytes` of blobs in memory (see the module docs).
    pub fn with_memory_limit(self, bytes: usize) -> Self {
        self.write_lock().limit = bytes;
        self
    }

    /// Bytes of blobs held in memory now.
    pub fn memory_bytes(&self) -> usize {
        self.read_lock().bytes
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
                write_durably(dir, &path, &bytes).map_err(|source| StoreError::Io {
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
        if let Some(b) = self.read_lock().by_key.get(&k) {
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
        self.read_lock().by_key.len()
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

/// Writes `bytes` to `path` so that a crash leaves the whole file or none:
/// a temporary name no other writer uses, synced, renamed into place, and
/// the directory synced so the rename itself is kept.
fn write_durably(dir: &Path, path: &Path, bytes: &[u8]) -> io::Result<()> {
    let seq = TMP_SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name = path
        .file_name()
        .map_or_else(Default::default, |n| n.to_string_lossy());
    let tmp = dir.join(format!(".{name}.{}.{seq}.tmp", std::process::id()));
    let written = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written?;
    std::fs::File::open(dir)?.sync_all()
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
        // No temporary file is left behind.
        let leftovers: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn memory_is_bounded_and_the_oldest_blobs_leave_first() {
        let store = BlobStore::in_memory().with_memory_limit(10);
        let a = store.put(vec![b'a'; 4]).unwrap();
        let b = store.put(vec![b'b'; 4]).unwrap();
        assert_eq!(store.memory_bytes(), 8);
        let c = store.put(vec![b'c'; 4]).unwrap();
        // Over the limit: the oldest went.
        assert_eq!(store.memory_bytes(), 8);
        assert_eq!(store.get(&a).unwrap(), None);
        assert!(store.contains(&b) && store.contains(&c));
        // A blob larger than the limit is still kept, alone.
        let big = store.put(vec![b'd'; 32]).unwrap();
        assert!(store.contains(&big));
        assert_eq!(store.len(), 1);
        assert_eq!(store.memory_bytes(), 32);
    }

    #[test]
    fn a_directory_store_reads_evicted_blobs_back_from_disk() {
        let dir = std::env::temp_dir().join(format!("nsn-lane1-evict-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = BlobStore::with_dir(&dir).unwrap().with_memory_limit(4);
        let a = store.put(b"aaaa".to_vec()).unwrap();
        let _b = store.put(b"bbbb".to_vec()).unwrap();
        assert_eq!(store.memory_bytes(), 4, "a left memory");
        assert_eq!(store.get(&a).unwrap().as_deref(), Some(&b"aaaa"[..]));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
