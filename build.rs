//! Release builds on Linux trim what a submission's code and start-up cost
//! in resident memory (the target is in scripts/bench):
//!
//! - The code a submission runs is linked into one section
//!   (`link/hot-text.ld`, see scripts/hot-text): peak RSS falls by the pages
//!   of code the kernel would otherwise map around it. The script only adds
//!   a section (`INSERT BEFORE .text`), which lld and GNU ld accept; a
//!   linker without linker-script support (mold) can opt out with
//!   MAILHOP_HOT_TEXT=0.
//! - Relative relocations are packed (`-z pack-relative-relocs`, DT_RELR):
//!   the dynamic loader reads about 300 KiB of them at every start
//!   otherwise. Such a binary needs glibc 2.36 or later, so this is done
//!   only when the glibc it is built against is that new (a binary built
//!   there needs that glibc's symbol versions anyway); MAILHOP_RELR=0 turns
//!   it off.

use std::env;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=link/hot-text.ld");
    println!("cargo:rerun-if-env-changed=MAILHOP_HOT_TEXT");
    println!("cargo:rerun-if-env-changed=MAILHOP_RELR");
    let linux = env::var("CARGO_CFG_TARGET_OS").is_ok_and(|os| os == "linux");
    let release = env::var("PROFILE").is_ok_and(|p| p == "release");
    if !(linux && release) {
        return;
    }
    if !env::var("MAILHOP_HOT_TEXT").is_ok_and(|v| v == "0") {
        let dir = env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".into());
        println!("cargo:rustc-link-arg-bins=-Wl,-T,{dir}/link/hot-text.ld");
    }
    if !env::var("MAILHOP_RELR").is_ok_and(|v| v == "0") && glibc_has_relr() {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}

/// Whether this is a native glibc build against glibc 2.36 or later, the
/// first whose loader applies DT_RELR. A cross build, or a glibc that
/// cannot be asked, keeps the ordinary relocations.
fn glibc_has_relr() -> bool {
    let native = env::var("HOST").ok() == env::var("TARGET").ok();
    let gnu = env::var("CARGO_CFG_TARGET_ENV").is_ok_and(|e| e == "gnu");
    if !(native && gnu) {
        return false;
    }
    let Ok(out) = Command::new("getconf").arg("GNU_LIBC_VERSION").output() else {
        return false;
    };
    // "glibc 2.36"
    let text = String::from_utf8_lossy(&out.stdout);
    let mut parts = text.trim().trim_start_matches("glibc ").split('.');
    let major: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    let minor: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    (major, minor) >= (2, 36)
}
