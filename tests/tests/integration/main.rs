//! procespy's integration tests, one binary: real eBPF, real processes,
//! real peers. Each module was once a test binary of its own; the helpers
//! they share are the `procespy_tests` library.

mod alerts;
mod control;
mod enforce;
mod history;
mod hostile;
mod limits;
mod modes;
mod object;
mod ps;
mod service;
mod top;
mod tracking;
