//! One run at a time, across processes: an advisory lock (`flock`) on a file in the state directory, held for
//! the whole run. Two `sync`s started together, or a `sync` beside the daemon, would otherwise each import
//! every missing user and each apply its own limits. The lock dies with the process, so a crash never leaves
//! it taken.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};

/// The lock file's name in the state directory.
pub const FILE_NAME: &str = "run.lock";

/// A run's lock; released when dropped (or when the process ends).
#[derive(Debug)]
pub struct RunLock {
    _file: File,
    pub path: PathBuf,
}

/// Why the lock was not taken.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("another cloudshell-ldap-sync run holds {path}; this one did nothing (try again when it is done)")]
    Busy { path: PathBuf },
    #[error("cannot use the run lock {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

/// Where the lock lives: the state directory, or, without one, a file in the temp directory named after the
/// configuration file (runs of two different configurations do not exclude each other).
pub fn path_for(state_directory: Option<&Path>, config: &Path) -> PathBuf {
    match state_directory {
        Some(dir) => dir.join(FILE_NAME),
        None => {
            use std::hash::{Hash, Hasher};
            let canonical = std::fs::canonicalize(config).unwrap_or_else(|_| config.to_path_buf());
            // A stable name, not a secret: collisions only make two configurations wait for each other.
            let mut h = std::collections::hash_map::DefaultHasher::new();
            canonical.hash(&mut h);
            std::env::temp_dir().join(format!("cloudshell-ldap-sync-{:016x}.lock", h.finish()))
        }
    }
}

/// Takes the lock at `path` without waiting.
pub fn acquire(path: &Path) -> Result<RunLock, Error> {
    let io = |source| Error::Io { path: path.to_path_buf(), source };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let file = OpenOptions::new().create(true).truncate(false).write(true).open(path).map_err(io)?;
    match file.try_lock() {
        Ok(()) => Ok(RunLock { _file: file, path: path.to_path_buf() }),
        Err(TryLockError::WouldBlock) => Err(Error::Busy { path: path.to_path_buf() }),
        Err(TryLockError::Error(e)) => Err(io(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_until_the_first_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let path = path_for(Some(dir.path()), Path::new("/etc/x.toml"));
        assert_eq!(path, dir.path().join("run.lock"));
        let first = acquire(&path).unwrap();
        assert!(matches!(acquire(&path), Err(Error::Busy { .. })), "a second holder waits");
        drop(first);
        assert!(acquire(&path).is_ok(), "released on drop");
    }

    #[test]
    fn without_a_state_directory_the_lock_is_per_configuration() {
        let a = path_for(None, Path::new("/etc/a.toml"));
        assert_eq!(a, path_for(None, Path::new("/etc/a.toml")));
        assert_ne!(a, path_for(None, Path::new("/etc/b.toml")));
        assert!(a.starts_with(std::env::temp_dir()));
    }
}
