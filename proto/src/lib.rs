//! Wire types shared by every LanceFleet node.
//!
//! The protobuf messages live in `proto/lancefleet/v1/*.proto`; this crate compiles them
//! and adds the behaviour that belongs to the codes themselves (HTTP status, retry hint),
//! so that the mapping exists in exactly one place.

mod error_code;

/// Generated protobuf code for package `lancefleet.v1`.
pub mod v1 {
    #![allow(missing_docs, clippy::all)]
    include!(concat!(env!("OUT_DIR"), "/lancefleet.v1.rs"));
}

pub use error_code::RetryHint;
pub use v1::{ErrorCode, ErrorStatus};
