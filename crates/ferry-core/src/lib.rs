//! ferry's model: what a migration moves and how its parts talk, with no I/O.
//!
//! - [`value`]: lossless values and the cells of a row image.
//! - [`schema`]: tables, columns, keys and the objects that travel with them.
//! - [`change`]: change events read from a source's log.
//! - [`position`]: typed source positions.
//! - [`state`]: the per-table handoff state and the stream checkpoint.
//! - [`connector`]: the traits a source and a sink implement.
//! - [`cutover`]: the switch-over phases and their persisted record.
//! - [`error`]: classified errors with stable codes and hints.
//! - [`select`]: which tables a migration moves.

pub mod calendar;
pub mod change;
pub mod check;
pub mod connector;
pub mod cutover;
pub mod error;
pub mod failpoint;
pub mod position;
pub mod rows;
pub mod schema;
pub mod select;
pub mod spatial;
pub mod state;
pub mod transform;
pub mod value;
pub mod verify;

pub use error::{Error, ErrorClass, Result};
pub use position::{BinlogPosition, Gtid, Lsn, Marks, Position};
pub use schema::{Column, TableName, TableSchema};
pub use value::{Cell, Value};
