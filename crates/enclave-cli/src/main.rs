//! `enclave`: the command-line tool for the people around the appliance — institutions that
//! seal records for the vault, researchers who open released extracts, and operators who
//! make keys. A thin driver: all format and crypto logic lives in the `envelope` and
//! `keystore` crates.
//!
//! Exit codes: 0 success; 1 local problem (files, keys, arguments); 2 command-line usage
//! error; 3 the input envelope was rejected (bad signature, tampered, wrong recipient …), or
//! `conform` found a deviation.

#![forbid(unsafe_code)]

mod anonymize_cmd;
mod ca_cmd;
mod conform_cmd;
mod hierarchy_cmd;
mod output;
mod persons_cmd;
mod progress;
mod receive_cmd;
mod recipe_cmd;
mod submit_cmd;
mod synth_cmd;

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use envelope::{ContentType, EnvelopeError, SealParams, SignedHeader};
use keystore::PairKind;

use crate::output::Output;
use crate::progress::{human_bytes, Progress};

/// Exit code for an envelope that was refused (as opposed to a local error).
const EXIT_REJECTED: u8 = 3;

#[derive(Parser, Debug)]
#[command(
    name = "enclave",
    version,
    about = "Tools for institutions, researchers and operators of the anonymized-medical-data enclave",
    long_about = "Tools for institutions, researchers and operators of the anonymized-medical-data \
enclave (次世代医療基盤法 certified operator appliance).\n\n\
Institutions seal records to the vault's public key and sign them with their own key, so the \
receiving server (ingress) never sees plaintext (R-GW-8). Researchers open approved releases \
sealed to them. Everyone makes their keys here.\n\n\
It refuses: to overwrite keys or outputs (unless --force for outputs), to use a secret key file \
readable by others, to write binary data to a terminal, and to output any plaintext under its \
final name unless the whole envelope verified.\n\n\
Exit codes: 0 success, 1 local error, 2 usage error, 3 envelope rejected.",
    after_help = "Example (institution 1312345678 sending SS-MIX2 data to the vault):\n  \
enclave keygen --kind signing --owner 1312345678 --out inst\n  \
enclave seal --to vault.pub --sign-with inst.key --type ssmix2 records.hl7 -o records.env\n\
Vault side:\n  \
enclave open --key vault.key --trust inst.pub records.env -o records.hl7"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Make a key pair: PREFIX.key (secret, mode 0600) and PREFIX.pub (public)
    #[command(
        long_about = "Make a key pair and write PREFIX.key (secret, mode 0600) and PREFIX.pub \
(public, 0644).\n\n\
encryption: X25519. Its public half is what others seal to: the vault's (institutions seal to \
it) or a researcher's (releases are sealed to it).\n\
signing: Ed25519. Its owner signs what it seals: an institution (the owner id must be the \
institution code registered with the operator) or the vault (it signs releases).\n\n\
Prints the key id (SHA-256 of the public key). Give the .pub file to the other side and \
confirm the key id with them over a second channel (phone, paper) before it is trusted.\n\n\
Refuses to overwrite existing key files."
    )]
    Keygen {
        /// Which pair to make.
        #[arg(long, value_enum)]
        kind: KindArg,
        /// Owner id recorded in the key: institution code, `vault`, researcher id
        /// (1–64 of A-Z a-z 0-9 . _ : -).
        #[arg(long)]
        owner: String,
        /// Path prefix of the two files (PREFIX.key, PREFIX.pub).
        #[arg(long, value_name = "PREFIX")]
        out: PathBuf,
    },
    /// Encrypt a file to a recipient's public key and sign it with your signing key
    #[command(
        long_about = "Encrypt INPUT to the recipient's X25519 public key and sign it with your \
Ed25519 signing key. The envelope header records the content type, the plaintext size and \
its SHA-256; the signature covers all of it.\n\n\
Sealing runs in constant memory, so files of many GB are fine. Written to a file, the \
envelope is sealed in one pass and appears under its name only when complete. Written to \
standard output (-o -), the input is read twice (hash, then encrypt) because the header must \
come first; standard input is then copied to an unnamed temporary file (deleted \
automatically) first."
    )]
    Seal {
        /// Recipient's encryption public key (.pub from `keygen --kind encryption`).
        #[arg(long, value_name = "PUB")]
        to: PathBuf,
        /// Your signing secret key (.key from `keygen --kind signing`).
        #[arg(long, value_name = "KEY")]
        sign_with: PathBuf,
        /// What the file is.
        #[arg(long = "type", value_enum)]
        content_type: ContentTypeArg,
        /// Plaintext bytes per encrypted segment (1024..=16777216).
        #[arg(long, default_value_t = envelope::DEFAULT_SEGMENT_SIZE, value_name = "BYTES")]
        segment_size: u32,
        /// File to seal, or `-` for standard input.
        #[arg(default_value = "-")]
        input: PathBuf,
        /// Where to write the envelope, or `-` for standard output.
        #[arg(short, long, value_name = "FILE")]
        output: PathBuf,
        /// Replace OUTPUT if it exists.
        #[arg(long)]
        force: bool,
    },
    /// Check and decrypt an envelope sealed to you
    #[command(
        long_about = "Check and decrypt an envelope sealed to your X25519 key. Checks, in order: \
format and version, that it is sealed to your key, that its signer is one of the trusted \
sender keys and is the sender the header names, the signature, every segment (modified, \
reordered, duplicated or missing segments are refused), that nothing follows the last \
segment, and the plaintext's SHA-256.\n\n\
With -o FILE the plaintext appears under FILE only if every check passed. With -o - the \
plaintext is streamed as it authenticates: a non-zero exit means what was written is \
incomplete and must be discarded."
    )]
    Open {
        /// Your encryption secret key.
        #[arg(long, value_name = "KEY")]
        key: PathBuf,
        /// Trusted sender public key file, or a directory of them (repeatable; at least one).
        #[arg(long, value_name = "PUB|DIR", required = true)]
        trust: Vec<PathBuf>,
        /// Envelope to open, or `-` for standard input.
        #[arg(default_value = "-")]
        input: PathBuf,
        /// Where to write the plaintext, or `-` for standard output.
        #[arg(short, long, value_name = "FILE")]
        output: PathBuf,
        /// Replace OUTPUT if it exists.
        #[arg(long)]
        force: bool,
    },
    /// Show an envelope's header without decrypting it
    #[command(
        long_about = "Print an envelope's header (id, sender, recipient key, content type, \
sizes, digest) without decrypting anything; no secret key is needed. With --trust, also \
check that the header is signed by a trusted sender key, the way ingress checks envelopes it \
cannot open."
    )]
    Inspect {
        /// Envelope to inspect, or `-` for standard input.
        #[arg(default_value = "-")]
        input: PathBuf,
        /// Trusted sender public key file or directory (repeatable): verify the signature.
        #[arg(long, value_name = "PUB|DIR")]
        trust: Vec<PathBuf>,
    },
    /// Generate synthetic patients in SS-MIX2, FHIR, 特定健診 CDA, UKE claims and flat tables
    #[command(
        long_about = "Generate synthetic Japanese patients and their records in the formats \
hospital, checkup and claims systems produce: SS-MIX2 standardized storage (HL7 v2.5, \
ISO-2022-JP), JP Core FHIR R4 Bundles, 特定健診 HL7 CDA R2 submission ZIPs, UKE-style claims \
(Shift_JIS) and a flat person table (CSV), plus truth/links.csv (which local patient ids are \
the same person) and summary.json.\n\n\
No real patient data is used or produced: names and postal areas come from openly licensed \
lists and are combined at random. The same --seed and arguments give byte-identical output, \
whatever the thread count.\n\n\
Refuses an output folder that exists and is not empty. summary.json is written last: a folder \
without it is from an interrupted run.",
        after_help = "Examples:\n  enclave synth --persons 10000 --institutions 8 --seed 7 --out /srv/synth\n  \
enclave synth --persons 1000000 --layout tar --out /srv/synth1m   # about 43 GiB, 7 min here"
    )]
    Synth(synth_cmd::SynthArgs),
    /// Anonymize a table: optimal generalization for k-anonymity, l-diversity, t-closeness
    #[command(
        long_about = "Anonymize a table by full-domain generalization (R-AN-1..4): each \
quasi-identifier is generalized to one level of its hierarchy (ARX's CSV format: no header, \
column 0 the original value, column j its level-j generalization), records in classes smaller \
than --k (or, with --sensitive, with fewer than --l distinct values or a distribution \
farther than --t from the table's) are suppressed (their quasi-identifiers written as *) as \
long as they are at most --suppression-limit of the records, and of all transformations that satisfy this the one with \
the least information loss (--metric, ARX's definitions) is chosen — proven optimal over the \
whole lattice.\n\n\
Writes the transformed table to --output and a report to --report (JSON: levels, score, \
suppressed, classes, min_class, risk, seconds, the configuration and its SHA-256) with an HTML \
page beside it. Nothing is written if anything fails: a value missing from its hierarchy, an \
inconsistent hierarchy, a missing column, k larger than the data, an empty or non-UTF-8 file \
are refused with the column and row named.\n\n\
Drop direct identifiers and linking codes with --drop (R-AN-1, R-AN-4). The input and output \
may be CSV or Parquet (by extension); --sensitive may be repeated; --mode mondrian recodes \
locally and --mode heuristic searches lattices too large for the optimal search. For tables \
with many rows per person, use `enclave anonymize-persons`: this command protects rows.",
        after_help = "Example:\n  enclave anonymize --input adult.csv \\\n    --qi age=age.csv --qi sex=sex.csv --qi zip=zip.csv \\\n    --k 5 --suppression-limit 0.05 --metric loss \\\n    --output adult-anon.csv --report adult-anon.json"
    )]
    Anonymize(anonymize_cmd::AnonymizeArgs),
    /// Anonymize persons, not rows: a person table with an event table (diagnoses, drugs…)
    #[command(
        name = "anonymize-persons",
        long_about = "Person-level anonymization (issue #12; R-AN-1, R-AN-2). Medical data has \
many event rows per person; a privacy model over rows protects rows, not people. Here the \
equivalence classes are formed over persons: the quasi-identifiers of --persons (--qi) plus, \
for each --event-set KIND=HIERARCHY, the set of the person's codes of that kind as one \
set-valued quasi-identifier (column KIND_codes), generalized through the code hierarchy (a set \
at level j is the set of its codes at level j). k, l, t, the suppression limit, the metric and \
the mode mean what they mean for `enclave anonymize`, counted in persons.\n\n\
The release: --output-persons with the generalized quasi-identifiers and the sets, and \
--output-events with each code generalized to its person's level, so the codes a reader can \
collect for a person are exactly the released set. A suppressed person leaves nothing: no \
person row, no event row. Event rows of undeclared kinds are left out. The person id is \
replaced in both by a release key (HMAC-SHA256 under a per-release secret) and --shift-dates \
moves a person's dates by one offset of at most --max-shift-days, so intervals between their \
events are kept. Every column of both tables needs a decision (quasi-identifier, sensitive, \
dropped, or kept with --keep / --keep-events); any other column is refused. Nothing is \
written if anything fails.\n\n\
--profile anonymized (匿名加工医療情報, default) enforces the privacy model with k >= 2; \
--profile pseudonymized (仮名加工医療情報) keeps every value and only replaces the ids, for \
recipients registered as certified users; it takes no --k, --l, --t or --suppression-limit. \
--recipe-out writes a recipe for `enclave apply-recipe`. See docs/anonymization.md.",
        after_help = "Example:\n  enclave hierarchy --input events.csv --delimiter , --column code --where kind=dx --icd10 --out icd10.csv\n  enclave anonymize-persons --persons persons.csv --events events.csv \\\n    --qi age=age.csv --qi sex=sex.csv --qi postal_code=zip.csv --drop family_name,given_name \\\n    --event-set dx=icd10.csv --shift-dates date --max-shift-days 30 --drop-events institution \\\n    --keep height_cm,hba1c --keep-events value --k 5 --suppression-limit 0.05 \\\n    --output-persons p.csv --output-events e.csv --report report.json"
    )]
    AnonymizePersons(Box<persons_cmd::PersonsArgs>),
    /// Apply a recipe (levels and hierarchies of an earlier run) to a new delivery
    #[command(
        name = "apply-recipe",
        long_about = "Apply a recipe written by `enclave anonymize --recipe-out` or `enclave \
anonymize-persons --recipe-out` to a new delivery of data (R-AN-3). A recipe holds the \
settings with the chosen levels fixed and the text of every hierarchy, and is identified by \
the SHA-256 of its content (printed, and written into the report). No search is run: each \
value maps to what it mapped to before. A value missing from a hierarchy is refused with its \
row; if the privacy model does not hold at the recipe's levels on this delivery (more records \
in failing classes than the suppression limit allows) the delivery is refused with the \
figures, and nothing is written: the recipe is never weakened to fit. With --trust the recipe \
must carry a signature (RECIPE.sig, from `enclave sign-recipe` or --sign-recipe) by one of the \
given approver keys, over exactly this content.",
        after_help = "Examples:\n  enclave apply-recipe --recipe r.json --input next.csv --output next-anon.csv --report next.json\n  enclave apply-recipe --recipe r.json --trust approvers/ --expect-id 3f9a… --input next.csv \\\n    --output next-anon.csv --report next.json\n  enclave apply-recipe --recipe r.json --persons p.csv --events e.csv \\\n    --output-persons p-anon.csv --output-events e-anon.csv --report next.json"
    )]
    ApplyRecipe(recipe_cmd::ApplyArgs),
    /// Sign a recipe as the approved method version (Ed25519 over its id)
    #[command(
        name = "sign-recipe",
        long_about = "Sign a recipe (R-AN-3): the approver, having reviewed the recipe and the \
report of the run it came from, signs its id (the SHA-256 of the whole recipe) with their \
Ed25519 signing key. The signature goes to RECIPE.sig; `enclave apply-recipe --trust KEY.pub` \
then refuses the recipe unless it carries a signature by a trusted key over exactly this \
content. Refuses to overwrite an existing signature.",
        after_help = "Example:\n  enclave keygen --kind signing --owner approver-1 --out approver-1\n  enclave sign-recipe --key approver-1.key --expect-id 3f9a… recipe.json"
    )]
    SignRecipe(recipe_cmd::SignArgs),
    /// Say an anonymization report in plain Japanese or English
    #[command(
        long_about = "Render the JSON report of `enclave anonymize`, `anonymize-persons` or \
`apply-recipe` in plain language (Markdown): what was done to each attribute, the \
re-identification risk per person under the prosecutor, journalist and marketer models, the \
information lost per attribute, and the group sizes. The report's HTML page carries both \
languages already; this is for committees, mail and archives. Reads only the report.",
        after_help = "Example:\n  enclave explain --lang ja report.json > report.ja.md"
    )]
    Explain {
        /// Language: ja (日本語) or en (English).
        #[arg(long, default_value = "ja", value_parser = ["ja", "en"])]
        lang: String,
        /// The JSON report.
        report: PathBuf,
    },
    /// Researchers: receive release packages from the operator's egress
    #[command(
        long_about = "The researcher's receive server for anonymized releases (issue #10). \
Listens on QUIC with TLS 1.3 and accepts only the operator's egress client certificate \
(operator CA, current CRL, subject --egress-name). Each package must open with your key \
(--key), be signed by the vault (--vault-key), and every file must match the signed \
manifest; it is then written atomically to OUT/RELEASE-ID/ and egress gets a receipt signed \
with --receipt-key. A package that was tampered with, sealed to another key or signed by \
another vault is refused and nothing of it is written.\n\n\
The data is 匿名加工医療情報: manifest.json carries the conditions of use and the statement \
that re-identification and onward provision without permission are forbidden (R-RL-4). \
See docs/releases.md.",
        after_help = "Example:\n  enclave receive --bind 0.0.0.0:4443 --key lab.key --vault-key release.pub \\\n    --receipt-key receipt.key --ca ca.crt.pem --crl crl.pem \\\n    --cert lab.crt.pem --tls-key lab.key.pem --out /srv/releases"
    )]
    Receive(receive_cmd::ReceiveArgs),
    /// Build a generalization hierarchy (ARX format) for one column of a table
    #[command(
        long_about = "Build a generalization hierarchy for one column from the distinct values \
of a table, in ARX's format (one row per value, ';'-separated, the last level '*'), for \
`enclave anonymize --qi COLUMN=FILE`. Kinds: --interval for numbers (nested widths), --date \
for YYYY-MM-DD (month, year, decade), --mask for codes such as postal codes (trailing \
characters masked), --ordered for categories in a known order (consecutive runs). The result \
is validated like a hand-written file. Refuses to overwrite --out.",
        after_help = "Examples:\n  enclave hierarchy --input persons.csv --delimiter , --column age --interval 5,10,20 --out age.csv\n  enclave hierarchy --input persons.csv --delimiter , --column postal_code --mask 2,4,7 --out zip.csv\n  enclave hierarchy --input persons.csv --delimiter , --column prefecture --ordered 6,12 --order jis-prefectures --out pref.csv"
    )]
    Hierarchy(hierarchy_cmd::HierarchyArgs),
    /// Operator CA: issue and revoke institution and ingress certificates
    #[command(
        long_about = "The operator's certificate authority (R-GW-7). Institutions log in to \
ingress with a client certificate it issues (common name = institution id, the same id that \
signs their envelopes); ingress presents a server certificate it issues. Revoking re-signs \
crl.pem, which ingress checks on every handshake; the CRL is valid 30 days, so re-sign it \
(`enclave ca crl`) and copy it to ingress at least monthly. Keep --dir on the operator's \
offline machine: ca.key.pem (0600) never leaves it.",
        after_help = "Example:\n  enclave ca --dir ca init\n  enclave ca --dir ca issue --server ingress.example.jp --out tls\n  enclave ca --dir ca issue --institution 1312345678 --out to-1312345678\n  enclave ca --dir ca revoke --serial 0000000000000002 --reason 'key lost'"
    )]
    Ca(ca_cmd::CaArgs),
    /// Seal files for the vault and push them to ingress (institutions)
    #[command(
        long_about = "Seal files to the vault's key, sign them with the institution's key and \
push them to ingress over QUIC with mutual TLS 1.3 (R-GW-7, R-GW-8). Every receipt is verified \
with ingress's key and kept in STATE/receipts. A file is sent once per content (path, size, \
modification time): run it again, or with --watch, and only new or changed files go. An \
interrupted upload resumes where it stopped; retryable refusals (rate limit, busy, quota) and \
lost connections are retried with backoff.\n\n\
Exit status is non-zero if any file was refused for good; each is listed with the reason.",
        after_help = "Example:\n  enclave submit --ingress ingress.example.jp:4433 --ca ca.crt.pem \\\n    --cert 1312345678.crt.pem --key 1312345678.key.pem \\\n    --vault vault.pub --sign-with inst.key --ingress-key ingress-receipts.pub \\\n    --type ssmix2 --state /var/lib/enclave-submit --watch /srv/ssmix2"
    )]
    Submit(submit_cmd::SubmitArgs),
    /// Check this host against the hardening profile (operators, monitoring)
    #[command(
        long_about = "Check the running host against the appliance's hardening profile \
(firmware-config/profile.toml, built in; --profile for a site's copy): UEFI Secure Boot and \
setup mode, boot entries, TPM, kernel settings (no forwarding, no source routing, \
kptr_restrict, unprivileged BPF off …), wake-on-LAN, time servers and synchronisation \
(R-OP-3), disabled and enabled services, package sources (staging server only, R-GW-9), the \
role's nftables tables and reverse counters (R-GW-4, R-GW-5), and the listening sockets \
(R-GW-2, R-GW-3, R-GW-6). Each check prints ok, DEVIATION with what was found, or unknown \
with why it could not be read (no EFI in a VM, a command missing): unknown is never ok. \
Items only checkable in firmware setup are listed to check on site. Run it as root: some \
files are root-only.\n\n\
Exit status: 0 no deviation, 3 a deviation (or, with --strict, an unknown), 1 the check \
could not run.",
        after_help = "Examples:\n  enclave conform --role vault\n  enclave conform --role ingress --json > /var/lib/enclave/conform.json\n  enclave conform --role egress --profile /etc/enclave/profile.toml --strict"
    )]
    Conform(conform_cmd::ConformArgs),
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum KindArg {
    /// X25519 key pair: others seal to its public half.
    Encryption,
    /// Ed25519 key pair: its owner signs envelopes.
    Signing,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub(crate) enum ContentTypeArg {
    /// SS-MIX2 standardized storage (HL7 v2.5).
    Ssmix2,
    /// JP Core FHIR R4 JSON bundle.
    FhirJp,
    /// 特定健診 CDA R2 submission package (ZIP).
    CdaTokutei,
    /// Claims (レセプト), UKE format.
    Uke,
    /// DPC survey data.
    Dpc,
    /// Plain CSV.
    Csv,
    /// Apache Parquet.
    Parquet,
    /// Anonymized release package.
    Release,
}

impl From<ContentTypeArg> for ContentType {
    fn from(c: ContentTypeArg) -> Self {
        match c {
            ContentTypeArg::Ssmix2 => ContentType::Ssmix2,
            ContentTypeArg::FhirJp => ContentType::FhirJp,
            ContentTypeArg::CdaTokutei => ContentType::CdaTokutei,
            ContentTypeArg::Uke => ContentType::Uke,
            ContentTypeArg::Dpc => ContentType::Dpc,
            ContentTypeArg::Csv => ContentType::Csv,
            ContentTypeArg::Parquet => ContentType::Parquet,
            ContentTypeArg::Release => ContentType::Release,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            let rejected = err
                .chain()
                .find_map(|e| e.downcast_ref::<EnvelopeError>())
                .is_some_and(EnvelopeError::is_rejection);
            if let Some(r) = err.downcast_ref::<receive_cmd::Rejected>() {
                eprintln!("enclave: receive: {r}; nothing was written");
                return ExitCode::from(EXIT_REJECTED);
            }
            if let Some(d) = err.downcast_ref::<conform_cmd::Deviations>() {
                eprintln!("enclave: conform: {d}");
                return ExitCode::from(EXIT_REJECTED);
            }
            eprintln!("enclave: error: {err:#}");
            if rejected {
                eprintln!(
                    "enclave: the envelope was rejected; nothing was written under the output name"
                );
                ExitCode::from(EXIT_REJECTED)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Keygen { kind, owner, out } => keygen(kind, &owner, &out),
        Command::Seal {
            to,
            sign_with,
            content_type,
            segment_size,
            input,
            output,
            force,
        } => seal(
            &to,
            &sign_with,
            content_type.into(),
            segment_size,
            &input,
            &output,
            force,
        ),
        Command::Open {
            key,
            trust,
            input,
            output,
            force,
        } => open(&key, &trust, &input, &output, force),
        Command::Inspect { input, trust } => inspect(&input, &trust),
        Command::Synth(args) => synth_cmd::run(args),
        Command::Anonymize(args) => anonymize_cmd::run(args),
        Command::AnonymizePersons(args) => persons_cmd::run(*args),
        Command::ApplyRecipe(args) => recipe_cmd::run(args),
        Command::SignRecipe(args) => recipe_cmd::run_sign(args),
        Command::Explain { lang, report } => explain(&lang, &report),
        Command::Receive(args) => receive_cmd::run(args),
        Command::Hierarchy(args) => hierarchy_cmd::run(args),
        Command::Ca(args) => ca_cmd::run(args),
        Command::Submit(args) => submit_cmd::run(args),
        Command::Conform(args) => conform_cmd::run(args),
    }
}

fn keygen(kind: KindArg, owner: &str, out: &Path) -> Result<()> {
    let pair_kind = match kind {
        KindArg::Encryption => PairKind::Encryption,
        KindArg::Signing => PairKind::Signing,
    };
    let rng = ring::rand::SystemRandom::new();
    let pair = keystore::generate_pair(pair_kind, owner, out, &rng)?;
    println!("secret key: {} (mode 0600)", pair.secret_path.display());
    println!("public key: {}", pair.public_path.display());
    println!("key id:     {}", pair.key_id);
    println!("Confirm this key id with the other side over a second channel before use.");
    Ok(())
}

/// Opens the seal input as a seekable file; standard input is spooled to an unnamed
/// temporary file first because sealing needs two passes.
fn seekable_input(input: &Path) -> Result<File> {
    if input == Path::new("-") {
        let mut spool = tempfile::tempfile().context("creating a spool file for standard input")?;
        io::copy(&mut io::stdin().lock(), &mut spool).context("reading standard input")?;
        spool.seek(SeekFrom::Start(0))?;
        Ok(spool)
    } else {
        File::open(input).with_context(|| format!("cannot open {}", input.display()))
    }
}

/// Size of an input file, for progress; 0 for standard input or when unknown.
fn file_size(input: &Path) -> u64 {
    if input == Path::new("-") {
        0
    } else {
        std::fs::metadata(input).map(|m| m.len()).unwrap_or(0)
    }
}

fn reader(input: &Path) -> Result<Box<dyn Read>> {
    if input == Path::new("-") {
        Ok(Box::new(io::stdin().lock()))
    } else {
        let f = File::open(input).with_context(|| format!("cannot open {}", input.display()))?;
        Ok(Box::new(f))
    }
}

fn seal(
    to: &Path,
    sign_with: &Path,
    content_type: ContentType,
    segment_size: u32,
    input: &Path,
    output: &Path,
    force: bool,
) -> Result<()> {
    if !(envelope::MIN_SEGMENT_SIZE..=envelope::MAX_SEGMENT_SIZE).contains(&segment_size) {
        bail!(
            "--segment-size {segment_size} is outside {}..={}",
            envelope::MIN_SEGMENT_SIZE,
            envelope::MAX_SEGMENT_SIZE
        );
    }
    let recipient = keystore::load_recipient_public(to)?;
    let signer = keystore::load_signing_key(sign_with)?;
    let started = Instant::now();
    let params = SealParams {
        recipient: &recipient,
        signer: &signer,
        content_type,
        segment_size,
    };
    let rng = ring::rand::SystemRandom::new();
    let mut out = Output::create(output, force, true)?;
    let sealed = if let Some(file) = out.seekable() {
        // One pass: the header is written last, over a placeholder.
        let size_hint = file_size(input);
        let mut source = Progress::new(reader(input)?, "sealing", size_hint);
        let sealed = envelope::seal_seekable(params, &rng, &mut source, file);
        source.finish();
        sealed
    } else {
        // A pipe cannot seek back to the header: hash first, then encrypt.
        let mut file = seekable_input(input)?;
        let size_hint = file.metadata().map(|m| m.len()).unwrap_or(0);
        let mut hashing = Progress::new(&mut file, "hashing", size_hint);
        let measured = envelope::measure(&mut hashing)?;
        hashing.finish();
        file.seek(SeekFrom::Start(0))?;
        let mut sealing = Progress::new(&mut file, "sealing", measured.size);
        let sealed = envelope::seal(params, measured, &rng, &mut sealing, &mut out);
        sealing.finish();
        sealed
    }
    .context("sealing failed")?;
    out.commit()?;
    let measured_size = sealed.header.header().plaintext_size;
    eprintln!(
        "sealed {} ({}) from {} for {} (key {}) as envelope {} ({}) in {:.2} s",
        content_type,
        human_bytes(measured_size),
        signer.public().owner(),
        recipient.owner(),
        recipient.key_id(),
        sealed.envelope_id(),
        human_bytes(sealed.sealed_size),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn open(key: &Path, trust: &[PathBuf], input: &Path, output: &Path, force: bool) -> Result<()> {
    let recipient = keystore::load_recipient_secret(key)?;
    let trusted = keystore::load_trusted(trust)?;
    if trusted.is_empty() {
        bail!("no trusted sender keys found in the --trust paths");
    }
    let started = Instant::now();
    let mut source = Progress::new(reader(input)?, "opening", file_size(input));
    let mut out = Output::create(output, force, true)?;
    let opened = envelope::open(&recipient, &trusted, &mut source, &mut out)
        .with_context(|| format!("cannot open {}", input.display()))?;
    source.finish();
    out.commit()?;
    let h = opened.header();
    eprintln!(
        "opened envelope {}: {} ({}) from {} (key {}), sha256 {} verified in {:.2} s",
        h.envelope_id,
        h.content_type,
        human_bytes(h.plaintext_size),
        opened.sender().owner(),
        opened.sender().key_id(),
        hex::encode(h.plaintext_sha256),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn inspect(input: &Path, trust: &[PathBuf]) -> Result<()> {
    let mut source = reader(input)?;
    let signed = SignedHeader::read_from(&mut source)
        .with_context(|| format!("cannot read the header of {}", input.display()))?;
    let h = signed.header();
    println!("envelope-id:      {}", h.envelope_id);
    println!("format-version:   {}", envelope::VERSION);
    println!("sender:           {}", h.sender_id);
    println!("sender-key-id:    {}", h.sender_key_id);
    println!("recipient-key-id: {}", h.recipient_key_id);
    println!("content-type:     {}", h.content_type);
    println!("plaintext-size:   {}", h.plaintext_size);
    println!("plaintext-sha256: {}", hex::encode(h.plaintext_sha256));
    println!("segment-size:     {}", h.segment_size);
    println!("sealed-size:      {}", h.sealed_size());
    if trust.is_empty() {
        println!("signature:        not checked (pass --trust to check)");
    } else {
        let trusted = keystore::load_trusted(trust)?;
        let key = signed.verify_with(&trusted)?;
        println!(
            "signature:        valid (key {} of {})",
            key.key_id(),
            key.owner()
        );
    }
    Ok(())
}

/// `enclave explain`: the plain-language report of a JSON report.
fn explain(lang: &str, path: &Path) -> Result<()> {
    let lang = anonymize::plain::Lang::parse(lang).context("--lang must be ja or en")?;
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let report: serde_json::Value = serde_json::from_slice(&bytes)
        .with_context(|| format!("{} is not a JSON report", path.display()))?;
    if report.get("method_version").is_none() {
        bail!(
            "{} is not an anonymization report (no method_version)",
            path.display()
        );
    }
    print!("{}", anonymize::plain::render(&report, lang));
    Ok(())
}
