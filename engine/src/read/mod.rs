//! The read path: the query a client asks for ([`query`]), its compilation against a
//! pinned table version into fragment queries and a merge ([`plan`]), the run of one
//! fragment query with lance's scanner over some fragments ([`execute`], the work of a
//! plan executor), and the exact merge of the partial results ([`merge`]; scans as
//! streams, [`stream`]).

pub mod corpus;
pub mod execute;
pub mod merge;
pub mod output;
pub mod plan;
pub mod query;
pub mod stream;
pub mod vector_column;
pub mod wire;
