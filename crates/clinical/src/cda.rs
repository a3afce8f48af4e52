//! 特定健診 submission packages: a ZIP of `index.xml`, `summary.xml` and `DATA/*.xml` HL7 CDA
//! R2 documents whose checkup items are coded under OID 1.2.392.200119.6.1005 (R-IN-1).
//!
//! The ZIP is untrusted: entry names may not leave the package, encrypted entries are
//! refused, and every entry's size is bounded both as declared and as actually inflated
//! (a zip bomb stops at the limit, it is never inflated to the end). XML is parsed with DTDs
//! refused (no entity expansion, no external entities) and a node limit.

use std::io::{Cursor, Read};

use roxmltree::{Document, Node, ParsingOptions};

use crate::model::{nonempty, Extract, Identity, Kind, Record};
use crate::{is_decimal, valid_date, Format, Limits, Refusal};

const HL7_NS: &str = "urn:hl7-org:v3";
const CHECKUP_NS: &str = "http://tokuteikenshin.jp/checkup/";
const XSI_NS: &str = "http://www.w3.org/2001/XMLSchema-instance";
/// 特定健診 checkup item codes.
pub const ITEM_OID: &str = "1.2.392.200119.6.1005";
/// Document type codes (特定健診情報ファイル種別).
const DOC_TYPE_OID: &str = "1.2.392.200119.6.1001";
const INSURER_OID: &str = "1.2.392.200119.6.101";
const SYMBOL_OID: &str = "1.2.392.200119.6.204";
const NUMBER_OID: &str = "1.2.392.200119.6.205";
const BRANCH_OID: &str = "1.2.392.200119.6.211";

/// Most XML nodes in one document.
const MAX_NODES: u32 = 200_000;

fn refuse(code: &'static str, reason: impl Into<String>) -> Refusal {
    Refusal::new(code, reason)
}

/// Parses one submission ZIP.
pub fn parse(bytes: &[u8], limits: &Limits) -> Result<Extract, Refusal> {
    let mut zip = zip::ZipArchive::new(Cursor::new(bytes))
        .map_err(|e| refuse("zip.format", format!("not a readable ZIP archive: {e}")))?;
    if zip.len() > limits.max_zip_entries {
        return Err(refuse(
            "zip.limits",
            format!(
                "{} entries, over the limit of {}",
                zip.len(),
                limits.max_zip_entries
            ),
        ));
    }
    let mut index: Option<String> = None;
    let mut summary: Option<String> = None;
    let mut data: Vec<(String, String)> = Vec::new();
    for i in 0..zip.len() {
        let mut entry = zip
            .by_index(i)
            .map_err(|e| refuse("zip.format", format!("entry {i}: {e}")))?;
        let name = entry.name().to_owned();
        if entry.encrypted() {
            return Err(refuse(
                "zip.entry",
                format!("{name}: encrypted entries cannot be checked"),
            ));
        }
        if name.starts_with('/')
            || name.contains('\\')
            || name.split('/').any(|p| p == "..")
            || name.contains(':')
        {
            return Err(refuse(
                "zip.entry",
                format!("entry name {name:?} would leave the package"),
            ));
        }
        if entry.is_dir() {
            continue;
        }
        let declared = entry.size();
        if declared > limits.max_zip_entry_bytes {
            return Err(refuse(
                "zip.limits",
                format!(
                    "{name}: {declared} bytes uncompressed, over the limit of {}",
                    limits.max_zip_entry_bytes
                ),
            ));
        }
        let packed = entry.compressed_size().max(1);
        if declared / packed > limits.max_zip_ratio {
            return Err(refuse(
                "zip.bomb",
                format!(
                    "{name}: compression ratio {} over the limit of {}",
                    declared / packed,
                    limits.max_zip_ratio
                ),
            ));
        }
        let upper = name.to_ascii_uppercase();
        let wanted = name == "index.xml"
            || name == "summary.xml"
            || (upper.starts_with("DATA/") && upper.ends_with(".XML"));
        if !wanted {
            if upper.starts_with("XSD/") || upper.starts_with("CLAIMS/") {
                continue;
            }
            return Err(refuse("cda.package", format!("unexpected entry {name:?}: a submission holds index.xml, summary.xml, DATA/, CLAIMS/ and XSD/ only")));
        }
        let mut buf = Vec::with_capacity(declared.min(1 << 20) as usize);
        // Bounded by what was declared: an entry that inflates past its header is a lie.
        (&mut entry)
            .take(declared + 1)
            .read_to_end(&mut buf)
            .map_err(|e| refuse("zip.format", format!("{name}: {e}")))?;
        if buf.len() as u64 != declared {
            return Err(refuse(
                "zip.format",
                format!(
                    "{name}: inflates to {} bytes, header says {declared}",
                    buf.len()
                ),
            ));
        }
        let text = xml_text(&buf).map_err(|r| refuse("cda.encoding", format!("{name}: {r}")))?;
        match name.as_str() {
            "index.xml" => index = Some(text),
            "summary.xml" => summary = Some(text),
            _ => data.push((name, text)),
        }
    }
    let index =
        index.ok_or_else(|| refuse("cda.package", "no index.xml at the top of the package"))?;
    let summary =
        summary.ok_or_else(|| refuse("cda.package", "no summary.xml at the top of the package"))?;
    if data.is_empty() {
        return Err(refuse("cda.package", "no DATA/*.xml documents"));
    }
    let declared_count = count_in(&index, "index", "totalRecordCount", limits)?;
    if declared_count != data.len() as u64 {
        return Err(refuse(
            "cda.package",
            format!(
                "index.xml totalRecordCount is {declared_count} but DATA/ holds {} documents",
                data.len()
            ),
        ));
    }
    let registered = count_in(&summary, "summary", "totalRegistration", limits)?;
    if registered != data.len() as u64 {
        return Err(refuse(
            "cda.package",
            format!(
                "summary.xml totalRegistration is {registered} but DATA/ holds {} documents",
                data.len()
            ),
        ));
    }
    let mut x = Extract::new(Format::CdaTokutei, "tokutei-package");
    data.sort();
    for (name, text) in &data {
        document(name, text, limits, &mut x)?;
    }
    Ok(x)
}

/// The document's text: UTF-8 unless the XML declaration says Shift_JIS.
fn xml_text(buf: &[u8]) -> Result<String, String> {
    let buf = buf.strip_prefix(b"\xef\xbb\xbf").unwrap_or(buf);
    let head = &buf[..buf.len().min(100)];
    let head = String::from_utf8_lossy(head).to_ascii_lowercase();
    if head.contains("encoding=\"shift_jis\"") || head.contains("encoding='shift_jis'") {
        return encoding_rs::SHIFT_JIS
            .decode_without_bom_handling_and_without_replacement(buf)
            .map(|s| s.into_owned())
            .ok_or_else(|| "declared Shift_JIS but the bytes are not".to_owned());
    }
    String::from_utf8(buf.to_vec()).map_err(|e| format!("not UTF-8: {e}"))
}

fn xml<'a>(text: &'a str, limits: &Limits, name: &str) -> Result<Document<'a>, Refusal> {
    let opts = ParsingOptions {
        allow_dtd: false,
        nodes_limit: MAX_NODES,
    };
    let doc = Document::parse_with_options(text, opts)
        .map_err(|e| refuse("cda.xml", format!("{name}: not well-formed XML: {e}")))?;
    let mut depth = vec![0usize; doc.descendants().count() + 1];
    for n in doc.descendants() {
        let d = n
            .parent()
            .map(|p| depth.get(p.id().get_usize()).copied().unwrap_or(0) + 1)
            .unwrap_or(0);
        if d > limits.max_depth {
            return Err(refuse(
                "cda.limits",
                format!("{name}: XML nested deeper than {}", limits.max_depth),
            ));
        }
        if let Some(slot) = depth.get_mut(n.id().get_usize()) {
            *slot = d;
        }
    }
    Ok(doc)
}

fn count_in(text: &str, root: &str, element: &str, limits: &Limits) -> Result<u64, Refusal> {
    let file = format!("{root}.xml");
    let doc = xml(text, limits, &file)?;
    let r = doc.root_element();
    if r.tag_name().name() != root || r.tag_name().namespace() != Some(CHECKUP_NS) {
        return Err(refuse(
            "cda.package",
            format!("{file}: root element is not <{root}> in {CHECKUP_NS}"),
        ));
    }
    let v = child(r, element)
        .and_then(|n| n.attribute("value"))
        .ok_or_else(|| refuse("cda.package", format!("{file}: no <{element} value=…>")))?;
    v.parse::<u64>().map_err(|_| {
        refuse(
            "cda.package",
            format!("{file}: {element} {v:?} is not a count"),
        )
    })
}

fn child<'a, 'i>(n: Node<'a, 'i>, name: &str) -> Option<Node<'a, 'i>> {
    n.children()
        .find(|c| c.is_element() && c.tag_name().name() == name)
}

fn path<'a, 'i>(n: Node<'a, 'i>, names: &[&str]) -> Option<Node<'a, 'i>> {
    names.iter().try_fold(n, |n, name| child(n, name))
}

fn document(name: &str, text: &str, limits: &Limits, x: &mut Extract) -> Result<(), Refusal> {
    let doc = xml(text, limits, name)?;
    let root = doc.root_element();
    if root.tag_name().name() != "ClinicalDocument" || root.tag_name().namespace() != Some(HL7_NS) {
        return Err(refuse(
            "cda.document",
            format!("{name}: root element is not an HL7 v3 ClinicalDocument"),
        ));
    }
    let code = child(root, "code");
    if code.and_then(|c| c.attribute("codeSystem")) != Some(DOC_TYPE_OID) {
        return Err(refuse("cda.document", format!("{name}: ClinicalDocument/code is not under {DOC_TYPE_OID} (特定健診情報ファイル種別)")));
    }
    let date_attr = path(root, &["effectiveTime"])
        .and_then(|e| e.attribute("value"))
        .unwrap_or("");
    let date = valid_date(date_attr.get(..8).unwrap_or(""), false).ok_or_else(|| {
        refuse(
            "cda.document",
            format!("{name}: effectiveTime {date_attr:?} is not a date"),
        )
    })?;
    let role = path(root, &["recordTarget", "patientRole"]).ok_or_else(|| {
        refuse(
            "cda.document",
            format!("{name}: no recordTarget/patientRole"),
        )
    })?;
    let mut id = Identity::default();
    for i in role
        .children()
        .filter(|c| c.is_element() && c.tag_name().name() == "id")
    {
        let ext = i.attribute("extension").and_then(nonempty);
        match i.attribute("root") {
            Some(INSURER_OID) => id.insurer = ext,
            Some(SYMBOL_OID) => id.symbol = ext,
            Some(NUMBER_OID) => id.number = ext,
            Some(BRANCH_OID) => id.branch = ext,
            _ => {}
        }
    }
    if let Some(a) = child(role, "addr") {
        let postal: String = child(a, "postalCode")
            .and_then(|p| p.text())
            .unwrap_or("")
            .chars()
            .filter(char::is_ascii_digit)
            .collect();
        id.postal = nonempty(&postal);
    }
    if let Some(p) = child(role, "patient") {
        if let Some(n) = child(p, "name") {
            let part = |k: &str| {
                child(n, k)
                    .and_then(|e| e.text())
                    .unwrap_or("")
                    .trim()
                    .to_owned()
            };
            let full = nonempty(&format!("{} {}", part("family"), part("given")));
            match n.attribute("use") {
                Some("SYL") => id.name_kana = full,
                _ => id.name_kanji = full,
            }
        }
        id.sex = match child(p, "administrativeGenderCode").and_then(|g| g.attribute("code")) {
            Some("1") => Some('M'),
            Some("2") => Some('F'),
            None => None,
            Some(other) => {
                return Err(refuse(
                    "cda.document",
                    format!("{name}: administrativeGenderCode {other:?} is not 1 or 2"),
                ))
            }
        };
        let birth = child(p, "birthTime")
            .and_then(|b| b.attribute("value"))
            .unwrap_or("");
        if !birth.is_empty() {
            id.birth = Some(
                valid_date(birth.get(..8).unwrap_or(""), false).ok_or_else(|| {
                    refuse(
                        "cda.document",
                        format!("{name}: birthTime {birth:?} is not a date"),
                    )
                })?,
            );
        }
    }
    if id.insurer.is_none() || id.number.is_none() {
        return Err(refuse("cda.document", format!("{name}: patientRole lacks the insurer number ({INSURER_OID}) or the card number ({NUMBER_OID})")));
    }
    let who = x.identity(id);
    for obs in root
        .descendants()
        .filter(|n| n.is_element() && n.tag_name().name() == "observation")
    {
        let Some(c) = child(obs, "code") else {
            continue;
        };
        if c.attribute("codeSystem") != Some(ITEM_OID) {
            continue;
        }
        let mut r = Record::new(Kind::CheckupItem, who);
        r.code = c.attribute("code").and_then(nonempty);
        r.system = Some(ITEM_OID.to_owned());
        r.display = c.attribute("displayName").and_then(nonempty);
        r.date = Some(date.clone());
        if r.code.is_none() {
            return Err(refuse(
                "cda.item",
                format!("{name}: a checkup item without a code"),
            ));
        }
        if let Some(v) = child(obs, "value") {
            let ty = v.attribute((XSI_NS, "type")).unwrap_or("");
            match ty {
                "PQ" => {
                    let val = v.attribute("value").unwrap_or("");
                    if !is_decimal(val) {
                        return Err(refuse(
                            "cda.item",
                            format!(
                                "{name}: item {} has PQ value {val:?}, not a number",
                                r.code.as_deref().unwrap_or("")
                            ),
                        ));
                    }
                    r.value = Some(val.to_owned());
                    r.unit = v.attribute("unit").and_then(nonempty);
                }
                "CD" | "CO" | "CE" => r.value = v.attribute("code").and_then(nonempty),
                "ST" => r.value = v.text().and_then(nonempty),
                other => {
                    return Err(refuse(
                        "cda.item",
                        format!(
                        "{name}: item {} has value type {other:?} (PQ, CD, CO, CE or ST expected)",
                        r.code.as_deref().unwrap_or("")
                    ),
                    ))
                }
            }
        }
        x.records.push(r);
    }
    Ok(())
}
