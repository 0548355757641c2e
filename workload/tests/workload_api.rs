//! The Workload API as an existing SPIFFE client library sees it: the
//! `spiffe` crate (not moat's code) fetches the SVID and the bundle from
//! an [`Endpoint`], and receives a renewal on its stream; a call without
//! the security header is refused.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use futures_util::StreamExt;
use moat_pki::{
    ClusterId, KeyAlgorithm, OffsetDateTime, PrivateKey, RootCa, RootOptions, VerifiedCsr,
    WorkloadTtl,
};
use moat_workload::{Endpoint, Svid};
use spiffe::{TrustDomain, WorkloadApiClient};

const WAIT: Duration = Duration::from_secs(10);

/// A fresh SVID for a task of service `web` from `ca`; its serial (hex).
fn svid(ca: &RootCa, task: &str) -> (Svid, Vec<u8>) {
    let key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
    let csr = VerifiedCsr::from_der(key.csr().unwrap().as_ref()).unwrap();
    let ttl = WorkloadTtl::new(Duration::from_secs(300)).unwrap();
    let issued = ca
        .issue_workload(&csr, task, "web", ttl, OffsetDateTime::now_utc())
        .unwrap();
    let svid = Svid::new(
        moat_pki::spiffe_id(&ca.cluster_id(), "web").unwrap(),
        vec![issued.der.to_vec()],
        key.to_pkcs8_der(),
        vec![ca.certificate().to_vec()],
    )
    .unwrap();
    (svid, issued.der.to_vec())
}

#[tokio::test]
async fn a_spiffe_client_fetches_the_svid_and_gets_renewals() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.sock");
    let ca = RootCa::generate(
        ClusterId::generate(),
        &RootOptions::default(),
        OffsetDateTime::now_utc(),
    )
    .unwrap();
    let endpoint = Endpoint::bind(&path).unwrap();
    let (first, first_der) = svid(&ca, "T1");
    assert!(
        !format!("{first:?}").contains("key_pkcs8"),
        "Debug never shows the key"
    );
    endpoint.publish(first);

    let client = WorkloadApiClient::connect_to(endpoint.address())
        .await
        .unwrap();
    let got = tokio::time::timeout(WAIT, client.fetch_x509_svid())
        .await
        .unwrap()
        .unwrap();
    let want = format!("spiffe://{}/service/web", ca.cluster_id());
    assert_eq!(got.spiffe_id().to_string(), want);
    assert_eq!(got.leaf().as_ref(), first_der.as_slice());

    let bundles = tokio::time::timeout(WAIT, client.fetch_x509_bundles())
        .await
        .unwrap()
        .unwrap();
    let td = TrustDomain::new(ca.cluster_id().to_string()).unwrap();
    let bundle = bundles.get(&td).expect("a bundle for the cluster");
    assert_eq!(bundle.authorities()[0].as_ref(), ca.certificate().as_ref());

    // A renewal arrives on an open stream.
    let mut stream = client.stream_x509_svids().await.unwrap();
    let current = tokio::time::timeout(WAIT, stream.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(current.leaf().as_ref(), first_der.as_slice());
    let (second, second_der) = svid(&ca, "T1");
    endpoint.publish(second);
    let renewed = tokio::time::timeout(WAIT, stream.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(renewed.leaf().as_ref(), second_der.as_slice());
    assert_ne!(first_der, second_der);

    // Gone with the endpoint.
    drop(endpoint);
    assert!(!path.exists(), "the socket is removed");
}

#[tokio::test]
async fn a_call_without_the_security_header_is_refused() {
    use moat_workload::pb::spiffe_workload_api_client::SpiffeWorkloadApiClient;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.sock");
    let endpoint = Endpoint::bind(&path).unwrap();
    let channel = tonic::transport::Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(path).await?,
                ))
            }
        }))
        .await
        .unwrap();
    let mut raw = SpiffeWorkloadApiClient::new(channel);
    let err = raw
        .fetch_x509svid(moat_workload::pb::X509svidRequest {})
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("security header"), "{err:?}");
    drop(endpoint);
}

/// What the fuzz target drives: the served methods answer a message with
/// the header and none without; an unknown method gets none.
#[tokio::test]
async fn the_fuzz_entry_point_answers_as_the_socket_does() {
    let empty = vec![0, 0, 0, 0, 0];
    let (status, first) = moat_workload::fuzz_call(0, true, empty.clone()).await;
    assert_eq!(status, 200);
    assert!(first.is_some_and(|n| n > 5), "{first:?}");
    assert!(
        moat_workload::fuzz_call(1, true, empty.clone())
            .await
            .1
            .is_some()
    );
    assert_eq!(
        moat_workload::fuzz_call(0, false, empty.clone()).await.1,
        None
    );
    assert_eq!(moat_workload::fuzz_call(3, true, empty).await.1, None);
}
