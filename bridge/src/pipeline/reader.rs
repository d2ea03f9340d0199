//! The decider's reads on SQLite, on a thread of their own with a connection of their own
//! (`store::DirectSqlite`): one hand-off there and one back per read, however many statements
//! it runs, and none of it on the server's runtime. Through the pool, each statement was a
//! hand-off to the driver's worker thread and each answer a wake-up of a runtime task.
//!
//! The write-ahead log lets these reads run while the committer writes; they see what is
//! committed, and the decider counts what is not yet (`Pending`) itself.

use tokio::sync::oneshot;

use super::PipelineError;

type Job = Box<dyn FnOnce(&store::DirectSqlite) + Send>;

/// A handle on the reading thread; the thread ends when the handle is dropped.
pub(crate) struct Reader {
    jobs: std::sync::mpsc::Sender<Job>,
}

impl Reader {
    /// Starts the thread on SQLite; `None` on PostgreSQL, or if the connection cannot be
    /// opened (the decider then reads through the pool).
    pub fn start(store: &store::Store) -> Option<Self> {
        let direct = match store.direct()? {
            Ok(direct) => direct,
            Err(error) => {
                tracing::warn!(%error, "the decider reads through the database pool");
                return None;
            }
        };
        let (jobs, queue) = std::sync::mpsc::channel::<Job>();
        let spawned = std::thread::Builder::new()
            .name("pipeline-read".to_owned())
            .spawn(move || {
                while let Ok(job) = queue.recv() {
                    job(&direct);
                }
            });
        match spawned {
            Ok(_) => Some(Self { jobs }),
            Err(error) => {
                tracing::warn!(%error, "the decider's reading thread could not start");
                None
            }
        }
    }

    /// Runs `read` on the reading thread and returns what it returned.
    pub async fn run<T: Send + 'static>(
        &self,
        read: impl FnOnce(&store::DirectSqlite) -> Result<T, PipelineError> + Send + 'static,
    ) -> Result<T, PipelineError> {
        let (answer, answered) = oneshot::channel();
        let job: Job = Box::new(move |direct| {
            // A read that panics must not take the thread (and every later read) with it.
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| read(direct)))
                .unwrap_or_else(|panic| {
                    Err(PipelineError::Panicked(super::panic_message(&*panic)))
                });
            let _ = answer.send(result);
        });
        self.jobs
            .send(job)
            .map_err(|_| PipelineError::Inconsistent("the reading thread ended"))?;
        answered
            .await
            .map_err(|_| PipelineError::Inconsistent("the reading thread ended"))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reads_run_on_their_thread_and_a_panic_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let config = store::DatabaseConfig {
            url: format!("sqlite://{}", dir.path().join("r.db").display()),
            ..store::DatabaseConfig::default()
        };
        let store = store::Store::open(&config).await.unwrap();
        let reader = Reader::start(&store).expect("SQLite has a reading thread");
        let name = reader
            .run(|_| Ok(std::thread::current().name().map(str::to_owned)))
            .await
            .unwrap();
        assert_eq!(name.as_deref(), Some("pipeline-read"));
        let head = reader
            .run(|db| Ok(db.query_text("SELECT mac FROM audit_head WHERE id = 1")?))
            .await
            .unwrap();
        assert_eq!(head, Some(String::new()));
        let panicked = reader.run(|_| -> Result<(), _> { panic!("boom") }).await;
        assert!(matches!(panicked, Err(PipelineError::Panicked(m)) if m == "boom"));
        // The thread survived it.
        assert!(reader.run(|_| Ok(1)).await.is_ok());
        store.close().await;
    }
}
