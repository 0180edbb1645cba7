//! `acmekeep account-thumbprint`: one line per account key, `<thumbprint>\t<account id>`, as
//! acmetool prints it (reference §3.2).
//!
//! The thumbprint is the RFC 7638 one that goes into every http-01 key authorization, so a
//! web server can answer challenges statelessly (`return 200 "$token.<thumbprint>"`). Read
//! only: no lock, no network, nothing written.

use std::process::ExitCode;

use anyhow::{Context, Result, anyhow};
use rustls_pki_types::PrivateKeyDer;

use crate::acme::jws::PublicJwk;
use crate::exit::{self, config_error};
use crate::files;
use crate::keys::{MAX_KEY_FILE, first_private_key_der};
use crate::settings::Settings;
use crate::store::{AccountRecord, Store};

/// RFC 7638 thumbprint of an account key file (RSA, ECDSA P-256 or P-384; PKCS#1, SEC1 or
/// PKCS#8 PEM).
pub fn key_file_thumbprint(account: &AccountRecord) -> Result<String> {
    let path = &account.key_path;
    let bytes = files::read_state_file(path, MAX_KEY_FILE, files::Links::Refuse)
        .with_context(|| format!("reading {}", path.display()))?;
    let pem = String::from_utf8(bytes).map_err(|_| anyhow!("{} is not PEM", path.display()))?;
    let der = first_private_key_der(&pem).with_context(|| format!("in {}", path.display()))?;
    let der = PrivateKeyDer::try_from(der)
        .map_err(|e| anyhow!("{}: unrecognised private key encoding: {e}", path.display()))?;
    let jwk =
        PublicJwk::from_private_key(&der).with_context(|| format!("in {}", path.display()))?;
    Ok(jwk.thumbprint())
}

/// Prints every account's thumbprint and id. An unreadable key is reported on stderr and
/// makes the exit code 1; the other accounts are still printed.
pub fn execute_thumbprint(settings: &Settings) -> Result<ExitCode> {
    let store = Store::open_read_only(&settings.state_dir).map_err(config_error)?;
    let inv = store.load_inventory()?;
    let mut failed = false;
    for account in &inv.accounts {
        match key_file_thumbprint(account) {
            Ok(thumbprint) => println!("{thumbprint}\t{}", account.id),
            Err(e) => {
                eprintln!("acmekeep: account {}: {e:#}", account.id);
                failed = true;
            }
        }
    }
    Ok(ExitCode::from(if failed { exit::FAILED } else { exit::OK }))
}
