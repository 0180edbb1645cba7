//! Answers to questions: first the response file, then (only on a terminal and without
//! `--batch`) the user. Prompt ids are acmetool's, so existing `conf/responses` files keep
//! working. A run without a terminal never waits for input: a missing answer is an error
//! that names the exact key to add.

use std::collections::BTreeMap;
use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;

use anyhow::{Context, Result};

use crate::files::Links;

/// Largest response file we read.
const MAX_RESPONSES: u64 = 256 * 1024;

/// An answer from the response file.
#[derive(Clone, Debug, PartialEq)]
pub enum Answer {
    /// A string (ints are formatted as decimal, as acmetool does).
    Text(String),
    /// `true` = yes/acknowledged, `false` = cancelled.
    Bool(bool),
}

/// Reads a response file's YAML (`source` names it in messages): prompt ids mapped to
/// strings, numbers or booleans; a key with another kind of value is named in a warning and
/// ignored.
pub fn parse_answers(bytes: &[u8], source: &str) -> Result<BTreeMap<String, Answer>> {
    let mut answers = BTreeMap::new();
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(answers);
    }
    let map: BTreeMap<String, serde_yaml_ng::Value> = serde_yaml_ng::from_slice(bytes)
        .map_err(crate::target::yaml_error)
        .with_context(|| format!("cannot parse {source}"))?;
    let text = String::from_utf8_lossy(bytes);
    // "<file>: line N: " for the key `k`, when it can be found.
    let at = |k: &str| {
        let line = crate::unknown_keys::key_line(&text, &[k])
            .map(|l| format!(" line {l}:"))
            .unwrap_or_default();
        format!("{source}:{line}")
    };
    for (k, v) in map {
        if !crate::unknown_keys::known_prompt_id(&k) {
            let hint = crate::unknown_keys::suggest_prompt_id(&k)
                .map(|s| format!("; did you mean `{s}`?"))
                .unwrap_or_default();
            crate::logging::warn_once(format!(
                "{} unknown prompt id `{k}` (ignored){hint}",
                at(&k)
            ));
        }
        let answer = match v {
            serde_yaml_ng::Value::String(s) => Answer::Text(s),
            serde_yaml_ng::Value::Number(n) => Answer::Text(n.to_string()),
            serde_yaml_ng::Value::Bool(b) => Answer::Bool(b),
            _ if !crate::unknown_keys::known_prompt_id(&k) => continue,
            _ => {
                crate::logging::warn_once(format!(
                    "{} ignoring {k:?}: value must be a string, number or boolean",
                    at(&k)
                ));
                continue;
            }
        };
        answers.insert(k, answer);
    }
    Ok(answers)
}

/// Where answers come from.
#[derive(Debug, Default)]
pub struct Interaction {
    answers: BTreeMap<String, Answer>,
    source: Option<String>,
    interactive: bool,
}

impl Interaction {
    /// Loads `path` if it exists. `interactive` is true only with a terminal and no `--batch`.
    /// For a file the user named (`--response-file`): links are followed, and a FIFO is read.
    pub fn load(path: Option<&Path>, interactive: bool) -> Result<Self> {
        Self::load_with(path, interactive, Links::Follow)
    }

    /// [`Interaction::load`] for the state directory's `conf/responses`: read only if it is a
    /// regular file, never through a symlink (whose target's lines would end up in our
    /// messages); anything else is named in a warning and skipped.
    pub fn load_state_file(path: &Path, interactive: bool) -> Result<Self> {
        Self::load_with(Some(path), interactive, Links::Refuse)
    }

    fn load_with(path: Option<&Path>, interactive: bool, links: Links) -> Result<Self> {
        use crate::files::{read_bounded, read_state_file};
        let mut me = Interaction {
            interactive,
            ..Default::default()
        };
        let Some(path) = path else { return Ok(me) };
        me.source = Some(path.display().to_string());
        let read = match links {
            Links::Follow => read_bounded(path, MAX_RESPONSES),
            Links::Refuse => read_state_file(path, MAX_RESPONSES, links),
        };
        let bytes = match read {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(me),
            Err(e) if links == Links::Refuse && e.kind() == std::io::ErrorKind::InvalidInput => {
                tracing::warn!("not reading {}: {e}", path.display());
                return Ok(me);
            }
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        me.answers = parse_answers(&bytes, &path.display().to_string())?;
        Ok(me)
    }

    /// Adds answers given on the command line; they win over the response file's.
    pub fn with_answers(mut self, answers: impl IntoIterator<Item = (String, Answer)>) -> Self {
        self.answers.extend(answers);
        self
    }

    /// The answer given for `id` (response file or command line), if any.
    pub fn answer(&self, id: &str) -> Option<&Answer> {
        self.answers.get(id)
    }

    /// Whether questions without an answer can be asked on a terminal.
    pub fn is_interactive(&self) -> bool {
        self.interactive
    }

    /// Whether stdin is a terminal and prompting is allowed.
    pub fn terminal_allowed(batch: bool) -> bool {
        !batch && std::io::stdin().is_terminal() && std::io::stderr().is_terminal()
    }

    fn missing(&self, id: &str, hint: &str) -> anyhow::Error {
        let file = self.source.as_deref().unwrap_or("conf/responses");
        crate::exit::config_error(anyhow::anyhow!(
            "no answer to \"{hint}\" and no terminal to ask on: add the key {id} to the response file ({file})"
        ))
    }

    fn prompt(&self, question: &str) -> Result<String> {
        let mut err = std::io::stderr();
        write!(err, "{question} ")?;
        err.flush()?;
        let mut line = String::new();
        std::io::stdin().lock().take_line(&mut line)?;
        Ok(line.trim().to_owned())
    }

    /// A yes/no question.
    pub fn yes_no(&self, id: &str, question: &str) -> Result<bool> {
        match self.answers.get(id) {
            Some(Answer::Bool(b)) => Ok(*b),
            Some(Answer::Text(t)) => Ok(matches!(
                t.to_ascii_lowercase().as_str(),
                "yes" | "y" | "true"
            )),
            None if self.interactive => {
                let a = self.prompt(&format!("{question} [y/N]"))?;
                Ok(matches!(a.to_ascii_lowercase().as_str(), "y" | "yes"))
            }
            None => Err(self.missing(id, question)),
        }
    }

    /// A free-text question; `false` in the file means "no answer" (empty).
    pub fn text(&self, id: &str, question: &str) -> Result<String> {
        match self.answers.get(id) {
            Some(Answer::Text(t)) => Ok(t.clone()),
            Some(Answer::Bool(_)) => Ok(String::new()),
            None if self.interactive => self.prompt(question),
            None => Err(self.missing(id, question)),
        }
    }
}

/// What kind of answer a question wants.
#[derive(Clone, Debug)]
pub enum Kind<'a> {
    /// Yes or no.
    YesNo {
        /// Answer used for an implicit question without an answer.
        default: bool,
    },
    /// Free text.
    Text {
        /// Pre-filled / implicit answer.
        default: &'a str,
    },
    /// One of several values: `(value, label)`.
    Choice {
        /// The options.
        options: &'a [(&'a str, &'a str)],
        /// Index of the default option.
        default: usize,
    },
}

/// A question with a stable id (acmetool's prompt ids; response-file keys).
#[derive(Clone, Debug)]
pub struct Question<'a> {
    /// Prompt id, the response-file key.
    pub id: &'a str,
    /// One-line question.
    pub title: &'a str,
    /// Longer explanation shown above it on a terminal.
    pub body: &'a str,
    /// Answer kind.
    pub kind: Kind<'a>,
    /// Implicit questions are never asked (unless `--expert`): without an answer in the
    /// response file their default is used.
    pub implicit: bool,
}

/// An answer to a [`Question`].
#[derive(Clone, Debug, PartialEq)]
pub enum Reply {
    /// For yes/no questions.
    Yes(bool),
    /// For text and choice questions (a choice gives the option's value).
    Text(String),
}

impl Reply {
    /// The yes/no value (text answers "yes", "y", "true" count as yes).
    pub fn is_yes(&self) -> bool {
        match self {
            Reply::Yes(b) => *b,
            Reply::Text(t) => matches!(t.to_ascii_lowercase().as_str(), "yes" | "y" | "true"),
        }
    }

    /// The text value (a yes/no answer gives "" for no; acmetool: `false` = cancelled).
    pub fn text(&self) -> &str {
        match self {
            Reply::Yes(true) => "yes",
            Reply::Yes(false) => "",
            Reply::Text(t) => t,
        }
    }
}

impl Interaction {
    /// Asks `q`: the response file first; an implicit question takes its default (unless
    /// `expert`); then the terminal if allowed; otherwise an error naming the key to add.
    pub fn ask(&self, q: &Question<'_>, expert: bool) -> Result<Reply> {
        if let Some(a) = self.answers.get(q.id) {
            return Ok(match (a, &q.kind) {
                (Answer::Bool(b), Kind::Choice { options, .. }) => {
                    return Err(crate::exit::config_error(anyhow::anyhow!(
                        "the answer to {} in the response file is {b}, not one of: {}",
                        q.id,
                        options
                            .iter()
                            .map(|(v, _)| *v)
                            .collect::<Vec<_>>()
                            .join(", ")
                    )));
                }
                (Answer::Bool(b), _) => Reply::Yes(*b),
                (Answer::Text(t), Kind::YesNo { .. }) => {
                    Reply::Yes(Reply::Text(t.clone()).is_yes())
                }
                (Answer::Text(t), Kind::Choice { options, .. }) => {
                    if !options.iter().any(|(v, _)| v == t) {
                        return Err(crate::exit::config_error(anyhow::anyhow!(
                            "the answer to {} in the response file is \"{t}\", not one of: {}",
                            q.id,
                            options
                                .iter()
                                .map(|(v, _)| *v)
                                .collect::<Vec<_>>()
                                .join(", ")
                        )));
                    }
                    Reply::Text(t.clone())
                }
                (Answer::Text(t), Kind::Text { .. }) => Reply::Text(t.clone()),
            });
        }
        if q.implicit && !expert {
            return Ok(default_reply(&q.kind));
        }
        if !self.interactive {
            return Err(self.missing(q.id, q.title));
        }
        self.ask_terminal(q)
    }

    fn ask_terminal(&self, q: &Question<'_>) -> Result<Reply> {
        use dialoguer::{Confirm, Input, Select};
        let theme = dialoguer::theme::SimpleTheme;
        if !q.body.is_empty() {
            eprintln!("\n{}\n", q.body);
        }
        Ok(match &q.kind {
            Kind::YesNo { default } => Reply::Yes(
                Confirm::with_theme(&theme)
                    .with_prompt(q.title)
                    .default(*default)
                    .interact()?,
            ),
            Kind::Text { default } => Reply::Text(
                Input::<String>::with_theme(&theme)
                    .with_prompt(q.title)
                    .default((*default).to_owned())
                    .allow_empty(true)
                    .interact_text()?,
            ),
            Kind::Choice { options, default } => {
                let labels: Vec<&str> = options.iter().map(|(_, l)| *l).collect();
                let i = Select::with_theme(&theme)
                    .with_prompt(q.title)
                    .items(&labels)
                    .default(*default)
                    .interact()?;
                Reply::Text(options[i].0.to_owned())
            }
        })
    }
}

fn default_reply(kind: &Kind<'_>) -> Reply {
    match kind {
        Kind::YesNo { default } => Reply::Yes(*default),
        Kind::Text { default } => Reply::Text((*default).to_owned()),
        Kind::Choice { options, default } => Reply::Text(
            options
                .get(*default)
                .map(|(v, _)| (*v).to_owned())
                .unwrap_or_default(),
        ),
    }
}

trait TakeLine {
    fn take_line(&mut self, buf: &mut String) -> std::io::Result<()>;
}

impl<R: BufRead> TakeLine for R {
    fn take_line(&mut self, buf: &mut String) -> std::io::Result<()> {
        // Bound what we read from a terminal, too.
        let mut limited = std::io::Read::take(self, 4096);
        limited.read_line(buf)?;
        if buf.is_empty() {
            bail_eof()?;
        }
        Ok(())
    }
}

fn bail_eof() -> std::io::Result<()> {
    Err(std::io::Error::new(
        std::io::ErrorKind::UnexpectedEof,
        "no answer (end of input)",
    ))
}

/// Validates an e-mail address well enough to refuse garbage (acmetool: an invalid address
/// means no contact).
pub fn plausible_email(s: &str) -> bool {
    let Some((local, domain)) = s.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && s.len() <= 254
        && domain.contains('.')
        && !s
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | ',' | ';'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_from_file_and_missing_keys_named() {
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path().join("responses");
        std::fs::write(&p, "\"acme-agreement:https://tos\": true\nacme-enter-email: a@b.org\nsize: 4096\nno: false\n")
            .expect("write");
        let i = Interaction::load(Some(&p), false).expect("load");
        assert!(
            i.yes_no("acme-agreement:https://tos", "agree?")
                .expect("answered")
        );
        assert_eq!(
            i.text("acme-enter-email", "email?").expect("answered"),
            "a@b.org"
        );
        assert_eq!(i.text("size", "size?").expect("answered"), "4096");
        assert!(!i.yes_no("no", "?").expect("answered"));
        let err = i
            .yes_no("acme-agreement:https://other", "agree?")
            .expect_err("missing");
        assert!(format!("{err}").contains("acme-agreement:https://other"));
        bail_if_ok(Interaction::load(Some(&d.path().join("missing")), false));
    }

    fn bail_if_ok(r: Result<Interaction>) {
        let i = r.expect("a missing file is no answers");
        assert!(i.text("x", "x?").is_err());
    }

    #[test]
    fn questions_use_file_then_implicit_default_then_fail() {
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path().join("responses");
        std::fs::write(&p, "pick: b\nflag: false\nbad-pick: z\n").expect("write");
        let i = Interaction::load(Some(&p), false).expect("load");
        let opts = [("a", "A"), ("b", "B")];
        let q = |id, implicit| Question {
            id,
            title: "t",
            body: "",
            kind: Kind::Choice {
                options: &opts,
                default: 0,
            },
            implicit,
        };
        assert_eq!(
            i.ask(&q("pick", false), false).expect("answered"),
            Reply::Text("b".into())
        );
        assert_eq!(
            i.ask(&q("other", true), false).expect("implicit"),
            Reply::Text("a".into())
        );
        assert!(
            i.ask(&q("other", true), true).is_err(),
            "expert mode asks, and cannot"
        );
        assert!(i.ask(&q("other", false), false).is_err());
        assert!(i.ask(&q("bad-pick", false), false).is_err());
        let yn = Question {
            id: "flag",
            title: "t",
            body: "",
            kind: Kind::YesNo { default: true },
            implicit: false,
        };
        assert_eq!(i.ask(&yn, false).expect("answered"), Reply::Yes(false));
    }

    #[test]
    fn email_plausibility() {
        assert!(plausible_email("a@b.org"));
        for bad in [
            "",
            "a",
            "a@b",
            "@b.org",
            "a b@c.org",
            "a@b.org\n",
            "a@b.org,c@d.org",
        ] {
            assert!(!plausible_email(bad), "{bad:?}");
        }
    }
}
