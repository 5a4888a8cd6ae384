//! Reading the files an operator points at (the configuration, password files, the state) without trusting
//! them to be ordinary: only a regular file is read (a FIFO would block the daemon for good, a reload
//! included; a device such as `/dev/zero` would never end), and never more than a size cap.

use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// The configuration file.
pub const CONFIG_MAX: u64 = 1 << 20;
/// A password file.
pub const SECRET_MAX: u64 = 64 << 10;
/// A state file (`users.json` holds a line per managed user: about 200 bytes each).
pub const STATE_MAX: u64 = 512 << 20;

/// [`read_text`], with a missing file `None` rather than an error: for state files, which a first run lacks.
pub fn read_text_if_present(path: &Path, max: u64) -> io::Result<Option<String>> {
    match read_text(path, max) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// The directory `path` names a file in, as written: `.` for a bare file name.
pub fn parent_or_dot(path: &Path) -> &Path {
    path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."))
}

/// The text of the regular file at `path`, at most `max` bytes. A missing file is `NotFound`, as for
/// `std::fs::read_to_string`; anything but a regular file, or a larger one, is `InvalidInput` naming why.
pub fn read_text(path: &Path, max: u64) -> io::Result<String> {
    // Opened without blocking, so that a FIFO with no writer cannot hang the open before the check below.
    let file = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(path)?;
    let meta = file.metadata()?;
    let kind = meta.file_type();
    let odd = if kind.is_fifo() {
        Some("a FIFO")
    } else if kind.is_char_device() || kind.is_block_device() {
        Some("a device")
    } else if kind.is_socket() {
        Some("a socket")
    } else if kind.is_dir() {
        Some("a directory")
    } else {
        None
    };
    if let Some(odd) = odd {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("it is {odd}, not a regular file")));
    }
    let too_big = || io::Error::new(io::ErrorKind::InvalidInput, format!("it is larger than {max} bytes"));
    if meta.len() > max {
        return Err(too_big());
    }
    let mut text = String::new();
    file.take(max + 1).read_to_string(&mut text)?;
    if text.len() as u64 > max {
        return Err(too_big());
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_regular_files_and_refuses_the_rest_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.toml");
        std::fs::write(&file, "a = 1\n").unwrap();
        assert_eq!(read_text(&file, 100).unwrap(), "a = 1\n");
        let e = read_text(&file, 3).unwrap_err();
        assert!(e.to_string().contains("larger than 3 bytes"), "{e}");
        assert_eq!(read_text(&dir.path().join("missing"), 100).unwrap_err().kind(), io::ErrorKind::NotFound);

        let fifo = dir.path().join("fifo");
        let status = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
        assert!(status.success());
        let started = std::time::Instant::now();
        let e = read_text(&fifo, 100).unwrap_err();
        assert!(e.to_string().contains("a FIFO"), "{e}");
        assert!(started.elapsed() < std::time::Duration::from_secs(5), "no writer, and no hang");
        let e = read_text(Path::new("/dev/zero"), 100).unwrap_err();
        assert!(e.to_string().contains("a device"), "{e}");
        let e = read_text(dir.path(), 100).unwrap_err();
        assert!(e.to_string().contains("a directory"), "{e}");
    }
}
