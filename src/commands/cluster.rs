//! The fleet commands: `cluster-status`, `cluster-key new`, and (with the sync)
//! `cluster-init`, `cluster-join`, `cluster-rekey`.

use std::io::Write;
use std::process::ExitCode;

use anyhow::{Result, anyhow};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::cli::{ClusterKeyAction, ClusterKeyArgs, ClusterStatusArgs};
use crate::cluster::report::{self, FleetReport};
use crate::cluster::{self, ClusterConf};
use crate::exit;
use crate::settings::Settings;

/// `conf/cluster` of this state directory; a configuration error when there is none.
pub fn required_conf(settings: &Settings) -> Result<ClusterConf> {
    let conf_dir = settings.state_dir.join("conf");
    cluster::load_conf(&settings.cluster_conf, &conf_dir)?.ok_or_else(|| {
        exit::config_error(anyhow!(
            "{} does not exist: this state directory is not a fleet node (doc/cluster.md says how to make one)",
            settings.cluster_conf.display()
        ))
    })
}

/// `cluster-key new`: prints a new cluster secret key, as a line for the secret key file.
pub fn key(args: &ClusterKeyArgs) -> Result<ExitCode> {
    match args.action {
        ClusterKeyAction::New => {
            println!("{}", cluster::seal::ClusterKeys::new_line()?);
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `cluster-status [--json]`: read-only, takes no lock. Exit 69 when no member can be
/// used.
pub fn status(settings: &Settings, args: &ClusterStatusArgs) -> Result<ExitCode> {
    let conf = required_conf(settings)?;
    let rt = super::runtime()?;
    let (probes, members, fleet) = rt.block_on(cluster::survey(conf.clone()))?;
    let mut doc = FleetReport {
        prefix: conf.prefix.clone(),
        node: conf.node.clone(),
        endpoints: report::endpoints(&probes, &members),
        ..FleetReport::default()
    };
    let available = match &fleet {
        Some(f) => match rt.block_on(report::gather(f, &mut doc)) {
            Ok(()) => true,
            Err(e) => {
                eprintln!("acmekeep: cluster unavailable while reading it: {e}");
                false
            }
        },
        None => false,
    };
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let written = if args.json {
        serde_json::to_writer_pretty(&mut out, &doc)
            .map_err(std::io::Error::from)
            .and_then(|()| out.write_all(b"\n"))
    } else {
        print_text(&mut out, &doc, available, OffsetDateTime::now_utc())
    };
    match written.and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        other => other?,
    }
    Ok(ExitCode::from(if available {
        exit::OK
    } else {
        exit::UNAVAILABLE
    }))
}

fn ago(then: &str, now: OffsetDateTime) -> String {
    match OffsetDateTime::parse(then, &Rfc3339) {
        Ok(t) => {
            let s = (now - t).whole_seconds().max(0);
            match s {
                0..120 => format!("{s} s ago"),
                120..7200 => format!("{} min ago", s / 60),
                7200..172_800 => format!("{} h ago", s / 3600),
                _ => format!("{} days ago", s / 86400),
            }
        }
        Err(_) => then.to_owned(),
    }
}

fn print_text(
    out: &mut impl Write,
    doc: &FleetReport,
    available: bool,
    now: OffsetDateTime,
) -> std::io::Result<()> {
    let version = doc
        .endpoints
        .iter()
        .find_map(|e| e.version.clone())
        .map(|v| format!(" (etcd {v})"))
        .unwrap_or_default();
    let leader = doc
        .endpoints
        .iter()
        .find(|e| e.leader)
        .and_then(|e| e.name.clone())
        .map(|n| format!(", leader {n}"))
        .unwrap_or_default();
    writeln!(
        out,
        "cluster {} on {} etcd endpoint(s){version}{leader}{}",
        doc.prefix,
        doc.endpoints.len(),
        if available {
            format!(", revision {}", doc.revision)
        } else {
            ": UNAVAILABLE (nothing is ordered until a quorum answers)".to_owned()
        }
    )?;
    for e in &doc.endpoints {
        let name = e.name.as_deref().unwrap_or("-");
        match &e.error {
            None => writeln!(
                out,
                "  {name:<8} {}  ok{}{}",
                e.endpoint,
                if e.leader { ", leader" } else { "" },
                e.db_size
                    .map(|b| format!(", database {} kB", b / 1000))
                    .unwrap_or_default()
            )?,
            Some(why) => writeln!(out, "  {name:<8} {}  unusable: {why}", e.endpoint)?,
        }
    }
    if !available {
        return Ok(());
    }
    if !doc.initialised {
        writeln!(
            out,
            "no fleet under {} yet: run `acmekeep cluster-init` on the first node",
            doc.prefix
        )?;
        return Ok(());
    }
    writeln!(out, "nodes")?;
    if doc.nodes.is_empty() {
        writeln!(out, "  (none has run yet)")?;
    }
    for n in &doc.nodes {
        let me = if n.name == doc.node {
            " (this node)"
        } else {
            ""
        };
        let (synced, last, keys) = match &n.info {
            Some(i) => (
                format!(
                    "synced {} (revision {})",
                    ago(&i.synced_at, now),
                    i.synced_revision
                ),
                match (&i.last_run, &i.last_outcome) {
                    (Some(t), Some(o)) => format!("last run {} {o}", ago(t, now)),
                    _ => "no run yet".to_owned(),
                },
                i.key_ids
                    .first()
                    .map(|k| format!("keys {k}"))
                    .unwrap_or_default(),
            ),
            None => ("never synced".to_owned(), String::new(), String::new()),
        };
        writeln!(
            out,
            "  {}{me}  {synced}  {last}  agent {}  {keys}",
            n.name,
            if n.agent { "up" } else { "down" }
        )?;
    }
    writeln!(
        out,
        "targets: {} ({} with a certificate)",
        doc.targets, doc.with_certificate
    )?;
    for l in &doc.locks {
        writeln!(
            out,
            "  held now: {} holds desired/{} (since {}, pid {})",
            l.holder.node,
            l.file,
            ago(&l.holder.since, now),
            l.holder.pid
        )?;
    }
    for f in &doc.failing {
        writeln!(
            out,
            "  failing: desired/{} ({} failure(s), next attempt {}): {}",
            f.file,
            f.record.failures,
            f.record
                .next_attempt
                .as_deref()
                .unwrap_or("at the next run"),
            f.record.last_error.as_deref().unwrap_or("")
        )?;
    }
    let mine = doc.key_ids.first().cloned().unwrap_or_default();
    let secrets: Vec<String> = doc
        .secrets
        .iter()
        .map(|(id, n)| {
            let whose = if *id == mine {
                " (this node's sealing key)"
            } else if doc.key_ids.contains(id) {
                " (this node can open)"
            } else {
                " (this node LACKS this key)"
            };
            format!("{n} sealed under {id}{whose}")
        })
        .collect();
    writeln!(
        out,
        "secrets: {}",
        if secrets.is_empty() {
            "none yet".to_owned()
        } else {
            secrets.join(", ")
        }
    )
}
