//! The data directory belongs to one node at a time: an advisory lock on
//! `<data dir>/flatstack.lock`, held for the node's lifetime. Two nodes on one SQLite file
//! would each believe they are its only writer (one connection, hints and queues kept in
//! memory). The operating system drops the lock when the process ends, however it ends,
//! so a crash leaves nothing to clean up; the file stays, with the last holder's pid.

use anyhow::Context;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// The lock file's name in the data directory.
pub const LOCK_FILE: &str = "flatstack.lock";

/// The lock on a data directory, released when dropped (or when the process ends).
#[derive(Debug)]
pub struct DataDirLock {
    // Holding the open file is holding the lock.
    _file: File,
    path: PathBuf,
}

impl DataDirLock {
    /// Takes the lock on `data_dir` (created if needed), or fails at once, naming the
    /// directory and, if it is known, the pid of the process that holds it.
    pub fn acquire(data_dir: &Path) -> anyhow::Result<DataDirLock> {
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("creating the data directory {}", data_dir.display()))?;
        let path = data_dir.join(LOCK_FILE);
        // Not truncated before the lock is ours: the holder's pid is in it.
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("opening the lock file {}", path.display()))?;
        // Called through the trait: `File::try_lock` in std (Rust 1.89) is newer than
        // the toolchain the project supports.
        match fs4::FileExt::try_lock(&file) {
            Ok(()) => {}
            Err(fs4::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = match holder.trim().parse::<u32>() {
                    Ok(pid) => format!("process {pid}"),
                    Err(_) => "another process".to_owned(),
                };
                anyhow::bail!(
                    "the data directory {} is in use by another flatstack node ({holder} holds {}); \
                     stop it first, or give this node another --data-dir",
                    data_dir.display(),
                    path.display()
                );
            }
            Err(fs4::TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("locking {}", path.display()));
            }
        }
        // Ours now: say who holds it, for the message above.
        file.set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)))
            .and_then(|_| writeln!(file, "{}", std::process::id()))
            .and_then(|()| file.flush())
            .with_context(|| format!("writing the lock file {}", path.display()))?;
        Ok(DataDirLock { _file: file, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_holder_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let held = DataDirLock::acquire(&data).expect("the first takes it");
        assert_eq!(
            std::fs::read_to_string(held.path()).unwrap().trim(),
            std::process::id().to_string()
        );
        // Another open file description of the same file contends like another process.
        let refused = DataDirLock::acquire(&data).expect_err("held");
        let message = format!("{refused:#}");
        assert!(
            message.contains(&data.display().to_string())
                && message.contains(&format!("process {}", std::process::id())),
            "{message}"
        );
        drop(held);
        DataDirLock::acquire(&data).expect("free again");
    }
}
