//! `procespy top`: the processes, largest memory first, redrawn every
//! `--interval`, with the machine's CPU and memory over the last minutes,
//! the limits that cover them, and the daemon's last actions.
//!
//! A thread reads each [`model::Sample`] ([`sampler`]) and hands it to the
//! loop here, which feeds the [`model`] and has [`view`] draw it on the
//! [`screen`]. Keys reach the model between refreshes, so a slow daemon
//! never holds them up. It needs neither root nor the daemon: without
//! them the figures are `/proc`'s alone.

mod model;
mod sampler;
mod screen;
mod view;

use std::{
    io::IsTerminal,
    path::PathBuf,
    sync::mpsc::{self, Receiver, TryRecvError},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use crossterm::event::{self, Event};

use model::{Flow, Model, Sample};
use sampler::Sampler;
use screen::Screen;

/// The shortest refresh interval.
pub(crate) const MIN_INTERVAL: Duration = Duration::from_millis(100);
/// The widest trend drawn, in columns (refreshes).
const TREND_COLUMNS: usize = 120;
/// How long the loop waits for a key before it looks for a sample or a
/// stop signal again.
const TICK: Duration = Duration::from_millis(50);

/// What to show and how often.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Options {
    /// The time between two refreshes.
    pub(crate) interval: Duration,
    /// Show at most this many processes.
    pub(crate) top: Option<usize>,
    /// The configuration whose limits are shown when no daemon answers
    /// (`None`: `/etc/procespy.toml` when it exists).
    pub(crate) config: Option<PathBuf>,
    /// Also show each process's PSS, read at every refresh (`--pss`).
    pub(crate) pss: bool,
    /// The daemon's control socket.
    pub(crate) socket: PathBuf,
}

/// `procespy top`: draws until `q`, Ctrl-C, SIGINT, SIGTERM or SIGHUP, then
/// gives the terminal back as it was.
pub(crate) fn run(opts: &Options) -> Result<()> {
    if !std::io::stdout().is_terminal() {
        bail!(
            "procespy top draws on a terminal, and stdout is not one; `procespy ps` prints a table"
        );
    }
    let mut sampler = Sampler::new(opts)?;
    let first = sampler.sample()?;
    let samples = sample_every(sampler, opts.interval)?;
    screen::catch_stop_signals().context("cannot catch the stop signals")?;
    let mut screen = Screen::enter().context("cannot take the terminal")?;
    let mut model = Model::new(opts.interval, opts.top);
    model.update(first);
    loop {
        screen
            .draw(|frame| view::draw(frame, &model))
            .context("cannot draw")?;
        if next(&mut model, &samples)? == Flow::Quit {
            return Ok(());
        }
    }
}

/// Starts a thread that reads a sample every `interval` and sends it.
fn sample_every(mut sampler: Sampler, interval: Duration) -> Result<Receiver<Result<Sample>>> {
    let (send, samples) = mpsc::sync_channel(1);
    std::thread::Builder::new()
        .name("top-sampler".to_owned())
        .spawn(move || {
            let mut due = Instant::now();
            loop {
                due = (due + interval).max(Instant::now());
                std::thread::sleep(due.saturating_duration_since(Instant::now()));
                let sample = sampler.sample();
                let failed = sample.is_err();
                if send.send(sample).is_err() || failed {
                    return;
                }
            }
        })
        .context("cannot start the sampling thread")?;
    Ok(samples)
}

/// Waits for what changes the screen (a key, a resize, a sample) and takes
/// it in; or for a stop signal.
fn next(model: &mut Model, samples: &Receiver<Result<Sample>>) -> Result<Flow> {
    loop {
        if screen::stop_requested() {
            return Ok(Flow::Quit);
        }
        match samples.try_recv() {
            Ok(sample) => {
                model.update(sample?);
                return Ok(Flow::Redraw);
            }
            Err(TryRecvError::Empty) => {}
            Err(TryRecvError::Disconnected) => bail!("the sampling thread stopped"),
        }
        if event::poll(TICK).context("cannot read the terminal")? {
            match event::read().context("cannot read the terminal")? {
                Event::Key(key) => return Ok(model.key(key)),
                Event::Resize(..) => return Ok(Flow::Redraw),
                _ => {}
            }
        }
    }
}
