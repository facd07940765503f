//! SIGINT and SIGTERM: the first asks for a graceful stop (finish the batch in flight, store the
//! checkpoint, exit 0); the second exits at once, which is still safe because every checkpoint
//! commits with the data it covers.

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;
use tracing::warn;

/// A receiver that turns true on the first signal.
pub(crate) fn shutdown_on_signals() -> watch::Receiver<bool> {
    let (sender, receiver) = watch::channel(false);
    tokio::spawn(async move {
        let (Ok(mut interrupt), Ok(mut terminate)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) else {
            warn!("cannot listen for signals; stop ferry with kill -9 (safe: it resumes from its checkpoint)");
            // The sender stays alive: a dropped one would read as a stop request at once.
            let _keep = sender;
            std::future::pending::<()>().await;
            return;
        };
        let mut count = 0;
        loop {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
            count += 1;
            if count == 1 {
                eprintln!("stopping: finishing the batch in flight (signal again to exit at once)");
                let _ = sender.send(true);
            } else {
                eprintln!("exiting at once; the next run resumes from the last checkpoint");
                std::process::exit(130);
            }
        }
    });
    receiver
}
