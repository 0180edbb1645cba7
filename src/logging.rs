//! Log output on stderr, shaped for cron: whatever a run prints is mailed to someone.
//!
//! At the default verbosity only warnings and errors are shown — what needs a person — as
//! plain lines (`acmekeep: warning: …`) without timestamps, since the mail carries its own
//! date. `-v` adds everything else (progress, the CA's renewal windows, timings) with
//! timestamps and levels; `-vv` adds tracing detail; `-q` keeps errors only. Results of a run
//! (a certificate obtained, a target failed) are not log lines: the commands print them.

use std::fmt;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The most detailed level shown, from `-q`, `-v` (repeatable) and acmetool's
/// `--xlog.severity` (`Some(true)`: debug asked for, `Some(false)`: errors only).
/// `service` raises the default to info: a long-running service (the redirector) logs to
/// its journal, not to mail.
pub fn level(quiet: bool, verbose: u8, xlog_debug: Option<bool>, service: bool) -> Level {
    match (quiet, verbose, xlog_debug) {
        (true, _, _) | (false, 0, Some(false)) => Level::ERROR,
        (false, 0, None) if service => Level::INFO,
        (false, 0, None) => Level::WARN,
        (false, 0, Some(true)) | (false, 1, _) => Level::DEBUG,
        _ => Level::TRACE,
    }
}

/// Installs the stderr logger for `level`: plain lines up to warnings, timestamped ones
/// once more is asked for.
pub fn init(level: Level) {
    let builder = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_target(false);
    if level > Level::WARN {
        builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init();
    } else {
        builder.with_ansi(false).event_format(Plain).init();
    }
}

/// Logs the warning `message` unless this process has logged it already: settings files are
/// read more than once by some commands (`want` checks, then reconciles), and a mistake in
/// them is said once.
pub fn warn_once(message: String) {
    // The fuzz targets (fuzz/README.md) pass millions of distinct messages through here: all
    // remembered, they would grow without bound and slow every later input down.
    if cfg!(fuzzing) {
        return;
    }
    static SAID: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let mut said = SAID.lock().unwrap_or_else(|e| e.into_inner());
    if !said.contains(&message) {
        tracing::warn!("{message}");
        said.push(message);
    }
}

/// `acmekeep: warning: <message>` / `acmekeep: error: <message>`.
struct Plain;

impl<S, N> FormatEvent<S, N> for Plain
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let label = match *event.metadata().level() {
            Level::ERROR => "error: ",
            Level::WARN => "warning: ",
            _ => "",
        };
        write!(writer, "acmekeep: {label}")?;
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_shows_only_what_needs_a_person() {
        assert_eq!(level(false, 0, None, false), Level::WARN);
        assert_eq!(
            level(false, 0, None, true),
            Level::INFO,
            "services log more"
        );
        assert_eq!(level(false, 1, None, false), Level::DEBUG);
        assert_eq!(level(false, 2, None, false), Level::TRACE);
        assert_eq!(level(true, 3, None, false), Level::ERROR);
        assert_eq!(level(false, 0, Some(true), false), Level::DEBUG);
        assert_eq!(level(false, 0, Some(false), true), Level::ERROR);
    }
}
