//! Atomic, mode-correct filesystem primitives for the state directory.
//!
//! Every change to the state directory must be atomic. A reader (a web server reloading its
//! certificate, or a second acmekeep reading `live/`) sees the old content or the new content,
//! never a half-written file or a missing symlink. Like acmetool, we get this from rename(2):
//!
//! - A file is written to a uniquely named temp file in `<state>/tmp`, fsynced, renamed over its
//!   final path, and then the parent directory is fsynced so the rename itself survives a crash.
//! - A symlink is created under a temp name in `<state>/tmp` and renamed over the old link. We
//!   never remove and then create the link, because that leaves a window in which `live/<name>` is
//!   missing.
//!
//! rename(2) is atomic only within one filesystem, so `tmp/` must be on the same filesystem as
//! every target. acmetool requires the whole state directory to be one filesystem. A rename across
//! filesystems fails with `EXDEV`; it never silently degrades to copy + delete.
//!
//! Modes are exact from the first byte. acmetool creates the temp file with mode 0600 and chmods
//! it after the rename. We instead create it with its final mode and fchmod it before writing
//! any data, so a private key is never readable by anyone else, whatever the process umask is.
//!
//! This module knows nothing about the layout of the state directory. It works on the paths it
//! is given.

use std::fs::{self, DirBuilder, File, OpenOptions, Permissions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// How many temp names to try before giving up. Names collide only if something else creates
/// files in `tmp/` with our naming scheme, so a collision is rare and repeated collisions mean
/// something is wrong.
const MAX_NAME_ATTEMPTS: u32 = 64;

/// Process-wide counter that makes temp names unique among concurrent tasks in this process. The
/// pid separates processes, and the time separates a reused pid from an earlier process.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Writes files and swaps symlinks atomically by way of a scratch directory.
///
/// `tmp` is `<state>/tmp`. It must exist and be on the same filesystem as every path passed to
/// [`AtomicFs::write_file`] and [`AtomicFs::symlink`]. Many tasks may use one `AtomicFs` at the
/// same time, because temp names never collide within a process.
#[derive(Debug, Clone)]
pub struct AtomicFs {
    tmp: PathBuf,
}

impl AtomicFs {
    /// Creates an `AtomicFs` that puts its temp files in `tmp_dir`, normally `<state>/tmp`.
    ///
    /// Nothing is checked or created here. The store creates `tmp/` (mode 0700) when it opens the
    /// state directory, and clears it with [`clear_dir`].
    pub fn new(tmp_dir: impl Into<PathBuf>) -> Self {
        Self {
            tmp: tmp_dir.into(),
        }
    }

    /// Writes `data` to `path` atomically, so the file has exactly `mode` from its first byte.
    ///
    /// The steps are as follows:
    /// 1. Create a new temp file `tmp/tmp.<pid>.<counter>.<nanos>` with `O_CREAT|O_EXCL` and mode
    ///    `mode`. `O_EXCL` never follows a symlink at the temp name. On `EEXIST` we try another
    ///    name.
    /// 2. fchmod the file to exactly `mode`, because the umask may have removed bits. This happens
    ///    before any data is written.
    /// 3. Write the data and fsync the file.
    /// 4. Rename the file over `path`. Readers that already have the old file open keep reading
    ///    the old inode.
    /// 5. fsync the parent directory of `path`, so the rename survives a crash.
    ///
    /// If any step before the rename fails, the temp file is removed. Nothing is left in `tmp/`.
    /// If the final directory fsync fails, `path` already has the new content, but an error is
    /// still returned because the write might not be durable.
    pub fn write_file(&self, path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
        self.write_file_with(path, mode, |file| file.write_all(data))
    }

    /// [`AtomicFs::write_file`] with the contents written by `fill` instead of held in
    /// memory first (wrap the file in a `BufWriter` to write many small pieces).
    pub fn write_file_with(
        &self,
        path: &Path,
        mode: u32,
        fill: impl FnOnce(&mut File) -> io::Result<()>,
    ) -> io::Result<()> {
        let (mut file, tmp_path) = self.create_temp_file(mode)?;
        // The chmod comes before any data, so the data is never in a file whose mode is wider
        // than asked (the umask can only make the mode narrower); fsynced before the rename.
        let written = file
            .set_permissions(Permissions::from_mode(mode))
            .and_then(|()| fill(&mut file))
            .and_then(|()| file.sync_all());
        drop(file);
        if let Err(e) = written.and_then(|()| fs::rename(&tmp_path, path)) {
            // The original error is what matters; a failed cleanup only leaves a file in tmp/,
            // which is cleared the next time the store is opened.
            let _ = fs::remove_file(&tmp_path);
            return Err(e);
        }
        sync_parent(path)
    }

    /// Creates or replaces the symlink `link` so that it points to `target`, atomically.
    ///
    /// If `link` already is a symlink to exactly `target`, nothing is touched and the result is
    /// `Ok(false)`. This keeps the link's ctime and avoids waking file watchers for no reason (see
    /// acmetool #164). Otherwise the link is created as `tmp/symlink.<9 digits>` and renamed over
    /// `link`, and the parent directory is fsynced. The result is then `Ok(true)`. At no point is
    /// `link` missing.
    ///
    /// `target` is stored as given; relative targets are resolved against the directory of `link`
    /// when the link is followed, not against `tmp/`. If `link` exists and is a real directory,
    /// the rename fails and so does this call. It never replaces a directory.
    pub fn symlink(&self, target: &Path, link: &Path) -> io::Result<bool> {
        match fs::read_link(link) {
            Ok(existing) if existing == target => return Ok(false),
            Ok(_) => {}
            // NotFound: nothing there yet. InvalidInput: a file that is not a symlink; the rename
            // replaces a regular file, and fails for a directory.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::InvalidInput
                ) => {}
            Err(e) => return Err(e),
        }
        let tmp_link = self.create_temp_symlink(target)?;
        if let Err(e) = fs::rename(&tmp_link, link) {
            let _ = fs::remove_file(&tmp_link);
            return Err(e);
        }
        sync_parent(link)?;
        Ok(true)
    }

    /// Creates a new, empty temp file with exactly `mode` and returns it with its path.
    fn create_temp_file(&self, mode: u32) -> io::Result<(File, PathBuf)> {
        let pid = std::process::id();
        for _ in 0..MAX_NAME_ATTEMPTS {
            let name = format!("tmp.{pid}.{}.{}", next_counter(), unix_nanos());
            let tmp_path = self.tmp.join(name);
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(mode)
                .open(&tmp_path)
            {
                Ok(file) => return Ok((file, tmp_path)),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
        Err(name_exhausted(&self.tmp))
    }

    /// Creates a temp symlink to `target` named `symlink.<9 digits>` and returns its path.
    fn create_temp_symlink(&self, target: &Path) -> io::Result<PathBuf> {
        for _ in 0..MAX_NAME_ATTEMPTS {
            let tmp_link = self.tmp.join(format!("symlink.{:09}", nine_digits()));
            // symlink(2) fails with EEXIST and never follows whatever is at the temp name.
            match std::os::unix::fs::symlink(target, &tmp_link) {
                Ok(()) => return Ok(tmp_link),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
        Err(name_exhausted(&self.tmp))
    }
}

/// fsyncs a directory, so that renames into it are durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// fsyncs the directory that contains `path`, so that a rename into it is durable.
fn sync_parent(path: &Path) -> io::Result<()> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(parent)?.sync_all()
}

fn next_counter() -> u64 {
    TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
}

/// Nanoseconds since the Unix epoch. This only makes names unique, so a clock before 1970 gives 0.
fn unix_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// A number below 10^9 for acmetool-style `symlink.<9 digits>` names. It only needs to be unlikely
/// to collide, because a collision is retried. std's `RandomState` is randomly keyed, and hashing
/// the pid, the counter and the time with it gives that without a rand dependency.
fn nine_digits() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    let hash = RandomState::new().hash_one((std::process::id(), next_counter(), unix_nanos()));
    hash % 1_000_000_000
}

fn name_exhausted(tmp: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::AlreadyExists,
        format!(
            "could not find an unused temp name in {} after {MAX_NAME_ATTEMPTS} attempts",
            tmp.display()
        ),
    )
}

/// Like `mkdir -p`, but every directory it creates gets exactly `mode`.
///
/// Each new directory is chmodded after mkdir, so the umask does not matter. Until the chmod the
/// umask can only make the mode narrower, never wider. Directories that already exist, including
/// symlinks to directories, are left as they are. Use the store's conform pass to fix their modes.
/// If a directory is created by someone else at the same moment, that counts as existing.
pub fn create_dir_all_mode(path: &Path, mode: u32) -> io::Result<()> {
    if path.as_os_str().is_empty() {
        return Ok(());
    }
    match fs::metadata(path) {
        Ok(meta) if meta.is_dir() => return Ok(()),
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists and is not a directory", path.display()),
            ));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    if let Some(parent) = path.parent() {
        create_dir_all_mode(parent, mode)?;
    }
    match create_dir_mode(path, mode) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && path.is_dir() => Ok(()),
        other => other,
    }
}

/// Creates one new directory with exactly `mode`. It fails if `path` already exists.
///
/// Key and account directories (0700) are created with this function, so a key is never in a
/// directory that is wider than intended, not even for a moment. Because the directory has to be
/// new, we never take over and chmod a directory that someone else prepared.
pub fn create_dir_mode(path: &Path, mode: u32) -> io::Result<()> {
    DirBuilder::new().mode(mode).create(path)?;
    fs::set_permissions(path, Permissions::from_mode(mode))
}

/// Reads the file at `path`, but refuses anything larger than `limit` bytes.
///
/// The contents of the state directory and `conf/` may be untrusted or corrupted, so every read is
/// bounded. A file that is too large gives an [`io::ErrorKind::InvalidData`] error that names the
/// path and the limit. The size is checked before reading, and the read itself stops at
/// `limit + 1` bytes, so a file that grows in the meantime (or a `/proc` file that reports size 0)
/// is caught too.
///
/// This is for files the user names (a `--response-file`, files to import): symlinks are
/// followed and a FIFO is read like a file, as `<(command)` needs. Files of the state
/// directory are read with [`read_state_file`].
pub fn read_bounded(path: &Path, limit: u64) -> io::Result<Vec<u8>> {
    read_limited(File::open(path)?, path, limit)
}

/// Reads `file` (opened from `path`) to its end, refusing more than `limit` bytes.
fn read_limited(file: File, path: &Path, limit: u64) -> io::Result<Vec<u8>> {
    // No fstat for the size: reading at most one byte past the limit bounds it just as well,
    // with one system call less per file (state directories hold tens of thousands).
    let mut data = Vec::with_capacity(4096);
    file.take(limit.saturating_add(1)).read_to_end(&mut data)?;
    if data.len() as u64 > limit {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{} is larger than the limit of {limit} bytes",
                path.display()
            ),
        ));
    }
    Ok(data)
}

/// Whether a read in the state directory may follow a symlink at the last component of its
/// path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Links {
    /// No: acmetool's layout has a regular file there (targets, `conf/`, keys, accounts,
    /// certificate files, our own records), so a link is someone else's doing.
    Refuse,
    /// Yes: the caller has checked where the link leads (`live/<name>` and
    /// `certs/<id>/privkey` point inside the state directory), or the user chose the path.
    Follow,
}

/// Opens a file of the state directory for reading, if it is a regular file.
///
/// The open never blocks: `O_NONBLOCK` makes a FIFO open at once instead of waiting for a
/// writer (with the state lock held, forever), and the fstat that follows refuses it, as it
/// refuses devices, sockets and directories. With [`Links::Refuse`] a symlink at the last
/// component is refused by the kernel (`O_NOFOLLOW`), not followed to whatever it names.
/// The directories above the last component are the caller's to check (the store checks the
/// layout's directories when it opens the state directory, and lists entries without
/// following links).
///
/// The errors say what the path is, without naming it: callers add the path as context.
pub fn open_regular(path: &Path, links: Links) -> io::Result<File> {
    use nix::fcntl::OFlag;
    let mut flags = OFlag::O_NONBLOCK | OFlag::O_NOCTTY;
    if links == Links::Refuse {
        flags |= OFlag::O_NOFOLLOW;
    }
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(flags.bits())
        .open(path)
        .map_err(|e| {
            if links == Links::Refuse && e.raw_os_error() == Some(nix::libc::ELOOP) {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "it is a symbolic link, which acmekeep does not follow here (a regular file belongs there)",
                )
            } else {
                e
            }
        })?;
    let file_type = file.metadata()?.file_type();
    if !file_type.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "it is a {}, not a regular file; acmekeep reads only regular files here",
                kind_name(file_type)
            ),
        ));
    }
    Ok(file)
}

/// [`read_bounded`] for a file of the state directory: opened by [`open_regular`], so it
/// never blocks, never reads anything but a regular file and, with [`Links::Refuse`], never
/// follows a symlink at the last component.
pub fn read_state_file(path: &Path, limit: u64, links: Links) -> io::Result<Vec<u8>> {
    read_limited(open_regular(path, links)?, path, limit)
}

/// What a file type is called in messages.
pub fn kind_name(file_type: fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if file_type.is_file() {
        "regular file"
    } else if file_type.is_dir() {
        "directory"
    } else if file_type.is_symlink() {
        "symbolic link"
    } else if file_type.is_fifo() {
        "FIFO"
    } else if file_type.is_socket() {
        "socket"
    } else if file_type.is_block_device() {
        "block device"
    } else if file_type.is_char_device() {
        "character device"
    } else {
        "special file"
    }
}

/// Removes every entry in `dir`, and keeps `dir` itself.
///
/// Files and symlinks are unlinked; symlinks are never followed. Subdirectories are removed
/// recursively. The store uses this to clear `tmp/` on open, which throws away whatever a crashed
/// run left behind. If `dir` does not exist there is nothing to clear, and the result is `Ok`.
/// Entries that disappear while we work count as removed.
pub fn clear_dir(dir: &Path) -> io::Result<()> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let path = entry.path();
        // DirEntry::file_type does not follow symlinks, so a link to a directory is unlinked and
        // never descended into.
        let removed = if entry.file_type()?.is_dir() {
            fs::remove_dir_all(&path)
        } else {
            fs::remove_file(&path)
        };
        match removed {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

/// Returns true if `rel` is a non-empty relative path made only of normal components.
///
/// Such a path has no root, no `..` and no leading `.`, so joining it to a directory can never
/// name anything outside that directory. Use it to check names taken from untrusted input before
/// joining them to a state path. The check is only lexical. It cannot see symlinks inside the
/// directory, which the store's conform pass checks separately. Note that `Path::components`
/// drops interior `.` components, so `a/./b` counts as `a/b` and is accepted.
pub fn is_contained_relative(rel: &Path) -> bool {
    !rel.as_os_str().is_empty() && rel.components().all(|c| matches!(c, Component::Normal(_)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;

    /// A state-like dir with `tmp/` inside it, so targets and temp files share a filesystem.
    fn setup() -> (tempfile::TempDir, AtomicFs) {
        let dir = tempfile::tempdir().expect("create temp dir");
        let tmp = dir.path().join("tmp");
        fs::create_dir(&tmp).expect("create tmp/");
        let afs = AtomicFs::new(&tmp);
        (dir, afs)
    }

    fn mode_of(path: &Path) -> u32 {
        fs::symlink_metadata(path).expect("stat").mode() & 0o7777
    }

    fn tmp_entries(afs: &AtomicFs) -> Vec<PathBuf> {
        fs::read_dir(&afs.tmp)
            .expect("read tmp/")
            .map(|e| e.expect("dir entry").path())
            .collect()
    }

    #[test]
    fn write_file_sets_exact_mode() {
        let (dir, afs) = setup();
        // 0666 and 0755 would be narrowed by a typical umask of 022 if we relied on open(2) alone.
        for mode in [0o600, 0o644, 0o640, 0o666, 0o755] {
            let path = dir.path().join(format!("f{mode:o}"));
            afs.write_file(&path, b"data", mode).expect("write");
            assert_eq!(mode_of(&path), mode, "mode of {}", path.display());
            assert_eq!(fs::read(&path).expect("read"), b"data");
        }
    }

    #[test]
    fn write_file_replacement_gets_new_mode() {
        let (dir, afs) = setup();
        let path = dir.path().join("privkey");
        afs.write_file(&path, b"old", 0o644).expect("first write");
        afs.write_file(&path, b"new", 0o600).expect("second write");
        assert_eq!(mode_of(&path), 0o600);
        assert_eq!(fs::read(&path).expect("read"), b"new");
    }

    #[test]
    fn write_file_leaves_no_temp_file_on_success() {
        let (dir, afs) = setup();
        for i in 0..5 {
            afs.write_file(&dir.path().join("f"), format!("{i}").as_bytes(), 0o644)
                .expect("write");
        }
        assert!(tmp_entries(&afs).is_empty(), "{:?}", tmp_entries(&afs));
    }

    #[test]
    fn write_file_leaves_no_temp_file_on_failure() {
        let (dir, afs) = setup();
        // Missing parent directory: the rename fails.
        let missing = dir.path().join("no/such/dir/file");
        assert!(afs.write_file(&missing, b"x", 0o600).is_err());
        // Target is a non-empty directory: the rename fails.
        let occupied = dir.path().join("occupied");
        fs::create_dir_all(occupied.join("child")).expect("mkdir");
        assert!(afs.write_file(&occupied, b"x", 0o600).is_err());
        assert!(
            occupied.join("child").is_dir(),
            "directory must be untouched"
        );
        assert!(tmp_entries(&afs).is_empty(), "{:?}", tmp_entries(&afs));
    }

    #[test]
    fn write_file_fails_cleanly_without_tmp_dir() {
        let dir = tempfile::tempdir().expect("create temp dir");
        let afs = AtomicFs::new(dir.path().join("tmp"));
        let path = dir.path().join("f");
        let err = afs
            .write_file(&path, b"x", 0o600)
            .expect_err("tmp/ is missing");
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(!path.exists());
    }

    #[test]
    fn write_file_keeps_old_inode_readable() {
        let (dir, afs) = setup();
        let path = dir.path().join("cert");
        afs.write_file(&path, b"old content", 0o644)
            .expect("write old");
        let mut old = File::open(&path).expect("open old");
        afs.write_file(&path, b"new content", 0o644)
            .expect("write new");
        let mut seen = String::new();
        old.read_to_string(&mut seen).expect("read old handle");
        assert_eq!(seen, "old content");
        assert_eq!(fs::read(&path).expect("read new"), b"new content");
    }

    #[test]
    fn write_file_concurrent_writers_do_not_collide() {
        let (dir, afs) = setup();
        let afs = Arc::new(afs);
        let root = dir.path().to_path_buf();
        let handles: Vec<_> = (0..8)
            .map(|t| {
                let afs = Arc::clone(&afs);
                let root = root.clone();
                std::thread::spawn(move || {
                    for i in 0..50 {
                        let path = root.join(format!("t{t}-{i}"));
                        afs.write_file(&path, b"x", 0o600).expect("write");
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().expect("writer thread");
        }
        assert!(tmp_entries(&afs).is_empty());
        assert_eq!(fs::read_dir(&root).expect("read root").count(), 8 * 50 + 1);
    }

    #[test]
    fn symlink_reports_whether_it_changed() {
        let (dir, afs) = setup();
        let link = dir.path().join("live");
        let a = Path::new("../certs/aaa");
        let b = Path::new("../certs/bbb");
        assert!(afs.symlink(a, &link).expect("create"));
        assert_eq!(fs::read_link(&link).expect("readlink"), a);
        assert!(!afs.symlink(a, &link).expect("same target"));
        assert!(afs.symlink(b, &link).expect("new target"));
        assert_eq!(fs::read_link(&link).expect("readlink"), b);
        assert!(tmp_entries(&afs).is_empty());
    }

    #[test]
    fn symlink_unchanged_keeps_the_same_inode() {
        let (dir, afs) = setup();
        let link = dir.path().join("privkey");
        let target = Path::new("../../keys/k/privkey");
        afs.symlink(target, &link).expect("create");
        let before = fs::symlink_metadata(&link).expect("lstat").ino();
        assert!(!afs.symlink(target, &link).expect("same"));
        assert_eq!(fs::symlink_metadata(&link).expect("lstat").ino(), before);
    }

    #[test]
    fn symlink_replaces_a_regular_file() {
        let (dir, afs) = setup();
        let link = dir.path().join("x");
        fs::write(&link, b"plain").expect("write");
        assert!(afs.symlink(Path::new("target"), &link).expect("replace"));
        assert_eq!(fs::read_link(&link).expect("readlink"), Path::new("target"));
    }

    #[test]
    fn symlink_refuses_to_replace_a_directory() {
        let (dir, afs) = setup();
        let link = dir.path().join("d");
        fs::create_dir(&link).expect("mkdir");
        assert!(afs.symlink(Path::new("target"), &link).is_err());
        assert!(link.is_dir());
        assert!(tmp_entries(&afs).is_empty());
    }

    #[test]
    fn symlink_is_never_missing_during_swaps() {
        let (dir, afs) = setup();
        let link = dir.path().join("live");
        afs.symlink(Path::new("t0"), &link).expect("create");
        let stop = Arc::new(AtomicBool::new(false));
        let reader = {
            let (link, stop) = (link.clone(), Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut reads = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    fs::read_link(&link).expect("link must always exist");
                    reads += 1;
                }
                reads
            })
        };
        for i in 1..=500 {
            assert!(
                afs.symlink(Path::new(&format!("t{i}")), &link)
                    .expect("swap")
            );
        }
        stop.store(true, Ordering::Relaxed);
        let reads = reader.join().expect("reader saw a missing link");
        assert!(reads > 0);
    }

    #[test]
    fn create_dir_all_mode_applies_mode_to_new_dirs_only() {
        let dir = tempfile::tempdir().expect("create temp dir");
        let existing = dir.path().join("existing");
        fs::create_dir(&existing).expect("mkdir");
        fs::set_permissions(&existing, Permissions::from_mode(0o755)).expect("chmod");
        let deep = existing.join("a/b/c");
        create_dir_all_mode(&deep, 0o700).expect("mkdir -p");
        assert_eq!(mode_of(&existing), 0o755);
        for p in [existing.join("a"), existing.join("a/b"), deep.clone()] {
            assert_eq!(mode_of(&p), 0o700, "{}", p.display());
        }
        // Already there: fine, and left alone.
        create_dir_all_mode(&deep, 0o755).expect("idempotent");
        assert_eq!(mode_of(&deep), 0o700);
        // 0777 is narrowed by any non-zero umask unless we chmod.
        let wide = dir.path().join("wide");
        create_dir_all_mode(&wide, 0o777).expect("mkdir");
        assert_eq!(mode_of(&wide), 0o777);
    }

    #[test]
    fn create_dir_all_mode_rejects_a_file_in_the_way() {
        let dir = tempfile::tempdir().expect("create temp dir");
        let file = dir.path().join("file");
        fs::write(&file, b"").expect("write");
        let err = create_dir_all_mode(&file, 0o700).expect_err("file in the way");
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert!(err.to_string().contains("not a directory"), "{err}");
        let err = create_dir_all_mode(&file.join("sub"), 0o700).expect_err("file as parent");
        assert_eq!(err.kind(), io::ErrorKind::NotADirectory);
    }

    #[test]
    fn create_dir_mode_is_exact_and_exclusive() {
        let dir = tempfile::tempdir().expect("create temp dir");
        let keys = dir.path().join("k");
        create_dir_mode(&keys, 0o700).expect("mkdir");
        assert_eq!(mode_of(&keys), 0o700);
        let err = create_dir_mode(&keys, 0o700).expect_err("exists");
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        let wide = dir.path().join("w");
        create_dir_mode(&wide, 0o777).expect("mkdir");
        assert_eq!(mode_of(&wide), 0o777);
    }

    #[test]
    fn read_bounded_reads_up_to_the_limit() {
        let dir = tempfile::tempdir().expect("create temp dir");
        let path = dir.path().join("conf");
        fs::write(&path, b"12345").expect("write");
        assert_eq!(read_bounded(&path, 5).expect("at limit"), b"12345");
        assert_eq!(read_bounded(&path, 100).expect("below limit"), b"12345");
        let empty = dir.path().join("empty");
        fs::write(&empty, b"").expect("write");
        assert!(read_bounded(&empty, 0).expect("empty").is_empty());
    }

    #[test]
    fn read_bounded_rejects_oversize_naming_the_file() {
        let dir = tempfile::tempdir().expect("create temp dir");
        let path = dir.path().join("huge-target");
        fs::write(&path, vec![b'x'; 6]).expect("write");
        let err = read_bounded(&path, 5).expect_err("too large");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        let msg = err.to_string();
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert!(msg.contains("5 bytes"), "{msg}");
    }

    #[test]
    fn read_bounded_catches_files_that_report_no_size() {
        // /proc files report a length of 0 but have content, like a file that grows after stat.
        let path = Path::new("/proc/self/status");
        if path.exists() {
            let err = read_bounded(path, 8).expect_err("content beyond limit");
            assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        }
    }

    #[test]
    fn clear_dir_removes_everything_but_the_dir() {
        let dir = tempfile::tempdir().expect("create temp dir");
        let tmp = dir.path().join("tmp");
        let outside = dir.path().join("outside");
        fs::create_dir_all(tmp.join("sub/deeper")).expect("mkdir");
        fs::create_dir(&outside).expect("mkdir");
        fs::write(outside.join("keep"), b"keep").expect("write");
        fs::write(tmp.join("tmp.1.2.3"), b"x").expect("write");
        fs::write(tmp.join("sub/deeper/f"), b"x").expect("write");
        fs::write(tmp.join(".hidden"), b"x").expect("write");
        std::os::unix::fs::symlink(&outside, tmp.join("symlink.123456789")).expect("symlink");
        std::os::unix::fs::symlink("dangling", tmp.join("broken")).expect("symlink");

        clear_dir(&tmp).expect("clear");
        assert!(tmp.is_dir());
        assert_eq!(fs::read_dir(&tmp).expect("read").count(), 0);
        // The symlinked directory was unlinked, not emptied.
        assert_eq!(fs::read(outside.join("keep")).expect("read"), b"keep");

        clear_dir(&dir.path().join("missing")).expect("missing dir is already clear");
    }

    #[test]
    fn is_contained_relative_table() {
        let table: &[(&str, bool)] = &[
            ("a", true),
            ("a/b/c", true),
            ("example.com-x2g57ketjrfb7cda6ily2jehqq", true),
            ("*.wild.example.org", true),
            ("host:label", true),
            ("..a", true),
            ("a..", true),
            ("a/./b", true), // normalised by Path::components to a/b
            ("a/", true),
            ("", false),
            (".", false),
            ("./a", false),
            ("..", false),
            ("../a", false),
            ("a/../b", false),
            ("a/..", false),
            ("/", false),
            ("/etc/passwd", false),
            ("//a", false),
        ];
        for &(input, want) in table {
            assert_eq!(is_contained_relative(Path::new(input)), want, "{input:?}");
        }
    }
}
