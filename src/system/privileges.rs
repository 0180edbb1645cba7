//! Giving up root: the redirector binds port 80 as root when it must, then switches for good to
//! an unprivileged user and group ([`resolve_identity`], [`drop_privileges`]), after optionally
//! handing the challenge directory to a group that may write into it
//! ([`share_challenge_dir`]). Names are resolved through NSS (`getpwnam`/`getgrnam`, via nix),
//! as the rest of the system resolves them.

use std::fs::File;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};
use nix::unistd::{Gid, Uid};

/// The user and group the daemon switches to when started as root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// For messages.
    pub name: String,
    pub uid: Uid,
    pub gid: Gid,
}

/// Why an identity is unusable; all are configuration errors.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("no such user {0:?}")]
    NoSuchUser(String),
    #[error("no such group {0:?}")]
    NoSuchGroup(String),
    #[error("uid {0} has no passwd entry, so its group is unknown; give --group")]
    NoPrimaryGroup(u32),
    #[error("refusing to run as {0}: name an unprivileged user and group")]
    Privileged(String),
    #[error("looking up {0:?}: {1}")]
    Lookup(String, nix::Error),
}

/// Resolves `--group`/`--challenge-gid`: a name or a number.
pub fn resolve_group(spec: &str) -> Result<Gid, IdentityError> {
    if !spec.is_empty() && spec.bytes().all(|b| b.is_ascii_digit()) {
        return spec
            .parse::<u32>()
            .map(Gid::from_raw)
            .map_err(|_| IdentityError::NoSuchGroup(spec.to_owned()));
    }
    match nix::unistd::Group::from_name(spec) {
        Ok(Some(g)) => Ok(g.gid),
        Ok(None) => Err(IdentityError::NoSuchGroup(spec.to_owned())),
        Err(e) => Err(IdentityError::Lookup(spec.to_owned(), e)),
    }
}

/// Resolves `--user` (name or number) and `--group` (default: the user's primary group).
/// Root, uid 0 under another name, and group 0 are refused.
pub fn resolve_identity(user: &str, group: Option<&str>) -> Result<Identity, IdentityError> {
    let numeric = !user.is_empty() && user.bytes().all(|b| b.is_ascii_digit());
    let entry = if numeric {
        let uid = user
            .parse::<u32>()
            .map_err(|_| IdentityError::NoSuchUser(user.to_owned()))?;
        nix::unistd::User::from_uid(Uid::from_raw(uid))
            .map_err(|e| IdentityError::Lookup(user.to_owned(), e))?
            .map(|u| (u.name, u.uid, Some(u.gid)))
            .unwrap_or((user.to_owned(), Uid::from_raw(uid), None))
    } else {
        let u = nix::unistd::User::from_name(user)
            .map_err(|e| IdentityError::Lookup(user.to_owned(), e))?
            .ok_or_else(|| IdentityError::NoSuchUser(user.to_owned()))?;
        (u.name, u.uid, Some(u.gid))
    };
    let (name, uid, primary) = entry;
    let gid = match group {
        Some(g) => resolve_group(g)?,
        None => primary.ok_or(IdentityError::NoPrimaryGroup(uid.as_raw()))?,
    };
    if uid.is_root() {
        return Err(IdentityError::Privileged(format!("user {name} (uid 0)")));
    }
    if gid.as_raw() == 0 {
        return Err(IdentityError::Privileged("group 0".to_owned()));
    }
    Ok(Identity { name, uid, gid })
}

/// Whether the process runs as root (effective uid 0) and so must drop privileges.
pub fn running_as_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Switches to `id` for good: no supplementary groups, then real, effective and saved gid,
/// then uid (in that order: after the uid changes, the gid can no longer be changed). Then
/// checks the result and that neither uid 0 nor gid 0 can be regained.
pub fn drop_privileges(id: &Identity) -> Result<()> {
    use nix::unistd::{
        getgroups, getresgid, getresuid, setgid, setgroups, setresgid, setresuid, setuid,
    };
    setgroups(&[]).context("clearing the supplementary groups")?;
    setresgid(id.gid, id.gid, id.gid).with_context(|| format!("switching to gid {}", id.gid))?;
    setresuid(id.uid, id.uid, id.uid)
        .with_context(|| format!("switching to user {} (uid {})", id.name, id.uid))?;
    let uids = getresuid().context("reading the uids back")?;
    let gids = getresgid().context("reading the gids back")?;
    let groups = getgroups().context("reading the groups back")?;
    if [uids.real, uids.effective, uids.saved] != [id.uid; 3]
        || [gids.real, gids.effective, gids.saved] != [id.gid; 3]
        || groups.iter().any(|g| *g != id.gid)
    {
        bail!("privileges were not dropped: uids {uids:?}, gids {gids:?}, groups {groups:?}");
    }
    if setuid(Uid::from_raw(0)).is_ok() || setgid(Gid::from_raw(0)).is_ok() {
        bail!("privileges were not dropped: root could be regained");
    }
    Ok(())
}

/// `--challenge-gid`: gives `gid` the challenge directory and adds group rwx, without
/// following a symlink (the directory is opened `O_NOFOLLOW`, then changed through the open
/// descriptor). A missing directory is left alone (reconcile creates it).
pub fn share_challenge_dir(dir: &Path, gid: Gid) -> Result<bool> {
    use std::os::unix::fs::PermissionsExt;
    let f = match File::options()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_DIRECTORY)
        .open(dir)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) if e.raw_os_error() == Some(nix::libc::ELOOP) => {
            bail!(
                "{} is a symlink; --challenge-gid does not follow it",
                dir.display()
            )
        }
        Err(e) => return Err(anyhow!(e).context(format!("opening {}", dir.display()))),
    };
    std::os::unix::fs::fchown(&f, None, Some(gid.as_raw()))
        .with_context(|| format!("changing the group of {} to {gid}", dir.display()))?;
    let mode = f
        .metadata()
        .with_context(|| format!("reading {}", dir.display()))?
        .permissions()
        .mode();
    f.set_permissions(std::fs::Permissions::from_mode((mode & 0o7777) | 0o070))
        .with_context(|| format!("making {} group-writable", dir.display()))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_identities_and_refuses_root() {
        assert!(matches!(
            resolve_identity("root", None),
            Err(IdentityError::Privileged(_))
        ));
        assert!(matches!(
            resolve_identity("0", Some("65534")),
            Err(IdentityError::Privileged(_))
        ));
        assert!(matches!(
            resolve_identity("65534", Some("0")),
            Err(IdentityError::Privileged(_))
        ));
        assert!(matches!(
            resolve_identity("no-such-user-acmekeep", None),
            Err(IdentityError::NoSuchUser(_))
        ));
        assert!(matches!(
            resolve_group("no-such-group-acmekeep"),
            Err(IdentityError::NoSuchGroup(_))
        ));
        assert_eq!(resolve_group("4242").expect("numeric"), Gid::from_raw(4242));
        // A uid without a passwd entry needs an explicit group.
        assert!(matches!(
            resolve_identity("4242424", None),
            Err(IdentityError::NoPrimaryGroup(4242424))
        ));
        let id = resolve_identity("4242424", Some("4242")).expect("numeric ids");
        assert_eq!((id.uid.as_raw(), id.gid.as_raw()), (4242424, 4242));
        if let Ok(Some(nobody)) = nix::unistd::User::from_name("nobody") {
            let id = resolve_identity("nobody", None).expect("nobody");
            assert_eq!((id.uid, id.gid), (nobody.uid, nobody.gid));
        }
    }

    #[test]
    fn share_challenge_dir_refuses_symlinks_and_skips_missing_dirs() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().expect("tempdir");
        let real = d.path().join("real");
        std::fs::create_dir(&real).expect("mkdir");
        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let link = d.path().join("link");
        std::os::unix::fs::symlink(&real, &link).expect("symlink");
        let gid = nix::unistd::getegid();
        assert!(!share_challenge_dir(&d.path().join("missing"), gid).expect("missing is fine"));
        assert!(share_challenge_dir(&link, gid).is_err());
        assert_eq!(
            std::fs::metadata(&real).expect("stat").permissions().mode() & 0o777,
            0o755,
            "the symlink's target was changed"
        );
        assert!(share_challenge_dir(&real, gid).expect("own dir"));
        assert_eq!(
            std::fs::metadata(&real).expect("stat").permissions().mode() & 0o777,
            0o775
        );
    }
}
