//! Talking to a daemon: one current-thread runtime per command.

use std::future::Future;

use moat_api::{Client, ClientError};

use crate::args::HostArgs;
use crate::output::Failure;

/// Runs `f` to completion on a new current-thread runtime.
pub(crate) fn block_on<T>(f: impl Future<Output = Result<T, Failure>>) -> Result<T, Failure> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(f)
}

/// A client for the daemon named by `--host` / `MOAT_HOST`.
pub(crate) fn client(host: &HostArgs) -> Client {
    Client::new(host.host.clone())
}

/// Turns a control API result into the command's result.
pub(crate) trait ApiResult<T> {
    /// Maps the error to a [`Failure`] printing the daemon's message and hint.
    fn or_fail(self) -> Result<T, Failure>;
}

impl<T> ApiResult<T> for Result<T, ClientError> {
    fn or_fail(self) -> Result<T, Failure> {
        self.map_err(Failure::api)
    }
}
