//! The brokers measured beside courtchat: a fresh Mosquitto started for the run (the reference
//! of ../shared/notes/benchmarking.md: its own port, no persistence, `set_tcp_nodelay true`),
//! and brokers already running, named with `--against NAME=HOST:PORT[@PID]`.
//!
//! A fresh process per run matters: memory per connection is read as the growth of a server
//! that has carried nothing before, and CPU from a process that does nothing else.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::bench_child::free_port;

/// A broker given with `--against`: where it listens and, after `@`, its process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Against {
    pub name: String,
    pub addr: SocketAddr,
    pub pid: Option<u32>,
}

impl std::str::FromStr for Against {
    type Err = String;

    /// `NAME=HOST:PORT`, `NAME=mqtt://HOST:PORT` or either with `@PID`.
    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        let usage = || format!("--against {spec}: expected NAME=HOST:PORT[@PID]");
        let (name, rest) = spec.split_once('=').ok_or_else(usage)?;
        let (url, pid) = match rest.rsplit_once('@') {
            Some((url, pid)) => (url, Some(pid.parse::<u32>().map_err(|_| usage())?)),
            None => (rest, None),
        };
        let addr = url
            .strip_prefix("mqtt://")
            .or_else(|| url.strip_prefix("tcp://"))
            .unwrap_or(url)
            .trim_end_matches('/')
            .parse()
            .map_err(|_| format!("{}: not an IP socket address", usage()))?;
        if name.is_empty() {
            return Err(usage());
        }
        Ok(Self {
            name: name.to_owned(),
            addr,
            pid,
        })
    }
}

impl Against {
    pub fn target(&self) -> bench::Target {
        bench::Target {
            name: self.name.clone(),
            addr: self.addr,
            credentials: None,
            pid: self.pid,
        }
    }
}

/// The brokers measured beside courtchat, as the command line names them.
#[derive(clap::Args, Clone, Debug)]
pub struct Others {
    /// The Mosquitto binary started fresh for the run as the reference (fair settings:
    /// nothing persisted, Nagle off).
    #[arg(long, value_name = "PATH", default_value = "mosquitto")]
    pub mosquitto: String,
    /// Leave the fresh Mosquitto out.
    #[arg(long)]
    pub no_mosquitto: bool,
    /// A broker already running, measured too: NAME=HOST:PORT, or NAME=HOST:PORT@PID to read
    /// its CPU (and memory) from /proc. MQTT 3.1.1 over TCP, anonymous access. Repeatable.
    #[arg(long, value_name = "NAME=HOST:PORT[@PID]")]
    pub against: Vec<Against>,
}

/// A Mosquitto started for one run and stopped (and its scratch directory removed) when dropped.
pub struct FreshMosquitto {
    child: Child,
    scratch: PathBuf,
    pub addr: SocketAddr,
}

/// The reference's configuration: anonymous, nothing persisted, Nagle off (with it on, its tail
/// measures the delayed-ACK timer).
fn reference_config(addr: SocketAddr) -> String {
    format!(
        "listener {} {}\nallow_anonymous true\npersistence false\nset_tcp_nodelay true\n\
         log_type error\n",
        addr.port(),
        addr.ip()
    )
}

impl FreshMosquitto {
    /// Starts `binary` on a free loopback port and waits until it listens.
    pub async fn start(binary: &str) -> anyhow::Result<Self> {
        let addr = free_port()?;
        let scratch = std::env::temp_dir().join(format!(
            "courtchat-bench-{}-mosquitto-{}",
            std::process::id(),
            addr.port()
        ));
        std::fs::create_dir_all(&scratch)?;
        let conf = scratch.join("mosquitto.conf");
        std::fs::write(&conf, reference_config(addr))?;
        let spawned = Command::new(binary)
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match spawned {
            Ok(child) => child,
            Err(err) => {
                let _ = std::fs::remove_dir_all(&scratch);
                return Err(anyhow::Error::new(err).context(format!(
                    "starting {binary} (--mosquitto PATH, or --no-mosquitto)"
                )));
            }
        };
        let mut fresh = Self {
            child,
            scratch,
            addr,
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            if let Some(status) = fresh.child.try_wait()? {
                anyhow::bail!("{binary} exited with {status} before listening on {addr}");
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "{binary} not listening on {addr} within 10 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(fresh)
    }

    pub fn target(&self) -> bench::Target {
        bench::Target {
            name: "mosquitto".to_owned(),
            addr: self.addr,
            credentials: None,
            pid: Some(self.child.id()),
        }
    }

    pub fn memory_probe(&self) -> bench::MemoryProbe {
        let pid = self.child.id();
        Box::new(move || bench::resident_bytes(pid))
    }
}

/// Stopped when dropped, so a run that fails half way leaves no broker behind it.
impl Drop for FreshMosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.scratch);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn against_takes_an_address_and_maybe_a_process() {
        let parsed: Against = "mosquitto=127.0.0.1:18830@4242".parse().unwrap();
        assert_eq!(
            parsed,
            Against {
                name: "mosquitto".to_owned(),
                addr: "127.0.0.1:18830".parse().unwrap(),
                pid: Some(4242),
            }
        );
        let plain: Against = "emqx=mqtt://10.0.0.2:1883/".parse().unwrap();
        assert_eq!((plain.addr.port(), plain.pid), (1883, None));
        for bad in [
            "127.0.0.1:1883",
            "=127.0.0.1:1883",
            "x=localhost:1883",
            "x=127.0.0.1:1883@me",
        ] {
            assert!(bad.parse::<Against>().is_err(), "{bad}");
        }
    }

    #[test]
    fn the_reference_is_configured_fairly() {
        let conf = reference_config("127.0.0.1:18830".parse().unwrap());
        assert!(conf.contains("listener 18830 127.0.0.1\n"));
        assert!(conf.contains("set_tcp_nodelay true\n"));
        assert!(conf.contains("persistence false\n"));
    }
}
