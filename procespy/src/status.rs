//! What `procespy status` shows: built by the daemon as JSON, rendered as
//! text by the client.

use std::{path::Path, time::Duration};

use serde_json::{Value, json};

use crate::{ebpf::Kernel, guard::Guard, table::Table};

/// Everything the status is made of.
pub struct Inputs<'a> {
    /// `"ebpf"` or `"proc"`.
    pub mode: &'a str,
    /// Why that mode.
    pub mode_reason: &'a str,
    /// Time since the daemon started.
    pub uptime: Duration,
    /// The configuration file, or `None` for the built-in default.
    pub config_path: Option<&'a Path>,
    /// The process table.
    pub table: &'a Table,
    /// The kernel side, in eBPF mode.
    pub kernel: Option<&'a Kernel>,
    /// The covered processes and the actions.
    pub guard: &'a Guard,
    /// Examinations merged so far.
    pub examinations: u64,
    /// Duration of the last examination.
    pub last_examination: Option<Duration>,
    /// Alerts not delivered yet (see [`crate::alerts::Alerts::queued`]).
    pub alerts_queued: usize,
}

/// Builds the status document. Watched processes are listed largest first;
/// their RSS comes from the kernel's map where the kernel follows them.
pub fn build(inputs: &Inputs<'_>) -> Value {
    let actions: Vec<_> = inputs.guard.actions().rev().take(20).collect();
    json!({
        "pid": std::process::id(),
        "mode": inputs.mode,
        "mode_reason": inputs.mode_reason,
        "uptime_secs": inputs.uptime.as_secs_f64(),
        "config": inputs.config_path.map(|p| p.display().to_string()),
        "limits": inputs.guard.config().limits.len(),
        "table_size": inputs.table.len(),
        "examinations": inputs.examinations,
        "last_examination_ms": inputs.last_examination.map(|d| d.as_secs_f64() * 1000.0),
        "lost_events": inputs.kernel.map(Kernel::lost_events),
        "kernel": inputs.kernel.map(Kernel::info),
        "processes": inputs.guard.watched_status(inputs.table, inputs.kernel),
        "actions": actions,
        "alerts_queued": inputs.alerts_queued,
    })
}

/// Renders the status document for a terminal.
pub fn render_text(status: &Value) -> String {
    let mut out = String::new();
    let config = status["config"].as_str().unwrap_or("built-in default");
    out.push_str(&format!(
        "mode:     {} ({})\nuptime:   {:.0} s\nconfig:   {config}\n",
        status["mode"].as_str().unwrap_or("?"),
        status["mode_reason"].as_str().unwrap_or(""),
        status["uptime_secs"].as_f64().unwrap_or(0.0),
    ));
    if let Some(kernel) = status["kernel"].as_object() {
        let batched = if kernel["batched"] == Value::Bool(true) {
            ", per-thread batches of 64 faults"
        } else {
            ""
        };
        out.push_str(&format!(
            "kernel:   {} (RSS counters: {}{batched}; group exit: {})\n",
            kernel["release"].as_str().unwrap_or("?"),
            kernel["counters"].as_str().unwrap_or("?"),
            kernel["group_exit"].as_str().unwrap_or("?"),
        ));
    }
    if let Some(lost) = status["lost_events"].as_u64() {
        out.push_str(&format!("lost events: {lost}\n"));
    }
    if let Some(queued) = status["alerts_queued"].as_u64() {
        out.push_str(&format!("alerts:   {queued} queued\n"));
    }
    let processes = status["processes"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    out.push_str(&format!("watched:  {} processes\n", processes.len()));
    for process in processes.iter().take(10) {
        out.push_str(&format!(
            "  {:>7}  {:<16} {:>12} bytes\n",
            process["pid"],
            process["name"].as_str().unwrap_or("?"),
            process["rss_bytes"],
        ));
    }
    out
}
