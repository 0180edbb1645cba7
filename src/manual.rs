//! The man page, acmekeep(1), rendered from the command-line definition so that it never
//! drifts from it.
//!
//! One page holds everything: the global options (once), every command with its own options,
//! and the EXIT STATUS, ENVIRONMENT and FILES sections that clap cannot know. It refers to no
//! other acmekeep page, so `acmekeep manpage > acmekeep.1` is the whole manual, and the Debian
//! package installs exactly that file. The environment variables come from the options that
//! read one, plus the few read elsewhere; the exit codes from [`crate::exit`].

use clap::builder::StyledStr;
use clap::{Arg, ArgAction, Command};
use clap_mangen::roff::{Inline, Roff, bold, italic, roman};

use crate::exit;

/// The page's section (user commands), as the package installs it: man1/acmekeep.1.
pub const SECTION: &str = "1";

/// Environment variables read outside the options, with what they do.
const OTHER_ENVIRONMENT: &[(&str, &str)] = &[
    (
        crate::hooks::HOOKS_DIR_ENV,
        "Hook directories, separated by colons, used when no --hooks option is given. Hooks \
         never see it; they get ACME_STATE_DIR, set to the state directory.",
    ),
    (
        "ACMEKEEP_CLUSTER_CONF",
        "Another file to read instead of the state directory's conf/cluster (containers).",
    ),
    (
        "SSL_CERT_FILE, SSL_CERT_DIR",
        "The CA certificates that make the ACME server's TLS certificate trusted, instead of \
         the system's (a target's request.provider-ca-bundle adds to them).",
    ),
];

/// The files and directories acmekeep uses, with what they are.
const FILES: &[(&str, &str)] = &[
    (
        "/var/lib/acme",
        "The state directory (--state, ACME_STATE_DIR), acmetool's format: copy it to another \
         machine and everything moves with it.",
    ),
    (
        "/var/lib/acme/conf/target",
        "Settings for every target (YAML): the CA (request.provider), key type, challenge \
         methods, renewal margin.",
    ),
    (
        "/var/lib/acme/conf/responses",
        "Answers to the questions quickstart and account registration ask (YAML, keyed by \
         question id), for --batch runs.",
    ),
    (
        "/var/lib/acme/conf/perm",
        "Owners and modes for the files acmekeep writes (for example to let a service's group \
         read its keys).",
    ),
    (
        "/var/lib/acme/conf/cluster",
        "Makes the machine a node of a fleet sharing its certificates through etcd \
         (endpoints, credentials, secret key file; see the cluster documentation).",
    ),
    (
        "/var/lib/acme/desired/",
        "One file per target: the names a certificate must cover and its own settings; `want` \
         writes them, `unwant` removes names.",
    ),
    (
        "/var/lib/acme/live/NAME/",
        "The current certificate for NAME: cert, chain, fullchain and privkey. Point services \
         here; the link is replaced atomically on renewal.",
    ),
    (
        "/var/lib/acme/accounts/, keys/, certs/",
        "Account keys, certificate keys (mode 0600 in 0700 directories) and every certificate \
         obtained.",
    ),
    (
        "/etc/acme/hooks/, /usr/lib/acme/hooks/, /usr/libexec/acme/hooks/",
        "Hook directories, in this order (--hooks, ACME_HOOKS_DIR). The shipped reload hook \
         reloads the running services that use certificates; haproxy writes key and \
         certificate into one file.",
    ),
    (
        "/etc/default/acme-reload, /etc/conf.d/acme-reload",
        "Shell settings of the reload hook: SERVICES (the services to reload) and \
         SKIP_SERVICES.",
    ),
    (
        "/etc/systemd/system/acmekeep.service, /etc/systemd/system/acmekeep.timer",
        "The renewal job quickstart writes on a systemd machine.",
    ),
    (
        "/etc/cron.d/acmekeep",
        "The renewal job quickstart writes as root without systemd; as another user it adds a \
         line to that user's crontab.",
    ),
    (
        "/lib/systemd/system/acmekeep.service, acmekeep.timer, acmekeep-redirector.service",
        "The Debian package's units, installed but not enabled.",
    ),
    (
        "/run/acme/acme-challenge/",
        "Where http-01 challenge files go by default, served by `acmekeep redirector` or by a \
         web server's alias for /.well-known/acme-challenge/.",
    ),
];

/// The exit codes, as the README documents them.
fn exit_statuses() -> [(u8, &'static str); 5] {
    [
        (
            exit::OK,
            "Every target is satisfied, or deferred because the CA refused it for its rate \
             (named on stderr with the time it will be tried again).",
        ),
        (
            exit::FAILED,
            "Some target failed (each is named on stderr, and the reconcile-failed hooks \
             run), or a run-time error.",
        ),
        (
            exit::CONFIG,
            "Usage or configuration error; the message names the file and line, the value or \
             the response-file key.",
        ),
        (
            exit::UNAVAILABLE,
            "A fleet node (conf/cluster) could not use its etcd cluster (no member reachable, \
             or no quorum): nothing was ordered and the live certificates were kept; one line \
             on stderr says why.",
        ),
        (
            exit::LOCKED,
            "Another acmekeep process holds the state directory's lock (--wait waits \
             instead).",
        ),
    ]
}

const DESCRIPTION: &[&str] = &[
    "acmekeep obtains TLS certificates from an ACME (RFC 8555) certificate authority for the \
     names you want, renews them in time, and runs hooks that reload the services using them. \
     It keeps acmetool's state directory, response file, hook protocol and command line, so an \
     acmetool machine can be taken over as it is.",
    "Set a machine up with `acmekeep quickstart` (the CA, key type, challenge method, account, \
     hooks and the scheduled renewal job), then ask for certificates with `acmekeep want NAME...`. \
     The scheduled run, `acmekeep` with no command, prints nothing unless a certificate changed or \
     something needs a person.",
    "Global options may be given before or after the command.",
];

/// The whole page, as roff source.
pub fn render(cmd: &Command) -> String {
    let mut cmd = cmd.clone();
    cmd.build();
    let name = cmd.get_name().to_owned();
    let version = cmd.get_version().unwrap_or_default().to_owned();
    let mut page = Roff::new();
    page.control(
        "TH",
        [
            name.to_uppercase().as_str(),
            SECTION,
            // No date (the page would change with every build); written out, because an
            // empty argument would vanish and shift the ones after it.
            "\"\"",
            &format!("{name} {version}"),
            "User Commands",
        ],
    );

    page.control("SH", ["NAME"]);
    let about = cmd.get_about().map(ToString::to_string).unwrap_or_default();
    page.text([roman(format!("{name} - {}", lowercase_first(&about)))]);

    page.control("SH", ["SYNOPSIS"]);
    page.text([
        bold(name.as_str()),
        roman(" ["),
        italic("OPTIONS"),
        roman("] ["),
        italic("COMMAND"),
        roman(" ["),
        italic("ARGS"),
        roman("]]"),
    ]);

    page.control("SH", ["DESCRIPTION"]);
    for (i, paragraph) in DESCRIPTION.iter().enumerate() {
        if i > 0 {
            page.control("PP", []);
        }
        page.text([roman(*paragraph)]);
    }

    page.control("SH", ["OPTIONS"]);
    for arg in visible(cmd.get_arguments()) {
        option(&mut page, arg);
    }

    page.control("SH", ["COMMANDS"]);
    page.text([roman(
        "Without a command, acmekeep runs reconcile. Each command also takes the global \
         options above.",
    )]);
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        if sub.get_name() == "help" {
            continue;
        }
        command(&mut page, &name, sub);
    }

    reference(&mut page, &cmd);

    page.control("SH", ["SEE ALSO"]);
    page.text([
        roman("crontab(5), systemd.timer(5), acmetool(8). The documents in "),
        italic("/usr/share/doc/acmekeep/"),
        roman(
            " (hooks, challenge methods, the state directory and every setting, quickstart \
             and response files, accounts).",
        ),
    ]);
    page.render()
}

/// The reference sections: exit statuses, the environment (each option's variable, and the
/// others acmekeep reads) and the files.
fn reference(page: &mut Roff, cmd: &Command) {
    page.control("SH", ["EXIT STATUS"]);
    for (code, meaning) in exit_statuses() {
        page.control("TP", []);
        page.text([bold(code.to_string())]);
        page.text([roman(meaning)]);
    }

    page.control("SH", ["ENVIRONMENT"]);
    for arg in cmd.get_arguments().filter(|a| !a.is_hide_set()) {
        if let Some(var) = arg.get_env() {
            let flag = arg.get_long().unwrap_or_default();
            let help = arg.get_help().map(StyledStr::to_string).unwrap_or_default();
            page.control("TP", []);
            page.text([bold(var.to_string_lossy())]);
            page.text([roman(format!(
                "{}, when --{flag} is not given.",
                first_clause(&help)
            ))]);
        }
    }
    for (var, meaning) in OTHER_ENVIRONMENT {
        page.control("TP", []);
        page.text([bold(*var)]);
        page.text([roman(*meaning)]);
    }

    page.control("SH", ["FILES"]);
    for (path, meaning) in FILES {
        page.control("TP", []);
        page.text([italic(*path)]);
        page.text([roman(*meaning)]);
    }
}

/// The options and arguments the page shows: the ones not hidden.
fn visible<'a>(args: impl Iterator<Item = &'a Arg>) -> impl Iterator<Item = &'a Arg> {
    args.filter(|a| !a.is_hide_set())
}

/// One command: its usage line, what it does, and its own options and arguments.
fn command(page: &mut Roff, bin: &str, sub: &Command) {
    let own: Vec<&Arg> = visible(sub.get_arguments())
        .filter(|a| !a.is_global_set() && !is_help(a))
        .collect();
    let mut usage = vec![bold(format!("{bin} {}", sub.get_name()))];
    for arg in own.iter().filter(|a| !a.is_positional()) {
        usage.push(roman(" ["));
        usage.extend(option_name(arg, "|"));
        usage.push(roman("]"));
    }
    for arg in own.iter().filter(|a| a.is_positional()) {
        let many = matches!(arg.get_action(), ArgAction::Append)
            || arg.get_num_args().is_some_and(|n| n.max_values() > 1);
        let value = format!("{}{}", value_name(arg), if many { "..." } else { "" });
        if arg.is_required_set() {
            usage.extend([roman(" "), italic(value)]);
        } else {
            usage.extend([roman(" ["), italic(value), roman("]")]);
        }
    }
    page.control("SS", [sub.get_name()]);
    page.text(usage);
    page.control("PP", []);
    let about = sub
        .get_long_about()
        .or(sub.get_about())
        .map(StyledStr::to_string)
        .unwrap_or_default();
    page.text([roman(sentence(&about))]);
    for arg in own {
        option(page, arg);
    }
}

/// One option or argument as a tagged paragraph: name, value, help, default.
fn option(page: &mut Roff, arg: &Arg) {
    page.control("TP", []);
    if arg.is_positional() {
        page.text([italic(value_name(arg))]);
    } else {
        page.text(option_name(arg, ", "));
    }
    let help = arg
        .get_long_help()
        .or(arg.get_help())
        .map(StyledStr::to_string)
        .unwrap_or_default();
    let mut body = sentence(&help);
    let defaults: Vec<String> = arg
        .get_default_values()
        .iter()
        .map(|v| v.to_string_lossy().into_owned())
        .collect();
    if !defaults.is_empty() && arg.get_num_args().is_some_and(|n| n.takes_values()) {
        body.push_str(&format!(" Default: {}.", defaults.join(", ")));
    }
    if let Some(var) = arg.get_env() {
        body.push_str(&format!(" Environment: {}.", var.to_string_lossy()));
    }
    page.text([roman(body)]);
}

/// `-v, --verbose`, `--state=DIR`, `--wait[=DURATION]`; `between` separates the short and the
/// long name.
fn option_name(arg: &Arg, between: &str) -> Vec<Inline> {
    let mut out = Vec::new();
    if let Some(short) = arg.get_short() {
        out.push(bold(format!("-{short}")));
        if arg.get_long().is_some() {
            out.push(roman(between));
        }
    }
    if let Some(long) = arg.get_long() {
        out.push(bold(format!("--{long}")));
    }
    let takes_value = arg.get_num_args().is_some_and(|n| n.takes_values())
        && !matches!(
            arg.get_action(),
            ArgAction::SetTrue | ArgAction::Count | ArgAction::Help | ArgAction::Version
        );
    if takes_value {
        let optional = arg.get_num_args().is_some_and(|n| n.min_values() == 0);
        if optional {
            out.extend([roman("[="), italic(value_name(arg)), roman("]")]);
        } else {
            out.extend([roman("="), italic(value_name(arg))]);
        }
    }
    out
}

fn value_name(arg: &Arg) -> String {
    arg.get_value_names()
        .and_then(|names| names.first())
        .map(ToString::to_string)
        .unwrap_or_else(|| arg.get_id().to_string().to_uppercase())
}

fn is_help(arg: &Arg) -> bool {
    matches!(arg.get_action(), ArgAction::Help | ArgAction::Version)
}

/// clap help texts end without a full stop; the page's paragraphs end with one.
fn sentence(text: &str) -> String {
    let text = text.trim();
    if text.is_empty() || text.ends_with(['.', ':']) {
        text.to_owned()
    } else {
        format!("{text}.")
    }
}

/// A help text up to its first parenthesis or full stop ("How long to wait for the CA to answer
/// one request").
fn first_clause(text: &str) -> &str {
    let end = [" (", ". ", ";"]
        .iter()
        .filter_map(|sep| text.find(sep))
        .min()
        .unwrap_or(text.len());
    text[..end].trim_end_matches('.')
}

/// "Keeps a machine's..." as a NAME line wants it: "keeps a machine's...".
fn lowercase_first(text: &str) -> String {
    let mut chars = text.chars();
    chars
        .next()
        .map(|c| c.to_lowercase().chain(chars).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page() -> String {
        render(&crate::cli::command())
    }

    #[test]
    fn has_the_sections_a_man_page_needs() {
        let page = page();
        for section in [
            ".SH NAME",
            ".SH SYNOPSIS",
            ".SH DESCRIPTION",
            ".SH OPTIONS",
            ".SH COMMANDS",
            ".SH \"EXIT STATUS\"",
            ".SH ENVIRONMENT",
            ".SH FILES",
            ".SH \"SEE ALSO\"",
        ] {
            assert!(page.contains(section), "no {section}:\n{page}");
        }
        assert!(page.contains(".TH ACMEKEEP 1 "), "{page}");
    }

    #[test]
    fn refers_to_no_page_that_does_not_exist() {
        // clap_mangen's default lists each command as acmekeep-want(1) and so on, pages that
        // are not written. Every "name(N)" reference must be to another package's page.
        let page = page();
        let mut refs = Vec::new();
        for (i, _) in page.match_indices('(') {
            let rest = &page[i + 1..];
            if rest.len() > 1 && rest.as_bytes()[0].is_ascii_digit() && rest.as_bytes()[1] == b')' {
                let start = page[..i]
                    .rfind(|c: char| !(c.is_ascii_alphanumeric() || "._-\\".contains(c)))
                    .map_or(0, |p| p + 1);
                refs.push(&page[start..i]);
            }
        }
        assert_eq!(refs, ["crontab", "systemd.timer", "acmetool"], "{page}");
    }

    #[test]
    fn every_command_and_its_own_options_are_there_once() {
        let page = page();
        let cmd = crate::cli::command();
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            let name = sub.get_name();
            assert!(page.contains(&format!(".SS {name}\n")), "no {name}");
            for arg in sub.get_arguments().filter(|a| !a.is_hide_set()) {
                if let Some(long) = arg.get_long() {
                    let long = long.replace('-', "\\-");
                    assert!(page.contains(&format!("\\-\\-{long}")), "{name}: --{long}");
                }
            }
        }
        // The global options are listed once, under OPTIONS.
        for long in ["state", "batch", "ca\\-timeout", "hooks", "eab\\-kid"] {
            let listed = format!("\\fB\\-\\-{long}\\fR");
            assert_eq!(page.matches(&listed).count(), 1, "--{long}:\n{page}");
        }
    }

    #[test]
    fn environment_and_exit_status_come_from_the_code() {
        let page = page();
        for var in [
            "ACME_STATE_DIR",
            "ACMEKEEP_JOBS",
            "ACMEKEEP_CA_TIMEOUT",
            "ACMEKEEP_RATE_LIMIT_WAIT",
            crate::hooks::HOOKS_DIR_ENV,
        ] {
            assert!(page.contains(&format!("\\fB{}\\fR", var)), "{var}");
        }
        // The test-only variable stays out.
        assert!(!page.contains("ACMEKEEP_SYSTEM_ROOT"), "{page}");
        for code in [
            exit::OK,
            exit::FAILED,
            exit::CONFIG,
            exit::UNAVAILABLE,
            exit::LOCKED,
        ] {
            assert!(page.contains(&format!(".TP\n\\fB{code}\\fR\n")), "{code}");
        }
    }
}
