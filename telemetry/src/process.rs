//! The process's own figures (`courtchat_process_…`): memory, open files, threads and start
//! time from prometheus's process collector, and CPU time from /proc with its fractions.
//!
//! prometheus's collector counts CPU in whole seconds (`(utime + stime) / CLK_TCK` in integer
//! arithmetic), so an idle or young server read 0 and a rate over a scrape interval moved in
//! steps of a whole second. This collector passes the others through and exports
//! `process_cpu_seconds_total` to the clock tick (10 ms on Linux).

use prometheus::core::{Collector, Desc};
use prometheus::process_collector::ProcessCollector;
use prometheus::{Counter, Opts, proto};

const CPU: &str = "process_cpu_seconds_total";

pub(crate) struct ProcessMetrics {
    others: ProcessCollector,
    cpu: Counter,
    descs: Vec<Desc>,
}

impl ProcessMetrics {
    pub(crate) fn new() -> prometheus::Result<Self> {
        let others = ProcessCollector::for_self();
        let cpu = Counter::with_opts(Opts::new(
            CPU,
            "Total user and system CPU time spent in seconds.",
        ))?;
        let descs = others
            .desc()
            .into_iter()
            .filter(|desc| desc.fq_name != CPU)
            .chain(cpu.desc())
            .cloned()
            .collect();
        Ok(Self { others, cpu, descs })
    }
}

/// CPU time this process has used, in seconds, to the clock tick.
pub(crate) fn cpu_seconds() -> Option<f64> {
    let stat = procfs::process::Process::myself().ok()?.stat().ok()?;
    let ticks = procfs::ticks_per_second().max(1);
    Some((stat.utime + stat.stime) as f64 / ticks as f64)
}

impl Collector for ProcessMetrics {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<proto::MetricFamily> {
        let mut families: Vec<_> = self
            .others
            .collect()
            .into_iter()
            .filter(|family| family.name() != CPU)
            .collect();
        if let Some(seconds) = cpu_seconds() {
            // Two scrapes at once may both add: never let the counter go past what /proc says
            // by more than the other scrape's difference, and never backward.
            let past = self.cpu.get();
            if seconds > past {
                self.cpu.inc_by(seconds - past);
            }
            families.extend(self.cpu.collect());
        }
        families
    }
}
