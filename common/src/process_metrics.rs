//! The process's own metrics on every role, under the Prometheus client conventions:
//! `process_cpu_seconds_total` (in fractions of a second: the client library's collector
//! counts whole seconds, which an idle node never reaches), resident and virtual memory,
//! open and maximum file descriptors, start time and threads, read from `/proc`.

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{Counter, Gauge, IntGauge, Opts};

/// The collector; register one per process.
#[derive(Debug)]
pub struct ProcessMetrics {
    cpu: Counter,
    resident: IntGauge,
    virtual_memory: IntGauge,
    open_fds: IntGauge,
    max_fds: IntGauge,
    start_time: Gauge,
    threads: IntGauge,
}

impl ProcessMetrics {
    /// The metrics of this process.
    pub fn new() -> prometheus::Result<Self> {
        let metrics = Self {
            cpu: Counter::new("process_cpu_seconds_total", "Total user and system CPU time spent in seconds.")?,
            resident: IntGauge::new("process_resident_memory_bytes", "Resident memory size in bytes.")?,
            virtual_memory: IntGauge::new("process_virtual_memory_bytes", "Virtual memory size in bytes.")?,
            open_fds: IntGauge::new("process_open_fds", "Number of open file descriptors.")?,
            max_fds: IntGauge::new("process_max_fds", "Maximum number of open file descriptors.")?,
            start_time: Gauge::with_opts(Opts::new(
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds.",
            ))?,
            threads: IntGauge::new("process_threads", "Number of OS threads in the process.")?,
        };
        if let (Ok(boot), Ok(stat)) =
            (procfs::boot_time_secs(), procfs::process::Process::myself().and_then(|p| p.stat()))
        {
            metrics.start_time.set(boot as f64 + stat.starttime as f64 / procfs::ticks_per_second() as f64);
        }
        Ok(metrics)
    }

    fn all(&self) -> [&dyn Collector; 7] {
        [
            &self.cpu,
            &self.resident,
            &self.virtual_memory,
            &self.open_fds,
            &self.max_fds,
            &self.start_time,
            &self.threads,
        ]
    }
}

impl Collector for ProcessMetrics {
    fn desc(&self) -> Vec<&Desc> {
        self.all().into_iter().flat_map(Collector::desc).collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let Ok(process) = procfs::process::Process::myself() else { return Vec::new() };
        if let Ok(stat) = process.stat() {
            let seconds = (stat.utime + stat.stime) as f64 / procfs::ticks_per_second() as f64;
            // Two scrapes at once may both read the counter before either adds.
            let behind = seconds - self.cpu.get();
            if behind > 0.0 {
                self.cpu.inc_by(behind);
            }
            self.virtual_memory.set(i64::try_from(stat.vsize).unwrap_or(i64::MAX));
            self.resident.set(stat.rss.saturating_mul(procfs::page_size()).try_into().unwrap_or(i64::MAX));
            self.threads.set(stat.num_threads);
        }
        if let Ok(fds) = process.fd_count() {
            self.open_fds.set(i64::try_from(fds).unwrap_or(i64::MAX));
        }
        if let Ok(limits) = process.limits()
            && let procfs::process::LimitValue::Value(max) = limits.max_open_files.soft_limit
        {
            self.max_fds.set(i64::try_from(max).unwrap_or(i64::MAX));
        }
        self.all().into_iter().flat_map(Collector::collect).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_process_reports_fractions_of_a_cpu_second_and_its_memory() {
        let metrics = ProcessMetrics::new().expect("declared");
        let busy = (0..2_000_000u64).fold(0u64, |sum, n| sum.wrapping_add(n * n));
        assert!(busy > 0);
        let families = metrics.collect();
        let value = |name: &str| {
            families.iter().find(|family| family.name() == name).map(|family| {
                let metric = &family.get_metric()[0];
                if family.name().ends_with("_total") {
                    metric.get_counter().get_value()
                } else {
                    metric.get_gauge().get_value()
                }
            })
        };
        assert!(value("process_cpu_seconds_total").is_some_and(|cpu| cpu > 0.0 && cpu.fract() != 0.0));
        assert!(value("process_resident_memory_bytes").is_some_and(|rss| rss > 1_000_000.0));
        assert!(value("process_open_fds").is_some_and(|fds| fds >= 3.0));
        assert!(value("process_start_time_seconds").is_some_and(|start| start > 1.7e9));
        assert_eq!(families.len(), 7);
    }
}
