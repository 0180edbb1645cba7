//! Targets: the `desired/` files and the `conf/target` defaults (acmetool schema, §2.1).
//!
//! Parsing happens in two layers. [`RawTarget`] mirrors the YAML exactly (every field
//! optional, unknown keys ignored as yaml.v2 did) so files round-trip; [`Target`] is the
//! resolved, validated value the planner works with: names normalised, inheritance from
//! `conf/target` applied, defaults filled in, and everything that will later become a path,
//! a URL or a CSR field checked here, once.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::acme::{ChallengeKind, EabCredentials};
use crate::challenge::config::{ChallengeConfig, DEFAULT_WEBROOT, DnsConfig};
use crate::challenge::dns::settings::{RawDns01, RawDnsPersist01};
use crate::keys::{KeyFamily, KeySpec};
use crate::name::Hostname;

/// Let's Encrypt's production directory, acmetool's default provider.
pub const DEFAULT_PROVIDER: &str = "https://acme-v02.api.letsencrypt.org/directory";
/// Let's Encrypt's ACMEv1 directory (acmetool 0.0.x's default), mapped to the v2 one.
pub const LE_V1_PROVIDER: &str = "https://acme-v01.api.letsencrypt.org/directory";

/// The directories an account registered at `directory_url` is used at: its own, and for an
/// ACMEv1 Let's Encrypt account the v2 directory too (acmetool 0.2 reuses it: Let's Encrypt
/// knows the same key there).
pub fn directories_served(directory_url: &str) -> impl Iterator<Item = &str> {
    std::iter::once(directory_url)
        .chain((directory_url == LE_V1_PROVIDER).then_some(DEFAULT_PROVIDER))
}
/// acmetool's default renewal margin in days.
pub const DEFAULT_MARGIN_DAYS: u32 = 30;
/// Largest target file we read.
pub const MAX_TARGET_FILE: u64 = 1024 * 1024;

/// A target file as written on disk. Every field is optional; see the module docs.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct RawTarget {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub satisfy: Option<RawSatisfy>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request: Option<RawRequest>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// Legacy top-level names, used only when `satisfy.names` is empty.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub names: Option<Vec<String>>,
    /// Legacy top-level provider, used only when `request.provider` is empty.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// acmekeep extension, read from `conf/target` only: monitoring (metrics, notices).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub monitor: Option<RawMonitor>,
    /// acmekeep extension (doc/cluster.md): the fleet labels of a target file; a node that
    /// subscribes to labels keeps only the targets with one of them, or with none.
    #[serde(rename = "cluster-labels", skip_serializing_if = "Option::is_none")]
    pub cluster_labels: Option<Vec<String>>,
}

/// `monitor:` section of `conf/target` (acmekeep extension; acmetool ignores it).
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, rename_all = "kebab-case")]
pub struct RawMonitor {
    /// Where each run writes its Prometheus metrics (node_exporter's textfile collector).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_file: Option<String>,
}

/// `satisfy:` section.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct RawSatisfy {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub names: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub margin: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<RawSatisfyKey>,
}

/// `satisfy.key:` section.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct RawSatisfyKey {
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

/// `request:` section.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, rename_all = "kebab-case")]
pub struct RawRequest {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub names: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// acmekeep extension: extra PEM bundle of CAs trusted for the provider's TLS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider_ca_bundle: Option<String>,
    /// acmekeep extension: the CAs (directory URLs) a target is ordered from, in order, when
    /// `provider` cannot issue in a run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback_providers: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<RawKey>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ocsp_must_staple: Option<bool>,
    /// acmekeep extension: the ACME profile to order with (the CA's `meta.profiles`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// acmekeep extension: the chain to keep among those the CA offers, by issuer name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preferred_chain: Option<OneOrMany>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub challenge: Option<RawChallenge>,
    /// acmekeep extension: External Account Binding credentials for the provider.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eab: Option<RawEab>,
}

/// `request.eab:` section: the External Account Binding a CA requires for new accounts.
#[derive(Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, rename_all = "kebab-case")]
pub struct RawEab {
    /// The CA's key identifier.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    /// The MAC key, base64url as the CA gives it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hmac_key: Option<String>,
    /// `hs256` (default), `hs384` or `hs512`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub algorithm: Option<String>,
}

impl std::fmt::Debug for RawEab {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The MAC key is a secret: never in logs.
        f.debug_struct("RawEab")
            .field("kid", &self.kid)
            .field("hmac_key", &self.hmac_key.as_ref().map(|_| "<redacted>"))
            .field("algorithm", &self.algorithm)
            .finish()
    }
}

impl RawEab {
    /// The credentials, if any are given: `kid` and `hmac-key` come together or not at all.
    pub fn resolve(&self) -> Result<Option<EabCredentials>> {
        let text = |v: &Option<String>| v.as_deref().map(str::trim).unwrap_or("").to_owned();
        let (kid, key) = (text(&self.kid), text(&self.hmac_key));
        match (kid.is_empty(), key.is_empty()) {
            (true, true) => Ok(None),
            (false, true) => bail!("request.eab gives a kid but no hmac-key"),
            (true, false) => bail!("request.eab gives an hmac-key but no kid"),
            (false, false) => EabCredentials::parse(&kid, &key, self.algorithm.as_deref())
                .map(Some)
                .context("in request.eab"),
        }
    }
}

/// `request.key:` section.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, rename_all = "kebab-case")]
pub struct RawKey {
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rsa_size: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ecdsa_curve: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

/// `request.challenge:` section.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, rename_all = "kebab-case")]
pub struct RawChallenge {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webroot_paths: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_ports: Option<Vec<PortValue>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_self_test: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub env: Option<BTreeMap<String, String>>,
    /// acmekeep extension: listen on acmetool's default ports (:80, loopback :402/:4402).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_listeners: Option<bool>,
    /// acmekeep extension: replaces `/var/run/acme/acme-challenge`; empty disables it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_webroot: Option<String>,
    /// acmekeep extension: challenge types in order of preference (`http-01`, `dns-01`,
    /// `tls-alpn-01`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub types: Option<Vec<String>>,
    /// acmekeep extension: http-01 methods (`webroot`, `listen`, `proxy`, `redirector`,
    /// `hook`); default all of them, acmetool's "try everything".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_methods: Option<Vec<String>>,
    /// acmekeep extension: tls-alpn-01 listen addresses (default `:443`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_alpn_ports: Option<Vec<PortValue>>,
    /// acmekeep extension: dns-01 settings (hooks, RFC 2136 updates, propagation check).
    #[serde(rename = "dns-01", skip_serializing_if = "Option::is_none")]
    pub dns_01: Option<RawDns01>,
    /// acmekeep extension: dns-persist-01 settings (how the standing record is checked).
    #[serde(rename = "dns-persist-01", skip_serializing_if = "Option::is_none")]
    pub dns_persist_01: Option<RawDnsPersist01>,
}

/// A setting written as one string or as a list of them (`x` or `[x, y]`).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(untagged)]
pub enum OneOrMany {
    /// A single string.
    One(String),
    /// A list, in order of preference.
    Many(Vec<String>),
}

impl OneOrMany {
    /// The strings, in order.
    pub fn as_slice(&self) -> &[String] {
        match self {
            OneOrMany::One(s) => std::slice::from_ref(s),
            OneOrMany::Many(v) => v,
        }
    }
}

/// An `http-ports` entry: YAML lets people write `402` or `"402"` or `"host:port"`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(untagged)]
pub enum PortValue {
    /// A bare port number.
    Number(u16),
    /// `"402"` or `"host:port"`.
    Text(String),
}

impl RawTarget {
    /// Parses YAML text. An empty file is a target with no settings.
    pub fn parse(text: &str) -> Result<Self, serde_yaml_ng::Error> {
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        serde_yaml_ng::from_str(text)
    }

    /// [`RawTarget::parse`], also returning the paths (map keys from the top) of the keys it
    /// does not read (acmetool ignored them; acmekeep ignores them too, and says so).
    pub fn parse_reporting(text: &str) -> Result<(Self, Vec<Vec<String>>), serde_yaml_ng::Error> {
        fn keys(p: &serde_ignored::Path, out: &mut Vec<String>) {
            use serde_ignored::Path;
            match p {
                Path::Root => {}
                Path::Seq { parent, index } => {
                    keys(parent, out);
                    out.push(index.to_string());
                }
                Path::Map { parent, key } => {
                    keys(parent, out);
                    out.push(key.clone());
                }
                Path::Some { parent }
                | Path::NewtypeStruct { parent }
                | Path::NewtypeVariant { parent } => keys(parent, out),
            }
        }
        if text.trim().is_empty() {
            return Ok((Self::default(), Vec::new()));
        }
        let mut unknown = Vec::new();
        let raw = serde_ignored::deserialize(serde_yaml_ng::Deserializer::from_str(text), |p| {
            let mut path = Vec::new();
            keys(&p, &mut path);
            unknown.push(path);
        })?;
        Ok((raw, unknown))
    }

    /// Overlays `self` (a target file) on `base` (the defaults): present fields win, lists
    /// replace lists, `env` merges per key.
    pub fn overlay_on(&self, base: &RawTarget) -> RawTarget {
        let (s, bs) = (
            self.satisfy.clone().unwrap_or_default(),
            base.satisfy.clone().unwrap_or_default(),
        );
        let (r, br) = (
            self.request.clone().unwrap_or_default(),
            base.request.clone().unwrap_or_default(),
        );
        let (k, bk) = (
            r.key.clone().unwrap_or_default(),
            br.key.clone().unwrap_or_default(),
        );
        let (c, bc) = (
            r.challenge.clone().unwrap_or_default(),
            br.challenge.clone().unwrap_or_default(),
        );
        RawTarget {
            satisfy: Some(RawSatisfy {
                names: s.names.clone(),
                margin: pick(&s.margin, &bs.margin),
                key: Some(RawSatisfyKey {
                    kind: pick(
                        &s.key.clone().unwrap_or_default().kind,
                        &bs.key.clone().unwrap_or_default().kind,
                    ),
                }),
            }),
            request: Some(RawRequest {
                names: r.names.clone(),
                provider: pick(&r.provider, &br.provider),
                provider_ca_bundle: pick(&r.provider_ca_bundle, &br.provider_ca_bundle),
                fallback_providers: pick(&r.fallback_providers, &br.fallback_providers),
                key: Some(RawKey {
                    kind: pick(&k.kind, &bk.kind),
                    rsa_size: pick(&k.rsa_size, &bk.rsa_size),
                    ecdsa_curve: pick(&k.ecdsa_curve, &bk.ecdsa_curve),
                    id: pick(&k.id, &bk.id),
                }),
                ocsp_must_staple: pick(&r.ocsp_must_staple, &br.ocsp_must_staple),
                profile: pick(&r.profile, &br.profile),
                preferred_chain: pick(&r.preferred_chain, &br.preferred_chain),
                challenge: Some(c.overlay_on(&bc)),
                // EAB credentials belong to a CA: a target naming its own provider does not
                // inherit those of conf/target's.
                eab: if r.provider.is_some() || self.provider.is_some() {
                    r.eab.clone()
                } else {
                    pick(&r.eab, &br.eab)
                },
            }),
            priority: pick(&self.priority, &base.priority),
            label: pick(&self.label, &base.label),
            names: self.names.clone(),
            provider: pick(&self.provider, &base.provider),
            // Read from conf/target only, never inherited.
            monitor: self.monitor.clone(),
            // A target file's own, never inherited.
            cluster_labels: self.cluster_labels.clone(),
        }
    }
}

/// `top` if present, else `base`.
fn pick<T: Clone>(top: &Option<T>, base: &Option<T>) -> Option<T> {
    top.clone().or_else(|| base.clone())
}

impl RawChallenge {
    /// Overlays `self` (a target file's) on `base` (the defaults'): present fields win,
    /// `env` merges per key, the dns-01 and dns-persist-01 settings overlay field by field.
    fn overlay_on(&self, base: &RawChallenge) -> RawChallenge {
        let (c, bc) = (self, base);
        let env = match (&bc.env, &c.env) {
            (None, None) => None,
            (b, t) => {
                let mut m = b.clone().unwrap_or_default();
                m.extend(t.clone().unwrap_or_default());
                Some(m)
            }
        };
        RawChallenge {
            webroot_paths: pick(&c.webroot_paths, &bc.webroot_paths),
            http_ports: pick(&c.http_ports, &bc.http_ports),
            http_self_test: pick(&c.http_self_test, &bc.http_self_test),
            env,
            default_listeners: pick(&c.default_listeners, &bc.default_listeners),
            default_webroot: pick(&c.default_webroot, &bc.default_webroot),
            types: pick(&c.types, &bc.types),
            http_methods: pick(&c.http_methods, &bc.http_methods),
            tls_alpn_ports: pick(&c.tls_alpn_ports, &bc.tls_alpn_ports),
            dns_01: match (&c.dns_01, &bc.dns_01) {
                (Some(t), Some(b)) => Some(t.overlay_on(b)),
                (t, b) => pick(t, b),
            },
            dns_persist_01: match (&c.dns_persist_01, &bc.dns_persist_01) {
                (Some(t), Some(b)) => Some(t.overlay_on(b)),
                (t, b) => pick(t, b),
            },
        }
    }
}

/// `request.fallback-providers`: each a valid directory URL (as `provider`), in order, each
/// once, and never the preferred `provider` itself (it is asked first anyway).
fn fallback_providers(listed: Option<&[String]>, provider: &str) -> Result<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for url in listed.into_iter().flatten() {
        let url = url.trim();
        if url.is_empty() {
            continue;
        }
        let url = if url == LE_V1_PROVIDER {
            DEFAULT_PROVIDER
        } else {
            url
        };
        validate_provider(url).context("request.fallback-providers")?;
        if url != provider && !out.iter().any(|u| u == url) {
            out.push(url.to_owned());
        }
    }
    if out.len() > MAX_FALLBACK_PROVIDERS {
        bail!(
            "request.fallback-providers lists {} CAs; at most {MAX_FALLBACK_PROVIDERS}",
            out.len()
        );
    }
    Ok(out)
}

/// Most fallback providers a target may list (each one failing costs the run a CA's time).
const MAX_FALLBACK_PROVIDERS: usize = 8;

/// A resolved target.
#[derive(Clone, Debug)]
pub struct Target {
    /// File name under `desired/` (`None` for conf/target itself).
    pub file: String,
    /// Names a certificate must cover.
    pub satisfy_names: Vec<Hostname>,
    /// Names to request (satisfy names always included).
    pub request_names: Vec<Hostname>,
    /// Renewal margin in days.
    pub margin_days: u32,
    /// Key family a certificate must have, if any.
    pub satisfy_key: Option<KeyFamily>,
    /// ACME directory URL.
    pub provider: String,
    /// Extra CA bundle for the provider's TLS (and the fallback providers').
    pub provider_ca_bundle: Option<PathBuf>,
    /// The CAs to order from, in order, when `provider` cannot issue in a run
    /// (`request.fallback-providers`; never `provider` itself).
    pub fallback_providers: Vec<String>,
    /// External Account Binding credentials for registering at the provider.
    pub eab: Option<EabCredentials>,
    /// Key to generate.
    pub key: KeySpec,
    /// Existing key to reuse.
    pub key_id: Option<String>,
    /// Ask for the TLS Feature (must-staple) extension.
    pub must_staple: bool,
    /// ACME profile to order with; a certificate from another profile is renewed.
    pub profile: Option<String>,
    /// Issuer names of the preferred chain, most wanted first (empty: the CA's default
    /// chain); see [`crate::chain`].
    pub preferred_chain: Vec<String>,
    /// Challenge settings.
    pub challenge: std::sync::Arc<ChallengeConfig>,
    /// Priority in the relink disjunction.
    pub priority: i64,
    /// Label appended to live link names.
    pub label: String,
    /// Non-fatal remarks found while resolving (logged by the caller).
    pub warnings: Vec<String>,
}

fn parse_names(list: &[String], what: &str) -> Result<Vec<Hostname>> {
    let mut out: Vec<Hostname> = Vec::with_capacity(list.len());
    for n in list {
        let h = Hostname::parse(n).with_context(|| format!("in {what}"))?;
        if !out.contains(&h) {
            out.push(h);
        }
    }
    Ok(out)
}

/// Checks a directory URL: https, or http only for loopback hosts (test servers).
pub fn validate_provider(url: &str) -> Result<()> {
    let parsed = url::Url::parse(url).with_context(|| format!("provider {url:?} is not a URL"))?;
    match parsed.scheme() {
        "https" => {}
        "http" => {
            let loopback = match parsed.host() {
                Some(url::Host::Ipv4(a)) => a.is_loopback(),
                Some(url::Host::Ipv6(a)) => a.is_loopback(),
                Some(url::Host::Domain(d)) => d == "localhost",
                None => false,
            };
            if !loopback {
                bail!(
                    "provider {url:?} uses plain http; only https is allowed (http only for loopback test servers)"
                );
            }
        }
        other => bail!("provider {url:?} has unsupported scheme {other:?}"),
    }
    if parsed.host().is_none() {
        bail!("provider {url:?} has no host");
    }
    // As the request is made from it (a URL the url crate would repair is refused).
    crate::acme::vet::directory_url(url).with_context(|| format!("provider {url:?}"))?;
    Ok(())
}

/// Checks a target label, which becomes part of a `live/` file name.
fn validate_label(label: &str) -> Result<()> {
    if label.len() > 64
        || label.starts_with('.')
        || !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        bail!(
            "label {label:?} must be 1-64 characters of A-Z a-z 0-9 . _ - and not start with '.'"
        );
    }
    Ok(())
}

fn key_spec(raw: &RawKey, warnings: &mut Vec<String>) -> KeySpec {
    match raw.kind.as_deref().map(str::to_ascii_lowercase).as_deref() {
        Some("ecdsa") => match raw.ecdsa_curve.as_deref() {
            None | Some("") | Some("nistp256") => KeySpec::EcdsaP256,
            Some("nistp384") => KeySpec::EcdsaP384,
            Some("nistp521") => {
                warnings.push(
                    "ecdsa-curve nistp521 is not accepted by public CAs; using nistp384".into(),
                );
                KeySpec::EcdsaP384
            }
            Some(other) => {
                warnings.push(format!(
                    "unknown ecdsa-curve {other:?}; using nistp256 as acmetool does"
                ));
                KeySpec::EcdsaP256
            }
        },
        other => {
            if let Some(o) = other.filter(|o| !o.is_empty() && *o != "rsa") {
                warnings.push(format!(
                    "unknown key type {o:?}; using rsa as acmetool does"
                ));
            }
            let bits = raw.rsa_size.unwrap_or(2048).clamp(2048, 4096);
            let bits = match bits {
                ..=2048 => 2048,
                2049..=3072 => 3072,
                _ => 4096,
            };
            if raw.rsa_size.is_some_and(|s| s != i64::from(bits)) {
                warnings.push(format!("rsa-size {:?} rounded to {bits}", raw.rsa_size));
            }
            KeySpec::Rsa(bits)
        }
    }
}

/// Most names `request.preferred-chain` may list.
pub const MAX_PREFERRED_CHAINS: usize = 8;
/// Longest issuer name `request.preferred-chain` accepts, in bytes (X.520 allows 64
/// characters in a common name; the rest is room for UTF-8).
pub const MAX_ISSUER_NAME: usize = 256;

/// `request.preferred-chain`: issuer names in order of preference. `""` and `[]` mean no
/// preference (so a target can drop one inherited from conf/target); otherwise every name
/// must be non-empty, short and free of control characters, since it ends up in logs.
fn preferred_chain(raw: Option<&OneOrMany>) -> Result<Vec<String>> {
    let list = raw.map(OneOrMany::as_slice).unwrap_or_default();
    if let [only] = list
        && only.trim().is_empty()
    {
        return Ok(Vec::new());
    }
    if list.len() > MAX_PREFERRED_CHAINS {
        bail!(
            "request.preferred-chain lists {} names; at most {MAX_PREFERRED_CHAINS} are allowed",
            list.len()
        );
    }
    let mut out: Vec<String> = Vec::with_capacity(list.len());
    for (i, name) in list.iter().enumerate() {
        let trimmed = name.trim();
        if trimmed.is_empty() {
            bail!(
                "request.preferred-chain entry {} of {} is empty",
                i + 1,
                list.len()
            );
        }
        if trimmed.len() > MAX_ISSUER_NAME || trimmed.chars().any(char::is_control) {
            bail!(
                "request.preferred-chain name {:?} must be at most {MAX_ISSUER_NAME} bytes without control characters",
                truncate_for_message(trimmed)
            );
        }
        if !out.iter().any(|o| o == trimmed) {
            out.push(trimmed.to_owned());
        }
    }
    Ok(out)
}

/// At most 80 characters of `s`, for quoting a bad value in an error message.
fn truncate_for_message(s: &str) -> String {
    match s.char_indices().nth(80) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

fn port_addrs(ports: &[PortValue]) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for p in ports {
        let text = match p {
            PortValue::Number(n) => n.to_string(),
            PortValue::Text(t) => t.trim().to_owned(),
        };
        if let Ok(n) = text.parse::<u16>() {
            out.push(format!("127.0.0.1:{n}"));
            out.push(format!("[::1]:{n}"));
        } else if text.parse::<std::net::SocketAddr>().is_ok() {
            out.push(text);
        } else if let Some(port) = text.strip_prefix(':') {
            let n: u16 = port
                .parse()
                .with_context(|| format!("http-ports entry {text:?}"))?;
            out.push(format!("0.0.0.0:{n}"));
            out.push(format!("[::]:{n}"));
        } else {
            bail!("http-ports entry {text:?} is neither a port nor an ip:port address");
        }
    }
    Ok(out)
}

/// The http-01 methods: the configured list, or all of them (acmetool's "try everything");
/// `default-listeners: false` (acmekeep's older switch) removes `listen` and `proxy`.
fn http_methods(list: Option<&[String]>, default_listeners: Option<bool>) -> Result<Vec<String>> {
    const ALL: [&str; 5] = ["webroot", "listen", "proxy", "redirector", "hook"];
    let mut out: Vec<String> = match list {
        Some(l) => {
            for m in l {
                if !ALL.contains(&m.as_str()) {
                    bail!("http-methods entry {m:?} must be one of {}", ALL.join(", "));
                }
            }
            l.to_vec()
        }
        None => ALL.iter().map(|m| (*m).to_owned()).collect(),
    };
    if default_listeners == Some(false) {
        out.retain(|m| m != "listen" && m != "proxy");
    }
    Ok(out)
}

fn challenge_types(list: Option<&[String]>) -> Result<Vec<ChallengeKind>> {
    let Some(list) = list else {
        return Ok(vec![ChallengeKind::Http01, ChallengeKind::Dns01]);
    };
    let mut out = Vec::new();
    for t in list {
        let k = match t.as_str() {
            "http-01" => ChallengeKind::Http01,
            "dns-01" => ChallengeKind::Dns01,
            "tls-alpn-01" => ChallengeKind::TlsAlpn01,
            "dns-account-01" => ChallengeKind::DnsAccount01,
            "dns-persist-01" => ChallengeKind::DnsPersist01,
            other => bail!(
                "challenge type {other:?} must be http-01, dns-01, dns-account-01, dns-persist-01 or tls-alpn-01"
            ),
        };
        if !out.contains(&k) {
            out.push(k);
        }
    }
    if out.is_empty() {
        bail!("request.challenge.types lists no challenge type");
    }
    Ok(out)
}

/// `request.challenge.env`, refused if it sets a variable that could make a root hook run
/// something else (see [`crate::hooks::refused_env_name`]).
fn hook_env(env: BTreeMap<String, String>) -> Result<BTreeMap<String, String>> {
    for name in env.keys() {
        if let Some(reason) = crate::hooks::refused_env_name(name) {
            bail!("request.challenge.env: {name:?} may not be set for hooks: {reason}");
        }
    }
    Ok(env)
}

fn dns_config(raw: Option<&RawDns01>, persist: Option<&RawDnsPersist01>) -> Result<DnsConfig> {
    let raw = raw.cloned().unwrap_or_default();
    Ok(DnsConfig {
        hooks: raw.hooks.unwrap_or(true),
        rfc2136: raw.resolve()?,
        resolver: raw.resolver()?,
        persist_check: persist.and_then(|p| p.check).unwrap_or_default(),
    })
}

/// The names a target must satisfy and the names it requests: `satisfy.names`, else `names`,
/// else the file name (acmetool); every satisfy name is requested too.
fn resolve_names(
    file: &str,
    m: &RawTarget,
    satisfy: &RawSatisfy,
    request: &RawRequest,
    warnings: &mut Vec<String>,
) -> Result<(Vec<Hostname>, Vec<Hostname>)> {
    let mut satisfy_names = match satisfy.names.as_deref() {
        Some(list) if !list.is_empty() => parse_names(list, "satisfy.names")?,
        _ => match m.names.as_deref() {
            Some(list) if !list.is_empty() => parse_names(list, "names")?,
            _ => Vec::new(),
        },
    };
    if satisfy_names.is_empty() {
        // acmetool: a file that gives no names is named after its host.
        satisfy_names = vec![
            Hostname::parse(file)
                .context("the target gives no names and its file name is not a valid hostname")?,
        ];
    }
    let mut request_names = match request.names.as_deref() {
        Some(list) if !list.is_empty() => parse_names(list, "request.names")?,
        _ => Vec::new(),
    };
    let explicit_request = !request_names.is_empty();
    for n in &satisfy_names {
        if !request_names.contains(n) {
            if explicit_request {
                warnings.push(format!(
                    "satisfy name {n} was missing from request.names; added"
                ));
            }
            request_names.push(n.clone());
        }
    }
    Ok((satisfy_names, request_names))
}

/// The directory URL: `request.provider`, else the top-level `provider`, else Let's Encrypt;
/// an ACMEv1 Let's Encrypt URL means its v2 directory.
fn resolve_provider(
    m: &RawTarget,
    request: &RawRequest,
    warnings: &mut Vec<String>,
) -> Result<String> {
    let provider = request
        .provider
        .clone()
        .filter(|p| !p.is_empty())
        .or_else(|| m.provider.clone().filter(|p| !p.is_empty()))
        .unwrap_or_else(|| DEFAULT_PROVIDER.to_owned());
    let provider = if provider == LE_V1_PROVIDER {
        warnings.push("ACMEv1 provider URL mapped to Let's Encrypt's v2 directory".into());
        DEFAULT_PROVIDER.to_owned()
    } else {
        provider
    };
    validate_provider(&provider)?;
    Ok(provider)
}

/// `satisfy.key.type` (which also forces the requested key type, as in acmetool), the key to
/// request and `request.key.id`.
fn resolve_key(
    satisfy: &RawSatisfy,
    raw_key: Option<RawKey>,
    warnings: &mut Vec<String>,
) -> Result<(Option<KeyFamily>, KeySpec, Option<String>)> {
    let satisfy_key = match satisfy.key.as_ref().and_then(|k| k.kind.as_deref()) {
        None | Some("") => None,
        Some("rsa") => Some(KeyFamily::Rsa),
        Some("ecdsa") => Some(KeyFamily::Ecdsa),
        Some(other) => bail!("satisfy.key.type {other:?} must be rsa or ecdsa"),
    };
    let mut raw_key = raw_key.unwrap_or_default();
    if let Some(family) = satisfy_key {
        let forced = match family {
            KeyFamily::Rsa => "rsa",
            KeyFamily::Ecdsa => "ecdsa",
        };
        raw_key.kind = Some(forced.to_owned());
    }
    let key = key_spec(&raw_key, warnings);
    let key_id = raw_key
        .id
        .as_deref()
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty());
    if let Some(id) = &key_id
        && !crate::keys::ids::is_well_formed_id(id)
    {
        bail!("request.key.id {id:?} is not a 52-character key id");
    }
    Ok((satisfy_key, key, key_id))
}

/// How control is proven, from `request.challenge` (its `env` aside: the caller checks it
/// last).
fn resolve_challenge(ch: &RawChallenge) -> Result<ChallengeConfig> {
    let methods = http_methods(ch.http_methods.as_deref(), ch.default_listeners)?;
    let has = |m: &str| methods.iter().any(|x| x == m);
    let mut webroot_paths = Vec::new();
    if has("webroot") || has("redirector") {
        match ch.default_webroot.as_deref() {
            None => webroot_paths.push(PathBuf::from(DEFAULT_WEBROOT)),
            Some("") => {}
            Some(p) => webroot_paths.push(PathBuf::from(p.trim_end_matches('/'))),
        }
    }
    let explicit_webroots = if has("webroot") {
        ch.webroot_paths.clone().unwrap_or_default()
    } else {
        Vec::new()
    };
    for p in explicit_webroots {
        let trimmed = p.trim_end_matches('/');
        let path = PathBuf::from(if trimmed.is_empty() { "/" } else { trimmed });
        if !path.is_absolute() {
            bail!("webroot path {p:?} must be absolute");
        }
        if !webroot_paths.contains(&path) {
            webroot_paths.push(path);
        }
    }
    for p in &webroot_paths {
        if !p.is_absolute() {
            bail!("default-webroot {:?} must be absolute", p.display());
        }
    }
    // Explicit http-ports belong to the listener methods: a method list without listen
    // and proxy turns them off too (`default-listeners: false` only drops the defaults).
    let listener_methods = has("listen") || has("proxy") || ch.http_methods.is_none();
    let http_ports = if listener_methods {
        port_addrs(&ch.http_ports.clone().unwrap_or_default())?
    } else {
        Vec::new()
    };
    let types = challenge_types(ch.types.as_deref())?;
    let tls_alpn_addrs = match &ch.tls_alpn_ports {
        Some(p) => port_addrs(p)?,
        None => vec!["0.0.0.0:443".to_owned(), "[::]:443".to_owned()],
    };
    Ok(ChallengeConfig {
        types,
        webroot_paths,
        http_ports,
        listen_http: has("listen"),
        listen_proxy: has("proxy"),
        http_hooks: has("hook"),
        tls_alpn_addrs,
        dns: dns_config(ch.dns_01.as_ref(), ch.dns_persist_01.as_ref())?,
        self_test: ch.http_self_test.unwrap_or(true),
        env: BTreeMap::new(),
    })
}

/// `request.profile`: 1-64 characters of A-Z a-z 0-9 . _ - (empty: none).
fn profile(raw: Option<&str>) -> Result<Option<String>> {
    match raw.map(str::trim).filter(|p| !p.is_empty()) {
        Some(p)
            if p.len() <= 64
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')) =>
        {
            Ok(Some(p.to_owned()))
        }
        Some(p) => bail!("request.profile {p:?} must be 1-64 characters of A-Z a-z 0-9 . _ -"),
        None => Ok(None),
    }
}

impl Target {
    /// Resolves a target file's raw content over the defaults from `conf/target`. The checks
    /// run in a fixed order (names, request, key, challenge, the rest), so a file with several
    /// mistakes is always refused for the same one.
    pub fn resolve(file: &str, raw: &RawTarget, defaults: &RawTarget) -> Result<Target> {
        let mut warnings = Vec::new();
        if raw.monitor.is_some() {
            warnings.push("`monitor` is read from conf/target only (ignored here)".to_owned());
        }
        // conf/target's names are cleared before it becomes the base (acmetool).
        let mut base = defaults.clone();
        base.names = None;
        if let Some(s) = base.satisfy.as_mut() {
            s.names = None;
        }
        if let Some(r) = base.request.as_mut() {
            r.names = None;
        }
        let mut m = raw.overlay_on(&base);
        let satisfy = m.satisfy.take().unwrap_or_default();
        let mut request = m.request.take().unwrap_or_default();

        let (satisfy_names, request_names) =
            resolve_names(file, &m, &satisfy, &request, &mut warnings)?;
        let provider = resolve_provider(&m, &request, &mut warnings)?;
        let eab = match &request.eab {
            Some(raw) => raw.resolve()?,
            None => None,
        };
        let margin = satisfy.margin.unwrap_or(i64::from(DEFAULT_MARGIN_DAYS));
        if !(0..=3650).contains(&margin) {
            bail!("satisfy.margin {margin} must be between 0 and 3650 days");
        }
        let (satisfy_key, key, key_id) = resolve_key(&satisfy, request.key.take(), &mut warnings)?;
        let mut ch = request.challenge.take().unwrap_or_default();
        let env = ch.env.take().unwrap_or_default();
        let mut challenge = resolve_challenge(&ch)?;

        let label = m.label.unwrap_or_default();
        if !label.is_empty() {
            validate_label(&label)?;
        }
        let fallback_providers =
            fallback_providers(request.fallback_providers.as_deref(), &provider)?;
        let provider_ca_bundle = request
            .provider_ca_bundle
            .filter(|s| !s.is_empty())
            .map(PathBuf::from);
        if let Some(p) = &provider_ca_bundle
            && !p.is_absolute()
        {
            bail!(
                "provider-ca-bundle {:?} must be an absolute path",
                p.display()
            );
        }
        let profile = profile(request.profile.as_deref())?;
        let preferred_chain = preferred_chain(request.preferred_chain.as_ref())?;
        challenge.env = hook_env(env)?;

        Ok(Target {
            file: file.to_owned(),
            satisfy_names,
            request_names,
            margin_days: u32::try_from(margin).unwrap_or(DEFAULT_MARGIN_DAYS),
            satisfy_key,
            fallback_providers,
            provider,
            provider_ca_bundle,
            eab,
            key,
            key_id,
            must_staple: request.ocsp_must_staple.unwrap_or(false),
            profile,
            preferred_chain,
            challenge: std::sync::Arc::new(challenge),
            priority: m.priority.unwrap_or(0),
            label,
            warnings,
        })
    }

    /// The `live/` link names this target claims: `name` or `name:label`.
    pub fn live_names(&self) -> impl Iterator<Item = String> + '_ {
        self.satisfy_names.iter().map(move |n| {
            if self.label.is_empty() {
                n.to_string()
            } else {
                format!("{n}:{}", self.label)
            }
        })
    }
}

/// Checks the settings in `conf/target` by resolving them for a placeholder target, so a
/// mistake there is reported once, as a configuration error, not as every target failing.
pub fn check_defaults(path: &Path, defaults: &RawTarget) -> Result<()> {
    let probe = RawTarget {
        satisfy: Some(RawSatisfy {
            names: Some(vec!["conf-target.invalid".to_owned()]),
            ..RawSatisfy::default()
        }),
        ..RawTarget::default()
    };
    Target::resolve("conf-target", &probe, defaults)
        .map(|_| ())
        .with_context(|| format!("in {}", path.display()))
}

/// Parses YAML bytes, naming `path` (and the line, via serde's message) on error.
pub fn parse_file(path: &Path, bytes: &[u8]) -> Result<RawTarget> {
    parse_file_checked(path, bytes).map(|(raw, _)| raw)
}

/// [`parse_file`], with a warning for each key no setting reads: its line and the key
/// probably meant ("line 5: unknown setting `request.key.http-self-test` (ignored); did you
/// mean `request.challenge.http-self-test`?").
pub fn parse_file_checked(path: &Path, bytes: &[u8]) -> Result<(RawTarget, Vec<String>)> {
    let text =
        std::str::from_utf8(bytes).with_context(|| format!("{} is not UTF-8", path.display()))?;
    let (raw, unknown) = RawTarget::parse_reporting(text)
        .map_err(yaml_error)
        .with_context(|| format!("cannot parse {}", path.display()))?;
    Ok((raw, unknown_key_warnings(text, &unknown)))
}

/// A YAML error that names its line: serde's message leaves "at line 1 column 1" out.
pub fn yaml_error(e: serde_yaml_ng::Error) -> anyhow::Error {
    match e.location() {
        Some(at) if !e.to_string().contains(" at line ") => {
            anyhow::Error::new(e).context(format!("line {}", at.line()))
        }
        _ => anyhow::Error::new(e),
    }
}

/// The warnings for the keys at the paths `unknown` of the target file `text`.
fn unknown_key_warnings(text: &str, unknown: &[Vec<String>]) -> Vec<String> {
    if unknown.is_empty() {
        return Vec::new();
    }
    static KNOWN: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    let known = KNOWN.get_or_init(crate::unknown_keys::schema::<RawTarget>);
    unknown
        .iter()
        .map(|path| {
            let key = path.join(".");
            let path: Vec<&str> = path.iter().map(String::as_str).collect();
            let line = crate::unknown_keys::key_line(text, &path)
                .map(|l| format!("line {l}: "))
                .unwrap_or_default();
            let hint = crate::unknown_keys::suggest_key(&key, known)
                .map(|k| format!("; did you mean `{k}`?"))
                .unwrap_or_default();
            format!("{line}unknown setting `{key}` (ignored){hint}")
        })
        .collect()
}

/// The YAML `want` writes for a new target: only `satisfy.names`.
pub fn new_target_yaml(names: &[Hostname]) -> Result<String> {
    let raw = RawTarget {
        satisfy: Some(RawSatisfy {
            names: Some(names.iter().map(|n| n.to_string()).collect()),
            ..RawSatisfy::default()
        }),
        ..RawTarget::default()
    };
    Ok(serde_yaml_ng::to_string(&raw)?)
}

/// acmetool's file name for a new target: `<first name>-<26 chars of base32 randomness>`.
pub fn new_target_filename(first: &Hostname, random16: [u8; 16]) -> String {
    let mut uuid = random16;
    uuid[6] = (uuid[6] & 0x0f) | 0x40; // UUIDv4 version and variant bits, as acmetool's UUID
    uuid[8] = (uuid[8] & 0x3f) | 0x80;
    let b32 = data_encoding::BASE32_NOPAD
        .encode(&uuid)
        .to_ascii_lowercase();
    format!("{first}-{b32}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(file_yaml: &str, defaults_yaml: &str) -> Result<Target> {
        let raw = RawTarget::parse(file_yaml)?;
        let defaults = RawTarget::parse(defaults_yaml)?;
        Target::resolve("t", &raw, &defaults)
    }

    #[test]
    fn dns_persist_check_is_inherited_overridden_and_an_unknown_word_names_its_line() {
        use crate::challenge::dns::settings::PersistCheck;
        let check = |file: &str, defaults: &str| {
            resolve(file, defaults).map(|t| t.challenge.dns.persist_check)
        };
        let names = "satisfy:\n  names: [x.example]\n";
        let with =
            |c: &str| format!("request:\n  challenge:\n    dns-persist-01:\n      check: {c}\n");
        assert_eq!(
            check(names, "").expect("default"),
            PersistCheck::Authoritative
        );
        assert_eq!(
            check(names, &with("resolvers")).expect("inherited"),
            PersistCheck::Resolvers
        );
        assert_eq!(
            check(&format!("{names}{}", with("off")), &with("resolvers")).expect("the target's"),
            PersistCheck::Off
        );
        assert_eq!(
            check(names, &with("\"\"")).expect("empty"),
            PersistCheck::Authoritative
        );
        // Written back as read (targets round-trip).
        let raw = RawTarget::parse(&with("resolvers")).expect("parses");
        assert!(
            serde_yaml_ng::to_string(&raw)
                .expect("yaml")
                .contains("check: resolvers")
        );
        // A word it does not know: the file does not parse, naming the key and the line.
        let e = parse_file(Path::new("conf/target"), with("sometimes").as_bytes())
            .expect_err("refused");
        let e = format!("{e:#}");
        for needle in [
            "conf/target",
            "request.challenge.dns-persist-01",
            "\"sometimes\" is not a dns-persist-01 check: authoritative, resolvers or off",
            "line 4",
        ] {
            assert!(e.contains(needle), "{needle}: {e}");
        }
        // Known to the unknown-key check (no warning for it).
        let (_, warnings) =
            parse_file_checked(Path::new("conf/target"), with("off").as_bytes()).expect("parses");
        assert!(warnings.is_empty(), "{warnings:?}");
    }

    #[test]
    fn fallback_providers_are_inherited_replaced_checked_and_never_the_preferred() {
        let defaults = "request:\n  provider: https://a.example/dir\n  fallback-providers: [https://b.example/dir, https://a.example/dir, https://b.example/dir]\n";
        let t = resolve("satisfy:\n  names: [x.example]\n", defaults).expect("resolves");
        assert_eq!(t.fallback_providers, ["https://b.example/dir"]);
        // A target's list replaces conf/target's; its own provider is left out.
        let t = resolve(
            "satisfy:\n  names: [x.example]\nrequest:\n  provider: https://b.example/dir\n  fallback-providers: [https://c.example/dir]\n",
            defaults,
        )
        .expect("resolves");
        assert_eq!(t.fallback_providers, ["https://c.example/dir"]);
        let t = resolve(
            "satisfy:\n  names: [x.example]\nrequest:\n  provider: https://b.example/dir\n",
            defaults,
        )
        .expect("resolves");
        assert_eq!(t.fallback_providers, ["https://a.example/dir"]);
        let none = resolve("satisfy:\n  names: [x.example]\n", "").expect("resolves");
        assert!(none.fallback_providers.is_empty());
        for (bad, why) in [
            ("[http://ca.example/dir]", "plain http"),
            ("[ftp://ca.example/dir]", "unsupported scheme"),
            ("[not a url]", "not a URL"),
        ] {
            let e = resolve(
                &format!("satisfy:\n  names: [x.example]\nrequest:\n  fallback-providers: {bad}\n"),
                "",
            )
            .expect_err(bad);
            let e = format!("{e:#}");
            assert!(
                e.contains("request.fallback-providers") && e.contains(why),
                "{e}"
            );
        }
    }

    #[test]
    fn defaults_apply_and_lists_replace() {
        let defaults = "request:\n  provider: https://ca.example/dir\n  key:\n    type: ecdsa\n    ecdsa-curve: nistp384\n  challenge:\n    webroot-paths:\n    - /a\n    http-ports: [402]\nsatisfy:\n  names: [ignored.example]\npriority: 5\n";
        let t = resolve("satisfy:\n  names: [A.example.org]\n", defaults).expect("resolves");
        assert_eq!(t.provider, "https://ca.example/dir");
        assert_eq!(t.key, KeySpec::EcdsaP384);
        assert_eq!(t.priority, 5);
        assert_eq!(t.satisfy_names.len(), 1);
        assert_eq!(t.satisfy_names[0].as_str(), "a.example.org");
        assert_eq!(
            t.challenge.webroot_paths,
            vec![PathBuf::from(DEFAULT_WEBROOT), PathBuf::from("/a")]
        );
        assert_eq!(t.challenge.http_ports, vec!["127.0.0.1:402", "[::1]:402"]);
        let t = resolve(
            "satisfy:\n  names: [a.b]\nrequest:\n  challenge:\n    webroot-paths: [/b/]\n    default-webroot: ''\n",
            defaults,
        )
        .expect("resolves");
        assert_eq!(t.challenge.webroot_paths, vec![PathBuf::from("/b")]);
    }

    #[test]
    fn legacy_top_level_fields_and_empty_file() {
        let t =
            resolve("names: [x.example]\nprovider: https://old.example/d\n", "").expect("legacy");
        assert_eq!(t.satisfy_names[0].as_str(), "x.example");
        assert_eq!(t.provider, "https://old.example/d");
        // An empty file is named after its file name; "t" is a valid single-label host.
        let t = resolve("", "").expect("empty");
        assert_eq!(t.satisfy_names[0].as_str(), "t");
        assert_eq!(t.provider, DEFAULT_PROVIDER);
        assert_eq!(t.key, KeySpec::Rsa(2048));
        assert_eq!(t.margin_days, 30);
    }

    #[test]
    fn request_names_gain_satisfy_names() {
        let t = resolve(
            "satisfy:\n  names: [a.b, c.d]\nrequest:\n  names: [e.f]\n",
            "",
        )
        .expect("ok");
        let got: Vec<_> = t.request_names.iter().map(|h| h.as_str()).collect();
        assert_eq!(got, ["e.f", "a.b", "c.d"]);
        assert_eq!(t.warnings.len(), 2);
        // Implicit request names (the usual case) are no reason to warn.
        let t = resolve("satisfy:\n  names: [a.b, c.d]\n", "").expect("ok");
        assert_eq!(t.request_names.len(), 2);
        assert!(t.warnings.is_empty(), "{:?}", t.warnings);
    }

    #[test]
    fn satisfy_key_type_forces_request_type() {
        let t = resolve(
            "satisfy:\n  names: [a.b]\n  key:\n    type: ecdsa\n",
            "request:\n  key:\n    type: rsa\n",
        )
        .expect("ok");
        assert_eq!(t.key, KeySpec::EcdsaP256);
        assert_eq!(t.satisfy_key, Some(KeyFamily::Ecdsa));
    }

    #[test]
    fn env_merges_per_key() {
        let t = resolve(
            "satisfy:\n  names: [a.b]\nrequest:\n  challenge:\n    env: {B: two, C: three}\n",
            "request:\n  challenge:\n    env: {A: one, B: zero}\n",
        )
        .expect("ok");
        let env: Vec<_> = t
            .challenge
            .env
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        assert_eq!(env, ["A=one", "B=two", "C=three"]);
    }

    #[test]
    fn env_that_would_change_what_root_hooks_run_is_refused_naming_the_key() {
        for key in [
            "LD_PRELOAD",
            "LD_LIBRARY_PATH",
            "BASH_ENV",
            "ENV",
            "PATH",
            "IFS",
            "PYTHONPATH",
            "PERL5OPT",
            "GLIBC_TUNABLES",
            "NODE_OPTIONS",
            "HOME",
            "BASH_FUNC_x%%",
            "1X",
            "A-B",
        ] {
            let yaml = format!(
                "satisfy:\n  names: [a.b]\nrequest:\n  challenge:\n    env: {{\"{key}\": v}}\n"
            );
            let err = resolve(&yaml, "").expect_err(key);
            let text = format!("{err:#}");
            assert!(
                text.contains(&format!("request.challenge.env: {key:?} may not be set")),
                "{text}"
            );
        }
        // Ordinary names for DNS provider credentials pass.
        resolve(
            "satisfy:\n  names: [a.b]\nrequest:\n  challenge:\n    env: {PDNS_API_KEY: k, _x1: y}\n",
            "",
        )
        .expect("ordinary names");
    }

    #[test]
    fn bad_values_are_refused() {
        for (yaml, why) in [
            ("satisfy:\n  names: [../etc]\n", "bad name"),
            ("satisfy:\n  names: [a.b]\nlabel: ../x\n", "bad label"),
            (
                "satisfy:\n  names: [a.b]\nrequest:\n  provider: http://ca.example/dir\n",
                "plain http",
            ),
            (
                "satisfy:\n  names: [a.b]\nrequest:\n  challenge:\n    webroot-paths: [rel/dir]\n",
                "relative webroot",
            ),
            (
                "satisfy:\n  names: [a.b]\nrequest:\n  key:\n    id: nope\n",
                "bad key id",
            ),
            (
                "satisfy:\n  names: [a.b]\n  margin: -1\n",
                "negative margin",
            ),
            (
                "satisfy:\n  names: [a.b]\nrequest:\n  challenge:\n    http-ports: ['x:y']\n",
                "bad port",
            ),
            // instant-acme panics on a directory URL it cannot make a request to.
            (
                "satisfy:\n  names: [a.b]\nrequest:\n  provider: 'https://ca.example/a b'\n",
                "a provider URL that is no URI",
            ),
            (
                "satisfy:\n  names: [a.b]\nrequest:\n  provider: 'https://u:p@ca.example/dir'\n",
                "user information",
            ),
        ] {
            assert!(resolve(yaml, "").is_err(), "{why}");
        }
        assert!(
            resolve(
                "satisfy:\n  names: [a.b]\nrequest:\n  provider: http://127.0.0.1:4000/dir\n",
                ""
            )
            .is_ok()
        );
    }

    #[test]
    fn eab_settings_resolve_and_stay_with_their_provider() {
        let defaults = "request:\n  provider: https://ca.example/dir\n  eab:\n    kid: kid-1\n    hmac-key: AAAA\n    algorithm: hs384\n";
        let t = resolve("satisfy:\n  names: [a.b]\n", defaults).expect("ok");
        let eab = t.eab.expect("inherited from conf/target");
        assert_eq!(eab.kid, "kid-1");
        assert_eq!(eab.hmac_key, [0, 0, 0]);
        assert_eq!(eab.algorithm, crate::acme::MacAlgorithm::Hs384);
        // Another provider: conf/target's credentials are not sent to it.
        let t = resolve(
            "satisfy:\n  names: [a.b]\nrequest:\n  provider: https://other.example/dir\n",
            defaults,
        )
        .expect("ok");
        assert!(t.eab.is_none());
        let t = resolve(
            "satisfy:\n  names: [a.b]\nprovider: https://other.example/dir\n",
            defaults,
        )
        .expect("ok");
        assert!(t.eab.is_none());
        // ... unless the target gives its own.
        let t = resolve(
            "satisfy:\n  names: [a.b]\nrequest:\n  provider: https://other.example/dir\n  eab:\n    kid: kid-2\n    hmac-key: AAAA\n",
            defaults,
        )
        .expect("ok");
        assert_eq!(t.eab.expect("own").kid, "kid-2");
        // Empty settings are no settings; half of them, or a bad key, are errors.
        assert!(
            resolve("satisfy:\n  names: [a.b]\nrequest:\n  eab: {}\n", "")
                .expect("ok")
                .eab
                .is_none()
        );
        for (eab, why) in [
            ("{kid: k}", "no hmac-key"),
            ("{hmac-key: AAAA}", "no kid"),
            ("{kid: k, hmac-key: '!!'}", "base64url"),
            ("{kid: k, hmac-key: AAAA, algorithm: es256}", "HS256"),
        ] {
            let err = resolve(
                &format!("satisfy:\n  names: [a.b]\nrequest:\n  eab: {eab}\n"),
                "",
            )
            .expect_err(why);
            let msg = format!("{err:#}");
            assert!(msg.contains(why), "{msg} should mention {why}");
        }
        // The MAC key never appears in a debug dump of the raw settings.
        let raw =
            RawTarget::parse("request:\n  eab: {kid: k, hmac-key: c2VjcmV0}\n").expect("yaml");
        assert!(!format!("{raw:?}").contains("c2VjcmV0"));
    }

    #[test]
    fn preferred_chain_is_one_name_or_a_list_and_inherits() {
        let t = resolve("satisfy:\n  names: [a.b]\n", "").expect("ok");
        assert!(t.preferred_chain.is_empty(), "no preference by default");
        let t = resolve(
            "satisfy:\n  names: [a.b]\nrequest:\n  preferred-chain: ISRG Root X1\n",
            "",
        )
        .expect("ok");
        assert_eq!(t.preferred_chain, ["ISRG Root X1"]);
        let defaults =
            "request:\n  preferred-chain: [' ISRG Root X2 ', ISRG Root X1, ISRG Root X2]\n";
        let t = resolve("satisfy:\n  names: [a.b]\n", defaults).expect("inherited");
        assert_eq!(
            t.preferred_chain,
            ["ISRG Root X2", "ISRG Root X1"],
            "trimmed, in order, duplicates dropped"
        );
        // A target's own setting replaces conf/target's; "" and [] drop it.
        let t = resolve(
            "satisfy:\n  names: [a.b]\nrequest:\n  preferred-chain: [Other Root]\n",
            defaults,
        )
        .expect("ok");
        assert_eq!(t.preferred_chain, ["Other Root"]);
        for none in ["''", "[]", "['']"] {
            let t = resolve(
                &format!("satisfy:\n  names: [a.b]\nrequest:\n  preferred-chain: {none}\n"),
                defaults,
            )
            .expect(none);
            assert!(t.preferred_chain.is_empty(), "{none}");
        }
        // The setting survives a round trip through the raw form.
        let raw = RawTarget::parse("request:\n  preferred-chain: [A, B]\n").expect("yaml");
        let text = serde_yaml_ng::to_string(&raw).expect("yaml");
        assert_eq!(RawTarget::parse(&text).expect("back"), raw, "{text}");
    }

    #[test]
    fn bad_preferred_chains_are_refused_naming_the_value() {
        let long = "x".repeat(MAX_ISSUER_NAME + 1);
        let many = format!("[{}]", ["R"; MAX_PREFERRED_CHAINS + 1].join(", "));
        for (value, why) in [
            ("[A, '']".to_owned(), "entry 2 of 2 is empty"),
            ("\"Root\\u0007CA\"".to_owned(), "\"Root\\u{7}CA\""),
            (long.clone(), "at most 256 bytes"),
            (many, "at most 8"),
        ] {
            let err = resolve(
                &format!("satisfy:\n  names: [a.b]\nrequest:\n  preferred-chain: {value}\n"),
                "",
            )
            .expect_err(why);
            let msg = format!("{err:#}");
            assert!(msg.contains("request.preferred-chain"), "{msg}");
            assert!(msg.contains(why), "{msg} should mention {why}");
            assert!(msg.len() < 400, "the message stays short: {msg}");
        }
        // conf/target is checked (and named) as a whole.
        let defaults = RawTarget::parse("request:\n  preferred-chain: ['']\n").expect("yaml");
        assert!(check_defaults(Path::new("/s/conf/target"), &defaults).is_ok());
        let defaults = RawTarget::parse("request:\n  preferred-chain: [A, ' ']\n").expect("yaml");
        let err = check_defaults(Path::new("/s/conf/target"), &defaults).expect_err("empty");
        assert!(format!("{err:#}").contains("/s/conf/target"), "{err:#}");
    }

    #[test]
    fn yaml_errors_name_the_line_even_the_first() {
        for (text, line) in [
            ("just text\n", "line 1"),
            ("- a\n- b\n", "line 1"),
            ("\tsatisfy: {}\n", "line 1"),
            ("satisfy:\n  margin: many\n", "line 2"),
        ] {
            let err = parse_file(Path::new("/s/desired/x"), text.as_bytes()).expect_err(text);
            let msg = format!("{err:#}");
            assert!(msg.contains(line), "{text:?}: {msg}");
        }
    }

    #[test]
    fn unknown_keys_are_named_with_their_line_and_a_suggestion() {
        let text = "satisfy:\n  names: [a.b]\nrequest:\n  key:\n    type: ecdsa\n    http-self-test: false\n  challenge:\n    env: {ANY: thing}\n    dns-01: {nameservers: {ns.a.b: [192.0.2.1]}}\n";
        let (_, warnings) = parse_file_checked(Path::new("t"), text.as_bytes()).expect("parses");
        assert_eq!(
            warnings,
            [
                "line 6: unknown setting `request.key.http-self-test` (ignored); did you mean `request.challenge.http-self-test`?"
            ]
        );
        // Everything acmetool's own conf/target has is known.
        let acmetool = "request:\n  provider: https://acme-v02.api.letsencrypt.org/directory\n  key:\n    type: ecdsa\n    ecdsa-curve: nistp384\n  challenge:\n    webroot-paths:\n    - /var/www/.well-known/acme-challenge\n    http-ports: [\"402\"]\n    http-self-test: true\n    env: {A: b}\n  ocsp-must-staple: true\n  names: [x.y]\nsatisfy:\n  names: [x.y]\n  margin: 30\n  key:\n    type: ecdsa\npriority: 1\nlabel: l\nnames: [x.y]\nprovider: https://x/y\n";
        let (_, warnings) =
            parse_file_checked(Path::new("t"), acmetool.as_bytes()).expect("parses");
        assert!(warnings.is_empty(), "{warnings:?}");
    }

    #[test]
    fn yaml_errors_name_the_line() {
        let err = parse_file(
            Path::new("/s/desired/x"),
            b"satisfy:\n  names: [a\n  bad: : :\n",
        )
        .expect_err("malformed");
        let msg = format!("{err:#}");
        assert!(msg.contains("/s/desired/x"), "{msg}");
        assert!(msg.contains("line"), "{msg}");
    }

    #[test]
    fn new_target_round_trips_and_quotes_wildcards() {
        let names = vec![
            Hostname::parse("*.a.b").expect("ok"),
            Hostname::parse("a.b").expect("ok"),
        ];
        let yaml = new_target_yaml(&names).expect("yaml");
        assert!(yaml.starts_with("satisfy:\n  names:\n"), "{yaml}");
        let t = resolve(&yaml, "").expect("parses back");
        assert_eq!(t.satisfy_names, names);
        let f = new_target_filename(&names[1], [7; 16]);
        assert!(f.starts_with("a.b-") && f.len() == "a.b-".len() + 26, "{f}");
    }
}
