//! How a migration runs, independent of any database: plan the tables, copy them in parallel
//! chunks from a consistent snapshot, then stream changes from the position that snapshot
//! corresponds to, merging them into batches applied with the checkpoint they cover.
//!
//! The engine talks to databases only through `ferry_core::connector`.

pub mod cutover;
pub mod lag;
pub mod merge;
pub mod migration;
pub mod progress;
pub mod snapshot;
pub mod stream;
pub mod supervisor;
pub mod transform;
pub mod verify;

pub use migration::{run_migration, MigrationOptions, Mode};
pub use progress::{Phase, Progress};
pub use stream::StreamOptions;
pub use supervisor::supervise;
pub use transform::TransformedSource;
