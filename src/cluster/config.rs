//! `conf/cluster`: which etcd cluster a node belongs to, as whom, and under which prefix.
//!
//! The file is acmekeep's own (acmetool never reads it), so it is strict: an unknown key, a
//! value of the wrong kind or a setting out of range is a configuration error that names the
//! file and line. Parsing is pure; reading the files it names (secret key, password, TLS) is
//! done when connecting, with the state directory's rules for key files.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use serde::Deserialize;

/// The file's name under `conf/`.
pub const FILE: &str = "cluster";
/// Largest `conf/cluster` read.
pub const MAX_FILE: u64 = 64 * 1024;
/// Default key prefix.
pub const DEFAULT_PREFIX: &str = "/acmekeep/";
/// Default lock lease TTL.
pub const DEFAULT_LOCK_TTL: Duration = Duration::from_secs(15);
/// Default deadline of one etcd request.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default wait for targets other nodes are ordering.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(600);
/// Default wait for the agents to acknowledge an http-01 token.
pub const DEFAULT_ACK_WAIT: Duration = Duration::from_secs(5);
/// Most endpoints accepted.
const MAX_ENDPOINTS: usize = 16;

/// `conf/cluster`, resolved and validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterConf {
    /// Where it was read from (for messages).
    pub path: PathBuf,
    /// etcd client URLs, in the order given.
    pub endpoints: Vec<String>,
    /// Key prefix, beginning and ending with `/`.
    pub prefix: String,
    /// This node's name.
    pub node: String,
    /// TLS settings (for `https://` endpoints).
    pub tls: Option<Tls>,
    /// etcd user name and the file holding its password.
    pub user: Option<(String, PathBuf)>,
    /// The file of cluster secret keys (the first seals, all open).
    pub secret_key_file: PathBuf,
    /// Labels of the targets this node keeps (`None`: every target).
    pub subscribe: Option<Vec<String>>,
    /// TTL of a run's lease (its locks and tokens die with it).
    pub lock_ttl: Duration,
    /// Deadline of one etcd request.
    pub timeout: Duration,
    /// How long a run waits for targets another node holds.
    pub wait: Duration,
    /// How long an order waits for the agents to acknowledge an http-01 token.
    pub ack_wait: Duration,
}

/// TLS towards the etcd members.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tls {
    /// The members' CA (PEM); `None`: the system's roots.
    pub ca: Option<PathBuf>,
    /// Client certificate and key (PEM), if the members ask for one.
    pub identity: Option<(PathBuf, PathBuf)>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawConf {
    endpoints: Option<Vec<String>>,
    prefix: Option<String>,
    node: Option<String>,
    tls: Option<RawTls>,
    user: Option<String>,
    password_file: Option<String>,
    secret_key_file: Option<String>,
    subscribe: Option<Vec<String>>,
    lock_ttl: Option<String>,
    timeout: Option<String>,
    wait: Option<String>,
    ack_wait: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    ca: Option<String>,
    cert: Option<String>,
    key: Option<String>,
}

/// A duration as this file writes them: a number with a unit (`s`, `m`, `h`), or plain
/// seconds. (The command line's parser lives above this layer and takes longer forms.)
fn parse_duration(v: &str) -> Option<Duration> {
    let v = v.trim();
    let (digits, unit) = match v.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => v.split_at(i),
        None => (v, "s"),
    };
    let n: u64 = digits.parse().ok()?;
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        _ => return None,
    };
    n.checked_mul(scale).map(Duration::from_secs)
}

/// Where a value comes from, for errors naming the file and the key's line, and for
/// file names relative to `conf/`.
struct Ctx<'a> {
    path: &'a Path,
    text: &'a str,
    conf_dir: &'a Path,
}

impl Ctx<'_> {
    fn at(&self, what: &str) -> String {
        format!("{}: {what}", self.path.display())
    }

    /// The line of a key, for the errors about its value.
    fn line_of(&self, key: &str) -> String {
        self.text
            .lines()
            .position(|l| {
                let l = l.trim_start();
                l.strip_prefix(key).is_some_and(|r| r.starts_with(':'))
            })
            .map(|n| format!("line {}: ", n + 1))
            .unwrap_or_default()
    }

    fn err(&self, key: &str, what: String) -> anyhow::Error {
        anyhow!("{}", self.at(&format!("{}{what}", self.line_of(key))))
    }

    fn file(&self, v: &str) -> PathBuf {
        let p = Path::new(v);
        if p.is_absolute() {
            p.to_owned()
        } else {
            self.conf_dir.join(p)
        }
    }

    fn duration(
        &self,
        key: &str,
        v: Option<String>,
        default: Duration,
        (min, max): (Duration, Duration),
    ) -> Result<Duration> {
        let Some(v) = v else { return Ok(default) };
        let d = parse_duration(&v).ok_or_else(|| {
            self.err(
                key,
                format!("{key} {v:?} is not a duration (examples: 15s, 10m, 1h)"),
            )
        })?;
        if d < min || d > max {
            return Err(self.err(
                key,
                format!(
                    "{key} {v:?} is out of range ({} to {})",
                    show(min),
                    show(max)
                ),
            ));
        }
        Ok(d)
    }

    fn endpoints(&self, endpoints: Option<Vec<String>>) -> Result<Vec<String>> {
        let endpoints = endpoints.unwrap_or_default();
        if endpoints.is_empty() {
            bail!(
                "{}",
                self.at(
                    "`endpoints` is missing: list the etcd members' client URLs (https://host:2379)"
                )
            );
        }
        if endpoints.len() > MAX_ENDPOINTS {
            return Err(self.err(
                "endpoints",
                format!("at most {MAX_ENDPOINTS} endpoints, not {}", endpoints.len()),
            ));
        }
        endpoints
            .iter()
            .map(|e| endpoint(e).map_err(|why| self.err("endpoints", why)))
            .collect()
    }

    fn node(&self, node: Option<String>, host_name: &str) -> Result<String> {
        let node = node.unwrap_or_else(|| host_name.to_owned());
        if !valid_name(&node) {
            return Err(self.err(
                "node",
                format!(
                    "node name {node:?} must be 1-64 letters, digits, '.', '_' or '-'{}",
                    if self.line_of("node").is_empty() {
                        " (it defaults to the host name: set `node:`)"
                    } else {
                        ""
                    }
                ),
            ));
        }
        Ok(node)
    }

    fn tls(&self, tls: Option<RawTls>, any_https: bool) -> Result<Option<Tls>> {
        let Some(t) = tls else { return Ok(None) };
        let identity = match (t.cert, t.key) {
            (Some(c), Some(k)) => Some((self.file(&c), self.file(&k))),
            (None, None) => None,
            (Some(_), None) => {
                return Err(self.err("tls", "tls.cert is given without tls.key".into()));
            }
            (None, Some(_)) => {
                return Err(self.err("tls", "tls.key is given without tls.cert".into()));
            }
        };
        if !any_https {
            return Err(self.err(
                "tls",
                "`tls` is set but every endpoint is http://: use https:// endpoints".into(),
            ));
        }
        Ok(Some(Tls {
            ca: t.ca.as_deref().map(|c| self.file(c)),
            identity,
        }))
    }

    fn user(
        &self,
        user: Option<String>,
        password_file: Option<String>,
    ) -> Result<Option<(String, PathBuf)>> {
        match (user, password_file) {
            (Some(u), Some(p)) => {
                if u.is_empty() || u.len() > 128 || u.chars().any(|c| c.is_control()) {
                    return Err(self.err("user", format!("user name {u:?} is not usable")));
                }
                Ok(Some((u, self.file(&p))))
            }
            (None, None) => Ok(None),
            (Some(_), None) => {
                Err(self.err("user", "`user` is given without `password-file`".into()))
            }
            (None, Some(_)) => Err(self.err(
                "password-file",
                "`password-file` is given without `user`".into(),
            )),
        }
    }

    fn subscribe(&self, labels: Option<Vec<String>>) -> Result<Option<Vec<String>>> {
        if let Some(bad) = labels.iter().flatten().find(|l| !valid_name(l)) {
            return Err(self.err(
                "subscribe",
                format!("label {bad:?} must be 1-64 letters, digits, '.', '_' or '-'"),
            ));
        }
        Ok(labels)
    }
}

/// Parses `text`, the contents of `path`; relative file names are relative to `conf_dir`,
/// and the node name defaults to `host_name`.
pub fn parse(path: &Path, text: &str, conf_dir: &Path, host_name: &str) -> Result<ClusterConf> {
    let raw: RawConf = if text.trim().is_empty() {
        RawConf::default()
    } else {
        serde_yaml_ng::from_str(text)
            .map_err(crate::target::yaml_error)
            .with_context(|| format!("cannot parse {}", path.display()))?
    };
    let cx = Ctx {
        path,
        text,
        conf_dir,
    };
    let endpoints = cx.endpoints(raw.endpoints)?;
    let any_https = endpoints.iter().any(|e| e.starts_with("https://"));
    let prefix = raw.prefix.unwrap_or_else(|| DEFAULT_PREFIX.to_owned());
    if !valid_prefix(&prefix) {
        return Err(cx.err(
            "prefix",
            format!(
                "prefix {prefix:?} must begin and end with '/' and hold only letters, digits and . _ - / (at most 128 characters)"
            ),
        ));
    }
    let node = cx.node(raw.node, host_name)?;
    let tls = cx.tls(raw.tls, any_https)?;
    let user = cx.user(raw.user, raw.password_file)?;
    let Some(secret) = raw.secret_key_file else {
        bail!(
            "{}",
            cx.at(
                "`secret-key-file` is missing: name the file of cluster secret keys (`acmekeep cluster-key new` makes one line; every node needs the same file)"
            )
        );
    };
    let subscribe = cx.subscribe(raw.subscribe)?;
    let secs = Duration::from_secs;
    let lock_ttl = cx.duration(
        "lock-ttl",
        raw.lock_ttl,
        DEFAULT_LOCK_TTL,
        (secs(2), secs(300)),
    )?;
    let timeout = cx.duration("timeout", raw.timeout, DEFAULT_TIMEOUT, (secs(1), secs(60)))?;
    let wait = cx.duration("wait", raw.wait, DEFAULT_WAIT, (secs(0), secs(86400)))?;
    let ack_wait = cx.duration(
        "ack-wait",
        raw.ack_wait,
        DEFAULT_ACK_WAIT,
        (secs(0), secs(60)),
    )?;
    Ok(ClusterConf {
        path: path.to_owned(),
        endpoints,
        prefix,
        node,
        tls,
        user,
        secret_key_file: cx.file(&secret),
        subscribe,
        lock_ttl,
        timeout,
        wait,
        ack_wait,
    })
}

fn show(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 && s.is_multiple_of(3600) {
        format!("{}h", s / 3600)
    } else if s >= 60 && s.is_multiple_of(60) {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

/// An endpoint URL, checked: http or https, a host and a port, nothing else; plain http only
/// to a loopback address (secrets travel sealed, but tokens, certificates and passwords do
/// not).
fn endpoint(e: &str) -> Result<String, String> {
    let url = url::Url::parse(e).map_err(|why| format!("endpoint {e:?} is not a URL: {why}"))?;
    let scheme = url.scheme();
    if scheme != "http" && scheme != "https" {
        return Err(format!(
            "endpoint {e:?}: the scheme must be https:// (or http:// on loopback)"
        ));
    }
    let Some(host) = url.host() else {
        return Err(format!("endpoint {e:?} has no host"));
    };
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "endpoint {e:?}: no credentials in the URL (use `user` and `password-file`)"
        ));
    }
    if !matches!(url.path(), "" | "/") || url.query().is_some() || url.fragment().is_some() {
        return Err(format!(
            "endpoint {e:?}: only scheme, host and port, no path"
        ));
    }
    let Some(port) = url.port_or_known_default() else {
        return Err(format!("endpoint {e:?} has no port"));
    };
    let loopback = match host {
        url::Host::Ipv4(a) => a.is_loopback(),
        url::Host::Ipv6(a) => a.is_loopback(),
        url::Host::Domain(d) => d.eq_ignore_ascii_case("localhost"),
    };
    if scheme == "http" && !loopback {
        return Err(format!(
            "endpoint {e:?}: plain http:// is allowed only on loopback; use https:// with a `tls` section"
        ));
    }
    let host = match host {
        url::Host::Ipv6(a) => format!("[{a}]"),
        h => h.to_string(),
    };
    Ok(format!("{scheme}://{host}:{port}"))
}

/// A node name or label: 1-64 of `[A-Za-z0-9._-]`, not beginning with '.'.
pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && !s.starts_with('.')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn valid_prefix(p: &str) -> bool {
    p.len() <= 128
        && p.starts_with('/')
        && p.ends_with('/')
        && !p.contains("//")
        && !p.split('/').any(|seg| seg == "." || seg == "..")
        && p.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'/'))
}

/// This machine's host name (the default node name), or "" when it cannot be read.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_text(text: &str) -> Result<ClusterConf> {
        parse(
            Path::new("/var/lib/acme/conf/cluster"),
            text,
            Path::new("/var/lib/acme/conf"),
            "web1.example",
        )
    }

    const MINIMAL: &str = "endpoints: [http://127.0.0.1:2379]\nsecret-key-file: cluster.key\n";

    #[test]
    fn the_minimal_file_takes_the_documented_defaults() {
        let c = parse_text(MINIMAL).expect("parses");
        assert_eq!(c.endpoints, ["http://127.0.0.1:2379"]);
        assert_eq!(c.prefix, "/acmekeep/");
        assert_eq!(c.node, "web1.example");
        assert_eq!(
            c.secret_key_file,
            Path::new("/var/lib/acme/conf/cluster.key")
        );
        assert_eq!(c.lock_ttl, Duration::from_secs(15));
        assert_eq!(c.timeout, Duration::from_secs(5));
        assert_eq!(c.wait, Duration::from_secs(600));
        assert_eq!(c.ack_wait, Duration::from_secs(5));
        assert_eq!(c.subscribe, None);
        assert_eq!(c.tls, None);
        assert_eq!(c.user, None);
    }

    #[test]
    fn every_setting_is_read() {
        let c = parse_text(
            "# fleet\nendpoints:\n  - https://10.0.0.1:2379\n  - https://etcd2.example\nprefix: /fleet/a/\nnode: web-2\ntls:\n  ca: /etc/acmekeep/ca.pem\n  cert: client.pem\n  key: client-key.pem\nuser: acmekeep\npassword-file: /etc/acmekeep/pw\nsecret-key-file: /etc/acmekeep/cluster.key\nsubscribe: [web, eu]\nlock-ttl: 30s\ntimeout: 2s\nwait: 1m\nack-wait: 0\n",
        )
        .expect("parses");
        assert_eq!(
            c.endpoints,
            ["https://10.0.0.1:2379", "https://etcd2.example:443"]
        );
        assert_eq!(c.prefix, "/fleet/a/");
        assert_eq!(c.node, "web-2");
        assert_eq!(
            c.tls,
            Some(Tls {
                ca: Some("/etc/acmekeep/ca.pem".into()),
                identity: Some((
                    "/var/lib/acme/conf/client.pem".into(),
                    "/var/lib/acme/conf/client-key.pem".into()
                )),
            })
        );
        assert_eq!(c.user, Some(("acmekeep".into(), "/etc/acmekeep/pw".into())));
        assert_eq!(c.subscribe, Some(vec!["web".into(), "eu".into()]));
        assert_eq!(c.lock_ttl, Duration::from_secs(30));
        assert_eq!(c.timeout, Duration::from_secs(2));
        assert_eq!(c.wait, Duration::from_secs(60));
        assert_eq!(c.ack_wait, Duration::ZERO);
    }

    #[test]
    fn mistakes_are_named_with_file_and_line() {
        for (text, expect) in [
            ("", "`endpoints` is missing"),
            (
                "endpoints: [http://127.0.0.1:2379]\n",
                "`secret-key-file` is missing",
            ),
            (
                "endpoints: [http://127.0.0.1:2379]\nsecret-key-file: k\nlock_ttl: 5s\n",
                "line 3",
            ),
            (
                "endpoints: [http://127.0.0.1:2379]\nsecret-key-file: k\nlock-ttl: 1s\n",
                "line 3: lock-ttl \"1s\" is out of range (2s to 5m)",
            ),
            (
                "endpoints: [http://127.0.0.1:2379]\nsecret-key-file: k\ntimeout: soon\n",
                "line 3: timeout \"soon\" is not a duration",
            ),
            (
                "endpoints:\n  - http://10.0.0.1:2379\nsecret-key-file: k\n",
                "line 1: endpoint \"http://10.0.0.1:2379\": plain http:// is allowed only on loopback",
            ),
            (
                "endpoints: [ftp://127.0.0.1:2379]\nsecret-key-file: k\n",
                "scheme must be https://",
            ),
            (
                "endpoints: [\"https://u:p@10.0.0.1:2379\"]\nsecret-key-file: k\n",
                "no credentials in the URL",
            ),
            (
                "endpoints: [http://127.0.0.1:2379]\nsecret-key-file: k\nprefix: acmekeep\n",
                "line 3: prefix \"acmekeep\" must begin and end with '/'",
            ),
            (
                "endpoints: [http://127.0.0.1:2379]\nsecret-key-file: k\nprefix: /a/../b/\n",
                "must begin and end",
            ),
            (
                "endpoints: [http://127.0.0.1:2379]\nsecret-key-file: k\nnode: 'web 1'\n",
                "line 3: node name \"web 1\"",
            ),
            (
                "endpoints: [http://127.0.0.1:2379]\nsecret-key-file: k\ntls: {ca: ca.pem}\n",
                "every endpoint is http://",
            ),
            (
                "endpoints: [https://10.0.0.1:2379]\nsecret-key-file: k\ntls: {cert: c.pem}\n",
                "tls.cert is given without tls.key",
            ),
            (
                "endpoints: [http://127.0.0.1:2379]\nsecret-key-file: k\nuser: acmekeep\n",
                "line 3: `user` is given without `password-file`",
            ),
            (
                "endpoints: [http://127.0.0.1:2379]\nsecret-key-file: k\nsubscribe: ['a b']\n",
                "line 3: label \"a b\"",
            ),
            (
                "endpoints: [http://127.0.0.1:2379]\nsecret-key-file: k\ntls:\n  ca: x\n  crt: y\n",
                "unknown field `crt`",
            ),
        ] {
            let e = format!("{:#}", parse_text(text).expect_err(text));
            assert!(e.contains("/var/lib/acme/conf/cluster"), "{e}");
            assert!(e.contains(expect), "{text:?}: {e}");
        }
    }

    #[test]
    fn a_host_name_that_is_no_node_name_asks_for_node() {
        let e = parse(Path::new("c"), MINIMAL, Path::new("."), "").expect_err("empty host name");
        assert!(format!("{e:#}").contains("set `node:`"), "{e:#}");
    }

    #[test]
    fn names_and_labels() {
        for ok in ["web1", "a.b-c_d", &"x".repeat(64)] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", ".hidden", "a/b", "a b", "é", &"x".repeat(65)] {
            assert!(!valid_name(bad), "{bad}");
        }
    }
}
