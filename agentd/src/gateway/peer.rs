//! Who is on the other end of a loopback TCP connection: the uid that owns the client's
//! socket. Unlike a Unix socket, TCP carries no credentials; the gateway refuses a
//! connection whose socket is not its user's, whatever it presents. The kernel is asked
//! for that one socket by its addresses (`NETLINK_SOCK_DIAG`, as `ss` does); where that
//! is not available, `/proc/net/tcp` (the whole table, read) answers instead.

use std::net::{IpAddr, SocketAddr};

/// The most of `/proc/net/tcp` read (each socket is one line of about 150 bytes).
const MAX_TABLE: u64 = 64 << 20;

/// `addr` as `/proc/net/tcp` writes it: the IPv4 address as a little-endian hex word,
/// a colon, the port in hex.
fn proc_form(addr: &SocketAddr) -> Option<String> {
    match addr.ip() {
        IpAddr::V4(ip) => Some(format!(
            "{:08X}:{:04X}",
            u32::from_le_bytes(ip.octets()),
            addr.port()
        )),
        IpAddr::V6(_) => None,
    }
}

/// `SOCK_DIAG_BY_FAMILY`, the request for inet sockets.
const SOCK_DIAG_BY_FAMILY: u16 = 20;
/// `TCP_ESTABLISHED`.
const ESTABLISHED: u8 = 1;

/// The uid owning the established socket at `peer` connected to `local`.
pub fn uid_of(peer: &SocketAddr, local: &SocketAddr) -> Option<u32> {
    match (peer, local) {
        (SocketAddr::V4(p), SocketAddr::V4(l)) => {
            by_diag(p, l).unwrap_or_else(|| by_table(peer, local))
        }
        _ => None,
    }
}

/// Asks the kernel for the one socket (`Some(None)`: it has none such).
fn by_diag(peer: &std::net::SocketAddrV4, local: &std::net::SocketAddrV4) -> Option<Option<u32>> {
    use nix::sys::socket::{
        AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, recv, sendto,
        socket,
    };
    use std::os::fd::AsRawFd;
    let fd = socket(
        AddressFamily::Netlink,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkSockDiag,
    )
    .ok()?;
    // nlmsghdr, then inet_diag_req_v2 with the socket's id as the peer sees it.
    let mut req = Vec::with_capacity(72);
    req.extend_from_slice(&72u32.to_ne_bytes());
    req.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    req.extend_from_slice(&(libc::NLM_F_REQUEST as u16).to_ne_bytes());
    req.extend_from_slice(&1u32.to_ne_bytes());
    req.extend_from_slice(&0u32.to_ne_bytes());
    req.extend_from_slice(&[libc::AF_INET as u8, libc::IPPROTO_TCP as u8, 0, 0]);
    req.extend_from_slice(&(1u32 << ESTABLISHED).to_ne_bytes());
    req.extend_from_slice(&peer.port().to_be_bytes());
    req.extend_from_slice(&local.port().to_be_bytes());
    for ip in [peer.ip(), local.ip()] {
        req.extend_from_slice(&ip.octets());
        req.extend_from_slice(&[0; 12]);
    }
    req.extend_from_slice(&0u32.to_ne_bytes());
    // INET_DIAG_NOCOOKIE: any socket with these addresses.
    req.extend_from_slice(&[0xff; 8]);
    sendto(
        fd.as_raw_fd(),
        &req,
        &NetlinkAddr::new(0, 0),
        MsgFlags::empty(),
    )
    .ok()?;
    let mut buf = [0u8; 512];
    let n = recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty()).ok()?;
    let reply = &buf[..n];
    let u16_at = |at: usize| {
        reply
            .get(at..at + 2)
            .map(|b| u16::from_ne_bytes([b[0], b[1]]))
    };
    let u32_at = |at: usize| {
        reply
            .get(at..at + 4)
            .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
    };
    match u16_at(4)? {
        t if t == SOCK_DIAG_BY_FAMILY => {
            // inet_diag_msg: family, state, timer, retrans, id (48), expires, rqueue,
            // wqueue, uid.
            let state = *reply.get(17)?;
            Some(
                (state == ESTABLISHED)
                    .then(|| u32_at(16 + 4 + 48 + 12))
                    .flatten(),
            )
        }
        // NLMSG_ERROR: ENOENT is "no such socket"; anything else, not available.
        2 => {
            let errno = u32_at(16)? as i32;
            (errno == -libc::ENOENT).then_some(None)
        }
        _ => None,
    }
}

/// The uid owning the established socket at `peer` connected to `local`, from the
/// whole table.
fn by_table(peer: &SocketAddr, local: &SocketAddr) -> Option<u32> {
    use std::io::Read;
    let (want_local, want_remote) = (proc_form(peer)?, proc_form(local)?);
    let mut text = String::new();
    std::fs::File::open("/proc/net/tcp")
        .ok()?
        .take(MAX_TABLE)
        .read_to_string(&mut text)
        .ok()?;
    text.lines().skip(1).find_map(|line| {
        // sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid …
        // Only an established socket (state 01): one closing may show uid 0.
        let f: Vec<&str> = line.split_whitespace().take(8).collect();
        (f.len() == 8 && f[1] == want_local && f[2] == want_remote && f[3] == "01")
            .then(|| f[7].parse().ok())
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn by_diag_v4(peer: &SocketAddr, local: &SocketAddr) -> Option<Option<u32>> {
        match (peer, local) {
            (SocketAddr::V4(p), SocketAddr::V4(l)) => by_diag(p, l),
            _ => None,
        }
    }

    #[test]
    fn a_connection_of_ours_is_found_as_ours() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let local = listener.local_addr().unwrap();
        let client = std::net::TcpStream::connect(local).unwrap();
        let (_server, peer) = listener.accept().unwrap();
        assert_eq!(peer, client.local_addr().unwrap());
        let me = Some(nix::unistd::getuid().as_raw());
        assert_eq!(uid_of(&peer, &local), me);
        assert_eq!(by_diag_v4(&peer, &local), Some(me));
        assert_eq!(by_table(&peer, &local), me);
        // Nobody at that address: no owner.
        let nobody: SocketAddr = "127.0.0.1:1".parse().unwrap();
        assert_eq!(uid_of(&nobody, &local), None);
        assert_eq!(
            proc_form(&"127.0.0.1:80".parse().unwrap()).unwrap(),
            "0100007F:0050"
        );
    }
}
