//! ferry: move a live database to a new home without stopping the applications that use it.

mod cli;
mod connect;
mod http;
mod progress;
mod report;
mod settings;
mod signals;
mod telemetry;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    ferry_connectors::install_tls_provider();
    let arguments = cli::Cli::parse();
    report::init_logging(&arguments.log_level);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error[runtime]: cannot start the async runtime: {error}");
            return ExitCode::from(report::EXIT_DEFINITE);
        }
    };
    match runtime.block_on(cli::dispatch(arguments)) {
        Ok(code) => code,
        Err(error) => {
            report::print_error(&error);
            ExitCode::from(report::exit_code(&error))
        }
    }
}
