//! The `sluice` process: parse the command line, dispatch, turn the outcome into an exit code.

use std::process::ExitCode;

use clap::Parser;

mod allocator;
mod api;
mod cli;
mod commands;
mod reload;

fn main() -> ExitCode {
    allocator::apply();
    let cli = cli::Cli::parse();
    commands::init_logging(cli.quiet, cli.verbose, cli.log_format, cli.color);
    let code = match cli.command {
        Some(cli::Command::Validate(args)) => commands::validate::run(&args),
        Some(cli::Command::Test(args)) => commands::test::run(&args),
        Some(cli::Command::Vrl(args)) => commands::vrl::run(&args),
        Some(cli::Command::Tap(args)) => commands::tap::run(&args),
        Some(cli::Command::Top(args)) => commands::top::run(&args),
        Some(cli::Command::List) => commands::list::run(),
        Some(cli::Command::Dlq(command)) => commands::dlq::run(&command),
        Some(cli::Command::Buffer(command)) => commands::buffer::run(&command),
        Some(cli::Command::Checkpoints(command)) => commands::checkpoints::run(&command),
        Some(cli::Command::Run(args)) => commands::run::run(&args),
        None => commands::run::run(&cli.run),
    };
    ExitCode::from(code)
}
