//! The `request.challenge.dns-01` section of target files and `conf/target`:
//!
//! ```yaml
//! request:
//!   challenge:
//!     dns-01:
//!       server: 192.0.2.53          # primary accepting updates: ip or ip:port (port 53)
//!       key-name: acme-update       # TSIG key, inline ...
//!       algorithm: hmac-sha256      #   hmac-sha256 (default), hmac-sha384, hmac-sha512
//!       secret: "base64…"
//!       key-file: /etc/acme/tsig.key  # ... or a BIND/Knot key file (key-name picks one)
//!       zone: example.org           # optional: found by SOA lookup
//!       ttl: 60
//!       timeout: 10                 # seconds per DNS exchange
//!       propagation-timeout: 120    # seconds to wait for every NS; 0 = don't check
//!       resolvers: [127.0.0.53]     # optional: default /etc/resolv.conf
//!       nameservers:                # optional: addresses of NS names, instead of lookups
//!         ns1.example.org: [192.0.2.1, "192.0.2.2:5353"]
//! ```
//!
//! `request.challenge.dns-persist-01.check` says how the standing dns-persist-01 record is
//! read before an order ([`PersistCheck`]): from every `authoritative` server of its zone
//! (the default, as the propagation check reads), through the `resolvers` above (what a
//! split-horizon or firewalled site can see), or not at all (`off`: the CA is asked as is).
//!
//! [`RawDns01`] mirrors the YAML (every field optional, so files round-trip); a target's
//! section overlays `conf/target`'s field by field, except that the key (`key-name`,
//! `algorithm`, `secret`, `key-file`) is taken whole from whichever file sets any of it.
//! [`RawDns01::resolve`] checks everything and does no I/O: a key file is read when an
//! update is sent, so a renewed key needs no restart.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use serde::{Deserialize, Serialize};

use super::{
    DEFAULT_PROPAGATION_TIMEOUT, DEFAULT_TIMEOUT, DEFAULT_TTL, Dns01, KeySource, ResolverConfig,
    Rfc2136Config, TsigAlgorithm, TsigKey,
};
use crate::name::Hostname;

/// `request.challenge.dns-01:` as written. `Debug` hides the secret.
#[derive(Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, rename_all = "kebab-case")]
pub struct RawDns01 {
    /// Use the challenge-dns-start/stop hooks (default true).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hooks: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub algorithm: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub propagation_timeout: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolvers: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nameservers: Option<BTreeMap<String, Vec<String>>>,
}

impl fmt::Debug for RawDns01 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawDns01")
            .field("hooks", &self.hooks)
            .field("server", &self.server)
            .field("key_name", &self.key_name)
            .field("algorithm", &self.algorithm)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("key_file", &self.key_file)
            .field("zone", &self.zone)
            .field("ttl", &self.ttl)
            .field("timeout", &self.timeout)
            .field("propagation_timeout", &self.propagation_timeout)
            .field("resolvers", &self.resolvers)
            .field("nameservers", &self.nameservers)
            .finish()
    }
}

/// `request.challenge.dns-persist-01:` as written.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, rename_all = "kebab-case")]
pub struct RawDnsPersist01 {
    /// How the standing record is read before an order.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub check: Option<PersistCheck>,
}

impl RawDnsPersist01 {
    /// Overlays `self` (a target file's section) on `base` (conf/target's), field by field.
    pub fn overlay_on(&self, base: &RawDnsPersist01) -> RawDnsPersist01 {
        RawDnsPersist01 {
            check: self.check.or(base.check),
        }
    }
}

/// How the standing dns-persist-01 record is read before an order, to name what is missing
/// or wrong before the CA is asked (`request.challenge.dns-persist-01.check`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PersistCheck {
    /// From every authoritative server of the record's zone, asked directly (as the
    /// propagation check does): what the CA will see once every server has the record.
    #[default]
    Authoritative,
    /// Through the configured `resolvers` (or the system's): for a site whose authoritative
    /// servers cannot be reached from here.
    Resolvers,
    /// Not read: the CA is asked as is (and `status` knows no `persistUntil`).
    Off,
}

impl PersistCheck {
    /// The word in the YAML.
    pub fn as_str(self) -> &'static str {
        match self {
            PersistCheck::Authoritative => "authoritative",
            PersistCheck::Resolvers => "resolvers",
            PersistCheck::Off => "off",
        }
    }
}

impl Serialize for PersistCheck {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

// By hand, so that a wrong word is an error naming the choices (serde_yaml adds the key and
// the line), and an empty value is the default.
impl<'de> Deserialize<'de> for PersistCheck {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let word = String::deserialize(d)?;
        match word.trim() {
            "" | "authoritative" => Ok(PersistCheck::Authoritative),
            "resolvers" => Ok(PersistCheck::Resolvers),
            "off" => Ok(PersistCheck::Off),
            other => Err(serde::de::Error::custom(format!(
                "{other:?} is not a dns-persist-01 check: authoritative, resolvers or off"
            ))),
        }
    }
}

/// dns-01 settings resolved for one target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dns01Settings {
    /// Where and how to update.
    pub rfc2136: Rfc2136Config,
    /// How long to wait for every authoritative server (`None`: don't check).
    pub propagation_timeout: Option<Duration>,
}

impl Dns01Settings {
    /// A responder for one order.
    pub fn responder(&self) -> Dns01 {
        Dns01::new(self.rfc2136.clone(), self.propagation_timeout)
    }
}

/// `ip`, `ip:port`, `[v6]:port`, with `default_port` when none is given.
fn parse_addr(text: &str, default_port: u16) -> Result<SocketAddr> {
    let t = text.trim();
    if let Ok(a) = t.parse::<SocketAddr>() {
        return Ok(a);
    }
    let ip = t
        .parse::<IpAddr>()
        .map_err(|_| anyhow!("{t:?} is not an IP address or ip:port"))?;
    Ok(SocketAddr::new(ip, default_port))
}

fn seconds(value: Option<i64>, default: Duration, max: u64, what: &str) -> Result<Duration> {
    match value {
        None => Ok(default),
        Some(s) if (0..=max as i64).contains(&s) => Ok(Duration::from_secs(s as u64)),
        Some(s) => bail!("dns-01 {what}: {s} is not between 0 and {max} seconds"),
    }
}

impl RawDns01 {
    fn sets_key(&self) -> bool {
        self.key_name.is_some()
            || self.algorithm.is_some()
            || self.secret.is_some()
            || self.key_file.is_some()
    }

    /// Overlays `self` (a target file's section) on `base` (conf/target's); see module docs.
    pub fn overlay_on(&self, base: &RawDns01) -> RawDns01 {
        fn pick<T: Clone>(top: &Option<T>, base: &Option<T>) -> Option<T> {
            top.clone().or_else(|| base.clone())
        }
        let key = if self.sets_key() { self } else { base };
        RawDns01 {
            hooks: pick(&self.hooks, &base.hooks),
            server: pick(&self.server, &base.server),
            key_name: key.key_name.clone(),
            algorithm: key.algorithm.clone(),
            secret: key.secret.clone(),
            key_file: key.key_file.clone(),
            zone: pick(&self.zone, &base.zone),
            ttl: pick(&self.ttl, &base.ttl),
            timeout: pick(&self.timeout, &base.timeout),
            propagation_timeout: pick(&self.propagation_timeout, &base.propagation_timeout),
            resolvers: pick(&self.resolvers, &base.resolvers),
            nameservers: pick(&self.nameservers, &base.nameservers),
        }
    }

    /// The lookups' settings (`resolvers`, `nameservers`, `timeout`), whether or not a
    /// `server` is set.
    pub fn resolver(&self) -> Result<ResolverConfig> {
        let timeout = seconds(self.timeout, DEFAULT_TIMEOUT, 300, "timeout")?;
        if timeout.is_zero() {
            bail!("dns-01 timeout must be at least 1 second");
        }
        Ok(ResolverConfig {
            servers: self.resolver_addresses()?,
            nameserver_addresses: self.nameserver_addresses()?,
            authoritative_port: 53,
            timeout,
        })
    }

    /// Checks the section. `None` when no `server` is set (dns-01 by RFC 2136 is off).
    pub fn resolve(&self) -> Result<Option<Dns01Settings>> {
        let Some(server) = self.server.as_deref().filter(|s| !s.trim().is_empty()) else {
            if self.sets_key() || self.zone.is_some() {
                bail!("dns-01 settings without a `server` to send updates to");
            }
            return Ok(None);
        };
        let server = parse_addr(server, 53).context("dns-01 server")?;
        let key = self.key_source()?;
        let zone = self
            .zone
            .as_deref()
            .map(Hostname::parse)
            .transpose()
            .context("dns-01 zone")?;
        if zone.as_ref().is_some_and(Hostname::is_wildcard) {
            bail!("dns-01 zone must not be a wildcard");
        }
        let ttl = match self.ttl {
            None => DEFAULT_TTL,
            Some(t) if (1..=86400).contains(&t) => t as u32,
            Some(t) => bail!("dns-01 ttl: {t} is not between 1 and 86400"),
        };
        let timeout = seconds(self.timeout, DEFAULT_TIMEOUT, 300, "timeout")?;
        if timeout.is_zero() {
            bail!("dns-01 timeout must be at least 1 second");
        }
        let propagation = seconds(
            self.propagation_timeout,
            DEFAULT_PROPAGATION_TIMEOUT,
            3600,
            "propagation-timeout",
        )?;
        let resolver = ResolverConfig {
            servers: self.resolver_addresses()?,
            nameserver_addresses: self.nameserver_addresses()?,
            authoritative_port: 53,
            timeout,
        };
        Ok(Some(Dns01Settings {
            rfc2136: Rfc2136Config {
                server,
                key,
                zone,
                ttl,
                timeout,
                resolver,
            },
            propagation_timeout: (!propagation.is_zero()).then_some(propagation),
        }))
    }

    /// The TSIG key: inline (`key-name`, `algorithm`, `secret`) or from `key-file`.
    fn key_source(&self) -> Result<KeySource> {
        Ok(match (&self.secret, &self.key_file) {
            (Some(_), Some(_)) => bail!("dns-01: set either `secret` or `key-file`, not both"),
            (None, None) => bail!("dns-01: a TSIG key is required (`secret` or `key-file`)"),
            (Some(secret), None) => {
                let name = self
                    .key_name
                    .as_deref()
                    .ok_or_else(|| anyhow!("dns-01: `secret` needs a `key-name`"))?;
                let algorithm = match &self.algorithm {
                    Some(a) => TsigAlgorithm::parse(a)?,
                    None => TsigAlgorithm::HmacSha256,
                };
                KeySource::Inline(TsigKey::new(name, algorithm, secret)?)
            }
            (None, Some(path)) => {
                let path = PathBuf::from(path);
                if !path.is_absolute() {
                    bail!(
                        "dns-01 key-file {} must be an absolute path",
                        path.display()
                    );
                }
                if self.algorithm.is_some() {
                    bail!("dns-01: `algorithm` comes from the key file; remove it");
                }
                if let Some(n) = &self.key_name {
                    Hostname::parse(n).context("dns-01 key-name")?;
                }
                KeySource::File {
                    path,
                    name: self.key_name.clone(),
                }
            }
        })
    }

    /// `resolvers`: the recursive resolvers to find the zone with (port 53 unless given).
    fn resolver_addresses(&self) -> Result<Vec<SocketAddr>> {
        self.resolvers
            .iter()
            .flatten()
            .map(|r| parse_addr(r, 53).context("dns-01 resolvers"))
            .collect()
    }

    /// `nameservers`: fixed addresses of authoritative servers by name.
    fn nameserver_addresses(&self) -> Result<BTreeMap<Hostname, Vec<SocketAddr>>> {
        let mut out = BTreeMap::new();
        for (name, addrs) in self.nameservers.iter().flatten() {
            let h = Hostname::parse(name).context("dns-01 nameservers")?;
            let addrs = addrs
                .iter()
                .map(|a| parse_addr(a, 53).with_context(|| format!("dns-01 nameservers {h}")))
                .collect::<Result<Vec<_>>>()?;
            if addrs.is_empty() {
                bail!("dns-01 nameservers: {h} has no address");
            }
            out.insert(h, addrs);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(yaml: &str) -> RawDns01 {
        serde_yaml_ng::from_str(yaml).expect("yaml")
    }

    #[test]
    fn full_section_resolves() {
        let s = raw(
            "server: 192.0.2.53\nkey-name: acme-update.\nalgorithm: HMAC-SHA512\n\
                     secret: c2VjcmV0\nzone: Example.ORG.\nttl: 30\ntimeout: 3\n\
                     propagation-timeout: 0\nresolvers: [127.0.0.53, '[::1]:5353']\n\
                     nameservers: {NS1.example.org: [192.0.2.1, '192.0.2.2:5353']}\n",
        )
        .resolve()
        .expect("valid")
        .expect("configured");
        let c = &s.rfc2136;
        assert_eq!(c.server, "192.0.2.53:53".parse().expect("addr"));
        assert_eq!(c.zone.as_ref().map(Hostname::as_str), Some("example.org"));
        assert_eq!((c.ttl, c.timeout), (30, Duration::from_secs(3)));
        assert_eq!(s.propagation_timeout, None);
        assert!(
            matches!(&c.key, KeySource::Inline(k) if k.algorithm() == TsigAlgorithm::HmacSha512 && k.name().as_str() == "acme-update")
        );
        assert_eq!(c.resolver.servers.len(), 2);
        let ns1 = Hostname::parse("ns1.example.org").expect("name");
        assert_eq!(c.resolver.nameserver_addresses[&ns1].len(), 2);
        assert!(!format!("{:?}", raw("secret: c2VjcmV0")).contains("c2Vj"));
    }

    #[test]
    fn absent_section_is_off() {
        assert_eq!(RawDns01::default().resolve().expect("ok"), None);
    }

    #[test]
    fn refusals() {
        for yaml in [
            "key-name: k\nsecret: c2VjcmV0",
            "server: example.org\nkey-name: k\nsecret: c2VjcmV0",
            "server: 192.0.2.1",
            "server: 192.0.2.1\nsecret: c2VjcmV0",
            "server: 192.0.2.1\nkey-name: k\nsecret: c2VjcmV0\nkey-file: /k",
            "server: 192.0.2.1\nkey-file: relative/k",
            "server: 192.0.2.1\nkey-file: /k\nalgorithm: hmac-sha256",
            "server: 192.0.2.1\nkey-name: k\nsecret: c2VjcmV0\nttl: 0",
            "server: 192.0.2.1\nkey-name: k\nsecret: c2VjcmV0\ntimeout: 0",
            "server: 192.0.2.1\nkey-name: k\nsecret: c2VjcmV0\npropagation-timeout: -1",
            "server: 192.0.2.1\nkey-name: k\nsecret: c2VjcmV0\nzone: '*.example.org'",
            "server: 192.0.2.1\nkey-name: k\nsecret: c2VjcmV0\nresolvers: [dns.google]",
            "server: 192.0.2.1\nkey-name: k\nsecret: c2VjcmV0\nnameservers: {ns1.example.org: []}",
        ] {
            assert!(raw(yaml).resolve().is_err(), "{yaml}");
        }
    }

    #[test]
    fn overlay_takes_the_key_whole() {
        let base = raw("server: 192.0.2.1\nkey-name: k\nsecret: c2VjcmV0\nttl: 30");
        let target = raw("key-file: /etc/acme/other.key\nzone: example.org");
        let m = target.overlay_on(&base);
        assert_eq!(m.server.as_deref(), Some("192.0.2.1"));
        assert_eq!((m.secret, m.key_name), (None, None));
        assert_eq!(m.key_file.as_deref(), Some("/etc/acme/other.key"));
        assert_eq!((m.ttl, m.zone.as_deref()), (Some(30), Some("example.org")));
        let m = raw("zone: example.org").overlay_on(&base);
        assert_eq!(m.secret.as_deref(), Some("c2VjcmV0"));
    }
}
