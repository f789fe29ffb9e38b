//! Whose a file or directory is, and who else may write it: one check for everything
//! the agent trusts on disk. Each caller passes the rule it needs, because each guards
//! against something else:
//!
//! - the vault file: yours alone, not writable by others (`VAULT_FILE`) — someone who
//!   can swap it can make you unlock theirs;
//! - the vault's and the policy's directories, and the policy file: yours or root's
//!   (`/`, `/home` on the way up belong to root), not writable by others, who could
//!   replace what is in them (`SHARED_PATH`) — a sticky directory such as `/tmp` is
//!   fine on the way up to the policy (`SHARED_DIR`): others may add files there but
//!   not replace ours;
//! - the socket's directory: yours alone and closed to everyone else (`PRIVATE_DIR`) —
//!   its mode is the socket's first line of defence.

use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;

/// What a path must be.
#[derive(Debug, Clone, Copy)]
pub struct Rule {
    /// Root may own it as well as you.
    pub root_may_own: bool,
    /// Mode bits nobody else may have.
    pub forbidden: u32,
    /// A sticky directory passes despite the forbidden bits.
    pub sticky_ok: bool,
}

pub const VAULT_FILE: Rule = Rule {
    root_may_own: false,
    forbidden: 0o022,
    sticky_ok: false,
};
pub const SHARED_PATH: Rule = Rule {
    root_may_own: true,
    forbidden: 0o022,
    sticky_ok: false,
};
pub const SHARED_DIR: Rule = Rule {
    sticky_ok: true,
    ..SHARED_PATH
};
pub const PRIVATE_DIR: Rule = Rule {
    root_may_own: false,
    forbidden: 0o077,
    sticky_ok: false,
};

/// Why a path fails its rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unsafe {
    /// Someone else owns it.
    Owner { uid: u32, me: u32 },
    /// Others have bits they must not (`mode`: the permission bits).
    Mode { mode: u32 },
}

/// Checks `meta` against `rule` for the agent's own user.
pub fn check(meta: &Metadata, rule: Rule) -> Result<(), Unsafe> {
    let me = nix::unistd::geteuid().as_raw();
    let uid = meta.uid();
    if uid != me && !(rule.root_may_own && uid == 0) {
        return Err(Unsafe::Owner { uid, me });
    }
    let sticky = meta.mode() & 0o1000 != 0;
    if meta.mode() & rule.forbidden != 0 && !(rule.sticky_ok && sticky) {
        return Err(Unsafe::Mode {
            mode: meta.mode() & 0o7777,
        });
    }
    Ok(())
}

/// Makes the first of `base`, `base-1` … `base-99` that is free: `create` makes the one
/// it is given and fails with `AlreadyExists` where one is taken. The name made and
/// what `create` returned; or the last name tried and why it failed.
pub fn create_first_free<T>(
    base: &str,
    mut create: impl FnMut(&str) -> std::io::Result<T>,
) -> Result<(String, T), (String, std::io::Error)> {
    let mut name = base.to_owned();
    let mut n = 1;
    loop {
        match create(&name) {
            Ok(made) => return Ok((name, made)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n < 100 => {
                name = format!("{base}-{n}");
                n += 1;
            }
            Err(e) => return Err((name, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn each_rule_refuses_what_it_guards_against() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        let meta = |mode: u32| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
            std::fs::metadata(p).unwrap()
        };
        assert_eq!(check(&meta(0o700), PRIVATE_DIR), Ok(()));
        assert_eq!(
            check(&meta(0o750), PRIVATE_DIR),
            Err(Unsafe::Mode { mode: 0o750 })
        );
        assert_eq!(check(&meta(0o755), SHARED_PATH), Ok(()));
        assert!(check(&meta(0o775), SHARED_PATH).is_err());
        assert!(check(&meta(0o1777), SHARED_PATH).is_err());
        assert_eq!(check(&meta(0o1777), SHARED_DIR), Ok(()));
        assert!(check(&meta(0o777), SHARED_DIR).is_err());
    }

    #[test]
    fn the_first_free_name_is_made_and_a_hundred_taken_ones_give_up() {
        use std::io::{Error, ErrorKind};
        let taken = |upto: usize| {
            move |name: &str| {
                let n = name
                    .rsplit_once('-')
                    .map_or(0, |(_, n)| n.parse().unwrap_or(0));
                if name == "x" || n < upto {
                    Err(Error::from(ErrorKind::AlreadyExists))
                } else {
                    Ok(n)
                }
            }
        };
        let free = |_: &str| Ok(());
        assert_eq!(
            create_first_free("x", free).ok(),
            Some(("x".to_owned(), ()))
        );
        assert_eq!(
            create_first_free("x", taken(3)).ok(),
            Some(("x-3".to_owned(), 3))
        );
        let (last, e) = create_first_free("x", taken(1000)).unwrap_err();
        assert_eq!(
            (last.as_str(), e.kind()),
            ("x-99", ErrorKind::AlreadyExists)
        );
        let denied = |_: &str| Err::<(), _>(Error::from(ErrorKind::PermissionDenied));
        let (last, e) = create_first_free("x", denied).unwrap_err();
        assert_eq!(
            (last.as_str(), e.kind()),
            ("x", ErrorKind::PermissionDenied)
        );
    }
}
