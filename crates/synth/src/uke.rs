//! Claims (レセプト) in the style of the 医科 レセプト電算処理 (UKE) file: comma-separated
//! records in Shift_JIS with CRLF line ends, one file `RECEIPTC.UKE` per institution and
//! claim month: IR (institution) first, then per claim RE (patient), HO (insurer), SY
//! (diagnoses), SI (procedures), IY (drugs), and GO (totals) last.
//!
//! Reduced field sets and synthetic points: docs/synth.md lists each record's fields and
//! where this differs from the official record layout.

use crate::model::{Institution, Person};
use crate::tables::{DISEASES, DRUGS};

/// One claim: the lines of a patient's month at one institution (UTF-8, CRLF-terminated)
/// and its total points.
#[derive(Debug)]
pub struct Claim {
    /// Index of the institution.
    pub inst: usize,
    /// Claim month `YYYYMM`.
    pub month: String,
    /// RE…IY lines; the receipt number (RE field 2) is filled in when the file is assembled.
    pub body: String,
    /// Total points.
    pub points: u64,
}

/// 初診料 and 再診料 as 診療行為コード (医科診療行為マスター) and points.
const FIRST_VISIT: (&str, u64) = ("111000110", 291);
const RETURN_VISIT: (&str, u64) = ("112007410", 75);
/// 検体検査: a per-item synthetic point value and 生化学的検査 判断料.
const LAB_ITEM_POINTS: u64 = 11;
const LAB_JUDGEMENT: (&str, u64) = ("160062110", 144);

/// Claims of person `p`, one per (institution, month) with encounters.
pub fn claims(p: &Person) -> Vec<Claim> {
    let mut keys: Vec<(usize, String)> = Vec::new();
    for e in &p.encounters {
        let k = (e.link, e.date.year_month());
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    let mut out = Vec::new();
    for (li, month) in keys {
        let link = &p.links[li];
        let encs: Vec<_> = p
            .encounters
            .iter()
            .filter(|e| e.link == li && e.date.year_month() == month)
            .collect();
        let mut lines = String::new();
        let mut points = 0u64;
        let mut tail = String::new();
        let mut diag: Vec<usize> = Vec::new();
        for e in &encs {
            for &c in &e.diagnoses {
                if !diag.contains(&c) {
                    diag.push(c);
                }
            }
            let (code, pts) = if e.first_visit {
                FIRST_VISIT
            } else {
                RETURN_VISIT
            };
            points += pts;
            tail.push_str(&format!(
                "SI,{},1,{code},,{pts},1,{}\r\n",
                if e.first_visit { 11 } else { 12 },
                e.date.d
            ));
            if !e.labs.is_empty() {
                let lp = LAB_ITEM_POINTS * e.labs.len() as u64;
                points += lp + LAB_JUDGEMENT.1;
                tail.push_str(&format!(
                    "SI,60,1,160000000,{},{lp},1,{}\r\n",
                    e.labs.len(),
                    e.date.d
                ));
                tail.push_str(&format!(
                    "SI,60,1,{},,{},1,{}\r\n",
                    LAB_JUDGEMENT.0, LAB_JUDGEMENT.1, e.date.d
                ));
            }
            for &(k, days) in &e.drugs {
                let d = &DRUGS[k];
                let amount = d.per_dose * d.per_day;
                // Synthetic price: one point per unit per day, at least one point.
                let pts = u64::from(amount).max(1);
                points += pts * u64::from(days);
                tail.push_str(&format!(
                    "IY,21,1,{},{amount},{pts},{days},{}\r\n",
                    d.code, e.date.d
                ));
            }
        }
        let days_seen = {
            let mut d: Vec<_> = encs.iter().map(|e| e.date).collect();
            d.dedup();
            d.len()
        };
        lines.push_str(&format!(
            "RE,{{receipt}},1112,{month},{},{},{},,,,,,,{},\r\n",
            p.kanji_name().replace(' ', "　"),
            p.sex.digit(),
            p.birth.compact(),
            link.local_id
        ));
        lines.push_str(&format!(
            "HO,{},{},{},{days_seen},{points},,\r\n",
            p.insurance.insurer, p.insurance.symbol, p.insurance.number
        ));
        for (n, &c) in diag.iter().enumerate() {
            let cond = &p.conditions[c];
            let dis = &DISEASES[cond.disease];
            // 0000999 = 未コード化傷病名: the name travels as text (no openly licensed
            // 傷病名マスター was available); the ICD-10 code goes in the comment field.
            lines.push_str(&format!(
                "SY,0000999,{},1,,{},{},{}\r\n",
                cond.onset.compact(),
                dis.name,
                if n == 0 { "01" } else { "" },
                dis.icd10
            ));
        }
        lines.push_str(&tail);
        out.push(Claim {
            inst: link.inst,
            month,
            body: lines,
            points,
        });
    }
    out
}

/// The IR record opening a file.
pub fn ir_line(inst: &Institution, month: &str) -> String {
    format!(
        "IR,1,{},1,{},,{},{month},00,{}\r\n",
        &inst.code[..2],
        &inst.code[3..],
        inst.name,
        inst.phone
    )
}

/// The GO record closing a file.
pub fn go_line(count: u64, points: u64) -> String {
    format!("GO,{count},{points},99\r\n")
}
