//! Embeds the eBPF object built by `cargo xtask build-ebpf`.
//!
//! The object must exist and be newer than every source it is built from;
//! otherwise the build fails, so an old or missing object is never embedded.

use std::{
    env, fs,
    path::{Path, PathBuf},
    time::SystemTime,
};

fn main() {
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let workspace = manifest
        .parent()
        .expect("procespy lives in the workspace")
        .to_owned();
    let target = env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|dir| {
            if dir.is_absolute() {
                dir
            } else {
                workspace.join(dir)
            }
        })
        .unwrap_or_else(|| workspace.join("target"));
    let object = target.join("bpfel-unknown-none/release/procespy");
    let sources = [
        workspace.join("procespy-ebpf/src"),
        workspace.join("procespy-ebpf/Cargo.toml"),
        workspace.join("procespy-common/src"),
        workspace.join("procespy-common/Cargo.toml"),
    ];
    println!("cargo:rerun-if-changed={}", object.display());
    for source in &sources {
        println!("cargo:rerun-if-changed={}", source.display());
    }

    let built = match fs::metadata(&object).and_then(|m| m.modified()) {
        Ok(time) => time,
        Err(_) => fail(&format!(
            "the eBPF object {} does not exist",
            object.display()
        )),
    };
    let newest = sources
        .iter()
        .filter_map(|path| newest_mtime(path))
        .max()
        .unwrap_or(SystemTime::UNIX_EPOCH);
    if newest > built {
        fail(&format!(
            "the eBPF object {} is older than its sources",
            object.display()
        ));
    }
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("set by cargo"));
    fs::copy(&object, out.join("procespy.bpf.o")).expect("copy the eBPF object into OUT_DIR");
}

fn newest_mtime(path: &Path) -> Option<SystemTime> {
    let meta = fs::metadata(path).ok()?;
    if meta.is_file() {
        return meta.modified().ok();
    }
    fs::read_dir(path)
        .ok()?
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| newest_mtime(&entry.path()))
        .max()
}

fn fail(reason: &str) -> ! {
    eprintln!("error: {reason}.");
    eprintln!("Build it first with `cargo xtask build-ebpf` (or use `cargo xtask build`).");
    std::process::exit(1);
}
