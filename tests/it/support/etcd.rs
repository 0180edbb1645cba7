//! A private etcd cluster (Debian's `/usr/bin/etcd`, 3.4) on loopback, for the fleet tests.
//!
//! N members on free ports (client and peer each), data in a temporary directory, a short
//! heartbeat (50 ms) and election timeout (500 ms) so a leader is elected well under a second.
//! Peers talk plain http on loopback; clients use plain http, or https with client
//! certificates (a throw-away CA made with rcgen). A member is stopped with SIGKILL (SIGTERM
//! on a leader tries a leadership transfer first and can take seconds) and restarted with the
//! same command line on the same data directory, so it rejoins. Every member is killed on
//! drop; if the thread is panicking, the members' logs are printed first.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, random_u64};

const ETCD_BIN: &str = "/usr/bin/etcd";
const ETCDCTL_BIN: &str = "/usr/bin/etcdctl";
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Client TLS material of a cluster started with [`Etcd::start_tls`].
#[derive(Debug, Clone)]
pub struct EtcdPki {
    /// The CA certificate (PEM file).
    pub ca: PathBuf,
    /// Client certificate with CN `acmekeep` and its key.
    pub client: (PathBuf, PathBuf),
    /// Client certificate with CN `root` and its key (for setting auth up).
    pub root: (PathBuf, PathBuf),
}

struct Member {
    name: String,
    client_port: u16,
    args: Vec<String>,
    child: Option<Child>,
    log: PathBuf,
}

/// A running etcd cluster.
pub struct Etcd {
    members: Vec<Member>,
    scheme: &'static str,
    pki: Option<EtcdPki>,
    dir: tempfile::TempDir,
}

impl std::fmt::Debug for Etcd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Etcd")
            .field("endpoints", &self.endpoints())
            .field("dir", &self.dir.path())
            .finish()
    }
}

impl Etcd {
    /// Starts `n` members with plain http clients; returns once the cluster has a leader.
    pub fn start(n: usize) -> Etcd {
        Self::start_with(n, None)
    }

    /// Starts `n` members whose clients must present a certificate from the cluster's CA.
    pub fn start_tls(n: usize) -> Etcd {
        let dir = tempfile::Builder::new()
            .prefix("acmekeep-etcd-pki-")
            .tempdir()
            .expect("tempdir");
        let pki = make_pki(dir.path());
        let etcd = Self::start_with(n, Some((pki, dir.path().to_owned())));
        // The PKI files live in the cluster's own directory from here on.
        drop(dir);
        etcd
    }

    fn start_with(n: usize, pki: Option<(EtcdPki, PathBuf)>) -> Etcd {
        let dir = tempfile::Builder::new()
            .prefix("acmekeep-etcd-")
            .tempdir()
            .expect("tempdir");
        let (scheme, pki) = match pki {
            None => ("http", None),
            Some((p, from)) => {
                let to = dir.path().join("pki");
                fs::create_dir(&to).expect("pki dir");
                let moved = |f: &Path| {
                    let dest = to.join(f.file_name().expect("name"));
                    fs::copy(f, &dest).expect("copy pki");
                    dest
                };
                for f in ["server.pem", "server-key.pem"] {
                    moved(&from.join(f));
                }
                let p = EtcdPki {
                    ca: moved(&p.ca),
                    client: (moved(&p.client.0), moved(&p.client.1)),
                    root: (moved(&p.root.0), moved(&p.root.1)),
                };
                ("https", Some(p))
            }
        };
        let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
        let initial: Vec<String> = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("m{}=http://127.0.0.1:{peer}", i + 1))
            .collect();
        let token = format!("t-{:x}", random_u64());
        let mut members = Vec::new();
        for (i, (client, peer)) in ports.iter().enumerate() {
            let name = format!("m{}", i + 1);
            let data = dir.path().join(format!("{name}.data"));
            let mut args: Vec<String> = [
                "--name",
                &name,
                "--data-dir",
                &data.to_string_lossy(),
                "--listen-peer-urls",
                &format!("http://127.0.0.1:{peer}"),
                "--initial-advertise-peer-urls",
                &format!("http://127.0.0.1:{peer}"),
                "--listen-client-urls",
                &format!("{scheme}://127.0.0.1:{client}"),
                "--advertise-client-urls",
                &format!("{scheme}://127.0.0.1:{client}"),
                "--initial-cluster",
                &initial.join(","),
                "--initial-cluster-state",
                "new",
                "--initial-cluster-token",
                &token,
                "--heartbeat-interval",
                "50",
                "--election-timeout",
                "500",
                "--logger",
                "zap",
                "--log-outputs",
                "stderr",
                "--log-level",
                "warn",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            if let Some(p) = &pki {
                let d = p.ca.parent().expect("pki dir");
                for a in [
                    "--cert-file".to_owned(),
                    d.join("server.pem").to_string_lossy().into_owned(),
                    "--key-file".to_owned(),
                    d.join("server-key.pem").to_string_lossy().into_owned(),
                    "--client-cert-auth".to_owned(),
                    "--trusted-ca-file".to_owned(),
                    p.ca.to_string_lossy().into_owned(),
                ] {
                    args.push(a);
                }
            }
            let log = dir.path().join(format!("{name}.log"));
            members.push(Member {
                name,
                client_port: *client,
                args,
                child: None,
                log,
            });
        }
        let mut etcd = Etcd {
            members,
            scheme,
            pki,
            dir,
        };
        for i in 0..n {
            etcd.spawn(i);
        }
        etcd.wait_leader(START_TIMEOUT);
        etcd
    }

    fn spawn(&mut self, i: usize) {
        let m = &mut self.members[i];
        let log = File::options()
            .create(true)
            .append(true)
            .open(&m.log)
            .expect("etcd log");
        let child = Command::new(ETCD_BIN)
            .args(&m.args)
            .env_remove("ETCDCTL_ENDPOINTS")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().expect("log")))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|e| {
                panic!("starting {ETCD_BIN} (scripts/install-deps installs etcd-server): {e}")
            });
        m.child = Some(child);
    }

    /// The client URLs, in member order.
    pub fn endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| format!("{}://127.0.0.1:{}", self.scheme, m.client_port))
            .collect()
    }

    /// The client TLS material (clusters from [`Etcd::start_tls`]).
    pub fn pki(&self) -> Option<&EtcdPki> {
        self.pki.as_ref()
    }

    /// The cluster's directory (logs, data).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Stops member `i` at once (SIGKILL) and reaps it.
    pub fn stop(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts member `i` again on its data directory (it rejoins the cluster).
    pub fn restart(&mut self, i: usize) {
        assert!(self.members[i].child.is_none(), "member {i} is running");
        self.spawn(i);
    }

    /// Waits until the running members have a leader (a quorum is up).
    pub fn wait_leader(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if self.has_leader() {
                return;
            }
            if Instant::now() >= deadline {
                self.print_logs();
                panic!(
                    "etcd cluster {:?} has no leader after {timeout:?}",
                    self.endpoints()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether some running member reports a leader.
    pub fn has_leader(&self) -> bool {
        let running: Vec<String> = self
            .members
            .iter()
            .zip(self.endpoints())
            .filter(|(m, _)| m.child.is_some())
            .map(|(_, e)| e)
            .collect();
        if running.is_empty() {
            return false;
        }
        let out = self
            .etcdctl_on(
                &running,
                &["endpoint", "status", "--command-timeout=1s", "-w", "json"],
            )
            .output()
            .expect("etcdctl");
        let text = String::from_utf8_lossy(&out.stdout);
        // "leader":<id> with a nonzero id in any member's status.
        text.split("\"leader\":")
            .skip(1)
            .any(|rest| !rest.starts_with('0'))
    }

    /// An `etcdctl` command on every endpoint, as root on a TLS cluster.
    pub fn etcdctl(&self, args: &[&str]) -> Command {
        self.etcdctl_on(&self.endpoints(), args)
    }

    fn etcdctl_on(&self, endpoints: &[String], args: &[&str]) -> Command {
        let mut c = Command::new(ETCDCTL_BIN);
        c.env("ETCDCTL_API", "3")
            .env_remove("ETCDCTL_ENDPOINTS")
            .env_remove("ETCDCTL_CACERT")
            .env_remove("ETCDCTL_CERT")
            .env_remove("ETCDCTL_KEY")
            .arg(format!("--endpoints={}", endpoints.join(",")));
        if let Some(p) = &self.pki {
            c.arg(format!("--cacert={}", p.ca.display()))
                .arg(format!("--cert={}", p.root.0.display()))
                .arg(format!("--key={}", p.root.1.display()));
        }
        c.args(args);
        c
    }

    /// Runs etcdctl and returns its stdout; panics if it fails.
    pub fn ctl(&self, args: &[&str]) -> String {
        let out = self.etcdctl(args).output().expect("etcdctl");
        assert!(
            out.status.success(),
            "etcdctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Every key under `prefix`, with its value, as etcdctl prints them.
    pub fn dump(&self, prefix: &str) -> Vec<(String, Vec<u8>)> {
        let out = self
            .etcdctl(&["get", "--prefix", prefix, "-w", "json"])
            .output()
            .expect("etcdctl");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        let b64 = |s: &serde_json::Value| {
            data_encoding::BASE64
                .decode(s.as_str().unwrap_or_default().as_bytes())
                .expect("base64")
        };
        v["kvs"]
            .as_array()
            .map(|kvs| {
                kvs.iter()
                    .map(|kv| {
                        (
                            String::from_utf8(b64(&kv["key"])).expect("utf-8 key"),
                            b64(&kv["value"]),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Sets up auth: user `root` (password `rootpw`), user `acmekeep` (password
    /// `acmekeeppw`) with read-write access to `/acmekeep/` only.
    pub fn enable_auth(&self) {
        for args in [
            &["user", "add", "root:rootpw"][..],
            &["user", "grant-role", "root", "root"],
            &["role", "add", "acmekeep"],
            &[
                "role",
                "grant-permission",
                "acmekeep",
                "--prefix=true",
                "readwrite",
                "/acmekeep/",
            ],
            &["user", "add", "acmekeep:acmekeeppw"],
            &["user", "grant-role", "acmekeep", "acmekeep"],
            &["auth", "enable"],
        ] {
            self.ctl(args);
        }
    }

    /// Prints every member's log to stderr.
    pub fn print_logs(&self) {
        for m in &self.members {
            eprintln!(
                "----- etcd {} ({}) -----\n{}",
                m.name,
                m.log.display(),
                fs::read_to_string(&m.log).unwrap_or_default()
            );
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.print_logs();
        }
        for i in 0..self.members.len() {
            self.stop(i);
        }
    }
}

/// A CA, one server certificate for every member (127.0.0.1, localhost), and client
/// certificates `acmekeep` and `root` (the CN is the etcd user when auth is on).
fn make_pki(dir: &Path) -> EtcdPki {
    use rcgen::{
        BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose,
        IsCa, KeyPair,
    };
    let write = |name: &str, text: &str| {
        let p = dir.join(name);
        fs::write(&p, text).expect("write pki");
        p
    };
    let ca_key = KeyPair::generate().expect("ca key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name = DistinguishedName::new();
    ca.distinguished_name
        .push(DnType::CommonName, "test etcd CA");
    let ca_cert = ca.self_signed(&ca_key).expect("ca cert");
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let leaf = |names: Vec<String>, cn: &str, usages: Vec<ExtendedKeyUsagePurpose>| {
        let key = KeyPair::generate().expect("key");
        let mut p = CertificateParams::new(names).expect("params");
        p.distinguished_name = DistinguishedName::new();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.extended_key_usages = usages;
        let cert = p.signed_by(&key, &issuer).expect("sign");
        (cert.pem(), key.serialize_pem())
    };
    let ca_path = write("ca.pem", &ca_cert.pem());
    let (c, k) = leaf(
        vec!["127.0.0.1".into(), "localhost".into()],
        "etcd",
        vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
    );
    write("server.pem", &c);
    write("server-key.pem", &k);
    let client = |cn: &str| {
        let (c, k) = leaf(Vec::new(), cn, vec![ExtendedKeyUsagePurpose::ClientAuth]);
        let cert = write(&format!("{cn}.pem"), &c);
        let key = write(&format!("{cn}-key.pem"), &k);
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).expect("chmod");
        (cert, key)
    };
    let acmekeep = client("acmekeep");
    let root = client("root");
    EtcdPki {
        ca: ca_path,
        client: acmekeep,
        root,
    }
}
