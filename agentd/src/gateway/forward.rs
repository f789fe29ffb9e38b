//! One request through the gateway. Inside an intercepted tunnel to `host`:
//!
//! 1. screened: a placeholder anywhere in it (path, query, headers — a `Basic`
//!    credential decoded too — or a body) that is not one of this lease's placeholders
//!    bound to `host` refuses it before anything is forwarded (a body too large to
//!    hold is cut off where one appears), and raises `exfiltration_attempt`;
//! 2. for a bound host: the binding's `methods`, `paths` and `rate`;
//! 3. the credential added as bound (and, with `replace_placeholder`, the placeholder
//!    replaced wherever the command put it in the headers);
//! 4. forwarded over verified TLS to the host — never elsewhere, whatever `Host` says;
//! 5. the response streamed back with the value written over where it echoes it, and
//!    the request recorded (lease, host, method, path without query, status, bytes).

use std::sync::Arc;

use base64::Engine;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use jitc_protocol::kinds::{AnomalyKind, EventKind};
use zeroize::Zeroizing;

use super::body::{Masked, Scanned, mask_headers};
use super::proxy::{Conn, answer, exfiltration, has_placeholder};
use super::upstream::{Body, BoxError};
use super::{Bound, LeaseEntry, PLACEHOLDER_PREFIX, PLACEHOLDER_RANDOM};
use crate::anomaly::Anomaly;
use crate::audit::{Event, HttpRecord};

/// The tunnel's host: where every request in it goes.
pub struct Target {
    pub host: String,
    pub port: u16,
}

/// A request body at most this long is read whole and screened before forwarding.
const SCREENED_BODY: u64 = 1 << 20;
/// How long a screened body (and its share of the screening budget) may take.
const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// The most of a path kept in a record.
const MAX_RECORDED_PATH: usize = 1024;

/// Hop-by-hop headers: never forwarded either way.
const HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHORIZATION,
    header::PROXY_AUTHENTICATE,
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRANSFER_ENCODING,
];

/// Removes hop-by-hop headers (and those `Connection` names); keeps `Upgrade` only
/// when the connection is being upgraded.
fn strip_hop(h: &mut HeaderMap, upgrade: bool) {
    let named: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .filter(|n| !(upgrade && n == header::UPGRADE))
        .collect();
    for n in named.iter().chain(HOP.iter()) {
        h.remove(n);
    }
    h.remove(header::TRAILER);
    if upgrade {
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        h.remove(header::UPGRADE);
    }
}

/// Headers that ask a host to override the method or the path: dropped when a binding
/// limits either.
const OVERRIDES: [&str; 5] = [
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "x-original-url",
    "x-rewrite-url",
];

/// Headers hosts tend to reflect back (CORS, content types, identification): the
/// placeholder is never replaced by the value there.
const REFLECTED: [HeaderName; 9] = [
    header::ORIGIN,
    header::REFERER,
    header::USER_AGENT,
    header::CONTENT_TYPE,
    header::COOKIE,
    header::ACCESS_CONTROL_REQUEST_HEADERS,
    header::ACCESS_CONTROL_REQUEST_METHOD,
    header::ACCEPT,
    header::CONTENT_DISPOSITION,
];

/// Why a request target may be read differently by the host than by the binding's
/// `paths` (dot segments, encoded separators, parameters, an empty segment), if so.
fn ambiguous_target(uri: &Uri) -> Option<&'static str> {
    let path = uri.path();
    let lower = path.to_ascii_lowercase();
    let dots = path.split('/').any(|seg| {
        matches!(
            seg.to_ascii_lowercase().replace("%2e", ".").as_str(),
            "." | ".."
        )
    });
    if dots {
        return Some("its path has . or .. segments");
    }
    if ["%2f", "%5c", "%00", "%25"]
        .iter()
        .any(|e| lower.contains(e))
        || path.contains('\\')
    {
        return Some("its path has an encoded separator");
    }
    if path.contains(';') || path.contains("//") {
        return Some("its path has parameters or an empty segment");
    }
    // Only plain ASCII, and escapes of characters that need none would be read alike by
    // every server: anything else (overlong UTF-8, %u, raw non-ASCII) may not be.
    if !path.is_ascii() {
        return Some("its path has bytes outside ASCII");
    }
    let bytes = path.as_bytes();
    for (i, _) in path.match_indices('%') {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        let decoded = hex.and_then(|h| u8::from_str_radix(h, 16).ok());
        if !decoded.is_some_and(|c| c.is_ascii_alphanumeric() || b"-._~".contains(&c)) {
            return Some("its path has an escape that servers may read differently");
        }
    }
    // A method override some frameworks read from the query.
    if uri.query().is_some_and(|q| {
        q.split('&')
            .any(|kv| kv.to_ascii_lowercase().starts_with("_method"))
    }) {
        return Some("its query overrides the method");
    }
    None
}

/// Why a response to a credentialed request cannot be read as it will reach the
/// command (compressed, or a part of the whole), if so. Looked at before hop-by-hop
/// headers go (`Connection` could name `Content-Encoding` away).
fn unreadable(parts: &http::response::Parts) -> Option<&'static str> {
    let plain = |name: HeaderName, ok: &[&str]| {
        parts
            .headers
            .get_all(name)
            .iter()
            .flat_map(|v| v.to_str().unwrap_or("?").split(','))
            .all(|e| ok.iter().any(|o| e.trim().eq_ignore_ascii_case(o)))
    };
    if !plain(header::CONTENT_ENCODING, &["identity"]) {
        return Some("compressed");
    }
    if !plain(header::TRANSFER_ENCODING, &["identity", "chunked"]) {
        return Some("with a compressed transfer");
    }
    if parts.status == StatusCode::PARTIAL_CONTENT
        || parts.headers.contains_key(header::CONTENT_RANGE)
    {
        return Some("a part of the whole");
    }
    None
}

/// Every placeholder in `s` (the prefix and the hex digits after it).
fn placeholders_in(s: &[u8], out: &mut Vec<String>) {
    let prefix = PLACEHOLDER_PREFIX.as_bytes();
    for at in memchr::memmem::find_iter(s, prefix) {
        let rest = &s[at + prefix.len()..];
        let n = rest
            .iter()
            .take(PLACEHOLDER_RANDOM)
            .take_while(|b| b.is_ascii_hexdigit())
            .count();
        let p = String::from_utf8_lossy(&s[at..at + prefix.len() + n]).into_owned();
        if !out.contains(&p) {
            out.push(p);
        }
    }
}

/// The decoded credentials of a `Basic` header value, if it is one.
fn basic_decoded(v: &HeaderValue) -> Option<Zeroizing<Vec<u8>>> {
    let s = v.to_str().ok()?;
    let (scheme, b64) = s.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()
        .map(Zeroizing::new)
}

/// The placeholders in a request's target and headers.
fn placeholders_in_head(uri: &Uri, headers: &HeaderMap) -> Vec<String> {
    let mut found = Vec::new();
    placeholders_in(uri.to_string().as_bytes(), &mut found);
    for (name, v) in headers {
        placeholders_in(name.as_str().as_bytes(), &mut found);
        placeholders_in(v.as_bytes(), &mut found);
        if let Some(d) = basic_decoded(v) {
            placeholders_in(&d, &mut found);
        }
    }
    found
}

/// The header value a binding adds: its format with the value where `{}` is; a
/// `Basic` format's credentials are base64-encoded after the value is put in.
fn credential_value(b: &Bound) -> Zeroizing<Vec<u8>> {
    let (before, after) = b.credential.format.split_once("{}").unwrap_or(("", ""));
    let mut filled = Zeroizing::new(Vec::new());
    if let Some(user) = before.strip_prefix("Basic ") {
        let mut creds = Zeroizing::new(user.as_bytes().to_vec());
        creds.extend_from_slice(b.value.expose());
        creds.extend_from_slice(after.as_bytes());
        filled.extend_from_slice(b"Basic ");
        filled.extend_from_slice(
            base64::engine::general_purpose::STANDARD
                .encode(&*creds)
                .as_bytes(),
        );
    } else {
        filled.extend_from_slice(before.as_bytes());
        filled.extend_from_slice(b.value.expose());
        filled.extend_from_slice(after.as_bytes());
    }
    filled
}

/// What a response may echo of a binding: its value, and its header value's encoded
/// form (a `Basic` header's base64).
fn needles(bound: &[&Bound]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for b in bound {
        let value = b.value.expose();
        out.push(value.to_vec());
        if let Ok(text) = std::str::from_utf8(value) {
            // As JSON writes it, and as a URL does.
            let json = serde_json::to_string(text).unwrap_or_default();
            out.push(json.as_bytes()[1..json.len().saturating_sub(1).max(1)].to_vec());
            let mut pct = Vec::with_capacity(value.len() * 3);
            for &c in value {
                if c.is_ascii_alphanumeric() || b"-._~".contains(&c) {
                    pct.push(c);
                } else {
                    pct.extend_from_slice(format!("%{c:02X}").as_bytes());
                }
            }
            out.push(pct.to_ascii_lowercase());
            out.push(pct);
            // JSON that escapes '/' (PHP), and the value with '/' so escaped.
            out.push(text.replace('/', "\\/").into_bytes());
        }
        if b.credential.format.starts_with("Basic ") {
            let v = credential_value(b);
            out.push(v["Basic ".len()..].to_vec());
        }
    }
    out.retain(|n| n.len() >= 4);
    out.sort();
    out.dedup();
    out
}

/// `v` with each bound placeholder replaced by its value; `None` if nothing changed or
/// the result is not a valid header value.
fn replace_placeholders(v: &HeaderValue, bound: &[&Bound]) -> Option<HeaderValue> {
    let replace = |s: &[u8]| -> Option<Zeroizing<Vec<u8>>> {
        let mut out = Zeroizing::new(s.to_vec());
        let mut changed = false;
        for b in bound {
            let p = b.placeholder.as_bytes();
            while let Some(at) = memchr::memmem::find(&out, p) {
                let mut next = Zeroizing::new(Vec::with_capacity(out.len() + b.value.len()));
                next.extend_from_slice(&out[..at]);
                next.extend_from_slice(b.value.expose());
                next.extend_from_slice(&out[at + p.len()..]);
                out = next;
                changed = true;
            }
        }
        changed.then_some(out)
    };
    if let Some(decoded) = basic_decoded(v)
        && let Some(creds) = replace(&decoded)
    {
        let b64 = Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(&*creds));
        let mut hv = HeaderValue::from_str(&format!("Basic {}", &*b64)).ok()?;
        hv.set_sensitive(true);
        return Some(hv);
    }
    let replaced = replace(v.as_bytes())?;
    let mut hv = HeaderValue::from_bytes(&replaced).ok()?;
    hv.set_sensitive(true);
    Some(hv)
}

fn boxed<B>(b: B) -> Body
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    b.map_err(Into::into).boxed_unsync()
}

/// A request inside an intercepted tunnel to `target`.
pub async fn forward(
    conn: Conn,
    lease: Arc<LeaseEntry>,
    target: Arc<Target>,
    mut req: Request<Incoming>,
) -> Response<Body> {
    if lease.cancel.is_cancelled() {
        return answer(StatusCode::FORBIDDEN, "the lease has ended");
    }
    let host = target.host.as_str();
    let bound = lease.bound_to(host, target.port);
    // 1. Screened: the head now, the body below.
    for p in placeholders_in_head(req.uri(), req.headers()) {
        if !bound.iter().any(|b| b.placeholder == p) {
            exfiltration(&conn, &lease, host, "in the request line or headers");
            return answer(
                StatusCode::FORBIDDEN,
                &format!(
                    "a jitc placeholder may only go to the hosts its credential is bound to; {} is not one of them",
                    host.escape_debug()
                ),
            );
        }
    }
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let secrets: Vec<String> = bound.iter().map(|b| b.credential.secret.clone()).collect();
    // 2. The bindings' limits: on a path as the host will read it.
    let limited = bound
        .iter()
        .any(|b| b.credential.methods.is_some() || b.credential.paths.is_some());
    if limited && let Some(why) = ambiguous_target(req.uri()) {
        let why = format!("a credential here is limited to some paths, and {why}");
        record_refusal(&conn, &lease, host, &secrets, &method, &path, &why);
        return answer(StatusCode::FORBIDDEN, &why);
    }
    for b in &bound {
        if let Some(why) = b.credential.refuses(method.as_str(), &path) {
            record_refusal(&conn, &lease, host, &secrets, &method, &path, &why);
            return answer(StatusCode::FORBIDDEN, &why);
        }
        if !conn.shared.within_rate(&b.credential) {
            let limit = b.credential.per_minute.unwrap_or(0);
            let why = format!(
                "over the rate of '{}' ({limit} a minute)",
                b.credential.secret
            );
            record_refusal(&conn, &lease, host, &secrets, &method, &path, &why);
            conn.agent.raise(
                Anomaly::new(
                    AnomalyKind::Burst,
                    format!(
                        "more than {limit} requests a minute with the credential '{}' through the gateway (its rate): refused",
                        b.credential.secret
                    ),
                ),
                lease.base.clone(),
            );
            return answer(
                StatusCode::TOO_MANY_REQUESTS,
                &format!(
                    "the credential '{}' allows {limit} requests a minute; wait and try again",
                    b.credential.secret
                ),
            );
        }
    }
    let upgrade = req.headers().contains_key(header::UPGRADE);
    let downstream_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    // 3. The credential.
    strip_hop(&mut parts.headers, upgrade);
    parts.headers.remove(header::HOST);
    if limited {
        for h in OVERRIDES {
            parts.headers.remove(h);
        }
    }
    if !bound.is_empty() {
        // What comes back must be readable to be masked: no compression, no slices.
        parts.headers.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("identity"),
        );
        parts.headers.remove(header::RANGE);
        parts.headers.remove(header::IF_RANGE);
        parts.headers.remove("request-range");
    }
    let replacing: Vec<&Bound> = bound
        .iter()
        .copied()
        .filter(|b| b.credential.replace_placeholder)
        .collect();
    // What the replacement wrote (a Basic credential re-encoded, say) is masked in the
    // response too, exactly as sent.
    let mut rewritten: Vec<Vec<u8>> = Vec::new();
    if !replacing.is_empty() {
        for (name, v) in parts.headers.iter_mut() {
            if REFLECTED.iter().any(|r| r == name) {
                continue;
            }
            if let Some(new) = replace_placeholders(v, &replacing) {
                rewritten.push(new.as_bytes().to_vec());
                if let Some(b64) = new.as_bytes().strip_prefix(b"Basic ") {
                    rewritten.push(b64.to_vec());
                }
                *v = new;
            }
        }
    }
    for b in &bound {
        let Ok(name) = HeaderName::from_bytes(b.credential.header.as_bytes()) else {
            continue;
        };
        let Ok(mut value) = HeaderValue::from_bytes(&credential_value(b)) else {
            return answer(
                StatusCode::BAD_GATEWAY,
                &format!(
                    "the value of '{}' cannot go in a header (a line break or a control character in it)",
                    b.credential.secret
                ),
            );
        };
        value.set_sensitive(true);
        parts.headers.insert(name, value);
    }
    // 4. Where it goes: the tunnel's host, whatever the request says.
    let authority = if target.port == 443 {
        host_for_uri(host)
    } else {
        format!("{}:{}", host_for_uri(host), target.port)
    };
    let pq = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    parts.uri = match Uri::builder()
        .scheme("https")
        .authority(authority)
        .path_and_query(pq)
        .build()
    {
        Ok(u) => u,
        Err(_) => {
            return answer(
                StatusCode::BAD_REQUEST,
                "a request target that is not a path",
            );
        }
    };
    parts.version = http::Version::HTTP_11;
    let body = match screened_body(&conn, &lease, host, &bound, &parts.headers, body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let recorded = (!bound.is_empty()).then(|| Seen {
        secrets,
        method: method.to_string(),
        path: path.clone(),
    });
    if let Some(seen) = &recorded {
        // On record (queued in the group commit) before anything is forwarded.
        record_now(
            &conn,
            &lease,
            EventKind::GatewayRequest,
            host,
            seen.clone(),
            Outcome::default(),
        )
        .await;
    }
    send(
        &conn,
        &lease,
        host,
        Request::from_parts(parts, body),
        {
            let mut n = needles(&bound);
            n.extend(rewritten.into_iter().filter(|r| r.len() >= 4));
            n
        },
        recorded,
        downstream_upgrade,
    )
    .await
}

fn host_for_uri(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    }
}

/// The request body: read whole and screened when small, else screened as it streams
/// (cut off at a placeholder). A bound host's own placeholders may be in it.
async fn screened_body(
    conn: &Conn,
    lease: &Arc<LeaseEntry>,
    host: &str,
    bound: &[&Bound],
    headers: &HeaderMap,
    body: Incoming,
) -> Result<Body, Response<Body>> {
    use http_body::Body as _;
    if body.is_end_stream() {
        return Ok(boxed(
            http_body_util::Empty::<Bytes>::new().map_err(|e| match e {}),
        ));
    }
    let small = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|n| n <= SCREENED_BODY);
    if small {
        let len = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
            .max(1);
        let slow = || {
            answer(
                StatusCode::REQUEST_TIMEOUT,
                "the request body did not arrive in time to be checked; send it again",
            )
        };
        let _budget = tokio::time::timeout(BODY_TIMEOUT, conn.shared.screening.acquire_many(len))
            .await
            .map_err(|_| slow())?
            .map_err(|_| answer(StatusCode::SERVICE_UNAVAILABLE, "the gateway is stopping"))?;
        let collected = tokio::time::timeout(
            BODY_TIMEOUT,
            http_body_util::Limited::new(body, SCREENED_BODY as usize).collect(),
        )
        .await
        .map_err(|_| slow())?
        .map_err(|_| {
            answer(
                StatusCode::BAD_REQUEST,
                "the request body could not be read",
            )
        })?;
        let trailers = collected.trailers().cloned();
        let bytes = collected.to_bytes();
        let mut found = Vec::new();
        placeholders_in(&bytes, &mut found);
        for (k, v) in trailers.iter().flatten() {
            placeholders_in(k.as_str().as_bytes(), &mut found);
            placeholders_in(v.as_bytes(), &mut found);
        }
        if found
            .iter()
            .any(|p| !bound.iter().any(|b| b.placeholder == *p))
        {
            exfiltration(conn, lease, host, "in the request body");
            return Err(answer(
                StatusCode::FORBIDDEN,
                &format!(
                    "a jitc placeholder may only go to the hosts its credential is bound to; {} is not one of them",
                    host.escape_debug()
                ),
            ));
        }
        let full = Full::new(bytes).map_err(|e| match e {});
        return Ok(match trailers {
            Some(t) => boxed(full.with_trailers(async move { Some(Ok(t)) })),
            None => boxed(full),
        });
    }
    if !bound.is_empty() {
        // A large body to a bound host: its own placeholders may be in it.
        return Ok(boxed(body));
    }
    let (conn, lease, host) = (conn.clone(), lease.clone(), host.to_owned());
    Ok(boxed(Scanned::new(
        body,
        Box::new(move || exfiltration(&conn, &lease, &host, "in a streamed request body")),
    )))
}

/// Sends `req` with the lease's client; streams the response back masked, recording
/// it (when `recorded`: the secrets it carried, its method and path) as it ends.
async fn send(
    conn: &Conn,
    lease: &Arc<LeaseEntry>,
    host: &str,
    req: Request<Body>,
    needles: Vec<Vec<u8>>,
    recorded: Option<Seen>,
    downstream_upgrade: Option<hyper::upgrade::OnUpgrade>,
) -> Response<Body> {
    let failed = |why: String| {
        if let Some(seen) = &recorded {
            record(
                conn,
                lease,
                EventKind::GatewayResponse,
                host,
                seen.clone(),
                Outcome {
                    reason: Some(why),
                    ..Outcome::default()
                },
            );
        }
    };
    let client = match lease.client(&conn.shared.roots(), downstream_upgrade.is_some()) {
        Ok(c) => c,
        Err(e) => {
            failed(e.clone());
            return answer(StatusCode::BAD_GATEWAY, &e);
        }
    };
    let response = tokio::select! {
        r = client.request(req) => r,
        () = lease.cancel.cancelled() => {
            failed("the lease ended".to_owned());
            return answer(StatusCode::FORBIDDEN, "the lease has ended");
        }
    };
    let mut response = match response {
        Ok(r) => r,
        Err(e) => {
            let why =
                std::error::Error::source(&e).map_or_else(|| e.to_string(), |s| s.to_string());
            failed(format!("cannot reach the host ({why})"));
            return answer(
                StatusCode::BAD_GATEWAY,
                &format!("cannot reach {} ({why})", host.escape_debug()),
            );
        }
    };
    let status = response.status();
    let upgraded = status == StatusCode::SWITCHING_PROTOCOLS && downstream_upgrade.is_some();
    if upgraded && let Some(down) = downstream_upgrade {
        let up = hyper::upgrade::on(&mut response);
        let cancel = lease.cancel.clone();
        tokio::spawn(async move {
            let pipe = async {
                if let (Ok(down), Ok(up)) = (down.await, up.await) {
                    let (mut down, mut up) = (
                        hyper_util::rt::TokioIo::new(down),
                        hyper_util::rt::TokioIo::new(up),
                    );
                    let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
                }
            };
            tokio::select! {
                () = pipe => {}
                () = cancel.cancelled() => {}
            }
        });
    }
    let (mut parts, body) = response.into_parts();
    // A reason phrase of the host's own would be passed on as is.
    parts.extensions.remove::<hyper::ext::ReasonPhrase>();
    if let Some(seen) = &recorded
        && let Some(why) = unreadable(&parts)
    {
        // Asked for all of it, uncompressed: what cannot be read cannot be checked for
        // the value.
        let why = format!(
            "{} answered {why} though asked not to; jitc cannot check such an answer for the credential",
            host.escape_debug()
        );
        record(
            conn,
            lease,
            EventKind::GatewayResponse,
            host,
            seen.clone(),
            Outcome {
                status: Some(status.as_u16()),
                reason: Some(why.clone()),
                ..Outcome::default()
            },
        );
        return answer(StatusCode::BAD_GATEWAY, &why);
    }
    strip_hop(&mut parts.headers, upgraded);
    if recorded.is_some() {
        mask_headers(&mut parts.headers, &needles);
    }
    let on_end: Option<Box<dyn FnOnce(u64, bool) + Send>> = recorded.map(|seen| {
        let (conn, lease, host) = (conn.clone(), lease.clone(), host.to_owned());
        Box::new(move |bytes: u64, _complete: bool| {
            record(
                &conn,
                &lease,
                EventKind::GatewayResponse,
                &host,
                seen,
                Outcome {
                    status: Some(status.as_u16()),
                    bytes: Some(bytes),
                    reason: None,
                },
            );
        }) as Box<dyn FnOnce(u64, bool) + Send>
    });
    Response::from_parts(parts, boxed(Masked::new(body, needles, on_end)))
}

/// A request that carried (or was refused) a credential, as recorded.
#[derive(Clone)]
struct Seen {
    secrets: Vec<String>,
    method: String,
    path: String,
}

/// How a recorded request ended (all `None` before it is forwarded).
#[derive(Default)]
struct Outcome {
    status: Option<u16>,
    bytes: Option<u64>,
    reason: Option<String>,
}

/// Records a request of the lease (its path concealed if it holds a value of the
/// vault), in the audit trail's group commit: `gateway_request` before it is forwarded
/// (or refused, with `reason`), `gateway_response` when its response has ended.
fn record(
    conn: &Conn,
    lease: &LeaseEntry,
    kind: EventKind,
    host: &str,
    seen: Seen,
    outcome: Outcome,
) {
    tokio::spawn(record_now(conn, lease, kind, host, seen, outcome));
}

/// `record`, queued by the time it returns (so that what is recorded after it comes
/// after it).
fn record_now(
    conn: &Conn,
    lease: &LeaseEntry,
    kind: EventKind,
    host: &str,
    seen: Seen,
    outcome: Outcome,
) -> impl Future<Output = ()> + Send + 'static {
    let Outcome {
        status,
        bytes,
        reason,
    } = outcome;
    let agent = conn.agent.clone();
    let base = lease.base.clone();
    let (id, host) = (lease.id, host.to_owned());
    let Seen {
        secrets,
        method,
        mut path,
    } = seen;
    async move {
        if path.len() > MAX_RECORDED_PATH {
            let mut end = MAX_RECORDED_PATH;
            while !path.is_char_boundary(end) {
                end -= 1;
            }
            path.truncate(end);
            path.push('…');
        }
        let held = match agent.unlocked().await {
            Ok(slot) => slot
                .as_ref()
                .is_none_or(|v| !v.screen(path.as_bytes()).is_empty()),
            Err(_) => true,
        };
        if held {
            path = "[withheld: it held the value of a secret, or the vault was locked]".into();
        }
        agent.audit().record_later(Event {
            lease: Some(id),
            secrets,
            decision: (kind == EventKind::GatewayRequest && reason.is_some()).then_some("refused"),
            reason,
            http: Some(HttpRecord {
                host,
                method,
                path,
                status,
                bytes,
            }),
            ..Event::new(kind).merge(&base)
        });
    }
}

/// Records a request refused by a binding's limits.
fn record_refusal(
    conn: &Conn,
    lease: &LeaseEntry,
    host: &str,
    secrets: &[String],
    method: &http::Method,
    path: &str,
    why: &str,
) {
    let seen = Seen {
        secrets: secrets.to_vec(),
        method: method.to_string(),
        path: path.to_owned(),
    };
    record(
        conn,
        lease,
        EventKind::GatewayRequest,
        host,
        seen,
        Outcome {
            reason: Some(why.to_owned()),
            ..Outcome::default()
        },
    );
}

/// A plain-HTTP request (`GET http://…` to the proxy): refused for a bound host (a
/// credential never crosses the wire in clear) or under `gateway_only`; screened for
/// placeholders; forwarded without any credential.
pub async fn plain(conn: Conn, lease: Arc<LeaseEntry>, req: Request<Incoming>) -> Response<Body> {
    let Some(host) = super::upstream::host_of(req.uri()) else {
        return answer(StatusCode::BAD_REQUEST, "an http:// URL without a host");
    };
    if lease.bound.iter().any(|b| b.credential.binds(&host)) {
        return answer(
            StatusCode::FORBIDDEN,
            &format!(
                "plain HTTP to {}, a host a credential is bound to, is refused (it would cross the wire in clear); use https://",
                host.escape_debug()
            ),
        );
    }
    if lease.settings.gateway_only && !lease.settings.passthrough(&host) {
        return answer(
            StatusCode::FORBIDDEN,
            &format!(
                "{} is not a host a credential of this lease is bound to, and the policy says gateway_only",
                host.escape_debug()
            ),
        );
    }
    if !placeholders_in_head(req.uri(), req.headers()).is_empty()
        || has_placeholder(host.as_bytes())
    {
        exfiltration(&conn, &lease, &host, "in a plain-HTTP request");
        return answer(
            StatusCode::FORBIDDEN,
            "a jitc placeholder may only go to the hosts its credential is bound to",
        );
    }
    let (mut parts, body) = req.into_parts();
    strip_hop(&mut parts.headers, false);
    parts.version = http::Version::HTTP_11;
    let body = match screened_body(&conn, &lease, &host, &[], &parts.headers, body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    send(
        &conn,
        &lease,
        &host,
        Request::from_parts(parts, body),
        Vec::new(),
        None,
        None,
    )
    .await
}
