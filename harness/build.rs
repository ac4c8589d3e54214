//! Builds the container payload as a static binary and hands its path to the crate (`SHIMCOMPAT_PAYLOAD`).
//! A nested cargo with an explicit `--target` keeps `+crt-static` off host artifacts (see shared/reference/host.md);
//! its own target dir keeps it clear of the outer build's lock.
use std::path::PathBuf;
use std::process::Command;

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let payload_dir = manifest_dir.join("../fixtures/payload");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let target_dir = out_dir.join("payload-target");
    let triple = "x86_64-unknown-linux-gnu";
    println!("cargo:rerun-if-changed={}", payload_dir.join("src").display());
    println!("cargo:rerun-if-changed={}", payload_dir.join("Cargo.toml").display());

    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--release", "--offline", "--target", triple, "--manifest-path"])
        .arg(payload_dir.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir)
        .env_remove("RUSTFLAGS")
        .env("CARGO_ENCODED_RUSTFLAGS", "-Ctarget-feature=+crt-static")
        .status()
        .expect("running cargo to build the payload");
    assert!(status.success(), "building the static payload failed");
    // The git revision the tool was built from, for reports ("unknown" outside a checkout).
    let revision = Command::new("git")
        .args(["describe", "--always", "--dirty", "--abbrev=12"])
        .current_dir(&manifest_dir)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=SHIMCOMPAT_GIT_REVISION={revision}");
    println!("cargo:rerun-if-changed={}", manifest_dir.join("../.git/HEAD").display());
    println!("cargo:rerun-if-changed={}", manifest_dir.join("../.git/logs/HEAD").display());
    let binary = target_dir.join(triple).join("release/payload");
    println!("cargo:rustc-env=SHIMCOMPAT_PAYLOAD={}", binary.display());
}
