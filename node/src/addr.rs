//! Cluster addresses: the listen address (with the default port), the
//! address to advertise (the one given, or the host's one non-loopback
//! address), and a port picked ahead of binding for `:0`.

use std::net::SocketAddr;

use moat_api::ErrorKind;

use crate::error::NodeError;

/// Default cluster port (Docker's is 2377).
pub const DEFAULT_PORT: u16 = 4377;

/// A listen address with its port (the default one if none is given).
pub(crate) fn normalize_listen(addr: &str) -> Result<String, NodeError> {
    let with_port = if addr.parse::<SocketAddr>().is_ok()
        || addr
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        addr.to_string()
    } else {
        format!("{addr}:{DEFAULT_PORT}")
    };
    with_port
        .parse::<SocketAddr>()
        .map(|a| a.to_string())
        .map_err(|e| {
            NodeError::new(
                ErrorKind::InvalidArgument,
                format!("--listen-addr {addr:?}: {e}"),
            )
            .hint("give an IP address and port, e.g. 0.0.0.0:4377")
        })
}

/// The address to advertise: the one given, or the bound one when it is
/// a specific address.
pub(crate) fn advertise_addr(given: Option<&str>, bound: SocketAddr) -> Result<String, NodeError> {
    if let Some(a) = given {
        return normalize_listen(a);
    }
    if bound.ip().is_unspecified() {
        let fib = std::fs::read_to_string("/proc/net/fib_trie").unwrap_or_default();
        let found = local_addresses(&fib);
        return match found.as_slice() {
            [one] => Ok(SocketAddr::new(*one, bound.port()).to_string()),
            [] => Err(NodeError::new(
                ErrorKind::InvalidArgument,
                format!("could not choose an address to advertise: the listener is on {bound} and this system has no address other than loopback"),
            )
            .hint("give --advertise-addr IP:PORT (or listen on a specific address)")),
            many => Err(NodeError::new(
                ErrorKind::InvalidArgument,
                format!(
                    "could not choose an address to advertise since this system has multiple addresses ({})",
                    many.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
                ),
            )
            .hint("give --advertise-addr IP:PORT")),
        };
    }
    Ok(bound.to_string())
}

/// The host's own non-loopback IPv4 addresses, from the kernel's FIB
/// (`/proc/net/fib_trie`: an address line `|-- A.B.C.D` followed by
/// `/32 host LOCAL`).
fn local_addresses(fib: &str) -> Vec<std::net::IpAddr> {
    let mut found = std::collections::BTreeSet::new();
    let mut last: Option<std::net::Ipv4Addr> = None;
    for line in fib.lines() {
        let line = line.trim();
        if let Some(addr) = line.strip_prefix("|-- ") {
            last = addr.parse().ok();
        } else if line == "/32 host LOCAL"
            && let Some(addr) = last.take()
            && !addr.is_loopback()
        {
            found.insert(addr);
        }
    }
    found.into_iter().map(std::net::IpAddr::V4).collect()
}

/// For a listen address with port 0, picks a free port now so the node
/// can advertise it; returns the listen address and the advertise address.
pub(crate) async fn reserve_port(
    listen: &str,
    advertise: Option<&str>,
) -> Result<(String, String), NodeError> {
    let mut listen = listen.to_string();
    if listen.ends_with(":0") {
        let probe = tokio::net::TcpListener::bind(&listen).await.map_err(|e| {
            NodeError::new(
                ErrorKind::FailedPrecondition,
                format!("cannot listen on {listen}: {e}"),
            )
        })?;
        listen = probe
            .local_addr()
            .map_err(|e| crate::files::io_error("reading the listener address", e))?
            .to_string();
    }
    let bound: SocketAddr = listen
        .parse()
        .map_err(|e| NodeError::new(ErrorKind::InvalidArgument, format!("{listen}: {e}")))?;
    let advertise = advertise_addr(advertise, bound)?;
    Ok((listen, advertise))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIB: &str = "Main:
  +-- 0.0.0.0/0 3 0 5
     +-- 127.0.0.0/8 2 0 2
           |-- 127.0.0.1
              /32 host LOCAL
     +-- 192.0.2.0/24 2 0 2
           |-- 192.0.2.0
              /24 link UNICAST
           |-- 192.0.2.2
              /32 host LOCAL
        |-- 192.0.2.255
           /32 link BROADCAST
Local:
           |-- 192.0.2.2
              /32 host LOCAL
";

    #[test]
    fn advertise_address_is_the_one_local_address() {
        assert_eq!(
            local_addresses(FIB),
            vec!["192.0.2.2".parse::<std::net::IpAddr>().unwrap()]
        );
        let two = format!("{FIB}           |-- 172.17.0.1\n              /32 host LOCAL\n");
        assert_eq!(local_addresses(&two).len(), 2);
        let bound: SocketAddr = "127.0.0.1:4377".parse().unwrap();
        assert_eq!(advertise_addr(None, bound).unwrap(), "127.0.0.1:4377");
        assert_eq!(
            advertise_addr(Some("10.0.0.1"), bound).unwrap(),
            "10.0.0.1:4377"
        );
    }

    #[test]
    fn listen_addresses_get_the_default_port() {
        assert_eq!(normalize_listen("0.0.0.0").unwrap(), "0.0.0.0:4377");
        assert_eq!(normalize_listen("127.0.0.1:0").unwrap(), "127.0.0.1:0");
        assert!(normalize_listen("not an address").is_err());
    }
}
