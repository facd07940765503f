//! Integration tests against real PostgreSQL and MariaDB servers started from the installed binaries.
//! One source and one target server serve the whole run; every test uses its own databases.

mod browser;
mod cascade;
mod cli;
mod common;
mod cutover;
mod cutover_engines;
mod demo;
mod exclusive;
mod faults;
mod inheritance;
mod kafka_bench;
mod kafka_move;
mod keyless;
mod kill_matrix;
mod limits;
mod mysql;
mod mysql_fence;
mod mysql_load;
mod mysql_real_schemas;
mod mysql_schema_changes;
mod mysql_values;
mod mysql_verify;
mod partitions;
mod relay;
mod relay_bench;
mod resume;
mod schema;
mod schema_changes;
mod tls;
mod toast;
mod types;
mod unique_keys;
mod upgrade;
mod user_types;
mod verify;
