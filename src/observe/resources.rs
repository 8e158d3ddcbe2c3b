//! The resource monitor: reads system and process memory and CPU with `sysinfo`; the
//! server samples every `sample_every` into [`Readings`], so the request path only reads
//! the last sample (no system call per request).

use std::sync::atomic::{AtomicU32, Ordering};

use sysinfo::{CGroupLimits, MemoryRefreshKind, ProcessRefreshKind, ProcessesToUpdate, System};

use crate::guard::shed::Sample;

/// The last sample, readable from any thread without a lock.
#[derive(Debug, Default)]
pub struct Readings {
    memory_hundredths: AtomicU32,
    cpu_hundredths: AtomicU32,
}

impl Readings {
    /// The last sample (zeros before the first).
    pub fn sample(&self) -> Sample {
        Sample {
            memory_percent: self.memory_hundredths.load(Ordering::Relaxed) as f32 / 100.0,
            cpu_percent: self.cpu_hundredths.load(Ordering::Relaxed) as f32 / 100.0,
        }
    }

    /// Makes `s` the last sample.
    pub fn store(&self, s: Sample) {
        self.memory_hundredths
            .store((s.memory_percent * 100.0) as u32, Ordering::Relaxed);
        self.cpu_hundredths
            .store((s.cpu_percent * 100.0) as u32, Ordering::Relaxed);
    }
}

/// The memory in use, in percent of what this process may use.
///
/// In a container (a Kubernetes pod with a memory limit) the limit, not the node, is
/// what the OOM killer enforces, so the cgroup's limit counts when it is below the
/// host's memory. Its anonymous memory is the measure there: the cgroup's page cache
/// (log files being written) is reclaimable and must not make the proxy shed.
fn memory_percent(host_total: u64, host_available: u64, cgroup: Option<CGroupLimits>) -> f32 {
    match cgroup {
        Some(c) if c.total_memory > 0 && c.total_memory < host_total => {
            c.rss.min(c.total_memory) as f32 * 100.0 / c.total_memory as f32
        }
        // Nothing known: never shed on a reading that is not there.
        _ if host_total == 0 => 0.0,
        _ => host_total.saturating_sub(host_available) as f32 * 100.0 / host_total as f32,
    }
}

/// What one look at the machine and the process found.
#[derive(Debug, Clone, Copy)]
pub struct Reading {
    /// What load shedding reads.
    pub sample: Sample,
    /// This process's resident memory in bytes and its CPU use in percent, when the
    /// system shows them.
    pub process: Option<(u64, f32)>,
}

/// Reads system and process memory and CPU.
pub struct Monitor {
    system: System,
    pid: Option<sysinfo::Pid>,
}

impl Monitor {
    /// A monitor, or `None` when this system's resources cannot be read.
    pub fn new() -> Option<Self> {
        Some(Monitor {
            system: System::new().ok()?,
            pid: sysinfo::get_current_pid().ok(),
        })
    }

    /// Reads now (CPU use is measured since the previous call).
    pub fn read(&mut self) -> Reading {
        let system = &mut self.system;
        system.refresh_memory_specifics(MemoryRefreshKind::nothing().with_ram());
        system.refresh_cpu_usage();
        if let Some(pid) = self.pid {
            system.refresh_processes_specifics(
                ProcessesToUpdate::Some(&[pid]),
                true,
                ProcessRefreshKind::nothing().with_memory().with_cpu(),
            );
        }
        let sample = Sample {
            memory_percent: memory_percent(
                system.total_memory(),
                system.available_memory(),
                system.cgroup_limits(),
            ),
            cpu_percent: system.global_cpu_usage(),
        };
        let process = self
            .pid
            .and_then(|pid| system.process(pid))
            .map(|p| (p.memory(), p.cpu_usage()));
        Reading { sample, process }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;
    const MIB: u64 = 1 << 20;

    fn limits(total: u64, rss: u64) -> CGroupLimits {
        CGroupLimits {
            total_memory: total,
            free_memory: 0,
            free_swap: 0,
            rss,
        }
    }

    #[test]
    fn a_container_limit_below_the_host_is_the_measure() {
        // A 320 MiB pod on a 24 GiB node, 288 MiB of it anonymous: 90 %, whatever
        // the node has free.
        let p = memory_percent(24 * GIB, 20 * GIB, Some(limits(320 * MIB, 288 * MIB)));
        assert!((p - 90.0).abs() < 0.01, "{p}");
    }

    #[test]
    fn without_a_limit_the_host_counts() {
        // No cgroup, or a cgroup whose "limit" is the whole host (no memory.max).
        assert_eq!(memory_percent(4 * GIB, GIB, None), 75.0);
        assert_eq!(
            memory_percent(4 * GIB, GIB, Some(limits(4 * GIB, 10 * MIB))),
            75.0
        );
        assert_eq!(memory_percent(0, 0, None), 0.0);
    }
}
