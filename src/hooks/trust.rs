//! Whether a hook may run: could anyone but root (or the user acmekeep runs as) have written
//! it, or put something else in its place?
//!
//! A hook runs with acmekeep's privileges, usually root's. acmetool refused only
//! world-writable hooks and hook directories, which left a hook owned by another user, a
//! group-writable one, or one reached through a directory someone else controls running as
//! root. Here a hook runs only if the file and every directory on the way to it, from `/`
//! down, pass, and so does every symlink on the way (the directory holding the link, then
//! everything on the way to its target):
//!
//! - every file and directory is owned by root or by the running user;
//! - the hook file is not writable by group or others;
//! - a directory is not writable by group or others, unless it is sticky (`/tmp`) and the
//!   entry looked up in it is owned by root or the running user: in a sticky directory only
//!   an entry's owner can rename or remove it, so nobody else can swap it.
//!
//! This is the rule OpenSSH applies to `authorized_keys` and sudo to its plugins. It is
//! checked before each event (a few `lstat`s per hook); everything it passes can only be
//! changed by root or the running user, so the check cannot be raced by anyone else.

use std::ffi::OsString;
use std::fs::{self, Metadata};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

/// Symlinks followed for one path before giving up (Linux's own limit).
const MAX_LINKS: u32 = 40;
const STICKY: u32 = 0o1000;
const GROUP_OR_OTHER_WRITE: u32 = 0o022;

/// Why a path is not trusted: which file or directory, and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{} {reason}", path.display())]
pub struct Untrusted {
    /// The file or directory at fault.
    pub path: PathBuf,
    /// What is wrong, e.g. "is owned by uid 1000" or "is writable by its group".
    pub reason: String,
}

/// Checks that nobody but root and `me` (our effective uid) can change what `path` names;
/// see the module documentation for the rule. `path` is made absolute against the working
/// directory first.
pub fn check(path: &Path, me: u32) -> Result<(), Untrusted> {
    let absolute = std::path::absolute(path).map_err(|e| untrusted(path, &e))?;
    // Names still to resolve, the next one last.
    let mut pending: Vec<OsString> = names(&absolute);
    pending.reverse();
    let mut dir = PathBuf::from("/");
    let mut dir_meta = lstat(&dir)?;
    owned(&dir, &dir_meta, me)?;
    if dir_meta.mode() & GROUP_OR_OTHER_WRITE != 0 && dir_meta.mode() & STICKY == 0 {
        return Err(writable(&dir, &dir_meta));
    }
    let mut links = 0;
    // What the last name resolved to (`None` while a link's target is still to come).
    let mut last: Option<(PathBuf, Metadata)> = None;
    while let Some(name) = pending.pop() {
        if name == ".." {
            // `dir` holds no symlinks, so its parent is its lexical parent.
            dir.pop();
            dir_meta = lstat(&dir)?;
            last = Some((dir.clone(), dir_meta.clone()));
            continue;
        }
        let entry = dir.join(&name);
        let meta = lstat(&entry)?;
        // May anyone else replace `name` in `dir`?
        if dir_meta.mode() & GROUP_OR_OTHER_WRITE != 0 {
            let sticky_and_ours = dir_meta.mode() & STICKY != 0 && owned(&entry, &meta, me).is_ok();
            if !sticky_and_ours {
                return Err(writable(&dir, &dir_meta));
            }
        }
        if meta.file_type().is_symlink() {
            links += 1;
            if links > MAX_LINKS {
                return Err(Untrusted {
                    path: path.to_owned(),
                    reason: format!("goes through more than {MAX_LINKS} symbolic links"),
                });
            }
            let target = fs::read_link(&entry).map_err(|e| untrusted(&entry, &e))?;
            if target.is_absolute() {
                dir = PathBuf::from("/");
                dir_meta = lstat(&dir)?;
            }
            let mut more = names(&target);
            more.reverse();
            pending.extend(more);
            last = None;
            continue;
        }
        owned(&entry, &meta, me)?;
        if meta.is_dir() {
            dir = entry.clone();
            dir_meta = meta.clone();
        } else if !pending.is_empty() {
            return Err(Untrusted {
                path: entry,
                reason: "is not a directory".to_owned(),
            });
        }
        last = Some((entry, meta));
    }
    // The hook itself (or, for a hook directory, the directory itself): nobody else may
    // write to it. A sticky directory is writable, so it is not one to take hooks from.
    match last {
        Some((path, meta)) if meta.mode() & GROUP_OR_OTHER_WRITE != 0 => {
            Err(writable(&path, &meta))
        }
        _ => Ok(()),
    }
}

/// The normal names of `path` (`.` left out, `..` kept), without its root.
fn names(path: &Path) -> Vec<OsString> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_owned()),
            Component::ParentDir => Some(OsString::from("..")),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
        })
        .collect()
}

fn lstat(path: &Path) -> Result<Metadata, Untrusted> {
    fs::symlink_metadata(path).map_err(|e| untrusted(path, &e))
}

fn untrusted(path: &Path, e: &io::Error) -> Untrusted {
    Untrusted {
        path: path.to_owned(),
        reason: format!("cannot be inspected: {e}"),
    }
}

/// Fails unless `meta` (of `path`) is owned by root or `me`.
fn owned(path: &Path, meta: &Metadata, me: u32) -> Result<(), Untrusted> {
    if meta.uid() == 0 || meta.uid() == me {
        return Ok(());
    }
    Err(Untrusted {
        path: path.to_owned(),
        reason: format!(
            "is owned by uid {}, not by root{}",
            meta.uid(),
            if me == 0 {
                String::new()
            } else {
                format!(" or uid {me} (the user acmekeep runs as)")
            }
        ),
    })
}

/// The error for a file or directory writable by its group or others.
fn writable(path: &Path, meta: &Metadata) -> Untrusted {
    let who = match (meta.mode() & 0o020 != 0, meta.mode() & 0o002 != 0) {
        (true, true) => "its group and by everyone",
        (true, false) => "its group",
        _ => "everyone",
    };
    Untrusted {
        path: path.to_owned(),
        reason: format!(
            "is writable by {who} (mode {:04o}); only root or the user acmekeep runs as may be able to change a hook (chmod go-w)",
            meta.mode() & 0o7777
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{PermissionsExt, chown, symlink};

    fn chmod(path: &Path, mode: u32) {
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
    }

    fn me() -> u32 {
        nix::unistd::geteuid().as_raw()
    }

    /// A root-owned (or our own) tree: <tmp>/dir/hook.
    fn tree() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("dir");
        fs::create_dir(&dir).expect("mkdir");
        chmod(&dir, 0o755);
        let hook = dir.join("hook");
        fs::write(&hook, "#!/bin/sh\n").expect("write");
        chmod(&hook, 0o755);
        (tmp, dir, hook)
    }

    #[test]
    fn a_hook_only_root_or_we_can_change_passes() {
        let (_tmp, dir, hook) = tree();
        assert_eq!(check(&hook, me()), Ok(()));
        assert_eq!(check(&dir, me()), Ok(()));
        // Through a link in a safe directory to a safe file.
        let link = dir.join("link");
        symlink("hook", &link).expect("symlink");
        assert_eq!(check(&link, me()), Ok(()));
        let dotted = dir.join("../dir/./hook");
        assert_eq!(check(&dotted, me()), Ok(()));
    }

    #[test]
    fn group_or_world_writable_hooks_and_directories_fail() {
        let (_tmp, dir, hook) = tree();
        chmod(&hook, 0o775);
        let err = check(&hook, me()).expect_err("group-writable hook");
        assert_eq!(err.path, hook);
        assert!(err.reason.contains("writable by its group"), "{err}");
        chmod(&hook, 0o755);

        chmod(&dir, 0o775);
        let err = check(&hook, me()).expect_err("group-writable dir");
        assert_eq!(err.path, dir);
        chmod(&dir, 0o757);
        assert!(check(&hook, me()).is_err(), "world-writable dir");
        assert!(check(&dir, me()).is_err(), "the dir itself");
    }

    #[test]
    fn a_sticky_directory_passes_only_for_entries_root_or_we_own() {
        let (_tmp, dir, hook) = tree();
        chmod(&dir, 0o1777);
        assert_eq!(check(&hook, me()), Ok(()), "our own entry in a sticky dir");
        if me() != 0 {
            return; // Only root can give a file away.
        }
        chown(&hook, Some(65534), None).expect("chown");
        let err = check(&hook, me()).expect_err("someone else's entry");
        assert_eq!(err.path, dir);
    }

    #[test]
    fn links_are_checked_where_they_lead_and_where_they_are() {
        let (tmp, dir, hook) = tree();
        // A link in a safe directory into a group-writable one.
        let open = tmp.path().join("open");
        fs::create_dir(&open).expect("mkdir");
        chmod(&open, 0o775);
        let planted = open.join("planted");
        fs::write(&planted, "#!/bin/sh\n").expect("write");
        chmod(&planted, 0o755);
        symlink(&planted, dir.join("via-link")).expect("symlink");
        let err = check(&dir.join("via-link"), me()).expect_err("target dir writable");
        assert_eq!(err.path, open);
        // A relative link leaving through `..`.
        symlink("../open/planted", dir.join("relative")).expect("symlink");
        assert_eq!(
            check(&dir.join("relative"), me())
                .expect_err("relative")
                .path,
            open
        );
        // A link that lives in the group-writable directory, to a safe file.
        symlink(&hook, open.join("to-hook")).expect("symlink");
        assert_eq!(
            check(&open.join("to-hook"), me())
                .expect_err("link's dir")
                .path,
            open
        );
        // Loops end.
        symlink("loop-b", dir.join("loop-a")).expect("symlink");
        symlink("loop-a", dir.join("loop-b")).expect("symlink");
        assert!(check(&dir.join("loop-a"), me()).is_err());
    }

    #[test]
    fn files_of_other_users_fail() {
        if me() != 0 {
            return; // Only root can give a file away.
        }
        let (_tmp, dir, hook) = tree();
        chown(&hook, Some(65534), None).expect("chown");
        let err = check(&hook, me()).expect_err("nobody's hook");
        assert!(err.reason.contains("owned by uid 65534"), "{err}");
        chown(&hook, Some(0), None).expect("chown");
        chown(&dir, Some(65534), None).expect("chown");
        assert_eq!(check(&hook, me()).expect_err("nobody's dir").path, dir);
    }
}
