//! A process the integration tests drive: it grows, renames itself, ignores
//! SIGTERM, all on command.
//!
//! Commands, one per line on stdin; each is answered with one line on stdout:
//! - `grow MIB`: allocates and touches MIB more MiB of anonymous memory;
//!   answers `ok VMRSS_BYTES`.
//! - `rename NAME`: sets its name (the rest of the line, spaces included) with prctl(PR_SET_NAME); answers `ok`.
//! - `rename-hex HEX`: sets its name to the bytes HEX spells (`1b5b33316d52`:
//!   any bytes but NUL, UTF-8 or not) with prctl(PR_SET_NAME); answers `ok`.
//! - `rate MIB_PER_S MIB`: grows to MIB MiB at that rate, printing
//!   `progress BYTES NANOS` after each MiB; answers `ok VMRSS_BYTES`.
//! - `threads N MIB`: N threads together touch MIB more MiB as fast as they
//!   can, each printing `progress BYTES NANOS` (BYTES: the total touched by
//!   all threads) after each MiB it touched; answers `ok VMRSS_BYTES`.
//! - `reserve MIB`: maps MIB MiB of anonymous memory without touching it
//!   (for another process to fill through `/proc/PID/mem`); answers
//!   `ok ADDRESS` (decimal).
//! - `spin SECONDS`: keeps one CPU busy for SECONDS; answers `ok`.
//! - `share PATH MIB`: maps the first MIB MiB of the file PATH (created, and
//!   made that long, when shorter: a file of /dev/shm is shared memory)
//!   shared, and writes every page of it; answers `ok VMRSS_BYTES`. Test
//!   programs that share one file share its pages.
//! - `spawn EXE`: starts `EXE --pause` (another copy of the test program) in
//!   this process's group, its output going where this one's goes; answers
//!   `ok PID`.
//! - `rss`: answers `ok VMRSS_BYTES`.
//! - `exit`: exits 0.
//!
//! Options: `--ignore-term` ignores SIGTERM; `--report-term` prints
//! `term NANOS` (CLOCK_MONOTONIC) when SIGTERM arrives, then exits 143;
//! `--grow-rate MIB_PER_S --grow-to MIB` grows at that rate at once, printing
//! `progress BYTES NANOS` after each MiB (NANOS: CLOCK_MONOTONIC), then waits
//! for commands; `--own-group` makes it the leader of a process group of
//! its own; `--pause` waits for a signal and never reads a command;
//! `--breathe KIB` reads no commands and, every second forever, touches
//! KIB KiB more or gives them back (the benchmarks' processes whose RSS
//! keeps moving).

use std::io::{BufRead, Write};

use procespy_tests::monotonic_ns;

const MIB: usize = 1 << 20;

fn main() {
    let args: Vec<String> = std::env::args_os()
        .skip(1)
        .map(|arg| arg.to_string_lossy().into_owned())
        .collect();
    let mut rate = None;
    let mut target = 0usize;
    let mut breathe = None;
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        match arg.as_str() {
            "--report-term" => {
                // SAFETY: the handler only calls async-signal-safe functions.
                unsafe {
                    libc::signal(
                        libc::SIGTERM,
                        report_term as extern "C" fn(libc::c_int) as libc::sighandler_t,
                    )
                };
            }
            "--ignore-term" => {
                // SAFETY: installing SIG_IGN for SIGTERM.
                unsafe { libc::signal(libc::SIGTERM, libc::SIG_IGN) };
            }
            "--own-group" => {
                // SAFETY: setpgid(2) on this process.
                unsafe { libc::setpgid(0, 0) };
            }
            "--pause" => loop {
                // SAFETY: pause(2) only waits.
                unsafe { libc::pause() };
            },
            "--grow-rate" => rate = iter.next().and_then(|v| v.parse::<f64>().ok()),
            "--grow-to" => target = iter.next().and_then(|v| v.parse().ok()).unwrap_or(0),
            "--breathe" => breathe = iter.next().and_then(|v| v.parse::<usize>().ok()),
            // Whatever follows `--` only makes the command line (odd bytes, say).
            "--" => break,
            other => {
                eprintln!("procespy-testprog: unknown option {other}");
                std::process::exit(2);
            }
        }
    }
    let mut memory: Vec<Region> = Vec::new();
    let mut children: Vec<std::process::Child> = Vec::new();
    let stdout = std::io::stdout();
    if let Some(rate) = rate {
        grow_at_rate(&mut memory, rate, target);
    }
    if let Some(kib) = breathe {
        breathe_forever(kib << 10);
    }
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let mut words = line.split_whitespace();
        let reply = match (words.next(), words.next()) {
            (Some("grow"), Some(mib)) => match mib.parse::<usize>() {
                Ok(mib) => {
                    memory.push(Region::touched(mib * MIB));
                    format!("ok {}", vm_rss())
                }
                Err(_) => "error bad size".to_owned(),
            },
            (Some("rename"), Some(_)) => {
                let name = line
                    .trim_start()
                    .strip_prefix("rename ")
                    .unwrap_or_default();
                let name = std::ffi::CString::new(name).unwrap_or_default();
                // SAFETY: PR_SET_NAME reads a NUL-terminated string.
                unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr()) };
                "ok".to_owned()
            }
            (Some("rename-hex"), Some(hex)) => match unhex(hex) {
                Some(name) => {
                    let name = std::ffi::CString::new(name).unwrap_or_default();
                    // SAFETY: PR_SET_NAME reads a NUL-terminated string.
                    unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr()) };
                    "ok".to_owned()
                }
                None => "error bad hex".to_owned(),
            },
            (Some("rate"), Some(rate)) => {
                let target = words.next().and_then(|t| t.parse().ok()).unwrap_or(0);
                grow_at_rate(&mut memory, rate.parse().unwrap_or(1.0), target);
                format!("ok {}", vm_rss())
            }
            (Some("threads"), Some(threads)) => {
                let total = words.next().and_then(|t| t.parse().ok()).unwrap_or(0);
                grow_in_threads(threads.parse().unwrap_or(1), total);
                format!("ok {}", vm_rss())
            }
            (Some("reserve"), Some(mib)) => match mib.parse::<usize>() {
                Ok(mib) => {
                    let region = Region::untouched(mib * MIB);
                    let address = region.ptr as usize;
                    memory.push(region);
                    format!("ok {address}")
                }
                Err(_) => "error bad size".to_owned(),
            },
            (Some("spin"), Some(seconds)) => match seconds
                .parse()
                .ok()
                .and_then(|s| std::time::Duration::try_from_secs_f64(s).ok())
            {
                Some(time) => {
                    spin(time);
                    "ok".to_owned()
                }
                None => "error bad duration".to_owned(),
            },
            (Some("share"), Some(path)) => match words.next().map(str::parse::<usize>) {
                Some(Ok(mib)) => match Region::shared(path, mib * MIB) {
                    Ok(region) => {
                        memory.push(region);
                        format!("ok {}", vm_rss())
                    }
                    Err(err) => format!("error {path}: {err}"),
                },
                _ => "error bad size".to_owned(),
            },
            (Some("spawn"), Some(exe)) => match std::process::Command::new(exe)
                .arg("--pause")
                .stdin(std::process::Stdio::null())
                .spawn()
            {
                Ok(child) => {
                    let pid = child.id();
                    children.push(child);
                    format!("ok {pid}")
                }
                Err(err) => format!("error {exe}: {err}"),
            },
            (Some("rss"), None) => format!("ok {}", vm_rss()),
            (Some("exit"), None) => std::process::exit(0),
            _ => format!("error unknown command {line:?}"),
        };
        let mut out = stdout.lock();
        let _ = writeln!(out, "{reply}");
        let _ = out.flush();
    }
}

/// The bytes that `hex` (two digits a byte) spells.
fn unhex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Grows by one MiB at a time at `rate` MiB/s up to `target` MiB.
fn grow_at_rate(memory: &mut Vec<Region>, rate: f64, target: usize) {
    let start = std::time::Instant::now();
    let mut out = std::io::stdout().lock();
    for done in 1..=target {
        memory.push(Region::touched(MIB));
        let _ = writeln!(out, "progress {} {}", done * MIB, monotonic_ns());
        let _ = out.flush();
        let due = std::time::Duration::from_secs_f64(done as f64 / rate);
        if let Some(wait) = due.checked_sub(start.elapsed()) {
            std::thread::sleep(wait);
        }
    }
}

/// Every second, touches `len` more bytes or gives them back; never
/// returns. Processes started together spread over the second by PID.
fn breathe_forever(len: usize) -> ! {
    let phase = u64::from(std::process::id() % 1000);
    std::thread::sleep(std::time::Duration::from_millis(phase));
    loop {
        let region = Region::touched(len);
        std::thread::sleep(std::time::Duration::from_secs(1));
        drop(region);
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}

/// `threads` threads touch `total` MiB between them, one MiB at a time; the
/// memory stays mapped until the process ends.
fn grow_in_threads(threads: usize, total: usize) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let touched = AtomicUsize::new(0);
    let threads = threads.max(1);
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                while touched.load(Ordering::Relaxed) < total * MIB {
                    std::mem::forget(Region::touched(MIB));
                    let now = touched.fetch_add(MIB, Ordering::Relaxed) + MIB;
                    let mut out = std::io::stdout().lock();
                    let _ = writeln!(out, "progress {now} {}", monotonic_ns());
                    let _ = out.flush();
                }
            });
        }
    });
}

/// Keeps this thread on the CPU for `time`.
fn spin(time: std::time::Duration) {
    let start = std::time::Instant::now();
    while start.elapsed() < time {
        std::hint::spin_loop();
    }
}

/// SIGTERM handler: writes `term NANOS\n` with write(2) and exits.
extern "C" fn report_term(_: libc::c_int) {
    let mut line = *b"term 00000000000000000000\n";
    let mut ns = monotonic_ns();
    for slot in line[5..25].iter_mut().rev() {
        *slot = b'0' + (ns % 10) as u8;
        ns /= 10;
    }
    // SAFETY: write(2) and _exit(2) are async-signal-safe.
    unsafe {
        libc::write(1, line.as_ptr().cast(), line.len());
        libc::_exit(143);
    }
}

/// `VmRSS` of this process, in bytes (0 when unreadable).
fn vm_rss() -> u64 {
    procespy_tests::vm_rss(std::process::id()).unwrap_or(0)
}

/// A mapping (anonymous, or of a file) whose every page was written once.
struct Region {
    ptr: *mut libc::c_void,
    len: usize,
}

impl Region {
    fn touched(len: usize) -> Self {
        let region = Region::untouched(len);
        region.touch();
        region
    }

    /// The first `len` bytes of the file `path`, mapped shared, every page
    /// written.
    fn shared(path: &str, len: usize) -> std::io::Result<Self> {
        use std::os::fd::AsRawFd;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        if file.metadata()?.len() < len as u64 {
            file.set_len(len as u64)?;
        }
        // SAFETY: a shared mapping of a file this process opened; the
        // mapping outlives the descriptor.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let region = Region { ptr, len };
        region.touch();
        Ok(region)
    }

    fn touch(&self) {
        let bytes = self.ptr.cast::<u8>();
        for offset in (0..self.len).step_by(4096) {
            // SAFETY: inside the mapping.
            unsafe { bytes.add(offset).write_volatile(1) };
        }
    }

    fn untouched(len: usize) -> Self {
        // SAFETY: a fresh private anonymous mapping.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert!(ptr != libc::MAP_FAILED, "mmap of {len} bytes failed");
        Region { ptr, len }
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: unmapping what `touched` mapped.
        unsafe { libc::munmap(self.ptr, self.len) };
    }
}
