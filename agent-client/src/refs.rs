//! Secret references: `NAME`, `jitc://NAME` or `bao://BACKEND/PATH#FIELD` (a team's
//! backend), and the variables they are injected as.

use jitc_protocol::names::{
    check_secret_name, env_var_for, is_backend_ref, is_env_var_name, parse_backend_ref,
};

use crate::error::{Error, Result};

pub const SCHEME: &str = "jitc://";

/// Whether a value is a reference to be resolved (rather than a literal).
pub fn is_ref(value: &str) -> bool {
    value.starts_with(SCHEME) || is_backend_ref(value)
}

/// The secret name a `REF` (`NAME` or `jitc://NAME`) points at; a backend reference,
/// written canonically.
pub fn parse_ref(reference: &str) -> Result<String> {
    if is_backend_ref(reference) {
        return parse_backend_ref(reference)
            .map(|r| r.canonical())
            .map_err(|why| {
                Error::bad_input(format!(
                    "bad reference '{}': it {why}",
                    reference.escape_debug()
                ))
            });
    }
    let name = reference.strip_prefix(SCHEME).unwrap_or(reference);
    check_secret_name(name).map_err(|why| {
        Error::bad_input(format!(
            "bad reference '{}': the name {why}",
            reference.escape_debug()
        ))
    })?;
    Ok(name.to_owned())
}

/// One variable the command gets, and the secret that fills it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    pub var: String,
    pub secret: String,
}

/// `-s NAME`: injected as NAME with `/` and `-` turned to `_`, upper-cased.
pub fn binding_for_secret(reference: &str) -> Result<Binding> {
    let secret = parse_ref(reference)?;
    // A backend reference goes into its field's name (`#password` → PASSWORD).
    let var = match parse_backend_ref(&secret) {
        Ok(r) => env_var_for(&r.field.replace('.', "_")),
        Err(_) => env_var_for(&secret),
    };
    if !is_env_var_name(&var) {
        return Err(Error::bad_input(format!(
            "'{secret}' does not make a valid variable name ({var}); use -e VAR={secret}"
        )));
    }
    Ok(Binding { var, secret })
}

/// `-e VAR=REF`.
pub fn binding_for_assignment(assignment: &str) -> Result<Binding> {
    let Some((var, reference)) = assignment.split_once('=') else {
        return Err(Error::bad_input(format!(
            "'-e {}' needs the form VAR=NAME or VAR=jitc://NAME",
            assignment.escape_debug()
        )));
    };
    if !is_env_var_name(var) {
        return Err(Error::bad_input(format!(
            "'{}' is not a valid variable name; use letters, digits and '_', not starting with a digit",
            var.escape_debug()
        )));
    }
    Ok(Binding {
        var: var.to_owned(),
        secret: parse_ref(reference)?,
    })
}

/// Refuses one variable bound to two different secrets; drops exact repeats.
pub fn dedup(bindings: Vec<Binding>) -> Result<Vec<Binding>> {
    let mut out: Vec<Binding> = Vec::with_capacity(bindings.len());
    for b in bindings {
        match out.iter().find(|o| o.var == b.var) {
            Some(o) if o.secret == b.secret => {}
            Some(o) => {
                return Err(Error::bad_input(format!(
                    "{} is bound to both '{}' and '{}'; keep one",
                    b.var, o.secret, b.secret
                )));
            }
            None => out.push(b),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references() {
        assert_eq!(parse_ref("jitc://prod/db").unwrap(), "prod/db");
        assert_eq!(parse_ref("prod/db").unwrap(), "prod/db");
        assert!(parse_ref("jitc://").is_err());
        assert!(parse_ref("jitc://a b").is_err());
    }

    #[test]
    fn bindings() {
        let b = binding_for_secret("prod/db-password").unwrap();
        assert_eq!(
            (b.var.as_str(), b.secret.as_str()),
            ("PROD_DB_PASSWORD", "prod/db-password")
        );
        assert!(binding_for_secret("9lives").is_err());
        let e = binding_for_assignment("DATABASE_URL=jitc://prod/db").unwrap();
        assert_eq!(
            (e.var.as_str(), e.secret.as_str()),
            ("DATABASE_URL", "prod/db")
        );
        assert!(binding_for_assignment("NOEQUALS").is_err());
        assert!(binding_for_assignment("1X=a").is_err());
        let twice = vec![b.clone(), b.clone()];
        assert_eq!(dedup(twice).unwrap().len(), 1);
        let clash = vec![
            Binding {
                var: "X".into(),
                secret: "a".into(),
            },
            Binding {
                var: "X".into(),
                secret: "b".into(),
            },
        ];
        assert!(dedup(clash).is_err());
    }
}
