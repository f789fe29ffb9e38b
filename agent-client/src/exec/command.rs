//! Resolving the command a lease is for to the executable that will really run, the
//! way `execvp` would, so the agent judges exactly what is exec'd.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::unistd::{AccessFlags, access};

use crate::error::{Error, Result};

#[derive(Debug, Clone)]
pub struct Program {
    /// Absolute path of the executable.
    pub path: PathBuf,
    /// argv as the user gave it (argv[0] unchanged).
    pub argv: Vec<OsString>,
}

fn runnable(path: &Path) -> bool {
    path.is_file() && access(path, AccessFlags::X_OK).is_ok()
}

/// Finds `argv[0]` as execvp would: a name with a `/` is taken as a path, anything else
/// is searched for in `path_var`.
pub fn resolve(argv: Vec<OsString>, path_var: Option<&OsStr>, cwd: &Path) -> Result<Program> {
    let Some(first) = argv.first() else {
        return Err(Error::bad_input("no command given; put it after '--'"));
    };
    // Quoted as a shell would need it: a name with a newline or an escape sequence
    // cannot forge the rest of the error line.
    let shown = jitc_protocol::display::shell_quote(&first.to_string_lossy()).into_owned();
    if first.is_empty() {
        return Err(Error::bad_input("the command name is empty"));
    }
    let found = if first.as_bytes().contains(&b'/') {
        let p = cwd.join(first);
        if !p.exists() {
            return Err(Error::failure(format!(
                "command not found: {shown}; check the path"
            )));
        }
        if !runnable(&p) {
            return Err(Error::failure(format!(
                "{shown} is not an executable file; check its permissions"
            )));
        }
        p
    } else {
        let search = path_var
            .map(OsStr::to_owned)
            .unwrap_or_else(|| OsString::from("/usr/local/bin:/usr/bin:/bin"));
        std::env::split_paths(&search)
            .map(|dir| {
                let dir = if dir.as_os_str().is_empty() {
                    cwd.to_owned()
                } else {
                    cwd.join(dir)
                };
                dir.join(first)
            })
            .find(|p| runnable(p))
            .ok_or_else(|| {
                Error::failure(format!(
                    "command not found: {shown}; check the name and your PATH"
                ))
            })?
    };
    Ok(Program { path: found, argv })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_on_path_and_by_path() {
        let cwd = std::env::current_dir().unwrap();
        let p = resolve(
            vec!["sh".into(), "-c".into()],
            Some(OsStr::new("/nonexistent:/bin:/usr/bin")),
            &cwd,
        )
        .unwrap();
        assert!(p.path.is_absolute() && p.path.ends_with("sh"));
        assert_eq!(p.argv[0], "sh");
        let q = resolve(vec!["/bin/sh".into()], None, &cwd).unwrap();
        assert_eq!(q.path, PathBuf::from("/bin/sh"));
        assert!(
            resolve(
                vec!["no-such-command-xyz".into()],
                Some(OsStr::new("/bin")),
                &cwd
            )
            .is_err()
        );
        let t = tempfile::tempdir().unwrap();
        let plain = t.path().join("not-executable");
        std::fs::write(&plain, "x").unwrap();
        assert!(resolve(vec![plain.into()], None, &cwd).is_err());
        assert!(resolve(vec![], None, &cwd).is_err());
        let forged = resolve(vec!["x\njitc: lease granted\x1b[2K".into()], None, &cwd)
            .err()
            .unwrap()
            .to_string();
        assert!(
            forged.contains(r"$'x\njitc: lease granted\x1b[2K'"),
            "{forged}"
        );
    }
}
