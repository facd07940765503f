//! ferry's PostgreSQL connector: source (catalog, exported snapshots, pgoutput change stream) and target (schema,
//! COPY loads, set-based idempotent apply, state in `_ferry`).

mod apply;
mod cascade;
mod catalog;
mod cdc;
mod codec;
mod config;
mod connection;
mod ddl;
mod errors;
mod keyless;
mod objects;
pub mod pgoutput;
mod preflight;
mod rows;
mod sink;
mod snapshot;
mod source;
mod state;
mod statements;
mod switchover;
mod tls;
pub mod translate;
mod types;
mod verify;
mod verify_portable;
mod widen;

pub use cdc::{origin_name, stream_name};
pub use config::ConnectionConfig;
pub use connection::connect;
pub use objects::objects_script;
pub use preflight::{check, check_sides, check_translated_types, partial_update_findings};
pub use sink::PostgresSink;
pub use source::PostgresSource;
pub use switchover::PostgresControl;
pub use verify::PostgresInspector;
