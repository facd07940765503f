//! `ferry kafka`: moves Kafka topics and consumer groups to a new cluster without
//! reprocessing or loss.
//!
//! - [`mirror`] copies records (same partition, same order, key, value, headers, timestamp)
//!   and keeps an exact offset map per partition ([`map`]) in a durable [`state`].
//! - [`switch`] commits, for stopped groups, the exact translation of their source offsets on
//!   the target; [`status`] and [`verify`] read the state beside a running move; [`check`]
//!   finds every problem before a move.
//!
//! This crate names no database and depends only on `ferry-core` (errors, clock).

pub mod check;
pub mod cluster;
pub mod map;
pub mod mirror;
pub mod record;
pub mod selection;
pub mod state;
pub mod status;
pub mod switch;
pub mod topics;
pub mod verify;

pub use cluster::{Cluster, Side};
pub use selection::Patterns;
