//! `ferry cutover`, `ferry rollback` and `ferry finish`: move applications between the old and
//! the new database while a `ferry run` keeps streaming.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use ferry_core::Result;
use ferry_engine::cutover::{self, CutoverOptions, CutoverReport, Database, Databases};

use crate::cli::migrate::Listen;
use crate::connect::{
    endpoints, require_no_transforms, require_separate_servers, verify_sides, Endpoint,
};
use crate::settings::{resolve, FlagSettings};
use crate::telemetry::{Direction, Telemetry};

/// Which switch to make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Action {
    /// Readers to the new database only.
    Reads,
    /// Writes to the new database (fence, drain, reverse stream).
    Writes,
    /// Back to the old database.
    Rollback,
    /// Remove the streams after a cutover.
    Finish { unfence_source: bool },
}

/// The flags of `cutover` and `rollback`.
#[derive(Debug, Clone)]
pub(super) struct SwitchFlags {
    pub max_lag: Duration,
    pub stable_for: Duration,
    pub lag_wait: Duration,
    pub fence_timeout: Duration,
    pub dry_run: bool,
    pub force: bool,
    pub json: bool,
    pub verify_recent: Option<Duration>,
    /// Serve the phase over HTTP while the switch runs.
    pub listen: Listen,
}

/// What `rollback` and `finish` run with where they take no flag (they have no lag gate).
impl Default for SwitchFlags {
    fn default() -> Self {
        SwitchFlags {
            max_lag: Duration::from_secs(1),
            stable_for: Duration::ZERO,
            lag_wait: Duration::from_secs(300),
            fence_timeout: Duration::from_secs(30),
            dry_run: false,
            force: false,
            json: false,
            verify_recent: None,
            listen: Listen::default(),
        }
    }
}

pub(super) async fn run(
    flags: &FlagSettings,
    action: Action,
    switch: &SwitchFlags,
) -> Result<ExitCode> {
    let settings = resolve(flags)?;
    require_no_transforms(&settings)?;
    let (source_endpoint, target_endpoint) = endpoints(&settings)?;
    require_separate_servers(&source_endpoint, &target_endpoint).await?;
    let sides = verify_sides(&source_endpoint, &target_endpoint).await?;
    let (old_sink, new_sink) = (source_endpoint.sink(), target_endpoint.sink());
    let (old_control, new_control) = (source_endpoint.control(), target_endpoint.control());
    let new_source = target_endpoint.source();
    let databases = Databases {
        old: Database {
            source: sides.source.as_ref(),
            sink: old_sink.as_ref(),
            control: old_control.as_ref(),
            inspector: sides.source_rows.as_ref(),
        },
        new: Database {
            source: new_source.as_ref(),
            sink: new_sink.as_ref(),
            control: new_control.as_ref(),
            inspector: sides.target_rows.as_ref(),
        },
    };
    let options = CutoverOptions {
        migration: settings.name.clone(),
        selection: settings.selection.clone(),
        max_lag: switch.max_lag,
        stable_for: switch.stable_for,
        lag_wait: switch.lag_wait,
        fence_timeout: switch.fence_timeout,
        dry_run: switch.dry_run,
        force: switch.force,
        poll: Duration::from_millis(50),
        verify_recent: switch.verify_recent,
        verify_options: sides.options.clone(),
        // Ctrl-C while fenced aborts the switch and lifts the fence.
        interrupt: Some(crate::signals::shutdown_on_signals()),
    };
    let watcher = match &switch.listen.address {
        Some(address) => Some(
            serve_phase(
                address,
                switch.listen.token.clone(),
                &settings.name,
                target_endpoint.clone(),
            )
            .await?,
        ),
        None => None,
    };
    let result = match action {
        Action::Reads => cutover::switch_reads(&databases, &settings.name).await,
        Action::Writes => cutover::cutover(&databases, &options).await,
        Action::Rollback => cutover::rollback(&databases, &options).await,
        Action::Finish { unfence_source } => {
            cutover::finish(&databases, &settings.name, unfence_source).await
        }
    };
    if let Some(watcher) = watcher {
        watcher.abort();
    }
    let report = result?;
    print(&report, switch.json);
    Ok(ExitCode::SUCCESS)
}

/// Serves the control plane for the duration of a switch, re-reading the phase from the target
/// twice a second.
async fn serve_phase(
    address: &str,
    token: Option<String>,
    migration: &str,
    target: Endpoint,
) -> Result<tokio::task::JoinHandle<()>> {
    let telemetry = Arc::new(Telemetry::new(
        migration,
        Direction::new("forward", None),
        Direction::new("reverse", None),
    ));
    crate::http::serve(address, token, telemetry.clone()).await?;
    let migration = migration.to_string();
    Ok(tokio::spawn(async move {
        let control = target.control();
        loop {
            if let Ok(record) = control.load_cutover(&migration).await {
                telemetry.set_record(record);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }))
}

fn print(report: &CutoverReport, json: bool) {
    if json {
        crate::report::print_json(report);
        return;
    }
    println!("phase: {} -> {}", report.phase_before, report.phase);
    if let Some(millis) = report.write_downtime_millis {
        println!(
            "write downtime: {:.3} s (fence to switch)",
            millis as f64 / 1000.0
        );
    }
    if let Some(millis) = report.predicted_downtime_millis {
        println!("predicted write downtime: {:.3} s", millis as f64 / 1000.0);
    }
    if let Some(millis) = report.lag_millis {
        println!("lag before the fence: {:.3} s", millis as f64 / 1000.0);
    }
    if let Some(position) = &report.fence_position {
        println!("drained to the fence position {position}");
    }
    if report.sequences_synced > 0 {
        println!("sequences synced: {}", report.sequences_synced);
    }
    println!("{}", report.summary);
}
