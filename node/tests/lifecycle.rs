//! The daemon's lifecycle through its control API, with several daemons in
//! one test process (the CLI tests run real `moat daemon` processes).
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use moat_api::{
    Client, Host, Info, InitRequest, InitResponse, JoinRequest, JoinResponse, JoinTokenRequest,
    JoinTokenResponse, NodeInfo, NodeState, NodeStatus, Role, SecretString, path,
};

async fn start(dir: &Path, name: &str) -> Client {
    let state_dir = dir.join(name);
    let opts = moat_node::DaemonOptions {
        state_dir: state_dir.clone(),
        control_socket: None,
        hostname: Some(name.to_string()),
        unlock_key: None,
        metrics_addr: None,
        danger_clock_ahead: std::time::Duration::ZERO,
        docker_host: None,
        secrets_dir: None,
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

    let init = init(&m1).await;
    assert!(init.advertise_addr.starts_with("127.0.0.1:"));

    let joined: JoinResponse = w1
        .post(
            path::JOIN,
            &join_req(&init.worker_token, &init.advertise_addr),
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
            &join_req(&manager_token.token, &init.advertise_addr),
        )
        .await
        .unwrap();
    assert_eq!(joined.role, Role::Manager);

    wait_for("three ready nodes on the second manager", async || match m2
        .get::<Vec<NodeInfo>>(path::NODES)
        .await
    {
        Ok(nodes) => nodes.len() == 3 && nodes.iter().all(|n| n.status == NodeStatus::Ready),
        Err(_) => false,
    })
    .await;

    // A worker cannot list nodes.
    let err = w1.get::<Vec<NodeInfo>>(path::NODES).await.unwrap_err();
    assert!(err.to_string().contains("not a cluster manager"), "{err}");
}

fn join_req(token: &SecretString, addr: &str) -> JoinRequest {
    JoinRequest {
        token: SecretString::new(token.expose_secret().to_string()),
        remote_addr: addr.to_string(),
        listen_addr: "127.0.0.1:0".into(),
        advertise_addr: None,
        rejoin: false,
    }
}

async fn init(client: &Client) -> InitResponse {
    client
        .post(
            path::INIT,
            &InitRequest {
                listen_addr: "127.0.0.1:0".into(),
                advertise_addr: None,
                cert_expiry_seconds: None,
                autolock: false,
                force_new_cluster: false,
            },
        )
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tokens_pins_roles_and_removal() {
    let dir = tempfile::tempdir().unwrap();
    let a = start(dir.path(), "a-manager").await;
    let other = start(dir.path(), "other-manager").await;
    let w = start(dir.path(), "worker").await;
    let w2 = start(dir.path(), "worker-2").await;
    let cluster = init(&a).await;
    let foreign = init(&other).await;

    // A token of another cluster: the CA pin does not match.
    let err = w
        .post::<_, JoinResponse>(
            path::JOIN,
            &join_req(&foreign.worker_token, &cluster.advertise_addr),
        )
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("is not part of the cluster this join token belongs to"),
        "{err}"
    );
    let info: Info = w.get(path::INFO).await.unwrap();
    assert_eq!(
        info.state,
        NodeState::Inactive,
        "a refused join leaves the node inactive"
    );

    // Rotation: the old token is refused, the new one works.
    let rotated: JoinTokenResponse = a
        .post(
            path::JOIN_TOKEN,
            &JoinTokenRequest {
                role: Role::Worker,
                rotate: true,
            },
        )
        .await
        .unwrap();
    assert!(!rotated.token.ct_eq(cluster.worker_token.expose_secret()));
    let err = w
        .post::<_, JoinResponse>(
            path::JOIN,
            &join_req(&cluster.worker_token, &cluster.advertise_addr),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("invalid join token"), "{err}");
    let _: JoinResponse = w
        .post(
            path::JOIN,
            &join_req(&rotated.token, &cluster.advertise_addr),
        )
        .await
        .unwrap();
    let _: JoinResponse = w2
        .post(
            path::JOIN,
            &join_req(&rotated.token, &cluster.advertise_addr),
        )
        .await
        .unwrap();

    // Promote the worker: it becomes a manager and a raft voter.
    let nodes: Vec<NodeInfo> = a.get(path::NODES).await.unwrap();
    let wid = nodes
        .iter()
        .find(|n| n.hostname == "worker")
        .unwrap()
        .id
        .clone();
    let resp: moat_api::RoleChangeResponse = a
        .post(
            path::NODE_ROLE,
            &moat_api::RoleChangeRequest {
                node: "worker".into(),
                role: Role::Manager,
            },
        )
        .await
        .unwrap();
    assert!(
        resp.warning.is_some(),
        "two managers is an even number: warn"
    );
    wait_for("the promoted worker to act as a manager", async || {
        w.get::<Vec<NodeInfo>>(path::NODES)
            .await
            .is_ok_and(|n| n.len() == 3)
    })
    .await;
    // Demote it back: allowed, two voters both reachable.
    let _: moat_api::RoleChangeResponse = a
        .post(
            path::NODE_ROLE,
            &moat_api::RoleChangeRequest {
                node: wid.clone(),
                role: Role::Worker,
            },
        )
        .await
        .unwrap();
    wait_for("the demoted manager to be a worker again", async || {
        w.get::<Vec<NodeInfo>>(path::NODES).await.is_err()
            && w.get::<Info>(path::INFO).await.is_ok_and(|i| !i.is_manager)
    })
    .await;
    // Demoting the last manager is refused.
    let err = a
        .post::<_, moat_api::RoleChangeResponse>(
            path::NODE_ROLE,
            &moat_api::RoleChangeRequest {
                node: "a-manager".into(),
                role: Role::Worker,
            },
        )
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("last manager") || err.to_string().contains("quorum"),
        "{err}"
    );

    // Removal: a live worker needs --force; then it is locked out.
    let err = a
        .post::<_, moat_api::NodeRemoveResponse>(
            path::NODE_REMOVE,
            &moat_api::NodeRemoveRequest {
                node: "worker-2".into(),
                force: false,
            },
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("is not down"), "{err}");
    let _: moat_api::NodeRemoveResponse = a
        .post(
            path::NODE_REMOVE,
            &moat_api::NodeRemoveRequest {
                node: "worker-2".into(),
                force: true,
            },
        )
        .await
        .unwrap();
    wait_for("the removed worker to learn it was removed", async || {
        w2.get::<Info>(path::INFO).await.is_ok_and(|i| {
            i.state == NodeState::Error
                && i.error
                    .as_deref()
                    .is_some_and(|e| e.contains("removed from the cluster"))
        })
    })
    .await;
}
