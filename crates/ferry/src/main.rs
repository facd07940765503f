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
        // The command's future is polled on a worker (below), not on the 8 MiB main thread.
        .thread_stack_size(8 << 20)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error[runtime]: cannot start the async runtime: {error}");
            return ExitCode::from(report::EXIT_DEFINITE);
        }
    };
    // The command runs as a task on the runtime's worker threads, not on this thread: a future
    // driven by `block_on` lives outside the workers, so each wake between it and the tasks it
    // talks to (the replication reader, the apply task) had to unpark a worker through the I/O
    // driver. While streaming that cost about a third of ferry's CPU.
    let outcome = runtime.block_on(async move { tokio::spawn(cli::dispatch(arguments)).await });
    match outcome {
        Ok(Ok(code)) => code,
        Ok(Err(error)) => {
            report::print_error(&error);
            ExitCode::from(report::exit_code(&error))
        }
        Err(failure) if failure.is_panic() => std::panic::resume_unwind(failure.into_panic()),
        Err(failure) => {
            eprintln!("error[runtime]: the command was cancelled: {failure}");
            ExitCode::from(report::EXIT_DEFINITE)
        }
    }
}
