//! `ferry objects`: the source's triggers, views, routines, policies and grants that ferry does
//! not create on the target, as a script to run at cutover (in the source's dialect).

use std::io::Write;
use std::process::ExitCode;

use ferry_core::{Error, Result};

use crate::connect::Endpoint;
use crate::settings::{resolve, FlagSettings};

pub(super) async fn run(
    flags: &FlagSettings,
    output: Option<&std::path::Path>,
) -> Result<ExitCode> {
    // Only the source is read: a missing target is no problem here.
    let mut flags = flags.clone();
    if flags.target.is_none() {
        flags.target = flags.source.clone();
    }
    let settings = resolve(&flags)?;
    let source = Endpoint::parse(
        &settings.source_url,
        settings.source_password.as_deref(),
        settings.network_timeout,
    )
    .map_err(|error| error.context("source"))?;
    let catalog = source.source().read_catalog(&settings.selection).await?;
    let script = source.objects_script(&catalog).await?;
    let written = match output {
        Some(path) => std::fs::write(path, &script).map_err(|error| {
            Error::operator(
                "config.output",
                format!("cannot write {}: {error}", path.display()),
            )
            .with_hint("give a writable path to --output")
        }),
        None => std::io::stdout()
            .write_all(script.as_bytes())
            .map_err(|error| Error::operator("config.output", error.to_string())),
    };
    written?;
    Ok(ExitCode::SUCCESS)
}
