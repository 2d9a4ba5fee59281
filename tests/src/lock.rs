//! Locks on what the tests share with each other and with other test runs.
//!
//! Two test runs on one machine at once (two `cargo test`, or a test run
//! and `cargo xtask test-kernels`) would break each other: their daemons
//! match limits by name, the runs name their test programs alike, and so a
//! daemon of one run would stop the processes of the other. Both would
//! install and purge the package, and drive the same test user's session.
//! So the first test of a run that needs root takes the run lock, an
//! exclusive flock(2) that the test process keeps until it exits: the
//! root tests of another run wait for it.
//!
//! Within a run, tests share the machine ([`Machine`]) except one that
//! measures timings and wants it to itself, and a few take a [`Lock`] on
//! one thing they cannot share (the test user's desktop session).

use std::{
    fs::File,
    path::PathBuf,
    sync::{OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard},
};

use anyhow::{Context, Result};
use nix::fcntl::{Flock, FlockArg};

/// An exclusive flock(2) on `/run/lock/procespy-tests-NAME.lock`
/// (`/tmp/…` where `/run/lock` is missing, as in the kernel matrix's
/// guests), released on drop or when the process ends.
///
/// Each one opens the file anew, and flock(2) locks belong to an open file,
/// so two in one process exclude each other just as two processes do.
pub(crate) struct Lock {
    _file: Flock<File>,
}

impl Lock {
    /// Takes the lock `name`, waiting (and saying so) while someone else
    /// holds it.
    pub(crate) fn exclusive(name: &str) -> Result<Lock> {
        let dir = ["/run/lock", "/tmp"]
            .into_iter()
            .map(PathBuf::from)
            .find(|dir| dir.is_dir())
            .unwrap_or_else(std::env::temp_dir);
        let path = dir.join(format!("procespy-tests-{name}.lock"));
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        let file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(locked) => return Ok(Lock { _file: locked }),
            Err((file, nix::errno::Errno::EWOULDBLOCK)) => file,
            Err((_, errno)) => {
                return Err(errno).with_context(|| format!("locking {}", path.display()));
            }
        };
        eprintln!(
            "waiting for {}, held by another test or test run",
            path.display()
        );
        let locked = Flock::lock(file, FlockArg::LockExclusive)
            .map_err(|(_, errno)| errno)
            .with_context(|| format!("locking {}", path.display()))?;
        Ok(Lock { _file: locked })
    }
}

/// Takes the run lock for this process, once; it is held until the
/// process exits.
pub(crate) fn hold_the_run() {
    static RUN: OnceLock<Lock> = OnceLock::new();
    RUN.get_or_init(|| Lock::exclusive("run").expect("the run lock"));
}

/// Leave to use the machine, for as long as it is held: shared by the
/// tests of this run, or one test's alone.
pub struct Machine {
    _shared: Option<RwLockReadGuard<'static, ()>>,
    _alone: Option<RwLockWriteGuard<'static, ()>>,
}

/// Readers are the tests that share the machine; the writer has it alone.
static MACHINE: RwLock<()> = RwLock::new(());

impl Machine {
    /// Shares the machine with the other tests of this run.
    pub(crate) fn shared() -> Machine {
        Machine {
            _shared: Some(MACHINE.read().unwrap_or_else(|e| e.into_inner())),
            _alone: None,
        }
    }

    /// Waits until no other test of this run holds the machine, then keeps
    /// them off it. (std's lock on Linux lets no new reader in while a
    /// writer waits, so the wait ends.)
    pub(crate) fn alone() -> Machine {
        Machine {
            _shared: None,
            _alone: Some(MACHINE.write().unwrap_or_else(|e| e.into_inner())),
        }
    }
}
