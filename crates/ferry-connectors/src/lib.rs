//! ferry's connectors, one folder per system, each behind a cargo feature, and the registry that
//! turns a connection URL into a connector.

#[cfg(any(feature = "mysql", feature = "postgres"))]
pub(crate) mod cascade;
pub mod defaults;
#[cfg(feature = "mysql")]
pub mod mysql;
#[cfg(all(feature = "mysql", feature = "postgres"))]
pub mod portable;
#[cfg(feature = "postgres")]
pub mod postgres;
pub mod registry;
pub mod syntax;
