//! jitc's certificate authority for the gateway: made at `init` (or at the first
//! gateway lease of an older vault), its key sealed in the vault; and the leaf
//! certificates it signs for the hosts a command talks to, kept in memory.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, date_time_ymd,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// The CA's distinguished name: fixed, so that an issuer can be rebuilt from the key.
const CA_NAME: &str = "jitc gateway CA (local, per user)";
/// Leaf certificates made at most this many; then the cache starts over.
const MAX_LEAVES: usize = 4096;
/// A leaf is made again after this long (it is valid for 30 days).
const LEAF_REUSE: Duration = Duration::from_secs(7 * 24 * 3600);

fn ca_params() -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name.push(DnType::CommonName, CA_NAME);
    p.distinguished_name.push(DnType::OrganizationName, "jitc");
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p
}

/// (year, month, day) `days` from today (UTC).
fn day(days: i64) -> (i32, u8, u8) {
    let d = jiff::Timestamp::now()
        .checked_add(jiff::SignedDuration::from_hours(24 * days))
        .unwrap_or_else(|_| jiff::Timestamp::now())
        .to_zoned(jiff::tz::TimeZone::UTC)
        .date();
    (
        i32::from(d.year()),
        d.month().unsigned_abs(),
        d.day().unsigned_abs(),
    )
}

/// A new CA: (certificate DER, private key PKCS#8 DER).
pub fn generate() -> Result<(Vec<u8>, zeroize::Zeroizing<Vec<u8>>), String> {
    let key = KeyPair::generate().map_err(|e| format!("cannot make the gateway's CA key ({e})"))?;
    let mut params = ca_params();
    let (y, m, d) = day(-1);
    params.not_before = date_time_ymd(y, m, d);
    params.not_after = date_time_ymd(y + 10, m, d.min(28));
    let cert = params
        .self_signed(&key)
        .map_err(|e| format!("cannot make the gateway's CA certificate ({e})"))?;
    Ok((
        cert.der().to_vec(),
        zeroize::Zeroizing::new(key.serialize_der()),
    ))
}

/// The CA in use: signs leaf certificates, and keeps them.
pub struct Authority {
    issuer: Issuer<'static, KeyPair>,
    cert_der: Vec<u8>,
    pem: String,
    leaves: Mutex<HashMap<String, (Instant, Arc<rustls::ServerConfig>)>>,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Authority([redacted])")
    }
}

impl Authority {
    pub fn new(cert_der: Vec<u8>, key_der: &[u8]) -> Result<Authority, String> {
        let key = KeyPair::try_from(key_der)
            .map_err(|e| format!("the gateway's CA key in the vault is unusable ({e})"))?;
        let pem = pem_of(&cert_der);
        Ok(Authority {
            issuer: Issuer::new(ca_params(), key),
            cert_der,
            pem,
            leaves: Mutex::new(HashMap::new()),
        })
    }

    /// The CA certificate, PEM.
    pub fn pem(&self) -> &str {
        &self.pem
    }

    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// A TLS server configuration presenting a certificate for `host` (a name or an IP
    /// address) signed by this CA, offering HTTP/2 and HTTP/1.1.
    pub fn server_config(&self, host: &str) -> Result<Arc<rustls::ServerConfig>, String> {
        {
            let leaves = self.leaves.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((made, config)) = leaves.get(host)
                && made.elapsed() < LEAF_REUSE
            {
                return Ok(config.clone());
            }
        }
        // Made without the lock held: other hosts' tunnels need not wait for it.
        let failed =
            |e: &dyn std::fmt::Display| format!("cannot make a certificate for {host} ({e})");
        let key = KeyPair::generate().map_err(|e| failed(&e))?;
        let mut params = CertificateParams::new(vec![host.to_owned()]).map_err(|e| failed(&e))?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, host);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.use_authority_key_identifier_extension = true;
        let (y, m, d) = day(-1);
        params.not_before = date_time_ymd(y, m, d);
        let (y, m, d) = day(30);
        params.not_after = date_time_ymd(y, m, d);
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|e| failed(&e))?;
        let chain = vec![
            cert.der().clone(),
            CertificateDer::from(self.cert_der.clone()),
        ];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let mut config = rustls::ServerConfig::builder_with_provider(super::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| failed(&e))?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| failed(&e))?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let config = Arc::new(config);
        let mut leaves = self.leaves.lock().unwrap_or_else(|p| p.into_inner());
        if leaves.len() >= MAX_LEAVES {
            leaves.clear();
        }
        leaves.insert(host.to_owned(), (Instant::now(), config.clone()));
        Ok(config)
    }
}

/// `der` as a PEM certificate.
pub fn pem_of(der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}
