//! Everything acmekeep installs into the operating system, in one place: the renewal job
//! ([`schedule`]: a systemd timer, a cron.d file or a crontab line), the systemd units and their
//! rendering from `contrib/systemd/` ([`units`]), the hooks it ships ([`default_hooks`]), and
//! what the redirector does to stop being root ([`privileges`]).
//!
//! Nothing here decides about certificates, and nothing below `commands` calls in here: these
//! are the commands' (quickstart's and the redirector's) hands on the machine. Every path goes
//! through a [`Root`], which is `/` in production and a temp dir in tests, so the installers are
//! tested on real files without touching the machine.

pub mod default_hooks;
pub mod privileges;
pub mod schedule;
pub mod units;

use std::ffi::{OsStr, OsString};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Every file we write is world-readable, like acmetool's cron file.
const FILE_MODE: u32 = 0o644;
const DIR_MODE: u32 = 0o755;

/// The file system that renewal jobs and units are installed into, and the programs that act on
/// it.
#[derive(Debug, Clone)]
pub struct Root {
    dir: PathBuf,
    /// crontab(1) and the arguments that go before `-l` or `-`, if there is one.
    crontab: Option<(PathBuf, Vec<OsString>)>,
    /// Whether this is the running system, so `systemctl` may be told about new units.
    live: bool,
}

impl Root {
    /// The running system: `/`, the `crontab` program found in `path_var` (the value of `PATH`,
    /// passed in so that nothing here reads the environment), and `systemctl` after units are
    /// written.
    pub fn system(path_var: Option<&OsStr>) -> Root {
        Root {
            dir: PathBuf::from("/"),
            crontab: path_var
                .and_then(|p| find_program(p, "crontab"))
                .map(|program| (program, Vec::new())),
            live: true,
        }
    }

    /// A tree under `dir` (tests, image builds). Every system path is joined under it, crontab(1)
    /// is the tree's own `usr/bin/crontab` if it has one (a link to the real program lets a
    /// test edit a real user's crontab), and `systemctl` is never run.
    pub fn under(dir: impl Into<PathBuf>) -> Root {
        let dir = dir.into();
        let crontab = find_program(dir.join("usr/bin").as_os_str(), "crontab")
            .map(|program| (program, Vec::new()));
        Root {
            dir,
            crontab,
            live: false,
        }
    }

    /// Uses `program` with `leading_args` as crontab(1). Tests pass `/bin/sh` and a fake script,
    /// which avoids executing a file that was just written (ETXTBSY under parallel tests).
    pub fn with_crontab(
        mut self,
        program: impl Into<PathBuf>,
        leading_args: impl IntoIterator<Item = impl Into<OsString>>,
    ) -> Root {
        let args = leading_args.into_iter().map(Into::into).collect();
        self.crontab = Some((program.into(), args));
        self
    }

    /// The directory every system path is joined under.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether there is a crontab(1) to read and write the user's crontab with.
    pub fn has_crontab(&self) -> bool {
        self.crontab.is_some()
    }

    /// `rel` (a system path without its leading `/`) under this root.
    fn join(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    /// The path `path` under this root names on the machine the job runs on: the same path
    /// without the root's directory in front (only tests and image builds have one).
    fn system_path(&self, path: &Path) -> PathBuf {
        match path.strip_prefix(&self.dir) {
            Ok(rel) => Path::new("/").join(rel),
            Err(_) => path.to_owned(),
        }
    }
}

/// The first executable regular file `name` in an absolute directory of `path_var`. Relative
/// entries (including the empty one, which means the current directory) are skipped.
fn find_program(path_var: &OsStr, name: &str) -> Option<PathBuf> {
    std::env::split_paths(path_var)
        .filter(|dir| dir.is_absolute())
        .map(|dir| dir.join(name))
        .find(|p| fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::Permissions;

    #[test]
    fn find_program_searches_absolute_path_entries_for_executables() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (plain, exec) = (dir.path().join("plain"), dir.path().join("exec"));
        for d in [&plain, &exec] {
            fs::create_dir(d).expect("mkdir");
            fs::write(d.join("crontab"), "").expect("write");
        }
        fs::set_permissions(exec.join("crontab"), Permissions::from_mode(0o755)).expect("chmod");
        let path = std::env::join_paths([Path::new("rel"), &plain, &exec]).expect("join");
        assert_eq!(find_program(&path, "crontab"), Some(exec.join("crontab")));
        assert_eq!(find_program(OsStr::new("rel:"), "crontab"), None);
    }
}
