//! One run at a time, across processes: advisory locks (`flock`) held for the whole run. Two `sync`s started
//! together, or a `sync` beside the daemon, would otherwise each import every missing user and each apply its own
//! limits. A run locks the directory holding its configuration file, and, where it keeps state, `run.lock` in the
//! state directory:
//!
//! - the configuration's directory is the one thing every run of a site shares, wherever it runs: the daemon
//!   under systemd (a dynamic user, a private `/tmp`, systemd's state directory) and a `sync` typed by hand as
//!   root (none of those) open the same inode. The directory rather than the file, because an editor saves by
//!   writing a new file over the old one: a run started before the save and one started after it would hold
//!   locks on two different files. Runs of configurations kept in the same directory exclude each other too;
//! - `run.lock` makes runs of configurations in different directories that share a state directory exclude each
//!   other.
//!
//! A lock dies with the process, so a crash never leaves it taken.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};

/// The lock file's name in the state directory.
pub const FILE_NAME: &str = "run.lock";

/// A run's locks; released when dropped (or when the process ends).
#[derive(Debug)]
pub struct RunLock {
    _files: Vec<File>,
}

/// Why the lock was not taken.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "another cloudshell-ldap-sync run holds the lock on {path}; this one did nothing (try again when it is done)"
    )]
    Busy { path: PathBuf },
    #[error("cannot use the run lock {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

/// Takes the locks of a run of the configuration file `config` keeping its state in `state_directory`, without
/// waiting: `run.lock` in the state directory first, then the configuration's directory. A configuration
/// directory that cannot be locked (a file system without `flock`, say) is logged and passed over: the state
/// directory's lock, where there is one, still holds.
pub fn acquire_for_run(state_directory: Option<&Path>, config: &Path) -> Result<RunLock, Error> {
    let mut files = Vec::with_capacity(2);
    if let Some(dir) = state_directory {
        let path = dir.join(FILE_NAME);
        let io = |source| Error::Io { path: path.clone(), source };
        std::fs::create_dir_all(dir).map_err(io)?;
        let file = OpenOptions::new().create(true).truncate(false).write(true).open(&path).map_err(io)?;
        files.push(lock(file, &path)?);
    }
    // Read-only, as the daemon may read its configuration and no more.
    let directory = directory_of(config);
    let opened = File::open(&directory).map_err(|source| Error::Io { path: directory.clone(), source });
    match opened.and_then(|file| lock(file, &directory)) {
        Ok(file) => files.push(file),
        Err(busy @ Error::Busy { .. }) => return Err(busy),
        Err(e) => tracing::warn!(error = %e, "runs of this configuration elsewhere are not excluded"),
    }
    Ok(RunLock { _files: files })
}

/// The real directory holding `config`, whatever links its path goes through.
fn directory_of(config: &Path) -> PathBuf {
    match std::fs::canonicalize(config).map(|real| real.parent().map(Path::to_path_buf)) {
        Ok(Some(real)) => real,
        _ => crate::files::parent_or_dot(config).to_path_buf(),
    }
}

fn lock(file: File, path: &Path) -> Result<File, Error> {
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(Error::Busy { path: path.to_path_buf() }),
        Err(TryLockError::Error(source)) => Err(Error::Io { path: path.to_path_buf(), source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, "# a configuration\n").unwrap();
        path
    }

    #[test]
    fn a_second_holder_is_refused_until_the_first_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let (state, a) = (dir.path().join("state"), config(dir.path(), "a.toml"));
        let first = acquire_for_run(Some(&state), &a).unwrap();
        assert!(state.join(FILE_NAME).is_file());
        let e = acquire_for_run(Some(&state), &a).unwrap_err();
        assert!(matches!(&e, Error::Busy { path } if path.ends_with(FILE_NAME)), "{e}");
        drop(first);
        assert!(acquire_for_run(Some(&state), &a).is_ok(), "released on drop");
    }

    #[test]
    fn runs_of_one_configuration_exclude_each_other_with_or_without_a_state_directory() {
        // The daemon under systemd has a state directory; a `sync` by hand as root with the same file has none.
        // Before, the second took a lock file of its own in the temp directory, and both ran.
        let dir = tempfile::tempdir().unwrap();
        let a = config(dir.path(), "a.toml");
        let daemon = acquire_for_run(Some(&dir.path().join("state")), &a).unwrap();
        let e = acquire_for_run(None, &a).unwrap_err();
        let real = std::fs::canonicalize(dir.path()).unwrap();
        assert!(matches!(&e, Error::Busy { path } if path == &real), "{e}");
        assert!(e.to_string().contains("another cloudshell-ldap-sync run holds the lock on"), "{e}");
        drop(daemon);
        let by_hand = acquire_for_run(None, &a).unwrap();
        assert!(matches!(acquire_for_run(Some(&dir.path().join("state")), &a), Err(Error::Busy { .. })));
        drop(by_hand);
    }

    #[test]
    fn a_configuration_saved_by_an_editor_during_a_run_is_still_the_same_site() {
        // Saving writes a new file and renames it over the old: a lock on the file itself would be on the old
        // inode, and a run started after the save would not see it.
        let dir = tempfile::tempdir().unwrap();
        let a = config(dir.path(), "config.toml");
        let _running = acquire_for_run(None, &a).unwrap();
        std::fs::write(dir.path().join(".config.toml.swp"), "# edited\n").unwrap();
        std::fs::rename(dir.path().join(".config.toml.swp"), &a).unwrap();
        assert!(matches!(acquire_for_run(None, &a), Err(Error::Busy { .. })));
        // And through a link to it.
        let link = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(&a, link.path().join("config.toml")).unwrap();
        assert!(matches!(acquire_for_run(None, &link.path().join("config.toml")), Err(Error::Busy { .. })));
    }

    #[test]
    fn configurations_in_different_directories_exclude_each_other_only_through_a_shared_state_directory() {
        let (one, two) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (a, b) = (config(one.path(), "a.toml"), config(two.path(), "b.toml"));
        let first = acquire_for_run(None, &a).unwrap();
        let second = acquire_for_run(None, &b).unwrap();
        drop((first, second));
        let state = one.path().join("state");
        let _a = acquire_for_run(Some(&state), &a).unwrap();
        let e = acquire_for_run(Some(&state), &b).unwrap_err();
        assert!(matches!(&e, Error::Busy { path } if path == &state.join(FILE_NAME)), "{e}");
    }

    #[test]
    fn a_configuration_that_cannot_be_locked_leaves_the_state_directory_lock() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let gone = dir.path().join("no such directory/config.toml");
        let first = acquire_for_run(Some(&state), &gone).unwrap();
        assert!(matches!(acquire_for_run(Some(&state), &gone), Err(Error::Busy { .. })));
        drop(first);
        // An unusable state directory is an error: nothing would keep runs apart.
        std::fs::write(dir.path().join("file"), "").unwrap();
        let e = acquire_for_run(Some(&dir.path().join("file")), &gone).unwrap_err();
        assert!(matches!(&e, Error::Io { .. }), "{e}");
    }
}
