//! `jitc exec --proxy`: what a command needs to go through the agent's gateway — proxy
//! variables carrying the lease's proxy credential, `NO_PROXY` without the bound hosts,
//! and the trust variables common clients read pointing at a bundle of the system's
//! roots and jitc's CA (public: it may live in a file).

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use jitc_protocol::GatewayGrant;
use sha2::{Digest, Sha256};

use super::spawn::ChildEnv;
use crate::error::{Error, Result};

/// The proxy variables, in both cases (curl reads lower case `http_proxy` only).
pub const PROXY_VARS: [&str; 4] = ["HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"];
/// Variables naming a CA bundle, for the clients that read each: OpenSSL and Go
/// (`SSL_CERT_FILE`), Python requests, curl, Node.js (extra CAs), git, the AWS SDKs and
/// CLI, pip, npm, Cargo, Deno, Bundler, Nix, gRPC.
pub const TRUST_VARS: [&str; 13] = [
    "SSL_CERT_FILE",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "NODE_EXTRA_CA_CERTS",
    "GIT_SSL_CAINFO",
    "AWS_CA_BUNDLE",
    "PIP_CERT",
    "NPM_CONFIG_CAFILE",
    "CARGO_HTTP_CAINFO",
    "DENO_CERT",
    "BUNDLE_SSL_CA_CERT",
    "NIX_SSL_CERT_FILE",
    "GRPC_DEFAULT_SSL_ROOTS_FILE_PATH",
];
/// Node.js ≥ 24 reads the proxy variables only when told to.
const NODE_PROXY: &str = "NODE_USE_ENV_PROXY";
/// Where the system's roots usually are (Debian/Ubuntu, Fedora/RHEL, Alpine/macOS).
const SYSTEM_BUNDLES: [&str; 4] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
    "/etc/ssl/ca-bundle.pem",
];
/// The most of a system bundle read.
const MAX_BUNDLE: u64 = 16 << 20;

/// Every variable `apply` sets (so none is inherited beside it).
pub fn overridden() -> impl Iterator<Item = &'static str> {
    PROXY_VARS.into_iter().chain(TRUST_VARS).chain([
        "NO_PROXY",
        "no_proxy",
        NODE_PROXY,
        "JITC_CA_BUNDLE",
    ])
}

/// Whether `NO_PROXY` entry `entry` would send a request for `host` around the proxy
/// (curl's rules: `*`, the name itself, or a domain suffix with or without a dot).
fn bypasses(entry: &str, host: &str) -> bool {
    let entry = entry.trim().to_ascii_lowercase();
    let entry = entry.split(':').next().unwrap_or("");
    if entry.is_empty() {
        return false;
    }
    if entry == "*" {
        return true;
    }
    let bare = entry.trim_start_matches("*.").trim_start_matches('.');
    let host = host.trim_start_matches("*.");
    host == bare || host.ends_with(&format!(".{bare}")) || bare.ends_with(&format!(".{host}"))
}

/// `NO_PROXY` without the entries that would let a bound host's requests go around the
/// gateway.
pub fn no_proxy_without(value: &str, hosts: &[String]) -> String {
    value
        .split(',')
        .filter(|e| !hosts.iter().any(|h| bypasses(e, h)))
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .collect::<Vec<_>>()
        .join(",")
}

/// The system's roots, then jitc's CA.
fn bundle_text(ca_pem: &str) -> Vec<u8> {
    use std::io::Read;
    let mine = std::env::var_os("SSL_CERT_FILE").map(PathBuf::from);
    let mut out = Vec::new();
    for path in mine
        .iter()
        .map(PathBuf::as_path)
        .chain(SYSTEM_BUNDLES.iter().map(Path::new))
    {
        if let Ok(f) = std::fs::File::open(path)
            && f.take(MAX_BUNDLE).read_to_end(&mut out).is_ok()
            && !out.is_empty()
        {
            break;
        }
        out.clear();
    }
    if !out.ends_with(b"\n") && !out.is_empty() {
        out.push(b'\n');
    }
    out.extend_from_slice(
        b"# jitc gateway CA: the agent's gateway presents certificates it signs\n",
    );
    out.extend_from_slice(ca_pem.as_bytes());
    out
}

/// Writes (once: the name is the content's digest) `text` as `name-DIGEST.pem` in the
/// first of `dirs` that can hold it: a directory of ours, 0700; the file is ours and
/// holds exactly this. Returns its path.
fn content_file(dirs: &[PathBuf], name: &str, text: &[u8]) -> Option<PathBuf> {
    let digest = Sha256::digest(text);
    let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
    let uid = nix::unistd::getuid().as_raw();
    for dir in dirs {
        if std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .is_err()
        {
            continue;
        }
        match std::fs::symlink_metadata(dir) {
            Ok(m) if m.is_dir() && m.uid() == uid && m.mode() & 0o022 == 0 => {}
            _ => continue,
        }
        let path = dir.join(format!("{name}-{hex}.pem"));
        if let Ok(m) = std::fs::symlink_metadata(&path)
            && m.is_file()
            && m.uid() == uid
            && std::fs::read(&path).is_ok_and(|t| t == text)
        {
            return Some(path);
        }
        let tmp = dir.join(format!(".{name}-{hex}.{}", std::process::id()));
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&tmp)
            .and_then(|mut f| f.write_all(text).and_then(|()| f.sync_all()));
        if written.is_ok() && std::fs::rename(&tmp, &path).is_ok() {
            return Some(path);
        }
        let _ = std::fs::remove_file(&tmp);
    }
    None
}

/// Where the bundle may be written: the runtime directory, else the cache.
fn bundle_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(r) = std::env::var_os("XDG_RUNTIME_DIR").filter(|r| !r.is_empty()) {
        dirs.push(PathBuf::from(r).join("jitc").join("gateway"));
    }
    if let Some(c) = std::env::var_os("XDG_CACHE_HOME").filter(|c| !c.is_empty()) {
        dirs.push(PathBuf::from(c).join("jitc").join("gateway"));
    } else if let Some(h) = std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        dirs.push(PathBuf::from(h).join(".cache").join("jitc").join("gateway"));
    }
    dirs
}

/// Sets the command's proxy and trust variables for `g`.
pub fn apply(env: &mut ChildEnv, g: &GatewayGrant) -> Result<()> {
    let url = std::str::from_utf8(g.proxy_url.expose())
        .map_err(|_| Error::Unexpected("a proxy URL that is not text"))?;
    for var in PROXY_VARS {
        env.set(var, "the proxy credential", url.as_bytes())?;
    }
    for var in ["NO_PROXY", "no_proxy"] {
        if let Ok(v) = std::env::var(var) {
            env.set_plain(var, &no_proxy_without(&v, &g.hosts));
        }
    }
    env.set_plain(NODE_PROXY, "1");
    let bundle = content_file(&bundle_dirs(), "ca-bundle", &bundle_text(&g.ca_pem)).ok_or_else(|| {
        Error::failure(
            "cannot write the gateway's CA bundle (in $XDG_RUNTIME_DIR/jitc/gateway or ~/.cache/jitc/gateway); check those directories",
        )
    })?;
    let bundle = bundle.to_string_lossy();
    for var in TRUST_VARS {
        env.set_plain(var, &bundle);
    }
    env.set_plain("JITC_CA_BUNDLE", &bundle);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_proxy_loses_what_would_bypass_a_bound_host() {
        let hosts = vec!["api.github.com".to_owned(), "*.example.com".to_owned()];
        assert_eq!(
            no_proxy_without(
                "localhost,.github.com,github.com,*,10.0.0.1,example.com,a.example.com:443,other.org",
                &hosts
            ),
            "localhost,10.0.0.1,other.org"
        );
        assert_eq!(no_proxy_without("", &hosts), "");
    }
}
