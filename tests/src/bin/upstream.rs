//! A local HTTPS (and plain HTTP) server for the gateway tests: its own test CA, HTTP/2
//! and HTTP/1.1, a log of every request's head, and a few routes —
//!
//! - `/big?bytes=N`: N bytes, streamed;
//! - `/echo-auth`: the `Authorization` header it received, as the body;
//! - `/ws` with `Upgrade: echo`: 101, then echoes what it is sent;
//! - `/git/…`: `git http-backend` (smart HTTP, clone and push), behind Basic auth that
//!   must equal `$UPSTREAM_EXPECT_AUTH`;
//! - anything else: 200, `{"ok":true}`.
//!
//! Usage: `jitc-test-upstream DIR NAME…` — writes `DIR/ca.pem`, appends each request to
//! `DIR/requests.jsonl` (before answering it), and prints `READY HTTPS_PORT HTTP_PORT`.

use std::convert::Infallible;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

type Body = BoxBody<Bytes, std::io::Error>;

struct State {
    log: std::sync::Mutex<std::fs::File>,
    expect_auth: Option<String>,
    git_root: Option<PathBuf>,
}

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into())
        .map_err(|e: Infallible| match e {})
        .boxed()
}

fn status(code: StatusCode, body: &'static str) -> Response<Body> {
    let mut r = Response::new(full(body));
    *r.status_mut() = code;
    r
}

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().expect("usage: jitc-test-upstream DIR NAME…"));
    let names: Vec<String> = args.collect();
    let provider = Arc::new(rustls::crypto::ring::default_provider());

    let ca_key = KeyPair::generate().expect("ca key");
    let mut ca = CertificateParams::default();
    ca.distinguished_name = rcgen::DistinguishedName::new();
    ca.distinguished_name
        .push(DnType::CommonName, "jitc test upstream CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
    let ca_cert = ca.self_signed(&ca_key).expect("ca cert");
    std::fs::write(dir.join("ca.pem"), ca_cert.pem()).expect("write ca.pem");
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().expect("key");
    let mut leaf = CertificateParams::new(names).expect("names");
    leaf.use_authority_key_identifier_extension = true;
    let cert = leaf.signed_by(&key, &issuer).expect("leaf");
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("tls")
        .with_no_client_auth()
        .with_single_cert(
            vec![
                cert.der().clone(),
                CertificateDer::from(ca_cert.der().to_vec()),
            ],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .expect("tls");
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));

    let state = Arc::new(State {
        log: std::sync::Mutex::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join("requests.jsonl"))
                .expect("log"),
        ),
        expect_auth: std::env::var("UPSTREAM_EXPECT_AUTH").ok(),
        git_root: std::env::var_os("UPSTREAM_GIT_ROOT").map(PathBuf::from),
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let https = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let http = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        println!(
            "READY {} {}",
            https.local_addr().expect("addr").port(),
            http.local_addr().expect("addr").port()
        );
        let _ = std::io::stdout().flush();
        let plain_state = state.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = http.accept().await else {
                    continue;
                };
                let _ = tcp.set_nodelay(true);
                let state = plain_state.clone();
                tokio::spawn(serve(TokioIo::new(tcp), state));
            }
        });
        loop {
            let Ok((tcp, _)) = https.accept().await else {
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let (acceptor, state) = (acceptor.clone(), state.clone());
            tokio::spawn(async move {
                if let Ok(tls) = acceptor.accept(tcp).await {
                    serve(TokioIo::new(tls), state).await;
                }
            });
        }
    });
}

async fn serve<I>(io: I, state: Arc<State>)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = service_fn(move |req| {
        let state = state.clone();
        async move { Ok::<_, Infallible>(route(state, req).await) }
    });
    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
        .serve_connection_with_upgrades(io, service)
        .await;
}

async fn route(state: Arc<State>, mut req: Request<Incoming>) -> Response<Body> {
    let mut headers = serde_json::Map::new();
    for (k, v) in req.headers() {
        let list = headers
            .entry(k.as_str().to_owned())
            .or_insert_with(|| serde_json::Value::Array(Vec::new()));
        if let serde_json::Value::Array(a) = list {
            a.push(String::from_utf8_lossy(v.as_bytes()).into_owned().into());
        }
    }
    let line = serde_json::json!({
        "method": req.method().as_str(),
        "path": req.uri().path(),
        "query": req.uri().query(),
        "version": format!("{:?}", req.version()),
        "authority": req.uri().authority().map(|a| a.to_string()),
        "headers": headers,
    });
    {
        let mut log = state.log.lock().unwrap_or_else(|p| p.into_inner());
        let _ = writeln!(log, "{line}");
    }
    let path = req.uri().path().to_owned();
    let auth = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    if path == "/big" {
        let n: u64 = req
            .uri()
            .query()
            .and_then(|q| q.strip_prefix("bytes="))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        let chunk = Bytes::from(vec![b'x'; 64 << 10]);
        let mut r = Response::new(Chunks { left: n, chunk }.boxed());
        r.headers_mut().insert(
            http::header::CONTENT_LENGTH,
            n.to_string().parse().expect("len"),
        );
        return r;
    }
    if path == "/echo-auth" {
        let auth = auth.unwrap_or_default();
        let mut r = Response::new(full(format!("you sent: {auth}\n")));
        if let Ok(v) = http::HeaderValue::from_str(&auth) {
            r.headers_mut().insert("x-echo", v);
        }
        return r;
    }
    if path == "/ws" && req.headers().contains_key(http::header::UPGRADE) {
        let on = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(up) = on.await {
                let mut io = TokioIo::new(up);
                let mut buf = [0u8; 4096];
                while let Ok(n) = io.read(&mut buf).await {
                    if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        });
        let mut r = status(StatusCode::SWITCHING_PROTOCOLS, "");
        r.headers_mut().insert(
            http::header::UPGRADE,
            http::HeaderValue::from_static("echo"),
        );
        r.headers_mut().insert(
            http::header::CONNECTION,
            http::HeaderValue::from_static("upgrade"),
        );
        return r;
    }
    if let Some(rest) = path.strip_prefix("/git/") {
        if state.expect_auth.is_none() || auth != state.expect_auth {
            let mut r = status(StatusCode::UNAUTHORIZED, "credentials, please\n");
            r.headers_mut().insert(
                http::header::WWW_AUTHENTICATE,
                http::HeaderValue::from_static("Basic realm=\"git\""),
            );
            return r;
        }
        return git(&state, rest.to_owned(), req).await;
    }
    let mut r = Response::new(full(format!(
        "{{\"ok\":true,\"path\":{:?},\"version\":\"{:?}\"}}\n",
        path,
        req.version()
    )));
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

/// `left` bytes in chunks of `chunk`, streamed.
struct Chunks {
    left: u64,
    chunk: Bytes,
}

impl http_body::Body for Chunks {
    type Data = Bytes;
    type Error = std::io::Error;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        if self.left == 0 {
            return std::task::Poll::Ready(None);
        }
        let n = self.left.min(self.chunk.len() as u64);
        self.left -= n;
        std::task::Poll::Ready(Some(Ok(Frame::data(self.chunk.slice(..n as usize)))))
    }
}

/// `git http-backend` as CGI for repository path `rest`.
async fn git(state: &State, rest: String, req: Request<Incoming>) -> Response<Body> {
    let Some(root) = &state.git_root else {
        return status(StatusCode::NOT_FOUND, "no git root\n");
    };
    let (parts, body) = req.into_parts();
    let Ok(body) = body.collect().await.map(|b| b.to_bytes()) else {
        return status(StatusCode::BAD_REQUEST, "body\n");
    };
    let header = |h: &str| {
        parts
            .headers
            .get(h)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .unwrap_or_default()
    };
    let mut cmd = tokio::process::Command::new("git");
    cmd.arg("http-backend")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("GIT_PROJECT_ROOT", root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("REMOTE_USER", "jitc")
        .env("REMOTE_ADDR", "127.0.0.1")
        .env("PATH_INFO", format!("/{rest}"))
        .env("REQUEST_METHOD", parts.method.as_str())
        .env("QUERY_STRING", parts.uri.query().unwrap_or(""))
        .env("CONTENT_TYPE", header("content-type"))
        .env("CONTENT_LENGTH", body.len().to_string())
        .env("HTTP_CONTENT_ENCODING", header("content-encoding"))
        .env("GIT_PROTOCOL", header("git-protocol"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit());
    let Ok(mut child) = cmd.spawn() else {
        return status(StatusCode::INTERNAL_SERVER_ERROR, "git\n");
    };
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(&body).await;
    }
    let Ok(out) = child.wait_with_output().await else {
        return status(StatusCode::INTERNAL_SERVER_ERROR, "git\n");
    };
    let raw = out.stdout;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| (p, 4))
        .or_else(|| raw.windows(2).position(|w| w == b"\n\n").map(|p| (p, 2)));
    let Some((at, sep)) = split else {
        return status(StatusCode::INTERNAL_SERVER_ERROR, "git output\n");
    };
    let head = String::from_utf8_lossy(&raw[..at]).into_owned();
    let mut r = Response::new(full(raw[at + sep..].to_vec()));
    for line in head.lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let v = v.trim();
        if k.eq_ignore_ascii_case("status") {
            if let Some(code) = v.split(' ').next().and_then(|c| c.parse().ok()) {
                *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::OK);
            }
        } else if let (Ok(k), Ok(v)) = (
            http::HeaderName::from_bytes(k.as_bytes()),
            http::HeaderValue::from_str(v),
        ) {
            r.headers_mut().append(k, v);
        }
    }
    r
}
