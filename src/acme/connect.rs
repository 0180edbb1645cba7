//! The real [`Connector`]: instant-acme over our HTTPS client, one client per set of trusted
//! roots for the whole run. Commands pick it; the executors only know the trait.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Result, anyhow};

use super::Connector;

/// The real connector: instant-acme over our HTTPS client. One client (one connection pool,
/// roots loaded once) per set of trusted roots for the whole run, so every step of a run
/// reuses the same connections to a CA.
#[derive(Debug, Default)]
pub struct InstantConnector {
    clients: std::sync::Mutex<BTreeMap<Option<PathBuf>, super::http::CaHttp>>,
    /// Deadline for one request, when not the default.
    timeout: Option<std::time::Duration>,
    /// Most time a run waits for one CA's pauses, when not the default.
    rate_limit_wait: Option<std::time::Duration>,
}

impl InstantConnector {
    /// A connector whose requests wait at most `timeout` for the CA.
    pub fn with_timeout(timeout: std::time::Duration) -> Self {
        Self {
            timeout: Some(timeout),
            ..Self::default()
        }
    }

    /// The same connector, waiting at most `budget` per CA in this run when the CA asks to
    /// slow down (see [`super::pace`]).
    pub fn with_rate_limit_wait(self, budget: std::time::Duration) -> Self {
        Self {
            rate_limit_wait: Some(budget),
            ..self
        }
    }

    /// Requests sent to CAs through this connector so far.
    pub fn requests(&self) -> u64 {
        self.clients
            .lock()
            .map(|c| c.values().map(|h| h.request_count()).sum())
            .unwrap_or(0)
    }

    /// Orders the CAs accepted through this connector so far.
    pub fn orders(&self) -> u64 {
        self.clients
            .lock()
            .map(|c| c.values().map(|h| h.order_count()).sum())
            .unwrap_or(0)
    }
}

impl Connector for InstantConnector {
    type Ca = super::instant::InstantCa;
    fn connect(&self, directory_url: &str, extra_roots: Option<&PathBuf>) -> Result<Self::Ca> {
        let mut clients = self
            .clients
            .lock()
            .map_err(|_| anyhow!("the CA client cache is poisoned"))?;
        let http = match clients.get(&extra_roots.cloned()) {
            Some(http) => http.clone(),
            None => {
                let roots = super::http::root_store(extra_roots.map(|p| p.as_path()))?;
                let mut http = super::http::CaHttp::new(roots)?;
                if let Some(t) = self.timeout {
                    http = http.with_request_timeout(t);
                }
                if let Some(b) = self.rate_limit_wait {
                    http = http.with_rate_limit_wait(b);
                }
                clients.insert(extra_roots.cloned(), http.clone());
                http
            }
        };
        Ok(super::instant::InstantCa::new(directory_url, http)?)
    }
}
