//! Person-level anonymization over a person table and an event table (issue #12; R-AN-1,
//! R-AN-2). Medical data has many event rows per person, so a privacy model applied to rows
//! protects rows, not people: a person with 40 diagnosis rows is 40 records, and the set of
//! their codes can single them out however the rows are generalized. Here equivalence classes
//! are formed over **persons**: the quasi-identifiers of the person table plus, for each
//! declared event kind, the **set** of that person's codes as a set-valued quasi-identifier
//! whose hierarchy is derived from the code hierarchy (a set at level j is the set of its
//! codes' level-j generalizations). The ordinary search (optimal, heuristic or Mondrian) then
//! runs on one row per person, and the outputs are made consistent with it:
//! - a suppressed person leaves nothing: no person row and none of their event rows;
//! - each released event code is generalized to the level its person's set was released at,
//!   so the codes a reader can collect for a person are exactly the released set;
//! - event rows of kinds not declared as sets are left out (an undeclared code would be an
//!   unprotected quasi-identifier);
//! - the person id becomes a release key, HMAC-SHA256 under a per-release secret, and
//!   event dates are shifted by a per-person offset from the same key, which keeps every
//!   interval between a person's events (researchers need durations).
//!
//! The whole set is one quasi-identifier: two persons are alike only if their released sets
//! are equal. That is k-anonymity of the whole set, which implies the k^m-anonymity of Terrovitis
//! et al. for every m, and costs more generalization than k^m for small m.

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use ring::hmac;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::error::AnonError;
use crate::hierarchy::Hierarchy;
use crate::job::{self, JobError, Parsed, Progress, Settings};
use crate::table::{self, csv_io, find_columns, io_err, Reader, TableError};

/// Name of the staging column that marks suppressed persons; refused in inputs.
const FLAG: &str = "__enclave_suppressed";
/// Value of an empty set (a person with no event of the kind).
pub const EMPTY_SET: &str = "-";
/// Separator of the codes in a set's text.
pub const SET_SEPARATOR: char = '|';
/// Longest date shift allowed, in days.
pub const MAX_SHIFT_DAYS: u32 = 3650;

/// The two kinds of output the Act allows (R-AN-1; the 2024 amendment added the second).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// 匿名加工医療情報: the privacy model holds per person; no value that singles anyone out.
    #[default]
    Anonymized,
    /// 仮名加工医療情報: values kept, identifiers replaced by release-specific keys; only for
    /// recipients registered as certified users.
    Pseudonymized,
}

impl Profile {
    /// Name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Profile::Anonymized => "anonymized",
            Profile::Pseudonymized => "pseudonymized",
        }
    }

    /// The legal term.
    pub fn legal_name(self) -> &'static str {
        match self {
            Profile::Anonymized => "匿名加工医療情報",
            Profile::Pseudonymized => "仮名加工医療情報",
        }
    }

    /// The rules a release of this profile follows (docs/anonymization.md lists the same).
    pub fn rules(self) -> &'static [&'static str] {
        match self {
            Profile::Anonymized => &[
                "every column of both tables is a quasi-identifier, a sensitive attribute, \
                 dropped, or kept by name; any other column is refused",
                "k-anonymity with k >= 2 (and l, t when given) holds per person over the \
                 person table's quasi-identifiers and the sets of event codes",
                "a suppressed person leaves no person row and no event row",
                "event codes are generalized to their person's released set; event kinds \
                 not declared as sets are left out",
                "person ids are replaced by keys under a per-release secret",
            ],
            Profile::Pseudonymized => &[
                "every column of both tables is a quasi-identifier (kept as it is), \
                 dropped, or kept by name; any other column is refused",
                "values are kept: no generalization, no suppression; k, l and t do not apply \
                 and are refused",
                "event kinds not declared as sets are left out",
                "person ids are replaced by keys under a per-release secret, so the \
                 recipient cannot link them to anything outside the release",
                "only for recipients registered as certified users (checked when the vault \
                 releases it)",
            ],
        }
    }
}

/// An event kind whose codes form a set-valued quasi-identifier.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventSet {
    /// Value of the kind column that selects the rows (e.g. `dx`).
    pub kind: String,
    /// Hierarchy file of the codes (ARX format), e.g. ICD-10 code → category → chapter → `*`.
    pub hierarchy: String,
}

impl EventSet {
    /// The derived quasi-identifier's column in the released person table.
    pub fn column(&self) -> String {
        format!("{}_codes", self.kind)
    }
}

/// What a person-level run does beyond the row-level settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PersonSettings {
    /// The privacy model, search and the person table's quasi-identifiers and drops.
    pub model: Settings,
    /// Person id column, in both tables; replaced by the release key.
    pub id: String,
    /// Column of the event table that names the kind of event.
    pub kind_column: String,
    /// Column of the event table holding the code.
    pub code_column: String,
    /// Event kinds protected as set-valued quasi-identifiers; rows of other kinds are left out.
    pub event_sets: Vec<EventSet>,
    /// Date columns (`YYYY-MM-DD`) of the event table shifted by the person's offset.
    #[serde(default)]
    pub shift_dates: Vec<String>,
    /// Offsets are drawn from −max … +max days.
    #[serde(default)]
    pub max_shift_days: u32,
    /// Event columns left out of the release (e.g. the institution code).
    #[serde(default)]
    pub drop_events: Vec<String>,
    /// Which kind of output.
    #[serde(default)]
    pub profile: Profile,
    /// Person-table columns released as they are (reviewed: not identifying).
    #[serde(default)]
    pub keep: Vec<String>,
    /// Event-table columns released as they are.
    #[serde(default)]
    pub keep_events: Vec<String>,
    /// Top and bottom coding of kept numeric person columns: values below `low` are written
    /// `<low`, above `high` `>high` (extreme lab values single people out).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub top_bottom: std::collections::BTreeMap<String, (f64, f64)>,
    /// Event kinds whose number of rows per person is a quasi-identifier (`KIND_count`,
    /// generalized in intervals of these widths, each dividing the next). The kind is then
    /// *summarized*: its rows are not released, because their number would show exactly what
    /// the column generalizes.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub event_counts: std::collections::BTreeMap<String, Vec<f64>>,
    /// Top and bottom coding of a kept event column in the rows of one code, keyed
    /// `COLUMN@CODE` (lab values differ in scale per test: `value@3D046000001906202` is
    /// HbA1c).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub top_bottom_events: std::collections::BTreeMap<String, (f64, f64)>,
    /// Event kinds whose first date (earliest value of the named date column) is a
    /// quasi-identifier (`KIND_first`, day → month → year → decade, `-` for none). The kind
    /// is then summarized too: its rows' dates would show the first one.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub first_dates: std::collections::BTreeMap<String, String>,
}

/// A person's rows of the summarized kinds, per derived column (by index in
/// [`PersonSettings::derived`]): the number of rows for a count, the first date for a first
/// date.
struct Summary {
    counts: Vec<u64>,
    firsts: Vec<Option<String>>,
}

impl Summary {
    fn new(n: usize) -> Self {
        Self {
            counts: vec![0; n],
            firsts: vec![None; n],
        }
    }

    /// The value of derived column `d` (for nobody's rows: `0`, or `-` for no date).
    fn value(this: Option<&Self>, derived: &Derived, d: usize) -> String {
        match derived {
            Derived::Count(_) => this.map_or(0, |s| s.counts[d]).to_string(),
            Derived::First(_) => this
                .and_then(|s| s.firsts[d].clone())
                .unwrap_or_else(|| EMPTY_SET.to_owned()),
        }
    }
}

/// Top/bottom coding of one column, counting what it coded (for the report).
struct Coding {
    low: f64,
    high: f64,
    coded_low: u64,
    coded_high: u64,
}

impl Coding {
    fn new((low, high): (f64, f64)) -> Self {
        Self {
            low,
            high,
            coded_low: 0,
            coded_high: 0,
        }
    }

    /// `v` coded, counted; `None` if it is not a number.
    fn apply<'v>(&mut self, v: &'v str) -> Option<std::borrow::Cow<'v, str>> {
        let out = top_bottom_code(v, self.low, self.high)?;
        self.coded_low += u64::from(out.starts_with('<'));
        self.coded_high += u64::from(out.starts_with('>'));
        Some(out)
    }

    /// The report's entry for `column` (and the `code` whose rows were coded, if any).
    fn report(&self, column: &str, code: Option<&str>) -> Value {
        let mut v = json!({"column": column, "low": self.low, "high": self.high,
                           "coded_low": self.coded_low, "coded_high": self.coded_high});
        if let Some(code) = code {
            v["code"] = json!(code);
        }
        v
    }
}

/// What the person table says of a summarized event kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Derived {
    /// The number of the person's rows of the kind.
    Count(String),
    /// The date of the first of them.
    First(String),
}

impl Derived {
    /// The column in the released person table.
    pub fn column(&self) -> String {
        match self {
            Derived::Count(k) => format!("{k}_count"),
            Derived::First(k) => format!("{k}_first"),
        }
    }

    /// The kind.
    pub fn kind(&self) -> &str {
        match self {
            Derived::Count(k) | Derived::First(k) => k,
        }
    }
}

/// `v` top- or bottom-coded into `[low, high]`; `None` if it is not a number.
pub fn top_bottom_code(v: &str, low: f64, high: f64) -> Option<std::borrow::Cow<'_, str>> {
    if v.is_empty() {
        return Some(v.into());
    }
    let x: f64 = v.trim().parse().ok().filter(|x: &f64| x.is_finite())?;
    Some(if x < low {
        format!("<{low}").into()
    } else if x > high {
        format!(">{high}").into()
    } else {
        v.into()
    })
}

impl PersonSettings {
    /// The derived quasi-identifiers, in level order (after the person table's and the
    /// sets'): every count, then every first date.
    pub fn derived(&self) -> Vec<Derived> {
        self.event_counts
            .keys()
            .map(|k| Derived::Count(k.clone()))
            .chain(self.first_dates.keys().map(|k| Derived::First(k.clone())))
            .collect()
    }

    /// Checks what can be checked before reading data.
    pub fn check(&self) -> Result<(), JobError> {
        let bad = |m: String| Err(JobError::Settings(m));
        if self
            .model
            .quasi_identifiers
            .iter()
            .any(|q| q.column == self.id)
        {
            return bad(format!(
                "the person id {} cannot be a quasi-identifier",
                self.id
            ));
        }
        if self.model.sensitive.contains(&self.id) || self.model.drop.contains(&self.id) {
            return bad(format!(
                "the person id {} is replaced by the release key; do not name it as sensitive or \
                 dropped",
                self.id
            ));
        }
        if self.event_sets.is_empty() {
            return bad(
                "declare at least one event kind as a set (--event-set KIND=HIERARCHY)".into(),
            );
        }
        for (i, s) in self.event_sets.iter().enumerate() {
            if self.event_sets[..i].iter().any(|p| p.kind == s.kind) {
                return bad(format!("event kind {} is declared twice", s.kind));
            }
        }
        for c in [&self.kind_column, &self.code_column, &self.id] {
            if self.drop_events.contains(c) {
                return bad(format!(
                    "--drop-events {c}: the column is needed in the release"
                ));
            }
        }
        if !self.shift_dates.is_empty() && self.max_shift_days == 0 {
            return bad("dates to shift are named but the largest shift is 0 days".into());
        }
        if self.max_shift_days > MAX_SHIFT_DAYS {
            return bad(format!(
                "a shift of up to {} days is more than {MAX_SHIFT_DAYS}",
                self.max_shift_days
            ));
        }
        for (c, (low, high)) in &self.top_bottom {
            if !self.keep.contains(c) {
                return bad(format!(
                    "top/bottom coding of {c}: only kept columns (--keep) are coded"
                ));
            }
            if !(low.is_finite() && high.is_finite() && low < high) {
                return bad(format!("top/bottom coding of {c}: need LOW < HIGH"));
            }
        }
        for (key, (low, high)) in &self.top_bottom_events {
            let Some((column, code)) = key
                .split_once('@')
                .filter(|(c, k)| !c.is_empty() && !k.is_empty())
            else {
                return bad(format!(
                    "top/bottom coding of events {key}: expected COLUMN@CODE"
                ));
            };
            if !self.keep_events.iter().any(|k| k == column) {
                return bad(format!(
                    "top/bottom coding of events {key}: only kept event columns \
                     (--keep-events) are coded"
                ));
            }
            if !(low.is_finite() && high.is_finite() && low < high) {
                return bad(format!(
                    "top/bottom coding of {column} for {code}: need LOW < HIGH"
                ));
            }
        }
        for (kind, widths) in &self.event_counts {
            // Counts are whole numbers: widths below 1 would split no interval.
            if crate::builders::check_widths(kind, widths).is_err()
                || widths.iter().any(|w| *w < 1.0)
            {
                return bad(format!(
                    "event count of {kind}: give interval widths of at least 1, each dividing \
                     the next (e.g. 5,10,20)"
                ));
            }
        }
        for (kind, column) in &self.first_dates {
            if [&self.id, &self.kind_column, &self.code_column].contains(&column) {
                return bad(format!(
                    "first date of {kind}: {column} is not a date column"
                ));
            }
        }
        for d in &self.shift_dates {
            if [&self.id, &self.kind_column, &self.code_column].contains(&d) {
                return bad(format!("{d} cannot be shifted: it is not a date column"));
            }
        }
        match self.profile {
            Profile::Anonymized if self.model.k < 2 => {
                return bad(format!(
                    "the anonymized profile needs k >= 2 (k = {}); for values kept as they \
                     are use the pseudonymized profile",
                    self.model.k
                ));
            }
            Profile::Pseudonymized
                if self.model.k > 1
                    || self.model.l.is_some()
                    || self.model.t.is_some()
                    || self.model.suppression_limit > 0.0
                    || !self.top_bottom.is_empty() =>
            {
                return bad(
                    "the pseudonymized profile keeps values as they are: k, l, t, the \
                     suppression limit and top/bottom coding do not apply; leave them out"
                        .into(),
                );
            }
            _ => {}
        }
        let mut model = self.model.clone();
        if let Some(levels) = model.levels.take() {
            let want = model.quasi_identifiers.len() + self.event_sets.len() + self.derived().len();
            if levels.len() != want {
                return bad(format!(
                    "{} fixed levels for {want} quasi-identifiers (the person table's, one \
                     per event set, one per event count and first date)",
                    levels.len()
                ));
            }
            if model.mode == job::Mode::Mondrian {
                return bad("fixed levels are for full-domain generalization".into());
            }
        }
        model.check()
    }
}

/// Files of a person-level run.
pub struct PersonFiles<'a> {
    /// Person table, one row per person (CSV with a header row, or Parquet).
    pub persons: &'a Path,
    /// Event table, any number of rows per person (CSV or Parquet).
    pub events: &'a Path,
    /// Released person table (CSV).
    pub output_persons: &'a Path,
    /// Released event table (CSV).
    pub output_events: &'a Path,
    /// Field delimiter of the CSV inputs and the outputs.
    pub delimiter: u8,
}

/// The per-release secret behind release keys and date shifts. Never stored by a run.
pub struct ReleaseKey(hmac::Key);

impl ReleaseKey {
    /// A key from 32 secret bytes.
    pub fn new(secret: &[u8; 32]) -> Self {
        Self(hmac::Key::new(hmac::HMAC_SHA256, secret))
    }

    fn tag(&self, purpose: &[u8], id: &str) -> hmac::Tag {
        let mut ctx = hmac::Context::with_key(&self.0);
        ctx.update(purpose);
        ctx.update(id.as_bytes());
        ctx.sign()
    }

    /// The release key of person `id`: 128 bits of HMAC-SHA256, hex.
    pub fn person(&self, id: &str) -> String {
        hex::encode(&self.tag(b"enclave-person-key-v1\0", id).as_ref()[..16])
    }

    /// The date offset of person `id`, uniform in −max … +max days (the modulo bias is
    /// below 2⁻⁵⁰ for any allowed max).
    pub fn shift(&self, id: &str, max: u32) -> i64 {
        let t = self.tag(b"enclave-date-shift-v1\0", id);
        let mut b = [0u8; 8];
        b.copy_from_slice(&t.as_ref()[..8]);
        let span = 2 * u64::from(max) + 1;
        (u64::from_le_bytes(b) % span) as i64 - i64::from(max)
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Hinnant's algorithm).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day number (inverse of [`days_from_civil`]).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (
        if m <= 2 {
            yoe + era * 400 + 1
        } else {
            yoe + era * 400
        },
        m,
        d,
    )
}

/// `YYYY-MM-DD` shifted by `days`; `None` if the text is not a valid date.
pub fn shift_date(text: &str, days: i64) -> Option<String> {
    let b = text.as_bytes();
    if b.len() != 10
        || b[4] != b'-'
        || b[7] != b'-'
        || !b
            .iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit())
    {
        return None;
    }
    let y: i64 = text[..4].parse().ok()?;
    let m: u32 = text[5..7].parse().ok()?;
    let d: u32 = text[8..].parse().ok()?;
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let month_days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if !(1..=12).contains(&m) || d == 0 || d > month_days[m as usize - 1] {
        return None;
    }
    let (y, m, d) = civil_from_days(days_from_civil(y, m, d) + days);
    (0..=9999)
        .contains(&y)
        .then(|| format!("{y:04}-{m:02}-{d:02}"))
}

/// A set-valued quasi-identifier: the distinct code sets found (as sorted leaves of the code
/// hierarchy) and the hierarchy over them.
pub struct SetHierarchy {
    /// Over the sets' texts: level j of a set is the set of its codes at level j; the top
    /// level is `*` for every non-empty set and [`EMPTY_SET`] for the empty one.
    pub hierarchy: Hierarchy,
    /// Leaf index of each distinct set.
    index: HashMap<Vec<u32>, u32>,
}

/// The text of the set of `leaves` (sorted, distinct) at `level` of `codes`.
pub fn set_text(codes: &Hierarchy, leaves: &[u32], level: usize) -> String {
    if leaves.is_empty() {
        return EMPTY_SET.to_owned();
    }
    let values: BTreeSet<&str> = leaves
        .iter()
        .map(|&l| codes.value(level, codes.code(l, level)))
        .collect();
    let mut out = String::new();
    for v in values {
        if !out.is_empty() {
            out.push(SET_SEPARATOR);
        }
        out.push_str(v);
    }
    out
}

impl SetHierarchy {
    /// The hierarchy named `column` over `sets` (each sorted and distinct; the empty set is
    /// always included) generalized through `codes`.
    pub fn build(
        column: &str,
        codes: &Hierarchy,
        sets: impl IntoIterator<Item = Vec<u32>>,
    ) -> Result<Self, AnonError> {
        if codes.height() < 2 {
            return Err(AnonError::Config(format!(
                "the code hierarchy of {column} has one level: nothing to generalize to"
            )));
        }
        for leaf in 0..codes.leaves() as u32 {
            for level in 0..codes.height() {
                let v = codes.value(level, codes.code(leaf, level));
                if v.contains(SET_SEPARATOR) || v == EMPTY_SET || v.is_empty() {
                    return Err(AnonError::Config(format!(
                        "code hierarchy of {column}: value {v:?} is empty, {EMPTY_SET:?} or \
                         contains {SET_SEPARATOR:?}, which set values use"
                    )));
                }
            }
        }
        let mut distinct: BTreeSet<Vec<u32>> = sets.into_iter().collect();
        distinct.insert(Vec::new());
        let top = codes.height() - 1;
        let mut rows = Vec::with_capacity(distinct.len());
        let mut index = HashMap::with_capacity(distinct.len());
        for (i, set) in distinct.into_iter().enumerate() {
            let mut row: Vec<String> = (0..top).map(|j| set_text(codes, &set, j)).collect();
            // Whether a person has events of the kind at all shows in the released event
            // table whatever the level, so even the top level keeps the empty set apart.
            row.push(if set.is_empty() { EMPTY_SET } else { "*" }.to_owned());
            rows.push(row);
            index.insert(set, i as u32);
        }
        let hierarchy = Hierarchy::from_rows(column, rows)?;
        Ok(Self { hierarchy, index })
    }

    /// The leaf of a set (sorted, distinct), if it was among those built.
    pub fn leaf(&self, set: &[u32]) -> Option<u32> {
        self.index.get(set).copied()
    }
}

/// The lowest level at which `set` reads `written`, if any. Levels whose texts coincide
/// generalize the person's codes to the same set, so the lowest is as good as any.
pub fn level_of(set: &SetHierarchy, leaves: &[u32], written: &str) -> Option<usize> {
    let leaf = set.leaf(leaves)?;
    let h = &set.hierarchy;
    (0..h.height()).find(|&j| h.value(j, h.code(leaf, j)) == written)
}

/// What a person-level run produced.
pub struct PersonOutcome {
    /// The search's outcome over persons (its report extended with a `persons` section).
    pub outcome: job::Outcome,
    /// Persons in the person table.
    pub persons: u64,
    /// Persons suppressed (left out with all their events).
    pub persons_suppressed: u64,
    /// Event rows read.
    pub events: u64,
    /// Event rows written.
    pub events_written: u64,
    /// Event rows of suppressed persons, left out.
    pub events_suppressed: u64,
    /// Event rows of kinds not declared as sets, left out.
    pub events_undeclared: u64,
}

struct Released {
    key: String,
    levels: Vec<u8>,
    shift: i64,
}

/// Removes the staging folder and any partial output unless disarmed.
struct Cleanup(Vec<PathBuf>);
impl Drop for Cleanup {
    fn drop(&mut self) {
        for p in &self.0 {
            if p.is_dir() {
                let _ = std::fs::remove_dir_all(p);
            } else {
                let _ = std::fs::remove_file(p);
            }
        }
    }
}

fn table_err(what: String) -> impl FnOnce(TableError) -> JobError {
    move |cause| JobError::Table {
        what,
        cause: Box::new(cause),
    }
}

fn csv_writer(path: &Path, delimiter: u8) -> Result<csv::Writer<BufWriter<File>>, TableError> {
    let f = File::create(path).map_err(io_err(path))?;
    Ok(csv::WriterBuilder::new()
        .delimiter(delimiter)
        .from_writer(BufWriter::with_capacity(1 << 20, f)))
}

fn finish_csv(w: csv::Writer<BufWriter<File>>, path: &Path) -> Result<(), TableError> {
    let inner = w.into_inner().map_err(|e| TableError::Io {
        path: path.display().to_string(),
        source: std::io::Error::other(e.to_string()),
    })?;
    let file = inner.into_inner().map_err(|e| TableError::Io {
        path: path.display().to_string(),
        source: e.into_error(),
    })?;
    file.sync_all().map_err(io_err(path))
}

/// The person table's hierarchies and the code hierarchy of each event set, read by `read`
/// (files on disk, a recipe's copies, a vault method's folder).
pub fn hierarchies(
    settings: &PersonSettings,
    read: &mut dyn FnMut(&str) -> Result<Vec<u8>, String>,
) -> Result<(Parsed, Vec<Hierarchy>), JobError> {
    settings.check()?;
    let parsed = job::hierarchies(&settings.model, &mut *read)?;
    let mut codes = Vec::with_capacity(settings.event_sets.len());
    for s in &settings.event_sets {
        let bytes = read(&s.hierarchy)
            .map_err(|e| JobError::Settings(format!("event set {}: {e}", s.kind)))?;
        let text = std::str::from_utf8(&bytes).map_err(|e| {
            JobError::Settings(format!(
                "event set {}: {} is not UTF-8 ({e})",
                s.kind, s.hierarchy
            ))
        })?;
        codes.push(Hierarchy::parse_arx(&settings.code_column, text, ';')?);
    }
    Ok((parsed, codes))
}

/// Runs a person-level anonymization. `parsed` holds the person table's hierarchies (from
/// [`job::hierarchies`] over `settings.model`), `codes` the code hierarchy of each event set
/// in order. Writes both outputs or neither.
pub fn run(
    settings: &PersonSettings,
    parsed: &Parsed,
    codes: &[Hierarchy],
    files: &PersonFiles<'_>,
    key: &ReleaseKey,
    progress: &mut dyn Progress,
) -> Result<PersonOutcome, JobError> {
    settings.check()?;
    if codes.len() != settings.event_sets.len() {
        return Err(JobError::Settings(
            "one code hierarchy per event set is needed".into(),
        ));
    }
    for p in [files.output_persons, files.output_events] {
        if p == files.persons || p == files.events {
            return Err(JobError::Settings(format!(
                "the output {} must not be an input",
                p.display()
            )));
        }
    }
    if files.output_persons == files.output_events {
        return Err(JobError::Settings(
            "the person and event outputs must be different files".into(),
        ));
    }
    let dir = files
        .output_persons
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let staging = dir.join(format!(".enclave-persons.{}.staging", std::process::id()));
    std::fs::create_dir_all(&staging)
        .map_err(io_err(&staging))
        .map_err(table_err("creating the staging folder".into()))?;
    let mut cleanup = Cleanup(vec![staging.clone()]);

    // 1. Every person's code set per declared kind.
    let kinds: HashMap<&str, usize> = settings
        .event_sets
        .iter()
        .enumerate()
        .map(|(i, s)| (s.kind.as_str(), i))
        .collect();
    let read_events = format!("reading {}", files.events.display());
    let mut sets: HashMap<String, Vec<Vec<u32>>> = HashMap::new();
    // Summarized kinds (their rows are counted here and never written): per person, the row
    // count and the first date of each derived column.
    let derived = settings.derived();
    let summarized: HashMap<&str, Vec<usize>> =
        derived
            .iter()
            .enumerate()
            .fold(HashMap::new(), |mut m, (i, d)| {
                m.entry(d.kind()).or_default().push(i);
                m
            });
    let mut summaries: HashMap<String, Summary> = HashMap::new();
    let mut events: u64 = 0;
    {
        let mut r =
            Reader::open(files.events, files.delimiter).map_err(table_err(read_events.clone()))?;
        let mut names: Vec<&str> = vec![&settings.id, &settings.kind_column, &settings.code_column];
        names.extend(settings.first_dates.values().map(String::as_str));
        let cols = find_columns(&r.header, &names)
            .map_err(|e| table_err(read_events.clone())(e.into()))?;
        let (ci, ck, cc) = (cols[0], cols[1], cols[2]);
        // The date column of each derived first date, by derived index.
        let first_col: HashMap<usize, usize> = derived
            .iter()
            .enumerate()
            .filter_map(|(i, d)| match d {
                Derived::First(k) => {
                    let c = &settings.first_dates[k];
                    let at = names.iter().position(|n| n == c)?;
                    Some((i, cols[at]))
                }
                Derived::Count(_) => None,
            })
            .collect();
        let accounted = |c: &String| {
            [&settings.id, &settings.kind_column, &settings.code_column].contains(&c)
                || settings.shift_dates.contains(c)
                || settings.drop_events.contains(c)
                || settings.keep_events.contains(c)
        };
        if let Some(c) = r.header.iter().find(|c| !accounted(c)) {
            return Err(JobError::Settings(format!(
                "{}: column {c} is neither the id, kind or code, a shifted date \
                 (--shift-dates), dropped (--drop-events) nor kept (--keep-events); every \
                 column needs a decision",
                files.events.display()
            )));
        }
        while let Some(chunk) = r
            .next_chunk(&cols)
            .map_err(table_err(read_events.clone()))?
        {
            for i in 0..chunk.len {
                let kind = chunk.field(i, ck);
                if let Some(which) = summarized.get(kind) {
                    let id = chunk.field(i, ci);
                    let entry = match summaries.get_mut(id) {
                        Some(e) => e,
                        None => summaries
                            .entry(id.to_owned())
                            .or_insert_with(|| Summary::new(derived.len())),
                    };
                    for &d in which {
                        entry.counts[d] += 1;
                        let slot = &mut entry.firsts[d];
                        if let Some(&c) = first_col.get(&d) {
                            let v = chunk.field(i, c);
                            if v.is_empty() {
                                continue;
                            }
                            if !crate::builders::is_date(v) {
                                return Err(JobError::Settings(format!(
                                    "{}: row {}: {} {v:?} is not a date YYYY-MM-DD",
                                    files.events.display(),
                                    chunk.first_row + i,
                                    settings.first_dates[kind]
                                )));
                            }
                            if slot.as_deref().is_none_or(|f| v < f) {
                                *slot = Some(v.to_owned());
                            }
                        }
                    }
                }
                let Some(&s) = kinds.get(kind) else {
                    continue;
                };
                let leaf = codes[s]
                    .leaf_in_row(chunk.field(i, cc), chunk.first_row + i)
                    .map_err(|e| table_err(read_events.clone())(e.into()))?;
                let id = chunk.field(i, ci);
                let entry = match sets.get_mut(id) {
                    Some(e) => e,
                    None => sets
                        .entry(id.to_owned())
                        .or_insert_with(|| vec![Vec::new(); codes.len()]),
                };
                entry[s].push(leaf);
            }
            events += chunk.len as u64;
            r.recycle(chunk);
        }
    }
    for per in sets.values_mut() {
        for s in per.iter_mut() {
            s.sort_unstable();
            s.dedup();
        }
    }
    let set_columns: Vec<String> = settings.event_sets.iter().map(EventSet::column).collect();
    let mut set_hs = Vec::with_capacity(codes.len());
    for (s, column) in set_columns.iter().enumerate() {
        set_hs.push(SetHierarchy::build(
            column,
            &codes[s],
            sets.values().map(|per| per[s].clone()),
        )?);
    }

    // The derived columns' hierarchies, over the values present (and the value of a
    // person without rows of the kind, who is in the person table even if not here).
    let derived_columns: Vec<String> = derived.iter().map(Derived::column).collect();
    let mut derived_hs = Vec::with_capacity(derived.len());
    for (d, what) in derived.iter().enumerate() {
        let mut values: BTreeSet<String> = summaries
            .values()
            .map(|s| Summary::value(Some(s), what, d))
            .collect();
        values.insert(Summary::value(None, what, d));
        let values: Vec<String> = values.into_iter().collect();
        let column = &derived_columns[d];
        derived_hs.push(match what {
            Derived::Count(k) => {
                crate::builders::intervals(column, &values, &settings.event_counts[k])?
            }
            Derived::First(_) => {
                let dates: Vec<String> =
                    values.iter().filter(|v| *v != EMPTY_SET).cloned().collect();
                let mut rows: Vec<Vec<String>> = Vec::with_capacity(values.len());
                if !dates.is_empty() {
                    let h = crate::builders::dates(column, &dates)?;
                    for leaf in 0..h.leaves() as u32 {
                        rows.push(
                            (0..h.height())
                                .map(|l| h.value(l, h.code(leaf, l)).to_owned())
                                .collect(),
                        );
                    }
                }
                // No date stays apart at every level, as the empty set does.
                rows.push(vec![EMPTY_SET.to_owned(); 5]);
                Hierarchy::from_rows(column, rows)?
            }
        });
    }

    // 2. The staging person table: the person table plus one column per set.
    let read_persons = format!("reading {}", files.persons.display());
    let staged_in = staging.join("persons.csv");
    let mut persons: u64 = 0;
    {
        let mut r = Reader::open(files.persons, files.delimiter)
            .map_err(table_err(read_persons.clone()))?;
        let header = r.header.clone();
        if let Some(c) = set_columns
            .iter()
            .chain(&derived_columns)
            .chain(std::iter::once(&FLAG.to_owned()))
            .find(|c| header.contains(c))
        {
            return Err(JobError::Settings(format!(
                "the person table already has a column {c}, which the event sets add"
            )));
        }
        let ci = find_columns(&header, &[&settings.id])
            .map_err(|e| table_err(read_persons.clone())(e.into()))?[0];
        let m = &settings.model;
        let accounted = |c: &String| {
            *c == settings.id
                || m.quasi_identifiers.iter().any(|q| q.column == *c)
                || m.sensitive.contains(c)
                || m.drop.contains(c)
                || settings.keep.contains(c)
        };
        if let Some(c) = header.iter().find(|c| !accounted(c)) {
            return Err(JobError::Settings(format!(
                "{}: column {c} is neither a quasi-identifier, a sensitive attribute, dropped \
                 (--drop) nor kept (--keep); every column needs a decision",
                files.persons.display()
            )));
        }
        let all: Vec<usize> = (0..header.len()).collect();
        let write_staging = format!("writing {}", staged_in.display());
        let mut w = csv_writer(&staged_in, b',').map_err(table_err(write_staging.clone()))?;
        w.write_record(header.iter().chain(&set_columns).chain(&derived_columns))
            .map_err(csv_io(&staged_in))
            .map_err(table_err(write_staging.clone()))?;
        let mut seen: BTreeSet<String> = BTreeSet::new();
        let empty: Vec<Vec<u32>> = vec![Vec::new(); codes.len()];
        let mut fields: Vec<String> = Vec::with_capacity(all.len() + set_columns.len());
        while let Some(chunk) = r
            .next_chunk(&all)
            .map_err(table_err(read_persons.clone()))?
        {
            for i in 0..chunk.len {
                let id = chunk.field(i, ci);
                if !seen.insert(id.to_owned()) {
                    return Err(JobError::Settings(format!(
                        "{}: row {}: person {id} appears twice; a person table has one row per \
                         person",
                        files.persons.display(),
                        chunk.first_row + i
                    )));
                }
                let per = sets.get(id).unwrap_or(&empty);
                fields.clear();
                fields.extend(all.iter().map(|&c| chunk.field(i, c).to_owned()));
                for (s, codes_s) in codes.iter().enumerate() {
                    fields.push(set_text(codes_s, &per[s], 0));
                }
                let summary = summaries.get(id);
                for (d, what) in derived.iter().enumerate() {
                    fields.push(Summary::value(summary, what, d));
                }
                w.write_record(&fields)
                    .map_err(csv_io(&staged_in))
                    .map_err(table_err(write_staging.clone()))?;
            }
            persons += chunk.len as u64;
            r.recycle(chunk);
        }
        finish_csv(w, &staged_in).map_err(table_err(write_staging))?;
        let orphans: BTreeSet<&String> = sets
            .keys()
            .chain(summaries.keys())
            .filter(|id| !seen.contains(*id))
            .collect();
        if let Some(first) = orphans.iter().min() {
            return Err(JobError::Settings(format!(
                "{} persons of the event table are not in the person table (the first: {first}); \
                 their events could not be protected",
                orphans.len()
            )));
        }
    }

    // 3. The search over persons (for the pseudonymized profile, the one transformation that
    // keeps every value).
    let mut model = settings.model.clone();
    if settings.profile == Profile::Pseudonymized {
        model.levels = Some(vec![
            0;
            parsed.quasi.len()
                + settings.event_sets.len()
                + derived.len()
        ]);
        model.mode = job::Mode::Optimal;
    }
    let mut quasi = parsed.quasi.clone();
    let mut sha256 = parsed.sha256.clone();
    // A derived quasi-identifier joins the model with a description in place of a file
    // name, and the SHA-256 of its hierarchy as ARX text for the report.
    let mut add = |column: &str, description: String, h: &Hierarchy| -> Result<(), JobError> {
        model.quasi_identifiers.push(job::Qi {
            column: column.to_owned(),
            hierarchy: description,
        });
        quasi.push(h.clone());
        let text = crate::builders::to_arx_csv(h)?;
        sha256.insert(
            column.to_owned(),
            json!(hex::encode(ring::digest::digest(
                &ring::digest::SHA256,
                text.as_bytes()
            ))),
        );
        Ok(())
    };
    for (s, set) in settings.event_sets.iter().enumerate() {
        add(
            &set_columns[s],
            format!(
                "derived from {} over the {} events",
                set.hierarchy, set.kind
            ),
            &set_hs[s].hierarchy,
        )?;
    }
    for (d, what) in derived.iter().enumerate() {
        let description = match what {
            Derived::Count(k) => format!(
                "derived: the number of {k} rows, intervals {:?}",
                settings.event_counts[k]
            ),
            Derived::First(k) => format!(
                "derived: the first {} of the {k} rows, day → month → year → decade",
                settings.first_dates[k]
            ),
        };
        add(&derived_columns[d], description, &derived_hs[d])?;
    }
    let staged = Parsed {
        quasi,
        sensitive: parsed.sensitive.clone(),
        sha256,
    };
    let staged_out = staging.join("released.csv");
    let mut outcome = job::run(
        &model,
        &staged,
        &job::Files {
            input: &staged_in,
            output: &staged_out,
            delimiter: b',',
            suppressed_column: Some(FLAG),
        },
        progress,
    )
    .map_err(|e| match e {
        // The staging table has the person table's rows in order: name the file the
        // operator knows.
        JobError::Table { what, cause } => JobError::Table {
            what: what.replace(
                &staged_in.display().to_string(),
                &files.persons.display().to_string(),
            ),
            cause,
        },
        other => other,
    })?;

    // 4. The released person table; each released person's key, levels and shift.
    let mut released: HashMap<String, Released> = HashMap::with_capacity(persons as usize);
    let top_bottom_counts: Vec<Value>;
    let mut code_persons: Vec<HashMap<(u8, u32), u64>> = vec![HashMap::new(); codes.len()];
    let mut persons_suppressed = 0u64;
    let tmp_persons = table::tempfile_in(dir, files.output_persons)
        .map_err(table_err("creating the person output".into()))?;
    cleanup.0.push(tmp_persons.clone());
    {
        let write = format!("writing {}", files.output_persons.display());
        let read = format!("reading {}", staged_out.display());
        let mut r = csv::ReaderBuilder::new()
            .from_path(&staged_out)
            .map_err(|e| table_err(read.clone())(csv_io(&staged_out)(e)))?;
        let header: Vec<String> = r
            .headers()
            .map_err(|e| table_err(read.clone())(csv_io(&staged_out)(e)))?
            .iter()
            .map(str::to_owned)
            .collect();
        let mut names: Vec<&str> = vec![&settings.id, FLAG];
        names.extend(set_columns.iter().map(String::as_str));
        let cols = find_columns(&header, &names)
            .map_err(|e| JobError::Internal(format!("staging output: {e}")))?;
        let (ci, cf, cs) = (cols[0], cols[1], &cols[2..]);
        // (column position, its coding)
        let mut coded: Vec<(usize, Coding)> = Vec::new();
        for (c, &range) in &settings.top_bottom {
            let at = find_columns(&header, &[c.as_str()])
                .map_err(|e| table_err(read_persons.clone())(e.into()))?[0];
            coded.push((at, Coding::new(range)));
        }
        let mut w = csv_writer(&tmp_persons, files.delimiter).map_err(table_err(write.clone()))?;
        w.write_record(
            header
                .iter()
                .enumerate()
                .filter(|&(c, _)| c != cf)
                .map(|(_, h)| h),
        )
        .map_err(csv_io(&tmp_persons))
        .map_err(table_err(write.clone()))?;
        let empty: Vec<Vec<u32>> = vec![Vec::new(); codes.len()];
        let mut record = csv::StringRecord::new();
        while r
            .read_record(&mut record)
            .map_err(|e| table_err(read.clone())(csv_io(&staged_out)(e)))?
        {
            let id = record.get(ci).unwrap_or_default();
            if record.get(cf) == Some("1") {
                persons_suppressed += 1;
                continue;
            }
            let per = sets.get(id).unwrap_or(&empty);
            let mut levels = Vec::with_capacity(cs.len());
            for (s, &c) in cs.iter().enumerate() {
                let written = record.get(c).unwrap_or_default();
                let level = level_of(&set_hs[s], &per[s], written).ok_or_else(|| {
                    JobError::Internal(format!(
                        "person {id}: released {} {written:?} is no level of their set",
                        set_columns[s]
                    ))
                })?;
                levels.push(level as u8);
            }
            // Every distinct released code of the person, counted once per person: the
            // check that no released code describes fewer than k persons.
            for (s, &level) in levels.iter().enumerate() {
                let (h, level) = (&codes[s], usize::from(level));
                let mut shown: Vec<u32> = per[s]
                    .iter()
                    .map(|&leaf| {
                        if level + 1 >= h.height() {
                            u32::MAX
                        } else {
                            h.code(leaf, level)
                        }
                    })
                    .collect();
                shown.sort_unstable();
                shown.dedup();
                for c in shown {
                    *code_persons[s].entry((level as u8, c)).or_default() += 1;
                }
            }
            let person = Released {
                key: key.person(id),
                levels,
                shift: if settings.shift_dates.is_empty() {
                    0
                } else {
                    key.shift(id, settings.max_shift_days)
                },
            };
            let mut values: Vec<std::borrow::Cow<'_, str>> = Vec::with_capacity(record.len());
            for (c, v) in record.iter().enumerate() {
                if c == ci {
                    values.push(person.key.as_str().into());
                } else if c == cf {
                    continue;
                } else if let Some((_, t)) = coded.iter_mut().find(|t| t.0 == c) {
                    let out = t.apply(v).ok_or_else(|| {
                        JobError::Settings(format!(
                            "{}: person {id}: {} {v:?} is not a number and cannot be \
                             top/bottom coded",
                            files.persons.display(),
                            header[c]
                        ))
                    })?;
                    values.push(out);
                } else {
                    values.push(v.into());
                }
            }
            w.write_record(values.iter().map(|v| v.as_ref()))
                .map_err(csv_io(&tmp_persons))
                .map_err(table_err(write.clone()))?;
            released.insert(id.to_owned(), person);
        }
        finish_csv(w, &tmp_persons).map_err(table_err(write))?;
        top_bottom_counts = coded
            .iter()
            .map(|(c, t)| t.report(&header[*c], None))
            .collect();
    }
    if persons_suppressed != outcome.best.suppressed {
        return Err(JobError::Internal(format!(
            "{persons_suppressed} persons marked suppressed, the search counted {}",
            outcome.best.suppressed
        )));
    }

    // 5. The released event table.
    let tmp_events = table::tempfile_in(dir, files.output_events)
        .map_err(table_err("creating the event output".into()))?;
    cleanup.0.push(tmp_events.clone());
    let (mut events_written, mut events_suppressed, mut events_undeclared) = (0u64, 0u64, 0u64);
    let mut events_summarized = 0u64;
    let event_coding_counts: Vec<Value>;
    {
        let write = format!("writing {}", files.output_events.display());
        let mut r =
            Reader::open(files.events, files.delimiter).map_err(table_err(read_events.clone()))?;
        let header = r.header.clone();
        let mut names: Vec<&str> = vec![&settings.id, &settings.kind_column, &settings.code_column];
        names.extend(settings.shift_dates.iter().map(String::as_str));
        let cols =
            find_columns(&header, &names).map_err(|e| table_err(read_events.clone())(e.into()))?;
        let (ci, ck, cc, dates) = (cols[0], cols[1], cols[2], &cols[3..]);
        // column → code → its coding, for the kept event columns.
        let mut event_coding: HashMap<usize, HashMap<String, Coding>> = HashMap::new();
        for (key, &range) in &settings.top_bottom_events {
            if let Some((column, code)) = key.split_once('@') {
                let at = find_columns(&header, &[column])
                    .map_err(|e| table_err(read_events.clone())(e.into()))?[0];
                event_coding
                    .entry(at)
                    .or_default()
                    .insert(code.to_owned(), Coding::new(range));
            }
        }
        let dropped: Vec<&str> = settings.drop_events.iter().map(String::as_str).collect();
        let dropped = find_columns(&header, &dropped)
            .map_err(|e| table_err(read_events.clone())(e.into()))?;
        let keep: Vec<usize> = (0..header.len()).filter(|c| !dropped.contains(c)).collect();
        let all: Vec<usize> = (0..header.len()).collect();
        let mut w = csv_writer(&tmp_events, files.delimiter).map_err(table_err(write.clone()))?;
        w.write_record(keep.iter().map(|&c| &header[c]))
            .map_err(csv_io(&tmp_events))
            .map_err(table_err(write.clone()))?;
        let mut out: Vec<String> = Vec::with_capacity(keep.len());
        while let Some(chunk) = r.next_chunk(&all).map_err(table_err(read_events.clone()))? {
            for i in 0..chunk.len {
                let row = chunk.first_row + i;
                let kind = chunk.field(i, ck);
                if summarized.contains_key(kind) {
                    events_summarized += 1;
                    continue;
                }
                let Some(&s) = kinds.get(kind) else {
                    events_undeclared += 1;
                    continue;
                };
                let Some(person) = released.get(chunk.field(i, ci)) else {
                    events_suppressed += 1;
                    continue;
                };
                let level = usize::from(person.levels[s]);
                let h = &codes[s];
                // Checked in the first pass; the file is read again, so checked again.
                let leaf = h
                    .leaf_in_row(chunk.field(i, cc), row)
                    .map_err(|e| table_err(read_events.clone())(e.into()))?;
                out.clear();
                for &c in &keep {
                    let v = chunk.field(i, c);
                    out.push(if c == ci {
                        person.key.clone()
                    } else if c == cc {
                        if level + 1 >= h.height() {
                            "*".to_owned()
                        } else {
                            h.value(level, h.code(leaf, level)).to_owned()
                        }
                    } else if let Some(t) = event_coding
                        .get_mut(&c)
                        .and_then(|m| m.get_mut(chunk.field(i, cc)))
                    {
                        let coded = t.apply(v).ok_or_else(|| {
                            JobError::Settings(format!(
                                "{}: row {row}: {} {v:?} is not a number and cannot be \
                                 top/bottom coded",
                                files.events.display(),
                                header[c]
                            ))
                        })?;
                        coded.into_owned()
                    } else if dates.contains(&c) && !v.is_empty() {
                        shift_date(v, person.shift).ok_or_else(|| {
                            JobError::Settings(format!(
                                "{}: row {row}: {} {v:?} is not a date YYYY-MM-DD",
                                files.events.display(),
                                header[c]
                            ))
                        })?
                    } else {
                        v.to_owned()
                    });
                }
                w.write_record(&out)
                    .map_err(csv_io(&tmp_events))
                    .map_err(table_err(write.clone()))?;
                events_written += 1;
            }
            r.recycle(chunk);
        }
        finish_csv(w, &tmp_events).map_err(table_err(write))?;
        let mut coded: Vec<(usize, String, Coding)> = event_coding
            .into_iter()
            .flat_map(|(c, m)| m.into_iter().map(move |(code, t)| (c, code, t)))
            .collect();
        coded.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        event_coding_counts = coded
            .into_iter()
            .map(|(c, code, t)| t.report(&header[c], Some(&code)))
            .collect();
    }

    let levels_used: Vec<Value> = (0..set_columns.len())
        .map(|s| {
            let mut hist = vec![0u64; set_hs[s].hierarchy.height()];
            for p in released.values() {
                hist[usize::from(p.levels[s])] += 1;
            }
            let rarest = code_persons[s].values().copied().min();
            json!({"column": set_columns[s], "kind": settings.event_sets[s].kind,
                   "code_hierarchy": settings.event_sets[s].hierarchy,
                   "persons_per_level": hist,
                   "released_codes": code_persons[s].len(),
                   "min_persons_per_code": rarest,
                   "codes_held_by_fewer_than_k": code_persons[s].values()
                       .filter(|&&n| n < settings.model.k).count()})
        })
        .collect();
    // Each released person's set is shared by their whole class, so under a privacy model
    // every released code is held by at least k persons; anything else is a defect, and
    // nothing is released with it.
    if settings.profile == Profile::Anonymized {
        for (s, counts) in code_persons.iter().enumerate() {
            if let Some(n) = counts
                .values()
                .copied()
                .filter(|&n| n < settings.model.k)
                .min()
            {
                return Err(JobError::Internal(format!(
                    "a released {} code is held by {n} persons, fewer than k = {}",
                    settings.event_sets[s].kind, settings.model.k
                )));
            }
        }
    }
    if let Some(obj) = outcome.report.as_object_mut() {
        obj.insert(
            "persons".into(),
            json!({
                "unit": "person",
                "persons": persons,
                "persons_released": persons - persons_suppressed,
                "persons_suppressed": persons_suppressed,
                "events": events,
                "events_written": events_written,
                "events_of_suppressed_persons": events_suppressed,
                "events_of_undeclared_kinds": events_undeclared,
                "events_summarized": events_summarized,
                "derived_columns": derived.iter().map(|d| json!({
                    "column": d.column(), "kind": d.kind(),
                    "what": match d { Derived::Count(_) => "number of rows",
                                      Derived::First(_) => "first date" }})).collect::<Vec<_>>(),
                "event_sets": levels_used,
                "dates_shifted": settings.shift_dates,
                "max_shift_days": settings.max_shift_days,
                "person_key": "HMAC-SHA256 of the person id under a per-release secret, 128 bits",
                "dropped_event_columns": settings.drop_events,
                "kept_columns": settings.keep,
                "kept_event_columns": settings.keep_events,
                "top_bottom_coding": top_bottom_counts,
                "top_bottom_coding_events": event_coding_counts,
            }),
        );
        obj.insert(
            "profile".into(),
            json!({
                "name": settings.profile.name(),
                "legal_name": settings.profile.legal_name(),
                "rules": settings.profile.rules(),
            }),
        );
        if let Some(cfg) = obj.get_mut("config") {
            cfg["input"] = json!(files.persons.display().to_string());
            cfg["events"] = json!(files.events.display().to_string());
        }
    }
    std::fs::rename(&tmp_persons, files.output_persons)
        .map_err(io_err(files.output_persons))
        .map_err(table_err("renaming the person output".into()))?;
    if let Err(e) = std::fs::rename(&tmp_events, files.output_events) {
        let _ = std::fs::remove_file(files.output_persons);
        return Err(table_err("renaming the event output".into())(io_err(
            files.output_events,
        )(e)));
    }
    cleanup.0.retain(|p| p == &staging);
    drop(cleanup);
    outcome.written_rows = persons - persons_suppressed;
    Ok(PersonOutcome {
        outcome,
        persons,
        persons_suppressed,
        events,
        events_written,
        events_suppressed,
        events_undeclared,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn icd() -> Hierarchy {
        let rows = [
            ["E11.9", "E11", "IV", "*"],
            ["E11.2", "E11", "IV", "*"],
            ["E78.5", "E78", "IV", "*"],
            ["I10", "I10", "IX", "*"],
            ["I20.9", "I20", "IX", "*"],
        ];
        Hierarchy::from_rows(
            "code",
            rows.iter()
                .map(|r| r.iter().map(|s| (*s).to_owned()).collect())
                .collect(),
        )
        .expect("hierarchy")
    }

    #[test]
    fn a_set_generalizes_through_its_codes_and_levels_are_found_back() {
        let codes = icd();
        let e119 = codes.leaf("E11.9").expect("test data");
        let e112 = codes.leaf("E11.2").expect("test data");
        let i10 = codes.leaf("I10").expect("test data");
        let mut a = vec![e119, e112, i10];
        a.sort_unstable();
        let sets =
            SetHierarchy::build("dx_codes", &codes, [a.clone(), vec![i10]]).expect("test data");
        assert_eq!(set_text(&codes, &a, 0), "E11.2|E11.9|I10");
        assert_eq!(set_text(&codes, &a, 1), "E11|I10");
        assert_eq!(set_text(&codes, &a, 2), "IV|IX");
        assert_eq!(set_text(&codes, &[], 1), EMPTY_SET);
        let h = &sets.hierarchy;
        assert_eq!(h.height(), 4);
        let leaf = sets.leaf(&a).expect("test data");
        assert_eq!(h.value(3, h.code(leaf, 3)), "*");
        // Having no event of the kind shows in the event table, so it is never merged away.
        let none = sets.leaf(&[]).expect("test data");
        assert_eq!(h.value(3, h.code(none, 3)), EMPTY_SET);
        assert_eq!(level_of(&sets, &a, "E11|I10"), Some(1));
        assert_eq!(level_of(&sets, &a, "*"), Some(3));
        // {I10} reads the same at levels 0 and 1: the lowest is reported.
        assert_eq!(level_of(&sets, &[i10], "I10"), Some(0));
        assert_eq!(level_of(&sets, &a, "E11"), None);
        // The empty set is always there, even if no person has it.
        assert!(sets.leaf(&[]).is_some());
    }

    #[test]
    fn codes_that_would_be_ambiguous_in_a_set_are_refused() {
        let bad = Hierarchy::from_rows(
            "code",
            vec![vec!["A|B".into(), "*".into()], vec!["C".into(), "*".into()]],
        )
        .expect("test data");
        assert!(SetHierarchy::build("x", &bad, [vec![0]]).is_err());
        let flat = Hierarchy::from_rows("code", vec![vec!["A".into()]]).expect("test data");
        assert!(SetHierarchy::build("x", &flat, [vec![0]]).is_err());
    }

    #[test]
    fn extreme_values_are_top_and_bottom_coded() {
        assert_eq!(top_bottom_code("4.1", 5.0, 9.0).as_deref(), Some("<5"));
        assert_eq!(top_bottom_code("12.5", 5.0, 9.5).as_deref(), Some(">9.5"));
        assert_eq!(top_bottom_code("6.0", 5.0, 9.0).as_deref(), Some("6.0"));
        assert_eq!(top_bottom_code("5", 5.0, 9.0).as_deref(), Some("5"));
        assert_eq!(top_bottom_code("", 5.0, 9.0).as_deref(), Some(""));
        assert_eq!(top_bottom_code("high", 5.0, 9.0), None);
        assert_eq!(top_bottom_code("NaN", 5.0, 9.0), None);
    }

    #[test]
    fn dates_shift_and_keep_intervals() {
        assert_eq!(shift_date("2024-02-28", 1).as_deref(), Some("2024-02-29"));
        assert_eq!(shift_date("2023-02-28", 1).as_deref(), Some("2023-03-01"));
        assert_eq!(shift_date("2024-01-01", -1).as_deref(), Some("2023-12-31"));
        assert_eq!(
            shift_date("2000-03-01", -366).as_deref(),
            Some("1999-03-01")
        );
        assert_eq!(shift_date("2023-02-29", 0), None);
        assert_eq!(shift_date("2023-13-01", 0), None);
        assert_eq!(shift_date("20230101", 0), None);
        for z in [-800_000i64, -1, 0, 1, 59, 11_016, 19_000, 2_000_000] {
            let (y, m, d) = civil_from_days(z);
            assert_eq!(days_from_civil(y, m, d), z);
        }
        let key = ReleaseKey::new(&[7; 32]);
        let mut seen = BTreeSet::new();
        for id in 0..2000 {
            let s = key.shift(&id.to_string(), 30);
            assert!((-30..=30).contains(&s));
            seen.insert(s);
        }
        assert_eq!(seen.len(), 61, "every offset of −30…30 is drawn");
        // Same id, same key: same person key and offset; another key: another person key.
        assert_eq!(key.person("42"), key.person("42"));
        assert_ne!(key.person("42"), ReleaseKey::new(&[8; 32]).person("42"));
        assert_eq!(key.person("42").len(), 32);
    }
}
