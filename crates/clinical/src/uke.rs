//! レセプト電算処理 (UKE) claims files, 医科: comma-separated records in Shift_JIS, CRLF,
//! an optional 0x1A end-of-file byte (R-IN-1).
//!
//! The record layout is checked where the vault reads it: IR first and GO last, every claim
//! line inside a claim that an RE opened, dates that are dates, sex 1 or 2, GO's claim count
//! equal to the number of RE records. Only record types of the 医科 layout are accepted.

use crate::model::{nonempty, Extract, Identity, Kind, Record};
use crate::{valid_date, Format, Limits, Refusal};

/// Record types of the 医科 UKE layout.
const RECORD_TYPES: &[&str] = &[
    "IR", "RE", "HO", "KO", "KH", "GR", "SY", "SI", "IY", "TO", "CO", "SJ", "TI", "NI", "SN", "JD",
    "MF", "GO",
];

fn refuse(code: &'static str, reason: impl Into<String>) -> Refusal {
    Refusal::new(code, reason)
}

/// Parses one UKE file.
pub fn parse(bytes: &[u8], limits: &Limits) -> Result<Extract, Refusal> {
    let bytes = bytes.strip_suffix(&[0x1a]).unwrap_or(bytes);
    let text = encoding_rs::SHIFT_JIS
        .decode_without_bom_handling_and_without_replacement(bytes)
        .ok_or_else(|| refuse("uke.encoding", "bytes are not valid Shift_JIS"))?;
    let mut x = Extract::new(Format::Uke, "uke-medical");
    let mut current: Option<usize> = None;
    let mut month = String::new();
    let mut claims = 0u64;
    let mut ended = false;
    let lines: Vec<&str> = text.split('\n').collect();
    let last = lines.len();
    for (n, raw) in lines.into_iter().enumerate() {
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        let at = n + 1;
        if line.is_empty() {
            if at == last {
                continue;
            }
            return Err(refuse("uke.record", format!("line {at} is empty")));
        }
        if line.len() > limits.max_line_bytes {
            return Err(refuse(
                "uke.limits",
                format!("line {at} is over {} bytes", limits.max_line_bytes),
            ));
        }
        if ended {
            return Err(refuse(
                "uke.structure",
                format!("line {at}: records after GO"),
            ));
        }
        let f: Vec<&str> = line.split(',').collect();
        if f.len() > limits.max_fields {
            return Err(refuse(
                "uke.limits",
                format!("line {at} has over {} fields", limits.max_fields),
            ));
        }
        let ty = f[0];
        if !RECORD_TYPES.contains(&ty) {
            return Err(refuse(
                "uke.record",
                format!("line {at}: record type {ty:?} is not in the 医科 layout"),
            ));
        }
        let need = |k: usize| need(&f, k, at);
        let get = |k: usize| f.get(k).copied().unwrap_or("");
        if n == 0 && ty != "IR" {
            return Err(refuse(
                "uke.structure",
                "the first record must be IR (医療機関情報)",
            ));
        }
        match ty {
            "IR" => {
                if n != 0 {
                    return Err(refuse("uke.structure", format!("line {at}: a second IR")));
                }
                need(9)?;
                month = get(7).to_owned();
                if valid_date(&format!("{month}01"), false).is_none() {
                    return Err(refuse(
                        "uke.value",
                        format!("line {at}: IR 請求年月 {month:?} is not YYYYMM"),
                    ));
                }
            }
            "RE" => {
                need(14)?;
                claims += 1;
                let sex = match get(5) {
                    "1" => 'M',
                    "2" => 'F',
                    other => {
                        return Err(refuse(
                            "uke.value",
                            format!("line {at}: RE 男女区分 {other:?} is not 1 or 2"),
                        ))
                    }
                };
                let birth = valid_date(get(6), false).ok_or_else(|| {
                    refuse(
                        "uke.value",
                        format!("line {at}: RE 生年月日 {:?} is not YYYYMMDD", get(6)),
                    )
                })?;
                let id = Identity {
                    local_id: nonempty(get(13)),
                    birth: Some(birth),
                    sex: Some(sex),
                    name_kanji: nonempty(&get(4).replace('\u{3000}', " ")),
                    ..Identity::default()
                };
                x.identities.push(id);
                current = Some(x.identities.len() - 1);
            }
            "GO" => {
                need(3)?;
                let count: u64 = get(1).parse().map_err(|_| {
                    refuse(
                        "uke.value",
                        format!("line {at}: GO 総件数 {:?} is not a count", get(1)),
                    )
                })?;
                if count != claims {
                    return Err(refuse(
                        "uke.structure",
                        format!(
                            "line {at}: GO says {count} claims, the file has {claims} RE records"
                        ),
                    ));
                }
                ended = true;
            }
            _ => {
                let who = current.ok_or_else(|| {
                    refuse(
                        "uke.structure",
                        format!("line {at}: {ty} before any RE (claim lines belong to a claim)"),
                    )
                })?;
                line_record(ty, &f, at, who, &month, &mut x)?;
            }
        }
    }
    if !ended {
        return Err(refuse(
            "uke.structure",
            "no GO record at the end: the file is truncated",
        ));
    }
    Ok(x)
}

fn line_record(
    ty: &str,
    f: &[&str],
    at: usize,
    who: usize,
    month: &str,
    x: &mut Extract,
) -> Result<(), Refusal> {
    let get = |k: usize| f.get(k).copied().unwrap_or("");
    let need = |k: usize| need(f, k, at);
    match ty {
        "HO" => {
            need(4)?;
            let id = &mut x.identities[who];
            id.insurer = nonempty(get(1));
            id.symbol = nonempty(get(2));
            id.number = nonempty(get(3));
        }
        "SY" => {
            need(3)?;
            let mut r = Record::new(Kind::Diagnosis, who);
            let onset = get(2);
            r.date = Some(valid_date(onset, false).ok_or_else(|| {
                refuse(
                    "uke.value",
                    format!("line {at}: SY 診療開始日 {onset:?} is not YYYYMMDD"),
                )
            })?);
            // 0000999 (未コード化傷病名) carries the name as text; an ICD-10 code may follow.
            let icd = f.iter().skip(5).rev().find(|v| looks_icd10(v)).copied();
            match icd {
                Some(code) => {
                    r.code = Some(code.to_owned());
                    r.system = Some("I10".to_owned());
                }
                None => {
                    r.code = nonempty(get(1));
                    r.system = Some("receden-byomei".to_owned());
                }
            }
            r.display = nonempty(get(5));
            x.records.push(r);
        }
        "SI" | "IY" | "TO" => {
            need(4)?;
            let mut r = Record::new(
                if ty == "IY" {
                    Kind::Medication
                } else {
                    Kind::ClaimLine
                },
                who,
            );
            r.code = nonempty(get(3));
            r.system = Some(format!("receden-{}", ty.to_ascii_lowercase()));
            r.value = nonempty(get(if ty == "IY" { 4 } else { 5 }));
            r.date = nonempty(&format!("{month}01"));
            x.records.push(r);
        }
        _ => {}
    }
    Ok(())
}

/// Refuses a record of fewer than `k` items (`f[0]` is the record type).
fn need(f: &[&str], k: usize, at: usize) -> Result<(), Refusal> {
    if f.len() < k {
        Err(refuse(
            "uke.record",
            format!(
                "line {at}: {} needs at least {k} items, has {}",
                f[0],
                f.len()
            ),
        ))
    } else {
        Ok(())
    }
}

fn looks_icd10(v: &str) -> bool {
    let b = v.as_bytes();
    b.len() >= 3
        && b.len() <= 7
        && b[0].is_ascii_uppercase()
        && b[1].is_ascii_digit()
        && b[2].is_ascii_digit()
        && (b.len() == 3 || (b[3] == b'.' && b.len() > 4 && b[4..].iter().all(u8::is_ascii_digit)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sjis(s: &str) -> Vec<u8> {
        encoding_rs::SHIFT_JIS.encode(s).0.into_owned()
    }

    #[test]
    fn a_small_file_parses() {
        let b = sjis("IR,1,13,1,1234567,,病院,202401,00,03\r\nRE,1,1112,202401,山田　花子,2,19600101,,,,,,,0001,\r\nHO,06123456,AB,123,1,100,,\r\nSY,0000999,20240110,1,,胃炎,01,K29.7\r\nGO,1,100,99\r\n\x1a");
        let x = parse(&b, &Limits::default()).expect("parses");
        assert_eq!(x.identities[0].local_id.as_deref(), Some("0001"));
        assert_eq!(x.identities[0].insurer.as_deref(), Some("06123456"));
        assert_eq!(x.records[0].code.as_deref(), Some("K29.7"));
    }

    #[test]
    fn wrong_go_count_and_orphan_lines_are_refused() {
        let b = sjis("IR,1,13,1,1234567,,病院,202401,00,03\r\nRE,1,1112,202401,山田,2,19600101,,,,,,,1,\r\nGO,2,100,99\r\n");
        assert_eq!(
            parse(&b, &Limits::default()).expect_err("refused").code,
            "uke.structure"
        );
        let b =
            sjis("IR,1,13,1,1234567,,病院,202401,00,03\r\nSY,0000999,20240110\r\nGO,0,0,99\r\n");
        assert_eq!(
            parse(&b, &Limits::default()).expect_err("refused").code,
            "uke.structure"
        );
    }
}
