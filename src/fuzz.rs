//! The entry points of the fuzz targets (`fuzz/`, run by `scripts/fuzz`): each takes
//! arbitrary bytes as one kind of untrusted input and sends them through the code a run
//! uses to read that input, so that a panic anywhere on the way (the release build aborts
//! on one, losing the whole run) is found as a crash.
//!
//! They live in the library, not in `fuzz/`, so that they are compiled, linted and tested
//! with it: a change to a reader's signature is fixed here at once, and the unit tests below
//! pass every committed seed (`fuzz/seeds/<target>/`) through its entry point, so each seed
//! is also a regression test in `cargo test`. Each entry returns a short description of
//! what the readers concluded, which those tests use to check that the seeds reach past
//! the first parse; the fuzzer ignores it.
//!
//! Nothing here touches the file system, the network or the clock: the time is fixed, and
//! user and group names come from a small table.

use std::path::Path;
use std::time::{Duration, SystemTime};

use time::OffsetDateTime;

use crate::interact::{Interaction, Kind, Question};
use crate::store::perm::{IdLookup, PermTable};
use crate::target::{RawTarget, Target};

/// The fixed "now" of every entry point (2027-01-01T00:00:00Z).
const NOW_UNIX: i64 = 1_798_761_600;

fn now() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(NOW_UNIX).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

fn now_system() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(NOW_UNIX.unsigned_abs())
}

/// A target file (`desired/*`) and `conf/target`: the same bytes are read as both, as a
/// target over no defaults, over itself as defaults, and as the defaults' check; a parsed
/// file must also survive being written back (`want` and `quickstart` rewrite
/// `conf/target`) and read again.
pub fn target_yaml(data: &[u8]) -> String {
    let path = Path::new("desired/fuzz.example");
    let raw = match crate::target::parse_file(path, data) {
        Ok(raw) => raw,
        Err(e) => return format!("parse: {e:#}"),
    };
    let mut out = Vec::new();
    let defaults = RawTarget::default();
    for (file, base) in [
        ("fuzz.example", &defaults),
        ("fuzz.example", &raw),
        ("", &raw),
    ] {
        out.push(match Target::resolve(file, &raw, base) {
            Ok(t) => {
                let names: Vec<String> = t.live_names().collect();
                format!("resolved {names:?}")
            }
            Err(e) => format!("resolve: {e:#}"),
        });
    }
    out.push(
        match crate::target::check_defaults(Path::new("conf/target"), &raw) {
            Ok(()) => "defaults ok".to_owned(),
            Err(e) => format!("defaults: {e:#}"),
        },
    );
    match serde_yaml_ng::to_string(&raw) {
        Ok(text) => {
            if let Err(e) = RawTarget::parse(&text) {
                panic!("a target written back cannot be read again: {e}\n{text}");
            }
        }
        Err(e) => out.push(format!("write back: {e}")),
    }
    out.join("\n")
}

/// The response file (`conf/responses`): parsed, then every answer given to a yes/no, a
/// free-text and a choice question, and to the checks quickstart makes of an e-mail
/// address and a CA URL.
pub fn responses(data: &[u8]) -> String {
    let answers = match crate::interact::parse_answers(data, "conf/responses") {
        Ok(a) => a,
        Err(e) => return format!("parse: {e:#}"),
    };
    let keys: Vec<String> = answers.keys().cloned().collect();
    let interaction = Interaction::default().with_answers(answers);
    let options = [("rsa", "RSA"), ("ecdsa", "ECDSA")];
    let mut out = Vec::new();
    for id in &keys {
        for kind in [
            Kind::YesNo { default: false },
            Kind::Text { default: "" },
            Kind::Choice {
                options: &options,
                default: 0,
            },
        ] {
            let q = Question {
                id,
                title: "fuzz",
                body: "",
                kind,
                implicit: false,
            };
            out.push(match interaction.ask(&q, false) {
                Ok(reply) => {
                    let text = reply.text();
                    let email = crate::interact::plausible_email(text);
                    let url = crate::target::validate_provider(text).is_ok();
                    format!("{id}: {reply:?} email={email} url={url}")
                }
                Err(e) => format!("{id}: {e:#}"),
            });
        }
    }
    out.join("\n")
}

/// User and group names for `conf/perm`, without asking the system's user database.
struct FixedIds;

impl IdLookup for FixedIds {
    fn uid(&self, name: &str) -> std::io::Result<Option<u32>> {
        Ok(match name {
            "root" => Some(0),
            "www-data" => Some(33),
            _ => None,
        })
    }

    fn gid(&self, name: &str) -> std::io::Result<Option<u32>> {
        Ok(match name {
            "root" => Some(0),
            "ssl-cert" => Some(108),
            _ => None,
        })
    }

    fn running_ids(&self) -> std::io::Result<(u32, u32)> {
        Ok((0, 0))
    }
}

/// `conf/perm`: parsed over the built-in table, then the rule of layout paths and of the
/// first globs (and their children) looked up.
pub fn perm(data: &[u8]) -> String {
    let Ok(text) = std::str::from_utf8(data) else {
        return "not UTF-8".to_owned();
    };
    let table = match PermTable::parse(text, "conf/perm", &FixedIds) {
        Ok(t) => t,
        Err(e) => return format!("parse: {e}"),
    };
    let mut paths: Vec<String> = [
        ".",
        "conf/responses",
        "keys/x/privkey",
        "certs/x/haproxy",
        "live/example.org",
        "../escape",
        "/abs",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    // Each lookup tries every glob: a few dozen keep an input quick to run.
    for (glob, _) in table.rules().take(24) {
        paths.push(glob.to_owned());
        paths.push(format!("{glob}/child"));
    }
    let mut out: Vec<String> = paths
        .iter()
        .map(|p| {
            let r = table.rule_for(Path::new(p));
            format!("{p}: {:o} {:o}", r.mode_for(false), r.mode_for(true))
        })
        .collect();
    out.push(format!("{} dirs", table.dirs_to_create().len()));
    out.join("\n")
}

/// A CA's error answer. The first line is `STATUS [RETRY-AFTER]` (the HTTP status and the
/// `Retry-After` header's value); the rest is the body. It goes through what the HTTP client
/// does with an error answer (the pause it asks for, the problem document it becomes) and
/// what the issuer does with that document (the error it becomes, its one-line text, the
/// time to retry after).
pub fn problem(data: &[u8]) -> String {
    let (head, body) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let head = String::from_utf8_lossy(head);
    let mut fields = head.trim().splitn(2, ' ');
    let status = fields
        .next()
        .and_then(|s| s.parse::<u16>().ok())
        .and_then(|s| http::StatusCode::from_u16(s).ok())
        .unwrap_or(http::StatusCode::BAD_REQUEST);
    let retry_after = fields.next();
    let body = bytes::Bytes::copy_from_slice(body);
    let (until, problem) =
        crate::acme::http::read_error_answer(status, retry_after, &body, now_system());
    let mut out = vec![format!(
        "pause {:?}",
        until.and_then(|u| u.duration_since(now_system()).ok())
    )];
    // What a problem inside an answer that succeeded reads as (instant-acme parses those).
    out.push(
        match serde_json::from_slice::<instant_acme::Problem>(&body) {
            Ok(p) => format!("raw: {}", crate::acme::instant::describe_problem(&p)),
            Err(_) => "raw: not a problem document".to_owned(),
        },
    );
    let retry_at = problem.retry_at;
    let e = instant_acme::Error::Other(Box::new(crate::acme::error::Refusal(problem)));
    let limited = crate::acme::instant::is_rate_limited(&e);
    let bad_nonce = crate::acme::instant::is_bad_nonce(&e);
    let err = crate::acme::instant::ca_error("fuzz", e);
    let class = err.class();
    let text = err.to_string();
    out.push(format!(
        "limited={limited} bad_nonce={bad_nonce} retry={retry_at:?} class={class:?} {text}"
    ));
    out.join("\n")
}

/// A certificate download: sections separated by lines starting with `=====`, the first the
/// default chain and the others alternates; the rest of a separator line, if any, is an
/// issuer name to prefer. The chain is chosen among them as `reconcile` does, validated for the names and key of its
/// own leaf, and its renewal time computed; each section is also read as a private key.
pub fn chain(data: &[u8]) -> String {
    let Ok(text) = std::str::from_utf8(data) else {
        return "not UTF-8".to_owned();
    };
    let mut sections: Vec<String> = vec![String::new()];
    let mut preferred = vec!["ISRG Root X2".to_owned()];
    for line in text.split_inclusive('\n') {
        if let Some(name) = line.strip_prefix("=====") {
            sections.push(String::new());
            let name = name.trim();
            if !name.is_empty() {
                preferred.push(name.to_owned());
            }
        } else if let Some(last) = sections.last_mut() {
            last.push_str(line);
        }
    }
    let mut out = Vec::new();
    for s in &sections {
        out.push(match crate::keys::PrivateKey::from_pem(s) {
            Ok(k) => format!("key {:?} {}", k.family, k.id),
            Err(e) => format!("no key: {e:#}"),
        });
    }
    let Some((default, alternates)) = sections.split_first() else {
        return out.join("\n");
    };
    let leaf = match crate::cert::split_chain(default)
        .and_then(|ders| crate::cert::leaf_info(ders.first().map_or(&[][..], |d| d)))
    {
        Ok(leaf) => leaf,
        Err(e) => {
            out.push(format!("leaf: {e:#}"));
            return out.join("\n");
        }
    };
    let choice = crate::chain::choose(default, alternates, &preferred);
    out.push(choice.describe());
    out.extend(choice.ignored.iter().cloned());
    let pem = match choice.index.checked_sub(1) {
        Some(i) => alternates.get(i).unwrap_or(default),
        None => default,
    };
    out.push(
        match crate::cert::validate_issued(pem, &leaf.key_id, &leaf.names, now()) {
            Ok(files) => {
                let jitter =
                    crate::plan::ari::stable_jitter(files.leaf.ari_id.as_deref().unwrap_or(""));
                let summary = files.leaf.into_summary("fuzz", true, false, None);
                let due = crate::plan::ari::due_at(&summary, 30, None, jitter);
                format!("valid, due {due}")
            }
            Err(e) => format!("invalid: {e:#}"),
        },
    );
    out.join("\n")
}

/// A DNS answer, read as each answer a dns-01 run acts on (see
/// [`crate::challenge::dns::read_answer`]).
pub fn dns_answer(data: &[u8]) -> String {
    crate::challenge::dns::read_answer(data).join("\n")
}

/// A request to the redirector (`acmekeep redirector`, a daemon answering anyone on port 80):
/// the first line is `METHOD TARGET`, each further line a header `name: value`, as hyper
/// would hand them over. Answered with each redirect status; the challenge lookup finds a
/// file for every token.
pub fn redirector(data: &[u8]) -> String {
    let mut lines = data.split(|&b| b == b'\n');
    let first = lines.next().unwrap_or_default();
    let (method, target) = match first.iter().position(|&b| b == b' ') {
        Some(i) => (&first[..i], &first[i + 1..]),
        None => (first, &b"/"[..]),
    };
    let (Ok(method), Ok(uri)) = (
        http::Method::from_bytes(method),
        http::Uri::try_from(target.trim_ascii()),
    ) else {
        return "not a request line".to_owned();
    };
    let mut req = http::Request::builder().method(method).uri(uri);
    for line in lines {
        let Some(i) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(&line[..i]),
            http::HeaderValue::from_bytes(line[i + 1..].trim_ascii()),
        ) {
            req = req.header(name, value);
        }
    }
    let Ok(req) = req.body(()) else {
        return "not a request".to_owned();
    };
    let mut out = Vec::new();
    for code in [301, 302, 307, 308] {
        let Some(status) = crate::challenge::redirector::RedirectStatus::new(code) else {
            continue;
        };
        let rsp = crate::challenge::redirector::respond(&req, status, |token| {
            crate::challenge::redirector::Lookup::Found(bytes::Bytes::from(format!(
                "{token}.thumbprint"
            )))
        });
        out.push(format!(
            "{} {:?}",
            rsp.status().as_u16(),
            rsp.headers().get(http::header::LOCATION)
        ));
    }
    out.join("\n")
}

/// A TSIG key file (`request.challenge.dns-01.key-file`): BIND's or Knot's format, read for
/// the only key and for a key named `acme-update`.
pub fn tsig_key_file(data: &[u8]) -> String {
    let Ok(text) = std::str::from_utf8(data) else {
        return "not UTF-8".to_owned();
    };
    [None, Some("acme-update")]
        .iter()
        .map(
            |want| match crate::challenge::dns::parse_key_file(text, *want) {
                Ok(key) => format!("key {} {}", key.name(), key.algorithm()),
                Err(e) => format!("no key: {e:#}"),
            },
        )
        .collect::<Vec<_>>()
        .join("\n")
}

/// A command line: one argument a line (bytes, not necessarily UTF-8). Parsed as `acmekeep`
/// parses its own, then resolved into settings; each argument is also read as a duration
/// (`--wait`, `--ca-timeout`, the redirector's timeouts).
pub fn cli(data: &[u8]) -> String {
    use std::os::unix::ffi::OsStrExt;

    let args: Vec<&std::ffi::OsStr> = data
        .split(|&b| b == b'\n')
        .map(std::ffi::OsStr::from_bytes)
        .collect();
    let mut out: Vec<String> = args
        .iter()
        .filter_map(|a| a.to_str())
        .map(|a| format!("{a}: {:?}", crate::cli::parse_duration(a).ok()))
        .collect();
    let argv = std::iter::once(std::ffi::OsStr::new("acmekeep")).chain(args.iter().copied());
    // Built (and checked by clap's debug assertions) once: building it for every input made
    // this target fifty times slower.
    static COMMAND: std::sync::OnceLock<clap::Command> = std::sync::OnceLock::new();
    let mut command = COMMAND
        .get_or_init(|| {
            let mut c = <crate::cli::Cli as clap::CommandFactory>::command();
            c.build();
            c
        })
        .clone();
    let parsed = command
        .try_get_matches_from_mut(argv)
        .and_then(|m| <crate::cli::Cli as clap::FromArgMatches>::from_arg_matches(&m));
    out.push(match parsed {
        Ok(cli) => match crate::settings::Settings::resolve(&cli) {
            Ok(s) => format!("settings: state {}", s.state_dir.display()),
            Err(e) => format!("settings: {e:#}"),
        },
        Err(e) => format!("usage: {}", e.kind()),
    });
    out.join("\n")
}

/// The headers of a CA's answer: the first line is the URL that was requested, each further
/// line a header `name: value`. They go through what the HTTP client reads from every answer
/// (the `Retry-After` bound, the nonce, the content type, the origin) and from a certificate
/// download (its alternate chains' `Link`s), and the `Retry-After` as the pause table reads
/// it.
pub fn ca_headers(data: &[u8]) -> String {
    let mut lines = data.split(|&b| b == b'\n');
    let url = String::from_utf8_lossy(lines.next().unwrap_or_default())
        .trim()
        .to_owned();
    let mut headers = http::HeaderMap::new();
    for line in lines {
        let Some(i) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(&line[..i]),
            http::HeaderValue::from_bytes(line[i + 1..].trim_ascii()),
        ) {
            headers.append(name, value);
        }
    }
    use crate::acme::http as ca;
    ca::bound_retry_after(&mut headers);
    let retry_after = headers
        .get(http::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok());
    let links = ca::alternate_links(
        headers
            .get_all(http::header::LINK)
            .iter()
            .filter_map(|v| v.to_str().ok()),
        &url,
    );
    format!(
        "origin {:?}\nnonce {:?}\npem {}\nretry after {:?} = {:?}\nalternates {links:?}",
        crate::acme::nonces::origin(&url),
        ca::replay_nonce(&headers),
        ca::is_pem_chain(&headers),
        retry_after,
        retry_after.and_then(|v| crate::acme::pace::parse_retry_after(v, now_system())),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The committed seeds of `target`, by file name.
    fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/seeds")
            .join(target);
        let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| {
                let e = e.expect("entry");
                let bytes = std::fs::read(e.path()).expect("read seed");
                (e.file_name().to_string_lossy().into_owned(), bytes)
            })
            .collect();
        out.sort();
        assert!(!out.is_empty(), "no seeds in {}", dir.display());
        out
    }

    /// Runs every seed of `target` through `entry` (none may panic), and checks that each
    /// seed named in `expect` gets as far as the text expected in its output shows.
    fn run_seeds(target: &str, entry: fn(&[u8]) -> String, expect: &[(&str, &str)]) {
        let all = seeds(target);
        for (seed, wanted) in expect {
            let (_, bytes) = all
                .iter()
                .find(|(name, _)| name == seed)
                .unwrap_or_else(|| panic!("{target}: no seed {seed}"));
            let got = entry(bytes);
            assert!(
                got.contains(wanted),
                "{target}/{seed}: {wanted:?} not in\n{got}"
            );
        }
        for (_, bytes) in &all {
            entry(bytes);
        }
    }

    #[test]
    fn target_yaml_seeds() {
        run_seeds(
            "target_yaml",
            target_yaml,
            &[
                (
                    "every-key",
                    "resolved [\"example.org:ec\", \"www.example.org:ec\"",
                ),
                ("every-key", "\"xn--bcher-kva.example:ec\"]"),
                ("legacy-top-level", "resolved [\"legacy.example.org\""),
                ("empty", "resolved [\"fuzz.example\"]"),
                ("quickstart-conf-target", "defaults ok"),
                ("dns01-key-file", "is not an IP address or ip:port"),
                ("anchors-and-merge", "resolved [\"anchor.example.com\"]"),
            ],
        );
    }

    #[test]
    fn responses_seeds() {
        run_seeds(
            "responses",
            responses,
            &[
                (
                    "quickstart-batch",
                    "Text(\"hostmaster@example.com\") email=true",
                ),
                ("quickstart-batch", "install-cronjob: Yes(true)"),
                (
                    "custom-url",
                    "Text(\"https://127.0.0.1:14000/dir\") email=false url=true",
                ),
                ("custom-url", "acme-enter-email: Yes(false)"),
                ("odd-values", "rsa-key-size: Text(\"3500.0\")"),
            ],
        );
    }

    #[test]
    fn perm_seeds() {
        run_seeds(
            "perm",
            perm,
            &[
                ("acmetool-example", ".: 644 750"),
                ("ssl-cert-group", "keys/x/privkey: 640 750"),
                (
                    "running-ids-no-final-newline",
                    "live/\\*.example.com: 644 755",
                ),
                ("globs", "keys/x/privkey: 400 500"),
                ("errors", "conf/perm:1:"),
                ("bad-id", "out of range"),
            ],
        );
    }

    #[test]
    fn problem_seeds() {
        run_seeds(
            "problem",
            problem,
            &[
                ("le-rate-limited", "pause Some(3600s)"),
                (
                    "le-rate-limited",
                    "limited=true bad_nonce=false retry=Some(2027-01-02 7:00:00",
                ),
                ("overloaded-http-date", "pause Some(300s)"),
                ("huge-retry-after", "pause Some(604800s)"),
                ("pebble-bad-nonce", "bad_nonce=true"),
                ("pebble-account-does-not-exist", "no account exists"),
                (
                    "pebble-unauthorized-subproblems",
                    "; This CA will not issue for",
                ),
                ("html-error-page", "HTTP 502 Bad Gateway: <html>"),
                ("wrong-types", "HTTP 400 Bad Request: {"),
            ],
        );
    }

    #[test]
    fn chain_seeds() {
        run_seeds(
            "chain",
            chain,
            &[
                ("pebble-default-chain", "valid, due 2031-"),
                (
                    "pebble-with-alternates",
                    "kept alternate chain 2 (issued by",
                ),
                ("pebble-with-alternates", "valid, due 2031-"),
                (
                    "alternate-without-the-leaf",
                    "carries another end-entity certificate",
                ),
                // Two self-signed roots are no chain: the second did not sign the first.
                (
                    "isrg-roots",
                    "invalid: the certificate names another issuer",
                ),
                (
                    "pebble-leaf-only",
                    "invalid: the CA returned the certificate without its issuer",
                ),
                ("ec-private-key-pkcs8", "key Ecdsa"),
                ("ec-private-key-sec1", "key Ecdsa"),
                ("truncated-chain", "has no END line"),
            ],
        );
    }

    #[test]
    fn redirector_seeds() {
        run_seeds(
            "redirector",
            redirector,
            &[
                ("curl-root", "308 Some(\"https://example.org/\")"),
                (
                    "absolute-form-ipv6",
                    "301 Some(\"https://[2001:db8::1]:8080/a%20b/c?x=1&y=%ff\")",
                ),
                ("le-validation", "200 None"),
                ("traversal", "404 None"),
                ("two-hosts", "400 None"),
                ("options-star", "400 None"),
            ],
        );
    }

    #[test]
    fn tsig_key_file_seeds() {
        run_seeds(
            "tsig_key_file",
            tsig_key_file,
            &[
                ("bind-tsig-keygen", "key acme-update hmac-sha256"),
                (
                    "bind-ddns-confgen-with-zone",
                    "key ddns-key.example.org hmac-sha256",
                ),
                ("knot-keymgr", "key acme-update hmac-sha256"),
                ("knot-two-keys", "key acme-update hmac-sha384"),
                ("knot-two-keys", "several keys"),
                ("bind-unterminated", "missing `}`"),
            ],
        );
    }

    #[test]
    fn cli_seeds() {
        run_seeds(
            "cli",
            cli,
            &[
                ("want", "settings: state /var/lib/acme"),
                ("durations", "30s: Some(30s)"),
                ("acmetool-redirector", "settings: state /var/lib/acme"),
                ("huge-number", "bad duration"),
                ("eab-and-bytes", "usage: invalid UTF-8"),
            ],
        );
    }

    #[test]
    fn ca_headers_seeds() {
        run_seeds(
            "ca_headers",
            ca_headers,
            &[
                (
                    "pebble-cert-download",
                    "alternates [\"https://127.0.0.1:14000/certZ/4f2c9a1b/1\", \"https://127.0.0.1:14000/certZ/4f2c9a1b/2\"]",
                ),
                (
                    "pebble-cert-download",
                    "nonce Some(\"zgPp5aFu2tHOxrVp9VODyQ\")",
                ),
                ("pebble-cert-download", "pem true"),
                (
                    "le-rate-limited",
                    "retry after Some(\"3600\") = Some(3600s)",
                ),
                ("ari-http-date", "= Some(21600s)"),
                ("hostile-links", "retry after Some(\"604800\")"),
                (
                    "hostile-links",
                    "alternates [\"https://ca.example:8443/cert/2\", \"https://ca.example:8443/cert/3\"]",
                ),
                ("hostile-links", "nonce None"),
                ("odd-scheme", "alternates []"),
            ],
        );
    }

    #[test]
    fn dns_answer_seeds() {
        run_seeds(
            "dns_answer",
            dns_answer,
            &[
                ("knot-txt-two-values", "propagation: Serves"),
                (
                    "knot-soa-nxdomain",
                    "zone: Some(Ok(Hostname(\"example.org\")))",
                ),
                ("knot-ns-apex", "ns: Ok([Hostname(\"ns1.example.org\")"),
                (
                    "knot-cname-challenge",
                    "_acme-challenge.delegated.example.org",
                ),
                ("knot-aaaa-ns2", "[::1]:53"),
                ("knot-update-badsig", "BADSIG"),
                ("knot-update-badkey", "BADKEY"),
                ("knot-update-signed-ok", "signature is not valid"),
            ],
        );
    }
}
