//! Which program the renewal job runs. A job that names a Cargo build tree stops renewing at
//! the next `cargo clean`; one in /tmp at the next reboot; one in a home directory when that
//! directory is tidied. So the job names the installed copy, `/usr/bin/acmekeep` (the Debian
//! package) or `/usr/local/bin/acmekeep`, when that file is this very program (the same file,
//! or the same bytes); else the running program's own path, which is fine when it is
//! anywhere but those places. Where it is not, quickstart says so and, without a terminal,
//! refuses unless told to accept the path.

use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::system::Root;

/// Where an installed acmekeep lives, most preferred first.
const INSTALLED: &[&str] = &["usr/bin/acmekeep", "usr/local/bin/acmekeep"];
/// Directories whose contents may vanish at any reboot or cleanup.
const TEMP_DIRS: &[&str] = &["/tmp", "/var/tmp", "/dev/shm"];
/// Per-user program directories, relative to a home directory: a program a user put there on
/// purpose (`cargo install` puts it in the last) is an installed copy.
const HOME_BIN_DIRS: &[&str] = &["bin", ".local/bin", ".cargo/bin"];

/// Why the running program is not an installed copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transient {
    /// Under a Cargo target directory (`target_dir`).
    BuildTree { target_dir: PathBuf },
    /// Under a temporary directory.
    TempDir { dir: PathBuf },
    /// In a home directory, outside its program directories.
    HomeDir { home: PathBuf },
}

impl fmt::Display for Transient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Transient::BuildTree { target_dir } => write!(
                f,
                "in a Cargo build tree ({}), so a scheduled job running it stops renewing at the next `cargo clean`",
                target_dir.display()
            ),
            Transient::TempDir { dir } => write!(
                f,
                "in the temporary directory {}, which may be emptied at any reboot",
                dir.display()
            ),
            Transient::HomeDir { home } => write!(
                f,
                "in the home directory {}, outside its bin directories, so a scheduled job running it stops renewing when it is moved or tidied away",
                home.display()
            ),
        }
    }
}

/// The program the job should run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Program {
    /// Its absolute path as the job names it.
    pub path: PathBuf,
    /// `None` for an installed copy; otherwise why it is not one.
    pub transient: Option<Transient>,
    /// An installed acmekeep that is another build than this one, for the message.
    pub other_installed: Option<PathBuf>,
}

impl Program {
    /// Whether the path is an installed copy.
    pub fn is_installed(&self) -> bool {
        self.transient.is_none()
    }

    /// What is wrong with the path, in a sentence; `None` for an installed copy.
    pub fn problem(&self) -> Option<String> {
        let why = self.transient.as_ref()?;
        let mut s = format!("This program, {}, is {why}.", self.path.display());
        if let Some(other) = &self.other_installed {
            s.push_str(&format!(
                " {} is another build; run its quickstart to schedule it instead.",
                other.display()
            ));
        }
        Some(s)
    }
}

/// Finds the program for the job. `exe` is the running program (`std::env::current_exe`),
/// `home` the user's home directory and `temp` the temporary directory (`$HOME`, `$TMPDIR`),
/// passed in so that nothing here reads the environment. Installed copies are looked for
/// under `root`, and named as the machine sees them.
pub fn locate(root: &Root, exe: &Path, home: Option<&Path>, temp: Option<&Path>) -> Program {
    let mut other_installed = None;
    for rel in INSTALLED {
        let candidate = root.join(rel);
        match same_program(&candidate, exe) {
            Ok(true) => {
                return Program {
                    path: root.system_path(&candidate),
                    transient: None,
                    other_installed: None,
                };
            }
            Ok(false) => {
                other_installed.get_or_insert_with(|| root.system_path(&candidate));
            }
            Err(_) => {}
        }
    }
    let transient = transient(exe, home, temp);
    Program {
        path: exe.to_owned(),
        other_installed: other_installed.filter(|_| transient.is_some()),
        transient,
    }
}

/// Whether `candidate` is the program `exe`: the same file (device and inode, following
/// links), or a file with the same bytes (a copy installed from the same build). An error if
/// `candidate` cannot be read.
fn same_program(candidate: &Path, exe: &Path) -> io::Result<bool> {
    let (a, b) = (fs::metadata(candidate)?, fs::metadata(exe)?);
    if !a.is_file() {
        return Err(io::Error::other("not a file"));
    }
    if (a.dev(), a.ino()) == (b.dev(), b.ino()) {
        return Ok(true);
    }
    if a.len() != b.len() {
        return Ok(false);
    }
    same_bytes(File::open(candidate)?, File::open(exe)?)
}

fn same_bytes(mut a: File, mut b: File) -> io::Result<bool> {
    let mut buf_a = vec![0u8; 64 * 1024];
    let mut buf_b = vec![0u8; 64 * 1024];
    loop {
        let n = read_full(&mut a, &mut buf_a)?;
        let m = read_full(&mut b, &mut buf_b)?;
        if n != m || buf_a[..n] != buf_b[..m] {
            return Ok(false);
        }
        if n == 0 {
            return Ok(true);
        }
    }
}

/// Reads until `buf` is full or the file ends.
fn read_full(f: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match f.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

/// Why `exe` is not an installed copy, if it is not: a build tree first (the most specific),
/// then a temporary directory, then a home directory outside its bin directories.
fn transient(exe: &Path, home: Option<&Path>, temp: Option<&Path>) -> Option<Transient> {
    if let Some(target_dir) = exe.ancestors().skip(1).find(|d| is_cargo_target_dir(d)) {
        return Some(Transient::BuildTree {
            target_dir: target_dir.to_owned(),
        });
    }
    let temps = TEMP_DIRS
        .iter()
        .map(Path::new)
        .chain(temp.filter(|t| t.is_absolute() && *t != Path::new("/")));
    for dir in temps {
        if exe.starts_with(dir) {
            return Some(Transient::TempDir {
                dir: dir.to_owned(),
            });
        }
    }
    let home = home_of(exe, home)?;
    let in_bin = HOME_BIN_DIRS
        .iter()
        .any(|bin| exe.parent() == Some(home.join(bin).as_path()));
    (!in_bin).then_some(Transient::HomeDir { home })
}

/// The home directory `exe` is in: `$HOME`, or one under /home, or /root.
fn home_of(exe: &Path, home: Option<&Path>) -> Option<PathBuf> {
    if let Some(home) = home.filter(|h| h.is_absolute() && *h != Path::new("/"))
        && exe.starts_with(home)
    {
        return Some(home.to_owned());
    }
    if let Ok(rest) = exe.strip_prefix("/home") {
        let user = rest.components().next()?;
        return Some(Path::new("/home").join(user));
    }
    exe.starts_with("/root").then(|| PathBuf::from("/root"))
}

/// Cargo marks its target directory with `CACHEDIR.TAG` and `.rustc_info.json`.
fn is_cargo_target_dir(dir: &Path) -> bool {
    dir.join(".rustc_info.json").is_file()
        || fs::read(dir.join("CACHEDIR.TAG")).is_ok_and(|t| t.windows(5).any(|w| w == b"cargo"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exe_in(dir: &Path, content: &[u8]) -> PathBuf {
        fs::create_dir_all(dir).expect("mkdir");
        let path = dir.join("acmekeep");
        fs::write(&path, content).expect("write");
        path
    }

    #[test]
    fn the_installed_copy_is_named_when_it_is_this_program() {
        let d = tempfile::tempdir().expect("tempdir");
        let root = Root::under(d.path().join("root"));
        let build = d.path().join("src/target/release");
        let exe = exe_in(&build, b"program v2");
        fs::write(
            build.parent().expect("target").join(".rustc_info.json"),
            "{}",
        )
        .expect("tag");
        let home = Some(Path::new("/home/nobody"));

        // Nothing installed: the build tree is named, and it is transient.
        let p = locate(&root, &exe, home, None);
        assert_eq!(p.path, exe);
        assert!(
            matches!(p.transient, Some(Transient::BuildTree { .. })),
            "{p:?}"
        );
        assert!(p.problem().expect("a problem").contains("cargo clean"));

        // Another build installed: still the build tree, and the message names the other.
        let usr_local = exe_in(&root.join("usr/local/bin"), b"program v1");
        let p = locate(&root, &exe, home, None);
        assert_eq!(p.path, exe);
        assert_eq!(
            p.other_installed,
            Some(PathBuf::from("/usr/local/bin/acmekeep"))
        );
        assert!(
            p.problem()
                .expect("a problem")
                .contains("/usr/local/bin/acmekeep")
        );

        // A copy of the same bytes: the installed path, as the machine names it.
        fs::write(&usr_local, b"program v2").expect("same bytes");
        let p = locate(&root, &exe, home, None);
        assert_eq!(p.path, Path::new("/usr/local/bin/acmekeep"));
        assert!(p.is_installed() && p.problem().is_none());

        // The same file through a link in /usr/bin wins over /usr/local/bin.
        fs::create_dir_all(root.join("usr/bin")).expect("mkdir");
        std::os::unix::fs::symlink(&exe, root.join("usr/bin/acmekeep")).expect("link");
        fs::write(&usr_local, b"program v1").expect("other again");
        let p = locate(&root, &exe, home, None);
        assert_eq!(p.path, Path::new("/usr/bin/acmekeep"));
    }

    #[test]
    fn transient_places_are_told_apart() {
        let home = Some(Path::new("/home/ann"));
        let cases: &[(&str, Option<&str>)] = &[
            ("/usr/bin/acmekeep", None),
            ("/opt/acmekeep/bin/acmekeep", None),
            ("/tmp/x/acmekeep", Some("temp")),
            ("/var/tmp/acmekeep", Some("temp")),
            ("/scratch/t/acmekeep", Some("temp")),
            ("/home/ann/acmekeep", Some("home")),
            ("/home/ann/Downloads/acmekeep", Some("home")),
            ("/home/bob/acmekeep", Some("home")),
            ("/root/acmekeep", Some("home")),
            ("/home/ann/.cargo/bin/acmekeep", None),
            ("/home/ann/.local/bin/acmekeep", None),
            ("/home/ann/bin/acmekeep", None),
            ("/root/.cargo/bin/acmekeep", None),
        ];
        for (path, want) in cases {
            let got = transient(Path::new(path), home, Some(Path::new("/scratch")));
            let kind = got.as_ref().map(|t| match t {
                Transient::BuildTree { .. } => "build",
                Transient::TempDir { .. } => "temp",
                Transient::HomeDir { .. } => "home",
            });
            assert_eq!(kind, *want, "{path}");
        }
    }

    #[test]
    fn a_cargo_target_dir_is_recognised_by_its_tag() {
        let d = tempfile::tempdir().expect("tempdir");
        let target = d.path().join("elsewhere");
        let exe = exe_in(&target.join("debug"), b"x");
        let temp = std::env::temp_dir();
        assert!(
            matches!(
                transient(&exe, None, Some(&temp)),
                Some(Transient::TempDir { .. })
            ),
            "without the tag, only the temporary directory counts"
        );
        fs::write(
            target.join("CACHEDIR.TAG"),
            "Signature: 8a477f597d28d172789f06886806bc55\n# This file is a cache directory tag created by cargo.\n",
        )
        .expect("tag");
        assert_eq!(
            transient(&exe, None, None),
            Some(Transient::BuildTree { target_dir: target })
        );
    }
}
