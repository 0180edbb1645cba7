//! `acmekeep metrics`: the Prometheus metrics a run leaves in its textfile, printed from the
//! state directory alone (no lock, no network). Also what every reconcile leaves for
//! monitoring when it ends ([`after_run`]): its run record, and the textfile when one is
//! configured (`--metrics-file`, or `monitor.metrics-file` in conf/target).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use time::OffsetDateTime;

use crate::exit::config_error;
use crate::monitor::facts::Facts;
use crate::monitor::metrics;
use crate::settings::Settings;
use crate::store::Store;
use crate::store::run::RunCounts;
use crate::world::World;

/// Prints the metrics.
pub fn execute(settings: &Settings) -> Result<ExitCode> {
    let store = Store::open_read_only(&settings.state_dir).map_err(config_error)?;
    let facts = Facts::load(&store, settings.clock.now_utc()).map_err(config_error)?;
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, std::io::stdout().lock());
    match metrics::write(&mut out, &facts).and_then(|()| out.flush()) {
        // A reader that stopped early (`| head`) is not an error of ours.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
        other => other.map(|()| ExitCode::SUCCESS).map_err(Into::into),
    }
}

/// How a run ended, for its record.
pub struct RunEnd {
    /// When it started.
    pub started_at: OffsetDateTime,
    /// How long it took.
    pub duration: std::time::Duration,
    /// Whether it exits 0.
    pub success: bool,
    /// What it counted.
    pub counts: RunCounts,
    /// The world it decided from, as it ended, when it got that far (else the metrics load
    /// the state again).
    pub world: Option<World>,
}

/// Records the run that just ended and writes the metrics textfile, if one is configured.
/// Never fatal: a failure is one warning on stderr (the run's outcome stands).
pub fn after_run(settings: &Settings, store: &Store, end: RunEnd) {
    let recorded = store.record_run(
        end.started_at,
        end.duration.as_secs_f64(),
        end.success,
        end.counts,
    );
    if let Err(e) = recorded {
        eprintln!("acmekeep: warning: cannot record the run: {e:#}");
    }
    let read = end.world.as_ref().map(|w| w.defaults.monitor.clone());
    let path = match textfile_path(settings, store, read) {
        Ok(Some(path)) => path,
        Ok(None) => return,
        Err(e) => {
            eprintln!("acmekeep: warning: no metrics written: {e:#}");
            return;
        }
    };
    let started = std::time::Instant::now();
    let now = settings.clock.now_utc();
    let facts = match end.world {
        Some(world) => Ok(Facts::after_run(store, world, now)),
        None => Facts::load(store, now),
    };
    let written = facts.and_then(|facts| {
        metrics::write_textfile(&path, |mut out| metrics::write(&mut out, &facts))
            .map_err(Into::into)
    });
    match written {
        Ok(()) => tracing::debug!(
            "metrics written to {} in {:.0?}",
            path.display(),
            started.elapsed()
        ),
        Err(e) => eprintln!(
            "acmekeep: warning: cannot write the metrics file {}: {e:#}",
            path.display()
        ),
    }
}

/// The configured textfile: `--metrics-file`, else conf/target's `monitor.metrics-file`
/// (`monitor`: that section as the run read it; `None`: conf/target is read now).
fn textfile_path(
    settings: &Settings,
    store: &Store,
    monitor: Option<Option<crate::target::RawMonitor>>,
) -> Result<Option<PathBuf>> {
    if let Some(p) = &settings.metrics_file {
        return Ok(Some(p.clone()));
    }
    let monitor = match monitor {
        Some(m) => m,
        None => store.raw_conf_target()?.monitor,
    };
    let Some(text) = monitor
        .and_then(|m| m.metrics_file)
        .filter(|p| !p.trim().is_empty())
    else {
        return Ok(None);
    };
    let path = PathBuf::from(text.trim());
    if !path.is_absolute() {
        anyhow::bail!(
            "monitor.metrics-file in conf/target must be an absolute path, not {:?}",
            text
        );
    }
    Ok(Some(path))
}
