//! SQLite's checkpoints, off the committer's path: a thread with a connection of its own copies
//! the write-ahead log into the database every [`EVERY`], without waiting for anyone (passive).
//!
//! By default the connection whose commit takes the log past 1,000 pages checkpoints there and
//! then: on the chat pipeline that is the committer, and the commit (with every submission in
//! it) waited for a few thousand page writes and an fsync of the database file. The committer
//! turns that off on its own connection (`DirectSqlite::without_checkpoints`) once this thread
//! runs. Pages written by several commits between two checkpoints are copied once.

use std::sync::mpsc;
use std::time::Duration;

/// How often the log is copied into the database.
const EVERY: Duration = Duration::from_millis(200);

/// The checkpointing thread; it checkpoints a last time and ends when this is dropped.
pub(super) struct Checkpointer {
    _stop: mpsc::Sender<()>,
}

impl Checkpointer {
    /// Starts the thread on SQLite; `None` on PostgreSQL or if it cannot start (the committer
    /// then keeps SQLite's automatic checkpoints).
    pub fn start(store: &store::Store) -> Option<Self> {
        let direct = match store.direct()? {
            Ok(direct) => direct,
            Err(error) => {
                tracing::warn!(%error, "checkpoints stay with the committer");
                return None;
            }
        };
        let (stop, stopped) = mpsc::channel::<()>();
        let spawned = std::thread::Builder::new()
            .name("sqlite-checkpoint".to_owned())
            .spawn(move || {
                loop {
                    let last = !matches!(
                        stopped.recv_timeout(EVERY),
                        Err(mpsc::RecvTimeoutError::Timeout)
                    );
                    if let Err(error) = direct.checkpoint() {
                        tracing::warn!(%error, "a checkpoint failed; the next one tries again");
                    }
                    if last {
                        break;
                    }
                }
            });
        match spawned {
            Ok(_) => Some(Self { _stop: stop }),
            Err(error) => {
                tracing::warn!(%error, "the checkpointing thread could not start");
                None
            }
        }
    }
}
