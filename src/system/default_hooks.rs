//! The hooks acmekeep ships (`contrib/hooks/`), and how they are installed.
//!
//! Two POSIX sh scripts are embedded in the binary: `reload`, which reloads the running TLS
//! daemons after `live/` changes, and `haproxy`, which writes combined key + certificate files
//! for daemons that want one PEM file. Their behaviour is documented in the scripts themselves;
//! this module only installs them, following acmetool's rules (spec §4.3) so that an acmetool
//! hooks directory can be taken over as it is:
//!
//! - a missing hook is installed (so a hook the user deleted comes back);
//! - an existing hook is replaced only if its first 4 KiB contain the managed marker
//!   `#!acmetool-managed!#` (the scripts carry `##!acmetool-managed!##`, which contains it);
//! - an empty file means "disabled by the user" and is left alone, as is every other file
//!   without the marker;
//! - the literal `@@ACME_STATE_DIR@@` in a script is replaced by the state directory.
//!
//! Hooks are written atomically with mode 0755 through [`AtomicFs`], so the hook runner never
//! sees a half-written script. Choosing the directory (from `--hooks`) and reporting the
//! results is the caller's business; nothing here reads the environment or prints.

use std::borrow::Cow;
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::files::{AtomicFs, create_dir_all_mode};

/// A hook file containing this string in its first [`MARKER_WINDOW`] bytes belongs to us (or to
/// acmetool) and may be replaced by a newer version.
pub const MANAGED_MARKER: &str = "#!acmetool-managed!#";
/// How much of an existing hook is searched for [`MANAGED_MARKER`], as in acmetool.
pub const MARKER_WINDOW: usize = 4096;
/// Replaced by the state directory when a script is installed.
pub const STATE_DIR_PLACEHOLDER: &str = "@@ACME_STATE_DIR@@";
/// Mode of installed hooks (acmetool §7).
pub const HOOK_MODE: u32 = 0o755;
/// Mode of a hooks directory we have to create.
pub const HOOK_DIR_MODE: u32 = 0o755;
/// Name of the scratch directory used when `tmp_dir` is on another filesystem. It is hidden,
/// so the hook runner skips it.
const FALLBACK_TMP: &str = ".acmekeep-tmp";
/// An existing hook larger than this cannot be one of ours, so reading stops here.
const MAX_COMPARE: u64 = 1 << 20;

/// A hook that acmekeep ships.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HookName {
    /// Reloads the running TLS daemons (`contrib/hooks/reload`).
    Reload,
    /// Writes combined key + certificate files (`contrib/hooks/haproxy`).
    Haproxy,
}

impl HookName {
    /// Every shipped hook. `haproxy` must run before `reload`; the runner sorts by file name,
    /// and so does this list.
    pub const ALL: [HookName; 2] = [HookName::Haproxy, HookName::Reload];

    /// The file name in the hooks directory, which is also acmetool's.
    pub fn file_name(self) -> &'static str {
        match self {
            HookName::Reload => "reload",
            HookName::Haproxy => "haproxy",
        }
    }

    /// The script as shipped, before [`STATE_DIR_PLACEHOLDER`] is replaced.
    pub fn script(self) -> &'static str {
        match self {
            HookName::Reload => include_str!("../../contrib/hooks/reload"),
            HookName::Haproxy => include_str!("../../contrib/hooks/haproxy"),
        }
    }
}

/// What [`install`] did with one hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstallResult {
    /// There was no file; the hook was written.
    Installed,
    /// A managed file with other content was replaced by the current version.
    Updated,
    /// The file already has exactly the current content; it was not touched (its mode neither).
    Unchanged,
    /// The file lacks the managed marker, or is not a regular file (a symlink, for example):
    /// it is the user's and was left alone.
    KeptUserFile,
    /// The file is empty, which is how a user disables a shipped hook; it was left alone.
    KeptDisabled,
}

/// Installs `hook` into the hooks directory `dir`, following acmetool's managed-marker rules
/// (see the module documentation).
///
/// `dir` is created (mode 0755, parents too) if needed. `tmp_dir` is the scratch directory for
/// the atomic write, normally `<state>/tmp`. It must not be `dir` itself: temp files there are
/// not hidden, so the hook runner could run a half-written script. If `tmp_dir` is on another
/// filesystem than `dir`, a hidden scratch directory inside `dir` is used instead.
/// `state_dir` replaces [`STATE_DIR_PLACEHOLDER`] in the script.
pub fn install(
    dir: &Path,
    tmp_dir: &Path,
    hook: HookName,
    state_dir: &Path,
) -> Result<InstallResult> {
    if dir.as_os_str().is_empty() {
        bail!("no hooks directory given");
    }
    if same_dir(dir, tmp_dir) {
        bail!(
            "the scratch directory for hooks must not be the hooks directory {}",
            dir.display()
        );
    }
    let content = render(hook.script(), state_dir)?;
    let path = dir.join(hook.file_name());
    let result = match classify(&path, content.as_bytes())
        .with_context(|| format!("cannot inspect hook {}", path.display()))?
    {
        Existing::Missing => InstallResult::Installed,
        Existing::Managed => InstallResult::Updated,
        Existing::Same => return Ok(InstallResult::Unchanged),
        Existing::Empty => return Ok(InstallResult::KeptDisabled),
        Existing::User => return Ok(InstallResult::KeptUserFile),
    };
    create_dir_all_mode(dir, HOOK_DIR_MODE)
        .with_context(|| format!("cannot create hooks directory {}", dir.display()))?;
    write_hook(dir, tmp_dir, &path, content.as_bytes())
        .with_context(|| format!("cannot write hook {}", path.display()))?;
    Ok(result)
}

/// Installs every shipped hook into `dir` (see [`install`]). It stops at the first error.
pub fn install_all(
    dir: &Path,
    tmp_dir: &Path,
    state_dir: &Path,
) -> Result<Vec<(HookName, InstallResult)>> {
    HookName::ALL
        .iter()
        .map(|&hook| Ok((hook, install(dir, tmp_dir, hook, state_dir)?)))
        .collect()
}

/// Chooses where to install hooks among the configured hook directories: the one with the
/// fewest missing path components, the first on a tie (acmetool's rule). With the defaults
/// `/usr/libexec/acme/hooks` and `/usr/lib/acme/hooks`, that picks `/usr/lib/...` on a system
/// without `/usr/libexec`. `None` if `dirs` is empty.
pub fn preferred_hook_dir(dirs: &[PathBuf]) -> Option<PathBuf> {
    // min_by_key returns the first of several equal minima, which is the tie rule.
    dirs.iter()
        .min_by_key(|dir| missing_components(dir))
        .cloned()
}

/// How many trailing components of `dir` do not exist. Like acmetool, any failure to stat a
/// path counts as missing.
fn missing_components(dir: &Path) -> usize {
    let mut missing = 0;
    let mut current = Some(dir);
    while let Some(path) = current {
        if path.as_os_str().is_empty() || fs::metadata(path).is_ok() {
            break;
        }
        missing += 1;
        current = path.parent();
    }
    missing
}

/// Replaces [`STATE_DIR_PLACEHOLDER`] in `script` with `state_dir`.
///
/// Scripts put the placeholder inside single quotes, so a state directory that is not UTF-8 or
/// that contains a single quote or a newline is refused rather than risk breaking the script.
/// A script without the placeholder is returned as it is, whatever the state directory.
fn render(script: &'static str, state_dir: &Path) -> Result<Cow<'static, str>> {
    if !script.contains(STATE_DIR_PLACEHOLDER) {
        return Ok(Cow::Borrowed(script));
    }
    let Some(dir) = state_dir.to_str() else {
        bail!(
            "state directory {} is not valid UTF-8, so it cannot be written into a hook",
            state_dir.display()
        );
    };
    if dir.contains(['\'', '\n', '\0']) {
        bail!(
            "state directory {} contains a quote or a newline, so it cannot be written into a hook",
            state_dir.display()
        );
    }
    Ok(Cow::Owned(script.replace(STATE_DIR_PLACEHOLDER, dir)))
}

/// What is at a hook's path, as far as the marker rules care.
#[derive(Debug, PartialEq, Eq)]
enum Existing {
    Missing,
    /// Exactly the content we would write.
    Same,
    /// Other content with the managed marker.
    Managed,
    Empty,
    /// Anything else: no marker, or not a regular file.
    User,
}

fn classify(path: &Path, wanted: &[u8]) -> io::Result<Existing> {
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Existing::Missing),
        Err(e) => return Err(e),
    };
    // acmetool follows a symlink here. We never create one, so a link is the user's doing:
    // keep it, whatever it points to.
    if !meta.is_file() {
        return Ok(Existing::User);
    }
    let mut data = Vec::new();
    File::open(path)?.take(MAX_COMPARE).read_to_end(&mut data)?;
    Ok(if data.is_empty() {
        Existing::Empty
    } else if data == wanted {
        Existing::Same
    } else if contains(
        &data[..data.len().min(MARKER_WINDOW)],
        MANAGED_MARKER.as_bytes(),
    ) {
        Existing::Managed
    } else {
        Existing::User
    })
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Writes the hook atomically with [`HOOK_MODE`]. rename(2) cannot cross filesystems, and the
/// hooks directory (under `/usr/lib`) is often not on the state directory's filesystem, so on
/// `EXDEV` we retry through a hidden scratch directory inside the hooks directory.
fn write_hook(dir: &Path, tmp_dir: &Path, path: &Path, content: &[u8]) -> io::Result<()> {
    match AtomicFs::new(tmp_dir).write_file(path, content, HOOK_MODE) {
        Err(e) if e.kind() == io::ErrorKind::CrossesDevices => {
            tracing::debug!(
                tmp = %tmp_dir.display(),
                hook = %path.display(),
                "scratch directory is on another filesystem; using one inside the hooks directory"
            );
            let scratch = dir.join(FALLBACK_TMP);
            create_dir_all_mode(&scratch, 0o700)?;
            let written = AtomicFs::new(&scratch).write_file(path, content, HOOK_MODE);
            // Fails, harmlessly, if another installer is using it at the same moment.
            let _ = fs::remove_dir(&scratch);
            written
        }
        other => other,
    }
}

/// True if `a` and `b` name the same directory, either literally or after resolving links.
fn same_dir(a: &Path, b: &Path) -> bool {
    if a == b {
        return true;
    }
    match (fs::canonicalize(a), fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{PermissionsExt, symlink};
    use std::process::{Command, Output, Stdio};

    fn mode_of(path: &Path) -> u32 {
        fs::metadata(path).expect("stat").permissions().mode() & 0o7777
    }

    /// A hooks directory and a scratch directory on the same filesystem.
    struct Dirs {
        root: tempfile::TempDir,
    }

    impl Dirs {
        fn new() -> Self {
            let root = tempfile::tempdir().expect("create temp dir");
            fs::create_dir(root.path().join("tmp")).expect("mkdir tmp");
            Self { root }
        }
        fn hooks(&self) -> PathBuf {
            self.root.path().join("hooks")
        }
        fn tmp(&self) -> PathBuf {
            self.root.path().join("tmp")
        }
        fn state(&self) -> PathBuf {
            self.root.path().join("state")
        }
        fn install(&self, hook: HookName) -> InstallResult {
            install(&self.hooks(), &self.tmp(), hook, &self.state()).expect("install")
        }
        fn path(&self, hook: HookName) -> PathBuf {
            self.hooks().join(hook.file_name())
        }
        fn put(&self, hook: HookName, content: &str) {
            fs::create_dir_all(self.hooks()).expect("mkdir hooks");
            fs::write(self.path(hook), content).expect("write hook");
        }
        fn read(&self, hook: HookName) -> String {
            fs::read_to_string(self.path(hook)).expect("read hook")
        }
    }

    #[test]
    fn shipped_scripts_are_managed_sh_scripts() {
        for hook in HookName::ALL {
            let script = hook.script();
            assert!(script.starts_with("#!/bin/sh\n"), "{hook:?}");
            assert!(script.contains("##!acmetool-managed!##"), "{hook:?}");
            let window = &script.as_bytes()[..script.len().min(MARKER_WINDOW)];
            assert!(contains(window, MANAGED_MARKER.as_bytes()), "{hook:?}");
        }
    }

    #[test]
    fn hooks_are_listed_in_run_order() {
        let names: Vec<_> = HookName::ALL.iter().map(|h| h.file_name()).collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        assert_eq!(names, sorted);
        assert_eq!(names, ["haproxy", "reload"]);
    }

    #[test]
    fn fresh_install_creates_dir_and_0755_files() {
        let d = Dirs::new();
        for hook in HookName::ALL {
            assert_eq!(d.install(hook), InstallResult::Installed);
            assert_eq!(d.read(hook), hook.script());
            assert_eq!(mode_of(&d.path(hook)), 0o755);
        }
        assert_eq!(mode_of(&d.hooks()), 0o755);
        assert_eq!(fs::read_dir(d.tmp()).expect("read tmp").count(), 0);
    }

    #[test]
    fn fresh_install_creates_missing_parents_0755() {
        let d = Dirs::new();
        let deep = d.root.path().join("usr/lib/acme/hooks");
        let got = install(&deep, &d.tmp(), HookName::Reload, &d.state()).expect("install");
        assert_eq!(got, InstallResult::Installed);
        for p in ["usr", "usr/lib", "usr/lib/acme", "usr/lib/acme/hooks"] {
            assert_eq!(mode_of(&d.root.path().join(p)), 0o755, "{p}");
        }
    }

    #[test]
    fn identical_file_is_unchanged_and_untouched() {
        let d = Dirs::new();
        d.install(HookName::Reload);
        let path = d.path(HookName::Reload);
        // A user who chmods the hook, even with identical content, keeps that mode.
        fs::set_permissions(&path, fs::Permissions::from_mode(0o700)).expect("chmod");
        let inode = |p: &Path| {
            use std::os::unix::fs::MetadataExt;
            fs::metadata(p).expect("stat").ino()
        };
        let before = inode(&path);
        assert_eq!(d.install(HookName::Reload), InstallResult::Unchanged);
        assert_eq!(inode(&path), before);
        assert_eq!(mode_of(&path), 0o700);
    }

    #[test]
    fn managed_older_version_is_updated() {
        let d = Dirs::new();
        // acmetool's own hooks carry the same marker, so they are taken over too.
        d.put(
            HookName::Reload,
            "#!/bin/sh\n##!acmetool-managed!##\nservice nginx reload\n",
        );
        fs::set_permissions(d.path(HookName::Reload), fs::Permissions::from_mode(0o644))
            .expect("chmod");
        assert_eq!(d.install(HookName::Reload), InstallResult::Updated);
        assert_eq!(d.read(HookName::Reload), HookName::Reload.script());
        assert_eq!(mode_of(&d.path(HookName::Reload)), 0o755);
    }

    #[test]
    fn bare_marker_without_extra_hashes_counts() {
        let d = Dirs::new();
        d.put(HookName::Haproxy, "#!/bin/sh\n# #!acmetool-managed!# old\n");
        assert_eq!(d.install(HookName::Haproxy), InstallResult::Updated);
    }

    #[test]
    fn user_file_without_marker_is_kept() {
        let d = Dirs::new();
        let mine = "#!/bin/sh\n# my own reload, marker removed\nsystemctl reload nginx\n";
        d.put(HookName::Reload, mine);
        assert_eq!(d.install(HookName::Reload), InstallResult::KeptUserFile);
        assert_eq!(d.read(HookName::Reload), mine);
    }

    #[test]
    fn marker_after_the_first_4_kib_does_not_count() {
        let d = Dirs::new();
        let late = format!("#!/bin/sh\n{}\n##!acmetool-managed!##\n", "#".repeat(5000));
        d.put(HookName::Reload, &late);
        assert_eq!(d.install(HookName::Reload), InstallResult::KeptUserFile);
        assert_eq!(d.read(HookName::Reload), late);

        // Ending exactly at byte 4096 still counts.
        let pad = MARKER_WINDOW - MANAGED_MARKER.len();
        let edge = format!("{}{MANAGED_MARKER}tail", "x".repeat(pad));
        d.put(HookName::Reload, &edge);
        assert_eq!(d.install(HookName::Reload), InstallResult::Updated);
    }

    #[test]
    fn empty_file_means_disabled() {
        let d = Dirs::new();
        d.put(HookName::Haproxy, "");
        assert_eq!(d.install(HookName::Haproxy), InstallResult::KeptDisabled);
        assert_eq!(d.read(HookName::Haproxy), "");
    }

    #[test]
    fn deleted_hook_is_reinstalled() {
        let d = Dirs::new();
        d.install(HookName::Reload);
        fs::remove_file(d.path(HookName::Reload)).expect("rm");
        assert_eq!(d.install(HookName::Reload), InstallResult::Installed);
    }

    #[test]
    fn symlinks_are_the_users() {
        let d = Dirs::new();
        fs::create_dir_all(d.hooks()).expect("mkdir");
        // Even a link to a managed script, and even a dangling one.
        let managed = d.root.path().join("managed");
        fs::write(&managed, "##!acmetool-managed!##\n").expect("write");
        symlink(&managed, d.path(HookName::Reload)).expect("symlink");
        symlink("nowhere", d.path(HookName::Haproxy)).expect("symlink");
        assert_eq!(d.install(HookName::Reload), InstallResult::KeptUserFile);
        assert_eq!(d.install(HookName::Haproxy), InstallResult::KeptUserFile);
        assert_eq!(
            fs::read_to_string(&managed).expect("read"),
            "##!acmetool-managed!##\n"
        );
    }

    #[test]
    fn install_all_reports_each_hook() {
        let d = Dirs::new();
        d.put(HookName::Reload, "");
        let got = install_all(&d.hooks(), &d.tmp(), &d.state()).expect("install all");
        assert_eq!(
            got,
            [
                (HookName::Haproxy, InstallResult::Installed),
                (HookName::Reload, InstallResult::KeptDisabled),
            ]
        );
    }

    #[test]
    fn scratch_dir_must_not_be_the_hooks_dir() {
        let d = Dirs::new();
        fs::create_dir_all(d.hooks()).expect("mkdir");
        let err =
            install(&d.hooks(), &d.hooks(), HookName::Reload, &d.state()).expect_err("same dir");
        assert!(err.to_string().contains("scratch"), "{err:#}");
        let err =
            install(Path::new(""), &d.tmp(), HookName::Reload, &d.state()).expect_err("empty dir");
        assert!(err.to_string().contains("no hooks directory"), "{err:#}");
    }

    #[test]
    fn scratch_dir_on_another_filesystem_falls_back() {
        use std::os::unix::fs::MetadataExt;
        let d = Dirs::new();
        let shm = Path::new("/dev/shm");
        let Ok(shm_meta) = fs::metadata(shm) else {
            return;
        };
        if shm_meta.dev() == fs::metadata(d.root.path()).expect("stat").dev() {
            return; // no second filesystem to test with
        }
        let other = tempfile::tempdir_in(shm).expect("temp dir in /dev/shm");
        let got = install(&d.hooks(), other.path(), HookName::Reload, &d.state())
            .expect("install across filesystems");
        assert_eq!(got, InstallResult::Installed);
        assert_eq!(d.read(HookName::Reload), HookName::Reload.script());
        assert_eq!(mode_of(&d.path(HookName::Reload)), 0o755);
        assert!(!d.hooks().join(FALLBACK_TMP).exists());
    }

    #[test]
    fn render_replaces_the_state_dir_placeholder() {
        let script = "#!/bin/sh\nSTATE='@@ACME_STATE_DIR@@'\n";
        let got = render(script, Path::new("/var/lib/acme")).expect("render");
        assert_eq!(got, "#!/bin/sh\nSTATE='/var/lib/acme'\n");
        assert!(render(script, Path::new("/var/lib/it's")).is_err());
        assert!(render(script, Path::new("/var/lib/a\nb")).is_err());
        {
            use std::ffi::OsStr;
            use std::os::unix::ffi::OsStrExt;
            assert!(render(script, Path::new(OsStr::from_bytes(b"/var/\xff"))).is_err());
        }
        // No placeholder: any state dir is fine, and the script is used as it is.
        let plain = "#!/bin/sh\n";
        let got = render(plain, Path::new("/it's")).expect("render");
        assert!(matches!(got, Cow::Borrowed(_)));
    }

    #[test]
    fn preferred_hook_dir_fewest_missing_components() {
        let root = tempfile::tempdir().expect("create temp dir");
        let r = root.path();
        fs::create_dir_all(r.join("usr/lib")).expect("mkdir");
        let libexec = r.join("usr/libexec/acme/hooks"); // 3 missing
        let lib = r.join("usr/lib/acme/hooks"); // 2 missing
        assert_eq!(
            preferred_hook_dir(&[libexec.clone(), lib.clone()]),
            Some(lib.clone())
        );
        // Ties go to the first.
        fs::create_dir_all(r.join("usr/libexec")).expect("mkdir");
        assert_eq!(
            preferred_hook_dir(&[libexec.clone(), lib.clone()]),
            Some(libexec.clone())
        );
        assert_eq!(
            preferred_hook_dir(&[lib.clone(), libexec.clone()]),
            Some(lib.clone())
        );
        // An existing dir wins over everything.
        fs::create_dir_all(&lib).expect("mkdir");
        assert_eq!(
            preferred_hook_dir(&[libexec.clone(), lib.clone()]),
            Some(lib)
        );
        assert_eq!(preferred_hook_dir(&[]), None);
    }

    // Shell-level tests of the shipped scripts. Each test runs the embedded script with `sh`
    // in a sandbox: a bin dir with fake `systemctl`/`service` that log their argv, its own
    // config dir, and a clean environment, so nothing on the host is read or touched.

    /// The fake service manager. argv goes to $FAKE_LOG; a service is running if it is listed
    /// in $FAKE_ACTIVE, and its reload fails if it is listed in $FAKE_FAIL.
    const FAKE_MANAGER: &str = r#"#!/bin/sh
echo "$FAKE_TOOL $*" >>"$FAKE_LOG"
if [ "$FAKE_TOOL" = systemctl ]; then
  action=$1
  for unit; do :; done
  svc=${unit%.service}
else
  svc=$1 action=$2
fi
case $action in
is-active | status)
  case " ${FAKE_ACTIVE:-} " in *" $svc "*) exit 0 ;; esac
  exit 3 ;;
try-reload-or-restart | force-reload | kill)
  case " ${FAKE_FAIL:-} " in *" $svc "*) echo "fake: $svc failed" >&2; exit 1 ;; esac
  exit 0 ;;
esac
echo "fake: unexpected call" >&2
exit 99
"#;

    struct Sandbox {
        root: tempfile::TempDir,
    }

    impl Sandbox {
        fn new() -> Self {
            let root = tempfile::tempdir().expect("create temp dir");
            for d in ["bin", "conf", "systemd", "hooks"] {
                fs::create_dir(root.path().join(d)).expect("mkdir");
            }
            let sandbox = Self { root };
            for hook in HookName::ALL {
                fs::write(sandbox.script(hook), hook.script()).expect("write script");
            }
            sandbox
        }
        fn path(&self, rel: &str) -> PathBuf {
            self.root.path().join(rel)
        }
        fn script(&self, hook: HookName) -> PathBuf {
            self.path("hooks").join(hook.file_name())
        }
        /// Puts an executable `name` into the sandbox's bin dir.
        fn fake(&self, name: &str, body: &str) {
            let path = self.path("bin").join(name);
            let script = body.replace("$FAKE_TOOL", name);
            fs::write(&path, script).expect("write fake");
            fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        fn config(&self, text: &str) {
            fs::write(self.path("conf/acme-reload"), text).expect("write config");
        }
        fn log(&self) -> Vec<String> {
            match fs::read_to_string(self.path("log")) {
                Ok(s) => s.lines().map(str::to_owned).collect(),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
                Err(e) => panic!("read log: {e}"),
            }
        }
        fn run(&self, hook: HookName, args: &[&str], stdin: &str, env: &[(&str, &str)]) -> Output {
            // Another test thread may fork while we hold a fake open for writing; exec then
            // fails with ETXTBSY until that child execs. That is a test artefact, so retry.
            for _ in 0..5 {
                let _ = fs::remove_file(self.path("log"));
                let out = self.run_once(hook, args, stdin, env);
                if !String::from_utf8_lossy(&out.stderr).contains("Text file busy") {
                    return out;
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            panic!("fakes stayed busy");
        }
        fn run_once(
            &self,
            hook: HookName,
            args: &[&str],
            stdin: &str,
            env: &[(&str, &str)],
        ) -> Output {
            let mut cmd = Command::new("sh");
            cmd.arg(self.script(hook))
                .args(args)
                .env_clear()
                .env(
                    "PATH",
                    format!("{}:/usr/bin:/bin", self.path("bin").display()),
                )
                .env("ACME_RELOAD_CONFIG_DIRS", self.path("conf"))
                .env("ACME_RELOAD_SYSTEMD_DIR", self.path("systemd"))
                .env("FAKE_LOG", self.path("log"))
                .current_dir("/")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            for (k, v) in env {
                cmd.env(k, v);
            }
            let mut child = cmd.spawn().expect("spawn sh");
            if let Some(mut pipe) = child.stdin.take() {
                use std::io::Write;
                // A hook may exit without reading stdin (reload never reads it); the broken
                // pipe that causes is not the test's concern.
                let _ = pipe.write_all(stdin.as_bytes());
            }
            child.wait_with_output().expect("wait for sh")
        }
    }

    fn stdout(out: &Output) -> String {
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
    fn stderr(out: &Output) -> String {
        String::from_utf8_lossy(&out.stderr).into_owned()
    }
    /// The reload calls in the log, without the status checks.
    fn reloads(log: &[String]) -> Vec<&str> {
        log.iter()
            .map(String::as_str)
            .filter(|l| !l.contains(" is-active ") && !l.ends_with(" status"))
            .collect()
    }

    /// acmetool's 17 names, then the Debian services doc/hooks.md lists, in the hook's order.
    const DEFAULT_SERVICES: &str = "httpd apache2 apache nginx tengine lighttpd postfix dovecot exim exim4 haproxy hitch quassel quasselcore opensmtpd freeswitch apache24 \
        h2o caddy squid nghttpx trafficserver stunnel4 sendmail slapd vsftpd proftpd \
        prosody ejabberd mosquitto coturn postgresql ocserv strongswan ngircd";

    #[test]
    fn reload_ignores_other_events() {
        let s = Sandbox::new();
        s.fake("systemctl", FAKE_MANAGER);
        for args in [
            &[][..],
            &["challenge-http-start", "example.com", "t", "tok"][..],
            &["challenge-dns-start", "example.com", "t", "txt", ""][..],
            &["live-updated-not"][..],
        ] {
            let out = s.run(HookName::Reload, args, "", &[("FAKE_ACTIVE", "nginx")]);
            assert_eq!(out.status.code(), Some(42), "{args:?}: {}", stderr(&out));
            assert!(s.log().is_empty(), "{args:?}: {:?}", s.log());
        }
    }

    #[test]
    fn reload_reloads_only_active_services_once() {
        let s = Sandbox::new();
        s.fake("systemctl", FAKE_MANAGER);
        s.fake("service", FAKE_MANAGER); // must not be used: systemd is running
        let out = s.run(
            HookName::Reload,
            &["live-updated"],
            "example.com\nwww.example.com:alt\n",
            &[("FAKE_ACTIVE", "nginx postfix")],
        );
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert_eq!(stdout(&out), "reloaded nginx\nreloaded postfix\n");
        let log = s.log();
        let checked: Vec<String> = DEFAULT_SERVICES
            .split_whitespace()
            .map(|svc| format!("systemctl is-active --quiet {svc}.service"))
            .collect();
        let got_checks: Vec<&String> = log.iter().filter(|l| l.contains("is-active")).collect();
        assert_eq!(got_checks, checked.iter().collect::<Vec<_>>());
        assert_eq!(
            reloads(&log),
            [
                "systemctl try-reload-or-restart nginx.service",
                "systemctl try-reload-or-restart postfix.service",
            ]
        );
        assert!(!log.iter().any(|l| l.contains("example")), "{log:?}");
    }

    #[test]
    fn reload_config_appends_a_service_and_duplicates_run_once() {
        let s = Sandbox::new();
        s.fake("systemctl", FAKE_MANAGER);
        s.config("SERVICES=\"$SERVICES myapp nginx myapp\"\n");
        let out = s.run(
            HookName::Reload,
            &["live-updated"],
            "example.com\n",
            &[("FAKE_ACTIVE", "nginx myapp")],
        );
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert_eq!(stdout(&out), "reloaded nginx\nreloaded myapp\n");
        let log = s.log();
        assert_eq!(
            reloads(&log),
            [
                "systemctl try-reload-or-restart nginx.service",
                "systemctl try-reload-or-restart myapp.service",
            ]
        );
        let nginx_checks = log.iter().filter(|l| l.contains(" nginx.service")).count();
        assert_eq!(nginx_checks, 2, "one check and one reload: {log:?}");
    }

    #[test]
    fn reload_config_can_replace_the_list() {
        let s = Sandbox::new();
        s.fake("systemctl", FAKE_MANAGER);
        s.config("SERVICES='caddy'\n");
        let out = s.run(
            HookName::Reload,
            &["live-updated"],
            "",
            &[("FAKE_ACTIVE", "nginx caddy")],
        );
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert_eq!(stdout(&out), "reloaded caddy\n");
        assert_eq!(s.log().len(), 2, "{:?}", s.log());
    }

    #[test]
    fn reload_failure_continues_and_exits_non_zero() {
        let s = Sandbox::new();
        s.fake("systemctl", FAKE_MANAGER);
        let out = s.run(
            HookName::Reload,
            &["live-updated"],
            "example.com\n",
            &[
                ("FAKE_ACTIVE", "apache2 nginx postfix"),
                ("FAKE_FAIL", "nginx"),
            ],
        );
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        assert_eq!(stdout(&out), "reloaded apache2\nreloaded postfix\n");
        assert!(
            stderr(&out).contains("failed to reload nginx"),
            "{}",
            stderr(&out)
        );
        assert_eq!(reloads(&s.log()).len(), 3, "{:?}", s.log());
    }

    #[test]
    fn reload_uses_service_without_systemd() {
        let s = Sandbox::new();
        s.fake("systemctl", FAKE_MANAGER); // installed, but systemd is not the running init
        s.fake("service", FAKE_MANAGER);
        let no_systemd = s.path("no-such-dir");
        let out = s.run(
            HookName::Reload,
            &["live-updated"],
            "example.com\n",
            &[
                ("FAKE_ACTIVE", "dovecot"),
                (
                    "ACME_RELOAD_SYSTEMD_DIR",
                    no_systemd.to_str().expect("utf-8"),
                ),
            ],
        );
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert_eq!(stdout(&out), "reloaded dovecot\n");
        let log = s.log();
        assert_eq!(reloads(&log), ["service dovecot force-reload"]);
        assert!(log.contains(&"service nginx status".to_owned()), "{log:?}");
        assert!(!log.iter().any(|l| l.starts_with("systemctl")), "{log:?}");
    }

    #[test]
    fn reload_skips_invalid_service_names() {
        let s = Sandbox::new();
        s.fake("systemctl", FAKE_MANAGER);
        s.config("SERVICES='--all * good'\n");
        let out = s.run(
            HookName::Reload,
            &["live-updated"],
            "",
            &[("FAKE_ACTIVE", "good")],
        );
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert_eq!(stdout(&out), "reloaded good\n");
        assert!(
            stderr(&out).contains("invalid service name"),
            "{}",
            stderr(&out)
        );
        assert!(
            !s.log()
                .iter()
                .any(|l| l.contains('*') || l.contains("--all"))
        );
    }

    #[test]
    fn reload_covers_the_certificate_using_debian_services() {
        // The services a Debian machine runs with certificates that acmetool's list missed
        // (issue: prosody, slapd, vsftpd, postgresql, stunnel4, mosquitto, coturn got no
        // reload). coturn gets SIGUSR2, which reloads its certificates without a restart.
        let s = Sandbox::new();
        s.fake("systemctl", FAKE_MANAGER);
        let running = "prosody slapd vsftpd postgresql stunnel4 mosquitto coturn";
        let out = s.run(
            HookName::Reload,
            &["live-updated"],
            "example.com\n",
            &[("FAKE_ACTIVE", running)],
        );
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let expected: Vec<String> = DEFAULT_SERVICES
            .split_whitespace()
            .filter(|svc| running.split(' ').any(|r| r == *svc))
            .map(|svc| format!("reloaded {svc}\n"))
            .collect();
        assert_eq!(expected.len(), 7, "{DEFAULT_SERVICES}");
        assert_eq!(stdout(&out), expected.concat());
        assert_eq!(
            reloads(&s.log()),
            [
                "systemctl try-reload-or-restart stunnel4.service",
                "systemctl try-reload-or-restart slapd.service",
                "systemctl try-reload-or-restart vsftpd.service",
                "systemctl try-reload-or-restart prosody.service",
                "systemctl try-reload-or-restart mosquitto.service",
                "systemctl kill --kill-who=main --signal=SIGUSR2 coturn.service",
                "systemctl try-reload-or-restart postgresql.service",
            ]
        );
    }

    #[test]
    fn reload_config_can_skip_default_services() {
        let s = Sandbox::new();
        s.fake("systemctl", FAKE_MANAGER);
        s.config("SKIP_SERVICES='slapd  nginx'\nSERVICES=\"$SERVICES myapp\"\n");
        let out = s.run(
            HookName::Reload,
            &["live-updated"],
            "",
            &[("FAKE_ACTIVE", "nginx slapd postfix myapp")],
        );
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert_eq!(stdout(&out), "reloaded postfix\nreloaded myapp\n");
        let log = s.log();
        assert!(
            !log.iter()
                .any(|l| l.contains("slapd") || l.contains("nginx")),
            "skipped services are not even checked: {log:?}"
        );
    }

    #[test]
    fn every_default_reload_service_is_documented() {
        let doc = include_str!("../../doc/hooks.md");
        for svc in DEFAULT_SERVICES.split_whitespace() {
            assert!(
                doc.contains(&format!("`{svc}`")),
                "doc/hooks.md does not list `{svc}`"
            );
        }
    }

    /// A state directory laid out like acmekeep's: live/<name> -> ../certs/<id>.
    fn state_with(s: &Sandbox, names: &[&str], dhparams: bool) -> PathBuf {
        let state = s.path("state");
        for d in ["live", "certs", "conf"] {
            fs::create_dir_all(state.join(d)).expect("mkdir");
        }
        for (i, name) in names.iter().enumerate() {
            let id = format!("cert{i}");
            let cert = state.join("certs").join(&id);
            fs::create_dir(&cert).expect("mkdir cert");
            fs::write(cert.join("privkey"), format!("KEY {name}\n")).expect("write");
            fs::write(cert.join("fullchain"), format!("CHAIN {name}\n")).expect("write");
            symlink(format!("../certs/{id}"), state.join("live").join(name)).expect("link");
        }
        if dhparams {
            fs::write(state.join("conf/dhparams"), "DH\n").expect("write");
        }
        state
    }

    fn run_haproxy(s: &Sandbox, state: &Path, stdin: &str, extra: &[(&str, &str)]) -> Output {
        let mut env: Vec<(&str, &str)> = vec![("ACME_STATE_DIR", state.to_str().expect("utf-8"))];
        env.extend_from_slice(extra);
        s.run(HookName::Haproxy, &["live-updated"], stdin, &env)
    }

    #[test]
    fn haproxy_ignores_other_events() {
        let s = Sandbox::new();
        let state = state_with(&s, &["example.com"], false);
        let env = [("ACME_STATE_DIR", state.to_str().expect("utf-8"))];
        for args in [
            &[][..],
            &["challenge-http-stop", "example.com", "t", "tok"][..],
        ] {
            let out = s.run(HookName::Haproxy, args, "example.com\n", &env);
            assert_eq!(out.status.code(), Some(42), "{args:?}");
        }
        assert!(!state.join("haproxy").exists());
    }

    #[test]
    fn haproxy_requires_the_state_dir() {
        let s = Sandbox::new();
        let out = s.run(
            HookName::Haproxy,
            &["live-updated"],
            "example.com\n",
            &[("HAPROXY_ALWAYS_GENERATE", "1")],
        );
        assert_eq!(out.status.code(), Some(2));
        assert!(stderr(&out).contains("ACME_STATE_DIR"), "{}", stderr(&out));
    }

    #[test]
    fn haproxy_does_nothing_without_a_daemon() {
        let s = Sandbox::new();
        // Whatever the host has installed, no daemon of this name exists.
        s.config("HAPROXY_DAEMONS='acmekeep-test-no-such-daemon'\n");
        let state = state_with(&s, &["example.com"], true);
        let out = run_haproxy(&s, &state, "example.com\n", &[]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert!(!state.join("haproxy").exists());
        assert!(!state.join("live/example.com/haproxy").exists());

        // The config file can force it.
        s.config("HAPROXY_DAEMONS='acmekeep-test-no-such-daemon'\nHAPROXY_ALWAYS_GENERATE=yes\n");
        let out = run_haproxy(&s, &state, "example.com\n", &[]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert!(state.join("live/example.com/haproxy").exists());
    }

    #[test]
    fn haproxy_writes_combined_file_and_link() {
        let s = Sandbox::new();
        s.fake("haproxy", "#!/bin/sh\nexit 0\n"); // found by command -v, never run
        let state = state_with(
            &s,
            &["example.com", "*.wild.example:label", "other.example"],
            true,
        );
        let stdin = "example.com\n*.wild.example:label\nnot-live.example";
        let out = run_haproxy(&s, &state, stdin, &[]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

        for name in ["example.com", "*.wild.example:label"] {
            let file = state.join("live").join(name).join("haproxy");
            assert_eq!(
                fs::read_to_string(&file).expect("read combined"),
                format!("KEY {name}\nCHAIN {name}\nDH\n")
            );
            assert_eq!(mode_of(&file), 0o600, "{name}");
            let link = state.join("haproxy").join(name);
            assert_eq!(
                fs::read_link(&link).expect("readlink"),
                Path::new("../live").join(name).join("haproxy")
            );
            assert_eq!(
                fs::read(&link).expect("read via link"),
                fs::read(&file).expect("read")
            );
        }
        assert_eq!(mode_of(&state.join("haproxy")), 0o755);
        // Not named on stdin, or not in live/: untouched.
        assert!(!state.join("live/other.example/haproxy").exists());
        assert!(!state.join("haproxy/not-live.example").exists());
        // No temp files left next to the combined file.
        let leftovers: Vec<_> = fs::read_dir(state.join("certs/cert0"))
            .expect("read cert dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(leftovers.len(), 3, "{leftovers:?}");
    }

    #[test]
    fn haproxy_without_dhparams_rewrites_and_keeps_link() {
        let s = Sandbox::new();
        let state = state_with(&s, &["example.com"], false);
        let out = run_haproxy(
            &s,
            &state,
            "example.com\n",
            &[("HAPROXY_ALWAYS_GENERATE", "1")],
        );
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let file = state.join("live/example.com/haproxy");
        assert_eq!(
            fs::read_to_string(&file).expect("read"),
            "KEY example.com\nCHAIN example.com\n"
        );

        // A renewal: new content, same link.
        fs::write(state.join("certs/cert0/fullchain"), "CHAIN renewed\n").expect("write");
        let out = run_haproxy(
            &s,
            &state,
            "example.com\n",
            &[("HAPROXY_ALWAYS_GENERATE", "1")],
        );
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert_eq!(
            fs::read_to_string(state.join("haproxy/example.com")).expect("read via link"),
            "KEY example.com\nCHAIN renewed\n"
        );
        assert_eq!(mode_of(&file), 0o600);
    }

    #[test]
    fn haproxy_umask_is_configurable() {
        let s = Sandbox::new();
        let state = state_with(&s, &["example.com"], false);
        s.config("HAPROXY_UMASK=0027\n");
        let out = run_haproxy(
            &s,
            &state,
            "example.com\n",
            &[("HAPROXY_ALWAYS_GENERATE", "1")],
        );
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert_eq!(mode_of(&state.join("live/example.com/haproxy")), 0o640);
    }

    #[test]
    fn haproxy_rejects_names_that_escape_live() {
        let s = Sandbox::new();
        let state = state_with(&s, &["example.com"], false);
        // Targets that would exist if the names were used as paths.
        for dir in ["x", "live/a/b", "live/.hidden"] {
            let d = state.join(dir);
            fs::create_dir_all(&d).expect("mkdir");
            fs::write(d.join("privkey"), "K\n").expect("write");
            fs::write(d.join("fullchain"), "C\n").expect("write");
        }
        let stdin = "../x\na/b\n.hidden\n..\n/etc\nexample.com\nbad name\n$(touch pwned)\n";
        let out = run_haproxy(&s, &state, stdin, &[("HAPROXY_ALWAYS_GENERATE", "1")]);
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        let err = stderr(&out);
        for bad in ["../x", "a/b", ".hidden", "/etc", "bad name"] {
            assert!(
                err.contains(&format!("invalid name \"{bad}\"")),
                "{bad}: {err}"
            );
        }
        for dir in ["x", "live/a/b", "live/.hidden"] {
            assert!(!state.join(dir).join("haproxy").exists(), "{dir}");
        }
        assert!(!Path::new("/pwned").exists());
        // The valid name in the middle is still handled.
        assert!(state.join("live/example.com/haproxy").exists());
        let mut links: Vec<_> = fs::read_dir(state.join("haproxy"))
            .expect("read haproxy dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        links.sort();
        assert_eq!(links, ["example.com"]);
    }
}
