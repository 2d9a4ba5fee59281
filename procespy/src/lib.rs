//! procespy: a per-process memory guard for Linux.
//!
//! The data flows one way:
//! kernel events ([`ebpf`]) and `/proc` examinations ([`scan`]) feed the
//! process [`table`]; the [`guard`] matches processes to limits ([`rules`])
//! and decides, acting through its system boundary; [`action`] records go
//! to the [`alerts`] and [`metrics`]; the [`daemon`] ties them together and
//! answers the [`control`] socket with a [`report`]. `procespy ps` ([`ps`])
//! reads `/proc` once and prints; `procespy top` ([`top`]) reads it at
//! every refresh and draws, with what the daemon adds. [`app`] alone knows the command line
//! ([`cli`]) and the exit codes.
//!
//! The crate's public face is [`main`] and the [`report`] types (which the
//! integration tests read); everything else is the crate's own.
#![warn(missing_docs)]

mod action;
mod alerts;
mod app;
mod chart;
mod cli;
mod config;
mod control;
mod daemon;
mod ebpf;
mod generate;
mod guard;
mod history;
mod logging;
mod metrics;
mod output;
mod process;
mod ps;
pub mod report;
mod rules;
mod scan;
mod sys;
mod table;
mod text;
mod top;
mod users;

pub use app::main;
