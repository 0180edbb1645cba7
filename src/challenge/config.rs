//! A target's challenge settings, resolved (by `target`) into the values the responders use.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::acme::ChallengeKind;

/// The webroot acmetool always writes challenge files to.
pub const DEFAULT_WEBROOT: &str = "/var/run/acme/acme-challenge";

/// dns-01 settings resolved for one target.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct DnsConfig {
    /// Use the challenge-dns-start/stop hooks.
    pub hooks: bool,
    /// RFC 2136 updates (with the propagation check), when a server is configured.
    pub rfc2136: Option<super::dns::settings::Dns01Settings>,
    /// The lookups' settings (`dns-01.resolvers`, `nameservers`, `timeout`).
    pub resolver: super::dns::ResolverConfig,
    /// How the standing dns-persist-01 record is read before an order.
    pub persist_check: super::dns::settings::PersistCheck,
}

/// Challenge settings resolved for one target.
#[derive(Clone, Debug, PartialEq)]
pub struct ChallengeConfig {
    /// Challenge types in order of preference; for each authorization the first one the CA
    /// offers is used.
    pub types: Vec<ChallengeKind>,
    /// Directories challenge files are written into (the default webroot first).
    pub webroot_paths: Vec<PathBuf>,
    /// Extra listen addresses for the built-in HTTP responder.
    pub http_ports: Vec<String>,
    /// Listen on port 80 (acmetool's `listen` method).
    pub listen_http: bool,
    /// Listen on loopback 402 and 4402 (acmetool's `proxy` method).
    pub listen_proxy: bool,
    /// Run the challenge-http-start/stop hooks (the `hook` method).
    pub http_hooks: bool,
    /// tls-alpn-01 listen addresses.
    pub tls_alpn_addrs: Vec<String>,
    /// dns-01 settings.
    pub dns: DnsConfig,
    /// Whether to check our own challenge response over HTTP before asking the CA.
    pub self_test: bool,
    /// Extra environment for challenge hooks.
    pub env: BTreeMap<String, String>,
}
