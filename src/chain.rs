//! Choosing among the certificate chains a CA offers (RFC 8555 §7.4.2): the default chain
//! of the certificate download, and the alternates named in its `Link: rel="alternate"`
//! headers, all carrying the same end-entity certificate under different issuers (Let's
//! Encrypt's cross-signed and short chains, for instance).
//!
//! The operator names issuers in `request.preferred-chain`, most wanted first, as certbot's
//! and lego's `--preferred-chain` do. For each name in turn, the first chain (the default,
//! then the alternates in the CA's order) whose topmost certificate was issued by that name
//! wins; failing that, the first chain in which any certificate was issued by it (acme.sh's
//! rule, for chains that end in a cross-sign). "Issued by" means an exact, case-sensitive
//! match on a common name (CN) of the issuer. When no name matches, the default chain is
//! kept: it is always a valid result.
//!
//! Everything here is pure and the alternates are untrusted: each must parse, stay within
//! [`MAX_CHAIN_CERTS`] certificates and carry exactly the default chain's end-entity
//! certificate, or it is left out with a reason the caller logs.

use x509_parser::prelude::{FromDer, X509Certificate};

use crate::cert::{MAX_CHAIN, MAX_CHAIN_CERTS, split_chain};

/// Longest issuer name quoted in a log line.
const MAX_LOGGED_NAME: usize = 128;

/// The outcome of [`choose`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Choice {
    /// The chain to keep: 0 for the default, `n` for the `n`-th alternate (1-based).
    pub index: usize,
    /// The preferred name that selected it (`None`: no name matched, or none was given).
    pub matched: Option<String>,
    /// Each usable chain's index and the issuer of its topmost certificate, for the log.
    pub offered: Vec<(usize, String)>,
    /// Alternates left out, each with the reason (for warnings).
    pub ignored: Vec<String>,
}

impl Choice {
    /// One line for the log: which chain was kept, and which were offered.
    pub fn describe(&self) -> String {
        let which = match self.index {
            0 => "the default chain".to_owned(),
            n => format!("alternate chain {n}"),
        };
        let why = match &self.matched {
            Some(name) => format!("issued by {name:?}"),
            None => "no preferred issuer offered".to_owned(),
        };
        let offered: Vec<String> = self
            .offered
            .iter()
            .map(|(i, name)| match i {
                0 => format!("default: {name:?}"),
                n => format!("alternate {n}: {name:?}"),
            })
            .collect();
        format!(
            "kept {which} ({why}); chains offered (topmost issuer): {}",
            offered.join(", ")
        )
    }
}

/// What one chain says about its issuers.
struct Parsed {
    /// DER of the end-entity certificate.
    leaf: Vec<u8>,
    /// The issuer common names of each certificate, leaf first.
    issuers: Vec<Vec<String>>,
}

impl Parsed {
    fn top_issuers(&self) -> &[String] {
        self.issuers.last().map(Vec::as_slice).unwrap_or_default()
    }

    fn any_issuer(&self, name: &str) -> bool {
        self.issuers.iter().flatten().any(|n| n == name)
    }
}

/// Parses a chain from the CA, bounding what it may hold.
fn parse(pem: &str) -> Result<Parsed, String> {
    if pem.len() as u64 > MAX_CHAIN {
        return Err(format!("it is larger than {MAX_CHAIN} bytes"));
    }
    let ders = split_chain(pem).map_err(|e| format!("{e:#}"))?;
    if ders.len() > MAX_CHAIN_CERTS {
        return Err(format!(
            "it holds {} certificates (at most {MAX_CHAIN_CERTS} are accepted)",
            ders.len()
        ));
    }
    let mut issuers = Vec::with_capacity(ders.len());
    for (i, der) in ders.iter().enumerate() {
        let (_, cert) = X509Certificate::from_der(der)
            .map_err(|e| format!("certificate {} does not parse: {e}", i + 1))?;
        issuers.push(
            cert.issuer()
                .iter_common_name()
                .filter_map(|cn| cn.as_str().ok())
                .map(str::to_owned)
                .collect(),
        );
    }
    let leaf = ders.into_iter().next().unwrap_or_default();
    Ok(Parsed { leaf, issuers })
}

/// A CA-supplied name made safe for one log line.
fn loggable(name: &str) -> String {
    let mut s: String = name.chars().filter(|c| !c.is_control()).collect();
    if let Some((i, _)) = s.char_indices().nth(MAX_LOGGED_NAME) {
        s.truncate(i);
        s.push('…');
    }
    s
}

/// Chooses among `default_pem` and `alternates` (in the CA's order) by `preferred`, issuer
/// names most wanted first; see the module documentation. With no preference, or when the
/// default chain itself cannot be read (validation of the result reports that), the default
/// is kept without looking further.
pub fn choose(default_pem: &str, alternates: &[String], preferred: &[String]) -> Choice {
    let mut choice = Choice {
        index: 0,
        matched: None,
        offered: Vec::new(),
        ignored: Vec::new(),
    };
    if preferred.is_empty() {
        return choice;
    }
    let default = match parse(default_pem) {
        Ok(p) => p,
        Err(e) => {
            choice.ignored.push(format!(
                "the default chain cannot be read ({e}); alternates not considered"
            ));
            return choice;
        }
    };
    let mut usable: Vec<(usize, Parsed)> = vec![(0, default)];
    for (i, pem) in alternates.iter().enumerate() {
        let n = i + 1;
        match parse(pem) {
            Ok(p) if p.leaf == usable[0].1.leaf => usable.push((n, p)),
            Ok(_) => choice.ignored.push(format!(
                "alternate chain {n} carries another end-entity certificate than the default chain; ignored"
            )),
            Err(e) => choice
                .ignored
                .push(format!("alternate chain {n} is ignored: {e}")),
        }
    }
    choice.offered = usable
        .iter()
        .map(|(i, p)| {
            let top = p
                .top_issuers()
                .first()
                .map_or_else(|| "(no common name)".to_owned(), |n| loggable(n));
            (*i, top)
        })
        .collect();
    for name in preferred {
        let found = usable
            .iter()
            .find(|(_, p)| p.top_issuers().iter().any(|n| n == name))
            .or_else(|| usable.iter().find(|(_, p)| p.any_issuer(name)));
        if let Some((i, _)) = found {
            choice.index = *i;
            choice.matched = Some(loggable(name));
            return choice;
        }
    }
    choice
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    };

    fn ca_params(cn: &str) -> CertificateParams {
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
        p.distinguished_name.push(DnType::CommonName, cn);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        p
    }

    fn key() -> KeyPair {
        KeyPair::generate().expect("key")
    }

    /// A CA hierarchy like Let's Encrypt's: one intermediate key ("Int") certified by
    /// "Root A" and by "Root B", and "Root B" cross-signed by "Root C".
    struct Pki {
        leaf: String,
        other_leaf: String,
        int_by_a: String,
        int_by_b: String,
        b_by_c: String,
    }

    fn pki() -> Pki {
        let (a_key, b_key, c_key, int_key) = (key(), key(), key(), key());
        let (a, b, c, int) = (
            ca_params("Root A"),
            ca_params("Root B"),
            ca_params("Root C"),
            ca_params("Int"),
        );
        let a_issuer = Issuer::from_params(&a, &a_key);
        let b_issuer = Issuer::from_params(&b, &b_key);
        let c_issuer = Issuer::from_params(&c, &c_key);
        let int_issuer = Issuer::from_params(&int, &int_key);
        let leaf_for = |name: &str| {
            let mut p = CertificateParams::new(vec![name.to_owned()]).expect("params");
            p.distinguished_name.push(DnType::CommonName, name);
            p.signed_by(&key(), &int_issuer).expect("leaf").pem()
        };
        Pki {
            leaf: leaf_for("a.example"),
            other_leaf: leaf_for("b.example"),
            int_by_a: int.signed_by(&int_key, &a_issuer).expect("int").pem(),
            int_by_b: int.signed_by(&int_key, &b_issuer).expect("int").pem(),
            b_by_c: b.signed_by(&b_key, &c_issuer).expect("cross").pem(),
        }
    }

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn preferred_issuers_pick_chains() {
        let p = pki();
        let default = format!("{}{}", p.leaf, p.int_by_a);
        let short_b = format!("{}{}", p.leaf, p.int_by_b);
        let long_c = format!("{}{}{}", p.leaf, p.int_by_b, p.b_by_c);
        let alternates = vec![long_c.clone(), short_b.clone()];
        // (preference, expected index, expected matched name)
        let table: &[(&[&str], usize, Option<&str>)] = &[
            // No preference: the default, nothing parsed.
            (&[], 0, None),
            // The default's own root.
            (&["Root A"], 0, Some("Root A")),
            // A topmost issuer wins over a chain that merely contains the name (the
            // cross-signed chain comes first in the CA's order but ends with "Root C").
            (&["Root B"], 2, Some("Root B")),
            (&["Root C"], 1, Some("Root C")),
            // Names are tried in order; unknown ones are skipped.
            (&["Nobody", "Root C", "Root B"], 1, Some("Root C")),
            // Nothing offered matches: the default is kept.
            (&["Nobody", "root b"], 0, None),
            // Any issuer in a chain counts when no topmost issuer matches: "Int" issued
            // every leaf, and the default comes first.
            (&["Int"], 0, Some("Int")),
        ];
        for (pref, index, matched) in table {
            let c = choose(&default, &alternates, &names(pref));
            assert_eq!(c.index, *index, "{pref:?}: {c:?}");
            assert_eq!(c.matched.as_deref(), *matched, "{pref:?}");
            assert!(c.ignored.is_empty(), "{pref:?}: {:?}", c.ignored);
        }
        let c = choose(&default, &alternates, &names(&["Root C"]));
        assert_eq!(
            c.offered,
            [
                (0, "Root A".to_owned()),
                (1, "Root C".to_owned()),
                (2, "Root B".to_owned())
            ]
        );
        let line = c.describe();
        assert!(
            line.contains("kept alternate chain 1 (issued by \"Root C\")"),
            "{line}"
        );
        assert!(line.contains("default: \"Root A\""), "{line}");

        // Any-issuer matching finds the cross-signed chain when no chain ends with the name.
        let c = choose(&default, std::slice::from_ref(&long_c), &names(&["Root B"]));
        assert_eq!((c.index, c.matched.as_deref()), (1, Some("Root B")));
    }

    #[test]
    fn alternates_with_another_leaf_or_garbage_are_ignored() {
        let p = pki();
        let default = format!("{}{}", p.leaf, p.int_by_a);
        let other_leaf = format!("{}{}", p.other_leaf, p.int_by_b);
        let truncated = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
        let not_pem = "<html>oops</html>".to_owned();
        let a_key = format!("{}{}", p.leaf, key().serialize_pem());
        let too_long = format!("{}{}", p.leaf, p.int_by_b.repeat(MAX_CHAIN_CERTS));
        let good = format!("{}{}", p.leaf, p.int_by_b);
        let alternates = vec![
            other_leaf,
            truncated.to_owned(),
            not_pem,
            a_key,
            too_long,
            String::new(),
            good,
        ];
        let c = choose(&default, &alternates, &names(&["Root B"]));
        assert_eq!(c.index, 7, "only the last alternate is usable: {c:?}");
        assert_eq!(c.ignored.len(), 6, "{:?}", c.ignored);
        assert!(
            c.ignored[0].contains("alternate chain 1 carries another end-entity certificate"),
            "{:?}",
            c.ignored
        );
        for (i, why) in [
            (1, "does not parse"),
            (2, "no certificate"),
            (3, "PRIVATE KEY"),
            (4, "at most 10"),
            (5, "no certificate"),
        ] {
            assert!(
                c.ignored[i].starts_with(&format!("alternate chain {} is ignored", i + 1))
                    && c.ignored[i].contains(why),
                "{i}: {} should mention {why}",
                c.ignored[i]
            );
        }
        assert_eq!(c.offered.len(), 2);

        // A preferred issuer only behind another leaf is never chosen.
        let c = choose(
            &default,
            &[format!("{}{}", p.other_leaf, p.int_by_b)],
            &names(&["Root B"]),
        );
        assert_eq!((c.index, c.matched), (0, None));
    }

    #[test]
    fn an_unreadable_default_is_kept_for_validation_to_report() {
        let p = pki();
        let c = choose(
            "garbage",
            &[format!("{}{}", p.leaf, p.int_by_b)],
            &names(&["Root B"]),
        );
        assert_eq!(c.index, 0);
        assert!(
            c.ignored[0].contains("default chain cannot be read"),
            "{c:?}"
        );
    }

    #[test]
    fn logged_names_are_one_bounded_line() {
        assert_eq!(loggable("Root\nCA\u{7}"), "RootCA");
        let long = "x".repeat(500);
        assert_eq!(loggable(&long).chars().count(), MAX_LOGGED_NAME + 1);
    }
}
