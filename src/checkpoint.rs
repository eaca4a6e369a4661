//! The last finalized block whose events the executor has handled, kept in
//! a file so that a restarted node backfills from the block after it and no
//! event is lost while the process was down.
//!
//! The file holds the block number as decimal text and a newline. It is
//! replaced atomically and durably — written beside, flushed to disk,
//! renamed, and the directory flushed too — so a crash or a power loss
//! leaves either the old or the new number, never a torn one. The executor
//! saves it off its event loop ([`Checkpoint::spawn_writer`]).

use std::path::{Path, PathBuf};

use crate::task::BlockNumber;

/// Why the checkpoint could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// The file could not be read or written.
    #[error("checkpoint {path}: {source}")]
    Io {
        /// The checkpoint file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Another process holds this state file: two processes would sign
    /// with one key and both send every call.
    #[error(
        "state file {path} is in use by another process (pid {holder}): one key must have one signer; stop the other one first"
    )]
    Locked {
        /// The state file.
        path: PathBuf,
        /// The holder's process id, as it wrote it (`?` if unknown).
        holder: String,
    },
    /// The file does not hold a block number.
    #[error("checkpoint {path} does not hold a block number: {content:?}")]
    Corrupt {
        /// The checkpoint file.
        path: PathBuf,
        /// What it holds (at most 64 characters of it).
        content: String,
    },
}

/// The exclusive hold of a state file by one process (see
/// [`Checkpoint::lock`]); released when dropped, or when the process ends
/// however it ends.
#[derive(Debug)]
pub struct CheckpointLock {
    _file: std::fs::File,
}

/// A checkpoint file.
#[derive(Clone, Debug)]
pub struct Checkpoint {
    path: PathBuf,
    temp: PathBuf,
}

impl Checkpoint {
    /// A checkpoint kept in `path` (created on the first save).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        let mut temp = path.clone().into_os_string();
        temp.push(".tmp");
        Checkpoint {
            path,
            temp: temp.into(),
        }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Holds the state file for this process: a second process (or a
    /// second hold in this one) is refused with
    /// [`CheckpointError::Locked`] while the returned lock lives. The lock
    /// is the operating system's (`flock` on a `.lock` file beside the
    /// state file), so it goes with the process, even killed.
    pub fn lock(&self) -> Result<CheckpointLock, CheckpointError> {
        use std::io::{Read, Seek, Write};
        let mut lock_path = self.path.clone().into_os_string();
        lock_path.push(".lock");
        let lock_path = PathBuf::from(lock_path);
        let io = |source| CheckpointError::Io {
            path: lock_path.clone(),
            source,
        };
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&lock_path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                return Err(CheckpointError::Locked {
                    path: self.path.clone(),
                    holder: if holder.is_empty() { "?" } else { holder }.to_owned(),
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
        }
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        Ok(CheckpointLock { _file: file })
    }

    /// The saved block, or `None` if nothing was saved yet.
    pub fn load(&self) -> Result<Option<BlockNumber>, CheckpointError> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(CheckpointError::Io {
                    path: self.path.clone(),
                    source,
                });
            }
        };
        text.trim()
            .parse()
            .map(Some)
            .map_err(|_| CheckpointError::Corrupt {
                path: self.path.clone(),
                content: text.chars().take(64).collect(),
            })
    }

    /// Records `block` as handled (blocking: file I/O with fsync).
    pub fn save(&self, block: BlockNumber) -> Result<(), CheckpointError> {
        use std::io::Write;
        let io = |source| CheckpointError::Io {
            path: self.path.clone(),
            source,
        };
        // A name no other save uses, in this process or another: two
        // writers of one checkpoint (a node restarted while its previous
        // writer still finishes) never write or rename each other's file.
        static SAVES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = SAVES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut temp = self.temp.clone().into_os_string();
        temp.push(format!(".{}.{n}", std::process::id()));
        let temp = PathBuf::from(temp);
        let mut file = std::fs::File::create(&temp).map_err(io)?;
        file.write_all(format!("{block}\n").as_bytes())
            .map_err(io)?;
        file.sync_all().map_err(io)?;
        drop(file);
        std::fs::rename(&temp, &self.path).map_err(io)?;
        // The rename is durable once the directory is.
        let dir = match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io)
    }

    /// Saves the blocks sent on the returned channel, the newest first when
    /// they come faster than the disk, on the blocking pool (never on the
    /// caller's event loop). The task ends, after saving the last, when the
    /// sender is dropped; join it to be sure the last is on disk.
    pub fn spawn_writer(
        self,
    ) -> (
        tokio::sync::watch::Sender<Option<BlockNumber>>,
        tokio::task::JoinHandle<()>,
    ) {
        let (tx, mut rx) = tokio::sync::watch::channel(None::<BlockNumber>);
        let writer = tokio::spawn(async move {
            let mut saved = None;
            loop {
                let closed = rx.changed().await.is_err();
                let latest = *rx.borrow_and_update();
                if latest.is_some() && latest != saved {
                    let cp = self.clone();
                    let block = latest.unwrap_or_default();
                    match tokio::task::spawn_blocking(move || cp.save(block)).await {
                        Ok(Ok(())) => saved = latest,
                        Ok(Err(e)) => {
                            tracing::error!(error = %e, block, "cannot record the last handled block");
                        }
                        Err(e) => tracing::error!(error = %e, "checkpoint writer failed"),
                    }
                }
                if closed {
                    return;
                }
            }
        });
        (tx, writer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "nsn-lane1-checkpoint-{name}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir
    }

    #[test]
    fn a_saved_block_loads_back_and_a_missing_file_is_none() {
        let dir = temp_dir("roundtrip");
        let cp = Checkpoint::new(dir.join("last-block"));
        assert_eq!(cp.load().expect("load"), None);
        cp.save(41).expect("save");
        cp.save(42).expect("save");
        assert_eq!(cp.load().expect("load"), Some(42));
        assert_eq!(
            std::fs::read_dir(&dir).expect("dir").count(),
            1,
            "no temporary file left"
        );
    }

    #[test]
    fn two_writers_of_one_checkpoint_never_fail_each_other() {
        // A node restarted in-process while its previous writer still
        // finishes a save: both write the same checkpoint at once.
        let dir = temp_dir("two-writers");
        let path = dir.join("last-block");
        let writers: Vec<_> = (0..2u32)
            .map(|w| {
                let cp = Checkpoint::new(&path);
                std::thread::spawn(move || {
                    for i in 0..200 {
                        cp.save(w * 1000 + i).expect("every save succeeds");
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().expect("writer");
        }
        let last = Checkpoint::new(&path)
            .load()
            .expect("load")
            .expect("a block");
        assert!(last == 199 || last == 1199, "{last}");
        assert_eq!(std::fs::read_dir(&dir).expect("dir").count(), 1);
    }

    #[test]
    fn a_state_file_has_one_holder_at_a_time() {
        let dir = temp_dir("lock");
        let cp = Checkpoint::new(dir.join("last-block"));
        let held = cp.lock().expect("the first hold");
        match Checkpoint::new(dir.join("last-block")).lock() {
            Err(e @ CheckpointError::Locked { .. }) => {
                let text = e.to_string();
                assert!(text.contains(&std::process::id().to_string()), "{text}");
                assert!(text.contains("one signer"), "{text}");
            }
            other => panic!("a second hold: {other:?}"),
        }
        drop(held);
        cp.lock().expect("free again once released");
    }

    #[test]
    fn a_corrupt_file_is_a_typed_error_not_block_zero() {
        let dir = temp_dir("corrupt");
        let path = dir.join("last-block");
        std::fs::write(&path, "forty-two").expect("write");
        match Checkpoint::new(&path).load() {
            Err(CheckpointError::Corrupt { content, .. }) => assert_eq!(content, "forty-two"),
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }
}
