//! Replication lag in time, measured from the outside: sample the source's end of log now and
//! then, and note when the target's checkpoint passes each sample. The lag at any moment is how
//! long ago the oldest sample not yet durable on the target was taken (zero when none is
//! pending). It is an upper bound on how old the newest change missing on the target can be,
//! accurate to the sampling interval, and needs no clock agreement between the servers.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use ferry_core::Position;

/// Samples at most this many source positions (older ones are merged away).
const MAX_SAMPLES: usize = 1024;

/// Measures lag from (source end of log, target checkpoint) observations.
#[derive(Debug, Default)]
pub struct LagMeter {
    /// Source positions not yet durable on the target, oldest first, with when they were seen.
    pending: VecDeque<(Instant, Position)>,
    /// The latest target checkpoint seen.
    applied: Option<Position>,
    /// The latest source position seen.
    source: Option<Position>,
}

impl LagMeter {
    pub fn new() -> LagMeter {
        LagMeter::default()
    }

    /// Records the source's end of log as seen at `now`.
    pub fn source_at(&mut self, now: Instant, position: Position) {
        self.source = Some(position.clone());
        if self
            .applied
            .as_ref()
            .is_some_and(|applied| *applied >= position)
        {
            return;
        }
        if self
            .pending
            .back()
            .is_some_and(|(_, newest)| *newest >= position)
        {
            return;
        }
        if self.pending.len() >= MAX_SAMPLES {
            // Keep the oldest (it defines the lag); drop the second oldest.
            self.pending.remove(1);
        }
        self.pending.push_back((now, position));
    }

    /// Records the target's durable checkpoint.
    pub fn applied(&mut self, position: Position) {
        if self
            .applied
            .as_ref()
            .is_some_and(|applied| *applied >= position)
        {
            return;
        }
        while self
            .pending
            .front()
            .is_some_and(|(_, sample)| *sample <= position)
        {
            self.pending.pop_front();
        }
        self.applied = Some(position);
    }

    /// The lag at `now`.
    pub fn lag(&self, now: Instant) -> Duration {
        self.pending
            .front()
            .map(|(seen, _)| now.saturating_duration_since(*seen))
            .unwrap_or_default()
    }

    /// How far the checkpoint is behind the latest source position, in the source's units
    /// (bytes of WAL for PostgreSQL).
    pub fn lag_units(&self) -> Option<u64> {
        Some(self.source.as_ref()?.distance_from(self.applied.as_ref()?))
    }

    pub fn applied_position(&self) -> Option<Position> {
        self.applied.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_core::Lsn;

    fn at(lsn: u64) -> Position {
        Position::Postgres(Lsn(lsn))
    }

    #[test]
    fn lag_is_the_age_of_the_oldest_pending_sample() {
        let start = Instant::now();
        let mut meter = LagMeter::new();
        assert_eq!(meter.lag(start), Duration::ZERO);
        meter.applied(at(100));
        meter.source_at(start, at(100));
        assert_eq!(meter.lag(start + Duration::from_secs(5)), Duration::ZERO);
        meter.source_at(start + Duration::from_secs(1), at(200));
        meter.source_at(start + Duration::from_secs(2), at(300));
        assert_eq!(
            meter.lag(start + Duration::from_secs(3)),
            Duration::from_secs(2)
        );
        assert_eq!(meter.lag_units(), Some(200));
        meter.applied(at(250));
        assert_eq!(
            meter.lag(start + Duration::from_secs(3)),
            Duration::from_secs(1)
        );
        // An older checkpoint read later changes nothing.
        meter.applied(at(120));
        assert_eq!(meter.applied_position(), Some(at(250)));
        meter.applied(at(300));
        assert_eq!(meter.lag(start + Duration::from_secs(9)), Duration::ZERO);
        assert_eq!(meter.lag_units(), Some(0));
    }

    #[test]
    fn samples_are_bounded() {
        let start = Instant::now();
        let mut meter = LagMeter::new();
        meter.applied(at(0));
        for index in 1..=5_000u64 {
            meter.source_at(start + Duration::from_millis(index), at(index));
        }
        assert!(meter.pending.len() <= MAX_SAMPLES);
        assert_eq!(
            meter.lag(start + Duration::from_millis(5_001)),
            Duration::from_millis(5_000)
        );
    }
}
