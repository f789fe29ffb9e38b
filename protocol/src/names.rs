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
    fn env_vars() {
        assert_eq!(env_var_for("prod/db-password"), "PROD_DB_PASSWORD");
        assert!(is_env_var_name("PROD_DB_PASSWORD"));
        assert!(is_env_var_name("_x1"));
        assert!(!is_env_var_name("9LIVES"));
        assert!(!is_env_var_name(""));
        assert!(!is_env_var_name("A=B"));
    }
}
