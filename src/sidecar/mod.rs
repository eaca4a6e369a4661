//! The node's sidecar, both ends of it: the gRPC [`client`] the executor uses
//! to run models, and a [reference sidecar](server) that runs built-in CPU
//! models over a content-addressed [`store`], so the whole pipeline runs and
//! can be tested on any machine.
//!
//! The wire types in [`proto`] are generated from `proto/sidecar.proto`,
//! which is wire-compatible with the sidecars deployed on NSN nodes.

pub mod client;
#[cfg(feature = "dev")]
pub mod models;
#[cfg(feature = "dev")]
pub mod server;
pub mod set;
#[cfg(feature = "dev")]
pub mod store;

/// The generated `nsn.sidecar` protobuf messages, client and server.
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
pub mod proto {
    tonic::include_proto!("nsn.sidecar");
}
