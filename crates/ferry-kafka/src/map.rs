//! The offset map of one partition and the exact translation of a consumer position.
//!
//! The mirror copies a source partition's records in order to the same partition on the
//! target. Source offsets may jump (compaction, transaction markers, aborted records) and the
//! target may hold records ferry did not write (producers that moved first), so the map is a
//! list of *runs*: consecutive source offsets written to consecutive target offsets. Every
//! record ferry copied lies in exactly one run, and runs ascend on both sides.
//!
//! A consumer's committed source offset `S` means "every record before `S` was processed".
//! Its translation is the target offset `T` such that a consumer starting at `T` reads every
//! record it has not processed and, where possible, nothing twice:
//! - `T_copy`: the target offset of the first copied record at or after `S` (the end of the
//!   copy when there is none);
//! - a target record ferry did not write (a gap between runs) was never seen by the consumer,
//!   so `T` is the smaller of `T_copy` and the first such record: nothing is ever skipped.
//!   Copied records between that foreign record and `T_copy` are read twice and are counted
//!   (`duplicates`) so the operator knows exactly how many.
//! - `S` beyond what the mirror has settled cannot be translated yet: records before `S` may
//!   still be on their way.

/// Consecutive source offsets copied to consecutive target offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    pub source_start: i64,
    pub target_start: i64,
    pub count: i64,
}

impl Run {
    pub fn source_end(&self) -> i64 {
        self.source_start + self.count
    }

    pub fn target_end(&self) -> i64 {
        self.target_start + self.count
    }

    /// Whether `source` -> `target` continues this run.
    pub fn continues_with(&self, source: i64, target: i64) -> bool {
        source == self.source_end() && target == self.target_end()
    }
}

/// What the mirror has settled for one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionMap {
    /// Ascending, not overlapping.
    pub runs: Vec<Run>,
    /// The target partition's end when the mirror began on it (records before it are not
    /// part of the move; the move refuses a target partition that held records).
    pub first_target: i64,
    /// Where the move began reading the source (records before it were never copied).
    pub first_source: i64,
    /// Every source record before this offset is copied (or was never there: gaps).
    pub settled_source: i64,
}

/// A consumer position on the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Translation {
    pub target_offset: i64,
    /// Copied records at or after `target_offset` that the consumer already processed on the
    /// source (it will read them again). Zero unless other producers wrote to the target
    /// partition while the mirror was still copying.
    pub duplicates: i64,
    /// Set when the consumer's position lies before where the move began reading (`--from` a
    /// time): the source records from its position up to this offset were never copied, and
    /// the consumer, which has not processed them, will not find them on the target.
    pub first_copied_source: Option<i64>,
}

/// Why a position cannot be translated (yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Untranslatable {
    /// The mirror has settled the source only up to this offset.
    NotCopiedYet { settled: i64 },
}

impl PartitionMap {
    /// The first target offset at or after `first_target` that ferry did not write, if one lies
    /// before the end of the copy.
    pub fn first_foreign(&self) -> Option<i64> {
        let mut expected = self.first_target;
        for run in &self.runs {
            if run.target_start > expected {
                return Some(expected);
            }
            expected = run.target_end();
        }
        None
    }

    /// The end of the copy on the target.
    pub fn copied_target_end(&self) -> i64 {
        self.runs
            .last()
            .map(Run::target_end)
            .unwrap_or(self.first_target)
    }

    /// How many copied records lie in the target range `[from, to)`.
    fn copied_between(&self, from: i64, to: i64) -> i64 {
        self.runs
            .iter()
            .map(|run| (run.target_end().min(to) - run.target_start.max(from)).max(0))
            .sum()
    }

    /// The target offset of the first copied record at or after source offset `source`.
    fn copy_position(&self, source: i64) -> i64 {
        for run in &self.runs {
            if source < run.source_start {
                return run.target_start;
            }
            if source < run.source_end() {
                return run.target_start + (source - run.source_start);
            }
        }
        self.copied_target_end()
    }

    /// The exact target position for a consumer that committed `committed` on the source.
    pub fn translate(&self, committed: i64) -> Result<Translation, Untranslatable> {
        if committed > self.settled_source {
            return Err(Untranslatable::NotCopiedYet {
                settled: self.settled_source,
            });
        }
        let copy_position = self.copy_position(committed);
        let target_offset = match self.first_foreign() {
            Some(foreign) if foreign < copy_position => foreign,
            _ => copy_position,
        };
        Ok(Translation {
            target_offset,
            duplicates: self.copied_between(target_offset, copy_position),
            first_copied_source: (committed < self.first_source).then_some(self.first_source),
        })
    }

    /// Whether target offset `offset` holds a record ferry copied; with its source offset.
    pub fn source_of(&self, offset: i64) -> Option<i64> {
        self.runs
            .iter()
            .find(|run| offset >= run.target_start && offset < run.target_end())
            .map(|run| run.source_start + (offset - run.target_start))
    }
}

/// Adds one copied record to `runs`, extending the last run when it continues it.
pub fn append(runs: &mut Vec<Run>, source: i64, target: i64) {
    if let Some(last) = runs.last_mut() {
        if last.continues_with(source, target) {
            last.count += 1;
            return;
        }
    }
    runs.push(Run {
        source_start: source,
        target_start: target,
        count: 1,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(i64, i64)], first_target: i64, settled: i64) -> PartitionMap {
        let first_source = pairs.first().map_or(0, |(source, _)| *source);
        let mut runs = Vec::new();
        for (source, target) in pairs {
            append(&mut runs, *source, *target);
        }
        PartitionMap {
            runs,
            first_target,
            first_source,
            settled_source: settled,
        }
    }

    #[test]
    fn a_plain_copy_translates_one_to_one() {
        let map = map(&[(0, 0), (1, 1), (2, 2), (3, 3)], 0, 4);
        assert_eq!(map.runs.len(), 1);
        for committed in 0..=4 {
            let translation = map.translate(committed).unwrap();
            assert_eq!(translation.target_offset, committed);
            assert_eq!(translation.duplicates, 0);
        }
        assert_eq!(
            map.translate(5),
            Err(Untranslatable::NotCopiedYet { settled: 4 })
        );
    }

    #[test]
    fn source_gaps_translate_to_the_next_copied_record() {
        // Compaction removed 2 and 3; a transaction marker sits at 6; the end is 8.
        let map = map(&[(0, 0), (1, 1), (4, 2), (5, 3), (7, 4)], 0, 8);
        assert_eq!(map.runs.len(), 3);
        let expect = [
            (0, 0),
            (1, 1),
            (2, 2),
            (3, 2),
            (4, 2),
            (5, 3),
            (6, 4),
            (7, 4),
            (8, 5),
        ];
        for (committed, target) in expect {
            assert_eq!(
                map.translate(committed).unwrap().target_offset,
                target,
                "{committed}"
            );
        }
        assert_eq!(map.source_of(2), Some(4));
        assert_eq!(map.source_of(4), Some(7));
        assert_eq!(map.source_of(5), None);
    }

    #[test]
    fn foreign_records_are_never_skipped_and_rereads_are_counted() {
        // Source records 0..6 copied; a producer that moved first wrote target offsets 3 and 4
        // (between copied source 2 and 3), and 8.
        let map = map(
            &[(0, 0), (1, 1), (2, 2), (3, 5), (4, 6), (5, 7), (6, 9)],
            0,
            7,
        );
        assert_eq!(map.first_foreign(), Some(3));
        // Consumed up to 2: the first foreign record comes right after; nothing read twice.
        let at_two = map.translate(3).unwrap();
        assert_eq!((at_two.target_offset, at_two.duplicates), (3, 0));
        // Consumed everything: read from the first foreign record, reading 4 copies again
        // (source 3, 4, 5 and 6 at target 5, 6, 7 and 9).
        let at_end = map.translate(7).unwrap();
        assert_eq!((at_end.target_offset, at_end.duplicates), (3, 4));
        let early = map.translate(1).unwrap();
        assert_eq!((early.target_offset, early.duplicates), (1, 0));
    }

    #[test]
    fn a_move_that_started_later_says_what_it_never_copied() {
        let map = map(&[(100, 0), (101, 1)], 0, 102);
        let translation = map.translate(40).unwrap();
        assert_eq!(translation.target_offset, 0);
        assert_eq!(translation.first_copied_source, Some(100));
        assert_eq!(map.translate(101).unwrap().first_copied_source, None);
    }

    #[test]
    fn an_empty_copy_translates_to_where_the_target_began() {
        let mut map = map(&[], 0, 0);
        assert_eq!(map.translate(0).unwrap().target_offset, 0);
        assert!(map.translate(1).is_err());
        // A move that began at offset 100 and has copied nothing yet still reports the gap.
        map.first_source = 100;
        map.settled_source = 100;
        assert_eq!(map.translate(40).unwrap().first_copied_source, Some(100));
    }
}
