//! The SPIFFE Workload API, X.509 part, for one task: an [`Endpoint`] is a
//! unix socket that serves one task's X.509-SVID (`FetchX509SVID`) and its
//! trust bundle (`FetchX509Bundles`) to whatever runs as the task, so that
//! existing SPIFFE client libraries (go-spiffe, the `spiffe` crate,
//! py-spiffe) fetch and rotate its certificate without reading files.
//!
//! * One endpoint per task, one identity per endpoint: a socket serves only
//!   what was [published](Endpoint::publish) on it. The task's node puts it
//!   in the task's own directory (0700 on the host; inside a container
//!   only the socket's directory is mounted), names it to the task in
//!   `SPIFFE_ENDPOINT_SOCKET`, and removes it when the task ends.
//! * Both methods are streams: the current SVID (or bundle) at once, or as
//!   soon as there is one, then a new message on every publish (a renewal,
//!   new roots after a CA rotation).
//! * Every call must carry the `workload.spiffe.io: true` header, as the
//!   standard says (it keeps a browser or a confused proxy from reaching
//!   the API); a call without it is refused with `InvalidArgument`.
//! * The JWT methods are not served: a call is answered `Unimplemented`.
//!
//! The private key is held zeroized-on-drop and never printed: [`Svid`]'s
//! `Debug` shows the SPIFFE ID and the sizes only.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

use std::fmt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::watch;
use tokio_stream::wrappers::{UnixListenerStream, WatchStream};
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};
use zeroize::Zeroizing;

/// The generated messages, server and client (for tests and fuzzing;
/// not part of the API).
#[doc(hidden)]
#[allow(missing_docs, unreachable_pub, clippy::all)]
pub mod pb {
    tonic::include_proto!("_");
}

/// The header every Workload API call must carry, with the value `true`.
pub const SECURITY_HEADER: &str = "workload.spiffe.io";

/// The environment variable that names the endpoint to a workload (a
/// `unix://` address), as the SPIFFE standard defines it.
pub const ENDPOINT_SOCKET_ENV: &str = "SPIFFE_ENDPOINT_SOCKET";

/// Most calls served at once on one connection.
const MAX_CONCURRENT_STREAMS: u32 = 16;

/// A task's X.509-SVID: its SPIFFE ID, certificate chain, private key and
/// the roots of its trust domain.
#[derive(Clone)]
pub struct Svid {
    spiffe_id: String,
    trust_domain: String,
    chain_der: Vec<Vec<u8>>,
    key_pkcs8: Zeroizing<Vec<u8>>,
    bundle_der: Vec<Vec<u8>>,
}

impl fmt::Debug for Svid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Svid")
            .field("spiffe_id", &self.spiffe_id)
            .field("chain", &self.chain_der.len())
            .field("bundle", &self.bundle_der.len())
            .finish_non_exhaustive()
    }
}

impl Svid {
    /// An SVID for `spiffe_id` (`spiffe://<trust domain>/<path>`): the
    /// certificate chain (DER, leaf first), the private key (PKCS#8 DER)
    /// and the trusted roots (DER). Refuses an id that is not a SPIFFE ID,
    /// an empty chain or an empty bundle.
    pub fn new(
        spiffe_id: String,
        chain_der: Vec<Vec<u8>>,
        key_pkcs8: Zeroizing<Vec<u8>>,
        bundle_der: Vec<Vec<u8>>,
    ) -> Result<Svid, String> {
        let trust_domain = spiffe_id
            .strip_prefix("spiffe://")
            .and_then(|rest| rest.split('/').next())
            .filter(|td| !td.is_empty())
            .ok_or_else(|| format!("{spiffe_id:?} is not a SPIFFE ID"))?
            .to_owned();
        if chain_der.is_empty() {
            return Err("an SVID needs a certificate".into());
        }
        if bundle_der.is_empty() {
            return Err("an SVID needs the roots of its trust domain".into());
        }
        Ok(Svid {
            spiffe_id,
            trust_domain,
            chain_der,
            key_pkcs8,
            bundle_der,
        })
    }

    /// The SPIFFE ID.
    pub fn spiffe_id(&self) -> &str {
        &self.spiffe_id
    }

    fn x509_svid_response(&self) -> pb::X509svidResponse {
        pb::X509svidResponse {
            svids: vec![pb::X509svid {
                spiffe_id: self.spiffe_id.clone(),
                x509_svid: self.chain_der.concat(),
                x509_svid_key: self.key_pkcs8.to_vec(),
                bundle: self.bundle_der.concat(),
                hint: String::new(),
            }],
            crl: Vec::new(),
            federated_bundles: Default::default(),
        }
    }

    fn x509_bundles_response(&self) -> pb::X509BundlesResponse {
        pb::X509BundlesResponse {
            crl: Vec::new(),
            bundles: [(
                format!("spiffe://{}", self.trust_domain),
                self.bundle_der.concat(),
            )]
            .into_iter()
            .collect(),
        }
    }
}

type Feed = watch::Receiver<Option<Arc<Svid>>>;

/// One task's Workload API: a unix socket and the server behind it. The
/// server stops and the socket file is removed when the endpoint is
/// dropped.
#[derive(Debug)]
pub struct Endpoint {
    path: PathBuf,
    publish: watch::Sender<Option<Arc<Svid>>>,
    server: tokio::task::JoinHandle<()>,
}

impl Endpoint {
    /// Binds a socket at `path` (a file left there by an earlier endpoint is
    /// replaced) and serves on it; calls wait until an SVID is
    /// [published](Endpoint::publish). Must be called within a Tokio
    /// runtime.
    pub fn bind(path: &Path) -> std::io::Result<Endpoint> {
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let listener = tokio::net::UnixListener::bind(path)?;
        // The directory keeps others out; whoever runs as the task (any
        // user in its container) may connect.
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))?;
        let (publish, feed) = watch::channel(None);
        let api = pb::spiffe_workload_api_server::SpiffeWorkloadApiServer::new(Api { feed });
        let incoming = UnixListenerStream::new(listener);
        let shown = path.display().to_string();
        let server = tokio::spawn(async move {
            let served = tonic::transport::Server::builder()
                .max_concurrent_streams(Some(MAX_CONCURRENT_STREAMS))
                .add_service(api)
                .serve_with_incoming(incoming)
                .await;
            if let Err(e) = served {
                tracing::warn!(socket = %shown, error = %e, "a task's Workload API stopped");
            }
        });
        Ok(Endpoint {
            path: path.to_owned(),
            publish,
            server,
        })
    }

    /// Serves `svid` from now on: every open stream receives it.
    pub fn publish(&self, svid: Svid) {
        self.publish.send_replace(Some(Arc::new(svid)));
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The socket's address as `SPIFFE_ENDPOINT_SOCKET` writes it.
    pub fn address(&self) -> String {
        address(&self.path)
    }
}

/// `unix://<path>`: how `SPIFFE_ENDPOINT_SOCKET` names a socket at `path`
/// (an absolute path).
pub fn address(path: &Path) -> String {
    format!("unix://{}", path.display())
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.server.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

struct Api {
    feed: Feed,
}

type Answers<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

fn check_header<T>(req: &Request<T>) -> Result<(), Status> {
    match req.metadata().get(SECURITY_HEADER) {
        Some(v) if v.as_bytes() == b"true" => Ok(()),
        _ => Err(Status::invalid_argument(
            "security header missing from request",
        )),
    }
}

impl Api {
    fn answers<T: Send + 'static>(&self, make: fn(&Svid) -> T) -> Answers<T> {
        Box::pin(
            WatchStream::new(self.feed.clone())
                .filter_map(move |svid| svid.map(|svid| Ok(make(&svid)))),
        )
    }
}

#[tonic::async_trait]
impl pb::spiffe_workload_api_server::SpiffeWorkloadApi for Api {
    type FetchX509SVIDStream = Answers<pb::X509svidResponse>;
    type FetchX509BundlesStream = Answers<pb::X509BundlesResponse>;

    async fn fetch_x509svid(
        &self,
        req: Request<pb::X509svidRequest>,
    ) -> Result<Response<Self::FetchX509SVIDStream>, Status> {
        check_header(&req)?;
        Ok(Response::new(self.answers(Svid::x509_svid_response)))
    }

    async fn fetch_x509_bundles(
        &self,
        req: Request<pb::X509BundlesRequest>,
    ) -> Result<Response<Self::FetchX509BundlesStream>, Status> {
        check_header(&req)?;
        Ok(Response::new(self.answers(Svid::x509_bundles_response)))
    }
}

/// One call to a Workload API server that serves a placeholder SVID, as
/// bytes off the socket would make it after HTTP/2 framing: the method
/// (`which`, modulo the four paths: the two served, a JWT one, an unknown
/// one), with or without the security header, and `body` as the gRPC
/// request body. Returns the response's status and, for a stream, its
/// first frame's size. For the `workload_api` fuzz target; not part of the
/// API.
#[doc(hidden)]
pub async fn fuzz_call(which: u8, header: bool, body: Vec<u8>) -> (u16, Option<usize>) {
    use http_body_util::BodyExt;
    use tonic::codegen::{Service, http};

    const PATHS: [&str; 4] = [
        "/SpiffeWorkloadAPI/FetchX509SVID",
        "/SpiffeWorkloadAPI/FetchX509Bundles",
        "/SpiffeWorkloadAPI/FetchJWTSVID",
        "/SpiffeWorkloadAPI/Nothing",
    ];
    let svid = Svid::new(
        "spiffe://fuzz/service/s".into(),
        vec![vec![0x30, 0x00]],
        Zeroizing::new(vec![0x30, 0x00]),
        vec![vec![0x30, 0x00]],
    )
    .ok()
    .map(Arc::new);
    let (_publish, feed) = watch::channel(svid);
    let mut server = pb::spiffe_workload_api_server::SpiffeWorkloadApiServer::new(Api { feed });
    let mut req = http::Request::builder()
        .method("POST")
        .uri(PATHS[usize::from(which) % PATHS.len()])
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    if header {
        req = req.header(SECURITY_HEADER, "true");
    }
    let Ok(req) = req.body(tonic::body::Body::new(http_body_util::Full::new(
        tonic::codegen::Bytes::from(body),
    ))) else {
        return (0, None);
    };
    let Ok(resp) = server.call(req).await;
    let status = resp.status().as_u16();
    let mut body = resp.into_body();
    let first = tokio::time::timeout(std::time::Duration::from_millis(20), body.frame())
        .await
        .ok()
        .flatten()
        .and_then(Result::ok)
        .and_then(|f| f.into_data().ok())
        .map(|d| d.len());
    (status, first)
}
