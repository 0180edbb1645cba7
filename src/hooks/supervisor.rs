//! The hook supervisor: a second acmekeep process between acmekeep and one hook, so that the
//! hook's whole process group dies with acmekeep however acmekeep ends, `kill -9` included.
//!
//! A hook runs in a process group of its own, which acmekeep kills at the hook's deadline.
//! But when acmekeep itself is killed nothing of it runs any more, and the kernel kills
//! nobody's children on its behalf: the hook (and whatever it started) would run on, holding
//! ports or half-done DNS changes, with nobody to read its output or run the matching `stop`
//! event. So the hook is started as `acmekeep --hook-supervisor <pid> -- <program> <args>`
//! (the running executable, `/proc/self/exe`), in a new process group:
//!
//! 1. The supervisor blocks SIGCHLD, SIGTERM, SIGINT and SIGHUP (to take them with
//!    `sigwait`), asks the kernel to send it SIGTERM when its parent goes
//!    (`PR_SET_PDEATHSIG`), and checks that the parent is still `<pid>` (it may have gone
//!    before the request was made).
//! 2. It starts the program in its own process group (std clears the blocked signals for the
//!    program) with what it was given: arguments, environment, working directory, stdin and
//!    the output pipe.
//! 3. When the program exits, the supervisor ends the same way: the same exit code, or the
//!    same signal. When SIGTERM, SIGINT or SIGHUP comes first (acmekeep went, or someone
//!    stops the supervisor), it kills the whole process group, itself included, with SIGKILL.
//!
//! acmekeep's deadline works as before: the supervisor leads the group acmekeep kills.
//! `PR_SET_PDEATHSIG` is tied to the thread that started the supervisor; that thread waits
//! for the hook until it ends, so it never goes early.

use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitCode};

use nix::sys::signal::{SigSet, Signal, killpg, raise};
use nix::unistd::{Pid, getpgrp, getppid};

/// The first argument that makes acmekeep a hook supervisor.
pub const FLAG: &str = "--hook-supervisor";

/// Where the running executable can always be started from, even after a package upgrade
/// replaced the file.
pub const SELF_EXE: &str = "/proc/self/exe";

/// The arguments that start `program` with `args` under a supervisor watching this process.
pub fn command_line(program: &OsString, args: &[OsString]) -> Vec<OsString> {
    let mut line = vec![
        OsString::from(FLAG),
        OsString::from(std::process::id().to_string()),
        OsString::from("--"),
        program.clone(),
    ];
    line.extend_from_slice(args);
    line
}

/// If this process was started as a hook supervisor (`argv[1]` is [`FLAG`]), supervises and
/// returns the exit code; otherwise `None`.
pub fn run_if_asked() -> Option<ExitCode> {
    let mut args = std::env::args_os().skip(1);
    if args.next()? != FLAG {
        return None;
    }
    let parent = args.next().and_then(|p| p.to_str()?.parse::<i32>().ok());
    let separator = args.next();
    let program = args.next();
    let rest: Vec<OsString> = args.collect();
    match (parent, separator, program) {
        (Some(parent), Some(sep), Some(program)) if sep == "--" => {
            Some(supervise(Pid::from_raw(parent), &program, &rest))
        }
        _ => {
            eprintln!("acmekeep: usage: acmekeep {FLAG} <parent pid> -- <program> [args...]");
            Some(ExitCode::from(crate::exit::CONFIG))
        }
    }
}

/// Runs `program` until it ends, or kills it with its process group when the parent goes.
fn supervise(parent: Pid, program: &OsString, args: &[OsString]) -> ExitCode {
    let mut watched = SigSet::empty();
    for s in [
        Signal::SIGCHLD,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
    ] {
        watched.add(s);
    }
    if watched.thread_block().is_err()
        || nix::sys::prctl::set_pdeathsig(Signal::SIGTERM).is_err()
        || getppid() != parent
    {
        // Either acmekeep is gone already, or it could not be watched: run nothing.
        kill_group();
    }
    let mut retries = 0;
    let mut child = loop {
        match Command::new(program).args(args).spawn() {
            Ok(child) => break child,
            // A hook just written by acmekeep may still be open for writing in a process
            // acmekeep is starting at the same moment (see hooks::BUSY_RETRIES).
            Err(e)
                if e.kind() == std::io::ErrorKind::ExecutableFileBusy
                    && retries < super::BUSY_RETRIES =>
            {
                retries += 1;
                std::thread::sleep(std::time::Duration::from_millis(10 << retries));
            }
            Err(e) => {
                eprintln!("acmekeep: cannot start {}: {e}", program.to_string_lossy());
                // 127, as a shell reports a command it cannot run.
                return ExitCode::from(127);
            }
        }
    };
    loop {
        let signal = watched.wait();
        if signal.is_err() {
            // Not expected; look at the program now and then instead of spinning.
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        match signal {
            Ok(Signal::SIGCHLD) | Err(_) => match child.try_wait() {
                Ok(Some(status)) => return end_like(status),
                Ok(None) => {}
                Err(_) => kill_group(),
            },
            Ok(_) => kill_group(),
        }
    }
}

/// Ends this process as `status` ended: its exit code, or dying of its signal.
fn end_like(status: std::process::ExitStatus) -> ExitCode {
    if let Some(code) = status.code() {
        return ExitCode::from(u8::try_from(code).unwrap_or(1));
    }
    let signal = status.signal().unwrap_or(0);
    if let Ok(signal) = Signal::try_from(signal) {
        let _ = SigSet::all().thread_unblock();
        let _ = raise(signal);
    }
    // Still here: the signal is ignored by default (SIGPIPE is, in Rust programs).
    ExitCode::from(u8::try_from(128 + signal).unwrap_or(1))
}

/// Kills this process's group: the program, whatever it started in its group, and us.
fn kill_group() -> ! {
    let _ = killpg(getpgrp(), Signal::SIGKILL);
    // Not reached once the signal is delivered; exit in case it was refused.
    std::process::exit(1);
}
