//! The result of a check, for people (a table) and for scripts (one line of
//! JSON). This module only formats; [`mod@crate::check`] decides.

use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use crate::history::TxnId;

/// What the check concluded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// No anomaly that strict serializability forbids was found.
    Valid,
    /// At least one such anomaly was found.
    Invalid,
    /// Nothing forbidden was found, but the check could not finish: the
    /// cycle search ran out of time, or no dependency at all could be
    /// inferred between the transactions, so the history says nothing.
    Unknown,
}

impl Verdict {
    /// The verdict of two checks together: any invalid part makes the whole
    /// invalid, and any unknown part makes a valid whole unknown.
    pub fn and(self, other: Verdict) -> Verdict {
        match (self, other) {
            (Verdict::Invalid, _) | (_, Verdict::Invalid) => Verdict::Invalid,
            (Verdict::Unknown, _) | (_, Verdict::Unknown) => Verdict::Unknown,
            (Verdict::Valid, Verdict::Valid) => Verdict::Valid,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Verdict::Valid => "VALID",
            Verdict::Invalid => "INVALID",
            Verdict::Unknown => "UNKNOWN",
        }
    }
}

/// One anomaly, named as Elle and adya name them.
///
/// Kinds include `G0`, `G1a` (aborted read), `G1b` (intermediate read),
/// `G1c`, `G-single-item` (read skew), `G-nonadjacent-item`, `G2-item`
/// (write skew), their `-realtime` variants (the cycle needs a real-time
/// edge: the history is serializable there but not strictly),
/// `lost-update`, `internal`, `incompatible-order`, `dirty-update`,
/// `cyclic-versions`, `<model>-cycle-exists` (a forbidden cycle exists but
/// was not pinned down), `empty-transaction-graph`, `cycle-search-timeout`,
/// and this crate's own `garbage-read`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Anomaly {
    pub kind: String,
    /// The transactions involved; for a cycle, in cycle order.
    pub txns: Vec<TxnId>,
    /// Why, step by step, naming transactions as `T<id>`.
    pub explanation: String,
}

impl Serialize for TxnId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0)
    }
}

/// Everything a check found.
#[derive(Clone, Debug)]
pub struct Report {
    pub txns: usize,
    pub committed: usize,
    pub aborted: usize,
    pub unknown: usize,
    pub verdict: Verdict,
    /// Sorted by kind.
    pub anomalies: Vec<Anomaly>,
    /// The weakest consistency models the anomalies rule out, in adya's
    /// names (e.g. `serializable`, `strong-read-committed`).
    pub models_ruled_out: Vec<String>,
    /// Limits of this particular check, in sentences.
    pub notes: Vec<String>,
    pub check_time: Duration,
    /// The node processes a nemesis killed, in order (`--nemesis kill`).
    pub killed: Vec<Killed>,
    /// Acknowledged appends missing from the final read of their list;
    /// `None` when no final read was made (in-process runs).
    pub lost_acks: Option<usize>,
}

/// One kill of a nemesis.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Killed {
    pub node: usize,
    /// Seconds after the clients started.
    pub at_s: f64,
    /// Whether it was the configuration manager when killed.
    pub manager: bool,
    /// The configuration it was killed in.
    pub configuration: u32,
}

/// How many anomalies of one kind [`Report::table`] explains in full.
const TABLE_EXPLANATIONS_PER_KIND_MAX: usize = 2;
/// How many transaction ids [`Report::table`] lists per kind.
const TABLE_TXNS_PER_KIND_MAX: usize = 8;

impl Report {
    /// True only when the history was checked and nothing forbidden was
    /// found; an unknown verdict is not valid.
    pub fn is_valid(&self) -> bool {
        self.verdict == Verdict::Valid
    }

    /// Anomalies whose kind starts with `prefix` (`"G2"` matches `G2-item`
    /// and `G2-item-realtime`).
    pub fn anomalies_of<'r>(&'r self, prefix: &'r str) -> impl Iterator<Item = &'r Anomaly> + 'r {
        self.anomalies
            .iter()
            .filter(move |a| a.kind.starts_with(prefix))
    }

    /// Distinct anomaly kinds, sorted.
    pub fn kinds(&self) -> Vec<&str> {
        let mut kinds: Vec<&str> = self.anomalies.iter().map(|a| a.kind.as_str()).collect();
        kinds.dedup();
        kinds
    }

    /// One line of JSON: `{"txns":N,"committed":C,"aborted":A,"anomalies":[…],…}`
    /// with each anomaly as `{"kind":…,"txns":[…],"explanation":…}`, followed
    /// by `unknown`, `valid` (`true`, `false` or `"unknown"`),
    /// `models_ruled_out`, `notes`, `check_ms`, `kills` (how many node
    /// processes a nemesis killed), `killed` (one `{"node", "at_s",
    /// "manager", "configuration"}` each) and `lost_acks` (acknowledged
    /// appends missing afterwards; `null` when not counted).
    pub fn json_line(&self) -> String {
        #[derive(Serialize)]
        struct Line<'r> {
            txns: usize,
            committed: usize,
            aborted: usize,
            anomalies: &'r [Anomaly],
            unknown: usize,
            valid: serde_json::Value,
            models_ruled_out: &'r [String],
            notes: &'r [String],
            check_ms: f64,
            kills: usize,
            killed: &'r [Killed],
            lost_acks: Option<usize>,
        }
        let valid = match self.verdict {
            Verdict::Valid => serde_json::Value::Bool(true),
            Verdict::Invalid => serde_json::Value::Bool(false),
            Verdict::Unknown => serde_json::Value::String("unknown".into()),
        };
        let line = Line {
            txns: self.txns,
            committed: self.committed,
            aborted: self.aborted,
            anomalies: &self.anomalies,
            unknown: self.unknown,
            valid,
            models_ruled_out: &self.models_ruled_out,
            notes: &self.notes,
            check_ms: self.check_time.as_secs_f64() * 1e3,
            kills: self.killed.len(),
            killed: &self.killed,
            lost_acks: self.lost_acks,
        };
        serde_json::to_string(&line).expect("a report always serializes")
    }

    /// A summary table for people: counts, one row per anomaly kind, then
    /// the first explanations of each kind.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "strict serializability: {} ({} anomalies, checked in {:.1} ms)",
            self.verdict.name(),
            self.anomalies.len(),
            self.check_time.as_secs_f64() * 1e3
        );
        let _ = writeln!(
            out,
            "{:>10} {:>10} {:>10} {:>10}",
            "txns", "committed", "aborted", "unknown"
        );
        let _ = writeln!(
            out,
            "{:>10} {:>10} {:>10} {:>10}",
            self.txns, self.committed, self.aborted, self.unknown
        );
        if !self.killed.is_empty() {
            let killed: Vec<String> = self
                .killed
                .iter()
                .map(|k| {
                    format!(
                        "node {}{} at {:.2} s",
                        k.node,
                        if k.manager { " (manager)" } else { "" },
                        k.at_s
                    )
                })
                .collect();
            let _ = writeln!(out, "killed: {}", killed.join(", "));
        }
        if let Some(lost) = self.lost_acks {
            let _ = writeln!(out, "acknowledged appends lost: {lost}");
        }
        let kinds = self.kinds();
        if !kinds.is_empty() {
            let width = kinds
                .iter()
                .map(|k| k.len())
                .max()
                .unwrap_or(0)
                .max("kind".len());
            let _ = writeln!(out, "\n{:<width$} {:>7}  transactions", "kind", "count");
            for kind in &kinds {
                let of_kind: Vec<&Anomaly> =
                    self.anomalies.iter().filter(|a| a.kind == *kind).collect();
                let mut txns: Vec<TxnId> = of_kind
                    .iter()
                    .flat_map(|a| a.txns.iter().copied())
                    .collect();
                txns.sort_unstable();
                txns.dedup();
                let shown: Vec<String> = txns
                    .iter()
                    .take(TABLE_TXNS_PER_KIND_MAX)
                    .map(TxnId::to_string)
                    .collect();
                let more = if txns.len() > shown.len() {
                    format!(" … {} in all", txns.len())
                } else {
                    String::new()
                };
                let _ = writeln!(
                    out,
                    "{kind:<width$} {:>7}  {}{more}",
                    of_kind.len(),
                    shown.join(" ")
                );
            }
        }
        if !self.models_ruled_out.is_empty() {
            let _ = writeln!(out, "\nnot: {}", self.models_ruled_out.join(", "));
        }
        for note in &self.notes {
            let _ = writeln!(out, "note: {note}");
        }
        for kind in &kinds {
            for (i, a) in self
                .anomalies
                .iter()
                .filter(|a| a.kind == *kind)
                .take(TABLE_EXPLANATIONS_PER_KIND_MAX)
                .enumerate()
            {
                let _ = writeln!(out, "\n{kind} #{i}");
                for line in a.explanation.lines() {
                    let _ = writeln!(out, "  {line}");
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(anomalies: Vec<Anomaly>) -> Report {
        Report {
            txns: 3,
            committed: 2,
            aborted: 1,
            unknown: 0,
            verdict: if anomalies.is_empty() {
                Verdict::Valid
            } else {
                Verdict::Invalid
            },
            anomalies,
            models_ruled_out: vec![],
            notes: vec![],
            check_time: Duration::from_millis(2),
            killed: vec![],
            lost_acks: None,
        }
    }

    #[test]
    fn json_line_starts_with_the_agreed_fields_in_order() {
        let r = report(vec![Anomaly {
            kind: "G1a".into(),
            txns: vec![TxnId(1), TxnId(2)],
            explanation: "x".into(),
        }]);
        let line = r.json_line();
        assert!(
            line.starts_with(
                r#"{"txns":3,"committed":2,"aborted":1,"anomalies":[{"kind":"G1a","txns":[1,2],"explanation":"x"}],"#
            ),
            "{line}"
        );
        assert!(!line.contains('\n'));
        let parsed: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(parsed["valid"], serde_json::Value::Bool(false));
    }

    #[test]
    fn json_line_of_a_valid_report_has_no_anomalies() {
        let line = report(vec![]).json_line();
        assert!(
            line.starts_with(r#"{"txns":3,"committed":2,"aborted":1,"anomalies":[],"#),
            "{line}"
        );
    }

    #[test]
    fn table_lists_each_kind_once() {
        let a = |k: &str, t: u64| Anomaly {
            kind: k.into(),
            txns: vec![TxnId(t)],
            explanation: format!("{k} at {t}"),
        };
        let table = report(vec![a("G1a", 1), a("G1a", 2), a("lost-update", 3)]).table();
        assert!(table.contains("INVALID"), "{table}");
        let rows: Vec<Vec<&str>> = table
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        let g1a_rows = rows
            .iter()
            .filter(|r| r[..] == ["G1a", "2", "T1", "T2"])
            .count();
        assert_eq!(g1a_rows, 1, "{table}");
        assert!(
            rows.iter().any(|r| r[..] == ["lost-update", "1", "T3"]),
            "{table}"
        );
    }

    #[test]
    fn verdicts_combine_worst_first() {
        assert_eq!(Verdict::Valid.and(Verdict::Unknown), Verdict::Unknown);
        assert_eq!(Verdict::Unknown.and(Verdict::Invalid), Verdict::Invalid);
        assert_eq!(Verdict::Valid.and(Verdict::Valid), Verdict::Valid);
    }
}
