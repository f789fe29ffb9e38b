//! `jitc-lease-bench`: N concurrent clients, each on its own connection, in a tight
//! request loop for a fixed time; prints requests per second and latency percentiles.
//!
//!   jitc-lease-bench jitc SOCKET SECRET CLIENTS SECONDS   # lease grant + release pairs
//!   jitc-lease-bench ssh  SOCKET -      CLIENTS SECONDS   # ssh-agent REQUEST_IDENTITIES
//!   jitc-lease-bench http HOST:PORT PATH CLIENTS SECONDS  # HTTP/1.1 GETs, kept alive
//!
//! SECONDS may be `xN` instead: exactly N requests per client (after one to warm up).
//!
//! `http` sends `$BAO_TOKEN` (never an argument) as `X-Vault-Token`: an OpenBao KV
//! read, for the grant rate against OpenBao's.
//!
//! The same loop drives both, so the figures compare the agents, not the clients.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
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

/// One GET on a kept-alive connection; the whole response read (status 200 only).
struct HttpGet {
    reader: BufReader<TcpStream>,
    request: Vec<u8>,
    line: String,
    body: Vec<u8>,
}

impl HttpGet {
    fn connect(addr: &str, path: &str) -> HttpGet {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_nodelay(true).unwrap();
        let token = std::env::var("BAO_TOKEN").unwrap_or_default();
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nX-Vault-Token: {token}\r\nConnection: keep-alive\r\n\r\n"
        )
        .into_bytes();
        HttpGet {
            reader: BufReader::new(stream),
            request,
            line: String::new(),
            body: Vec::new(),
        }
    }
}

impl Op for HttpGet {
    fn once(&mut self) {
        self.reader.get_mut().write_all(&self.request).unwrap();
        let mut len = None;
        let mut first = true;
        loop {
            self.line.clear();
            self.reader.read_line(&mut self.line).unwrap();
            let l = self.line.trim_end();
            if first {
                assert!(l.starts_with("HTTP/1.1 200"), "status: {l}");
                first = false;
            } else if l.is_empty() {
                break;
            } else if let Some((k, v)) = l.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                len = v.trim().parse::<usize>().ok();
            }
        }
        self.body.resize(len.expect("a Content-Length"), 0);
        self.reader.read_exact(&mut self.body).unwrap();
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 6 {
        eprintln!("usage: jitc-lease-bench jitc|ssh|http SOCKET SECRET CLIENTS SECONDS");
        std::process::exit(2);
    }
    let kind = args[1].clone();
    let socket = PathBuf::from(&args[2]);
    let secret = args[3].clone();
    let clients: usize = args[4].parse().unwrap();
    // SECONDS, or xN for exactly N requests per client (for tests: no clock involved).
    let (seconds, count): (u64, Option<usize>) = match args[5].strip_prefix('x') {
        Some(n) => (0, Some(n.parse().unwrap())),
        None => (args[5].parse().unwrap(), None),
    };
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
                } else if kind == "http" {
                    Box::new(HttpGet::connect(&socket.to_string_lossy(), &secret))
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
                while match count {
                    Some(n) => lat.len() < n,
                    None => Instant::now() < end,
                } {
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
