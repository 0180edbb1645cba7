//! TSIG key files as operators have them: BIND's (what `tsig-keygen` and `ddns-confgen`
//! print, and `named.conf` includes) and Knot's `key:` section (what `keymgr -t` prints).
//!
//! ```text
//! key "acme-update" {            key:
//!     algorithm hmac-sha256;       - id: acme-update
//!     secret "base64…";              algorithm: hmac-sha256
//! };                                 secret: base64…
//! ```
//!
//! A file may hold several keys; the configured key name picks one, and without a name the
//! file must hold exactly one. Other BIND statements and clauses are skipped.

use anyhow::{Result, anyhow, bail};

use super::{TsigAlgorithm, TsigKey};
use crate::name::Hostname;

/// The key named `want` (or the only key) in a BIND or Knot key file's text.
pub fn parse_key_file(text: &str, want: Option<&str>) -> Result<TsigKey> {
    let keys = if is_knot(text) {
        knot_keys(text)?
    } else {
        bind_keys(text)?
    };
    if keys.is_empty() {
        bail!("no key found (expected BIND `key \"name\" {{ ... }};` or a Knot `key:` section)");
    }
    let names = || {
        keys.iter()
            .map(|k| k.name().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    match want {
        Some(w) => {
            let w = Hostname::parse(w)?;
            keys.iter()
                .find(|k| *k.name() == w)
                .cloned()
                .ok_or_else(|| anyhow!("no key named {w} (found: {})", names()))
        }
        None if keys.len() == 1 => Ok(keys.into_iter().next().ok_or_else(|| anyhow!("no key"))?),
        None => bail!("several keys ({}); set the key name to choose one", names()),
    }
}

/// Knot's format is YAML with a top-level `key:` mapping entry.
fn is_knot(text: &str) -> bool {
    text.lines().any(|l| l.trim_end() == "key:")
}

fn knot_keys(text: &str) -> Result<Vec<TsigKey>> {
    #[derive(serde::Deserialize)]
    struct File {
        #[serde(default)]
        key: Vec<Entry>,
    }
    #[derive(serde::Deserialize)]
    struct Entry {
        id: String,
        algorithm: String,
        secret: String,
    }
    let file: File =
        serde_yaml_ng::from_str(text).map_err(|e| anyhow!("not a Knot key section: {e}"))?;
    file.key
        .into_iter()
        .map(|e| TsigKey::new(&e.id, TsigAlgorithm::parse(&e.algorithm)?, &e.secret))
        .collect()
}

#[derive(Debug, PartialEq, Eq)]
enum Token {
    Word(String),
    Quoted(String),
    Open,
    Close,
    Semi,
}

fn tokens(text: &str) -> Result<Vec<Token>> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {}
            '#' => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'/') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'*') => {
                chars.next();
                let mut prev = ' ';
                let mut closed = false;
                for c in chars.by_ref() {
                    if prev == '*' && c == '/' {
                        closed = true;
                        break;
                    }
                    prev = c;
                }
                if !closed {
                    bail!("unterminated /* comment");
                }
            }
            '"' => {
                let mut s = String::new();
                let mut closed = false;
                while let Some(c) = chars.next() {
                    match c {
                        '"' => {
                            closed = true;
                            break;
                        }
                        '\\' => s.extend(chars.next()),
                        c => s.push(c),
                    }
                }
                if !closed {
                    bail!("unterminated quoted string");
                }
                out.push(Token::Quoted(s));
            }
            '{' => out.push(Token::Open),
            '}' => out.push(Token::Close),
            ';' => out.push(Token::Semi),
            c => {
                let mut s = String::from(c);
                while let Some(&c) = chars.peek() {
                    if c.is_whitespace() || matches!(c, '{' | '}' | ';' | '"' | '#') {
                        break;
                    }
                    s.push(c);
                    chars.next();
                }
                out.push(Token::Word(s));
            }
        }
    }
    Ok(out)
}

fn bind_keys(text: &str) -> Result<Vec<TsigKey>> {
    let toks = tokens(text)?;
    let mut keys = Vec::new();
    let mut i = 0;
    while i < toks.len() {
        match &toks[i] {
            Token::Word(w) if w == "key" => {
                let (key, next) = bind_key(&toks, i + 1)?;
                keys.push(key);
                i = next;
            }
            _ => i = skip_statement(&toks, i)?,
        }
    }
    Ok(keys)
}

/// Skips a statement starting at `i` (up to its `;` outside braces); returns the next index.
fn skip_statement(toks: &[Token], mut i: usize) -> Result<usize> {
    let mut depth = 0usize;
    while i < toks.len() {
        match toks[i] {
            Token::Open => depth += 1,
            Token::Close => {
                depth = depth
                    .checked_sub(1)
                    .ok_or_else(|| anyhow!("unbalanced `}}`"))?;
            }
            Token::Semi if depth == 0 => return Ok(i + 1),
            _ => {}
        }
        i += 1;
    }
    if depth > 0 {
        bail!("unbalanced `{{`");
    }
    Ok(i)
}

/// Parses `NAME { clauses } ;` from `i`; returns the key and the index after it.
fn bind_key(toks: &[Token], mut i: usize) -> Result<(TsigKey, usize)> {
    let name = match toks.get(i) {
        Some(Token::Word(w) | Token::Quoted(w)) => w.clone(),
        _ => bail!("`key` without a name"),
    };
    i += 1;
    if toks.get(i) != Some(&Token::Open) {
        bail!("key {name:?}: expected `{{`");
    }
    i += 1;
    let (mut algorithm, mut secret) = (None, None);
    loop {
        match toks.get(i) {
            Some(Token::Close) => {
                i += 1;
                break;
            }
            Some(Token::Word(w)) if w == "algorithm" || w == "secret" => {
                let value = match toks.get(i + 1) {
                    Some(Token::Word(v) | Token::Quoted(v)) => v.clone(),
                    _ => bail!("key {name:?}: `{w}` without a value"),
                };
                if toks.get(i + 2) != Some(&Token::Semi) {
                    bail!("key {name:?}: expected `;` after {w}");
                }
                if w == "algorithm" {
                    algorithm = Some(value);
                } else {
                    secret = Some(value);
                }
                i += 3;
            }
            Some(_) => i = skip_statement(toks, i)?,
            None => bail!("key {name:?}: missing `}}`"),
        }
    }
    if toks.get(i) == Some(&Token::Semi) {
        i += 1;
    }
    let algorithm = algorithm.ok_or_else(|| anyhow!("key {name:?} has no algorithm"))?;
    let secret = secret.ok_or_else(|| anyhow!("key {name:?} has no secret"))?;
    let key = TsigKey::new(&name, TsigAlgorithm::parse(&algorithm)?, &secret)?;
    Ok((key, i))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "k2W2nEZQHQsGs4bXH9JfBNdZkP5ZdeqCw5CP3n1z8ZM=";

    #[test]
    fn tsig_keygen_output() {
        let text = format!(
            "key \"acme-update\" {{\n\talgorithm hmac-sha256;\n\tsecret \"{SECRET}\";\n}};\n"
        );
        let k = parse_key_file(&text, None).expect("parses");
        assert_eq!(k.name().as_str(), "acme-update");
        assert_eq!(k.algorithm(), TsigAlgorithm::HmacSha256);
        assert_eq!(k.secret().len(), 32);
    }

    #[test]
    fn ddns_confgen_output_with_comments_and_other_statements() {
        let text = format!(
            "# To activate this key, place the following in named.conf:\n\
             key \"ddns-key.example.org\" {{\n  algorithm hmac-sha512; // strong\n  secret \"{SECRET}\";\n}};\n\
             /* a comment\n over lines */\n\
             zone \"example.org\" {{ type primary; update-policy {{ grant ddns-key.example.org name x TXT; }}; }};\n\
             key other. {{ algorithm HMAC-SHA384; secret \"{SECRET}\"; }};\n"
        );
        assert!(parse_key_file(&text, None).is_err(), "two keys need a name");
        let k = parse_key_file(&text, Some("DDNS-key.example.org.")).expect("named key");
        assert_eq!(k.algorithm(), TsigAlgorithm::HmacSha512);
        let k = parse_key_file(&text, Some("other")).expect("unquoted name");
        assert_eq!(k.algorithm(), TsigAlgorithm::HmacSha384);
        let e = parse_key_file(&text, Some("missing")).expect_err("absent");
        assert!(e.to_string().contains("ddns-key.example.org, other"), "{e}");
    }

    #[test]
    fn knot_keymgr_output() {
        let text = format!(
            "# hmac-sha256:acme-update:{SECRET}\nkey:\n  - id: acme-update\n    algorithm: hmac-sha256\n    secret: {SECRET}\n"
        );
        let k = parse_key_file(&text, None).expect("parses");
        assert_eq!(k.name().as_str(), "acme-update");
    }

    #[test]
    fn broken_files_are_refused() {
        for text in [
            "",
            "# nothing\n",
            "key \"a\" { algorithm hmac-sha256; };",
            "key \"a\" { secret \"c2VjcmV0\"; };",
            "key \"a\" { algorithm hmac-md5; secret \"c2VjcmV0\"; };",
            "key \"a\" { algorithm hmac-sha256; secret \"c2VjcmV0\"; ",
            "key \"a\" { algorithm hmac-sha256; secret \"c2VjcmV0",
            "key \"a\" { algorithm hmac-sha256; secret \"!!\"; };",
            "/* open",
            "}; key",
        ] {
            assert!(parse_key_file(text, None).is_err(), "{text:?}");
        }
    }
}
