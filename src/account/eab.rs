//! External Account Binding (RFC 8555 §7.3.4): the credentials some CAs require to register
//! an account, from the first place that has them — the command line, the settings
//! (`request.eab`), the response file, or, only when the CA requires a binding, the terminal.

use anyhow::{Result, anyhow};

use crate::acme::EabCredentials;
use crate::exit::config_error;
use crate::interact::{Interaction, Kind, Question};
use crate::store::Store;
use crate::target::{RawTarget, Target};

/// Response-file key (and, without the `:<url>` part, command-line flag) for the EAB key
/// identifier.
pub const EAB_KID: &str = "acme-eab-kid";
/// The same for the EAB MAC key.
pub const EAB_HMAC_KEY: &str = "acme-eab-hmac-key";
/// The same for the EAB MAC algorithm.
pub const EAB_ALGORITHM: &str = "acme-eab-algorithm";

/// The External Account Binding credentials for registering at `provider`, from the first
/// place that has them: the command line (`--eab-kid`, `--eab-hmac-key`, `--eab-algorithm`:
/// the response-file keys without a URL), the settings (`request.eab` of conf/target, or of a
/// target using this provider), the response-file keys `acme-eab-kid:<provider>` and
/// `acme-eab-hmac-key:<provider>`, and, only when the CA requires a binding, the terminal.
/// Without a terminal a required binding that is nowhere to be found is a configuration
/// error that names every place it may be given.
pub(super) fn external_account(
    store: Option<&Store>,
    provider: &str,
    required: bool,
    interaction: &Interaction,
) -> Result<Option<EabCredentials>> {
    // An implicit question never prompts: the response file's answer or "".
    let answer = |id: &str| -> Result<String> {
        let q = Question {
            id,
            title: id,
            body: "",
            kind: Kind::Text { default: "" },
            implicit: true,
        };
        Ok(interaction.ask(&q, false)?.text().trim().to_owned())
    };
    let from_answers = |suffix: &str, origin: &str| -> Result<Option<EabCredentials>> {
        let kid = answer(&format!("{EAB_KID}{suffix}"))?;
        let key = answer(&format!("{EAB_HMAC_KEY}{suffix}"))?;
        let alg = answer(&format!("{EAB_ALGORITHM}{suffix}"))?;
        match (kid.is_empty(), key.is_empty()) {
            (true, true) => Ok(None),
            (false, true) => Err(config_error(anyhow!(
                "{origin} gives an EAB key identifier but no MAC key"
            ))),
            (true, false) => Err(config_error(anyhow!(
                "{origin} gives an EAB MAC key but no key identifier"
            ))),
            (false, false) => EabCredentials::parse(&kid, &key, Some(&alg))
                .map(Some)
                .map_err(|e| config_error(e.context(format!("in {origin}")))),
        }
    };
    if let Some(eab) = from_answers("", "--eab-kid/--eab-hmac-key")? {
        return Ok(Some(eab));
    }
    if let Some(store) = store
        && let Some(eab) = configured_eab(store, provider)?
    {
        return Ok(Some(eab));
    }
    let suffix = format!(":{provider}");
    if let Some(eab) = from_answers(&suffix, "the response file")? {
        return Ok(Some(eab));
    }
    if !required {
        return Ok(None);
    }
    let (kid_id, key_id) = (
        format!("{EAB_KID}{suffix}"),
        format!("{EAB_HMAC_KEY}{suffix}"),
    );
    if interaction.is_interactive() {
        eprintln!(
            "The CA at {provider} requires External Account Binding: enter the key identifier and MAC key it gave you."
        );
        let kid = interaction.text(&kid_id, "EAB key identifier (kid):")?;
        let key = interaction.text(&key_id, "EAB MAC key (base64url):")?;
        return EabCredentials::parse(&kid, &key, None)
            .map(Some)
            .map_err(config_error);
    }
    Err(config_error(anyhow!(
        "the CA at {provider} requires External Account Binding for new accounts (meta.externalAccountRequired) and no EAB credentials are configured: get a key identifier and MAC key from the CA and give them as --eab-kid KID --eab-hmac-key KEY, or as request.eab.kid and request.eab.hmac-key in conf/target, or as the response-file keys {kid_id:?} and {key_id:?}"
    )))
}

/// `request.eab` for `provider`: conf/target's when `provider` is its provider, else that of the
/// first target in desired/ using `provider` that has one.
fn configured_eab(store: &Store, provider: &str) -> Result<Option<EabCredentials>> {
    let defaults = store.load_defaults().map_err(config_error)?;
    let base = Target::resolve("default", &RawTarget::default(), &defaults)
        .map_err(|e| config_error(e.context("in conf/target")))?;
    if base.provider == provider && base.eab.is_some() {
        return Ok(base.eab);
    }
    let (targets, _) = store.load_targets(&defaults)?;
    Ok(targets
        .into_iter()
        .filter(|t| t.provider == provider)
        .find_map(|t| t.eab))
}
