//! Shared pieces of procespy's integration tests (the `integration` test
//! binary, `tests/tests/integration/`): what a test needs before it starts,
//! scratch directories, cgroups and swap, configurations, a running daemon, test programs to
//! drive, a terminal to drive programs that draw, and the real peers alerts
//! go to.
//!
//! Tests that need root and eBPF call [`require_root`]: under `CI=true` a
//! missing capability fails the test; elsewhere the test is skipped with a
//! printed reason. What it returns keeps other test runs off the machine
//! while the test runs (the `lock` module says why).

mod cgroup;
mod config;
mod daemon;
mod lock;
mod needs;
mod paths;
pub mod peers;
mod process;
mod run;
mod scratch;
mod swap;
mod testprog;
mod tmux;
mod watched;

pub use cgroup::TestCgroup;
pub use config::{Config, Limit};
pub use daemon::{Daemon, DaemonOptions, LogTo, status_process};
pub use lock::Machine;
pub use needs::{require, require_root, require_root_alone, runs};
pub use paths::{ebpf_object, keep_for_readme, procespy_bin, target_dir, workspace};
pub use process::{monotonic_ns, reset_vm_hwm, rss_file, run, signal, vm_hwm, vm_rss};
pub use run::{in_ci, in_guest, patience, poll};
pub use scratch::Scratch;
pub use swap::Swap;
pub use testprog::{TestProg, kill_one, progress};
pub use tmux::Tmux;
pub use watched::Watched;
