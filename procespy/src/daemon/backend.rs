//! How the daemon follows processes: eBPF programs, or `/proc` polling.

use anyhow::{Result, anyhow};

use crate::{
    config::Mode,
    ebpf::{self, EventStream, Kernel, events::KernelEvent},
    guard::KernelWatch,
    sys::Pidfd,
};

/// The way processes are followed, and what it holds.
pub(crate) enum Backend {
    /// eBPF programs are attached.
    Ebpf {
        /// The programs and maps (boxed: they are large, and live as long as the daemon).
        kernel: Box<Kernel>,
        /// Their events.
        events: Box<EventStream>,
    },
    /// `/proc` is polled at the scan interval.
    Proc {
        /// Why eBPF is not in use.
        reason: String,
    },
}

impl Backend {
    /// Starts the backend `mode` asks for: with `auto`, eBPF where it loads
    /// and polling (with one warning saying why) where it does not.
    pub(crate) fn start(mode: Mode) -> Result<Backend> {
        let reason = match mode {
            Mode::Proc => "mode = \"proc\" was asked for".to_owned(),
            Mode::Ebpf | Mode::Auto => match ebpf::load() {
                Ok((kernel, events)) => {
                    return Ok(Backend::Ebpf {
                        kernel: Box::new(kernel),
                        events: Box::new(events),
                    });
                }
                Err(err) if mode == Mode::Ebpf => {
                    return Err(anyhow!(
                        "mode = \"ebpf\", but the eBPF programs cannot be loaded: {err:#}"
                    ));
                }
                Err(err) => {
                    let reason = format!("eBPF cannot be loaded: {err:#}");
                    tracing::warn!("{reason}; polling /proc instead");
                    reason
                }
            },
        };
        Ok(Backend::Proc { reason })
    }

    /// The mode in use: [`Mode::Ebpf`] or [`Mode::Proc`].
    pub(crate) fn mode(&self) -> Mode {
        match self {
            Backend::Ebpf { .. } => Mode::Ebpf,
            Backend::Proc { .. } => Mode::Proc,
        }
    }

    /// Why this mode.
    pub(crate) fn reason(&self) -> String {
        match self {
            Backend::Ebpf { .. } => "the eBPF programs are attached".to_owned(),
            Backend::Proc { reason } => reason.clone(),
        }
    }

    /// The kernel side, in eBPF mode.
    pub(crate) fn kernel(&self) -> Option<&Kernel> {
        match self {
            Backend::Ebpf { kernel, .. } => Some(kernel.as_ref()),
            Backend::Proc { .. } => None,
        }
    }

    /// The kernel side as the guard sees it, in eBPF mode.
    pub(crate) fn watch(&mut self) -> Option<&mut (dyn KernelWatch<Pidfd> + 'static)> {
        match self {
            Backend::Ebpf { kernel, .. } => Some(kernel.as_mut()),
            Backend::Proc { .. } => None,
        }
    }

    /// The kernel side as the guard reads it, in eBPF mode.
    pub(crate) fn watch_ref(&self) -> Option<&(dyn KernelWatch<Pidfd> + 'static)> {
        match self {
            Backend::Ebpf { kernel, .. } => Some(kernel.as_ref()),
            Backend::Proc { .. } => None,
        }
    }

    /// Appends the kernel events already waiting to `batch`, without
    /// waiting; none in proc mode.
    pub(crate) fn pending_events(&mut self, batch: &mut Vec<KernelEvent>) {
        if let Backend::Ebpf { events, .. } = self {
            events.pending(batch);
        }
    }

    /// Waits for the next batch of kernel events; never ready in proc mode.
    pub(crate) async fn next_events(&mut self, batch: &mut Vec<KernelEvent>) -> Result<()> {
        match self {
            Backend::Ebpf { events, .. } => events.next_batch(batch).await,
            Backend::Proc { .. } => std::future::pending().await,
        }
    }
}
