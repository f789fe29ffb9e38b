//! The rules for secret names and environment variable names, shared by both sides:
//! the agent enforces them, the client explains them before asking.

/// Longest secret name accepted.
pub const MAX_NAME_LEN: usize = 128;
/// Longest description accepted.
pub const MAX_DESCRIPTION_LEN: usize = 1024;
/// Values shorter than this are not masked in output (their encodings would match all
/// over ordinary text); under `masking = "required"` such a lease is refused.
pub const MIN_MASKED_LEN: usize = 4;

/// Largest secret value accepted (certificates fit; whole files do not belong here).
pub const MAX_VALUE_LEN: usize = 512 * 1024;

/// A secret name: 1–128 of `A-Z a-z 0-9 _ -`, in segments separated by single `/`
/// (`prod/db-password`). Returns why not, in a phrase that fits after "name 'x' ".
pub fn check_secret_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("is empty".into());
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!("is longer than {MAX_NAME_LEN} characters"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '/')))
    {
        return Err(format!(
            "contains {c:?}; use letters, digits, '_', '-' and '/'"
        ));
    }
    if name.starts_with('/') || name.ends_with('/') || name.contains("//") {
        return Err("has an empty segment between '/'".into());
    }
    if name.starts_with('-') {
        return Err("starts with '-'".into());
    }
    Ok(())
}

/// The environment variable `-s NAME` injects as: `/` and `-` become `_`, upper-cased.
pub fn env_var_for(name: &str) -> String {
    name.chars()
        .map(|c| match c {
            '/' | '-' => '_',
            c => c.to_ascii_uppercase(),
        })
        .collect()
}

/// Variables that make a dynamic loader, a shell or an interpreter run code the command
/// did not ask for — or make the command run another program with its environment (a
/// pager, an editor, an ssh wrapper). `jitc exec` refuses them in an `--env-file` (a
/// repository's `.env` is not the user's to trust), and keeps them from the inherited
/// environment of a command a policy rule pins (`commands`), so that
/// `LD_PRELOAD=./dump.so jitc exec -s prod/db -- psql` runs psql, not `dump.so`.
pub const HOOK_VAR_PREFIXES: &[&str] = &[
    "LD_",
    "DYLD_",
    "BASH_FUNC_",
    // git's configuration from the environment (core.fsmonitor, core.sshCommand, …).
    "GIT_CONFIG_",
    // npm's whole configuration (script-shell, node-options, …).
    "npm_config_",
    "NPM_CONFIG_",
];

/// See `HOOK_VAR_PREFIXES`: the names taken whole.
pub const HOOK_VARS: &[&str] = &[
    // The C library.
    "GCONV_PATH",
    "LOCPATH",
    "MALLOC_CHECK_",
    "HOSTALIASES",
    "RESOLV_HOST_CONF",
    // Shells.
    "BASH_ENV",
    "ENV",
    "SHELLOPTS",
    "BASHOPTS",
    "PS4",
    "PROMPT_COMMAND",
    "ZDOTDIR",
    "IFS",
    // Perl, Python, Ruby, Node, Java, Lua, Tcl, PHP.
    "PERL5OPT",
    "PERL5LIB",
    "PERLLIB",
    "PERL5DB",
    "PYTHONSTARTUP",
    "PYTHONPATH",
    "PYTHONHOME",
    "PYTHONINSPECT",
    "PYTHONBREAKPOINT",
    "PYTHONUSERBASE",
    "PYTHONWARNINGS",
    "RUBYOPT",
    "RUBYLIB",
    "NODE_OPTIONS",
    "NODE_PATH",
    "JAVA_TOOL_OPTIONS",
    "_JAVA_OPTIONS",
    "JDK_JAVA_OPTIONS",
    "CLASSPATH",
    "LUA_INIT",
    "LUA_PATH",
    "LUA_CPATH",
    "TCLLIBPATH",
    "PHPRC",
    "PHP_INI_SCAN_DIR",
    // Libraries that load modules named by the environment.
    "OPENSSL_CONF",
    "OPENSSL_MODULES",
    "OPENSSL_ENGINES",
    "GTK_MODULES",
    "GTK_PATH",
    "QT_PLUGIN_PATH",
    "GIO_EXTRA_MODULES",
    "GST_PLUGIN_PATH",
    "GST_PLUGIN_SYSTEM_PATH",
    "SASL_PATH",
    "KRB5_CONFIG",
    // Configuration files that run commands.
    "PSQLRC",
    "MYSQL_HOME",
    "CURL_HOME",
    "WGETRC",
    "GIT_CONFIG",
    "GIT_TEMPLATE_DIR",
    "INPUTRC",
    // Programs a command starts with its own environment.
    "PAGER",
    "PSQL_PAGER",
    "GIT_PAGER",
    "MANPAGER",
    "EDITOR",
    "VISUAL",
    "PSQL_EDITOR",
    "GIT_EDITOR",
    "GIT_SSH",
    "GIT_SSH_COMMAND",
    "GIT_EXEC_PATH",
    "GIT_ASKPASS",
    "SSH_ASKPASS",
];

/// Whether `var` is a loader, shell or interpreter hook (see `HOOK_VAR_PREFIXES`).
pub fn is_hook_var(var: &str) -> bool {
    HOOK_VAR_PREFIXES.iter().any(|p| var.starts_with(p)) || HOOK_VARS.contains(&var)
}

/// Whether `var` is a portable environment variable name (`[A-Za-z_][A-Za-z0-9_]*`).
pub fn is_env_var_name(var: &str) -> bool {
    let mut chars = var.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in [
            "a",
            "GITHUB_TOKEN",
            "prod/db-password",
            "x1/y_2/z-3",
            "9lives",
        ] {
            assert!(check_secret_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "/a",
            "a/",
            "a//b",
            "a b",
            "a.b",
            "-a",
            "é",
            &"x".repeat(129),
        ] {
            assert!(check_secret_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn hook_vars() {
        for hook in [
            "LD_PRELOAD",
            "LD_AUDIT",
            "PYTHONPATH",
            "NODE_OPTIONS",
            "BASH_ENV",
            "OPENSSL_CONF",
            "GIT_CONFIG_COUNT",
            "GIT_CONFIG_PARAMETERS",
            "npm_config_script_shell",
            "PSQLRC",
        ] {
            assert!(is_hook_var(hook), "{hook}");
        }
        for plain in ["PATH", "HOME", "DATABASE_URL", "OLD_PRELOAD", "NODE_ENV"] {
            assert!(!is_hook_var(plain), "{plain}");
        }
    }

    #[test]
    fn env_vars() {
        assert_eq!(env_var_for("prod/db-password"), "PROD_DB_PASSWORD");
        assert!(is_env_var_name("PROD_DB_PASSWORD"));
        assert!(is_env_var_name("_x1"));
        assert!(!is_env_var_name("9LIVES"));
        assert!(!is_env_var_name(""));
        assert!(!is_env_var_name("A=B"));
    }
}

/// The scheme of a reference to a secret in a team's backend (`[backend.NAME]`).
pub const BACKEND_SCHEME: &str = "bao://";
/// Longest backend reference accepted.
pub const MAX_REF_LEN: usize = 512;

/// A backend's mounts that hold no secret a command may lease (the agent's own token,
/// logins, identities, the system backend, per-token storage).
pub const RESERVED_MOUNTS: [&str; 4] = ["sys", "auth", "identity", "cubbyhole"];

/// `bao://BACKEND/PATH[?version=N]#FIELD`, parsed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BackendRef {
    pub backend: String,
    /// Segments of `A-Z a-z 0-9 _ - .` joined by `/` (no `.` or `..` segment).
    pub path: String,
    pub version: Option<u64>,
    pub field: String,
}

impl BackendRef {
    /// The reference as written canonically: what leases, rules and records name.
    pub fn canonical(&self) -> String {
        match self.version {
            Some(v) => format!(
                "{BACKEND_SCHEME}{}/{}?version={v}#{}",
                self.backend, self.path, self.field
            ),
            None => format!(
                "{BACKEND_SCHEME}{}/{}#{}",
                self.backend, self.path, self.field
            ),
        }
    }

    /// The read it comes from: one per backend, path and version.
    pub fn source(&self) -> (String, String, Option<u64>) {
        (self.backend.clone(), self.path.clone(), self.version)
    }
}

/// Whether `s` is a backend reference (well-formed or not).
pub fn is_backend_ref(s: &str) -> bool {
    s.starts_with(BACKEND_SCHEME)
}

/// Parses a backend reference; says why not in a phrase that fits after "reference 'x' ".
pub fn parse_backend_ref(s: &str) -> Result<BackendRef, String> {
    if s.len() > MAX_REF_LEN {
        return Err(format!("is longer than {MAX_REF_LEN} characters"));
    }
    let rest = s
        .strip_prefix(BACKEND_SCHEME)
        .ok_or_else(|| format!("does not start with {BACKEND_SCHEME}"))?;
    let (rest, field) = rest
        .rsplit_once('#')
        .ok_or("names no field; end it with #FIELD (e.g. #password)")?;
    let (rest, version) = match rest.split_once('?') {
        None => (rest, None),
        Some((r, q)) => {
            let v = q
                .strip_prefix("version=")
                .and_then(|v| v.parse::<u64>().ok())
                .filter(|v| *v > 0)
                .ok_or("takes only ?version=N (N from 1)")?;
            (r, Some(v))
        }
    };
    let (backend, path) = rest
        .split_once('/')
        .ok_or("names no path; write bao://BACKEND/PATH#FIELD")?;
    let name_ok = |b: &str| {
        !b.is_empty()
            && b.len() <= 64
            && b.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
    };
    if !name_ok(backend) {
        return Err(format!(
            "names backend '{backend}'; a backend is lower-case letters, digits, '-' or '_'"
        ));
    }
    let seg_ok = |seg: &str| {
        !seg.is_empty()
            && seg != "."
            && seg != ".."
            && seg
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    };
    if !path.split('/').all(seg_ok) {
        return Err(
            "has a path segment that is empty, '.', '..', or not letters, digits, '_', '-' and '.'"
                .into(),
        );
    }
    // The cluster's own machinery is no secret a command may lease: its logins, tokens,
    // identities, system endpoints (reading one can hand back the agent's own token).
    let first = path.split('/').next().unwrap_or_default();
    if RESERVED_MOUNTS.contains(&first) {
        return Err(format!(
            "reads under {first}/, the cluster's own machinery, not a secret; name a secrets engine's path"
        ));
    }
    if field.is_empty()
        || field.len() > 128
        || !field
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    {
        return Err("has a field that is not 1–128 letters, digits, '_', '-' and '.'".into());
    }
    Ok(BackendRef {
        backend: backend.to_owned(),
        path: path.to_owned(),
        version,
        field: field.to_owned(),
    })
}

/// A backend reference without its `?version=N` (what rules judge); any other name as is.
pub fn without_version(name: &str) -> std::borrow::Cow<'_, str> {
    match parse_backend_ref(name) {
        Ok(r) if r.version.is_some() => {
            std::borrow::Cow::Owned(BackendRef { version: None, ..r }.canonical())
        }
        _ => std::borrow::Cow::Borrowed(name),
    }
}

/// A name a lease may ask for: a vault secret's name, or a canonical backend reference.
pub fn check_lease_name(name: &str) -> Result<(), String> {
    if is_backend_ref(name) {
        let r = parse_backend_ref(name)?;
        if r.canonical() != name {
            return Err("is not written canonically".into());
        }
        return Ok(());
    }
    check_secret_name(name)
}

#[cfg(test)]
mod backend_ref_tests {
    use super::*;

    #[test]
    fn backend_references_parse_and_are_canonical() {
        let r = parse_backend_ref("bao://team/database/creds/ro#username").unwrap();
        assert_eq!(r.backend, "team");
        assert_eq!(r.path, "database/creds/ro");
        assert_eq!(r.field, "username");
        assert_eq!(r.canonical(), "bao://team/database/creds/ro#username");
        let v = parse_backend_ref("bao://t/secret/app?version=3#password").unwrap();
        assert_eq!(v.version, Some(3));
        assert!(check_lease_name(&v.canonical()).is_ok());
        for bad in [
            "bao://team/secret/app",
            "bao://Team/secret/app#x",
            "bao://team#x",
            "bao://team/../sys/x#x",
            "bao://team/secret//app#x",
            "bao://team/secret/app?version=0#x",
            "bao://team/secret/app?v=1#x",
            "bao://team/secret/a b#x",
            "bao://team/secret/app#",
            "bao://team/auth/token/lookup-self#id",
            "bao://team/sys/internal/ui/mounts#x",
            "bao://team/identity/oidc/token/r#token",
            "bao://team/cubbyhole/x#y",
        ] {
            assert!(parse_backend_ref(bad).is_err(), "{bad}");
        }
    }
}
