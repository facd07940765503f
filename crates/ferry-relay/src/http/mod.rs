//! HTTP without a framework: a client for deliveries and a server for control planes.

pub mod client;
pub mod server;
