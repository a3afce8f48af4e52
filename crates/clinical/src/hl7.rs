//! SS-MIX2 standardized storage files: one HL7 v2.5 message each (R-IN-1).
//!
//! The bytes are decoded *before* anything is split: in ISO-2022-JP the two bytes of a kanji
//! reuse the delimiter bytes (日 is 0x46 0x7C, which contains `|`), so a byte-level split
//! corrupts data without an error. The character set is recognised from the bytes and must
//! agree with what MSH-18 declares (ISO IR87 → ISO-2022-JP, UNICODE UTF-8, Shift_JIS); the
//! delimiters are those MSH-1 and MSH-2 declare, not assumed.
//!
//! Strict where a mistake would corrupt or misfile data (one message per file, one patient
//! per message, typed fields that hold the wrong type, dates that are not dates); lenient
//! where real SS-MIX2 exports are loose and the meaning is still clear (PID-3 without the
//! `^^^^PI` suffix, names packed into one component, a trailing MLLP 0x1C).

use crate::model::{nonempty, Extract, Identity, Kind, Record};
use crate::{is_decimal, valid_date, Format, Limits, Refusal};

/// Most distinct problems reported for one file; the first is the refusal's code.
const MAX_PROBLEMS: usize = 8;

/// The character set a message was decoded from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Charset {
    /// 7-bit ASCII only.
    Ascii,
    /// ISO-2022-JP (JIS X 0208 via `ESC $ B`).
    Iso2022Jp,
    /// UTF-8.
    Utf8,
    /// Shift_JIS (Windows-31J).
    ShiftJis,
}

/// Delimiters from MSH-1 and MSH-2.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Delims {
    /// Field separator (MSH-1).
    pub field: char,
    /// Component separator.
    pub component: char,
    /// Repetition separator.
    pub repetition: char,
    /// Escape character.
    pub escape: char,
    /// Subcomponent separator.
    pub subcomponent: char,
}

/// One segment: `fields[n]` is field n in HL7 numbering (`fields[0]` is the segment id; for
/// MSH, `fields[1]` is the field separator itself, as the standard counts it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Segment id, e.g. `PID`.
    pub id: String,
    /// Fields, raw (still escaped).
    pub fields: Vec<String>,
}

impl Segment {
    /// Field `n`, raw; empty when absent.
    pub fn field(&self, n: usize) -> &str {
        self.fields.get(n).map(String::as_str).unwrap_or("")
    }
}

/// A decoded, split and checked message.
#[derive(Clone, Debug)]
pub struct Message {
    /// Charset it was decoded from.
    pub charset: Charset,
    /// Delimiters.
    pub delims: Delims,
    /// Segments in order; the first is MSH.
    pub segments: Vec<Segment>,
}

impl Message {
    /// Repetition `rep`, component `comp` (1-based) of `field`, unescaped.
    pub fn component(&self, field: &str, rep: usize, comp: usize) -> String {
        let r = field.split(self.delims.repetition).nth(rep).unwrap_or("");
        let c = r.split(self.delims.component).nth(comp - 1).unwrap_or("");
        self.unescape(c)
    }

    /// Replaces the delimiter escapes (`\F\ \S\ \T\ \R\ \E\`); leaves other escapes as text.
    pub fn unescape(&self, s: &str) -> String {
        let e = self.delims.escape;
        if !s.contains(e) {
            return s.to_owned();
        }
        let mut out = String::with_capacity(s.len());
        let mut rest = s;
        while let Some(i) = rest.find(e) {
            out.push_str(&rest[..i]);
            let after = &rest[i + e.len_utf8()..];
            let mapped = match after.as_bytes() {
                [b'F', ..] => Some(self.delims.field),
                [b'S', ..] => Some(self.delims.component),
                [b'T', ..] => Some(self.delims.subcomponent),
                [b'R', ..] => Some(self.delims.repetition),
                [b'E', ..] => Some(e),
                _ => None,
            };
            match mapped {
                Some(ch) if after[1..].starts_with(e) => {
                    out.push(ch);
                    rest = &after[1 + e.len_utf8()..];
                }
                _ => {
                    out.push(e);
                    rest = after;
                }
            }
        }
        out.push_str(rest);
        out
    }

    /// The message type `MSH-9` as `TYPE^TRIGGER`.
    pub fn message_type(&self) -> String {
        let msh9 = self.segments[0].field(9);
        format!(
            "{}^{}",
            self.component(msh9, 0, 1),
            self.component(msh9, 0, 2)
        )
    }
}

/// Decodes the bytes of one message. The charset is recognised from the bytes; the caller
/// checks it against MSH-18.
pub fn decode(raw: &[u8]) -> Result<(String, Charset), Refusal> {
    let high = raw.iter().position(|&b| b >= 0x80);
    let esc = raw.contains(&0x1b);
    match (high, esc) {
        (None, false) => {
            // Pure ASCII is valid UTF-8 and needs no decoding.
            let s = std::str::from_utf8(raw).map_err(|_| {
                Refusal::new("hl7.encoding", "ASCII bytes did not decode (internal)")
            })?;
            Ok((s.to_owned(), Charset::Ascii))
        }
        (None, true) => encoding_rs::ISO_2022_JP
            .decode_without_bom_handling_and_without_replacement(raw)
            .map(|s| (s.into_owned(), Charset::Iso2022Jp))
            .ok_or_else(|| {
                Refusal::new(
                    "hl7.encoding",
                    "bytes are not valid ISO-2022-JP (an escape sequence or a double-byte code is malformed)",
                )
            }),
        (Some(at), true) => Err(Refusal::new(
            "hl7.encoding",
            format!("8-bit byte 0x{:02x} at offset {at} in a file that also uses ISO-2022-JP escapes: no single character set fits", raw[at]),
        )),
        (Some(at), false) => {
            if let Ok(s) = std::str::from_utf8(raw) {
                return Ok((s.to_owned(), Charset::Utf8));
            }
            encoding_rs::SHIFT_JIS
                .decode_without_bom_handling_and_without_replacement(raw)
                .map(|s| (s.into_owned(), Charset::ShiftJis))
                .ok_or_else(|| {
                    Refusal::new(
                        "hl7.encoding",
                        format!("8-bit byte 0x{:02x} at offset {at}: the bytes are neither ISO-2022-JP, UTF-8 nor Shift_JIS", raw[at]),
                    )
                })
        }
    }
}

/// Splits and checks decoded text into a [`Message`]; every problem found is collected.
fn split(text: &str, charset: Charset, limits: &Limits) -> Result<Message, Refusal> {
    let text = text.strip_prefix('\u{0b}').unwrap_or(text);
    // SS-MIX2 files keep the MLLP end-of-block byte: tolerate it, and only at the end.
    let text = text.trim_end_matches(['\u{1c}', '\r', '\n']);
    if !text.starts_with("MSH") {
        let shown: String = text.chars().take(12).collect();
        return Err(Refusal::new(
            "hl7.not-a-message",
            format!(
                "does not start with an MSH segment (starts with {shown:?}): not an HL7 v2 message"
            ),
        ));
    }
    if text.contains('\u{1c}') || text.contains('\u{0b}') {
        return Err(Refusal::new(
            "hl7.framing",
            "MLLP framing bytes (0x0B/0x1C) inside the message: more than one message or a damaged file",
        ));
    }
    let mut chars = text[3..].chars();
    let field = chars
        .next()
        .ok_or_else(|| Refusal::new("hl7.msh", "MSH has no field separator"))?;
    let enc: Vec<char> = chars.take_while(|&c| c != field).collect();
    if enc.len() != 4 {
        return Err(Refusal::new(
            "hl7.msh",
            format!(
                "MSH-2 must hold exactly 4 encoding characters, found {:?}",
                enc.iter().collect::<String>()
            ),
        ));
    }
    let all = [field, enc[0], enc[1], enc[2], enc[3]];
    for (i, c) in all.iter().enumerate() {
        if c.is_alphanumeric() || c.is_whitespace() || !c.is_ascii() || all[..i].contains(c) {
            return Err(Refusal::new(
                "hl7.msh",
                format!(
                    "delimiters {:?} must be five distinct ASCII punctuation characters",
                    all.iter().collect::<String>()
                ),
            ));
        }
    }
    let delims = Delims {
        field,
        component: enc[0],
        repetition: enc[1],
        escape: enc[2],
        subcomponent: enc[3],
    };
    let mut segments = Vec::new();
    for (n, line) in text.split('\r').enumerate() {
        // CR LF is a common export habit; a bare LF is not a segment terminator.
        let line = if n > 0 {
            line.strip_prefix('\n').unwrap_or(line)
        } else {
            line
        };
        if line.is_empty() {
            continue;
        }
        if line.contains('\n') {
            return Err(Refusal::new(
                "hl7.terminator",
                format!(
                    "segment {} contains a bare LF: HL7 segments end with CR",
                    n + 1
                ),
            ));
        }
        if segments.len() >= limits.max_segments {
            return Err(Refusal::new(
                "hl7.limits",
                format!("more than {} segments", limits.max_segments),
            ));
        }
        if line.len() > limits.max_line_bytes {
            return Err(Refusal::new(
                "hl7.limits",
                format!(
                    "segment {} is {} bytes, over the limit of {}",
                    n + 1,
                    line.len(),
                    limits.max_line_bytes
                ),
            ));
        }
        let id: String = line.chars().take(3).collect();
        let valid_id = id.len() == 3
            && id.chars().next().is_some_and(|c| c.is_ascii_uppercase())
            && id
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit());
        let rest = &line[id.len()..];
        if !valid_id || !(rest.is_empty() || rest.starts_with(field)) {
            let shown: String = line.chars().take(12).collect();
            return Err(Refusal::new(
                "hl7.segment",
                format!("segment {} {shown:?} does not start with a segment id (three capitals or digits) and a field separator", n + 1),
            ));
        }
        let mut fields: Vec<String> = vec![id.clone()];
        if id == "MSH" && !rest.is_empty() {
            fields.push(field.to_string());
            fields.extend(rest[field.len_utf8()..].split(field).map(str::to_owned));
        } else if !rest.is_empty() {
            fields.extend(rest[field.len_utf8()..].split(field).map(str::to_owned));
        }
        if fields.len() > limits.max_fields {
            return Err(Refusal::new(
                "hl7.limits",
                format!(
                    "segment {} ({id}) has {} fields, over the limit of {}",
                    n + 1,
                    fields.len(),
                    limits.max_fields
                ),
            ));
        }
        segments.push(Segment { id, fields });
    }
    Ok(Message {
        charset,
        delims,
        segments,
    })
}

fn declared_charsets(m: &Message) -> Vec<String> {
    m.segments[0]
        .field(18)
        .split(m.delims.repetition)
        .map(|r| r.replace([' ', '_', '-'], "").to_ascii_uppercase())
        .collect()
}

/// A date/time of HL7 type DTM: `YYYY[MM[DD[HH[MM[SS[.S[S[S[S]]]]]]]]][+/-ZZZZ]`.
pub fn valid_dtm(s: &str) -> bool {
    let (main, zone) = match s.find(['+', '-']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    if let Some(z) = zone {
        if z.len() != 4 || !z.bytes().all(|c| c.is_ascii_digit()) {
            return false;
        }
    }
    let (whole, frac) = match main.split_once('.') {
        Some((w, f)) => (w, Some(f)),
        None => (main, None),
    };
    if let Some(f) = frac {
        if whole.len() != 14
            || f.is_empty()
            || f.len() > 4
            || !f.bytes().all(|c| c.is_ascii_digit())
        {
            return false;
        }
    }
    if !matches!(whole.len(), 4 | 6 | 8 | 10 | 12 | 14)
        || !whole.bytes().all(|c| c.is_ascii_digit())
    {
        return false;
    }
    let padded = match whole.len() {
        4 => format!("{whole}0101"),
        6 => format!("{whole}01"),
        _ => whole[..8].to_owned(),
    };
    if valid_date(&padded, false).is_none() {
        return false;
    }
    let num = |a: usize| whole.get(a..a + 2).and_then(|x| x.parse::<u32>().ok());
    num(8).is_none_or(|h| h < 24)
        && num(10).is_none_or(|m| m < 60)
        && num(12).is_none_or(|s| s < 60)
}

fn dtm_date(s: &str) -> Option<String> {
    if s.len() >= 8 && valid_dtm(s) {
        Some(s[..8].to_owned())
    } else {
        None
    }
}

/// HL7 table 0125 value types, plus ZRD from the JAHIS conventions.
const VALUE_TYPES: &[&str] = &[
    "AD", "CE", "CF", "CK", "CN", "CNE", "CP", "CWE", "CX", "DT", "DTM", "ED", "FT", "ID", "MO",
    "NM", "PN", "RP", "SN", "ST", "TM", "TN", "TS", "TX", "XAD", "XCN", "XON", "XPN", "XTN", "ZRD",
];

/// Checks typed fields and cross-segment rules; returns every problem found (code, reason).
fn check(m: &Message) -> Vec<(&'static str, String)> {
    let mut p: Vec<(&'static str, String)> = Vec::new();
    let msh = &m.segments[0];
    let declared = declared_charsets(m);
    let declares = |names: &[&str]| declared.iter().any(|d| names.contains(&d.as_str()));
    let agrees = match m.charset {
        Charset::Ascii => true,
        Charset::Iso2022Jp => declares(&["ISOIR87", "ISOIR159", "ISOIR13"]),
        Charset::Utf8 => declares(&["UNICODEUTF8"]),
        Charset::ShiftJis => declares(&["SHIFTJIS", "SJIS"]),
    };
    if !agrees {
        p.push((
            "hl7.charset",
            format!(
                "the bytes are {:?} but MSH-18 declares {:?}",
                m.charset,
                msh.field(18)
            ),
        ));
    }
    if !valid_dtm(msh.field(7)) {
        p.push((
            "hl7.msh",
            format!(
                "MSH-7 (message date/time) {:?} is not an HL7 date/time",
                msh.field(7)
            ),
        ));
    }
    let ty = m.component(msh.field(9), 0, 1);
    let trigger = m.component(msh.field(9), 0, 2);
    let ok_ty = ty.len() == 3 && ty.chars().all(|c| c.is_ascii_uppercase());
    let ok_trigger = trigger.len() == 3
        && trigger
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit());
    if !ok_ty || !ok_trigger {
        p.push((
            "hl7.msh",
            format!(
                "MSH-9 (message type) {:?} is not TYPE^TRIGGER",
                msh.field(9)
            ),
        ));
    }
    let version = m.component(msh.field(12), 0, 1);
    if !version.starts_with("2.") {
        p.push((
            "hl7.msh",
            format!("MSH-12 (version) {version:?} is not HL7 v2"),
        ));
    }
    let seq = msh.field(13);
    if !seq.is_empty() && !is_decimal(seq) {
        p.push((
            "hl7.msh",
            format!("MSH-13 (sequence number, type NM) holds {seq:?}, not a number"),
        ));
    }
    let mut pid3: Option<String> = None;
    let mut saw_pid = false;
    for (i, s) in m.segments.iter().enumerate() {
        let at = format!("segment {} ({})", i + 1, s.id);
        match s.id.as_str() {
            "MSH" if i > 0 => p.push((
                "hl7.structure",
                format!("{at}: a second MSH; an SS-MIX2 file holds exactly one message"),
            )),
            "FHS" | "BHS" | "FTS" | "BTS" => p.push((
                "hl7.structure",
                format!("{at}: batch segments; an SS-MIX2 file holds exactly one message"),
            )),
            "PID" => {
                saw_pid = true;
                let id = m.component(s.field(3), 0, 1);
                if id.trim().is_empty() {
                    p.push(("hl7.pid", format!("{at}: PID-3 (patient id) is empty")));
                }
                match &pid3 {
                    Some(first) if *first != id => p.push((
                        "hl7.pid",
                        format!("{at}: PID-3 {id:?} differs from the first PID's {first:?}: two patients in one message"),
                    )),
                    _ => pid3 = Some(id),
                }
                let birth = s.field(7);
                if !birth.is_empty() && dtm_date(birth).is_none() {
                    p.push((
                        "hl7.pid",
                        format!("{at}: PID-7 (birth date) {birth:?} is not a date"),
                    ));
                }
                let sex = s.field(8);
                if !sex.is_empty() && !matches!(sex, "M" | "F" | "O" | "U" | "A" | "N") {
                    p.push((
                        "hl7.pid",
                        format!("{at}: PID-8 (sex) {sex:?} is not in HL7 table 0001"),
                    ));
                }
            }
            "OBX" => {
                let vt = m.component(s.field(2), 0, 1);
                if vt.is_empty() {
                    if !s.field(5).is_empty() {
                        p.push((
                            "hl7.obx",
                            format!("{at}: OBX-5 holds a value but OBX-2 gives no value type"),
                        ));
                    }
                } else if !VALUE_TYPES.contains(&vt.as_str()) {
                    p.push((
                        "hl7.obx",
                        format!("{at}: OBX-2 value type {vt:?} is not in HL7 table 0125"),
                    ));
                } else if vt == "NM" {
                    for v in s.field(5).split(m.delims.repetition) {
                        let v = m.unescape(v);
                        if !v.is_empty() && !is_decimal(&v) {
                            p.push((
                                "hl7.obx",
                                format!("{at}: OBX-5 {v:?} is not a number, but OBX-2 says NM"),
                            ));
                        }
                    }
                }
                let when = s.field(14);
                if !when.is_empty() && !valid_dtm(when) {
                    p.push((
                        "hl7.obx",
                        format!("{at}: OBX-14 (observation date/time) {when:?} is not a date/time"),
                    ));
                }
            }
            "TQ1" => {
                let q = m.component(s.field(2), 0, 1);
                if !q.is_empty() && !is_decimal(&q) {
                    p.push((
                        "hl7.tq1",
                        format!("{at}: TQ1-2 (quantity) {q:?} is not a number"),
                    ));
                }
                let start = s.field(7);
                if !start.is_empty() && !valid_dtm(start) {
                    p.push((
                        "hl7.tq1",
                        format!("{at}: TQ1-7 (start date/time) {start:?} is not a date/time"),
                    ));
                }
            }
            _ => {}
        }
        if p.len() >= MAX_PROBLEMS {
            break;
        }
    }
    if !saw_pid {
        p.push((
            "hl7.pid",
            "no PID segment: an SS-MIX2 message is always about one patient".to_owned(),
        ));
    }
    p
}

/// Parses one SS-MIX2 file, or an HL7 v2 batch file of SS-MIX2 messages (it starts with FHS
/// or BHS; see [`parse_batch`]). `path`, when given, is checked against the SS-MIX2 naming
/// rules and against the message (mismatches become warnings: the message's own PID wins).
pub fn parse(bytes: &[u8], path: Option<&str>, limits: &Limits) -> Result<Extract, Refusal> {
    let start = bytes.strip_prefix(b"\x0b").unwrap_or(bytes);
    if start.starts_with(b"FHS") || start.starts_with(b"BHS") {
        return parse_batch(start, limits);
    }
    parse_inner(bytes, path, limits).map_err(|mut r| {
        // Say what else is wrong with a refused file's place in the storage tree too.
        if let Some(info) = path.and_then(crate::ssmix2_path::parse) {
            let w = info.self_check();
            if !w.is_empty() {
                r.reason = format!("{}; storage path: {}", r.reason, w.join("; "));
            }
        }
        r
    })
}

/// Parses an HL7 v2.5 batch file (HL7 v2.5 §2.10.3: `[FHS [BHS]] MSH… [BTS [FTS]]`), the
/// standard way to carry many messages in one file, so that an institution can send a day of
/// its SS-MIX2 storage as one envelope instead of one envelope (and one key agreement and
/// signature check) per message.
///
/// Every message is checked exactly as a single SS-MIX2 file is, with its own MSH-18
/// character set, and one refused message refuses the whole file, naming the message and its
/// line: a file is accepted only whole (R-IN-2). The batch segments must be where the standard
/// puts them, BTS-1 and FTS-1 (when present) must count what is there, and nothing may
/// follow the trailer.
///
/// Splitting the undecoded bytes at segment terminators is safe for every character set
/// SS-MIX2 allows: carriage return (0x0D) never occurs inside an ISO-2022-JP, Shift_JIS or
/// UTF-8 multi-byte character.
pub fn parse_batch(bytes: &[u8], limits: &Limits) -> Result<Extract, Refusal> {
    let body = trim_end(bytes);
    if body.contains(&0x0b) || body.contains(&0x1c) {
        return Err(Refusal::new(
            "hl7.framing",
            "MLLP framing bytes (0x0B/0x1C) inside a batch file",
        ));
    }
    let lines: Vec<&[u8]> = body
        .split(|&b| b == b'\r')
        .map(|l| l.strip_prefix(b"\n").unwrap_or(l))
        .collect();
    // Each message keeps the single-file limit; the batch as a whole gets ten times it.
    if lines.len() > limits.max_segments.saturating_mul(10) {
        return Err(Refusal::new(
            "hl7.limits",
            format!(
                "{} segments in the batch, over the limit of {}",
                lines.len(),
                limits.max_segments.saturating_mul(10)
            ),
        ));
    }
    let id = |l: &[u8]| -> [u8; 3] {
        let mut a = [0u8; 3];
        for (d, s) in a.iter_mut().zip(l) {
            *d = *s;
        }
        a
    };
    let structure =
        |line: usize, what: String| Refusal::new("hl7.batch", format!("batch line {line}: {what}"));
    let mut i = 0;
    let header = |want: &[u8; 3], i: &mut usize| {
        if lines.get(*i).is_some_and(|l| id(l) == *want) {
            *i += 1;
            true
        } else {
            false
        }
    };
    let fhs = header(b"FHS", &mut i);
    let bhs = header(b"BHS", &mut i);
    if !fhs && !bhs {
        return Err(structure(1, "a batch file starts with FHS or BHS".into()));
    }
    // Messages: each runs from its MSH to the next MSH or trailer segment.
    let mut messages: Vec<(usize, usize)> = Vec::new();
    while i < lines.len() {
        match &id(lines[i]) {
            b"MSH" => messages.push((i, i + 1)),
            b"BTS" | b"FTS" => break,
            b"FHS" | b"BHS" => {
                return Err(structure(
                    i + 1,
                    "a second file or batch header; one batch per file".into(),
                ))
            }
            _ => match messages.last_mut() {
                Some(m) => m.1 = i + 1,
                None => {
                    return Err(structure(
                        i + 1,
                        format!(
                            "segment {:?} before the first MSH",
                            String::from_utf8_lossy(&id(lines[i]))
                        ),
                    ))
                }
            },
        }
        i += 1;
    }
    let count = |l: &[u8], seg: &str, line: usize| -> Result<(), Refusal> {
        // BTS-1 / FTS-1: the number of messages (batches) the trailer closes, when given.
        let sep = l.get(3).copied().unwrap_or(b'|');
        let field = l.split(|&b| b == sep).nth(1).unwrap_or(b"");
        let want = if seg == "BTS" { messages.len() } else { 1 };
        if field.is_empty() || field == format!("{want}").as_bytes() {
            Ok(())
        } else {
            Err(structure(
                line,
                format!(
                    "{seg}-1 counts {:?} but the batch holds {want}",
                    String::from_utf8_lossy(field)
                ),
            ))
        }
    };
    if bhs {
        if lines.get(i).is_some_and(|l| id(l) == *b"BTS") {
            count(lines[i], "BTS", i + 1)?;
            i += 1;
        } else {
            return Err(structure(i + 1, "BHS without its BTS trailer".into()));
        }
    }
    if fhs {
        if lines.get(i).is_some_and(|l| id(l) == *b"FTS") {
            count(lines[i], "FTS", i + 1)?;
            i += 1;
        } else {
            return Err(structure(i + 1, "FHS without its FTS trailer".into()));
        }
    }
    if i < lines.len() {
        return Err(structure(i + 1, "segments after the batch trailer".into()));
    }
    if messages.is_empty() {
        return Err(structure(i + 1, "a batch without messages".into()));
    }
    let mut x = Extract::new(Format::Ssmix2, format!("HL7 batch of {}", messages.len()));
    let mut index: std::collections::HashMap<Identity, usize> = std::collections::HashMap::new();
    for (n, &(from, to)) in messages.iter().enumerate() {
        let mut one = Vec::new();
        for l in &lines[from..to] {
            one.extend_from_slice(l);
            one.push(b'\r');
        }
        let m = parse_inner(&one, None, limits).map_err(|r| {
            Refusal::new(
                r.code,
                format!("batch message {} (line {}): {}", n + 1, from + 1, r.reason),
            )
        })?;
        let mut map = Vec::with_capacity(m.identities.len());
        for id in m.identities {
            let next = x.identities.len();
            let at = *index.entry(id.clone()).or_insert(next);
            if at == next {
                x.identities.push(id);
            }
            map.push(at);
        }
        x.records.extend(m.records.into_iter().map(|mut r| {
            r.subject = map[r.subject];
            r
        }));
        x.warnings.extend(
            m.warnings
                .into_iter()
                .map(|w| format!("batch message {}: {w}", n + 1)),
        );
        if x.records.len() > limits.max_records {
            return Err(Refusal::new(
                "records",
                format!("over {} records in the batch", limits.max_records),
            ));
        }
    }
    Ok(x)
}

fn trim_end(b: &[u8]) -> &[u8] {
    let n = b
        .iter()
        .rev()
        .take_while(|c| matches!(c, b'\r' | b'\n'))
        .count();
    &b[..b.len() - n]
}

fn parse_inner(bytes: &[u8], path: Option<&str>, limits: &Limits) -> Result<Extract, Refusal> {
    let (text, charset) = decode(bytes)?;
    let m = split(&text, charset, limits)?;
    let problems = check(&m);
    if let Some((code, _)) = problems.first() {
        let reason = problems
            .iter()
            .map(|(_, r)| r.as_str())
            .collect::<Vec<_>>()
            .join("; ");
        return Err(Refusal::new(code, reason));
    }
    let mut x = Extract::new(Format::Ssmix2, m.message_type());
    let version = m.component(m.segments[0].field(12), 0, 1);
    if !version.starts_with("2.5") {
        x.warnings
            .push(format!("MSH-12 version {version:?}; SS-MIX2 uses 2.5"));
    }
    let subject = x.identity(identity(&m));
    if let Some(path) = path {
        if let Some(info) = crate::ssmix2_path::parse(path) {
            x.warnings
                .extend(info.check_against(&m, &x.identities[subject]));
        }
    }
    extract_records(&m, subject, &mut x);
    Ok(x)
}

fn identity(m: &Message) -> Identity {
    let mut id = Identity::default();
    let Some(pid) = m.segments.iter().find(|s| s.id == "PID") else {
        return id;
    };
    id.local_id = nonempty(&m.component(pid.field(3), 0, 1));
    id.birth = dtm_date(pid.field(7));
    id.sex = pid.field(8).chars().next();
    for (rep, _) in pid.field(5).split(m.delims.repetition).enumerate() {
        let family = m.component(pid.field(5), rep, 1);
        let given = m.component(pid.field(5), rep, 2);
        let name = nonempty(&format!("{family} {given}"));
        match m.component(pid.field(5), rep, 8).as_str() {
            "P" => id.name_kana = id.name_kana.take().or(name),
            _ => id.name_kanji = id.name_kanji.take().or(name),
        }
    }
    let postal: String = m
        .component(pid.field(11), 0, 5)
        .chars()
        .filter(char::is_ascii_digit)
        .collect();
    id.postal = nonempty(&postal);
    if let Some(in1) = m.segments.iter().find(|s| s.id == "IN1") {
        id.insurer = nonempty(&m.component(in1.field(3), 0, 1));
        // JAHIS 患者属性: IN1-10 carries the card's 記号, IN1-11 its 番号.
        id.symbol = nonempty(&m.component(in1.field(10), 0, 1));
        id.number = nonempty(&m.component(in1.field(11), 0, 1));
    }
    id
}

fn coded(m: &Message, field: &str, r: &mut Record) {
    r.code = nonempty(&m.component(field, 0, 1));
    r.display = nonempty(&m.component(field, 0, 2));
    r.system = nonempty(&m.component(field, 0, 3));
}

fn extract_records(m: &Message, subject: usize, x: &mut Extract) {
    let msg_date = dtm_date(m.segments[0].field(7));
    let mut order_date = msg_date.clone();
    let mut obr_date: Option<String> = None;
    for s in &m.segments {
        match s.id.as_str() {
            "PV1" => {
                let mut r = Record::new(Kind::Encounter, subject);
                r.code = nonempty(&m.component(s.field(2), 0, 1));
                r.system = Some("HL70004".to_owned());
                r.display = nonempty(&m.component(s.field(10), 0, 1));
                r.date = dtm_date(s.field(44)).or_else(|| msg_date.clone());
                x.records.push(r);
            }
            "ORC" => order_date = dtm_date(s.field(9)).or_else(|| msg_date.clone()),
            "OBR" => obr_date = dtm_date(s.field(7)),
            "PRB" => {
                let mut r = Record::new(Kind::Diagnosis, subject);
                coded(m, s.field(3), &mut r);
                // PRB-10 often repeats the diagnosis as ICD-10 when PRB-3 uses a local master.
                if m.component(s.field(10), 0, 3) == "I10" && r.system.as_deref() != Some("I10") {
                    r.code = nonempty(&m.component(s.field(10), 0, 1));
                    r.system = Some("I10".to_owned());
                }
                r.date = dtm_date(s.field(16))
                    .or_else(|| dtm_date(s.field(7)))
                    .or_else(|| dtm_date(s.field(2)));
                x.records.push(r);
            }
            "RXE" => {
                let mut r = Record::new(Kind::Medication, subject);
                coded(m, s.field(2), &mut r);
                r.value = nonempty(&m.component(s.field(3), 0, 1));
                r.unit = nonempty(&m.component(s.field(5), 0, 1));
                r.date = order_date.clone();
                x.records.push(r);
            }
            "RXA" => {
                let mut r = Record::new(Kind::Medication, subject);
                coded(m, s.field(5), &mut r);
                r.value = nonempty(&m.component(s.field(6), 0, 1));
                r.unit = nonempty(&m.component(s.field(7), 0, 1));
                r.date = dtm_date(s.field(3)).or_else(|| order_date.clone());
                x.records.push(r);
            }
            "OBX" => {
                let mut r = Record::new(Kind::Observation, subject);
                coded(m, s.field(3), &mut r);
                r.value = nonempty(&m.component(s.field(5), 0, 1));
                r.unit = nonempty(&m.component(s.field(6), 0, 1));
                r.date = dtm_date(s.field(14))
                    .or_else(|| obr_date.clone())
                    .or_else(|| msg_date.clone());
                x.records.push(r);
            }
            "AL1" | "IAM" => {
                let mut r = Record::new(Kind::Allergy, subject);
                coded(m, s.field(3), &mut r);
                r.date = dtm_date(s.field(if s.id == "AL1" { 6 } else { 11 }));
                x.records.push(r);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(body: &str) -> Vec<u8> {
        let mut s = String::from(
            "MSH|^~\\&|A|B|C|D|20240101120000||ADT^A08^ADT_A01|1|P|2.5||||||~ISO IR87||ISO 2022-1994\r",
        );
        s.push_str(body);
        encoding_rs::ISO_2022_JP.encode(&s).0.into_owned()
    }

    #[test]
    fn kanji_whose_bytes_hold_delimiters_survive() {
        // 日 is 0x46 0x7C and 入 is 0x46 0x7E in JIS X 0208.
        let b = msg("PID|1||123^^^^PI||日本^入江^^^^^L^I||19700101|F\r");
        let x = parse(&b, None, &Limits::default()).expect("parses");
        assert_eq!(x.identities[0].name_kanji.as_deref(), Some("日本 入江"));
        assert_eq!(x.identities[0].local_id.as_deref(), Some("123"));
    }

    #[test]
    fn numeric_observation_with_text_is_refused() {
        let b = msg("PID|1||1\rOBX|1|NM|X^Y^JC10||abc\r");
        let e = parse(&b, None, &Limits::default()).expect_err("refused");
        assert_eq!(e.code, "hl7.obx");
        assert!(e.reason.contains("\"abc\""), "{e}");
    }

    fn batch(parts: &[Vec<u8>], bts: &str) -> Vec<u8> {
        let mut b = b"FHS|^~\\&|A\rBHS|^~\\&|A\r".to_vec();
        for p in parts {
            b.extend_from_slice(p);
        }
        b.extend_from_slice(format!("BTS|{bts}\rFTS|1\r").as_bytes());
        b
    }

    #[test]
    fn a_batch_file_is_each_message_checked_and_one_extract() {
        let a = msg("PID|1||123^^^^PI||日本^入江^^^^^L^I||19700101|F\rOBX|1|NM|X^Y^JC10||5.1\r");
        let b = msg("PID|1||456^^^^PI||山田^太郎^^^^^L^I||19800101|M\rOBX|1|NM|X^Y^JC10||7\r");
        let x = parse(
            &batch(&[a.clone(), b.clone(), a.clone()], "3"),
            None,
            &Limits::default(),
        )
        .expect("parses");
        assert_eq!(x.doc_type, "HL7 batch of 3");
        // The same patient twice is one identity; records keep their own subject.
        assert_eq!(x.identities.len(), 2);
        let subjects: Vec<usize> = x.records.iter().map(|r| r.subject).collect();
        let single = parse(&a, None, &Limits::default()).expect("single");
        assert_eq!(
            x.records.len(),
            2 * single.records.len()
                + parse(&b, None, &Limits::default())
                    .expect("b")
                    .records
                    .len()
        );
        assert!(subjects.contains(&0) && subjects.contains(&1));
        // A count that does not match, a missing trailer, a stray segment, a bad message.
        let e = parse(
            &batch(&[a.clone(), b.clone()], "3"),
            None,
            &Limits::default(),
        )
        .expect_err("count");
        assert_eq!(e.code, "hl7.batch");
        assert!(e.reason.contains("BTS-1"), "{e}");
        let mut no_fts = batch(std::slice::from_ref(&a), "1");
        no_fts.truncate(no_fts.len() - "FTS|1\r".len());
        let e = parse(&no_fts, None, &Limits::default()).expect_err("trailer");
        assert!(e.reason.contains("FTS"), "{e}");
        let mut stray = b"BHS|^~\\&|A\rPID|1||1\r".to_vec();
        stray.extend_from_slice(&a);
        stray.extend_from_slice(b"BTS|1\r");
        let e = parse(&stray, None, &Limits::default()).expect_err("stray");
        assert!(e.reason.contains("before the first MSH"), "{e}");
        let bad = msg("PID|1||1\rOBX|1|NM|X^Y^JC10||abc\r");
        let e = parse(&batch(&[a.clone(), bad], "2"), None, &Limits::default()).expect_err("bad");
        assert_eq!(e.code, "hl7.obx");
        assert!(e.reason.starts_with("batch message 2 (line 6)"), "{e}");
        let mut after = batch(&[a], "1");
        after.extend_from_slice(b"PID|1||1\r");
        let e = parse(&after, None, &Limits::default()).expect_err("after");
        assert!(e.reason.contains("after the batch trailer"), "{e}");
    }

    #[test]
    fn two_messages_in_one_file_are_refused() {
        let b = msg("PID|1||1\rMSH|^~\\&|A\r");
        assert_eq!(
            parse(&b, None, &Limits::default())
                .expect_err("refused")
                .code,
            "hl7.structure"
        );
    }

    #[test]
    fn charset_must_match_the_declaration() {
        let s = "MSH|^~\\&|A|B|C|D|20240101||ADT^A08|1|P|2.5\rPID|1||1||日本\r";
        let b = encoding_rs::ISO_2022_JP.encode(s).0.into_owned();
        assert_eq!(
            parse(&b, None, &Limits::default())
                .expect_err("refused")
                .code,
            "hl7.charset"
        );
        let utf8 =
            "MSH|^~\\&|A|B|C|D|20240101||ADT^A08|1|P|2.5||||||UNICODE UTF-8\rPID|1||1||日本\r";
        assert!(parse(utf8.as_bytes(), None, &Limits::default()).is_ok());
    }

    #[test]
    fn escapes_are_undone() {
        let b = msg("PID|1||A\\S\\B^^^^PI\r");
        let x = parse(&b, None, &Limits::default()).expect("parses");
        assert_eq!(x.identities[0].local_id.as_deref(), Some("A^B"));
    }

    #[test]
    fn dtm() {
        for ok in [
            "2011",
            "201112",
            "20111220224447.3399",
            "20111220224447.339",
            "20240101+0900",
        ] {
            assert!(valid_dtm(ok), "{ok}");
        }
        for bad in [
            "",
            "2011122",
            "20111320",
            "20111220250000",
            "20111220224447.",
            "x",
        ] {
            assert!(!valid_dtm(bad), "{bad}");
        }
    }
}
