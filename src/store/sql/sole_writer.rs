//! One server per SQLite file. A server counts buyers' caps and de-dupes callers in its own
//! memory, trusting that no one else routes calls on its database; a second `serve` on the
//! same file would count apart from it. So `serve` holds a lock for as long as it serves.
//!
//! The lock is the operating system's (`flock`) on a file beside the database,
//! `<database>.serve.lock`, which holds the server's process id: it dies with the process,
//! so a server killed with `kill -9` leaves no stale lock behind. It is not taken on the
//! database itself, whose locks are SQLite's (POSIX record locks on the file, and its `-wal`
//! and `-shm` files): where `flock` is emulated with record locks (NFS), one on the database
//! would collide with SQLite's own. The file is left in place when the lock is let go: removing
//! it would let a server lock a file that another has just removed.
//!
//! Only `serve` takes it. `migrate` and `import` may run beside a server (they change the
//! plan as the API does; the server hears of it).

use std::{
    fs::{File, OpenOptions, TryLockError},
    io::{Read, Seek, Write},
    path::{Path, PathBuf},
    sync::{Arc, Mutex, Weak},
};

use sqlx::AnyPool;

use super::Backend;
use crate::store::{SoleWriter, StoreError};

/// The database's file, and the lock on it this process holds, if it does.
#[derive(Debug, Default)]
pub(super) struct SoleWriterLock {
    /// `None` for a database with no file (in memory) or one that other nodes share.
    database: Option<PathBuf>,
    /// Held while any claim is: a process claims once however many times it asks.
    held: Mutex<Weak<File>>,
}

impl SoleWriterLock {
    /// For the database `pool` opens: SQLite's own name for its file (absolute, so that the
    /// same file reached by two paths is one lock).
    pub(super) async fn of(pool: &AnyPool, backend: Backend) -> Result<Self, StoreError> {
        if backend != Backend::Sqlite {
            return Ok(Self::default());
        }
        let databases: Vec<(i64, String, String)> =
            sqlx::query_as("PRAGMA database_list").fetch_all(pool).await?;
        let database = (databases.into_iter())
            .find(|(_, name, _)| name == "main")
            .map(|(_, _, file)| file)
            .filter(|file| !file.is_empty())
            .map(|file| std::fs::canonicalize(&file).unwrap_or_else(|_| PathBuf::from(file)));
        Ok(Self {
            database,
            held: Mutex::default(),
        })
    }

    pub(super) fn claim(&self) -> Result<Option<SoleWriter>, StoreError> {
        let Some(database) = &self.database else {
            return Ok(None);
        };
        let mut held = self.held.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(lock) = held.upgrade() {
            return Ok(Some(SoleWriter::holding(lock)));
        }
        let path = lock_path(database);
        let cannot = |source| StoreError::WriterLock {
            file: path.display().to_string(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(cannot)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(StoreError::WriterTaken {
                    database: database.display().to_string(),
                    holder: holder(&mut file),
                });
            }
            Err(TryLockError::Error(error)) => return Err(cannot(error)),
        }
        // Who holds it, for the message of a server refused.
        file.set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| writeln!(file, "{}", std::process::id()))
            .map_err(cannot)?;
        let lock = Arc::new(file);
        *held = Arc::downgrade(&lock);
        Ok(Some(SoleWriter::holding(lock)))
    }
}

fn lock_path(database: &Path) -> PathBuf {
    let mut name = database.as_os_str().to_owned();
    name.push(".serve.lock");
    PathBuf::from(name)
}

/// The process id the holder wrote, if it can be read.
fn holder(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}
