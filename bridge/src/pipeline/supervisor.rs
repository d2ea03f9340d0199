//! The pipeline's supervisor: keeps one worker running until shutdown, restarting one that
//! ends or panics, and reports readiness.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::commands::{Commands, Intake};
use super::worker::Worker;
use super::{BridgeConfig, panic_message};
use crate::audit::AuditTrail;
use crate::pipeline::link::{BrokerLink, LinkSettings};

/// The chat pipeline: a supervisor that keeps one [`Worker`] running until shutdown.
pub struct Pipeline {
    /// True while connected and subscribed: submissions are being received.
    ready: watch::Sender<bool>,
    store: store::Store,
    audit: Arc<AuditTrail>,
    config: BridgeConfig,
    /// In-process submissions, kept across worker restarts.
    intake: Arc<Intake>,
    metrics: Option<Arc<telemetry::Metrics>>,
}

impl Pipeline {
    pub fn new(store: store::Store, audit: Arc<AuditTrail>, config: BridgeConfig) -> Self {
        Self {
            ready: watch::Sender::new(false),
            store,
            audit,
            config,
            intake: Arc::new(Intake::new()),
            metrics: None,
        }
    }

    /// Records what the pipeline does in `metrics` (submissions, latencies, batches, the queue).
    pub fn with_metrics(mut self, metrics: Arc<telemetry::Metrics>) -> Self {
        // Every refusal reason at 0, so that dashboards and alerts find the series before the
        // first refusal of its kind.
        for reason in schemas::wire::RejectReason::all() {
            let name = serde_json::to_value(reason).unwrap_or_default();
            if let Some(name) = name.as_str() {
                metrics.submissions_rejected.with_label_values(&[name]);
            }
        }
        metrics
            .queue_wait
            .with_label_values(&[super::decide::routing::ROUTER]);
        self.metrics = Some(metrics);
        self
    }

    /// A handle for submitting actions from inside the process (the admin API), decided with
    /// and in the same order as what arrives over MQTT. Commands wait while no worker runs.
    pub fn commands(&self) -> Commands {
        Commands::new(&self.intake)
    }

    /// Follows whether the pipeline is receiving submissions (connected and subscribed). Until it
    /// is, submissions published to the gateway wait there; `/readyz` reports it.
    pub fn readiness(&self) -> watch::Receiver<bool> {
        self.ready.subscribe()
    }

    /// Connects to the gateway and handles submissions until `shutdown` resolves. The link
    /// reconnects by itself (with a fresh token); a worker that ends or panics is logged,
    /// reported not ready and restarted with fresh caches and a fresh connection, whose session
    /// with the gateway gives it back every submission not yet decided.
    pub async fn run(self, link: BrokerLink, shutdown: impl Future<Output = ()>) {
        let link = Arc::new(link);
        let settings = LinkSettings {
            intake_window: self.config.intake_window,
            session_expiry: Duration::from_secs(self.config.link_session_expiry_secs),
            keep_alive: Duration::from_secs(self.config.link_keep_alive_secs),
        };
        let ready = self.ready.clone();
        supervise(ready, shutdown, |stop| {
            let worker = Worker::new(
                self.store.clone(),
                self.audit.clone(),
                self.config.clone(),
                self.ready.clone(),
                self.metrics.clone(),
            );
            worker.serve(link.clone(), settings, self.intake.clone(), stop)
        })
        .await;
    }
}

/// A worker's task, aborted if the supervisor is dropped before it ends: a pipeline whose
/// `run` was cancelled (its task aborted) must not leave its worker receiving.
struct Aborting<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for Aborting<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs what `start` makes until `shutdown`, starting it again (after a growing pause) whenever
/// it ends or panics; `ready` is false in between. `start` gets a receiver that turns true when
/// it is time to stop.
async fn supervise<F, Fut>(
    ready: watch::Sender<bool>,
    shutdown: impl Future<Output = ()>,
    mut start: F,
) where
    F: FnMut(watch::Receiver<bool>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    const FIRST_PAUSE: Duration = Duration::from_millis(100);
    let mut shutdown = std::pin::pin!(shutdown);
    let (stop, stopping) = watch::channel(false);
    let mut pause = FIRST_PAUSE;
    loop {
        let started = tokio::time::Instant::now();
        let mut task = Aborting(tokio::spawn(start(stopping.clone())));
        let ended = tokio::select! {
            ended = &mut task.0 => ended,
            _ = shutdown.as_mut() => {
                stop.send_replace(true);
                let _ = (&mut task.0).await;
                ready.send_replace(false);
                return;
            }
        };
        ready.send_replace(false);
        match ended {
            Ok(()) => tracing::error!("the chat pipeline stopped; restarting it"),
            Err(err) => match err.try_into_panic() {
                Ok(panic) => {
                    let message = panic_message(&*panic);
                    tracing::error!(panic = %message, "the chat pipeline panicked; restarting it");
                }
                Err(_) => tracing::error!("the chat pipeline was cancelled; restarting it"),
            },
        }
        // A worker that ran for a while gets a quick restart; one that keeps failing, less often.
        if started.elapsed() > Duration::from_secs(60) {
            pause = FIRST_PAUSE;
        }
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = shutdown.as_mut() => return,
        }
        pause = (pause * 2).min(Duration::from_secs(30));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A worker that panics or ends is restarted, and readiness is false in between.
    #[tokio::test(start_paused = true)]
    async fn a_failed_worker_is_restarted_and_reported_not_ready() {
        let ready = watch::Sender::new(false);
        // What each start found: whether the supervisor had reported not ready by then.
        let found = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (shutdown_tx, shutdown_rx) = tokio::sync::oneshot::channel::<()>();
        let supervisor = tokio::spawn({
            let (ready, found) = (ready.clone(), found.clone());
            async move {
                supervise(
                    ready.clone(),
                    async move {
                        let _ = shutdown_rx.await;
                    },
                    move |mut stop| {
                        let ready = ready.clone();
                        let n = {
                            let mut found = found.lock().unwrap();
                            found.push(*ready.borrow());
                            found.len()
                        };
                        async move {
                            ready.send_replace(true);
                            match n {
                                1 => panic!("the first worker fails"),
                                2 => {}
                                _ => {
                                    let _ = stop.changed().await;
                                }
                            }
                        }
                    },
                )
                .await
            }
        });
        // The first worker panics, the second ends, the third keeps running.
        while found.lock().unwrap().len() < 3 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(*found.lock().unwrap(), [false, false, false]);
        assert!(*ready.borrow(), "the third worker is running");
        shutdown_tx.send(()).unwrap();
        supervisor.await.unwrap();
        assert!(!*ready.borrow(), "not ready once stopped");
        assert_eq!(found.lock().unwrap().len(), 3, "no restart after shutdown");
    }

    /// A supervisor whose task is aborted takes its worker with it: no worker of a cancelled
    /// pipeline goes on receiving beside the next one.
    #[tokio::test(start_paused = true)]
    async fn an_aborted_supervisor_leaves_no_worker_running() {
        let ready = watch::Sender::new(false);
        let (alive, gone) = tokio::sync::oneshot::channel::<()>();
        let alive = Arc::new(std::sync::Mutex::new(Some(alive)));
        let supervisor = tokio::spawn(supervise(ready.clone(), std::future::pending(), {
            let ready = ready.clone();
            move |_stop| {
                // Held by the worker for as long as it runs.
                let alive = alive.lock().unwrap().take();
                let ready = ready.clone();
                async move {
                    let _alive = alive;
                    ready.send_replace(true);
                    std::future::pending::<()>().await;
                }
            }
        }));
        ready.subscribe().wait_for(|ready| *ready).await.unwrap();
        supervisor.abort();
        let _ = supervisor.await;
        tokio::time::timeout(Duration::from_secs(1), gone)
            .await
            .expect("the worker ended with its supervisor")
            .expect_err("dropped, not sent");
    }
}
