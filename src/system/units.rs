//! The systemd units acmekeep installs, rendered from the templates in `contrib/systemd/` (the
//! one source of their text: `acmekeep.service` and `acmekeep.timer` for the renewal job, whose
//! values come from [`super::schedule`], and `acmekeep-redirector.service`), and installing a
//! unit that runs all the time.
//!
//! Rendering is pure: `render` drops the templates' `#@` note lines and fills in `@NAME@`
//! placeholders in one pass. Values are quoted for systemd by whoever makes them (the renewal
//! job's paths are validated to need no quoting; the redirector's are quoted by
//! `systemd_word`).

use std::ffi::{OsStr, OsString};
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

use super::{DIR_MODE, FILE_MODE, Root};
use crate::files::{AtomicFs, create_dir_all_mode};

/// The renewal job's unit templates; see the `#@` notes at the top of each.
pub(super) const SERVICE_TEMPLATE: &str = include_str!("../../contrib/systemd/acmekeep.service");
pub(super) const TIMER_TEMPLATE: &str = include_str!("../../contrib/systemd/acmekeep.timer");
/// The redirector's unit template.
const REDIRECTOR_TEMPLATE: &str = include_str!("../../contrib/systemd/acmekeep-redirector.service");
/// The redirector unit's file name.
pub const REDIRECTOR_UNIT: &str = "acmekeep-redirector.service";

// System paths, relative to the root.
/// sd_booted(3): this directory exists only when systemd is PID 1.
pub(super) const SD_BOOTED_DIR: &str = "run/systemd/system";
/// Where an administrator's units live (packaged ones live in /usr/lib and are never touched).
pub(super) const UNIT_DIR: &str = "etc/systemd/system";
pub(super) const TIMERS_WANTS_DIR: &str = "etc/systemd/system/timers.target.wants";

/// Fills in a template: drops the `#@` note lines and replaces each `@NAME@` with its value in a
/// single pass, so a value (a path may contain `@`) is never itself searched for placeholders.
/// An `@` that starts no known placeholder is kept as it is.
pub(super) fn render(template: &str, vars: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(template.len() + 256);
    for line in template.split_inclusive('\n') {
        if line.starts_with("#@") {
            continue;
        }
        let mut rest = line;
        while let Some(at) = rest.find('@') {
            out.push_str(&rest[..at]);
            let after = &rest[at + 1..];
            let var = vars.iter().find_map(|&(name, value)| {
                let tail = after.strip_prefix(name)?.strip_prefix('@')?;
                Some((value, tail))
            });
            match var {
                Some((value, tail)) => {
                    out.push_str(value);
                    rest = tail;
                }
                None => {
                    out.push('@');
                    rest = after;
                }
            }
        }
        out.push_str(rest);
    }
    out
}

/// One word of a systemd command line: bare if it has only inert characters, else
/// double-quoted with C escapes, and `%` and `$` doubled so systemd substitutes nothing.
/// Works on bytes, so a non-UTF-8 path survives as `\xNN`.
fn systemd_word(word: &OsStr) -> String {
    let bytes = word.as_bytes();
    let inert = |b: u8| b.is_ascii_alphanumeric() || b"/._-+,=:@".contains(&b);
    if !bytes.is_empty() && bytes.iter().all(|&b| inert(b)) {
        return String::from_utf8_lossy(bytes).into_owned();
    }
    let mut out = String::from("\"");
    for &b in bytes {
        match b {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            b'%' => out.push_str("%%"),
            b'$' => out.push_str("$$"),
            b' '..=b'~' => out.push(char::from(b)),
            _ => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    out.push('"');
    out
}

/// The systemd unit `acmekeep quickstart` installs as [`REDIRECTOR_UNIT`], from
/// `contrib/systemd/acmekeep-redirector.service`: `@EXEC_START@` becomes
/// `<exe> redirector [--path=<path>]`, each word quoted for systemd.
pub fn redirector_unit(exe: &Path, path: Option<&Path>) -> String {
    let mut words = vec![systemd_word(exe.as_os_str()), "redirector".to_owned()];
    if let Some(p) = path {
        let mut arg = OsString::from("--path=");
        arg.push(p.as_os_str());
        words.push(systemd_word(&arg));
    }
    render(REDIRECTOR_TEMPLATE, &[("EXEC_START", &words.join(" "))])
}

/// Installs a service unit that runs all the time (the redirector): written atomically to
/// /etc/systemd/system (mode 0644), enabled for `multi-user.target` with a link as
/// `systemctl enable` makes, and on the running system reloaded and started. An existing unit
/// of that name is replaced only if its content differs.
pub fn install_service(root: &Root, name: &str, text: &str) -> Result<PathBuf> {
    if name.contains('/') || !name.ends_with(".service") {
        bail!("{name} is not a service unit name");
    }
    let unit_dir = root.join(UNIT_DIR);
    create_dir_all_mode(&unit_dir, DIR_MODE)
        .with_context(|| format!("creating {}", unit_dir.display()))?;
    let path = unit_dir.join(name);
    if fs::read_to_string(&path).ok().as_deref() != Some(text) {
        AtomicFs::new(&unit_dir)
            .write_file(&path, text.as_bytes(), FILE_MODE)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let wants_dir = unit_dir.join("multi-user.target.wants");
    create_dir_all_mode(&wants_dir, DIR_MODE)
        .with_context(|| format!("creating {}", wants_dir.display()))?;
    AtomicFs::new(&wants_dir)
        .symlink(&Path::new("..").join(name), &wants_dir.join(name))
        .with_context(|| format!("enabling {name}"))?;
    if root.live {
        systemctl(&["daemon-reload"]);
        systemctl(&["restart", name]);
    }
    Ok(path)
}

/// Whether systemd runs this system (the sd_booted(3) test), under `root`.
pub fn systemd_booted(root: &Root) -> bool {
    fs::symlink_metadata(root.join(SD_BOOTED_DIR)).is_ok_and(|m| m.is_dir())
}

/// Runs `systemctl <args>`, without a shell; a failure is a warning.
pub(super) fn systemctl(args: &[&str]) {
    let shown = format!("systemctl {}", args.join(" "));
    match Command::new("systemctl")
        .args(args)
        .stdin(Stdio::null())
        .output()
    {
        Ok(out) if out.status.success() => {}
        Ok(out) => tracing::warn!(
            "`{shown}` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) => tracing::warn!("cannot run `{shown}`: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_replaces_in_one_pass_and_drops_notes() {
        let out = render(
            "#@ a note with @A@\nx=@A@ @B@ @C@ a@b @MINUTE@\n",
            &[("A", "@B@"), ("B", "b"), ("MINUTE", "07")],
        );
        assert_eq!(out, "x=@B@ b @C@ a@b 07\n");
    }

    #[test]
    fn unit_quotes_paths_for_systemd() {
        let unit = redirector_unit(Path::new("/usr/bin/acmekeep"), None);
        assert!(
            unit.contains("\nExecStart=/usr/bin/acmekeep redirector\n"),
            "{unit}"
        );
        assert!(!unit.contains("#@"));
        assert!(!unit.contains("@EXEC_START@"));
        for line in [
            "Type=simple",
            "Restart=always",
            "WantedBy=multi-user.target",
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
            "PrivateTmp=yes",
            "MemoryDenyWriteExecute=yes",
            "RestrictAddressFamilies=AF_INET AF_INET6",
        ] {
            assert!(unit.lines().any(|l| l == line), "{line} missing");
        }
        let unit = redirector_unit(
            Path::new("/opt/my tools/acmekeep"),
            Some(Path::new("/srv/a%b$c\"d\\e/@EXEC_START@")),
        );
        let exec = unit
            .lines()
            .find(|l| l.starts_with("ExecStart="))
            .expect("ExecStart");
        assert_eq!(
            exec,
            r#"ExecStart="/opt/my tools/acmekeep" redirector "--path=/srv/a%%b$$c\"d\\e/@EXEC_START@""#
        );
        let odd = std::ffi::OsStr::from_bytes(b"/srv/\xff\n");
        let unit = redirector_unit(Path::new("/usr/bin/acmekeep"), Some(Path::new(odd)));
        assert!(
            unit.contains(r#"redirector "--path=/srv/\xff\x0a""#),
            "{unit}"
        );
    }
}
