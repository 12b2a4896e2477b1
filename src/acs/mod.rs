//! Alibaba Cloud's control APIs (ACS: ECS, RAM, STS) over the RPC API style: signing,
//! sending, typed errors. Named for the API family, not for ECS: STS credentials and RAM roles
//! live here too, and the OSS data path does not (see [`crate::oss`]).
//!
//! [`rpc`] signs and sends; [`ecs`], [`ram`] and [`sts`] are the typed calls; [`wait`] polls
//! tasks and images until they finish.

pub mod ecs;
pub mod ram;
pub mod rpc;
pub mod sts;
pub mod wait;

pub use ecs::{EcsApi, EcsClient};
pub use ram::{RamApi, RamClient};
pub use rpc::{ApiError, RetryPolicy, RpcClient, RpcError, RpcRequest};
pub use sts::StsClient;
