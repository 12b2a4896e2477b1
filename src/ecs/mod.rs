//! ECS / RAM / STS over the RPC API style: signing, sending, typed errors.
//!
//! [`rpc`] signs and sends; [`ecs`], [`ram`] and [`sts`] are the typed calls; [`wait`] polls
//! tasks and images until they finish.

#[allow(clippy::module_inception)]
pub mod ecs;
pub mod ram;
pub mod rpc;
pub mod sts;
pub mod wait;

pub use ecs::{EcsApi, EcsClient};
pub use ram::{RamApi, RamClient};
pub use rpc::{ApiError, RetryPolicy, RpcClient, RpcError, RpcRequest};
pub use sts::StsClient;
