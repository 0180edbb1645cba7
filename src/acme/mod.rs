//! Talking to the CA, behind our own small traits.
//!
//! The rest of acmekeep sees only [`Ca`] (find or register an account) and [`Issuer`] (one
//! account's session: order, prove control, finalize, download). The instant-acme
//! implementation lives in [`instant`]; swapping the protocol crate, or putting a test
//! double in, touches nothing else.

pub mod http;
pub mod instant;
pub mod jws;

use std::future::Future;

use crate::challenge::Responder;
use crate::name::Hostname;

/// What the directory tells us before we have an account.
#[derive(Clone, Debug, Default)]
pub struct DirectoryMeta {
    /// `meta.termsOfService`, the URL the response file's `acme-agreement:<url>` names.
    pub terms_of_service: Option<String>,
}

/// How a new account is registered.
#[derive(Clone, Debug)]
pub struct Registration {
    /// Contact e-mail address, if any.
    pub email: Option<String>,
}

/// Errors that callers branch on.
#[derive(Debug, thiserror::Error)]
pub enum AcmeError {
    /// The account key is not registered at this CA (onlyReturnExisting said so).
    #[error("no account exists at the CA for this key")]
    AccountDoesNotExist,
    /// The CA refused or failed a request; the text carries its problem document.
    #[error("{0}")]
    Ca(String),
    /// Anything else (network, local I/O, validation of the CA's answer).
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// A CA reachable at a directory URL.
pub trait Ca: Send + Sync {
    /// One account's session.
    type Session: Issuer;
    /// Fetches the directory metadata (terms of service).
    fn directory_meta(&self) -> impl Future<Output = Result<DirectoryMeta, AcmeError>> + Send;
    /// Looks the account up by its key (newAccount with onlyReturnExisting).
    fn login(&self, key_pem: &str)
    -> impl Future<Output = Result<Self::Session, AcmeError>> + Send;
    /// Registers the key as a new account, agreeing to the terms of service.
    fn register(
        &self,
        key_pem: &str,
        reg: &Registration,
    ) -> impl Future<Output = Result<Self::Session, AcmeError>> + Send;
}

/// The result of a finished order.
#[derive(Debug)]
pub struct Issued {
    /// The order URL (acmetool's `url` file, from which the certificate id is derived).
    pub order_url: String,
    /// The PEM chain the CA returned (untrusted until validated).
    pub chain_pem: String,
}

/// An account's session with a CA.
pub trait Issuer: Send + Sync {
    /// Orders a certificate for `names`, proves control through `responder`, finalizes
    /// with `csr_der`, calls `on_finalized(order_url)` (so the order can be recorded before
    /// the download), then downloads the chain.
    fn issue(
        &self,
        names: &[Hostname],
        csr_der: &[u8],
        responder: &dyn Responder,
        on_finalized: &(dyn Fn(&str) -> anyhow::Result<()> + Sync),
    ) -> impl Future<Output = Result<Issued, AcmeError>> + Send;

    /// Downloads the certificate of an order that finished earlier (an "uncached" cert
    /// directory). `Ok(None)` means the CA is still processing it.
    fn fetch_order_certificate(
        &self,
        order_url: &str,
    ) -> impl Future<Output = Result<Option<String>, AcmeError>> + Send;

    /// RFC 7638 thumbprint of the account key.
    fn thumbprint(&self) -> String;

    /// The account URL (the `kid` the CA knows the account by).
    fn account_url(&self) -> String;

    /// Revokes a certificate (DER) with an RFC 5280 reason code.
    fn revoke(
        &self,
        cert_der: &[u8],
        reason: u8,
    ) -> impl Future<Output = Result<(), AcmeError>> + Send;
}
