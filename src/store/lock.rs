//! One crash-proof lock for the whole state directory.
//!
//! acmetool has no lock at all: two cron runs that overlap can both order certificates and race
//! on `live/`. certbot and dehydrated do have lockfiles, but theirs are "the file exists" locks.
//! After a crash, a power cut or a `kill -9` the file stays behind, and every later run refuses
//! to start until a human deletes it. We use a kernel lock instead: `flock(2)` (std's
//! [`File::try_lock`]) on a hidden file `<state>/.lock`. The kernel drops the lock when the
//! holder's last file descriptor closes, and that also happens when the process dies for any
//! reason. So a stale lock cannot exist, and the lock file itself is never deleted. Deleting it
//! would reintroduce races, because two processes could then lock two different inodes.
//!
//! - The file is hidden, so it is not listed and not conformed, like every other dot-file in the
//!   state directory (acmetool §1.1). Its mode is 0600.
//! - The holder writes its PID into the file after it has the lock. The PID is used only in the
//!   "busy" error message, never to decide anything. It may be the PID of an earlier holder
//!   during the moment between acquiring and writing.
//! - Commands that change the state directory take the lock. Read-only commands (status, listing)
//!   don't take it. Every write is atomic (see [`crate::files`]), so readers are always consistent.
//! - std opens files with `O_CLOEXEC`, so hooks and other child processes we spawn do not
//!   inherit the descriptor and cannot keep the lock alive after we exit.
//! - flock locks belong to an open file description, not to a process. Two `StateLock::acquire`
//!   calls in one process therefore exclude each other just like two processes do.

use std::fs::{self, File, OpenOptions, Permissions, TryLockError};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Name of the lock file at the top of the state directory.
pub const LOCK_FILE: &str = ".lock";

/// Mode of the lock file. Only the owner needs to open it.
const LOCK_MODE: u32 = 0o600;

/// The first and the longest sleep between attempts in [`StateLock::acquire_wait`].
const FIRST_POLL: Duration = Duration::from_millis(10);
const MAX_POLL: Duration = Duration::from_millis(250);

/// A PID is at most 10 digits; anything past this is not ours and is ignored.
const PID_READ_LIMIT: usize = 32;
/// How often, and how far apart, the holder's PID is read while it may be in flux.
const PID_READ_ATTEMPTS: u32 = 20;
const PID_READ_PAUSE: Duration = Duration::from_millis(5);

/// Why the state directory could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process (or another `StateLock` in this process) holds the lock.
    #[error(
        "the state directory {dir} is locked by another acmekeep process{}",
        pid_suffix(*.pid, " (PID ", ")")
    )]
    Busy { dir: PathBuf, pid: Option<u32> },
    /// The lock was still held when the timeout expired.
    #[error(
        "timed out after {waited:?} waiting for the lock on the state directory {dir}{}",
        pid_suffix(*.pid, " held by PID ", "")
    )]
    Timeout {
        dir: PathBuf,
        pid: Option<u32>,
        waited: Duration,
    },
    /// The lock file could not be opened, locked or written. The cause is the `source`, which is
    /// left out of the message because the error chain is printed anyway.
    #[error("cannot use lock file {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Formats the holder's PID for an error message, or nothing if it is unknown.
fn pid_suffix(pid: Option<u32>, before: &str, after: &str) -> String {
    pid.map(|pid| format!("{before}{pid}{after}"))
        .unwrap_or_default()
}

/// Exclusive lock on a state directory. The lock is held for as long as this value lives.
///
/// Dropping it unlocks and closes the file. A crash releases it too, when the descriptor closes.
#[derive(Debug)]
pub struct StateLock {
    /// Kept open to hold the flock; emptied on release.
    file: File,
    path: PathBuf,
}

impl StateLock {
    /// Locks the state directory `dir`, or fails at once with [`LockError::Busy`] if another
    /// holder has it.
    ///
    /// `<dir>/.lock` is created with mode 0600 if it is missing. It is never truncated before we
    /// hold the lock, so the current holder's PID stays readable. A symlink or any other non-file
    /// at that path is an error. Once the lock is ours, a mode wider than 0600 is fixed and our
    /// PID is written into the file.
    pub fn acquire(dir: &Path) -> Result<StateLock, LockError> {
        let (file, path) = open_lock_file(dir)?;
        if !try_lock(&file, &path)? {
            return Err(LockError::Busy {
                dir: dir.to_path_buf(),
                pid: read_holder_pid(&file),
            });
        }
        claim(file, path)
    }

    /// Like [`StateLock::acquire`], but if the lock is held it waits for up to `timeout`. It
    /// tries again after short sleeps that start at 10 ms and grow to 250 ms. If the lock is still
    /// held when the time is up, the result is [`LockError::Timeout`].
    pub fn acquire_wait(dir: &Path, timeout: Duration) -> Result<StateLock, LockError> {
        let (file, path) = open_lock_file(dir)?;
        let start = Instant::now();
        let mut pause = FIRST_POLL;
        loop {
            if try_lock(&file, &path)? {
                return claim(file, path);
            }
            let waited = start.elapsed();
            let Some(left) = timeout.checked_sub(waited).filter(|d| !d.is_zero()) else {
                return Err(LockError::Timeout {
                    dir: dir.to_path_buf(),
                    pid: read_holder_pid(&file),
                    waited,
                });
            };
            std::thread::sleep(pause.min(left));
            pause = (pause * 2).min(MAX_POLL);
        }
    }

    /// Path of the lock file, `<dir>/.lock`.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for StateLock {
    /// Empties the file before the flock goes, so the next waiter never mistakes our PID for
    /// that of a new holder that has not written its own yet. Then unlocks explicitly rather
    /// than by closing: a child process spawned by another thread at that moment holds a copy of
    /// the descriptor until its exec closes it, and the flock (shared by every copy) would stay
    /// held until then, so the next acquire in this process could find it busy.
    fn drop(&mut self) {
        let _ = self.file.set_len(0);
        let _ = self.file.unlock();
    }
}

/// Opens or creates `<dir>/.lock` without truncating it, and refuses anything but a regular file.
///
/// std offers no portable `O_NOFOLLOW` without libc. Instead we lstat the path before opening it,
/// so a symlink is never followed to create a file somewhere else. After opening we compare
/// device and inode with a second lstat, which catches a symlink swapped in between.
fn open_lock_file(dir: &Path) -> Result<(File, PathBuf), LockError> {
    let path = dir.join(LOCK_FILE);
    let io_err = |source| LockError::Io {
        path: path.clone(),
        source,
    };
    match fs::symlink_metadata(&path) {
        Ok(meta) if !meta.file_type().is_file() => return Err(io_err(not_a_regular_file())),
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(e)),
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(LOCK_MODE)
        .open(&path)
        .map_err(io_err)?;
    let opened = file.metadata().map_err(io_err)?;
    let at_path = fs::symlink_metadata(&path).map_err(io_err)?;
    if !opened.file_type().is_file()
        || (opened.dev(), opened.ino()) != (at_path.dev(), at_path.ino())
    {
        return Err(io_err(not_a_regular_file()));
    }
    Ok((file, path))
}

fn not_a_regular_file() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        "the lock file is not a regular file (a symlink or something else is in its place)",
    )
}

/// Tries to take the flock once. Returns `Ok(false)` if someone else holds it.
fn try_lock(file: &File, path: &Path) -> Result<bool, LockError> {
    match file.try_lock() {
        Ok(()) => Ok(true),
        Err(TryLockError::WouldBlock) => Ok(false),
        Err(TryLockError::Error(source)) => Err(LockError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Completes an acquisition: fixes the mode and records our PID. Only a holder gets here, so
/// nobody else's PID is ever overwritten.
fn claim(file: File, path: PathBuf) -> Result<StateLock, LockError> {
    if let Err(source) = write_pid(&file) {
        return Err(LockError::Io { path, source });
    }
    Ok(StateLock { file, path })
}

fn write_pid(file: &File) -> io::Result<()> {
    if file.metadata()?.mode() & 0o7777 != LOCK_MODE {
        file.set_permissions(Permissions::from_mode(LOCK_MODE))?;
    }
    // Write first and truncate after. A waiter that reads in between then sees our PID on the
    // first line, never an empty file, and the reader only looks at the first line.
    let line = format!("{}\n", std::process::id());
    file.write_all_at(line.as_bytes(), 0)?;
    file.set_len(line.len() as u64)?;
    file.sync_all()
}

/// Reads the holder's PID from the first line of the lock file. A new holder writes its PID
/// just after taking the lock, so for a short while the file is empty (released cleanly) or
/// names a process that has died (killed while holding it): then read again, briefly. Best
/// effort, because the PID is only used in an error message.
fn read_holder_pid(file: &File) -> Option<u32> {
    let mut last = None;
    for _ in 0..PID_READ_ATTEMPTS {
        let mut buf = [0u8; PID_READ_LIMIT];
        let n = file.read_at(&mut buf, 0).unwrap_or(0);
        let pid = std::str::from_utf8(&buf[..n])
            .ok()
            .and_then(|t| t.lines().next())
            .and_then(|l| l.trim().parse::<u32>().ok());
        if let Some(pid) = pid {
            if Path::new("/proc").join(pid.to_string()).exists() {
                return Some(pid);
            }
            last = Some(pid);
        }
        std::thread::sleep(PID_READ_PAUSE);
    }
    last
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Child, Command, Stdio};

    fn mode_of(path: &Path) -> u32 {
        fs::symlink_metadata(path).expect("stat").mode() & 0o7777
    }

    /// Kills the child on drop, so a failing test does not leave a process holding the lock.
    struct KillOnDrop(Child);

    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    /// Spawns one process that holds the flock on `lock_path` and has written its PID into it.
    ///
    /// The shell opens the file on fd 9, locks that open file description with flock(1), writes
    /// its own PID and then execs `sleep`. The descriptor survives the exec, so the process we
    /// get back (same PID, no children) is the only holder, and SIGKILL to it releases the lock.
    fn spawn_holder(lock_path: &Path) -> KillOnDrop {
        let child = Command::new("sh")
            .arg("-c")
            .arg(r#"exec 9<>"$0" && flock 9 && printf '%s\n' "$$" >&9 && exec sleep 30"#)
            .arg(lock_path)
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn sh with flock(1)");
        KillOnDrop(child)
    }

    #[test]
    fn second_acquire_in_same_process_is_busy_with_our_pid() {
        let dir = tempfile::tempdir().expect("create temp dir");
        let first = StateLock::acquire(dir.path()).expect("first acquire");
        assert_eq!(first.path(), dir.path().join(LOCK_FILE));
        match StateLock::acquire(dir.path()) {
            Err(LockError::Busy { dir: d, pid }) => {
                assert_eq!(d, dir.path());
                assert_eq!(pid, Some(std::process::id()));
            }
            other => panic!("expected Busy, got {other:?}"),
        }
        drop(first);
        StateLock::acquire(dir.path()).expect("acquire after release");
    }

    #[test]
    fn busy_message_names_dir_and_pid() {
        let err = LockError::Busy {
            dir: PathBuf::from("/var/lib/acme"),
            pid: Some(1234),
        };
        assert_eq!(
            err.to_string(),
            "the state directory /var/lib/acme is locked by another acmekeep process (PID 1234)"
        );
        let err = LockError::Busy {
            dir: PathBuf::from("/var/lib/acme"),
            pid: None,
        };
        assert_eq!(
            err.to_string(),
            "the state directory /var/lib/acme is locked by another acmekeep process"
        );
        let err = LockError::Timeout {
            dir: PathBuf::from("/s"),
            pid: Some(7),
            waited: Duration::from_millis(1500),
        };
        assert_eq!(
            err.to_string(),
            "timed out after 1.5s waiting for the lock on the state directory /s held by PID 7"
        );
    }

    #[test]
    fn lock_file_is_created_0600_with_our_pid() {
        let dir = tempfile::tempdir().expect("create temp dir");
        let lock = StateLock::acquire(dir.path()).expect("acquire");
        assert_eq!(mode_of(lock.path()), 0o600);
        let text = fs::read_to_string(lock.path()).expect("read lock file");
        assert_eq!(text, format!("{}\n", std::process::id()));
    }

    #[test]
    fn wider_lock_file_mode_is_fixed_and_stale_content_replaced() {
        let dir = tempfile::tempdir().expect("create temp dir");
        let path = dir.path().join(LOCK_FILE);
        fs::write(&path, "4294967295\nleftover garbage\n").expect("write");
        fs::set_permissions(&path, Permissions::from_mode(0o666)).expect("chmod");
        let _lock = StateLock::acquire(dir.path()).expect("acquire");
        assert_eq!(mode_of(&path), 0o600);
        assert_eq!(
            fs::read_to_string(&path).expect("read"),
            format!("{}\n", std::process::id())
        );
    }

    #[test]
    fn symlinked_lock_file_is_refused() {
        let dir = tempfile::tempdir().expect("create temp dir");
        let elsewhere = dir.path().join("elsewhere");
        std::os::unix::fs::symlink(&elsewhere, dir.path().join(LOCK_FILE)).expect("symlink");
        match StateLock::acquire(dir.path()) {
            Err(LockError::Io { path, source }) => {
                assert_eq!(path, dir.path().join(LOCK_FILE));
                assert_eq!(source.kind(), io::ErrorKind::InvalidInput);
            }
            other => panic!("expected Io, got {other:?}"),
        }
        assert!(!elsewhere.exists(), "the symlink must not be followed");
    }

    #[test]
    fn missing_state_dir_is_an_io_error() {
        let dir = tempfile::tempdir().expect("create temp dir");
        let missing = dir.path().join("missing");
        match StateLock::acquire(&missing) {
            Err(LockError::Io { source, .. }) => assert_eq!(source.kind(), io::ErrorKind::NotFound),
            other => panic!("expected Io, got {other:?}"),
        }
    }

    #[test]
    fn acquire_wait_times_out_while_held() {
        let dir = tempfile::tempdir().expect("create temp dir");
        let _held = StateLock::acquire(dir.path()).expect("acquire");
        let timeout = Duration::from_millis(120);
        let start = Instant::now();
        match StateLock::acquire_wait(dir.path(), timeout) {
            Err(LockError::Timeout { pid, waited, .. }) => {
                assert_eq!(pid, Some(std::process::id()));
                assert!(waited >= timeout, "waited {waited:?}");
            }
            other => panic!("expected Timeout, got {other:?}"),
        }
        assert!(start.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn a_copy_of_the_descriptor_left_in_a_spawning_child_does_not_keep_the_lock_held() {
        // A child spawned by another thread between fork and exec holds a copy of every
        // descriptor; `cargo test` saw "Busy" on a re-lock in the same process because of it.
        let dir = tempfile::tempdir().expect("tempdir");
        let lock = StateLock::acquire(dir.path()).expect("acquire");
        let inherited = lock.file.try_clone().expect("dup");
        drop(lock);
        StateLock::acquire(dir.path()).expect("the lock is free once its holder is dropped");
        drop(inherited);
    }

    #[test]
    fn acquire_wait_succeeds_when_released_midway() {
        let dir = tempfile::tempdir().expect("create temp dir");
        let held = StateLock::acquire(dir.path()).expect("acquire");
        let releaser = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(150));
            drop(held);
        });
        let start = Instant::now();
        let lock = StateLock::acquire_wait(dir.path(), Duration::from_secs(10))
            .expect("acquire after release");
        let waited = start.elapsed();
        assert!(waited >= Duration::from_millis(100), "waited {waited:?}");
        assert!(waited < Duration::from_secs(5), "waited {waited:?}");
        releaser.join().expect("releaser thread");
        drop(lock);
    }

    #[test]
    fn acquire_wait_with_zero_timeout_is_one_attempt() {
        let dir = tempfile::tempdir().expect("create temp dir");
        StateLock::acquire_wait(dir.path(), Duration::ZERO).expect("free lock");
        let _held = StateLock::acquire(dir.path()).expect("acquire");
        assert!(matches!(
            StateLock::acquire_wait(dir.path(), Duration::ZERO),
            Err(LockError::Timeout { .. })
        ));
    }

    #[test]
    fn lock_held_by_killed_process_is_free_at_once() {
        let dir = tempfile::tempdir().expect("create temp dir");
        // Create the file with our mode first; flock(1) would create it 0666 & umask.
        drop(StateLock::acquire(dir.path()).expect("create lock file"));
        let lock_path = dir.path().join(LOCK_FILE);
        let mut holder = spawn_holder(&lock_path);
        let holder_pid = holder.0.id();

        // Wait until the child holds the lock and has written its PID.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match StateLock::acquire(dir.path()) {
                Err(LockError::Busy { pid: Some(pid), .. }) if pid == holder_pid => break,
                Err(LockError::Busy { .. }) => {}
                // We won the race before the child took it (it waits on flock); let it go.
                Ok(lock) => drop(lock),
                Err(e) => panic!("unexpected error: {e:?}"),
            }
            if let Some(status) = holder.0.try_wait().expect("try_wait") {
                panic!("lock holder exited early: {status}");
            }
            assert!(Instant::now() < deadline, "child never took the lock");
            std::thread::sleep(Duration::from_millis(10));
        }

        // kill -9: no cleanup code runs in the child, the kernel releases the flock.
        holder.0.kill().expect("SIGKILL the holder");
        holder.0.wait().expect("reap the holder");
        let lock = StateLock::acquire(dir.path()).expect("lock is free right after the kill");
        assert_eq!(
            fs::read_to_string(lock.path()).expect("read"),
            format!("{}\n", std::process::id())
        );
        assert_eq!(mode_of(lock.path()), 0o600);
    }
}
