//! The eBPF object as built by `cargo xtask build-ebpf`: every program is
//! there, and no panicking path is (the verifier refuses the call such a
//! path leaves in a `.text.unlikely.*` section).

use std::process::Command;

use procespy_tests::{ebpf_object, run};

fn section_names() -> Vec<String> {
    let objdump = ["/usr/lib/llvm-22/bin/llvm-objdump", "llvm-objdump"]
        .into_iter()
        .find(|tool| {
            Command::new(tool)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .expect("llvm-objdump (package llvm-22, installed by `cargo xtask setup`)");
    run(Command::new(objdump).arg("-h").arg(ebpf_object()))
        .lines()
        .filter_map(|line| line.split_whitespace().nth(1).map(str::to_owned))
        .collect()
}

#[test]
fn the_object_has_no_panicking_paths() {
    let unlikely: Vec<_> = section_names()
        .into_iter()
        .filter(|s| s.starts_with(".text.unlikely"))
        .collect();
    assert!(
        unlikely.is_empty(),
        "panicking code in the eBPF object: {unlikely:?}"
    );
}

#[test]
fn the_object_holds_every_program_and_btf() {
    let sections = section_names();
    for wanted in [
        "tracepoint/sched/sched_process_exec",
        "tp_btf/sched_process_exit",
        "tracepoint/task/task_rename",
        "tp_btf/sched_process_fork",
        "tp_btf/rss_stat",
        ".BTF",
    ] {
        assert!(
            sections.iter().any(|s| s == wanted),
            "no section {wanted} in {sections:?}"
        );
    }
}
