//! Proving control of a name: the http-01 responders.
//!
//! acmetool tries every http-01 method at once, and so does this first version: a challenge
//! is written into every webroot directory and served by the built-in listeners, and the
//! order goes ahead if at least one method could be set up. [`Responder`] is the seam the
//! issuer calls; per-target method choice and dns-01/tls-alpn-01 come later behind it.

pub mod listener;
pub mod selftest;
pub mod webroot;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use anyhow::{Result, bail};

use crate::hooks::{Event, HookRunner};
use crate::target::ChallengeConfig;
use listener::TokenMap;

/// One http-01 challenge to answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpChallenge {
    /// The identifier being validated.
    pub name: String,
    /// The challenge token (validated base64url).
    pub token: String,
    /// `token.thumbprint`, the response body.
    pub key_authorization: String,
}

/// Boxed future, so the trait can be used as `&dyn Responder`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Sets up and tears down challenge responses.
pub trait Responder: Send + Sync {
    /// Makes the response available; fails if no method could be set up.
    fn present<'a>(&'a self, ch: &'a HttpChallenge) -> BoxFuture<'a, Result<()>>;
    /// Removes the response. Never fails: leftovers are logged.
    fn cleanup(&self, ch: &HttpChallenge);
}

/// The http-01 responder for one target: webroot files, the shared listeners, and the
/// `challenge-http-start`/`-stop` hooks.
#[derive(Debug)]
pub struct Http01 {
    webroots: Vec<std::path::PathBuf>,
    tokens: Arc<TokenMap>,
    listening: bool,
    self_test: bool,
    env: BTreeMap<String, String>,
    hooks: Option<(Arc<HookRunner>, String)>,
}

impl Http01 {
    /// A responder for a target with `config`, using the run's shared `tokens` map, which
    /// the listeners serve (`listening` says whether any listener is up).
    pub fn new(config: &ChallengeConfig, tokens: Arc<TokenMap>, listening: bool) -> Self {
        Self {
            webroots: config.webroot_paths.clone(),
            tokens,
            listening,
            self_test: config.self_test,
            env: config.env.clone(),
            hooks: None,
        }
    }

    /// Also runs the challenge hooks, telling them the target file name.
    pub fn with_hooks(mut self, hooks: Arc<HookRunner>, target_file: &str) -> Self {
        self.hooks = Some((hooks, target_file.to_owned()));
        self
    }
}

/// Runs `challenge-http-start` or `-stop`; true if a hook handled it (exit 0). Blocking.
fn run_hook(
    hooks: &HookRunner,
    target_file: &str,
    env: &BTreeMap<String, String>,
    ch: &HttpChallenge,
    start: bool,
) -> bool {
    if hooks.hooks().map(|h| h.is_empty()).unwrap_or(true) {
        return false;
    }
    let (hostname, token, key_authorization) = (
        ch.name.as_str(),
        ch.token.as_str(),
        ch.key_authorization.as_str(),
    );
    let event = if start {
        Event::ChallengeHttpStart {
            hostname,
            target_file,
            token,
            key_authorization,
            env,
        }
    } else {
        Event::ChallengeHttpStop {
            hostname,
            target_file,
            token,
            key_authorization,
            env,
        }
    };
    match hooks.run(&event) {
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

impl Responder for Http01 {
    fn present<'a>(&'a self, ch: &'a HttpChallenge) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            self.tokens.insert(&ch.token, &ch.key_authorization);
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
            // Hooks run programs: keep them off the async thread, which serves the listeners.
            let hooked = match &self.hooks {
                Some((hooks, file)) => {
                    let (hooks, file, env, ch) =
                        (hooks.clone(), file.clone(), self.env.clone(), ch.clone());
                    tokio::task::spawn_blocking(move || run_hook(&hooks, &file, &env, &ch, true))
                        .await
                        .unwrap_or(false)
                }
                None => false,
            };
            if written == 0 && !self.listening && !hooked {
                bail!(
                    "no http-01 method is available for {}: no listener could bind its address and no webroot was writable ({})",
                    ch.name,
                    if failures.is_empty() {
                        "no webroot configured".to_owned()
                    } else {
                        failures.join("; ")
                    }
                );
            }
            if self.self_test {
                selftest::check(&ch.name, &ch.token, &ch.key_authorization).await?;
            }
            Ok(())
        })
    }

    fn cleanup(&self, ch: &HttpChallenge) {
        if let Some((hooks, file)) = &self.hooks {
            run_hook(hooks, file, &self.env, ch, false);
        }
        self.tokens.remove(&ch.token);
        for dir in &self.webroots {
            webroot::remove(dir, &ch.token);
        }
    }
}
