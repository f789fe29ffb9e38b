//! Links the unwinder statically into `jitc` (glibc targets): libgcc_s.so's constructor
//! probes the CPU with a dozen CPUID instructions, each a trap to the hypervisor on a
//! VM, at every start of every `jitc` — a tenth of a millisecond per `jitc exec` on
//! the machine this was measured on (BENCHMARKS.md). libgcc_eh.a is the same unwinder
//! without that constructor; with it linked whole, the linker's --as-needed drops
//! libgcc_s.so. Where the compiler has no libgcc_eh.a (not gcc), or when building for
//! another machine than this one (the host's archive would not fit the target), nothing
//! changes. Nor when `packaging/build.sh` links `jitc` static-pie (`JITC_STATIC_PIE`):
//! rustc then links libgcc_eh.a itself, and twice would be one definition too many.
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=CC");
    println!("cargo:rerun-if-env-changed=JITC_STATIC_PIE");
    let env = |k: &str| std::env::var(k).unwrap_or_default();
    if !env("JITC_STATIC_PIE").is_empty()
        || env("CARGO_CFG_TARGET_OS") != "linux"
        || env("CARGO_CFG_TARGET_ENV") != "gnu"
        || env("TARGET") != env("HOST")
        || env("CARGO_CFG_TARGET_FEATURE")
            .split(',')
            .any(|f| f == "crt-static")
    {
        return;
    }
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_owned());
    let Ok(out) = std::process::Command::new(cc)
        .arg("-print-file-name=libgcc_eh.a")
        .output()
    else {
        return;
    };
    let path = std::path::PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    if out.status.success() && path.is_absolute() && path.is_file() {
        // A compiler upgrade moves it (…/12/ → …/13/): look again then.
        println!("cargo:rerun-if-changed={}", path.display());
        println!(
            "cargo:rustc-link-arg-bins=-Wl,--push-state,--whole-archive,{},--pop-state",
            path.display()
        );
    }
}
