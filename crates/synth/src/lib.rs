//! Deterministic synthetic Japanese patients in the formats hospitals, checkup centres and
//! claims systems really produce, so every other part of the enclave can be built and
//! measured at scale without ever touching real patient data.
//!
//! [`generate`] writes, under one output folder:
//! - `ssmix2/{医療機関コード}/standard_storage/…` SS-MIX2 HL7 v2.5 (ISO-2022-JP) — [`hl7`]
//! - `fhir/{医療機関コード}/{patient id}.json` JP Core FHIR R4 Bundles — [`fhir`]
//! - `cda/{医療機関コード}_{n}.zip` 特定健診 CDA R2 submission ZIPs — [`cda`]
//! - `claims/{医療機関コード}/{YYYYMM}/RECEIPTC.UKE` UKE-style claims (Shift_JIS) — [`uke`]
//! - `flat/persons.csv` and `flat/persons.parquet`: one row per person, quasi-identifiers and
//!   sensitive attributes — [`flat`]
//! - `events/events.csv`: one row per diagnosis, prescription and lab result, keyed by the
//!   flat table's `person_id`, for person-level anonymization — [`events`]
//! - `truth/links.csv` which local ids are the same person (for testing the vault's linking)
//! - `summary.json` what was written; written last, so its presence means the run completed
//!
//! With [`Layout::Tar`] the SS-MIX2 and FHIR files go, at the same paths, into `ssmix2.tar`
//! and `fhir.tar` instead — [`tarball`].
//!
//! The same seed and arguments give byte-identical output whatever the thread count.

#![forbid(unsafe_code)]

pub mod cda;
pub mod date;
pub mod events;
pub mod fhir;
pub mod flat;
pub mod hl7;
pub mod model;
pub mod refdata;
pub mod rng;
pub mod tables;
pub mod tarball;
pub mod text;
pub mod uke;

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::date::Date;
use crate::model::{Institution, Params};

/// What can go wrong writing the output.
#[derive(Debug, Error)]
pub enum SynthError {
    /// The output folder exists and is not empty.
    #[error("output folder {0} exists and is not empty; give a new or empty folder")]
    OutputNotEmpty(PathBuf),
    /// A bad argument.
    #[error("invalid arguments: {0}")]
    Invalid(String),
    /// File system.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// Cause.
        source: std::io::Error,
    },
    /// A string did not fit the target encoding (a bug in the tables, caught not hidden).
    #[error(transparent)]
    Encode(#[from] text::EncodeError),
    /// ZIP writing.
    #[error("writing checkup ZIP: {0}")]
    Zip(#[from] zip::result::ZipError),
    /// Parquet writing.
    #[error("writing flat/persons.parquet: {0}")]
    Parquet(#[from] polars::prelude::PolarsError),
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> SynthError {
    let context = context.into();
    move |source| SynthError::Io { context, source }
}

/// Output formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Format {
    /// SS-MIX2 standardized storage.
    Ssmix2,
    /// JP Core FHIR R4 Bundles.
    Fhir,
    /// 特定健診 CDA ZIPs.
    Cda,
    /// UKE-style claims.
    Claims,
    /// Flat person table (CSV).
    Flat,
    /// Event table (one row per diagnosis, prescription, lab result).
    Events,
}

impl Format {
    /// All formats.
    pub const ALL: [Format; 6] = [
        Format::Ssmix2,
        Format::Fhir,
        Format::Cda,
        Format::Claims,
        Format::Flat,
        Format::Events,
    ];

    /// Name used on the command line and in the summary.
    pub fn name(self) -> &'static str {
        match self {
            Format::Ssmix2 => "ssmix2",
            Format::Fhir => "fhir",
            Format::Cda => "cda",
            Format::Claims => "claims",
            Format::Flat => "flat",
            Format::Events => "events",
        }
    }

    /// Parses a command-line name.
    pub fn parse(s: &str) -> Option<Format> {
        Format::ALL.into_iter().find(|f| f.name() == s)
    }
}

/// A generation run.
#[derive(Clone, Debug)]
pub struct Options {
    /// Number of persons.
    pub persons: u64,
    /// Seed.
    pub seed: u64,
    /// Number of institutions.
    pub institutions: u32,
    /// Formats to write.
    pub formats: Vec<Format>,
    /// Output folder (created; must not exist or be empty).
    pub out: PathBuf,
    /// Last day of the two-year observation window.
    pub as_of: Date,
    /// Worker threads (output does not depend on it).
    pub threads: usize,
    /// Folder tree or tar archives for the per-person formats.
    pub layout: Layout,
}

/// How the per-person formats (SS-MIX2 and FHIR, about a dozen files per person) are laid
/// out. The other formats are a few large files either way.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Layout {
    /// One file per message or Bundle, in the SS-MIX2 folder tree (`ssmix2/…`, `fhir/…`).
    #[default]
    Tree,
    /// The same paths and bytes as members of `ssmix2.tar` and `fhir.tar` (POSIX ustar):
    /// `tar -xf` in the output folder gives exactly the tree. For runs whose tree would not
    /// fit the file system's inodes, or whose time would be the file system's.
    Tar,
}

impl Layout {
    /// Name used on the command line and in the summary.
    pub fn name(self) -> &'static str {
        match self {
            Layout::Tree => "tree",
            Layout::Tar => "tar",
        }
    }
}

/// Counts of what was written, per format: files and bytes; also records.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Persons generated.
    pub persons: u64,
    /// Per format name: (files, bytes, records).
    pub formats: BTreeMap<&'static str, (u64, u64, u64)>,
    /// Person–institution links (local ids issued).
    pub links: u64,
}

impl Summary {
    fn add(&mut self, f: Format, files: u64, bytes: u64, records: u64) {
        let e = self.formats.entry(f.name()).or_default();
        e.0 += files;
        e.1 += bytes;
        e.2 += records;
    }

    fn merge(&mut self, o: &Summary) {
        for (k, v) in &o.formats {
            let e = self.formats.entry(k).or_default();
            e.0 += v.0;
            e.1 += v.1;
            e.2 += v.2;
        }
        self.links += o.links;
    }

    /// JSON form (deterministic: no times in it).
    pub fn to_json(&self, opts: &Options) -> String {
        let formats: serde_json::Map<String, serde_json::Value> = self
            .formats
            .iter()
            .map(|(k, v)| {
                (
                    (*k).to_string(),
                    serde_json::json!({ "files": v.0, "bytes": v.1, "records": v.2 }),
                )
            })
            .collect();
        let v = serde_json::json!({
            "generator": concat!("enclave-synth ", env!("CARGO_PKG_VERSION")),
            "seed": opts.seed,
            "persons": self.persons,
            "institutions": opts.institutions,
            "as_of": opts.as_of.to_string(),
            "layout": opts.layout.name(),
            "links": self.links,
            "formats": formats,
            "synthetic": "every person in this folder is synthetic; none is a real patient"
        });
        serde_json::to_string_pretty(&v).unwrap_or_default() + "\n"
    }
}

/// Persons per batch: workers generate a batch in parallel, then the ordered outputs
/// (flat table, claims, checkup ZIPs) are appended in person order.
const BATCH: u64 = 2048;
/// Checkup documents per submission ZIP.
const CDA_PER_ZIP: usize = 1000;
/// Claims buffered per (institution, month) before being appended to the file.
const CLAIMS_FLUSH: usize = 256 * 1024;

/// What a worker hands back for one person, for the ordered outputs.
struct Ordered {
    /// `--layout tar`: this person's ssmix2.tar and fhir.tar members, ready to append.
    tars: [Vec<u8>; 2],
    /// The row and its CSV line, made by the worker so the run loop only copies bytes.
    flat: Option<(flat::FlatRow, String)>,
    events: Option<(String, u64)>,
    truth: String,
    claims: Vec<uke::Claim>,
    cda: Option<(usize, String)>,
}

struct ClaimFile {
    buf: Vec<u8>,
    count: u64,
    points: u64,
    started: bool,
}

/// Generates the whole output tree. `progress(done)` is called after each batch.
pub fn generate(opts: &Options, mut progress: impl FnMut(u64)) -> Result<Summary, SynthError> {
    if opts.institutions == 0 || opts.institutions > 9_000 {
        return Err(SynthError::Invalid(
            "--institutions must be 1..=9000".into(),
        ));
    }
    if opts.formats.is_empty() {
        return Err(SynthError::Invalid("no formats selected".into()));
    }
    prepare_out(&opts.out)?;
    let params = Params {
        seed: opts.seed,
        institutions: opts.institutions,
        as_of: opts.as_of,
        window_days: 730,
    };
    let insts = model::institutions(&params);
    let want = |f: Format| opts.formats.contains(&f);
    let mut summary = Summary {
        persons: opts.persons,
        ..Summary::default()
    };

    let mut flat = if want(Format::Flat) {
        let dir = opts.out.join("flat");
        fs::create_dir_all(&dir).map_err(io("creating flat/"))?;
        let mut w = BufWriter::new(
            File::create(dir.join("persons.csv")).map_err(io("creating flat/persons.csv"))?,
        );
        w.write_all(flat::csv_header().as_bytes())
            .map_err(io("writing flat/persons.csv"))?;
        let pq = flat::ParquetSink::create(&dir.join("persons.parquet"))
            .map_err(io("creating flat/persons.parquet"))?;
        Some((w, pq))
    } else {
        None
    };
    let mut events_out = if want(Format::Events) {
        let dir = opts.out.join("events");
        fs::create_dir_all(&dir).map_err(io("creating events/"))?;
        let mut w = BufWriter::with_capacity(
            1 << 20,
            File::create(dir.join("events.csv")).map_err(io("creating events/events.csv"))?,
        );
        w.write_all(events::csv_header().as_bytes())
            .map_err(io("writing events/events.csv"))?;
        summary.add(Format::Events, 1, events::csv_header().len() as u64, 0);
        Some(w)
    } else {
        None
    };
    let truth_dir = opts.out.join("truth");
    fs::create_dir_all(&truth_dir).map_err(io("creating truth/"))?;
    let mut truth = BufWriter::new(
        File::create(truth_dir.join("links.csv")).map_err(io("creating truth/links.csv"))?,
    );
    truth
        .write_all(b"person_id,institution_code,local_patient_id\n")
        .map_err(io("writing truth/links.csv"))?;
    let mut claim_files: BTreeMap<(usize, String), ClaimFile> = BTreeMap::new();
    let mut tars: Vec<Option<(BufWriter<File>, &str)>> = Vec::new();
    for (format, name) in [(Format::Ssmix2, "ssmix2.tar"), (Format::Fhir, "fhir.tar")] {
        tars.push(if opts.layout == Layout::Tar && want(format) {
            let f = File::create(opts.out.join(name)).map_err(io(format!("creating {name}")))?;
            Some((BufWriter::with_capacity(1 << 20, f), name))
        } else {
            None
        });
    }
    let mut cda_pending: Vec<Vec<(String, String)>> = vec![Vec::new(); insts.len()];
    let mut cda_zips: Vec<u32> = vec![0; insts.len()];

    let threads = opts.threads.max(1);
    // Pipelined: while this thread appends batch k to the ordered outputs, the workers are
    // already generating batch k+1.
    std::thread::scope(|sc| -> Result<(), SynthError> {
        let spawn = |start: u64| {
            let end = (start + BATCH).min(opts.persons);
            let per = (end - start).div_ceil(threads as u64);
            let handles: Vec<_> = (0..threads as u64)
                .map(|t| {
                    let (lo, hi) = ((start + t * per).min(end), (start + (t + 1) * per).min(end));
                    let (params, insts) = (&params, &insts);
                    sc.spawn(move || work(opts, params, insts, lo..hi))
                })
                .collect();
            (handles, end)
        };
        let mut pending = (opts.persons > 0).then(|| spawn(0));
        while let Some((handles, end)) = pending.take() {
            let results: Vec<Result<(Vec<Ordered>, Summary), SynthError>> = handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(SynthError::Invalid("worker panicked".into())))
                })
                .collect();
            if end < opts.persons {
                pending = Some(spawn(end));
            }
            for r in results {
                let (ordered, part) = r?;
                summary.merge(&part);
                for o in ordered {
                    for (tar, member) in tars.iter_mut().zip(&o.tars) {
                        if let Some((w, name)) = tar.as_mut() {
                            w.write_all(member).map_err(io(format!("writing {name}")))?;
                        }
                    }
                    if let (Some((w, pq)), Some((row, line))) = (flat.as_mut(), o.flat) {
                        w.write_all(line.as_bytes())
                            .map_err(io("writing flat/persons.csv"))?;
                        summary.add(Format::Flat, 0, line.len() as u64, 1);
                        pq.push(row)?;
                    }
                    if let (Some(w), Some((text, n))) = (events_out.as_mut(), o.events) {
                        w.write_all(text.as_bytes())
                            .map_err(io("writing events/events.csv"))?;
                        summary.add(Format::Events, 0, text.len() as u64, n);
                    }
                    truth
                        .write_all(o.truth.as_bytes())
                        .map_err(io("writing truth/links.csv"))?;
                    if want(Format::Claims) {
                        for c in o.claims {
                            let f =
                                claim_files
                                    .entry((c.inst, c.month.clone()))
                                    .or_insert(ClaimFile {
                                        buf: Vec::new(),
                                        count: 0,
                                        points: 0,
                                        started: false,
                                    });
                            f.count += 1;
                            f.points += c.points;
                            let body = c.body.replacen("{receipt}", &f.count.to_string(), 1);
                            f.buf.extend_from_slice(&text::shift_jis(&body)?);
                            summary.add(Format::Claims, 0, 0, 1);
                            if f.buf.len() >= CLAIMS_FLUSH {
                                flush_claims(
                                    &opts.out,
                                    &insts,
                                    &c.inst,
                                    &c.month,
                                    f,
                                    &mut summary,
                                )?;
                            }
                        }
                    }
                    if let (true, Some((inst, xml))) = (want(Format::Cda), o.cda) {
                        let n = cda_pending[inst].len() + cda_zips[inst] as usize * CDA_PER_ZIP;
                        let name = format!(
                            "h{}{}{:07}.xml",
                            insts[inst].code,
                            opts.as_of.compact(),
                            n + 1
                        );
                        cda_pending[inst].push((name, xml));
                        summary.add(Format::Cda, 0, 0, 1);
                        if cda_pending[inst].len() >= CDA_PER_ZIP {
                            write_cda_zip(
                                opts,
                                &insts,
                                inst,
                                &mut cda_pending,
                                &mut cda_zips,
                                &mut summary,
                            )?;
                        }
                    }
                }
            }
            progress(end);
        }
        Ok(())
    })?;
    for inst in 0..insts.len() {
        if !cda_pending[inst].is_empty() {
            write_cda_zip(
                opts,
                &insts,
                inst,
                &mut cda_pending,
                &mut cda_zips,
                &mut summary,
            )?;
        }
    }
    for ((inst, month), f) in claim_files.iter_mut() {
        flush_claims(&opts.out, &insts, inst, month, f, &mut summary)?;
        let path = claims_path(&opts.out, &insts[*inst], month);
        let go = uke::go_line(f.count, f.points);
        append(&path, go.as_bytes())?;
        summary.add(Format::Claims, 1, go.len() as u64, 0);
    }
    if let Some((mut w, pq)) = flat {
        w.flush().map_err(io("writing flat/persons.csv"))?;
        summary.add(Format::Flat, 1, flat::csv_header().len() as u64, 0);
        pq.finish()?;
        let len = fs::metadata(opts.out.join("flat/persons.parquet"))
            .map_err(io("reading flat/persons.parquet"))?
            .len();
        summary.add(Format::Flat, 1, len, 0);
    }
    if let Some(mut w) = events_out {
        w.flush().map_err(io("writing events/events.csv"))?;
    }
    truth.flush().map_err(io("writing truth/links.csv"))?;
    for (mut w, name) in tars.into_iter().flatten() {
        w.write_all(&tarball::END)
            .and_then(|()| w.flush())
            .map_err(io(format!("writing {name}")))?;
    }
    fs::write(opts.out.join("summary.json"), summary.to_json(opts))
        .map_err(io("writing summary.json"))?;
    Ok(summary)
}

fn prepare_out(out: &Path) -> Result<(), SynthError> {
    match fs::read_dir(out) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(SynthError::OutputNotEmpty(out.to_path_buf()));
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            fs::create_dir_all(out).map_err(io(format!("creating {}", out.display())))
        }
        Err(e) => Err(io(format!("reading {}", out.display()))(e)),
    }
}

fn work(
    opts: &Options,
    params: &Params,
    insts: &[Institution],
    range: std::ops::Range<u64>,
) -> Result<(Vec<Ordered>, Summary), SynthError> {
    let mut out = Vec::with_capacity((range.end - range.start) as usize);
    let mut sum = Summary::default();
    let want = |f: Format| opts.formats.contains(&f);
    let tar = opts.layout == Layout::Tar;
    let mtime = u64::try_from(opts.as_of.to_days() * 86_400).unwrap_or(0);
    for index in range {
        let p = model::person(params, insts, index);
        sum.links += p.links.len() as u64;
        let mut truth = String::new();
        let (mut ssmix2_tar, mut fhir_tar) = (Vec::new(), Vec::new());
        for (li, link) in p.links.iter().enumerate() {
            let inst = &insts[link.inst];
            truth.push_str(&format!("{},{},{}\n", p.index, inst.code, link.local_id));
            if want(Format::Ssmix2) {
                let root = format!("ssmix2/{}/standard_storage", inst.code);
                for (rel, bytes) in hl7::person_files(params, insts, &p, li)? {
                    let path = format!("{root}/{rel}");
                    if tar {
                        tarball::append_member(&mut ssmix2_tar, &path, &bytes, mtime)
                            .map_err(io(format!("adding {path} to ssmix2.tar")))?;
                    } else {
                        write_file(&opts.out.join(path), &bytes)?;
                    }
                    sum.add(Format::Ssmix2, 1, bytes.len() as u64, 1);
                }
            }
            if want(Format::Fhir) {
                let bytes = fhir::bundle(insts, &p, li);
                let path = format!("fhir/{}/{}.json", inst.code, link.local_id);
                if tar {
                    tarball::append_member(&mut fhir_tar, &path, &bytes, mtime)
                        .map_err(io(format!("adding {path} to fhir.tar")))?;
                } else {
                    write_file(&opts.out.join(path), &bytes)?;
                }
                sum.add(Format::Fhir, 1, bytes.len() as u64, 1);
            }
        }
        out.push(Ordered {
            tars: [ssmix2_tar, fhir_tar],
            flat: want(Format::Flat).then(|| {
                let row = flat::FlatRow::of(params, &p);
                let line = row.csv();
                (row, line)
            }),
            events: want(Format::Events).then(|| events::csv(insts, &p)),
            truth,
            claims: if want(Format::Claims) {
                uke::claims(&p)
            } else {
                Vec::new()
            },
            cda: if want(Format::Cda) {
                cda::document(insts, &p)
            } else {
                None
            },
        });
    }
    Ok((out, sum))
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), SynthError> {
    match fs::write(path, bytes) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(parent) = path.parent() {
                fs::create_dir_all(parent).map_err(io(format!("creating {}", parent.display())))?;
            }
            fs::write(path, bytes).map_err(io(format!("writing {}", path.display())))
        }
        Err(e) => Err(io(format!("writing {}", path.display()))(e)),
    }
}

fn append(path: &Path, bytes: &[u8]) -> Result<(), SynthError> {
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(io(format!("opening {}", path.display())))?;
    f.write_all(bytes)
        .map_err(io(format!("writing {}", path.display())))
}

fn claims_path(out: &Path, inst: &Institution, month: &str) -> PathBuf {
    out.join("claims")
        .join(&inst.code)
        .join(month)
        .join("RECEIPTC.UKE")
}

fn flush_claims(
    out: &Path,
    insts: &[Institution],
    inst: &usize,
    month: &str,
    f: &mut ClaimFile,
    summary: &mut Summary,
) -> Result<(), SynthError> {
    let path = claims_path(out, &insts[*inst], month);
    if !f.started {
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(io(format!("creating {}", parent.display())))?;
        }
        let ir = text::shift_jis(&uke::ir_line(&insts[*inst], month))?;
        fs::write(&path, &ir).map_err(io(format!("writing {}", path.display())))?;
        summary.add(Format::Claims, 0, ir.len() as u64, 0);
        f.started = true;
    }
    append(&path, &f.buf)?;
    summary.add(Format::Claims, 0, f.buf.len() as u64, 0);
    f.buf.clear();
    Ok(())
}

fn write_cda_zip(
    opts: &Options,
    insts: &[Institution],
    inst: usize,
    pending: &mut [Vec<(String, String)>],
    zips: &mut [u32],
    summary: &mut Summary,
) -> Result<(), SynthError> {
    let dir = opts.out.join("cda");
    fs::create_dir_all(&dir).map_err(io("creating cda/"))?;
    zips[inst] += 1;
    let path = dir.join(format!(
        "{}_{}_{:04}.zip",
        insts[inst].code,
        opts.as_of.compact(),
        zips[inst]
    ));
    let file = File::create(&path).map_err(io(format!("creating {}", path.display())))?;
    let docs = std::mem::take(&mut pending[inst]);
    let w = cda::write_zip(
        BufWriter::new(file),
        &insts[inst],
        &opts.as_of.compact(),
        &docs,
    )?;
    let file = w
        .into_inner()
        .map_err(|e| io(format!("writing {}", path.display()))(e.into_error()))?;
    let len = file
        .metadata()
        .map_err(io(format!("reading {}", path.display())))?
        .len();
    summary.add(Format::Cda, 1, len, 0);
    Ok(())
}
