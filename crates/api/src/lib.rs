//! The HTTP API (`/v1`) of `../shared/API.md`, as a thin layer over the bus: every route
//! is generated from the [`ApiResource`]s plugins register and sends a message; nothing
//! here knows a resource kind. State-changing operations run as jobs.

mod children;
mod error;
mod events;
mod hosts;
mod jobs;
pub mod metrics;
pub mod openapi;
mod remote;
mod routes;

pub use children::{check, CheckError};
pub use error::{body_of as error_body, ApiError};
pub use hosts::allow_hosts;
pub use jobs::Jobs;
pub use remote::reload_remote_implementors;
pub use routes::{router, router_with_jobs};
