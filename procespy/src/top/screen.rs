//! The terminal `top` draws on: taken (raw mode, the alternate screen, the
//! cursor hidden) and given back as it was on every way out: a return, a
//! panic, and SIGINT, SIGTERM or SIGHUP from outside (in raw mode Ctrl-C is
//! a key, which the model turns into a quit).

use std::{
    io::{self, Stdout},
    sync::{
        Once,
        atomic::{AtomicBool, Ordering},
    },
};

use crossterm::{
    cursor::{Hide, Show},
    execute,
    terminal::{EnterAlternateScreen, LeaveAlternateScreen, disable_raw_mode, enable_raw_mode},
};
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
use ratatui::{Frame, Terminal, backend::CrosstermBackend};

/// Set by a stop signal; the loop looks at it between keys.
static STOP: AtomicBool = AtomicBool::new(false);
/// Whether the terminal is taken: what [`give_back`] has to undo.
static TAKEN: AtomicBool = AtomicBool::new(false);

extern "C" fn request_stop(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

/// Has SIGINT, SIGTERM and SIGHUP ask the loop to stop ([`stop_requested`])
/// rather than end procespy with the terminal still taken.
pub(crate) fn catch_stop_signals() -> nix::Result<()> {
    let action = SigAction::new(
        SigHandler::Handler(request_stop),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for signal in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        // SAFETY: the handler only stores to an atomic, which is
        // async-signal-safe.
        unsafe { sigaction(signal, &action) }?;
    }
    Ok(())
}

/// Whether a stop signal came.
pub(crate) fn stop_requested() -> bool {
    STOP.load(Ordering::Relaxed)
}

/// The terminal, taken; given back on drop.
pub(crate) struct Screen {
    terminal: Terminal<CrosstermBackend<Stdout>>,
}

impl Screen {
    /// Takes the terminal on stdout. A panic from here on gives it back
    /// before its message is printed.
    pub(crate) fn enter() -> io::Result<Screen> {
        static HOOK: Once = Once::new();
        HOOK.call_once(|| {
            let report = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                give_back();
                report(info);
            }));
        });
        take()
            .and_then(|()| Terminal::new(CrosstermBackend::new(io::stdout())))
            .map(|terminal| Screen { terminal })
            .inspect_err(|_| give_back())
    }

    /// Draws one frame.
    pub(crate) fn draw(&mut self, draw: impl FnOnce(&mut Frame)) -> io::Result<()> {
        self.terminal.draw(draw).map(drop)
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        give_back();
    }
}

fn take() -> io::Result<()> {
    TAKEN.store(true, Ordering::SeqCst);
    enable_raw_mode()?;
    execute!(io::stdout(), EnterAlternateScreen, Hide)
}

/// Leaves raw mode and the alternate screen and shows the cursor, once
/// after [`take`]; nothing otherwise.
fn give_back() {
    if TAKEN.swap(false, Ordering::SeqCst) {
        let _ = disable_raw_mode();
        let _ = execute!(io::stdout(), LeaveAlternateScreen, Show);
    }
}
