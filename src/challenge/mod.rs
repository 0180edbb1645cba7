//! Proving control of a name: the responders for http-01, dns-01 and tls-alpn-01.
//!
//! The issuer asks a target's [`Responder`] which challenge types it can answer, in the
//! target's order of preference (`request.challenge.types`), picks for each authorization the
//! first one the CA offers, and has all of an order's challenges presented at once; after
//! validation, however it ended, every presented challenge is cleaned up, again all at once.
//! Within http-01, acmetool's "try everything" stays the default: every configured method
//! (webroot files, the built-in listeners, the challenge-http hooks) is set up at once, and
//! the order goes ahead if one of them could be.
//!
//! acmetool ran the challenge hooks of an order one name after the other; a DNS hook that
//! waits for propagation made a three-name order take three times as long. Here the hooks of
//! all the order's names run at the same time, and share one deadline (the hook timeout,
//! counted from the start of the presentation; the same again for the cleanup).
//!
//! The servers strangers connect to live here too: the built-in http-01 [`listener`], the
//! [`tlsalpn`] responder and the port-80 [`redirector`] daemon. They share one hardened
//! accept loop ([`accept`]) and its connection [`slots`].

pub mod accept;
pub mod config;
pub mod dns;
pub mod listener;
pub mod redirector;
pub mod selftest;
pub mod slots;
pub mod tlsalpn;
pub mod webroot;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{Result, anyhow, bail};

use crate::acme::{BoxFuture, Challenge, ChallengeKind, Responder, UnusableChallenge};
use crate::hooks::{Event, HookRunner};
use config::{ChallengeConfig, DnsConfig};
use listener::TokenMap;

/// The target's types in the order they are tried: as listed, except that dns-account-01
/// goes before dns-01 when both are allowed (it lets several machines validate one name at
/// the same time, and a CA that offers it offers dns-01 too).
pub fn preference(types: &[ChallengeKind]) -> Vec<ChallengeKind> {
    let mut out = types.to_vec();
    if let (Some(dns), Some(account)) = (
        out.iter().position(|k| *k == ChallengeKind::Dns01),
        out.iter().position(|k| *k == ChallengeKind::DnsAccount01),
    ) && account > dns
    {
        let k = out.remove(account);
        out.insert(dns, k);
    }
    out
}

/// How one name of a certificate was validated, kept with the certificate when it is
/// something to show later (`status` asks no DNS server): the dns-account-01 record (its
/// label is the account's) or the standing dns-persist-01 record that the next renewal relies
/// on too, with the `persistUntil` it was read with before the order.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Validation {
    /// The name as ordered (`*.a.example` for a wildcard).
    pub name: String,
    /// The challenge type (`dns-account-01`, `dns-persist-01`).
    #[serde(rename = "type")]
    pub kind: String,
    /// The TXT record's owner name.
    pub record: String,
    /// dns-persist-01: the record's `persistUntil` (Unix seconds) as read before the order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persist_until: Option<i64>,
}

/// Where http-01 tokens are also published so that other machines answer them (a fleet's
/// agents, doc/cluster.md). `publish` returns once the others serve the token (or a bounded
/// wait ran out): `true` if some other machine serves it; an error means the token could
/// not be published at all.
pub trait TokenShare: Send + Sync + std::fmt::Debug {
    /// Publishes `token` with its key authorization.
    fn publish<'a>(
        &'a self,
        token: &'a str,
        key_authorization: &'a str,
    ) -> BoxFuture<'a, Result<bool>>;
    /// Withdraws a published token.
    fn withdraw<'a>(&'a self, token: &'a str) -> BoxFuture<'a, ()>;
}

/// The responder for one target: its challenge settings, the run's shared listeners, hooks.
#[derive(Debug)]
pub struct TargetResponder {
    types: Vec<ChallengeKind>,
    webroots: Vec<std::path::PathBuf>,
    tokens: Arc<TokenMap>,
    listening: bool,
    self_test: bool,
    http_hooks: bool,
    dns: DnsConfig,
    env: BTreeMap<String, String>,
    hooks: Arc<HookRunner>,
    target_file: String,
    alpn: Option<Arc<tlsalpn::AlpnCerts>>,
    rfc2136: Option<dns::Dns01>,
    share: Option<Arc<dyn TokenShare>>,
    /// dns-persist-01: the `persistUntil` each record (by owner name) was read with.
    persist_until: Mutex<HashMap<String, Option<i64>>>,
    /// dns-account-01 challenges a hook published already while the type was being chosen
    /// (see `hook_account_early`).
    hooked_early: Mutex<Vec<Challenge>>,
    /// What the last presented order's challenges are worth keeping ([`Validation`]).
    validations: Mutex<Vec<Validation>>,
}

impl TargetResponder {
    /// A responder for target `target_file` with `config`, using the run's shared `tokens`
    /// map (served by the listeners; `listening` says whether any is up) and `hooks`.
    pub fn new(
        target_file: &str,
        config: &ChallengeConfig,
        tokens: Arc<TokenMap>,
        listening: bool,
        hooks: Arc<HookRunner>,
    ) -> Self {
        Self {
            types: preference(&config.types),
            webroots: config.webroot_paths.clone(),
            tokens,
            listening,
            self_test: config.self_test,
            http_hooks: config.http_hooks,
            dns: config.dns.clone(),
            env: config.env.clone(),
            hooks,
            target_file: target_file.to_owned(),
            alpn: None,
            rfc2136: config.dns.rfc2136.as_ref().map(|d| d.responder()),
            share: None,
            persist_until: Mutex::default(),
            hooked_early: Mutex::default(),
            validations: Mutex::default(),
        }
    }

    /// How the names of the order presented last were validated, where that is worth
    /// keeping with the certificate (dns-account-01, dns-persist-01).
    pub fn validations(&self) -> Vec<Validation> {
        lock(&self.validations).clone()
    }

    /// Also publishes http-01 tokens through `share` (a fleet node).
    pub fn with_share(mut self, share: Arc<dyn TokenShare>) -> Self {
        self.share = Some(share);
        self
    }

    /// Answers tls-alpn-01 through the run's listeners, which serve `certs`.
    pub fn with_tls_alpn(mut self, certs: Arc<tlsalpn::AlpnCerts>) -> Self {
        self.alpn = Some(certs);
        self
    }

    /// Runs a challenge event's hooks off the async thread (which serves the listeners), all
    /// of them stopped at `deadline`. Returns whether a hook handled it (exit 0).
    async fn run_hooks(&self, ch: &Challenge, start: bool, deadline: Instant) -> bool {
        let (hooks, file, env, ch) = (
            self.hooks.clone(),
            self.target_file.clone(),
            self.env.clone(),
            ch.clone(),
        );
        tokio::task::spawn_blocking(move || run_hook(&hooks, &file, &env, &ch, start, deadline))
            .await
            .unwrap_or(false)
    }

    /// A site that publishes DNS records only through hooks may have hooks written before
    /// dns-account-01 existed, which exit 42 ("not handled") for its event. Whether one
    /// handles it is known only by running it, so the start hook runs while the type is
    /// still being chosen, before the CA is told anything: handled, the record stands and
    /// `present` leaves it be; not handled, the authorization is answered with dns-01 as such
    /// a site always did (quietly: nothing is wrong), or, when the target does not allow
    /// dns-01, the reason is the error.
    async fn hook_account_early(&self, ch: &Challenge) -> Result<(), UnusableChallenge> {
        let deadline = Instant::now() + self.hooks.timeout();
        if self.run_hooks(ch, true, deadline).await {
            lock(&self.hooked_early).push(ch.clone());
            return Ok(());
        }
        let why = format!(
            "no challenge-dns-account-start hook published {} for {} (and no RFC 2136 server is configured)",
            ch.dns_name(),
            ch.identifier
        );
        if self.types.contains(&ChallengeKind::Dns01) {
            tracing::debug!("{why}; using dns-01");
            return Err(UnusableChallenge(String::new()));
        }
        Err(UnusableChallenge(why))
    }

    /// Presents one challenge, its hooks stopped at `deadline`.
    async fn present(&self, ch: &Challenge, deadline: Instant) -> Result<()> {
        match ch.kind {
            ChallengeKind::Http01 => self.present_http(ch, deadline).await,
            ChallengeKind::Dns01 | ChallengeKind::DnsAccount01 => {
                self.present_dns(ch, deadline).await
            }
            // The record stands in DNS already (checked by `precheck`); nothing to set up.
            ChallengeKind::DnsPersist01 => Ok(()),
            ChallengeKind::TlsAlpn01 if ch.wildcard => {
                bail!(
                    "tls-alpn-01 cannot answer for the wildcard *.{}",
                    ch.identifier
                )
            }
            ChallengeKind::TlsAlpn01 => match &self.alpn {
                Some(certs) => certs.insert(&ch.identifier, &ch.key_authorization),
                None => bail!(
                    "no tls-alpn-01 listener could bind its address for {}",
                    ch.identifier
                ),
            },
        }
    }

    /// Removes one challenge's response (not the RFC 2136 records: see `cleanup_all`).
    async fn cleanup(&self, ch: &Challenge, deadline: Instant) {
        match ch.kind {
            ChallengeKind::Http01 => {
                if self.http_hooks {
                    self.run_hooks(ch, false, deadline).await;
                }
                self.tokens.remove(&ch.token);
                for dir in &self.webroots {
                    webroot::remove(dir, &ch.token);
                }
                if let Some(share) = &self.share {
                    share.withdraw(&ch.token).await;
                }
            }
            ChallengeKind::Dns01 | ChallengeKind::DnsAccount01 => {
                if self.dns.hooks {
                    self.run_hooks(ch, false, deadline).await;
                }
            }
            ChallengeKind::TlsAlpn01 => {
                if let Some(certs) = &self.alpn {
                    certs.remove(&ch.identifier);
                }
            }
            ChallengeKind::DnsPersist01 => {}
        }
    }

    async fn present_http(&self, ch: &Challenge, deadline: Instant) -> Result<()> {
        if self.listening {
            self.tokens.insert(&ch.token, &ch.key_authorization);
        }
        let mut written = 0;
        let mut failures = Vec::new();
        for dir in &self.webroots {
            match webroot::write(dir, &ch.token, &ch.key_authorization) {
                Ok(()) => written += 1,
                Err(e) => {
                    tracing::debug!("webroot {}: {e:#}", dir.display());
                    failures.push(format!("{}: {e}", dir.display()));
                }
            }
        }
        let mut shared = false;
        if let Some(share) = &self.share {
            match share.publish(&ch.token, &ch.key_authorization).await {
                Ok(served) => shared = served,
                Err(e) => failures.push(format!("the fleet: {e:#}")),
            }
        }
        let hooked = self.http_hooks && self.run_hooks(ch, true, deadline).await;
        if written == 0 && !self.listening && !hooked && !shared {
            bail!(
                "no http-01 method is available for {}: no listener could bind its address, no webroot was writable ({}), and no hook handled it",
                ch.identifier,
                if failures.is_empty() {
                    "none configured".to_owned()
                } else {
                    failures.join("; ")
                }
            );
        }
        if self.self_test {
            selftest::check(&ch.identifier, &ch.token, &ch.key_authorization).await?;
        }
        Ok(())
    }

    async fn present_dns(&self, ch: &Challenge, deadline: Instant) -> Result<()> {
        let value = ch.dns_value();
        if lock(&self.hooked_early).iter().any(|e| same_record(e, ch)) {
            return Ok(());
        }
        // RFC 2136 first (it also waits until every authoritative server serves the record),
        // then the hooks; either one is enough.
        let mut failures = Vec::new();
        if let Some(updater) = &self.rfc2136 {
            let name = crate::name::Hostname::parse(&ch.dns_name())?;
            match updater.present_at(&name, &value).await {
                Ok(_) => return Ok(()),
                Err(e) => failures.push(format!("RFC 2136 update: {e:#}")),
            }
        }
        if self.dns.hooks {
            if self.run_hooks(ch, true, deadline).await {
                return Ok(());
            }
            failures.push(format!(
                "no {} hook exited 0",
                if ch.kind == ChallengeKind::DnsAccount01 {
                    "challenge-dns-account-start"
                } else {
                    "challenge-dns-start"
                }
            ));
        }
        if failures.is_empty() {
            failures.push(
                "neither hooks nor RFC 2136 updates are enabled (request.challenge.dns-01)"
                    .to_owned(),
            );
        }
        bail!(
            "no {} method published {}: {}",
            ch.kind.name(),
            ch.dns_name(),
            failures.join("; ")
        )
    }
}

/// The mutex's value; a panic elsewhere while it was held leaves nothing half-done in these
/// plain collections.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Whether two DNS challenges publish the same record (owner and value).
fn same_record(a: &Challenge, b: &Challenge) -> bool {
    a.kind == b.kind && a.dns_name() == b.dns_name() && a.dns_value() == b.dns_value()
}

/// Runs `challenge-*-start` or `-stop` for `ch`, every hook stopped at `deadline`; true if a
/// hook handled it (exit 0). Blocking.
fn run_hook(
    hooks: &HookRunner,
    target_file: &str,
    env: &BTreeMap<String, String>,
    ch: &Challenge,
    start: bool,
    deadline: Instant,
) -> bool {
    if hooks.hooks().map(|h| h.is_empty()).unwrap_or(true) {
        return false;
    }
    let (hostname, token, key_authorization) = (
        ch.identifier.as_str(),
        ch.token.as_str(),
        ch.key_authorization.as_str(),
    );
    let txt = ch.dns_value();
    // Never an argument a hook could take for an option (see `TargetResponder::usable`;
    // hostnames cannot begin with '-', and a target file named so is refused here too).
    let argument = if matches!(ch.kind, ChallengeKind::Dns01 | ChallengeKind::DnsAccount01) {
        txt.as_str()
    } else {
        token
    };
    if let Some(a) = [hostname, target_file, argument]
        .into_iter()
        .find(|a| a.starts_with('-'))
    {
        tracing::warn!(
            "challenge hooks not run for {hostname}: the argument {a:?} begins with '-'"
        );
        return false;
    }
    let record_name = (ch.kind == ChallengeKind::DnsAccount01).then_some(ch.record_name.as_str());
    let event = match (ch.kind, start) {
        (ChallengeKind::Http01, true) => Event::ChallengeHttpStart {
            hostname,
            target_file,
            token,
            key_authorization,
            env,
        },
        (ChallengeKind::Http01, false) => Event::ChallengeHttpStop {
            hostname,
            target_file,
            token,
            key_authorization,
            env,
        },
        (ChallengeKind::Dns01 | ChallengeKind::DnsAccount01, true) => Event::ChallengeDnsStart {
            hostname,
            target_file,
            txt_value: &txt,
            wildcard: ch.wildcard,
            record_name,
            env,
        },
        (ChallengeKind::Dns01 | ChallengeKind::DnsAccount01, false) => Event::ChallengeDnsStop {
            hostname,
            target_file,
            txt_value: &txt,
            wildcard: ch.wildcard,
            record_name,
            env,
        },
        (ChallengeKind::TlsAlpn01 | ChallengeKind::DnsPersist01, _) => return false,
    };
    match hooks.run_until(&event, Some(deadline)) {
        Ok(report) => {
            for o in report.failures() {
                tracing::warn!("{} hook {}: {}", event.name(), o.path.display(), o.status);
            }
            report.any_succeeded()
        }
        Err(e) => {
            tracing::warn!("{} hooks not run: {e}", event.name());
            false
        }
    }
}

impl Responder for TargetResponder {
    fn kinds(&self) -> &[ChallengeKind] {
        &self.types
    }

    /// The hook protocol (acmetool's) passes the token, or the dns-01 TXT value, as an
    /// argument: one beginning with `-` would be read as an option by a hook that hands it
    /// to a command (`-rf…`, `--output=…`). Both are base64url, so an honest CA produces
    /// one now and then (1 in 64); a hostile one can choose it. Such a challenge is never
    /// handed to hooks: when hooks would answer it, it is refused before anything is set
    /// up, and the issuer orders again for a fresh token.
    fn usable(&self, ch: &Challenge) -> Result<(), UnusableChallenge> {
        let (argument, what, hooked) = match ch.kind {
            ChallengeKind::Http01 => (ch.token.clone(), "token", self.http_hooks),
            ChallengeKind::Dns01 | ChallengeKind::DnsAccount01 => {
                (ch.dns_value(), "TXT value", self.dns.hooks)
            }
            ChallengeKind::TlsAlpn01 | ChallengeKind::DnsPersist01 => return Ok(()),
        };
        let hooks_present = self.hooks.hooks().is_ok_and(|h| !h.is_empty());
        if hooked && hooks_present && argument.starts_with('-') {
            return Err(UnusableChallenge(format!(
                "the {} challenge for {} has a {what} beginning with '-' ({:?}), which a hook would take for an option; it is not handed to the challenge hooks",
                ch.kind.name(),
                ch.identifier,
                argument.chars().take(12).collect::<String>()
            )));
        }
        Ok(())
    }

    fn precheck<'a>(
        &'a self,
        ch: &'a Challenge,
        now: i64,
    ) -> BoxFuture<'a, Result<(), UnusableChallenge>> {
        Box::pin(async move {
            match ch.kind {
                ChallengeKind::DnsPersist01 => {
                    let Some(wanted) = ch.persist.as_ref() else {
                        return Ok(());
                    };
                    let via = self.dns.persist_check;
                    let until = dns::persist::precheck(&self.dns.resolver, via, ch, wanted, now)
                        .await
                        .map_err(UnusableChallenge)?;
                    lock(&self.persist_until).insert(ch.record_name.clone(), until);
                    Ok(())
                }
                ChallengeKind::DnsAccount01 if self.rfc2136.is_none() && self.dns.hooks => {
                    self.hook_account_early(ch).await
                }
                _ => Ok(()),
            }
        })
    }

    fn present_all<'a>(&'a self, chs: &'a [Challenge]) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let kept = chs
                .iter()
                .filter(|ch| {
                    matches!(
                        ch.kind,
                        ChallengeKind::DnsAccount01 | ChallengeKind::DnsPersist01
                    )
                })
                .map(|ch| Validation {
                    name: format!("{}{}", if ch.wildcard { "*." } else { "" }, ch.identifier),
                    kind: ch.kind.name().to_owned(),
                    record: ch.record_name.clone(),
                    persist_until: lock(&self.persist_until)
                        .get(&ch.record_name)
                        .copied()
                        .flatten(),
                })
                .collect();
            *lock(&self.validations) = kept;
            let deadline = Instant::now() + self.hooks.timeout();
            let results =
                futures_util::future::join_all(chs.iter().map(|ch| self.present(ch, deadline)))
                    .await;
            let failed: Vec<String> = chs
                .iter()
                .zip(results)
                .filter_map(|(ch, r)| {
                    r.err().map(|e| {
                        format!(
                            "answering the {} challenge for {}: {e:#}",
                            ch.kind.name(),
                            ch.identifier
                        )
                    })
                })
                .collect();
            if failed.is_empty() {
                Ok(())
            } else {
                Err(anyhow!("{}", failed.join("; ")))
            }
        })
    }

    fn cleanup_all<'a>(&'a self, chs: &'a [Challenge]) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let deadline = Instant::now() + self.hooks.timeout();
            // Records a hook published while the type was chosen, for an order that then
            // never got as far as presenting them.
            let early: Vec<Challenge> = std::mem::take(&mut *lock(&self.hooked_early))
                .into_iter()
                .filter(|e| !chs.iter().any(|ch| same_record(e, ch)))
                .collect();
            futures_util::future::join_all(
                chs.iter()
                    .chain(&early)
                    .map(|ch| self.cleanup(ch, deadline)),
            )
            .await;
            // Every record this target published, whatever challenge it was for.
            if chs
                .iter()
                .any(|ch| matches!(ch.kind, ChallengeKind::Dns01 | ChallengeKind::DnsAccount01))
                && let Some(updater) = &self.rfc2136
            {
                updater.cleanup().await;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A responder for a hook-only site (no RFC 2136 server) allowing `types`, whose one
    /// hook handles `challenge-dns-start` and, if `account`, `challenge-dns-account-start`
    /// (each logged), and exits 42 for every other event, as acmetool hooks do.
    fn hooked(types: &[ChallengeKind], account: bool) -> (tempfile::TempDir, TargetResponder) {
        let dir = tempfile::tempdir().expect("tempdir");
        let hooks = dir.path().join("hooks");
        std::fs::create_dir(&hooks).expect("hooks");
        let log = dir.path().join("log");
        let handled = if account {
            "challenge-dns-start|challenge-dns-stop|challenge-dns-account-start|challenge-dns-account-stop"
        } else {
            "challenge-dns-start|challenge-dns-stop"
        };
        let hook = hooks.join("dns");
        std::fs::write(
            &hook,
            format!(
                "#!/bin/sh\ncase \"$1\" in {handled}) echo \"$1\" >> '{}'; exit 0;; esac\nexit 42\n",
                log.display()
            ),
        )
        .expect("hook");
        std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let config = ChallengeConfig {
            types: types.to_vec(),
            webroot_paths: Vec::new(),
            http_ports: Vec::new(),
            listen_http: false,
            listen_proxy: false,
            http_hooks: false,
            tls_alpn_addrs: Vec::new(),
            dns: DnsConfig {
                hooks: true,
                ..DnsConfig::default()
            },
            self_test: false,
            env: BTreeMap::new(),
        };
        let runner = Arc::new(HookRunner::new(vec![hooks], dir.path().to_owned()));
        let responder =
            TargetResponder::new("t", &config, Arc::new(TokenMap::default()), false, runner);
        (dir, responder)
    }

    fn account_challenge() -> Challenge {
        Challenge {
            kind: ChallengeKind::DnsAccount01,
            identifier: "a.example".to_owned(),
            wildcard: false,
            token: "tok".to_owned(),
            key_authorization: "tok.thumb".to_owned(),
            record_name: "_k62qhz3q6bfbgyss._acme-challenge.a.example".to_owned(),
            persist: None,
        }
    }

    fn log(dir: &tempfile::TempDir) -> String {
        std::fs::read_to_string(dir.path().join("log")).unwrap_or_default()
    }

    #[tokio::test]
    async fn a_hook_only_site_without_a_dns_account_01_hook_uses_dns_01_quietly() {
        let (dir, r) = hooked(&[ChallengeKind::DnsAccount01, ChallengeKind::Dns01], false);
        let e = r
            .precheck(&account_challenge(), 0)
            .await
            .expect_err("not handled");
        assert_eq!(e.0, "", "quiet: dns-01 is the expected answer");
        assert_eq!(log(&dir), "");
        // Without dns-01 to fall back on, the reason is the error.
        let (_dir, r) = hooked(&[ChallengeKind::DnsAccount01], false);
        let e = r.precheck(&account_challenge(), 0).await.expect_err("no");
        assert!(
            e.0.contains("no challenge-dns-account-start hook published _k62qhz3q6bfbgyss._acme-challenge.a.example"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn a_dns_account_01_hook_runs_once_while_the_type_is_chosen_and_is_cleaned_up() {
        let (dir, r) = hooked(&[ChallengeKind::DnsAccount01, ChallengeKind::Dns01], true);
        let ch = account_challenge();
        r.precheck(&ch, 0).await.expect("handled");
        r.present_all(std::slice::from_ref(&ch))
            .await
            .expect("present");
        assert_eq!(log(&dir), "challenge-dns-account-start\n", "not run twice");
        assert_eq!(
            r.validations(),
            [Validation {
                name: "a.example".to_owned(),
                kind: "dns-account-01".to_owned(),
                record: ch.record_name.clone(),
                persist_until: None,
            }]
        );
        r.cleanup_all(std::slice::from_ref(&ch)).await;
        assert_eq!(
            log(&dir),
            "challenge-dns-account-start\nchallenge-dns-account-stop\n"
        );
        // Published while choosing, but the order never got to presenting it: still removed.
        let (dir, r) = hooked(&[ChallengeKind::DnsAccount01, ChallengeKind::Dns01], true);
        r.precheck(&ch, 0).await.expect("handled");
        r.cleanup_all(&[]).await;
        assert_eq!(
            log(&dir),
            "challenge-dns-account-start\nchallenge-dns-account-stop\n"
        );
    }
}
