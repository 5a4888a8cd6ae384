//! The daemon's small persistent state in the state directory: each group's member count at the last good
//! run (`groups.json`), which the shrink guard compares against. Also the atomic file write that the status
//! file shares. Deleting `groups.json` disables the guard for one run, after which it is written again.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub const FILE_NAME: &str = "groups.json";

/// Writes `bytes` to `path` atomically (a temp file in the same directory, synced, then renamed over it),
/// creating the directory if needed.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
struct GroupCount {
    members: usize,
    updated_at: String,
}

/// The last good member counts.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Counts {
    groups: BTreeMap<String, GroupCount>,
}

impl Counts {
    /// Counts by configured group name.
    pub fn by_group(&self) -> HashMap<String, usize> {
        self.groups.iter().map(|(k, v)| (k.clone(), v.members)).collect()
    }

    /// Records a group's count from a good run.
    pub fn record(&mut self, group: &str, members: usize) {
        let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
        self.groups.insert(group.to_string(), GroupCount { members, updated_at: now });
    }
}

pub fn path(dir: &Path) -> PathBuf {
    dir.join(FILE_NAME)
}

/// A state file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path} is not a state file ({source}); delete it to start afresh")]
    Corrupt { path: PathBuf, source: serde_json::Error },
}

/// Reads the counts; a missing file is an empty state, an unreadable one an error naming it.
pub fn load(dir: &Path) -> Result<Counts, Error> {
    let path = path(dir);
    match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text).map_err(|source| Error::Corrupt { path, source }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Counts::default()),
        Err(source) => Err(Error::Read { path, source }),
    }
}

pub fn save(dir: &Path, counts: &Counts) -> std::io::Result<()> {
    let text = serde_json::to_string_pretty(counts).map_err(std::io::Error::other)?;
    write_atomic(&path(dir), text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_round_trip_and_a_missing_file_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()).unwrap(), Counts::default());
        let mut c = Counts::default();
        c.record("Ops (EU)", 12);
        save(dir.path(), &c).unwrap();
        assert_eq!(load(dir.path()).unwrap().by_group(), HashMap::from([("Ops (EU)".to_string(), 12)]));
        std::fs::write(path(dir.path()), "{").unwrap();
        let e = load(dir.path()).unwrap_err();
        assert!(matches!(e, Error::Corrupt { .. }), "{e:?}");
        assert!(e.to_string().contains("delete it to start afresh"), "{e}");
    }
}
