//! Each side of a migration from the settings, through the connector registry (which alone
//! knows the kinds of databases).

use ferry_connectors::registry;
pub(crate) use ferry_connectors::registry::{require_separate_servers, Endpoint};
use ferry_core::connector::{Inspector, Source};
use ferry_core::{Error, Result};
use ferry_engine::verify::VerifyOptions;

use crate::settings::Settings;

/// The source and target of the settings, the source prepared for this target.
pub(crate) fn endpoints(settings: &Settings) -> Result<(Endpoint, Endpoint)> {
    let source = Endpoint::parse(
        &settings.source_url,
        settings.source_password.as_deref(),
        settings.network_timeout,
    )
    .map_err(|error| error.context("source"))?;
    if let Some(setting) = source.target_only_setting() {
        return Err(Error::operator(
            "config.url",
            format!("the source URL says {setting}, which only a target URL takes"),
        )
        .with_hint("move it to the target URL"));
    }
    let target = Endpoint::parse(
        &settings.target_url,
        settings.target_password.as_deref(),
        settings.network_timeout,
    )
    .map_err(|error| error.context("target"))?;
    Ok(registry::pair(source, &target))
}

/// What verification compares: the source (for its catalog) and the row readers of both sides.
pub(crate) struct VerifySides {
    pub source: Box<dyn Source>,
    pub source_rows: Box<dyn Inspector>,
    pub target_rows: Box<dyn Inspector>,
    /// How this pair compares (whole tables and no type comparison across engines).
    pub options: VerifyOptions,
}

/// The readers `verify` (and the re-verification at a cutover's fence) compare for this pair:
/// same-engine pairs compare natively, pairs across engines in a portable text form.
pub(crate) async fn verify_sides(source: &Endpoint, target: &Endpoint) -> Result<VerifySides> {
    let comparison = registry::comparison(source, target).await?;
    Ok(VerifySides {
        source: source.source(),
        source_rows: comparison.source_rows,
        target_rows: comparison.target_rows,
        options: VerifyOptions {
            // In the portable form whole tables are compared: the engines order text keys
            // differently.
            rows_per_range: if comparison.portable {
                u64::MAX
            } else {
                50_000
            },
            compare_types: !comparison.portable,
            match_by_table_name: comparison.match_by_table_name,
            ..VerifyOptions::default()
        },
    })
}

/// Refuses a switch-over for a migration with transforms: the reverse stream would have to undo
/// them.
pub(crate) fn require_no_transforms(settings: &Settings) -> Result<()> {
    if settings.transforms.is_empty() {
        return Ok(());
    }
    Err(Error::operator(
        "config.unsupported",
        "switching over is not available for migrations with [[transform]] rules yet",
    )
    .with_hint("the reverse stream would have to undo the renames, dropped columns and filters; switch applications over by hand once `ferry status` shows no lag"))
}
