//! The daemon's lifecycle through its control API, with several daemons in
//! one test process (the CLI tests run real `moat daemon` processes).
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use moat_api::{
    Client, Host, Info, InitRequest, InitResponse, JoinRequest, JoinResponse, JoinTokenRequest,
    JoinTokenResponse, NodeInfo, NodeState, NodeStatus, Role, path,
};

async fn start(dir: &Path, name: &str) -> Client {
    let state_dir = dir.join(name);
    let opts = moat_node::DaemonOptions {
        state_dir: state_dir.clone(),
        control_socket: None,
        hostname: Some(name.to_string()),
    };
    tokio::spawn(async move {
        if let Err(e) = moat_node::run_daemon(opts).await {
            panic!("daemon failed: {e}");
        }
    });
    let client = Client::new(Host::unix(state_dir.join("moat.sock")));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if client.get::<Info>(path::INFO).await.is_ok() {
            return client;
        }
        assert!(Instant::now() < deadline, "daemon {name} did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn wait_for(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn init_join_and_list() {
    let dir = tempfile::tempdir().unwrap();
    let m1 = start(dir.path(), "manager-1").await;
    let w1 = start(dir.path(), "worker-1").await;
    let m2 = start(dir.path(), "manager-2").await;

    let info: Info = m1.get(path::INFO).await.unwrap();
    assert_eq!(info.state, NodeState::Inactive);

    let init: InitResponse = m1
        .post(
            path::INIT,
            &InitRequest {
                listen_addr: "127.0.0.1:0".into(),
                advertise_addr: None,
                cert_expiry_seconds: None,
                autolock: false,
            },
        )
        .await
        .unwrap();
    assert!(init.advertise_addr.starts_with("127.0.0.1:"));

    let joined: JoinResponse = w1
        .post(
            path::JOIN,
            &JoinRequest {
                token: init.worker_token.clone(),
                remote_addr: init.advertise_addr.clone(),
                listen_addr: "127.0.0.1:0".into(),
                advertise_addr: None,
                rejoin: false,
            },
        )
        .await
        .unwrap();
    assert_eq!(joined.role, Role::Worker);

    let manager_token: JoinTokenResponse = m1
        .post(
            path::JOIN_TOKEN,
            &JoinTokenRequest {
                role: Role::Manager,
                rotate: false,
            },
        )
        .await
        .unwrap();
    let joined: JoinResponse = m2
        .post(
            path::JOIN,
            &JoinRequest {
                token: manager_token.token,
                remote_addr: init.advertise_addr.clone(),
                listen_addr: "127.0.0.1:0".into(),
                advertise_addr: None,
                rejoin: false,
            },
        )
        .await
        .unwrap();
    assert_eq!(joined.role, Role::Manager);

    wait_for("three ready nodes on the second manager", async || {
        match m2.get::<Vec<NodeInfo>>(path::NODES).await {
            Ok(nodes) => nodes.len() == 3 && nodes.iter().all(|n| n.status == NodeStatus::Ready),
            Err(_) => false,
        }
    })
    .await;

    // A worker cannot list nodes.
    let err = w1.get::<Vec<NodeInfo>>(path::NODES).await.unwrap_err();
    assert!(err.to_string().contains("not a cluster manager"), "{err}");
}
