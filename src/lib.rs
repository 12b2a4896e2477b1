//! ossrelay: move very large VM disk images between Alibaba Cloud OSS regions and accounts
//! without a local disk, with bounded memory, CRC-64 proof and resume.
//!
//! Rooms: [`oss`] speaks the OSS wire protocol, [`credentials`] finds and refreshes keys,
//! [`store`] is the small trait the [`transfer`] engine talks to, [`cli`] is the thin
//! command-line shell. The simulated cloud every test runs against is its own crate,
//! `ossrelay-sim` (`crates/ossrelay-sim`): the other side of the wire, sharing no code with this
//! one.

pub mod checksum;
pub mod cli;
pub mod cloud;
/// CRC-64/XZ lives in [`checksum::crc64`]; this path is kept for existing callers.
pub use checksum::crc64;
pub mod acs;
pub mod aws;
pub mod credentials;
pub mod daemon;
pub mod http;
pub mod locate;
pub mod metrics;
pub mod migrate;
pub mod oss;
/// Proxies from the environment (moved to [`crate::http::proxy`]; this path stays for callers).
pub use self::http::proxy;
pub mod store;
pub mod transfer;
