//! A private Knot DNS (Debian's `knotd`, 3.2) as an authoritative server for dns-01 tests.
//!
//! Each instance writes its config, zone files and databases into a temporary directory and
//! listens on a free loopback port (UDP and TCP). Every zone accepts dynamic updates signed
//! with the instance's TSIG key and nothing else: an unsigned or wrongly signed update is
//! refused as a real primary would. Updates stay in memory (`zonefile-sync: -1`, no journal),
//! so the zone files keep what the test wrote. Dropping the instance kills it; if the thread
//! is panicking, knotd's log is printed first.

use std::fs::{self, File};
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};

use super::free_port_with;

const KNOTD_BIN: &str = "/usr/sbin/knotd";
const START_TIMEOUT: Duration = Duration::from_secs(15);
const START_ATTEMPTS: usize = 3;

/// The TSIG key a Knot instance accepts updates with.
#[derive(Clone, Debug)]
pub struct KnotKey {
    /// Key name, e.g. `acme-update.`.
    pub name: String,
    /// `hmac-sha256`, `hmac-sha384` or `hmac-sha512`.
    pub algorithm: String,
    /// Base64 secret.
    pub secret: String,
}

impl KnotKey {
    /// A new hmac-sha256 key with a random 32-byte secret.
    pub fn random(name: &str) -> Self {
        let mut bytes = [0u8; 32];
        aws_lc_rs::rand::fill(&mut bytes).expect("random bytes");
        Self {
            name: name.to_owned(),
            algorithm: "hmac-sha256".to_owned(),
            secret: data_encoding::BASE64.encode(&bytes),
        }
    }

    /// The key in BIND's `key "name" { ... };` syntax (what `tsig-keygen` prints).
    pub fn bind_format(&self) -> String {
        format!(
            "key \"{}\" {{\n\talgorithm {};\n\tsecret \"{}\";\n}};\n",
            self.name, self.algorithm, self.secret
        )
    }
}

/// A running knotd serving the zones it was started with.
pub struct Knot {
    child: Option<Child>,
    port: u16,
    log: PathBuf,
    dir: tempfile::TempDir,
}

impl std::fmt::Debug for Knot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Knot")
            .field("addr", &self.addr())
            .field("dir", &self.dir.path())
            .finish()
    }
}

fn config(dir: &Path, port: u16, key: &KnotKey, zones: &[(&str, &str)]) -> String {
    let d = dir.display();
    let mut c = format!(
        "server:\n    rundir: \"{d}\"\n    listen: 127.0.0.1@{port}\n\
         log:\n  - target: stderr\n    any: info\n\
         database:\n    storage: \"{d}/db\"\n    journal-db-max-size: 16M\n    \
         timer-db-max-size: 16M\n    kasp-db-max-size: 16M\n    catalog-db-max-size: 16M\n\
         control:\n    listen: \"{d}/knot.sock\"\n\
         key:\n  - id: {name}\n    algorithm: {alg}\n    secret: {secret}\n\
         acl:\n  - id: acme-update\n    key: {name}\n    action: update\n\
         template:\n  - id: default\n    storage: \"{d}\"\n    zonefile-sync: -1\n    \
         zonefile-load: whole\n    journal-content: none\n    semantic-checks: off\n\
         zone:\n",
        name = key.name,
        alg = key.algorithm,
        secret = key.secret,
    );
    for (domain, _) in zones {
        c.push_str(&format!(
            "  - domain: {domain}\n    file: \"{domain}.zone\"\n    acl: acme-update\n"
        ));
    }
    c
}

impl Knot {
    /// Starts knotd with `zones` (domain, zone file text) and `key` allowed to update them.
    /// Returns once every zone answers its SOA.
    pub fn start(key: &KnotKey, zones: &[(&str, &str)]) -> Knot {
        let mut errors = Vec::new();
        for attempt in 1..=START_ATTEMPTS {
            match Self::try_start(key, zones) {
                Ok(k) => return k,
                Err(e) => {
                    eprintln!("knotd start attempt {attempt} failed: {e}");
                    errors.push(e);
                }
            }
        }
        panic!(
            "knotd did not start after {START_ATTEMPTS} attempts:\n{}",
            errors.join("\n---\n")
        );
    }

    fn try_start(key: &KnotKey, zones: &[(&str, &str)]) -> Result<Knot, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let port = free_port_with(true);
        for (domain, text) in zones {
            fs::write(dir.path().join(format!("{domain}.zone")), text)
                .map_err(|e| e.to_string())?;
        }
        let conf = dir.path().join("knot.conf");
        fs::write(&conf, config(dir.path(), port, key, zones)).map_err(|e| e.to_string())?;
        let log = dir.path().join("knotd.log");
        let out = File::create(&log).map_err(|e| e.to_string())?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let bin = if Path::new(KNOTD_BIN).exists() {
            KNOTD_BIN
        } else {
            "knotd"
        };
        let child = Command::new(bin)
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .map_err(|e| format!("cannot run {bin} (apt-get install knot): {e}"))?;
        let mut knot = Knot {
            child: Some(child),
            port,
            log,
            dir,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = knot
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                return Err(format!("knotd exited with {status}:\n{}", knot.logs()));
            }
            let ready = zones.iter().all(|(domain, _)| {
                knot.query(domain, RecordType::SOA)
                    .is_some_and(|m| m.metadata.response_code == ResponseCode::NoError)
            });
            if ready {
                return Ok(knot);
            }
            if Instant::now() >= deadline {
                return Err(format!("knotd not ready on port {port}:\n{}", knot.logs()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Where it listens (UDP and TCP).
    pub fn addr(&self) -> SocketAddr {
        (Ipv4Addr::LOCALHOST, self.port).into()
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// knotd's log so far.
    pub fn logs(&self) -> String {
        fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_else(|e| format!("<cannot read {}: {e}>", self.log.display()))
    }

    /// One non-recursive question over UDP; `None` if there is no answer within a second.
    pub fn query(&self, name: &str, rtype: RecordType) -> Option<Message> {
        let qname = Name::from_ascii(format!("{}.", name.trim_end_matches('.'))).ok()?;
        let mut msg = Message::query();
        msg.metadata.recursion_desired = false;
        msg.add_query(Query::query(qname, rtype));
        let sock = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).ok()?;
        sock.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
        sock.connect(self.addr()).ok()?;
        sock.send(&msg.to_vec().ok()?).ok()?;
        let mut buf = [0u8; 4096];
        let n = sock.recv(&mut buf).ok()?;
        let answer = Message::from_vec(&buf[..n]).ok()?;
        (answer.metadata.id == msg.metadata.id).then_some(answer)
    }

    /// The TXT values (strings of one record joined) at `name`, sorted; panics on no answer.
    pub fn txt(&self, name: &str) -> Vec<String> {
        let m = self
            .query(name, RecordType::TXT)
            .unwrap_or_else(|| panic!("no answer from knotd for TXT {name}"));
        let mut out: Vec<String> = m
            .answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::TXT(t) => Some(
                    t.txt_data
                        .iter()
                        .map(|s| String::from_utf8_lossy(s).into_owned())
                        .collect(),
                ),
                _ => None,
            })
            .collect();
        out.sort();
        out
    }
}

impl Drop for Knot {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!("{self:?}\n{}", self.logs());
        }
    }
}
