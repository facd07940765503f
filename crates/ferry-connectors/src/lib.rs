//! ferry's connector registry. Each connector is a crate of its own behind a cargo feature
//! (`ferry-postgres`, `ferry-mysql`), and no connector crate depends on another; this crate
//! turns a connection URL into a connector's bundle of capabilities (`registry`) and holds the
//! little that depends on a pair of engines (`portable`: the row text both engines compute for
//! a verification across them).

#[cfg(feature = "mysql")]
pub use ferry_mysql as mysql;
#[cfg(all(feature = "mysql", feature = "postgres"))]
pub mod portable;
#[cfg(feature = "postgres")]
pub use ferry_postgres as postgres;
#[cfg(all(feature = "mysql", feature = "postgres"))]
pub mod registry;

pub use ferry_sql::install_tls_provider;
