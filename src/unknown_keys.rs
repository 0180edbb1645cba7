//! Settings nobody reads: keys in `conf/target`, `desired/*` and `conf/responses` that
//! acmekeep does not know, with the line they are on and the key that was probably meant.
//!
//! acmetool ignored unknown keys silently (yaml.v2, non-strict), so a misspelled or misplaced
//! setting (`http-self-test` under `key:`) simply had no effect. acmekeep still ignores them —
//! an acmetool state directory must keep loading — but says so. What is known comes from the
//! code itself: the target keys are read off [`crate::target::RawTarget`]'s own
//! deserializer ([`schema`]), so a setting added there is known here at once; the prompt ids
//! are listed in [`PROMPT_IDS`], and a test holds every id the code asks to that list.
//!
//! Finding the line costs a second parse, done only for a file that has an unknown key.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// Every prompt id acmetool 0.2.2 asks (its `UniqueID`s) and acmekeep's own, for
/// `conf/responses`. Ids that carry a URL (`acme-agreement:<terms URL>`,
/// `acme-eab-kid:<directory URL>`, …) are in [`PROMPT_ID_PREFIXES`].
pub const PROMPT_IDS: &[&str] = &[
    "acme-enter-email",
    "acmetool-quickstart-choose-server",
    "acmetool-quickstart-enter-directory-url",
    "acmetool-quickstart-invalid-directory-url",
    "acmetool-quickstart-key-type",
    "acmetool-quickstart-rsa-key-size",
    "acmetool-quickstart-invalid-rsa-key-size",
    "acmetool-quickstart-ecdsa-curve",
    "acmetool-quickstart-choose-method",
    "acmetool-quickstart-webroot-path",
    "acmetool-quickstart-webroot-path-invalid",
    "acmetool-quickstart-webroot-path-unlikely",
    "acmetool-quickstart-install-redirector-systemd",
    "acmetool-quickstart-complete",
    "acmetool-quickstart-install-haproxy-script",
    "acmetool-quickstart-install-cronjob",
    // acmekeep's own.
    "acme-eab-kid",
    "acme-eab-hmac-key",
    "acme-eab-algorithm",
    "acmekeep-quickstart-profile",
    "acmekeep-quickstart-metrics",
    "acmekeep-quickstart-replace-acmetool-job",
    "acmekeep-quickstart-accept-program-path",
];

/// Prompt ids followed by a URL: `<prefix>:<url>`.
pub const PROMPT_ID_PREFIXES: &[&str] = &[
    "acme-agreement",
    "acme-eab-kid",
    "acme-eab-hmac-key",
    "acme-eab-algorithm",
];

/// Whether `id` is a prompt id some version of acmetool or acmekeep asks.
pub fn known_prompt_id(id: &str) -> bool {
    PROMPT_IDS.contains(&id)
        || id
            .split_once(':')
            .is_some_and(|(prefix, _)| PROMPT_ID_PREFIXES.contains(&prefix))
}

/// The prompt id `id` probably meant, if one is close.
pub fn suggest_prompt_id(id: &str) -> Option<String> {
    if let Some((prefix, rest)) = id.split_once(':') {
        let better = closest(prefix, PROMPT_ID_PREFIXES.iter().copied())?;
        return Some(format!("{better}:{rest}"));
    }
    closest(id, PROMPT_IDS.iter().copied()).map(str::to_owned)
}

/// The dotted paths of every setting `T` reads (`request.challenge.http-self-test`), maps
/// and lists included as leaves, found by deserializing `T` from a `Schema` deserializer
/// that offers every field each struct asks for.
pub fn schema<'de, T: serde::Deserialize<'de>>() -> Vec<String> {
    let mut out = Vec::new();
    // Every field is offered, so this only fails if `T` refuses its own field names.
    let _ = T::deserialize(Schema {
        prefix: String::new(),
        out: &mut out,
    });
    out
}

/// The known key `unknown` (a dotted path) most probably meant, from `known` (dotted
/// paths): the same key in another place (misplaced), else a close spelling among its
/// siblings (misspelled), else a known name that begins or ends the unknown one as whole
/// words (`request.renewal-margin` for `satisfy.margin`: other clients' longer names for the
/// same setting), else a close spelling anywhere.
pub fn suggest_key(unknown: &str, known: &[String]) -> Option<String> {
    let norm = |s: &str| s.to_ascii_lowercase().replace('_', "-");
    let (parent, last) = match unknown.rsplit_once('.') {
        Some((p, l)) => (Some(p), l),
        None => (None, unknown),
    };
    let last_of = |k: &str| k.rsplit('.').next().unwrap_or(k).to_owned();
    let parent_of = |k: &str| k.rsplit_once('.').map(|(p, _)| p.to_owned());
    // Misplaced: the same name elsewhere, the one sharing most of the path first.
    let shared = |k: &str| {
        k.split('.')
            .zip(unknown.split('.'))
            .take_while(|(a, b)| norm(a) == norm(b))
            .count()
    };
    if let Some(k) = known
        .iter()
        .filter(|k| norm(&last_of(k)) == norm(last))
        .max_by_key(|k| (shared(k), std::cmp::Reverse(k.len())))
    {
        return Some(k.clone());
    }
    // Misspelled: a sibling close enough.
    let siblings = known
        .iter()
        .filter(|k| parent_of(k).as_deref() == parent)
        .map(String::as_str);
    if let Some(k) = closest_by(last, siblings, |k| last_of(k)) {
        return Some(k.to_owned());
    }
    // A longer name for a known one: the known name is a whole-word prefix or suffix (of at
    // least four letters, so that `key` or `ip` alone suggest nothing).
    let words = norm(last);
    let wraps = |k: &str| {
        let name = norm(&last_of(k));
        name.len() >= 4
            && (words.ends_with(&format!("-{name}")) || words.starts_with(&format!("{name}-")))
    };
    if let Some(k) = known
        .iter()
        .filter(|k| wraps(k))
        .max_by_key(|k| (shared(k), std::cmp::Reverse(k.len())))
    {
        return Some(k.clone());
    }
    // Misspelled and misplaced.
    closest_by(last, known.iter().map(String::as_str), |k| last_of(k)).map(str::to_owned)
}

/// The candidate closest to `word`, if close enough to be a slip of the keyboard.
fn closest<'a>(word: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    closest_by(word, candidates, str::to_owned)
}

/// [`closest`], comparing `word` with `key(candidate)`.
fn closest_by<'a>(
    word: &str,
    candidates: impl Iterator<Item = &'a str>,
    key: impl Fn(&str) -> String,
) -> Option<&'a str> {
    let norm = |s: &str| s.to_ascii_lowercase().replace('_', "-");
    let word = norm(word);
    candidates
        .map(|c| (strsim::levenshtein(&word, &norm(&key(c))), c))
        .filter(|(d, c)| *d <= (key(c).chars().count() / 3).max(2))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// The 1-based line of the key at `path` (map keys from the top) in the YAML `text`.
pub fn key_line(text: &str, path: &[&str]) -> Option<usize> {
    // The walk stops with this error at the key; the YAML parser adds the key's position.
    let found = serde_yaml_ng::Deserializer::from_str(text)
        .next()
        .map(|doc| Find { path }.deserialize(doc));
    match found {
        // (The message starts with the path of the enclosing map: "request.key: …".)
        Some(Err(e)) if e.to_string().contains(FOUND) => e.location().map(|l| l.line()),
        _ => None,
    }
}

/// The message [`Find`] stops with.
const FOUND: &str = "acmekeep: key found";

/// Walks map keys along `path`; fails with [`FOUND`] while reading the last key.
struct Find<'p> {
    path: &'p [&'p str],
}

impl<'de> DeserializeSeed<'de> for Find<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Find<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("anything")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let Some((first, rest)) = self.path.split_first() else {
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            return Ok(());
        };
        let key = Key {
            wanted: first,
            last: rest.is_empty(),
        };
        while let Some(hit) = map.next_key_seed(key.clone())? {
            if hit {
                map.next_value_seed(Find { path: rest })?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(())
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_none<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        self.deserialize(d)
    }
    fn visit_enum<A: de::EnumAccess<'de>>(self, data: A) -> Result<(), A::Error> {
        let (IgnoredAny, variant) = data.variant::<IgnoredAny>()?;
        de::VariantAccess::newtype_variant::<IgnoredAny>(variant).map(|_| ())
    }
}

/// A map key: whether it is the one wanted (and [`FOUND`] if it is the last of the path).
#[derive(Clone)]
struct Key<'p> {
    wanted: &'p str,
    last: bool,
}

impl<'de> DeserializeSeed<'de> for Key<'_> {
    type Value = bool;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Key<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<bool, E> {
        match (v == self.wanted, self.last) {
            (true, true) => Err(E::custom(FOUND)),
            (hit, _) => Ok(hit),
        }
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<bool, E> {
        self.visit_str(&v.to_string())
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<bool, E> {
        self.visit_str(&v.to_string())
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<bool, E> {
        self.visit_str(&v.to_string())
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<bool, E> {
        self.visit_str(&v.to_string())
    }
    fn visit_unit<E: de::Error>(self) -> Result<bool, E> {
        self.visit_str("~")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(false)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(false)
    }
}

/// A deserializer that offers each struct every field it asks for, recording their paths.
struct Schema<'o> {
    prefix: String,
    out: &'o mut Vec<String>,
}

/// The only error a [`Schema`] walk can end with (a type refusing what it was offered).
#[derive(Debug)]
struct SchemaError;

impl fmt::Display for SchemaError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("schema walk")
    }
}
impl std::error::Error for SchemaError {}
impl de::Error for SchemaError {
    fn custom<T: fmt::Display>(_: T) -> Self {
        SchemaError
    }
}

impl<'de> Deserializer<'de> for Schema<'_> {
    type Error = SchemaError;

    // A leaf: a string satisfies strings and the untagged one-or-many settings alike.
    fn deserialize_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, SchemaError> {
        v.visit_str("")
    }
    fn deserialize_option<V: Visitor<'de>>(self, v: V) -> Result<V::Value, SchemaError> {
        v.visit_some(self)
    }
    fn deserialize_bool<V: Visitor<'de>>(self, v: V) -> Result<V::Value, SchemaError> {
        v.visit_bool(false)
    }
    fn deserialize_i64<V: Visitor<'de>>(self, v: V) -> Result<V::Value, SchemaError> {
        v.visit_i64(0)
    }
    fn deserialize_u64<V: Visitor<'de>>(self, v: V) -> Result<V::Value, SchemaError> {
        v.visit_u64(0)
    }
    fn deserialize_seq<V: Visitor<'de>>(self, v: V) -> Result<V::Value, SchemaError> {
        v.visit_seq(de::value::SeqDeserializer::<
            std::iter::Empty<()>,
            SchemaError,
        >::new(std::iter::empty()))
    }
    fn deserialize_map<V: Visitor<'de>>(self, v: V) -> Result<V::Value, SchemaError> {
        v.visit_map(de::value::MapDeserializer::<
            std::iter::Empty<((), ())>,
            SchemaError,
        >::new(std::iter::empty()))
    }
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, SchemaError> {
        v.visit_map(Fields {
            prefix: self.prefix,
            fields: fields.iter(),
            current: None,
            out: self.out,
        })
    }

    serde::forward_to_deserialize_any! {
        i8 i16 i32 i128 u8 u16 u32 u128 f32 f64 char str string bytes byte_buf unit
        unit_struct newtype_struct tuple tuple_struct enum identifier ignored_any
    }
}

/// A struct's fields, each offered with a [`Schema`] for its value.
struct Fields<'o> {
    prefix: String,
    fields: std::slice::Iter<'static, &'static str>,
    current: Option<String>,
    out: &'o mut Vec<String>,
}

impl<'de> MapAccess<'de> for Fields<'_> {
    type Error = SchemaError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, SchemaError> {
        let Some(field) = self.fields.next() else {
            return Ok(None);
        };
        let path = if self.prefix.is_empty() {
            (*field).to_owned()
        } else {
            format!("{}.{field}", self.prefix)
        };
        self.out.push(path.clone());
        self.current = Some(path);
        seed.deserialize(de::value::BorrowedStrDeserializer::new(field))
            .map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, SchemaError> {
        seed.deserialize(Schema {
            prefix: self.current.take().unwrap_or_default(),
            out: self.out,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::target::RawTarget;

    #[test]
    fn the_schema_is_read_off_the_target_type() {
        let keys = schema::<RawTarget>();
        for k in [
            "satisfy.names",
            "satisfy.margin",
            "satisfy.key.type",
            "request.provider",
            "request.key.rsa-size",
            "request.key.id",
            "request.ocsp-must-staple",
            "request.challenge.http-self-test",
            "request.challenge.env",
            "request.challenge.dns-01.key-file",
            "request.preferred-chain",
            "request.eab.hmac-key",
            "priority",
            "label",
            "names",
            "provider",
        ] {
            assert!(keys.iter().any(|x| x == k), "{k} missing from {keys:?}");
        }
    }

    #[test]
    fn every_acmetool_target_key_is_known() {
        // acmetool 0.2.2's target schema (storage/types.go), all of it.
        let keys = schema::<RawTarget>();
        for k in [
            "satisfy",
            "satisfy.names",
            "satisfy.margin",
            "satisfy.key",
            "satisfy.key.type",
            "request",
            "request.names",
            "request.provider",
            "request.key",
            "request.key.type",
            "request.key.rsa-size",
            "request.key.ecdsa-curve",
            "request.key.id",
            "request.challenge",
            "request.challenge.webroot-paths",
            "request.challenge.http-ports",
            "request.challenge.http-self-test",
            "request.challenge.env",
            "request.ocsp-must-staple",
            "priority",
            "label",
            "names",
            "provider",
        ] {
            assert!(keys.iter().any(|x| x == k), "acmetool's {k} unknown");
        }
    }

    #[test]
    fn suggestions_find_misplaced_and_misspelled_keys() {
        let keys = schema::<RawTarget>();
        let s = |k: &str| suggest_key(k, &keys);
        assert_eq!(
            s("request.key.http-self-test").as_deref(),
            Some("request.challenge.http-self-test")
        );
        assert_eq!(
            s("request.challenge.http_self_test").as_deref(),
            Some("request.challenge.http-self-test")
        );
        assert_eq!(
            s("request.challenge.webroot-path").as_deref(),
            Some("request.challenge.webroot-paths")
        );
        assert_eq!(s("satisfy.name").as_deref(), Some("satisfy.names"));
        assert_eq!(s("Satisfy").as_deref(), Some("satisfy"));
        assert_eq!(s("request.provder").as_deref(), Some("request.provider"));
        assert_eq!(s("margin").as_deref(), Some("satisfy.margin"));
        // Other clients' longer names for a setting (issue 14's acceptance run).
        assert_eq!(
            s("request.renewal-margin").as_deref(),
            Some("satisfy.margin")
        );
        assert_eq!(s("satisfy.domain-names").as_deref(), Some("satisfy.names"));
        assert_eq!(s("request.account-key"), None, "too short a word to go on");
        assert_eq!(s("request.key.something-else-entirely"), None);
    }

    #[test]
    fn prompt_ids_and_their_suggestions() {
        assert!(known_prompt_id("acmetool-quickstart-choose-server"));
        assert!(known_prompt_id(
            "acme-agreement:https://letsencrypt.org/documents/LE-SA-v1.2-November-15-2017.pdf"
        ));
        assert!(known_prompt_id("acme-eab-kid:https://ca.example/dir"));
        assert!(!known_prompt_id("acmetool-quickstart-choose-sever"));
        assert_eq!(
            suggest_prompt_id("acmetool-quickstart-choose-sever").as_deref(),
            Some("acmetool-quickstart-choose-server")
        );
        assert_eq!(
            suggest_prompt_id("acme-agreemnt:https://x/tos").as_deref(),
            Some("acme-agreement:https://x/tos")
        );
        assert_eq!(suggest_prompt_id("colour"), None);
    }

    #[test]
    fn every_prompt_id_the_code_asks_is_known() {
        // Prompt ids are string literals in the code: `"acmetool-…"`, `"acmekeep-…"`, and the
        // `acme-…` ones. Each must be a known id (or a known prefix, when it ends in ':').
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = vec![src.clone()];
        let mut seen = Vec::new();
        while let Some(p) = files.pop() {
            if p.is_dir() {
                files.extend(
                    std::fs::read_dir(&p)
                        .expect("src")
                        .map(|e| e.expect("entry").path()),
                );
                continue;
            }
            if p.extension().is_none_or(|e| e != "rs") || p.ends_with("unknown_keys.rs") {
                continue;
            }
            let text = std::fs::read_to_string(&p).expect("source");
            for lit in text.split('"').skip(1).step_by(2) {
                let id_like = [
                    "acmetool-quickstart-",
                    "acmekeep-quickstart-",
                    "acme-enter-",
                    "acme-eab-",
                    "acme-agreement",
                ]
                .iter()
                .any(|p| lit.starts_with(p))
                    && lit.bytes().all(|b| {
                        b.is_ascii_lowercase() || b == b'-' || b == b':' || b.is_ascii_digit()
                    });
                if id_like {
                    let id = lit.trim_end_matches(':');
                    assert!(
                        known_prompt_id(id) || PROMPT_ID_PREFIXES.contains(&id),
                        "{}: prompt id {lit:?} is not in unknown_keys::PROMPT_IDS",
                        p.display()
                    );
                    seen.push(id.to_owned());
                }
            }
        }
        assert!(
            seen.iter()
                .any(|s| s == "acmetool-quickstart-choose-server"),
            "{seen:?}"
        );
    }

    #[test]
    fn key_lines_are_found() {
        let text = "satisfy:\n  names: [a.b]\nrequest:\n  key:\n    type: ecdsa\n    http-self-test: false\n  challenge: {http-ports: [80], junk: 1}\n\"quoted\": 1\n";
        assert_eq!(
            key_line(text, &["request", "key", "http-self-test"]),
            Some(6)
        );
        assert_eq!(key_line(text, &["request", "challenge", "junk"]), Some(7));
        assert_eq!(key_line(text, &["quoted"]), Some(8));
        assert_eq!(key_line(text, &["satisfy"]), Some(1));
        assert_eq!(key_line(text, &["request", "nothing"]), None);
        assert_eq!(key_line("- a\n- b\n", &["x"]), None);
    }
}
