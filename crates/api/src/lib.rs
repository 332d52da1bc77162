//! The HTTP API (`/v1`) of `../shared/API.md`, as a thin layer over the bus: every route
//! is generated from the [`ApiResource`]s plugins register and sends a message; nothing
//! here knows a resource kind. State-changing operations run as jobs.

mod auth;
mod children;
mod error;
mod events;
mod hosts;
mod identity;
mod jobs;
pub mod metrics;
pub mod openapi;
mod remote;
mod routes;
mod text;

pub use auth::{authenticated, is_public, Origin};
pub use children::{check, CheckError};
pub use error::{body_of as error_body, ApiError};
pub use hosts::allow_hosts;
pub use jobs::Jobs;
pub use remote::reload_remote_implementors;
pub use routes::{router, router_with_jobs};
pub use text::{escape, hostile_char, is_hostile};
