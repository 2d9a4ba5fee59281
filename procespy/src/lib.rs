//! procespy: a per-process memory guard for Linux.
//!
//! The data flows one way:
//! kernel events ([`ebpf`]) and `/proc` examinations ([`scan`]) feed the
//! process [`table`]; the [`daemon`] ties them together and answers the
//! [`control`] socket. `procespy ps` ([`ps`]) reads `/proc` once and prints.
#![warn(missing_docs)]

pub mod alerts;
pub mod app;
pub mod cli;
pub mod config;
pub mod control;
pub mod daemon;
pub mod ebpf;
pub mod enforce;
pub mod generate;
pub mod guard;
pub mod logging;
pub mod metrics;
pub mod output;
pub mod process;
pub mod ps;
pub mod rules;
pub mod scan;
pub mod status;
pub mod systemd;
pub mod table;
pub mod users;
