//! The rules for connections without a client certificate (joining nodes
//! fetching the CA bundle and sending their join request): one call per
//! connection, an idle timeout, and a clear answer to an oversized request.
//!
//! A connection gets [`UNAUTHENTICATED_IDLE_TIMEOUT`] after its handshake
//! to start its one call. Once the call has answered, the connection is
//! closed [`UNAUTHENTICATED_LINGER`] later (time for the answer to leave);
//! a second call on it is refused. The server side counts the call in a
//! tower layer ([`OneCallLayer`]) and ends the connection from its I/O
//! ([`Lifetime`]), which reports end-of-stream once the deadline passes so
//! that the HTTP/2 connection closes and its slot is given back. Worst
//! case: a connection lives the sum of
//! [`HANDSHAKE_TIMEOUT`](crate::HANDSHAKE_TIMEOUT),
//! [`UNAUTHENTICATED_IDLE_TIMEOUT`],
//! [`UNAUTHENTICATED_REQUEST_TIMEOUT`](crate::UNAUTHENTICATED_REQUEST_TIMEOUT)
//! and [`UNAUTHENTICATED_LINGER`].

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use tokio::time::{Instant, Sleep};
use tonic::body::Body;
use tonic::codegen::http;
use tonic::{Code, Status};

use crate::server::PeerInfo;
use crate::{
    MAX_UNAUTHENTICATED_REQUEST_BYTES, UNAUTHENTICATED_IDLE_TIMEOUT, UNAUTHENTICATED_LINGER,
};

/// The call budget of one connection without a client certificate.
#[derive(Debug)]
pub(crate) struct OneCall {
    state: Mutex<CallState>,
}

#[derive(Debug)]
struct CallState {
    phase: Phase,
    /// The connection's reader, woken when the deadline changes.
    waker: Option<Waker>,
}

#[derive(Debug, Clone, Copy)]
enum Phase {
    /// No call yet: the connection closes at `until`.
    Waiting { until: Instant },
    /// The call is running (bounded by the server's request timeout).
    Running,
    /// The call answered: the connection closes at `until`.
    Answered { until: Instant },
}

impl OneCall {
    /// A budget for a connection whose handshake ended at `now`.
    pub(crate) fn new(now: Instant) -> Self {
        Self {
            state: Mutex::new(CallState {
                phase: Phase::Waiting {
                    until: now + UNAUTHENTICATED_IDLE_TIMEOUT,
                },
                waker: None,
            }),
        }
    }

    /// Starts the connection's one call, unless it already had it.
    fn begin(self: &Arc<Self>) -> Option<CallGuard> {
        let mut state = self.lock();
        match state.phase {
            Phase::Waiting { .. } => {
                state.phase = Phase::Running;
                Some(CallGuard(self.clone()))
            }
            Phase::Running | Phase::Answered { .. } => None,
        }
    }

    /// When the connection is to close, if it is: `None` while the call
    /// runs. `waker` is woken when that changes.
    fn deadline(&self, waker: &Waker) -> Option<Instant> {
        let mut state = self.lock();
        if !state.waker.as_ref().is_some_and(|w| w.will_wake(waker)) {
            state.waker = Some(waker.clone());
        }
        match state.phase {
            Phase::Waiting { until } | Phase::Answered { until } => Some(until),
            Phase::Running => None,
        }
    }

    fn lock(&self) -> MutexGuard<'_, CallState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Marks the call answered when dropped (also when it timed out or the
/// client went away).
struct CallGuard(Arc<OneCall>);

impl Drop for CallGuard {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.phase = Phase::Answered {
            until: Instant::now() + UNAUTHENTICATED_LINGER,
        };
        if let Some(waker) = state.waker.take() {
            waker.wake();
        }
    }
}

/// The reading side's view of a connection's budget: ends the stream once
/// the connection's deadline has passed.
pub(crate) struct Lifetime {
    call: Arc<OneCall>,
    sleep: Pin<Box<Sleep>>,
}

impl Lifetime {
    pub(crate) fn new(call: Arc<OneCall>) -> Self {
        Self {
            call,
            // Reset to the real deadline on the first poll.
            sleep: Box::pin(tokio::time::sleep(UNAUTHENTICATED_IDLE_TIMEOUT)),
        }
    }

    /// Ready once the connection is to be closed.
    pub(crate) fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Some(until) = self.call.deadline(cx.waker()) else {
            return Poll::Pending;
        };
        if self.sleep.deadline() != until {
            self.sleep.as_mut().reset(until);
        }
        self.sleep.as_mut().poll(cx)
    }
}

/// The tower layer of the unauthenticated server: one call per
/// connection; an oversized request is answered in plain words.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct OneCallLayer;

impl<S> tower::Layer<S> for OneCallLayer {
    type Service = OneCallService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        OneCallService { inner }
    }
}

/// See [`OneCallLayer`].
#[derive(Debug, Clone)]
pub(crate) struct OneCallService<S> {
    inner: S,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S> tower::Service<http::Request<Body>> for OneCallService<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<http::Response<Body>, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let call = req
            .extensions()
            .get::<PeerInfo>()
            .and_then(|info| info.call.clone());
        // Fail closed: every connection of this server has a budget.
        let Some(guard) = call.as_ref().and_then(OneCall::begin) else {
            let status = Status::resource_exhausted(
                "a connection without a client certificate carries one call, and this one had \
                 it: open a new connection for the next call",
            );
            let response: http::Response<Body> = status.into_http();
            return Box::pin(async move { Ok::<_, Infallible>(response) });
        };
        // The clone that was polled ready is the one to call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let response = inner.call(req).await?;
            drop(guard);
            Ok::<_, Infallible>(explain_oversized(response))
        })
    }
}

/// Replaces tonic's answer to a request over the decoding limit with one
/// that says what the limit is for.
fn explain_oversized(response: http::Response<Body>) -> http::Response<Body> {
    match Status::from_header_map(response.headers()) {
        Some(status)
            if status.code() == Code::OutOfRange
                && status.message().contains("message length too large") =>
        {
            Status::out_of_range(format!(
                "request refused: a caller without a client certificate may send at most \
                 {MAX_UNAUTHENTICATED_REQUEST_BYTES} bytes in a call ({}); a join or CA-bundle \
                 request is far smaller, so check that the caller is a moat node",
                status.message()
            ))
            .into_http()
        }
        _ => response,
    }
}
