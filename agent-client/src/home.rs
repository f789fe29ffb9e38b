//! Your home as the password database has it, without NSS in `jitc` itself: a
//! static-pie `jitc` (packaging/build.sh) would load the system's NSS modules into a
//! static glibc, and some crash there (libnss_systemd, libnss_sss: a thread-local
//! access) or come from `LD_LIBRARY_PATH`. `getent`, a program of the system's own
//! glibc, asks NSS instead, with an empty environment; without it, `/etc/passwd` is read.

use std::path::PathBuf;
use std::process::{Command, Stdio};

/// The home the password database gives `uid`: `getent passwd UID` (LDAP, sssd,
/// systemd-homed and files alike), else `/etc/passwd`.
pub fn password_home(uid: u32) -> Option<PathBuf> {
    use std::io::Read;
    for getent in ["/usr/bin/getent", "/bin/getent"] {
        let Ok(mut child) = Command::new(getent)
            .args(["passwd", &uid.to_string()])
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
        else {
            continue;
        };
        let mut out = Vec::new();
        if let Some(stdout) = child.stdout.take() {
            let _ = stdout.take(64 << 10).read_to_end(&mut out);
        }
        // Exit 2: no such user; the answer is the same from /etc/passwd then.
        return match child.wait() {
            Ok(s) if s.success() => home_in_passwd(&out[..], uid),
            _ => None,
        };
    }
    let file = std::fs::File::open("/etc/passwd").ok()?;
    home_in_passwd(std::io::BufReader::new(file), uid)
}

/// The home field of `uid`'s first line in a passwd(5) file, a line at a time, as bytes
/// (another user's name may not be UTF-8). Lines glibc's `files` passes over (`#`, and
/// NIS's `+`/`-`) and lines longer than any passwd line are skipped.
fn home_in_passwd(r: impl std::io::BufRead, uid: u32) -> Option<PathBuf> {
    use std::io::BufRead;
    use std::os::unix::ffi::OsStrExt;
    let mut r = r.take(u64::MAX);
    let mut line = Vec::new();
    // Inside a line too long to hold, read a piece at a time up to its end.
    let mut skipping = false;
    loop {
        line.clear();
        r.set_limit(64 << 10);
        if matches!(r.read_until(b'\n', &mut line), Ok(0) | Err(_)) {
            return None;
        }
        let cut = line.last() != Some(&b'\n') && r.limit() == 0;
        if std::mem::replace(&mut skipping, cut) || cut {
            continue;
        }
        if matches!(line.first(), Some(b'#' | b'+' | b'-')) {
            continue;
        }
        let f: Vec<&[u8]> = line
            .strip_suffix(b"\n")
            .unwrap_or(&line)
            .split(|&b| b == b':')
            .collect();
        if f.len() == 7
            && std::str::from_utf8(f[2])
                .ok()
                .and_then(|s| s.parse::<u32>().ok())
                == Some(uid)
            && !f[5].is_empty()
        {
            return Some(PathBuf::from(std::ffi::OsStr::from_bytes(f[5])));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_home_of_a_uid_is_read_from_a_passwd_file() {
        let mut text = b"root:x:0:0:root:/root:/bin/bash\n\
                    # a comment\n\
                    #old:x:1002:1002::/home/old:/bin/sh\n\
                    +nis:x:1000:1000::/home/nis:/bin/sh\n\
                    broken:x:1000\n\
                    jos:x:999:999:Jos\xe9:/home/jos\xe9:/bin/sh\n"
            .to_vec();
        // A line longer than any passwd line, naming uid 1000: skipped whole.
        text.extend(b"long:x:1000:1000:");
        text.extend(vec![b'a'; 100 << 10]);
        text.extend(b":/home/long:/bin/sh\n");
        text.extend(
            b"dev:x:1000:1000:Dev,,,:/home/dev:/bin/zsh\n\
              dup:x:1000:1000::/home/dup:/bin/sh\n\
              nohome:x:1001:1001:::/bin/sh\n\
              last:x:1002:1002::/home/last:/bin/sh",
        );
        let home = |uid| home_in_passwd(&text[..], uid);
        use std::os::unix::ffi::OsStrExt;
        assert_eq!(home(0), Some(PathBuf::from("/root")));
        assert_eq!(
            home(999),
            Some(PathBuf::from(std::ffi::OsStr::from_bytes(b"/home/jos\xe9")))
        );
        assert_eq!(home(1000), Some(PathBuf::from("/home/dev")));
        assert_eq!(home(1001), None);
        assert_eq!(home(1002), Some(PathBuf::from("/home/last")));
        assert_eq!(home(4242), None);
    }
}
