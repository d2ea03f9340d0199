//! What a broker's process has used, read from /proc: CPU time and resident memory. The
//! benchmarks read them for every target they know the process of, so that a broker is
//! compared by what it spent, not only by what its clients saw.

use std::time::Duration;

/// A process's CPU time (user and system) so far, to the clock tick (10 ms on Linux).
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = procfs::process::Process::new(i32::try_from(pid).ok()?)
        .ok()?
        .stat()
        .ok()?;
    Some(ticks(stat.utime + stat.stime, procfs::ticks_per_second()))
}

/// A process's resident memory (VmRSS) in bytes.
pub fn resident_bytes(pid: u32) -> Option<u64> {
    let status = procfs::process::Process::new(i32::try_from(pid).ok()?)
        .ok()?
        .status()
        .ok()?;
    status.vmrss.map(|kib| kib * 1024)
}

fn ticks(ticks: u64, per_second: u64) -> Duration {
    let per_second = per_second.max(1);
    Duration::from_secs(ticks / per_second)
        + Duration::from_nanos((ticks % per_second) * 1_000_000_000 / per_second)
}

/// A window of one target's CPU: read at its start, and its figures at the end.
#[derive(Clone, Copy, Debug)]
pub struct CpuWindow {
    pid: Option<u32>,
    before: Option<Duration>,
    started: std::time::Instant,
}

/// The server's CPU over a window of a run.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct ServerCpu {
    /// CPU seconds spent by the server over the window; `None` when its process is unknown.
    pub seconds: Option<f64>,
    /// The same as a share of one core over the window's wall time, in percent.
    pub percent: Option<f64>,
    /// CPU per delivery in µs.
    pub us_per_delivery: Option<f64>,
}

impl CpuWindow {
    pub fn start(pid: Option<u32>) -> Self {
        Self {
            pid,
            before: pid.and_then(cpu_time),
            started: std::time::Instant::now(),
        }
    }

    /// The figures from the start to now; the CPU per delivery is filled by
    /// [`ServerCpu::per_delivery`] once the deliveries are counted.
    pub fn finish(&self) -> ServerCpu {
        let after = self.pid.and_then(cpu_time);
        let wall = self.started.elapsed().as_secs_f64().max(1e-9);
        let seconds = after
            .zip(self.before)
            .and_then(|(after, before)| after.checked_sub(before))
            .map(|spent| spent.as_secs_f64());
        ServerCpu {
            seconds,
            percent: seconds.map(|s| s * 100.0 / wall),
            us_per_delivery: None,
        }
    }
}

impl ServerCpu {
    pub fn per_delivery(self, deliveries: usize) -> Self {
        Self {
            us_per_delivery: self
                .seconds
                .filter(|_| deliveries > 0)
                .map(|s| s * 1e6 / deliveries as f64),
            ..self
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_become_durations_without_losing_fractions() {
        assert_eq!(ticks(250, 100), Duration::from_millis(2500));
        assert_eq!(ticks(3, 100), Duration::from_millis(30));
        assert_eq!(ticks(7, 0), Duration::from_secs(7));
    }

    #[test]
    fn cpu_per_delivery_needs_a_reading_and_deliveries() {
        let spent = ServerCpu {
            seconds: Some(0.2),
            percent: Some(20.0),
            us_per_delivery: None,
        };
        assert_eq!(spent.per_delivery(1000).us_per_delivery, Some(200.0));
        assert_eq!(spent.per_delivery(0).us_per_delivery, None);
        assert_eq!(ServerCpu::default().per_delivery(10).us_per_delivery, None);
        assert_eq!(CpuWindow::start(None).finish().seconds, None);
    }

    #[test]
    fn this_process_is_readable() {
        let pid = std::process::id();
        // Spin a little so that at least a tick has been spent.
        let started = std::time::Instant::now();
        let mut x = 0u64;
        while started.elapsed() < Duration::from_millis(30) {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        assert!(x > 0);
        assert!(cpu_time(pid).is_some_and(|t| t > Duration::ZERO));
        assert!(resident_bytes(pid).is_some_and(|b| b > 1024 * 1024));
        assert_eq!(cpu_time(u32::MAX), None);
    }
}
