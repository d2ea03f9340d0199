//! A TCP relay a test puts between two parts of the system (the pipeline and the gateway, the
//! server and PostgreSQL) to break the network between them the way real networks break.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

/// Forwards every connection made to [`Relay::addr`] to `upstream`.
pub struct Relay {
    addr: SocketAddr,
    cut: Arc<Notify>,
    down: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    pub async fn start(upstream: SocketAddr) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let cut = Arc::new(Notify::new());
        let down = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn({
            let (cut, down) = (cut.clone(), down.clone());
            async move {
                while let Ok((mut inbound, _)) = listener.accept().await {
                    let cut = cut.clone();
                    if down.load(Ordering::SeqCst) {
                        // Never answered: the client waits for its own timeout.
                        tokio::spawn(async move {
                            cut.notified().await;
                            drop(inbound);
                        });
                        continue;
                    }
                    tokio::spawn(async move {
                        let Ok(mut outbound) = TcpStream::connect(upstream).await else {
                            return;
                        };
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                            _ = cut.notified() => {}
                        }
                    });
                }
            }
        });
        Ok(Self {
            addr,
            cut,
            down,
            task,
        })
    }

    /// Where clients connect instead of `upstream`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Drops every connection through the relay at once, as a network failure would; new
    /// connections go through.
    pub fn cut(&self) {
        self.cut.notify_waiters();
    }

    /// Drops every connection, and until [`Relay::restore`] leaves new ones unanswered, as an
    /// unreachable host or a server that hangs while it restarts does: a client waits for its
    /// own timeout, the slowest way for a connection to fail.
    pub fn take_down(&self) {
        self.down.store(true, Ordering::SeqCst);
        self.cut();
    }

    /// Lets new connections through again (those left unanswered are dropped).
    pub fn restore(&self) {
        self.down.store(false, Ordering::SeqCst);
        self.cut();
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}
