//! The in-process cluster tests: one binary, one module per concern. Each test starts its
//! own sandbox (executors, faulty executors, a query node) on loopback and stops it.

mod consistency;
mod roles;
mod scatter;
mod sql;
