//! Who is on the other end of a loopback TCP connection: the uid that owns the client's
//! socket, from `/proc/net/tcp` (the kernel's table of this network namespace's TCP
//! sockets, each with its owner). Unlike a Unix socket, TCP carries no credentials; the
//! gateway refuses a connection whose socket is not its user's, whatever it presents.

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

/// The uid owning the socket at `peer` connected to `local`, if the table has it.
pub fn uid_of(peer: &SocketAddr, local: &SocketAddr) -> Option<u32> {
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

    #[test]
    fn a_connection_of_ours_is_found_as_ours() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let local = listener.local_addr().unwrap();
        let client = std::net::TcpStream::connect(local).unwrap();
        let (_server, peer) = listener.accept().unwrap();
        assert_eq!(peer, client.local_addr().unwrap());
        assert_eq!(uid_of(&peer, &local), Some(nix::unistd::getuid().as_raw()));
        assert_eq!(
            proc_form(&"127.0.0.1:80".parse().unwrap()).unwrap(),
            "0100007F:0050"
        );
    }
}
