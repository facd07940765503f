//! ferry's MySQL and MariaDB connector: source (catalog, lock-free chunk reads, binary log change stream) and
//! target (translated tables, `LOAD DATA LOCAL` or multi-row loads, idempotent apply, state in `_ferry`).

mod apply;
mod binlog;
mod cascade;
mod catalog;
mod cdc;
mod config;
mod connection;
pub mod ddl;
mod errors;
mod images;
mod infile;
mod keyless;
mod load;
mod locks;
mod objects;
mod preflight;
mod scan;
mod sink;
mod snapshot;
mod source;
mod state;
mod switchover;
mod target_columns;
pub mod types;
mod values;
mod verify;
pub mod widen;

pub use catalog::kind_of as catalog_kind;
pub use cdc::server_id;
pub use config::MysqlConfig;
pub use objects::objects_script;
pub use preflight::check;
pub use scan::{unrepresentable_values, Unrepresentable};
pub use sink::MysqlSink;
pub use source::MysqlSource;
pub use switchover::{server_identity, MysqlControl};
pub use verify::{require_same_flavor, MysqlInspector};
