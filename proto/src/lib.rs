//! Wire types shared by every LanceFleet node.
//!
//! The protobuf messages live in `proto/lancefleet/v1/*.proto`; this crate compiles them
//! and adds the behaviour that belongs to the codes themselves (HTTP status, retry hint),
//! so that the mapping exists in exactly one place.
//!
//! Compatibility rules for rolling upgrades are in the proto files' headers: unknown
//! fields are ignored, an unknown error code is `Internal`, an undecodable error is a
//! transport failure, and a change that would alter answers raises [`WIRE_VERSION`].

mod error_code;

/// Generated protobuf code for package `lancefleet.v1`.
pub mod v1 {
    #![allow(missing_docs, clippy::all)]
    include!(concat!(env!("OUT_DIR"), "/lancefleet.v1.rs"));
}

pub use v1::{ErrorCode, ErrorStatus, RetryTarget};

/// The version of the plan-fragment wire format this build speaks (see `executor.proto`).
pub const WIRE_VERSION: u32 = 2;
