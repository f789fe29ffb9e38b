//! `[backend.NAME]`: a team's OpenBao (or Vault) cluster that references
//! `bao://NAME/PATH#FIELD` are read from. Its own credentials are ordinary jitc secrets.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::PolicyError;
use super::credential::{TrustRoots, load_roots};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileBackend {
    kind: String,
    addresses: Vec<String>,
    ca_cert: Option<String>,
    namespace: Option<String>,
    auth: FileAuth,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, tag = "method", rename_all = "lowercase")]
enum FileAuth {
    Token { token: String },
    Approle { role_id: String, secret_id: String },
}

/// How the agent logs in: each credential is the name of a jitc secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    Token { token: String },
    AppRole { role_id: String, secret_id: String },
}

impl Auth {
    /// The jitc secrets the login needs.
    pub fn secrets(&self) -> Vec<&str> {
        match self {
            Auth::Token { token } => vec![token],
            Auth::AppRole { role_id, secret_id } => vec![role_id, secret_id],
        }
    }
}

/// A checked `[backend.NAME]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Backend {
    pub name: String,
    /// Base URLs (`https://host:port`), tried in order.
    pub addresses: Vec<String>,
    pub ca: Option<TrustRoots>,
    pub namespace: Option<String>,
    pub auth: Auth,
}

/// A backend's name: lower-case letters, digits, '-' and '_', at most 64.
pub fn name_ok(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

/// The name of the jitc secret a `jitc://NAME` (or bare `NAME`) credential names.
fn credential(backend: &str, what: &str, reference: &str) -> Result<String, PolicyError> {
    let name = reference.strip_prefix("jitc://").unwrap_or(reference);
    jitc_protocol::names::check_secret_name(name).map_err(|why| {
        PolicyError::Backend(
            backend.to_owned(),
            format!("{what} must name a jitc secret (jitc://NAME); '{name}' {why}"),
        )
    })?;
    Ok(name.to_owned())
}

pub(super) fn parse(file: BTreeMap<String, FileBackend>) -> Result<Vec<Backend>, PolicyError> {
    let mut out = Vec::with_capacity(file.len());
    for (name, b) in file {
        let err = |what: String| PolicyError::Backend(name.clone(), what);
        if !name_ok(&name) {
            return Err(err(
                "the name must be lower-case letters, digits, '-' or '_'".into(),
            ));
        }
        if b.kind != "openbao" && b.kind != "vault" {
            return Err(err(format!(
                "kind = \"{}\" is not one jitc speaks; use \"openbao\" (the Vault HTTP API)",
                b.kind
            )));
        }
        if b.addresses.is_empty() {
            return Err(err("addresses = [] names no server".into()));
        }
        let mut addresses = Vec::with_capacity(b.addresses.len());
        for a in &b.addresses {
            let uri = a.parse::<http::Uri>().ok().filter(|u| {
                u.host().is_some()
                    && (u.path() == "/" || u.path().is_empty())
                    && matches!(u.scheme_str(), Some("https" | "http"))
            });
            let Some(uri) = uri else {
                return Err(err(format!(
                    "address '{a}' is not https://HOST:PORT (no path)"
                )));
            };
            // The token and every value would cross the wire in clear: only to this
            // machine (a test server, a local tunnel's end).
            let loopback = matches!(
                uri.host(),
                Some("localhost" | "127.0.0.1" | "[::1]" | "::1")
            );
            if uri.scheme_str() == Some("http") && !loopback {
                return Err(err(format!(
                    "address '{a}' is plain http to another machine: the token and every value would cross the wire in clear; use https://"
                )));
            }
            addresses.push(a.trim_end_matches('/').to_owned());
        }
        let ca = b
            .ca_cert
            .as_deref()
            .map(load_roots)
            .transpose()
            .map_err(&err)?;
        if let Some(ns) = &b.namespace
            && (ns.is_empty() || ns.chars().any(|c| c.is_control() || c == ' '))
        {
            return Err(err(format!("namespace '{ns}' is not a namespace path")));
        }
        let auth = match b.auth {
            FileAuth::Token { token } => Auth::Token {
                token: credential(&name, "auth.token", &token)?,
            },
            FileAuth::Approle { role_id, secret_id } => Auth::AppRole {
                role_id: credential(&name, "auth.role_id", &role_id)?,
                secret_id: credential(&name, "auth.secret_id", &secret_id)?,
            },
        };
        out.push(Backend {
            name,
            addresses,
            ca,
            namespace: b.namespace,
            auth,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::Policy;
    use super::*;

    #[test]
    fn backends_parse_and_are_checked() {
        let p = Policy::parse(
            "[backend.team]\nkind = \"openbao\"\naddresses = [\"https://bao-1:8200\", \"https://bao-2:8200/\"]\nnamespace = \"eng\"\nauth = { method = \"approle\", role_id = \"jitc://team/role-id\", secret_id = \"team/secret-id\" }\n",
        )
        .unwrap();
        let b = &p.backends[0];
        assert_eq!(b.name, "team");
        assert_eq!(b.addresses, ["https://bao-1:8200", "https://bao-2:8200"]);
        assert_eq!(
            b.auth,
            Auth::AppRole {
                role_id: "team/role-id".into(),
                secret_id: "team/secret-id".into()
            }
        );
        for (bad, says) in [
            (
                "kind = \"consul\"\naddresses = [\"https://a:1\"]\nauth = { method = \"token\", token = \"t\" }",
                "is not one jitc speaks",
            ),
            (
                "kind = \"openbao\"\naddresses = []\nauth = { method = \"token\", token = \"t\" }",
                "names no server",
            ),
            (
                "kind = \"openbao\"\naddresses = [\"bao-1:8200\"]\nauth = { method = \"token\", token = \"t\" }",
                "is not https://",
            ),
            (
                "kind = \"openbao\"\naddresses = [\"http://bao-1:8200\"]\nauth = { method = \"token\", token = \"t\" }",
                "plain http to another machine",
            ),
            (
                "kind = \"openbao\"\naddresses = [\"https://a:1/v1\"]\nauth = { method = \"token\", token = \"t\" }",
                "is not https://",
            ),
            (
                "kind = \"openbao\"\naddresses = [\"https://a:1\"]\nauth = { method = \"token\", token = \"jitc://bad name\" }",
                "must name a jitc secret",
            ),
            (
                "kind = \"openbao\"\naddresses = [\"https://a:1\"]\nauth = { method = \"ldap\" }",
                "unknown variant",
            ),
        ] {
            let e = Policy::parse(&format!("[backend.team]\n{bad}\n"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
