//! The control API client: one HTTP/1.1 request per connection over the
//! daemon's unix socket.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::net::UnixStream;

use crate::{ApiError, ErrorKind};

/// The socket of a daemon started with the default state directory.
pub const DEFAULT_SOCKET: &str = "/var/lib/moat/moat.sock";

/// Largest response body read (join tokens and node lists are small; a
/// node list of 10,000 nodes is about 5 MiB).
const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

/// Longest a request may take: joins and role changes wait for Raft, and
/// a manager joining a cluster waits until it has caught up.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// Where a daemon listens: `unix:///path/to/moat.sock` (Docker's form),
/// `unix:/path` or a bare path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    socket: PathBuf,
}

impl Host {
    /// The daemon listening on `socket`.
    pub fn unix(socket: impl Into<PathBuf>) -> Self {
        Self {
            socket: socket.into(),
        }
    }

    /// The socket path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }
}

impl Default for Host {
    fn default() -> Self {
        Self::unix(DEFAULT_SOCKET)
    }
}

impl FromStr for Host {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let path = if let Some(rest) = s.strip_prefix("unix://") {
            rest
        } else if let Some(rest) = s.strip_prefix("unix:") {
            rest
        } else if s.contains("://") {
            return Err(format!(
                "unsupported host {s:?}: moat daemons listen on a unix socket, give unix:///path/to/moat.sock"
            ));
        } else {
            s
        };
        if path.is_empty() {
            return Err("the host names no socket path: give unix:///path/to/moat.sock".into());
        }
        Ok(Self::unix(path))
    }
}

impl std::fmt::Display for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "unix://{}", self.socket.display())
    }
}

/// Why a control request failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No daemon answers on the socket.
    #[error("cannot connect to the moat daemon at {host}: {source}")]
    Connect {
        /// The socket.
        host: Host,
        /// The operating system's error (already in the message).
        source: std::io::Error,
    },
    /// The daemon answered with an error.
    #[error(transparent)]
    Api(#[from] ApiError),
    /// The daemon's answer could not be read.
    #[error("talking to the moat daemon at {host}: {reason}")]
    Protocol {
        /// The socket.
        host: Host,
        /// What went wrong.
        reason: String,
    },
}

impl ClientError {
    /// The next step for the operator, if there is one.
    pub fn hint(&self) -> Option<String> {
        match self {
            ClientError::Connect { host, .. } => Some(format!(
                "is `moat daemon` running? Start it with `moat daemon --state-dir DIR`, then point the CLI at DIR/moat.sock with --host unix://DIR/moat.sock or MOAT_HOST (now {host})"
            )),
            ClientError::Api(e) => e.hint.clone(),
            ClientError::Protocol { .. } => None,
        }
    }
}

/// A control API client for one daemon.
#[derive(Debug, Clone)]
pub struct Client {
    host: Host,
}

impl Client {
    /// A client for the daemon at `host`.
    pub fn new(host: Host) -> Self {
        Self { host }
    }

    /// The daemon's address.
    pub fn host(&self) -> &Host {
        &self.host
    }

    /// `GET path`.
    pub async fn get<R: DeserializeOwned>(&self, path: &str) -> Result<R, ClientError> {
        self.request(hyper::Method::GET, path, None).await
    }

    /// `POST path` with `body` as JSON.
    pub async fn post<B: Serialize, R: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<R, ClientError> {
        let json = serde_json::to_vec(body).map_err(|e| self.protocol(e.to_string()))?;
        self.request(hyper::Method::POST, path, Some(json)).await
    }

    /// `POST path` with `body` as JSON, streaming a binary answer to
    /// `sink` chunk by chunk (with the announced total length, if any);
    /// returns the number of bytes received. No overall time limit: a
    /// large download takes as long as it takes.
    pub async fn post_download<B: Serialize>(
        &self,
        path: &str,
        body: &B,
        mut sink: impl FnMut(&[u8], Option<u64>) -> std::io::Result<()>,
    ) -> Result<u64, ClientError> {
        let json = serde_json::to_vec(body).map_err(|e| self.protocol(e.to_string()))?;
        let (response, conn) = self.send(hyper::Method::POST, path, Some(json)).await?;
        let status = response.status();
        if !status.is_success() {
            let result = self.answer::<crate::Empty>(status, response).await;
            conn.abort();
            return result.map(|_| 0);
        }
        let total = response
            .headers()
            .get(hyper::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let mut body = response.into_body();
        let mut received = 0u64;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| self.protocol(format!("reading the answer: {e}")))?;
            if let Some(data) = frame.data_ref() {
                received += data.len() as u64;
                sink(data, total).map_err(|e| self.protocol(format!("writing: {e}")))?;
            }
        }
        conn.abort();
        if total.is_some_and(|t| t != received) {
            return Err(self.protocol(format!(
                "the answer ended after {received} of {} bytes",
                total.unwrap_or_default()
            )));
        }
        Ok(received)
    }

    async fn request<R: DeserializeOwned>(
        &self,
        method: hyper::Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<R, ClientError> {
        match tokio::time::timeout(REQUEST_TIMEOUT, self.exchange(method, path, body)).await {
            Ok(result) => result,
            Err(_) => {
                Err(self.protocol(format!("no answer within {} s", REQUEST_TIMEOUT.as_secs())))
            }
        }
    }

    async fn exchange<R: DeserializeOwned>(
        &self,
        method: hyper::Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<R, ClientError> {
        let (response, conn) = self.send(method, path, body).await?;
        let status = response.status();
        let result = self.answer(status, response).await;
        conn.abort();
        result
    }

    /// Sends one request on a new connection; the connection task is
    /// returned so the caller can end it once the answer is read.
    async fn send(
        &self,
        method: hyper::Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<
        (
            hyper::Response<hyper::body::Incoming>,
            tokio::task::JoinHandle<hyper::Result<()>>,
        ),
        ClientError,
    > {
        let stream = UnixStream::connect(&self.host.socket)
            .await
            .map_err(|source| ClientError::Connect {
                host: self.host.clone(),
                source,
            })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| self.protocol(e.to_string()))?;
        let conn = tokio::spawn(conn);
        let request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, "moat")
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| self.protocol(e.to_string()))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| self.protocol(e.to_string()))?;
        Ok((response, conn))
    }

    /// Reads a JSON answer (or the daemon's error).
    async fn answer<R: DeserializeOwned>(
        &self,
        status: hyper::StatusCode,
        response: hyper::Response<hyper::body::Incoming>,
    ) -> Result<R, ClientError> {
        let bytes = Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
            .collect()
            .await
            .map_err(|e| self.protocol(format!("reading the answer: {e}")))?
            .to_bytes();
        if status.is_success() {
            serde_json::from_slice(&bytes)
                .map_err(|e| self.protocol(format!("the answer is not what this CLI expects ({e}); are the CLI and the daemon the same version?")))
        } else {
            let error = serde_json::from_slice::<ApiError>(&bytes).unwrap_or_else(|_| {
                ApiError::new(
                    ErrorKind::Internal,
                    format!("the daemon answered HTTP {status}"),
                )
            });
            Err(ClientError::Api(error))
        }
    }

    fn protocol(&self, reason: String) -> ClientError {
        ClientError::Protocol {
            host: self.host.clone(),
            reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_forms() {
        let want = Host::unix("/tmp/m/moat.sock");
        assert_eq!("unix:///tmp/m/moat.sock".parse::<Host>(), Ok(want.clone()));
        assert_eq!("unix:/tmp/m/moat.sock".parse::<Host>(), Ok(want.clone()));
        assert_eq!("/tmp/m/moat.sock".parse::<Host>(), Ok(want.clone()));
        assert_eq!(want.to_string(), "unix:///tmp/m/moat.sock");
        assert!("tcp://127.0.0.1:2375".parse::<Host>().is_err());
        assert!("unix://".parse::<Host>().is_err());
    }
}
