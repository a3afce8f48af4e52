//! Verifying a log (pure: bytes in, a report out). It reads the whole log before judging, so
//! that it can say what happened rather than only where the chain first breaks: an entry
//! edited in place, entries missing, an entry inserted, entries swapped, a chain rewritten up
//! to a signed checkpoint, a log whose beginning was cut off.

use std::collections::BTreeMap;
use std::fmt;

use envelope::VerifyingKey;
use serde::Serialize;

use crate::chain::{Entry, GENESIS};

/// What is wrong at one place of a log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProblemKind {
    /// The line is not an entry at all.
    Unreadable,
    /// The entry's fields do not give its recorded hash, or the line is not the canonical
    /// form of its fields: it was changed after it was written.
    Edited,
    /// Entries are absent from the sequence.
    Missing,
    /// A second entry claims a seq that a chained entry already holds.
    Inserted,
    /// The entry stands after one with a higher seq.
    Reordered,
    /// The entry's `prev` is not the hash of the entry before it: the entry before was
    /// replaced with one whose hash was recomputed.
    BrokenLink,
    /// A checkpoint's signature does not verify: the chain up to it was rewritten.
    BadSignature,
    /// The log starts neither at seq 1 nor at a signed checkpoint: its beginning was removed.
    BadStart,
}

/// One problem, with the place it was found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// Line number in the file, from 1.
    pub line: usize,
    /// The entry's seq where the line is an entry.
    pub seq: Option<u64>,
    /// What is wrong.
    pub kind: ProblemKind,
    /// A sentence for the operator.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

/// The outcome of verifying one log.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    /// Lines that are entries.
    pub entries: u64,
    /// Seq of the first and the last entry.
    pub first_seq: Option<u64>,
    /// See `first_seq`.
    pub last_seq: Option<u64>,
    /// Hex hash of the last entry.
    pub head: Option<String>,
    /// Checkpoints whose signature verifies.
    pub checkpoints: u64,
    /// Seq of the last checkpoint that verifies.
    pub last_checkpoint: Option<u64>,
    /// Entries after the last verified checkpoint: protected by the chain only, until the
    /// next checkpoint signs them.
    pub unsigned_tail: u64,
    /// Everything wrong, in line order.
    pub problems: Vec<Problem>,
}

impl Report {
    /// Whether nothing is wrong.
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

struct Line {
    line: usize,
    entry: Entry,
    sound: bool,
}

/// Verifies the text of one log file (entries one per line) against the trusted audit keys.
pub fn verify(text: &[u8], keys: &[VerifyingKey]) -> Report {
    let mut report = Report::default();
    let mut lines = Vec::new();
    let body = text.strip_suffix(b"\n").unwrap_or(text);
    if !body.is_empty() {
        for (i, raw) in body.split(|&b| b == b'\n').enumerate() {
            read_line(i + 1, raw, &mut lines, &mut report.problems);
        }
    }
    report.entries = lines.len() as u64;

    // Who holds each seq. Where two lines claim one, the one the chain goes through (its hash
    // is the next entry's prev, its prev the previous entry's hash) is the original.
    let mut by_seq: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
    for (i, l) in lines.iter().enumerate() {
        by_seq.entry(l.entry.seq).or_default().push(i);
    }
    let mut chained: BTreeMap<u64, usize> = BTreeMap::new();
    for (&seq, idx) in &by_seq {
        let pick = if idx.len() == 1 {
            idx[0]
        } else {
            let prev_hash = by_seq
                .get(&seq.wrapping_sub(1))
                .map(|v| lines[v[0]].entry.hash.as_str());
            let next_prev: Vec<&str> = by_seq
                .get(&(seq + 1))
                .map(|v| v.iter().map(|&j| lines[j].entry.prev.as_str()).collect())
                .unwrap_or_default();
            // A line also counts for standing where its seq belongs in the file.
            let fits = |i: usize| {
                (i > 0 && lines[i - 1].entry.seq + 1 == seq)
                    || lines.get(i + 1).is_some_and(|n| n.entry.seq == seq + 1)
            };
            let score = |&i: &usize| {
                let e = &lines[i].entry;
                u8::from(lines[i].sound)
                    + u8::from(Some(e.prev.as_str()) == prev_hash)
                    + u8::from(next_prev.contains(&e.hash.as_str()))
                    + u8::from(fits(i))
                    // A verifying signature outweighs everything else: only the key makes one.
                    + 4 * u8::from(e.is_checkpoint() && e.check_signature(keys).is_ok())
            };
            // Highest score wins; on a tie the earlier line.
            let best = idx
                .iter()
                .copied()
                .max_by_key(|i| (score(i), usize::MAX - i));
            let best = best.unwrap_or(idx[0]);
            for &i in idx.iter().filter(|&&i| i != best) {
                report.problems.push(Problem {
                    line: lines[i].line,
                    seq: Some(seq),
                    kind: ProblemKind::Inserted,
                    message: format!(
                        "entry claims seq {seq}, which the entry at line {} holds in the chain: inserted",
                        lines[best].line
                    ),
                });
            }
            best
        };
        chained.insert(seq, pick);
    }

    // Order in the file.
    let mut highest: Option<(u64, usize)> = None;
    for (i, l) in lines.iter().enumerate() {
        if chained.get(&l.entry.seq) != Some(&i) {
            continue;
        }
        match highest {
            Some((seq, line)) if l.entry.seq < seq => report.problems.push(Problem {
                line: l.line,
                seq: Some(l.entry.seq),
                kind: ProblemKind::Reordered,
                message: format!(
                    "entry {} stands after entry {seq} (line {line}): entries were reordered",
                    l.entry.seq
                ),
            }),
            _ => highest = Some((l.entry.seq, l.line)),
        }
    }

    // Gaps, links and the start.
    let mut prev: Option<(u64, usize)> = None;
    for (&seq, &i) in &chained {
        let l = &lines[i];
        match prev {
            None => check_start(l, keys, &mut report.problems),
            Some((p, pi)) if seq > p + 1 => {
                report.problems.push(Problem {
                    line: l.line,
                    seq: Some(seq),
                    kind: ProblemKind::Missing,
                    message: missing(p + 1, seq - 1, lines[pi].line, l.line),
                });
            }
            Some((_, pi)) => {
                if l.entry.prev != lines[pi].entry.hash {
                    report.problems.push(Problem {
                        line: l.line,
                        seq: Some(seq),
                        kind: ProblemKind::BrokenLink,
                        message: format!(
                            "entry {seq} does not link to entry {} (line {}): that entry was replaced",
                            seq - 1,
                            lines[pi].line
                        ),
                    });
                }
            }
        }
        prev = Some((seq, i));
    }

    // Checkpoints.
    let mut last_good: Option<u64> = None;
    let mut good_before: Option<u64> = None;
    for (&seq, &i) in &chained {
        let l = &lines[i];
        if !l.entry.is_checkpoint() {
            continue;
        }
        match l.entry.check_signature(keys) {
            Ok(()) => {
                report.checkpoints += 1;
                last_good = Some(seq);
                good_before = Some(seq);
            }
            Err(why) => report.problems.push(Problem {
                line: l.line,
                seq: Some(seq),
                kind: ProblemKind::BadSignature,
                message: format!(
                    "checkpoint {seq}: {why}: the entries {} up to it were rewritten",
                    match good_before {
                        Some(g) => format!("after checkpoint {g}"),
                        None => "from the start".into(),
                    }
                ),
            }),
        }
    }
    report.first_seq = chained.keys().next().copied();
    report.last_seq = chained.keys().next_back().copied();
    report.head = chained
        .values()
        .next_back()
        .map(|&i| lines[i].entry.hash.clone());
    report.last_checkpoint = last_good;
    report.unsigned_tail = match (last_good, report.last_seq) {
        (Some(c), Some(l)) => l - c,
        (None, _) => chained.len() as u64,
        _ => 0,
    };
    report.problems.sort_by_key(|p| (p.line, p.kind as u8));
    report
}

fn read_line(number: usize, raw: &[u8], lines: &mut Vec<Line>, problems: &mut Vec<Problem>) {
    let parsed = std::str::from_utf8(raw)
        .map_err(|e| e.to_string())
        .and_then(|s| {
            serde_json::from_str::<Entry>(s)
                .map_err(|e| e.to_string())
                .map(|e| (s, e))
        });
    match parsed {
        Ok((text, entry)) => {
            let hash_ok = entry.stored_hash() == Some(entry.computed_hash());
            let canonical = entry.to_line() == text;
            if !hash_ok || !canonical {
                problems.push(Problem {
                    line: number,
                    seq: Some(entry.seq),
                    kind: ProblemKind::Edited,
                    message: if hash_ok {
                        format!(
                            "entry {} was rewritten (its line is not the form it was written in)",
                            entry.seq
                        )
                    } else {
                        format!(
                            "entry {} was edited (its fields do not give its hash)",
                            entry.seq
                        )
                    },
                });
            }
            lines.push(Line {
                line: number,
                entry,
                sound: hash_ok && canonical,
            });
        }
        Err(why) => problems.push(Problem {
            line: number,
            seq: None,
            kind: ProblemKind::Unreadable,
            message: format!("not an audit entry ({why})"),
        }),
    }
}

fn check_start(l: &Line, keys: &[VerifyingKey], problems: &mut Vec<Problem>) {
    let e = &l.entry;
    let message = if e.seq == 1 {
        if e.stored_prev() == Some(GENESIS) {
            return;
        }
        "entry 1 does not start a chain (its prev is not zero)".to_string()
    } else if e.is_checkpoint() && e.check_signature(keys).is_ok() {
        // A log continued from an archive starts with the archive's closing checkpoint.
        return;
    } else {
        format!(
            "the log starts at entry {}, which is not a signed checkpoint: entries 1 to {} are missing",
            e.seq,
            e.seq - 1
        )
    };
    problems.push(Problem {
        line: l.line,
        seq: Some(e.seq),
        kind: ProblemKind::BadStart,
        message,
    });
}

fn missing(from: u64, to: u64, before: usize, after: usize) -> String {
    let what = if from == to {
        format!("entry {from} is")
    } else {
        format!("entries {from} to {to} are")
    };
    format!("{what} missing between line {before} and line {after}")
}

/// Verifies archives and the live log as one history, oldest first: each verifies on its own,
/// and each after the first must begin with the closing checkpoint of the one before.
/// Returns one report per file; continuity problems go to the later file's report.
pub fn verify_series(files: &[(&str, &[u8])], keys: &[VerifyingKey]) -> Vec<Report> {
    let mut out: Vec<Report> = Vec::new();
    for (k, (_, text)) in files.iter().enumerate() {
        let mut report = verify(text, keys);
        if let Some(before) = out.last() {
            let closing = before.head.clone();
            let first = first_entry(text);
            let continues = match (&first, &closing) {
                (Some(e), Some(h)) => {
                    &e.hash == h && Some(e.seq) == before.last_seq && e.is_checkpoint()
                }
                _ => false,
            };
            if !continues {
                report.problems.insert(
                    0,
                    Problem {
                        line: 1,
                        seq: first.map(|e| e.seq),
                        kind: ProblemKind::Missing,
                        message: format!(
                            "does not begin with the closing checkpoint of {} (entry {:?}): entries between the two files are missing",
                            files[k - 1].0,
                            before.last_seq
                        ),
                    },
                );
            }
        }
        out.push(report);
    }
    out
}

fn first_entry(text: &[u8]) -> Option<Entry> {
    let line = text.split(|&b| b == b'\n').next()?;
    serde_json::from_slice(line).ok()
}

/// Where a log ended when someone outside it last looked: the seq and hash of an entry. The
/// vault seals the head it wrote last beside its state, and an auditor keeps signed
/// checkpoints ([`check_anchors`]) on write-once media; a log cut back to an earlier
/// checkpoint, or replaced by a fresh one, verifies on its own but no longer holds them
/// (issue #31, item 2).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Head {
    /// Seq of the last entry (0 for an empty log).
    pub seq: u64,
    /// Its hash, hex (empty for an empty log).
    pub hash: String,
}

/// Whether the series (archives oldest first, then the live log) holds `head`: an entry of
/// that seq with that hash. `Err` says what is wrong, for the operator.
pub fn holds_head(files: &[(&str, &[u8])], head: &Head) -> Result<(), String> {
    if head.seq == 0 {
        return Ok(());
    }
    let mut last: Option<u64> = None;
    for (_, text) in files {
        for raw in text.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let Ok(e) = serde_json::from_slice::<Entry>(raw) else {
                continue;
            };
            last = Some(last.map_or(e.seq, |l| l.max(e.seq)));
            if e.seq == head.seq {
                return if e.hash == head.hash {
                    Ok(())
                } else {
                    Err(format!(
                        "entry {} is not the entry that was written there (hash {}, expected {}): the log was rewritten",
                        head.seq, e.hash, head.hash
                    ))
                };
            }
        }
    }
    Err(match last {
        None => format!(
            "the log holds no entries, but entry {} was written: the log was deleted or replaced",
            head.seq
        ),
        Some(l) => format!(
            "the log ends at entry {l}, but entry {} was written: entries were removed from its end",
            head.seq
        ),
    })
}

/// Checks the anchored checkpoints (one checkpoint line each, as `vault admin audit anchor`
/// printed them onto write-once media) against the series: each must carry a signature by a
/// trusted key, and the series must hold it. Returns one sentence per failure.
pub fn check_anchors(
    files: &[(&str, &[u8])],
    anchors: &[u8],
    keys: &[VerifyingKey],
) -> Vec<String> {
    let mut out = Vec::new();
    for (i, raw) in anchors.split(|&b| b == b'\n').enumerate() {
        if raw.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let line = i + 1;
        let Ok(e) = serde_json::from_slice::<Entry>(raw) else {
            out.push(format!("anchor line {line}: not an audit checkpoint line"));
            continue;
        };
        if !e.is_checkpoint() {
            out.push(format!(
                "anchor line {line}: entry {} is not a checkpoint",
                e.seq
            ));
            continue;
        }
        if e.stored_hash() != Some(e.computed_hash()) {
            out.push(format!(
                "anchor line {line}: checkpoint {} was edited",
                e.seq
            ));
            continue;
        }
        if let Err(why) = e.check_signature(keys) {
            out.push(format!("anchor line {line}: checkpoint {}: {why}", e.seq));
            continue;
        }
        let head = Head {
            seq: e.seq,
            hash: e.hash.clone(),
        };
        if let Err(why) = holds_head(files, &head) {
            out.push(format!(
                "anchor line {line}: checkpoint {} of {}: {why}",
                e.seq, e.time
            ));
        }
    }
    out
}

#[cfg(test)]
mod head_tests {
    use super::*;
    use crate::chain::{Chain, ClockStatus, Record};
    use envelope::SigningKey;

    fn log(n: usize, key: &SigningKey) -> (String, Vec<Entry>) {
        let mut chain = Chain::genesis();
        let mut text = String::new();
        let mut entries = Vec::new();
        for i in 0..n {
            let e = chain.append(Record::new(
                "2026-12-08T00:00:00.000Z",
                ClockStatus::Synced,
                "op",
                &format!("a{i}"),
                "ok",
            ));
            text.push_str(&e.to_line());
            text.push('\n');
            entries.push(e);
            if i % 3 == 2 {
                let cp = chain.checkpoint("2026-12-08T00:00:00.000Z", ClockStatus::Synced, key);
                text.push_str(&cp.to_line());
                text.push('\n');
                entries.push(cp);
            }
        }
        (text, entries)
    }

    #[test]
    fn a_log_cut_back_to_a_checkpoint_no_longer_holds_its_head_or_anchor() {
        let key = SigningKey::from_seed("vault-audit", &[3; 32]).expect("key");
        let (text, entries) = log(9, &key);
        let last = entries.last().expect("entries");
        let head = Head {
            seq: last.seq,
            hash: last.hash.clone(),
        };
        assert_eq!(holds_head(&[("live", text.as_bytes())], &head), Ok(()));
        // Cut back to the second checkpoint: verifies alone, loses the head.
        let cut_at = entries
            .iter()
            .filter(|e| e.is_checkpoint())
            .nth(1)
            .expect("cp")
            .seq;
        let cut: String = text
            .lines()
            .take(cut_at as usize)
            .map(|l| format!("{l}\n"))
            .collect();
        assert!(crate::verify(cut.as_bytes(), &[key.public().clone()]).ok());
        let why = holds_head(&[("live", cut.as_bytes())], &head).expect_err("cut");
        assert!(why.contains("removed from its end"), "{why}");
        assert!(holds_head(&[("live", b"")], &head)
            .expect_err("gone")
            .contains("deleted"));
        // The last checkpoint anchored: checks against the whole log, fails on the cut one.
        let cp = entries
            .iter()
            .rev()
            .find(|e| e.is_checkpoint())
            .expect("cp");
        let anchors = format!("{}\n", cp.to_line());
        let keys = [key.public().clone()];
        assert!(check_anchors(&[("live", text.as_bytes())], anchors.as_bytes(), &keys).is_empty());
        assert_eq!(
            check_anchors(&[("live", cut.as_bytes())], anchors.as_bytes(), &keys).len(),
            1
        );
        // An anchor not signed by a trusted key does not count.
        let other = SigningKey::from_seed("other", &[4; 32]).expect("key");
        assert_eq!(
            check_anchors(
                &[("live", text.as_bytes())],
                anchors.as_bytes(),
                &[other.public().clone()]
            )
            .len(),
            1
        );
    }
}
