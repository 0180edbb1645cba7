//! The acmekeep binary: parse, set up logging, run one command, report, exit deliberately.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = acmekeep::cli::Cli::parse();
    let level = match (cli.quiet, cli.verbose, cli.acmetool.debug_requested()) {
        (true, _, _) | (false, 0, Some(false)) => tracing::Level::ERROR,
        (false, 0, None) => tracing::Level::INFO,
        (false, 0, Some(true)) | (false, 1, _) => tracing::Level::DEBUG,
        _ => tracing::Level::TRACE,
    };
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match acmekeep::run(&cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("acmekeep: {e:#}");
            acmekeep::exit::code_for(&e)
        }
    }
}
