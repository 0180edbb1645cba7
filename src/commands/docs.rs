//! `acmekeep completions SHELL` and `acmekeep manpage`: generated from the CLI definition,
//! so they never drift from it.

use std::process::ExitCode;

use anyhow::Result;
use clap::CommandFactory;

use crate::cli::{Cli, CompletionsArgs};

/// Prints shell completions.
pub fn completions(args: &CompletionsArgs) -> Result<ExitCode> {
    let mut cmd = Cli::command();
    clap_complete::generate(args.shell, &mut cmd, "acmekeep", &mut std::io::stdout());
    Ok(ExitCode::SUCCESS)
}

/// Prints the man page, acmekeep(1) (see [`crate::manual`]).
pub fn manpage() -> Result<ExitCode> {
    use std::io::Write;
    let page = crate::manual::render(&crate::cli::command());
    std::io::stdout().write_all(page.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}
