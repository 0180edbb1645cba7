//! Running the `acmekeep` binary under test: always `--state <dir> --batch`, stdin null,
//! `ACME_STATE_DIR`/`ACMEKEEP_JOBS` removed from the environment, and a hard timeout.

use std::io::Read;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::StateDir;

/// Default bound for one acmekeep run.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

/// Options for [`acmekeep_with`] / [`spawn_acmekeep`].
#[derive(Debug, Clone)]
pub struct RunOpts {
    /// Kill the process after this long (the run then reports `timed_out`).
    pub timeout: Duration,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
    /// A command acmekeep runs under (e.g. `strace -f -o FILE`), empty for none.
    pub wrapper: Vec<String>,
}

impl Default for RunOpts {
    fn default() -> Self {
        Self {
            timeout: DEFAULT_TIMEOUT,
            env: Vec::new(),
            wrapper: Vec::new(),
        }
    }
}

/// The result of one acmekeep run.
#[derive(Debug, Clone)]
pub struct Run {
    /// Arguments after `--state <dir> --batch`.
    pub args: Vec<String>,
    /// Exit status; `None` only if waiting failed.
    pub status: Option<ExitStatus>,
    /// Exit code; `None` if killed by a signal (including the timeout).
    pub code: Option<i32>,
    pub timed_out: bool,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Run {
    /// Exit code 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// Everything about the run, for failure messages.
    pub fn describe(&self) -> String {
        format!(
            "acmekeep {}\n  exit: {}{}\n  elapsed: {:.1?}\n----- stdout -----\n{}\n----- stderr -----\n{}\n------------------",
            self.args.join(" "),
            self.status
                .map_or_else(|| "unknown".to_owned(), |s| s.to_string()),
            if self.timed_out {
                " (KILLED: timed out)"
            } else {
                ""
            },
            self.elapsed,
            self.stdout,
            self.stderr
        )
    }

    /// Panics with stdout and stderr unless the exit code is 0. (A [`super::Pebble`] still
    /// alive prints its logs when the panic unwinds through its drop.)
    #[track_caller]
    pub fn assert_success(&self) -> &Self {
        self.assert_code(0)
    }

    /// Panics with stdout and stderr unless the exit code is `code`.
    #[track_caller]
    pub fn assert_code(&self, code: i32) -> &Self {
        assert!(
            self.code == Some(code),
            "expected exit code {code}\n{}",
            self.describe()
        );
        self
    }

    /// Panics unless stderr contains `needle` (case-insensitive).
    #[track_caller]
    pub fn assert_stderr_contains(&self, needle: &str) -> &Self {
        assert!(
            self.stderr.to_lowercase().contains(&needle.to_lowercase()),
            "expected stderr to contain {needle:?}\n{}",
            self.describe()
        );
        self
    }
}

/// A running acmekeep process. Killed and reaped if dropped without [`Running::wait`].
pub struct Running {
    child: Option<Child>,
    args: Vec<String>,
    started: Instant,
    timeout: Duration,
    stdout: Option<JoinHandle<Vec<u8>>>,
    stderr: Option<JoinHandle<Vec<u8>>>,
}

impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Running")
            .field("pid", &self.child.as_ref().map(Child::id))
            .field("args", &self.args)
            .finish()
    }
}

fn drain(mut r: impl Read + Send + 'static) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        buf
    })
}

impl Running {
    /// The process ID.
    pub fn id(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Waits for the exit (killing the process at its timeout) and collects the output.
    pub fn wait(mut self) -> Run {
        let mut child = self.child.take().expect("child present until wait");
        let deadline = self.started + self.timeout;
        let mut timed_out = false;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break Some(status),
                Ok(None) if Instant::now() >= deadline => {
                    timed_out = true;
                    let _ = child.kill();
                    break child.wait().ok();
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                Err(_) => {
                    let _ = child.kill();
                    break child.wait().ok();
                }
            }
        };
        let elapsed = self.started.elapsed();
        let collect = |h: Option<JoinHandle<Vec<u8>>>| {
            h.and_then(|h| h.join().ok())
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default()
        };
        Run {
            args: std::mem::take(&mut self.args),
            status,
            code: status.and_then(|s| s.code()),
            timed_out,
            stdout: collect(self.stdout.take()),
            stderr: collect(self.stderr.take()),
            elapsed,
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Starts `acmekeep --state <state> --hooks <state>/../hooks --batch <args...>` without
/// waiting. The hook directory is the test's own (it may not exist), so the machine's
/// /etc/acme/hooks never runs in tests.
pub fn spawn_acmekeep(state: &StateDir, args: &[&str], opts: &RunOpts) -> Running {
    let bin = env!("CARGO_BIN_EXE_acmekeep");
    let mut cmd = match opts.wrapper.split_first() {
        Some((wrapper, wrapper_args)) => {
            let mut c = Command::new(wrapper);
            c.args(wrapper_args).arg(bin);
            c
        }
        None => Command::new(bin),
    };
    cmd.arg("--state")
        .arg(state.path())
        .arg("--hooks")
        .arg(state.hooks_dir())
        .arg("--batch")
        .args(args)
        .env_remove("ACME_STATE_DIR")
        .env_remove("ACME_HOOKS_DIR")
        .env_remove("ACMEKEEP_JOBS")
        .env("RUST_BACKTRACE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in &opts.env {
        cmd.env(k, v);
    }
    let started = Instant::now();
    let mut child = cmd.spawn().expect("spawn acmekeep");
    let stdout = child.stdout.take().map(drain);
    let stderr = child.stderr.take().map(drain);
    Running {
        child: Some(child),
        args: args.iter().map(|s| (*s).to_owned()).collect(),
        started,
        timeout: opts.timeout,
        stdout,
        stderr,
    }
}

/// Runs `acmekeep --state <state> --batch <args...>` to completion (bounded by
/// [`DEFAULT_TIMEOUT`]).
pub fn acmekeep(state: &StateDir, args: &[&str]) -> Run {
    acmekeep_with(state, args, &RunOpts::default())
}

/// [`acmekeep`] with options.
pub fn acmekeep_with(state: &StateDir, args: &[&str], opts: &RunOpts) -> Run {
    spawn_acmekeep(state, args, opts).wait()
}
