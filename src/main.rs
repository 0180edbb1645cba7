//! The acmekeep binary: parse, set up logging, run one command, report, exit deliberately.

use std::process::ExitCode;

fn main() -> ExitCode {
    // Started again by ourselves to stand between us and a hook (see hooks::supervisor).
    if let Some(code) = acmekeep::hooks::supervisor::run_if_asked() {
        return code;
    }
    let cli = acmekeep::cli::parse();
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
            acmekeep::exit_code_for(&e)
        }
    }
}
