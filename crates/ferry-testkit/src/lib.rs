//! Throwaway database servers on loopback for ferry's tests and its demo.
//!
//! A server runs from the installed binaries in a fresh data directory on a free port. A small
//! watchdog process stops it and removes the directory when the process that started it exits,
//! however it exits, so a crashed test run leaves nothing behind; the first server a process
//! starts also sweeps away the remains of runs whose watchdog did not survive.

mod kafka;
mod mariadb;
pub mod memory;
mod postgres;
mod proxy;
mod receiver;
mod sweep;
mod wait;

pub use kafka::{tansu_binary, KafkaServer};
pub use mariadb::MariaDbServer;
pub use postgres::{free_port, PostgresServer};
pub use proxy::{Fault, FaultProxy};
pub use receiver::{Policy, Received, Receiver};
pub use wait::wait_until;
mod compare;

pub use compare::{pin_output, table_digest, table_rows, TableDigest};
