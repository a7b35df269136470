//! What a transaction ends with: committed, or aborted for a reason. An
//! abort caused by a conflict is an ordinary result, not an error; the
//! counts of aborts by reason are one type ([`AbortCounts`]) that the
//! benchmarks, the checker and the command line share.

use std::fmt;

/// Why a transaction aborted. An abort leaves no trace.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AbortReason {
    /// A primary could not lock an object at the version read (LOCK,
    /// FaRM SOSP'15 §4 step 1).
    LockConflict,
    /// An object read but not written changed before commit (VALIDATE,
    /// step 2).
    Validation,
    /// An object stayed locked (or torn) across every read retry.
    ReadConflict,
    /// The application gave up.
    Requested,
    /// The configuration changed under the transaction (a node failed or
    /// joined, FaRM SOSP'15 §5): recovery aborted it, or it had not sent
    /// anything yet. Retrying runs it in the new configuration.
    Unavailable,
}

impl AbortReason {
    /// Every reason, in the order [`AbortCounts`] keeps them.
    pub const ALL: [AbortReason; 5] = [
        AbortReason::LockConflict,
        AbortReason::Validation,
        AbortReason::ReadConflict,
        AbortReason::Requested,
        AbortReason::Unavailable,
    ];

    /// The short name reports use (`lock`, `validate`, `read`,
    /// `requested`, `unavailable`).
    pub fn name(self) -> &'static str {
        match self {
            AbortReason::LockConflict => "lock",
            AbortReason::Validation => "validate",
            AbortReason::ReadConflict => "read",
            AbortReason::Requested => "requested",
            AbortReason::Unavailable => "unavailable",
        }
    }

    /// The reason whose [`AbortReason::name`] is `name`.
    pub fn from_name(name: &str) -> Option<AbortReason> {
        AbortReason::ALL.into_iter().find(|r| r.name() == name)
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for AbortReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Aborts counted by reason. Serialized as a map from reason name to
/// count (`{"lock": 3, "validate": 0, "read": 1, "requested": 0}`), which
/// is the `aborted_by_reason` field of `farm bench --json`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AbortCounts([u64; AbortReason::ALL.len()]);

impl AbortCounts {
    pub fn add(&mut self, reason: AbortReason, count: u64) {
        self.0[reason.index()] += count;
    }

    pub fn get(&self, reason: AbortReason) -> u64 {
        self.0[reason.index()]
    }

    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    /// Adds every count of `other`.
    pub fn merge(&mut self, other: &AbortCounts) {
        for reason in AbortReason::ALL {
            self.add(reason, other.get(reason));
        }
    }

    /// (reason, count) pairs in [`AbortReason::ALL`] order.
    pub fn iter(&self) -> impl Iterator<Item = (AbortReason, u64)> + '_ {
        AbortReason::ALL.into_iter().map(|r| (r, self.get(r)))
    }
}

impl fmt::Display for AbortCounts {
    /// `lock 3, validate 0, read 1, requested 0, unavailable 0`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, (reason, count)) in self.iter().enumerate() {
            if index > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{reason} {count}")?;
        }
        Ok(())
    }
}

impl serde::Serialize for AbortCounts {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(AbortReason::ALL.len()))?;
        for (reason, count) in self.iter() {
            map.serialize_entry(reason.name(), &count)?;
        }
        map.end()
    }
}

impl<'de> serde::Deserialize<'de> for AbortCounts {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let map = std::collections::BTreeMap::<String, u64>::deserialize(deserializer)?;
        let mut counts = AbortCounts::default();
        for (name, count) in map {
            let reason = AbortReason::from_name(&name).ok_or_else(|| {
                serde::de::Error::custom(format!("unknown abort reason {name:?}"))
            })?;
            counts.add(reason, count);
        }
        Ok(counts)
    }
}

/// The result of a commit. An abort is an ordinary outcome, not an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Committed,
    Aborted(AbortReason),
}

/// Time spent in each commit phase of one read-write transaction, for the
/// benchmarks' breakdown (nanoseconds; 0 for a phase that did not run).
#[derive(Clone, Copy, Debug, Default)]
pub struct PhaseTimes {
    pub lock_ns: u64,
    pub validate_ns: u64,
    pub commit_backup_ns: u64,
    pub commit_primary_ns: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_add_merge_and_print_by_name() {
        let mut counts = AbortCounts::default();
        counts.add(AbortReason::LockConflict, 3);
        counts.add(AbortReason::ReadConflict, 1);
        let mut more = counts;
        more.merge(&counts);
        assert_eq!(more.get(AbortReason::LockConflict), 6);
        assert_eq!(more.total(), 8);
        assert_eq!(
            counts.to_string(),
            "lock 3, validate 0, read 1, requested 0, unavailable 0"
        );
        for reason in AbortReason::ALL {
            assert_eq!(AbortReason::from_name(reason.name()), Some(reason));
        }
    }
}
