//! The directory, nonces and account keys, and the account steps of [`Ca`]: login,
//! registration (with External Account Binding), key rollover and deactivation.

use std::pin::Pin;
use std::sync::Arc;

use anyhow::{Context, anyhow};
use bytes::Bytes;
use http_body_util::BodyExt;
use instant_acme::{Account, BodyWrapper, BytesResponse, HttpClient};
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

use super::errors::{UNRESPONSIVE_AFTER, ca_error};
use super::{InstantCa, InstantSession};
use crate::acme::http::CaHttp;
use crate::acme::jws::{AccountSigner, ForeignKey};
use crate::acme::{AcmeError, Ca, DirectoryMeta, Registration};
use crate::keys::first_private_key_der;

impl InstantCa {
    /// The key instant-acme signs with, the HTTP client to use, and the thumbprint for key
    /// authorizations. P-256 keys are used directly; RSA and P-384 keys get a placeholder
    /// P-256 key in instant-acme and a client that re-signs with the real key.
    fn key(&self, key_pem: &str) -> Result<AccountKey, AcmeError> {
        let der = key_der(key_pem)?;
        let signer = Arc::new(AccountSigner::from_der(&der)?);
        if let Some(foreign) = ForeignKey::from_der(&der)? {
            let (_, pkcs8) = instant_acme::Key::generate_pkcs8().map_err(|e| anyhow!("{e}"))?;
            let thumbprint = foreign.thumbprint();
            return Ok(AccountKey {
                pkcs8: pkcs8.secret_pkcs8_der().to_vec(),
                http: self.http.with_resigner(Arc::new(foreign)),
                thumbprint: Some(thumbprint),
                signer,
            });
        }
        let pkcs8 = match &der {
            PrivateKeyDer::Pkcs8(p) => p.secret_pkcs8_der().to_vec(),
            PrivateKeyDer::Sec1(sec1) => {
                let pair = aws_lc_rs::signature::EcdsaKeyPair::from_private_key_der(
                    &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                    sec1.secret_sec1_der(),
                )
                .map_err(|_| anyhow!("cannot read the P-256 account key"))?;
                pair.to_pkcs8v1()
                    .map_err(|_| anyhow!("cannot convert the P-256 account key"))?
                    .as_ref()
                    .to_vec()
            }
            _ => return Err(anyhow!("unsupported account key encoding").into()),
        };
        let me = AccountKey {
            pkcs8,
            http: self.http.clone(),
            thumbprint: None,
            signer,
        };
        me.pair()
            .map_err(|e| anyhow!("cannot use the account key: {e}"))?;
        Ok(me)
    }

    /// The directory's resources and metadata (RFC 8555 §7.1.1), as far as we need them.
    async fn directory(&self) -> Result<Directory, AcmeError> {
        let body = self.http.get(&self.directory_url).await?;
        let dir: Directory = serde_json::from_slice(&body).with_context(|| {
            format!("the directory at {} is not valid JSON", self.directory_url)
        })?;
        Ok(dir)
    }
}

/// The DER of the first private key in a PEM text.
fn key_der(key_pem: &str) -> Result<PrivateKeyDer<'static>, AcmeError> {
    let der = first_private_key_der(key_pem)?;
    Ok(PrivateKeyDer::try_from(der.as_slice())
        .map_err(|e| anyhow!("unrecognised account key encoding: {e}"))?
        .clone_key())
}

/// The parts of the directory object acmekeep reads itself (instant-acme reads the rest).
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Directory {
    new_account: String,
    new_nonce: Option<String>,
    key_change: Option<String>,
    #[serde(default)]
    meta: Meta,
    renewal_info: Option<String>,
}

#[derive(serde::Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Meta {
    terms_of_service: Option<String>,
    #[serde(default)]
    external_account_required: bool,
    /// Everything else, read leniently (see [`crate::acme::persist::PersistMeta::from_meta`]).
    #[serde(flatten)]
    other: serde_json::Map<String, serde_json::Value>,
}

/// A JWS body rewriter; see [`Intercept`].
type Rewrite = Arc<dyn Fn(&[u8]) -> anyhow::Result<Vec<u8>> + Send + Sync>;

/// The HTTP client for requests instant-acme cannot make as they must be made: the POST whose
/// JWS is for `url` is rewritten (and re-signed) before it goes out through `inner` (see
/// [`crate::acme::jws`]). Every other request passes through untouched.
#[derive(Clone)]
struct Intercept {
    inner: CaHttp,
    url: String,
    rewrite: Rewrite,
}

impl HttpClient for Intercept {
    fn request(
        &self,
        req: http::Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let me = self.clone();
        Box::pin(async move {
            if req.method() != http::Method::POST {
                return me.inner.request(req).await;
            }
            let (parts, body) = req.into_parts();
            let bytes = match body.collect().await {
                Ok(c) => c.to_bytes(),
                Err(never) => match never {},
            };
            let bytes = if crate::acme::jws::jws_url(&bytes).as_deref() == Some(me.url.as_str()) {
                (me.rewrite)(&bytes).map_err(|e| instant_acme::Error::Other(e.into()))?
            } else {
                bytes.to_vec()
            };
            me.inner
                .request(http::Request::from_parts(parts, BodyWrapper::from(bytes)))
                .await
        })
    }
}

/// An account key ready for instant-acme (see [`InstantCa::key`]).
struct AccountKey {
    /// PKCS#8 of the key instant-acme holds (the real one, or a placeholder).
    pkcs8: Vec<u8>,
    /// The client to send with (re-signing for foreign keys).
    http: CaHttp,
    /// Thumbprint of the real key when instant-acme holds a placeholder.
    thumbprint: Option<String>,
    /// The real key, for requests acmekeep re-signs itself.
    signer: Arc<AccountSigner>,
}

impl AccountKey {
    /// A fresh instant-acme key (it is consumed by each account call).
    fn pair(&self) -> Result<(instant_acme::Key, PrivateKeyDer<'static>), instant_acme::Error> {
        let key = instant_acme::Key::from_pkcs8_der(PrivatePkcs8KeyDer::from(self.pkcs8.clone()))?;
        Ok((
            key,
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.pkcs8.clone())),
        ))
    }
}

impl Ca for InstantCa {
    type Session = InstantSession;

    fn unresponsive(&self) -> bool {
        crate::acme::nonces::origin(&self.directory_url)
            .is_some_and(|o| self.http.timeouts(&o) >= UNRESPONSIVE_AFTER)
    }

    async fn directory_meta(&self) -> Result<DirectoryMeta, AcmeError> {
        let dir = self.directory().await?;
        Ok(DirectoryMeta {
            terms_of_service: dir.meta.terms_of_service,
            renewal_info: dir.renewal_info,
            external_account_required: dir.meta.external_account_required,
            persist: crate::acme::persist::PersistMeta::from_meta(&serde_json::Value::Object(
                dir.meta.other,
            )),
        })
    }

    async fn login(&self, key_pem: &str) -> Result<InstantSession, AcmeError> {
        let key = self.key(key_pem)?;
        let (account, _) = ca_retry!(self, async {
            Account::builder_with_http(Box::new(key.http.clone()))
                .from_key(key.pair()?, self.directory_url.clone())
                .await
        })
        .map_err(|e| ca_error("looking up the account", e))?;
        Ok(InstantSession::new(account, &key, &self.directory_url))
    }

    async fn register(
        &self,
        key_pem: &str,
        reg: &Registration,
    ) -> Result<InstantSession, AcmeError> {
        let key = self.key(key_pem)?;
        let intercept = match &reg.eab {
            None => None,
            Some(eab) => {
                // The binding goes into the newAccount request, MACed over our key's JWK.
                let (eab, signer) = (eab.clone(), key.signer.clone());
                Some(Intercept {
                    inner: key.http.clone(),
                    url: self.directory().await?.new_account,
                    rewrite: Arc::new(move |body| {
                        crate::acme::jws::bind_external_account(body, &eab, &signer)
                    }),
                })
            }
        };
        let http = || -> Box<dyn HttpClient> {
            match &intercept {
                Some(i) => Box::new(i.clone()),
                None => Box::new(key.http.clone()),
            }
        };
        let (account, _) = ca_retry!(self, async {
            Account::builder_with_http(http())
                .create_from_key(key.pair()?, self.directory_url.clone())
                .await
        })
        .map_err(|e| ca_error(crate::acme::pace::REGISTERING, e))?;
        if let Some(email) = reg.email.as_deref().filter(|e| !e.is_empty()) {
            let contact = format!("mailto:{email}");
            ca_retry!(self, account.update_contacts(&[contact.as_str()]))
                .map_err(|e| ca_error("setting the account's contact address", e))?;
        }
        Ok(InstantSession::new(account, &key, &self.directory_url))
    }

    async fn change_key(&self, old_key_pem: &str, new_key_pem: &str) -> Result<String, AcmeError> {
        let old = self.key(old_key_pem)?;
        let new = Arc::new(AccountSigner::from_der(&key_der(new_key_pem)?)?);
        let key_change = self.directory().await?.key_change.ok_or_else(|| {
            anyhow!(
                "the CA at {} does not support account key rollover (its directory has no keyChange)",
                self.directory_url
            )
        })?;
        // instant-acme sends the keyChange request (nonce, retries, outer signature by the
        // account); its inner JWS is replaced by one made with our new key.
        let old_signer = old.signer.clone();
        let http = Intercept {
            inner: old.http.clone(),
            url: key_change,
            rewrite: Arc::new(move |body| {
                crate::acme::jws::replace_key_change(body, &old_signer, &new)
            }),
        };
        let (mut account, _) = ca_retry!(self, async {
            Account::builder_with_http(Box::new(http.clone()))
                .from_key(old.pair()?, self.directory_url.clone())
                .await
        })
        .map_err(|e| ca_error("looking up the account", e))?;
        // The credentials returned hold instant-acme's own new key, which the CA never saw.
        let _unused = ca_retry!(self, account.update_key())
            .map_err(|e| ca_error("rolling the account key over", e))?;
        Ok(account.id().to_owned())
    }

    async fn deactivate(&self, key_pem: &str) -> Result<String, AcmeError> {
        let key = self.key(key_pem)?;
        let http = key.http.clone();
        let (account, _) = ca_retry!(self, async {
            Account::builder_with_http(Box::new(http.clone()))
                .from_key(key.pair()?, self.directory_url.clone())
                .await
        })
        .map_err(|e| ca_error("looking up the account", e))?;
        ca_retry!(self, account.clone().deactivate())
            .map_err(|e| ca_error("deactivating the account", e))?;
        Ok(account.id().to_owned())
    }
}

impl InstantSession {
    fn new(account: Account, key: &AccountKey, directory_url: &str) -> Self {
        let thumbprint = key
            .thumbprint
            .clone()
            .unwrap_or_else(|| account.key_thumbprint().to_owned());
        Self {
            account,
            thumbprint,
            http: key.http.clone(),
            signer: key.signer.clone(),
            directory_url: directory_url.to_owned(),
        }
    }

    /// A nonce from the CA's newNonce resource, for when the last response carried none.
    pub(super) async fn fresh_nonce(&self) -> anyhow::Result<String> {
        let body = self.http.get(&self.directory_url).await?;
        let dir: Directory = serde_json::from_slice(&body).with_context(|| {
            format!("the directory at {} is not valid JSON", self.directory_url)
        })?;
        let url = dir
            .new_nonce
            .ok_or_else(|| anyhow!("the directory at {} has no newNonce", self.directory_url))?;
        self.http.new_nonce(&url).await
    }
}
