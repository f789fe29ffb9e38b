//! `jitc-lease-bench`: N concurrent clients, each on its own connection, in a tight
//! request loop for a fixed time; prints requests per second and latency percentiles.
//!
//!   jitc-lease-bench jitc SOCKET SECRET CLIENTS SECONDS   # lease grant + release pairs
//!   jitc-lease-bench ssh  SOCKET -      CLIENTS SECONDS   # ssh-agent REQUEST_IDENTITIES
//!
//! The same loop drives both, so the figures compare the agents, not the clients.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use jitc::Client;
use jitc_protocol::{CommandLine, LeaseRequest};

/// One request (a lease grant + release pair, or one identities request).
trait Op: Send {
    fn once(&mut self);
}

struct Lease {
    client: Client,
    req: LeaseRequest,
}

impl Op for Lease {
    fn once(&mut self) {
        let grant = self.client.lease(self.req.clone()).expect("lease");
        self.client.release(grant.lease).expect("release");
    }
}

struct Identities {
    stream: UnixStream,
    buf: Vec<u8>,
}

impl Op for Identities {
    fn once(&mut self) {
        // SSH_AGENTC_REQUEST_IDENTITIES (11) in a 4-byte length frame.
        self.stream.write_all(&[0, 0, 0, 1, 11]).unwrap();
        let mut len = [0u8; 4];
        self.stream.read_exact(&mut len).unwrap();
        self.buf.resize(u32::from_be_bytes(len) as usize, 0);
        self.stream.read_exact(&mut self.buf).unwrap();
        assert_eq!(self.buf[0], 12, "SSH_AGENT_IDENTITIES_ANSWER");
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 6 {
        eprintln!("usage: jitc-lease-bench jitc|ssh SOCKET SECRET CLIENTS SECONDS");
        std::process::exit(2);
    }
    let kind = args[1].clone();
    let socket = PathBuf::from(&args[2]);
    let secret = args[3].clone();
    let clients: usize = args[4].parse().unwrap();
    let seconds: u64 = args[5].parse().unwrap();
    let start = Arc::new(Barrier::new(clients + 1));
    let workers: Vec<_> = (0..clients)
        .map(|_| {
            let (kind, socket, secret, start) =
                (kind.clone(), socket.clone(), secret.clone(), start.clone());
            std::thread::spawn(move || {
                let mut op: Box<dyn Op> = if kind == "jitc" {
                    let req = LeaseRequest {
                        secrets: vec![secret],
                        command: CommandLine {
                            path: "/usr/bin/true".into(),
                            argv: vec!["true".into()],
                            cwd: "/".into(),
                        },
                        task: Some("bench".into()),
                        ttl_ms: None,
                        masking: true,
                        proxy: false,
                    };
                    Box::new(Lease {
                        client: Client::connect(&socket).expect("connect"),
                        req,
                    })
                } else {
                    Box::new(Identities {
                        stream: UnixStream::connect(&socket).expect("connect"),
                        buf: Vec::new(),
                    })
                };
                op.once(); // warm the connection (jitc: reads the peer's ancestry once)
                start.wait();
                let end = Instant::now() + Duration::from_secs(seconds);
                let mut lat = Vec::with_capacity(1 << 16);
                while Instant::now() < end {
                    let t = Instant::now();
                    op.once();
                    lat.push(t.elapsed());
                }
                lat
            })
        })
        .collect();
    start.wait();
    let began = Instant::now();
    let mut all: Vec<Duration> = workers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    let elapsed = began.elapsed().as_secs_f64();
    all.sort();
    let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)];
    println!(
        "{kind} clients={clients} ops={} rate={:.0}/s p50={:.1}us p99={:.1}us max={:.1}us",
        all.len(),
        all.len() as f64 / elapsed,
        pct(0.50).as_secs_f64() * 1e6,
        pct(0.99).as_secs_f64() * 1e6,
        all.last().unwrap().as_secs_f64() * 1e6,
    );
}
