//! The gateway's own threads: MQTT connections run on a tokio runtime of their own, sized by
//! `mqtt.workers`, rather than on the host's runtime, whose workers the chat pipeline, the
//! database and the admin API share.
//!
//! Why (issue 22, BENCHMARKS.md): at a help desk's rates a publish wakes a handful of
//! subscriber tasks. On a runtime with a worker per core, the second task woken wakes a parked
//! worker, which finds little to do and parks again; a third of the gateway's CPU went to
//! threads waking each other. On a runtime of its own, sized to the load rather than to the
//! machine, a publish and its deliveries stay on one thread, as they do in Mosquitto.

use std::io;
use std::num::NonZeroUsize;

use tokio::runtime::{Handle, Runtime};
use tokio::sync::oneshot;

/// The gateway's runtime: one thread of its own running a single-threaded scheduler, or
/// several workers. Dropping it lets go without waiting: a broker may be dropped from within
/// another runtime (every test does), where waiting for threads is not allowed.
pub(crate) struct GatewayThreads {
    handle: Handle,
    kind: Kind,
}

enum Kind {
    /// The thread runs the runtime until this is dropped (or sent), then drops it there.
    Single(Option<oneshot::Sender<()>>),
    Several(Option<Runtime>),
}

impl GatewayThreads {
    /// Starts `workers` threads, or none when `workers` is 0 (connections then run on the
    /// runtime that serves the listener).
    pub(crate) fn start(workers: usize) -> io::Result<Option<Self>> {
        if workers == 0 {
            return Ok(None);
        }
        if workers > 1 {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(workers)
                .thread_name("mqtt-gateway")
                .enable_io()
                .enable_time()
                .build()?;
            return Ok(Some(Self {
                handle: runtime.handle().clone(),
                kind: Kind::Several(Some(runtime)),
            }));
        }
        // One thread: tokio's single-threaded scheduler, which hands tasks over without the
        // multi-threaded one's atomics and work-stealing bookkeeping (CPU per delivery).
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("mqtt-gateway".to_owned())
            .spawn(move || {
                let _ = runtime.block_on(stopped);
            })?;
        Ok(Some(Self {
            handle,
            kind: Kind::Single(Some(stop)),
        }))
    }

    pub(crate) fn handle(&self) -> &Handle {
        &self.handle
    }
}

impl Drop for GatewayThreads {
    fn drop(&mut self) {
        match &mut self.kind {
            // The thread returns from `block_on` and drops the runtime itself.
            Kind::Single(stop) => drop(stop.take()),
            Kind::Several(runtime) => {
                if let Some(runtime) = runtime.take() {
                    runtime.shutdown_background();
                }
            }
        }
    }
}

/// `mqtt.workers` when it is not set: half the machine's cores, rounded up. The other half is
/// left to the pipeline, the database and the admin API; a gateway that needs more is told so
/// (with more cores, the gateway's load is rarely the whole machine's).
pub fn default_workers(cores: Option<NonZeroUsize>) -> usize {
    cores.map_or(1, |cores| cores.get().div_ceil(2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gateway_takes_half_the_cores_and_at_least_one() {
        // cores (None: unknown) -> workers
        let table = [
            (None, 1),
            (Some(1), 1),
            (Some(2), 1),
            (Some(3), 2),
            (Some(4), 2),
            (Some(16), 8),
        ];
        for (cores, workers) in table {
            assert_eq!(
                default_workers(cores.and_then(NonZeroUsize::new)),
                workers,
                "{cores:?}"
            );
        }
    }

    #[test]
    fn no_workers_means_no_runtime() {
        assert!(GatewayThreads::start(0).unwrap().is_none());
    }

    #[tokio::test]
    async fn a_runtime_dropped_inside_another_does_not_panic() {
        for workers in [1, 2] {
            let threads = GatewayThreads::start(workers).unwrap().unwrap();
            let ran = threads.handle().spawn(async { 7 }).await.unwrap();
            assert_eq!(ran, 7);
            drop(threads);
        }
    }
}
