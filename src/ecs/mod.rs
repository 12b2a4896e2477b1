//! ECS / RAM / STS over the RPC API style: signing, sending, typed errors.
//!
//! Only the generic machinery lives here for now; typed ECS calls build on [`rpc::RpcClient`].

pub mod rpc;
pub mod sts;

pub use rpc::{ApiError, RetryPolicy, RpcClient, RpcError, RpcRequest};
pub use sts::StsClient;
