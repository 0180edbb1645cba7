//! One order carried out: the key the plan chose (reused or generated, saved before
//! ordering), the CSR, the order with the plan's `replaces`, profile and chain preference,
//! the issued certificate validated and stored; or, on a fleet node, an order another process
//! finalized finished without ordering anew.

use anyhow::{Context, Result, anyhow};

use super::{Finishing, OrderGate};
use crate::acme::{Chains, Issuer, OrderOptions, Responder};
use crate::cert::{self, CertSummary};
use crate::challenge::TargetResponder;
use crate::clock::Clock;
use crate::keys::PrivateKey;
use crate::plan::work::{KeyChoice, Order};
use crate::store::Store;
use crate::target::Target;

/// Everything for one target: key, CSR, order, validation of the result, cert directory.
/// On a fleet node the order is recorded with the `gate` before it is finalized.
pub(super) async fn issue_one<I: Issuer>(
    store: &Store,
    session: &I,
    account_id: &str,
    (t, order): (&Target, &Order),
    (responder, gate): (&TargetResponder, Option<&dyn OrderGate>),
    clock: &dyn Clock,
) -> Result<CertSummary> {
    let key = match &order.key {
        KeyChoice::Reuse(id) => store
            .load_key(id)
            .with_context(|| format!("request.key.id {id}"))?,
        KeyChoice::Generate(spec) => {
            let spec = *spec;
            tokio::task::spawn_blocking(move || PrivateKey::generate(spec))
                .await
                .context("key generation task")??
        }
    };
    // Saved before ordering (acmetool): a finished order must never lack its key.
    store.save_key(&key)?;
    let csr = build_csr(t, &key)?;
    let names: Vec<String> = t.request_names.iter().map(|n| n.to_string()).collect();
    let on_finalized = |order_url: &str| -> Result<()> {
        store.begin_cert(order_url, Some(account_id))?;
        Ok(())
    };
    let options = OrderOptions {
        replaces: order.replaces.as_deref(),
        profile: order.profile.as_deref(),
        alternate_chains: !order.preferred_chain.is_empty(),
    };
    let recorded;
    let ordering: &dyn Responder = match gate {
        Some(gate) => {
            recorded = Recorded {
                inner: responder,
                gate,
                file: &t.file,
                key_id: &key.id,
                account: account_id,
            };
            &recorded
        }
        None => responder,
    };
    let issued = session
        .issue(&t.request_names, &csr, options, ordering, &on_finalized)
        .await
        .map_err(|e| anyhow!(e))?;
    let id = crate::keys::ids::cert_id(&issued.order_url);
    let pem = keep_chain(
        &format!("certs/{id}"),
        &issued.chains,
        &order.preferred_chain,
    );
    // Valid at the time it arrives: the CA may date it from the moment it issued it.
    let files = cert::validate_issued(pem, &key.id, &names, clock.now_utc())?;
    // Before `cert`, which makes the directory complete.
    store.write_cert_validations(&id, &responder.validations())?;
    store.finish_cert(&id, Some(&key.id), &files)?;
    if let Some(p) = &order.profile {
        store.write_cert_profile(&id, p)?;
    }
    tracing::info!("obtained certificate {id} for {}", names.join(", "));
    Ok(files
        .leaf
        .into_summary(&id, true, false, order.profile.clone()))
}

/// Finishes the order `f` that a process which no longer holds the target recorded as
/// finalizing (a fleet node, doc/cluster.md): its certificate is downloaded (the order
/// finalized first if the CA still waits for that), never a second one ordered.
pub(super) async fn finish_one<I: Issuer>(
    store: &Store,
    session: &I,
    account_id: &str,
    (t, order): (&Target, &Order),
    f: &Finishing,
    clock: &dyn Clock,
) -> Result<CertSummary> {
    let key = store
        .load_key(&f.key_id)
        .with_context(|| format!("the key of order {} (placed by node {})", f.url, f.node))?;
    let csr = build_csr(t, &key)?;
    let names: Vec<String> = t.request_names.iter().map(|n| n.to_string()).collect();
    let chains = session
        .finish_order(&f.url, &csr, !order.preferred_chain.is_empty())
        .await
        .map_err(|e| anyhow!(e))
        .with_context(|| format!("finishing order {} placed by node {}", f.url, f.node))?
        .ok_or_else(|| {
            anyhow!(
                "the CA is still processing order {} (placed by node {}); trying next run",
                f.url,
                f.node
            )
        })?;
    store.begin_cert(&f.url, Some(account_id))?;
    let id = crate::keys::ids::cert_id(&f.url);
    let pem = keep_chain(&format!("certs/{id}"), &chains, &order.preferred_chain);
    let files = cert::validate_issued(pem, &key.id, &names, clock.now_utc())?;
    // As the node that placed the order recorded them; before `cert`, as in `issue_one`.
    store.write_cert_validations(&id, &f.validations)?;
    store.finish_cert(&id, Some(&key.id), &files)?;
    if let Some(p) = &order.profile {
        store.write_cert_profile(&id, p)?;
    }
    tracing::info!(
        "obtained certificate {id} for {} from the order node {} finalized",
        names.join(", "),
        f.node
    );
    Ok(files
        .leaf
        .into_summary(&id, true, false, order.profile.clone()))
}

/// A target's responder that also records the order with the fleet's gate before it is
/// finalized ([`Responder::finalizing`]).
struct Recorded<'a> {
    inner: &'a TargetResponder,
    gate: &'a dyn OrderGate,
    file: &'a str,
    key_id: &'a str,
    account: &'a str,
}

impl Responder for Recorded<'_> {
    fn kinds(&self) -> &[crate::acme::ChallengeKind] {
        self.inner.kinds()
    }
    fn usable(&self, ch: &crate::acme::Challenge) -> Result<(), crate::acme::UnusableChallenge> {
        self.inner.usable(ch)
    }
    fn precheck<'a>(
        &'a self,
        ch: &'a crate::acme::Challenge,
        now: i64,
    ) -> crate::acme::BoxFuture<'a, Result<(), crate::acme::UnusableChallenge>> {
        self.inner.precheck(ch, now)
    }
    fn present_all<'a>(
        &'a self,
        chs: &'a [crate::acme::Challenge],
    ) -> crate::acme::BoxFuture<'a, Result<()>> {
        self.inner.present_all(chs)
    }
    fn cleanup_all<'a>(
        &'a self,
        chs: &'a [crate::acme::Challenge],
    ) -> crate::acme::BoxFuture<'a, ()> {
        self.inner.cleanup_all(chs)
    }
    fn finalizing<'a>(&'a self, order_url: &'a str) -> crate::acme::BoxFuture<'a, Result<()>> {
        self.gate.finalizing(
            self.file,
            order_url,
            self.key_id,
            self.account,
            self.inner.validations(),
        )
    }
}

/// The chain to store among those the CA offered, by `preferred` issuer names (see
/// [`crate::chain`]); the choice, and any alternate left out, is logged for `what`.
pub(super) fn keep_chain<'a>(what: &str, chains: &'a Chains, preferred: &[String]) -> &'a str {
    if preferred.is_empty() {
        return &chains.default;
    }
    let choice = crate::chain::choose(&chains.default, &chains.alternates, preferred);
    for w in &choice.ignored {
        tracing::warn!("{what}: {w}");
    }
    tracing::info!("{what}: {}", choice.describe());
    match choice.index.checked_sub(1) {
        Some(i) => chains.alternates.get(i).unwrap_or(&chains.default),
        None => &chains.default,
    }
}

/// CSR: SANs = request names (IP addresses as iPAddress SANs), CN = the first DNS name when
/// it fits (64 characters); never an IP address in the CN (RFC 8738 practice).
pub(super) fn build_csr(t: &Target, key: &PrivateKey) -> Result<Vec<u8>> {
    let names: Vec<String> = t.request_names.iter().map(|n| n.to_string()).collect();
    let mut params = rcgen::CertificateParams::new(names.clone()).context("building the CSR")?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    let first_dns = t
        .request_names
        .iter()
        .find(|n| n.ip().is_none())
        .map(|n| n.to_string());
    if let Some(first) = first_dns.filter(|n| n.len() <= 64) {
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, first.as_str());
    }
    if t.must_staple {
        // TLS Feature extension (RFC 7633) = status_request.
        params
            .custom_extensions
            .push(rcgen::CustomExtension::from_oid_content(
                &[1, 3, 6, 1, 5, 5, 7, 1, 24],
                vec![0x30, 0x03, 0x02, 0x01, 0x05],
            ));
    }
    let csr = params
        .serialize_request(&key.pair)
        .context("signing the CSR")?;
    Ok(csr.der().to_vec())
}
