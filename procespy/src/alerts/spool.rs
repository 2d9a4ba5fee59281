//! The outbox: every email is written here before it is sent, and removed
//! only once the SMTP server accepted it, so that neither an outage nor a
//! restart loses one.
//!
//! One file per message, `NANOS-PID-SEQ.json` (so that names sort in the
//! order the messages were made), holding the envelope and the whole RFC 5322
//! message. Files are written to a hidden temporary name, synced, and renamed
//! into place, mode 0600; the directory is made 0700 when missing. Messages
//! the server refused for good are moved to `rejected/` beside them.

use std::{
    fs::{self, File, OpenOptions},
    io::{self, Write},
    os::unix::fs::{DirBuilderExt, OpenOptionsExt},
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};

/// Where refused messages go, under the spool directory.
pub(crate) const REJECTED: &str = "rejected";

/// One message, as stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Mail {
    /// When it was made, seconds since the epoch.
    pub(crate) created: f64,
    /// Envelope sender.
    pub(crate) from: String,
    /// Envelope recipients.
    pub(crate) to: Vec<String>,
    /// The subject, for the logs.
    pub(crate) subject: String,
    /// The Message-ID, for the logs.
    pub(crate) message_id: String,
    /// The whole message, headers and body (RFC 5322, 7-bit).
    pub(crate) message: String,
}

/// The spool directory.
#[derive(Debug)]
pub(crate) struct Spool {
    dir: PathBuf,
    seq: u64,
}

impl Spool {
    /// Opens `dir`, creating it (and its parents) with mode 0700 when missing.
    pub(crate) fn open(dir: &Path) -> io::Result<Spool> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        if !dir.is_dir() {
            return Err(io::Error::other(format!(
                "{} is not a directory",
                dir.display()
            )));
        }
        Ok(Spool {
            dir: dir.to_owned(),
            seq: 0,
        })
    }

    /// Writes `mail` as a new file and returns its path. The file appears
    /// whole or not at all.
    pub(crate) fn write(&mut self, mail: &Mail) -> io::Result<PathBuf> {
        self.seq += 1;
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let name = format!("{nanos:020}-{}-{:06}.json", std::process::id(), self.seq);
        let path = self.dir.join(&name);
        let temp = self.dir.join(format!(".{name}.tmp"));
        let text = serde_json::to_vec_pretty(mail).map_err(io::Error::other)?;
        let result = (|| {
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&temp)?;
            file.write_all(&text)?;
            file.sync_all()?;
            fs::rename(&temp, &path)?;
            sync_dir(&self.dir)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&temp);
        }
        result.map(|()| path)
    }

    /// The messages waiting, oldest first (hidden and temporary files and
    /// the `rejected/` directory are not listed).
    pub(crate) fn list(&self) -> io::Result<Vec<PathBuf>> {
        let mut paths: Vec<PathBuf> = fs::read_dir(&self.dir)?
            .filter_map(Result::ok)
            .filter(|entry| {
                let name = entry.file_name();
                let name = name.to_string_lossy();
                !name.starts_with('.')
                    && name.ends_with(".json")
                    && entry.file_type().is_ok_and(|t| t.is_file())
            })
            .map(|entry| entry.path())
            .collect();
        paths.sort();
        Ok(paths)
    }

    /// Reads one message.
    pub(crate) fn read(path: &Path) -> io::Result<Mail> {
        let text = fs::read(path)?;
        serde_json::from_slice(&text).map_err(|err| io::Error::new(io::ErrorKind::InvalidData, err))
    }

    /// Removes a message the server accepted.
    pub(crate) fn remove(path: &Path) -> io::Result<()> {
        fs::remove_file(path)?;
        if let Some(dir) = path.parent() {
            sync_dir(dir)?;
        }
        Ok(())
    }

    /// Moves a message out of the way into `rejected/` (refused for good,
    /// or unreadable); returns where it went.
    pub(crate) fn reject(&self, path: &Path) -> io::Result<PathBuf> {
        let dir = self.dir.join(REJECTED);
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)?;
        let target = dir.join(path.file_name().unwrap_or_default());
        fs::rename(path, &target)?;
        sync_dir(&self.dir)?;
        Ok(target)
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    struct TempDir(PathBuf);

    impl TempDir {
        fn new(label: &str) -> TempDir {
            let path =
                std::env::temp_dir().join(format!("procespy-spool-{label}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&path);
            TempDir(path)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn mail(subject: &str) -> Mail {
        Mail {
            created: 1.5,
            from: "procespy@example.com".into(),
            to: vec!["ops@example.com".into()],
            subject: subject.into(),
            message_id: format!("<{subject}@example.com>"),
            message: format!("Subject: {subject}\r\n\r\nbody\r\n"),
        }
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn the_directory_is_made_private_and_files_are_0600() {
        let temp = TempDir::new("modes");
        let dir = temp.0.join("outbox");
        let mut spool = Spool::open(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        let path = spool.write(&mail("a")).unwrap();
        assert_eq!(mode(&path), 0o600);
        assert_eq!(Spool::read(&path).unwrap(), mail("a"));
    }

    #[test]
    fn messages_are_listed_in_the_order_written_and_removed() {
        let temp = TempDir::new("order");
        let mut spool = Spool::open(&temp.0).unwrap();
        let written: Vec<PathBuf> = ["a", "b", "c"]
            .iter()
            .map(|s| spool.write(&mail(s)).unwrap())
            .collect();
        // Leftovers of an interrupted write are not messages.
        fs::write(temp.0.join(".x.json.tmp"), "{").unwrap();
        assert_eq!(spool.list().unwrap(), written);
        Spool::remove(&written[1]).unwrap();
        assert_eq!(
            spool.list().unwrap(),
            [written[0].clone(), written[2].clone()]
        );
        // A second spool on the same directory (after a restart) sees them.
        let again = Spool::open(&temp.0).unwrap();
        let subjects: Vec<String> = again
            .list()
            .unwrap()
            .iter()
            .map(|p| Spool::read(p).unwrap().subject)
            .collect();
        assert_eq!(subjects, ["a", "c"]);
    }

    #[test]
    fn rejected_messages_leave_the_queue_but_are_kept() {
        let temp = TempDir::new("reject");
        let mut spool = Spool::open(&temp.0).unwrap();
        let path = spool.write(&mail("bad")).unwrap();
        let moved = spool.reject(&path).unwrap();
        assert!(spool.list().unwrap().is_empty());
        assert_eq!(Spool::read(&moved).unwrap().subject, "bad");
    }

    #[test]
    fn a_corrupt_file_is_an_error_not_a_panic() {
        let temp = TempDir::new("corrupt");
        let spool = Spool::open(&temp.0).unwrap();
        fs::write(temp.0.join("1.json"), "not json").unwrap();
        let listed = spool.list().unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(
            Spool::read(&listed[0]).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
    }

    #[test]
    fn a_file_in_the_way_of_the_directory_is_an_error() {
        let temp = TempDir::new("file");
        fs::create_dir_all(&temp.0).unwrap();
        let file = temp.0.join("outbox");
        fs::write(&file, "").unwrap();
        assert!(Spool::open(&file).is_err());
    }
}
