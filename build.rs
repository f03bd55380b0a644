//! Release builds on Linux link the code a submission runs into one
//! section (`link/hot-text.ld`, see scripts/hot-text): peak RSS falls by
//! the pages of code the kernel would otherwise map around it. The script
//! only adds a section (`INSERT BEFORE .text`), which lld and GNU ld
//! accept; a linker without linker-script support (mold) can opt out with
//! MAILHOP_HOT_TEXT=0.

fn main() {
    println!("cargo:rerun-if-changed=link/hot-text.ld");
    println!("cargo:rerun-if-env-changed=MAILHOP_HOT_TEXT");
    let linux = std::env::var("CARGO_CFG_TARGET_OS").is_ok_and(|os| os == "linux");
    let release = std::env::var("PROFILE").is_ok_and(|p| p == "release");
    let wanted = !std::env::var("MAILHOP_HOT_TEXT").is_ok_and(|v| v == "0");
    if linux && release && wanted {
        let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".into());
        println!("cargo:rustc-link-arg-bins=-Wl,-T,{dir}/link/hot-text.ld");
    }
}
