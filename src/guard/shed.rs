//! Load shedding: a sheddable route is refused with 429 while the machine is short of
//! memory or CPU. Pure: it reads the last resource sample, it does not take one.

use crate::error::{ErrorCode, Rejection};

pub use crate::policy::ShedSettings;

/// Whether a reading of `now` percent crosses the warning `level`, given whether the
/// last one was above it: `Some(above)` when it did (a line is due), `None` when not.
/// A level of 100 never warns.
pub fn crossing(was_above: bool, now: f32, level: f32) -> Option<bool> {
    let above = level < 100.0 && now > level;
    (above != was_above).then_some(above)
}

/// The monitor's last reading.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Sample {
    /// System memory in use, percent.
    pub memory_percent: f32,
    /// System CPU use, percent.
    pub cpu_percent: f32,
}

/// Why a request was shed (the `reason` label of `sitegate_shed_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShedReason {
    /// Memory above its threshold.
    Memory,
    /// CPU above its threshold.
    Cpu,
}

impl ShedReason {
    /// The stable label.
    pub fn as_str(self) -> &'static str {
        match self {
            ShedReason::Memory => "memory",
            ShedReason::Cpu => "cpu",
        }
    }
}

/// Refuses a sheddable request while a threshold is passed.
pub fn check(
    sheddable: bool,
    sample: Sample,
    settings: &ShedSettings,
) -> Result<(), (ShedReason, Rejection)> {
    if !sheddable {
        return Ok(());
    }
    let reason = if sample.memory_percent > settings.memory_percent {
        ShedReason::Memory
    } else if sample.cpu_percent > settings.cpu_percent {
        ShedReason::Cpu
    } else {
        return Ok(());
    };
    let retry = settings.sample_every.as_secs().max(1);
    Err((
        reason,
        Rejection::new(
            ErrorCode::ResourceExhausted,
            format!(
                "the proxy host is short of {}; retry shortly",
                reason.as_str()
            ),
        )
        .with_retry_after(retry),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: ShedSettings = ShedSettings {
        memory_percent: 80.0,
        cpu_percent: 90.0,
        warn_memory_percent: 70.0,
        warn_cpu_percent: 80.0,
        sample_every: std::time::Duration::from_secs(1),
    };

    #[test]
    fn a_warning_level_is_reported_once_each_way() {
        let readings = [50.0, 81.0, 95.0, 85.0, 79.0, 60.0, 82.0];
        let mut above = false;
        let mut lines = Vec::new();
        for now in readings {
            if let Some(now_above) = crossing(above, now, 80.0) {
                above = now_above;
                lines.push((now, now_above));
            }
        }
        assert_eq!(lines, [(81.0, true), (79.0, false), (82.0, true)]);
        assert_eq!(crossing(false, 100.0, 100.0), None, "100 never warns");
    }

    #[test]
    fn sheds_only_sheddable_routes_above_a_threshold() {
        let calm = Sample {
            memory_percent: 50.0,
            cpu_percent: 50.0,
        };
        let full = Sample {
            memory_percent: 85.0,
            cpu_percent: 10.0,
        };
        let busy = Sample {
            memory_percent: 10.0,
            cpu_percent: 95.0,
        };
        assert!(check(true, calm, &S).is_ok());
        assert!(check(false, full, &S).is_ok());
        let (reason, r) = check(true, full, &S).unwrap_err();
        assert_eq!(reason, ShedReason::Memory);
        assert_eq!(r.code, ErrorCode::ResourceExhausted);
        assert_eq!(r.retry_after, Some(1));
        assert_eq!(check(true, busy, &S).unwrap_err().0, ShedReason::Cpu);
    }
}
