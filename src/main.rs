//! The acmekeep binary: parse, set up logging, run one command, report, exit deliberately.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = acmekeep::cli::Cli::parse();
    let service = matches!(cli.command, Some(acmekeep::cli::Command::Redirector(_)));
    acmekeep::logging::init(acmekeep::logging::level(
        cli.quiet,
        cli.verbose,
        cli.acmetool.debug_requested(),
        service,
    ));
    match acmekeep::run(&cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("acmekeep: {}", acmekeep::cause::render(&e));
            acmekeep::exit::code_for(&e)
        }
    }
}
