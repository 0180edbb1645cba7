//! Webroot: challenge files written into directories a web server already serves.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::{Context, Result};

use crate::files::create_dir_all_mode;

/// Writes `<dir>/<token>` (mode 0644, the key authorization with no newline), creating
/// `dir` with mode 0755. The file is created with O_EXCL after removing any leftover, so a
/// planted symlink is never followed. `token` must already be validated base64url.
pub fn write(dir: &Path, token: &str, key_authorization: &str) -> Result<()> {
    create_dir_all_mode(dir, 0o755).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(token);
    let _ = std::fs::remove_file(&path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(key_authorization.as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Removes `<dir>/<token>`; a missing file is fine.
pub fn remove(dir: &Path, token: &str) {
    let path = dir.join(token);
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!("cannot remove challenge file {}: {e}", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn writes_and_removes_without_following_symlinks() {
        let d = tempfile::tempdir().expect("tempdir");
        let dir = d.path().join("a/b");
        let outside = d.path().join("outside");
        std::fs::write(&outside, "keep").expect("write");
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::os::unix::fs::symlink(&outside, dir.join("tok")).expect("symlink");
        super::write(&dir, "tok", "tok.thumb").expect("write");
        assert_eq!(std::fs::read_to_string(&outside).expect("read"), "keep");
        assert_eq!(
            std::fs::read_to_string(dir.join("tok")).expect("read"),
            "tok.thumb"
        );
        let mode = std::fs::metadata(dir.join("tok"))
            .expect("meta")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o644);
        super::remove(&dir, "tok");
        assert!(!dir.join("tok").exists());
    }
}
