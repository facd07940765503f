//! Turning settings into connectors (through the registry, which knows the URL schemes).

use ferry_connectors::postgres::ConnectionConfig;
use ferry_connectors::registry::{engine_of, Engine};
use ferry_core::Result;

use crate::settings::Settings;

/// The source and target connection configs of the settings.
pub fn configs(settings: &Settings) -> Result<(ConnectionConfig, ConnectionConfig)> {
    let source = match engine_of(&settings.source_url).map_err(|error| error.context("source"))? {
        Engine::Postgres => {
            ConnectionConfig::parse(&settings.source_url, settings.source_password.as_deref())
                .map_err(|error| error.context("source"))?
        }
    };
    let target = match engine_of(&settings.target_url).map_err(|error| error.context("target"))? {
        Engine::Postgres => {
            ConnectionConfig::parse(&settings.target_url, settings.target_password.as_deref())
                .map_err(|error| error.context("target"))?
        }
    };
    Ok((
        source.with_network_timeout(settings.network_timeout),
        target.with_network_timeout(settings.network_timeout),
    ))
}
