//! The resource monitor: samples system and process memory and CPU every
//! `sample_every` with `sysinfo`, so the request path only reads the last sample (no
//! system call per request).

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use sysinfo::{MemoryRefreshKind, ProcessRefreshKind, ProcessesToUpdate, System};

use crate::guard::shed::Sample;
use crate::state::Shared;

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

    fn store(&self, s: Sample) {
        self.memory_hundredths
            .store((s.memory_percent * 100.0) as u32, Ordering::Relaxed);
        self.cpu_hundredths
            .store((s.cpu_percent * 100.0) as u32, Ordering::Relaxed);
    }
}

/// Samples until the task is aborted.
pub async fn monitor(shared: Arc<Shared>) {
    let Ok(mut system) = System::new() else {
        tracing::warn!(
            category = super::Category::SystemError.as_str(),
            "cannot read system resources; load shedding by memory and CPU is off"
        );
        return;
    };
    let pid = sysinfo::get_current_pid().ok();
    loop {
        system.refresh_memory_specifics(MemoryRefreshKind::nothing().with_ram());
        system.refresh_cpu_usage();
        if let Some(pid) = pid {
            system.refresh_processes_specifics(
                ProcessesToUpdate::Some(&[pid]),
                true,
                ProcessRefreshKind::nothing().with_memory().with_cpu(),
            );
        }
        let total = system.total_memory().max(1);
        let sample = Sample {
            memory_percent: (total.saturating_sub(system.available_memory())) as f32 * 100.0
                / total as f32,
            cpu_percent: system.global_cpu_usage(),
        };
        shared.resources.store(sample);
        let m = &shared.metrics;
        m.system_memory_percent.set(sample.memory_percent as f64);
        m.system_cpu_percent.set(sample.cpu_percent as f64);
        if let Some(p) = pid.and_then(|pid| system.process(pid)) {
            m.process_rss_bytes.set(p.memory() as i64);
            m.process_cpu_percent.set(p.cpu_usage() as f64);
        }
        // Forget clients that have been quiet long enough to have a full bucket.
        if let Some(rl) = shared.rate_limiter.load().as_ref() {
            rl.limiter.retain_recent();
        }
        let every = shared.policy.load().shed.sample_every;
        tokio::time::sleep(every.max(Duration::from_millis(100))).await;
    }
}
