//! SS-MIX2 standardized storage (標準化ストレージ): HL7 v2.5 messages in ISO-2022-JP with CR
//! segment terminators, filed under the SS-MIX2 tree
//! `{pid[0..3]}/{pid[3..6]}/{pid}/{date|-}/{type}/{pid}_{date|-}_{type}_{order}_{timestamp}_{dept}_1`.
//!
//! Data types written: ADT-00 (患者基本情報, ADT^A08), PPR-01 (病名, PPR^ZD1), OMP-01 (処方
//! オーダ, RDE^O11), OML-01 (検体検査オーダ, OML^O33 as SS-MIX2 1.2 specifies) and OML-11
//! (検体検査結果, OUL^R22). Field positions follow the SS-MIX2 sample files in
//! `../shared/samples/ssmix2`; where ours differ, docs/synth.md says how and why.

use std::fmt::Write as _;

use crate::date::Date;
use crate::model::{Encounter, Institution, Params, Person};
use crate::tables::{Dept, DISEASES, DRUGS, LABS, PREFECTURES};
use crate::text::{fixed, hl7_escape as esc, iso2022jp, EncodeError};

/// One file of the storage: path relative to the institution's `standard_storage/` and its bytes.
pub type StorageFile = (String, Vec<u8>);

const MSH_TAIL: &str =
    "P|2.5||||||~ISO IR87||ISO 2022-1994|SS-MIX2_1.20^SS-MIX2^1.2.392.200250.2.1.100.1.2.120^ISO";

/// `YYYYMMDDhhmmss` of a date and seconds after midnight.
fn ts14(date: Date, secs: u32) -> String {
    format!(
        "{}{:02}{:02}{:02}",
        date.compact(),
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

struct Msg {
    text: String,
}

impl Msg {
    fn new(inst: &Institution, kind: &str, control: &str, ts: &str) -> Self {
        let mut text = String::with_capacity(1024);
        let _ = write!(
            text,
            "MSH|^~\\&|ENCLAVE-SYNTH|{}|GW|RCV|{ts}||{kind}|{control}|{MSH_TAIL}\r",
            inst.code
        );
        Self { text }
    }
    fn seg(&mut self, s: &str) {
        self.text.push_str(s);
        self.text.push('\r');
    }
    fn finish(self) -> Result<Vec<u8>, EncodeError> {
        iso2022jp(&self.text)
    }
}

fn pid_segment(p: &Person, pid: &str) -> String {
    let pref = PREFECTURES[p.postal.pref].0;
    format!(
        "PID|0001||{pid}^^^^PI||{}^{}^^^^^L^I~{}^{}^^^^^L^P||{}|{}|||^^^^{}^JPN^H^{}||^PRN^PH^^^^^^^^^{}",
        esc(p.family.kanji),
        esc(p.given.kanji),
        esc(p.family.kata),
        esc(p.given.kata),
        p.birth.compact(),
        p.sex.hl7(),
        p.postal.code,
        esc(&format!("{pref}{}{}{}", p.postal.city, p.postal.town, p.street)),
        p.phone,
    )
}

fn pv1(dept: Option<Dept>) -> String {
    match dept {
        Some((code, _)) => format!("PV1|0001|O|{code}^^^^^C"),
        None => "PV1|0001|O".to_string(),
    }
}

fn path(pid: &str, date: Option<Date>, kind: &str, order: &str, ts17: &str, dept: &str) -> String {
    let d = date.map(Date::compact).unwrap_or_else(|| "-".into());
    format!(
        "{}/{}/{pid}/{d}/{kind}/{pid}_{d}_{kind}_{order}_{ts17}_{dept}_1",
        &pid[..3],
        &pid[3..6]
    )
}

/// Order number unique within an institution: person index, encounter, order kind.
fn order_no(p: &Person, enc: usize, kind: u64) -> String {
    format!("{:015}", p.index * 100 + enc as u64 * 4 + kind)
}

/// All SS-MIX2 files of `p` at the institution of link `li`.
pub fn person_files(
    params: &Params,
    insts: &[Institution],
    p: &Person,
    li: usize,
) -> Result<Vec<StorageFile>, EncodeError> {
    let link = &p.links[li];
    let inst = &insts[link.inst];
    let pid = link.local_id.as_str();
    let mut files = Vec::new();
    let encs: Vec<(usize, &Encounter)> = p
        .encounters
        .iter()
        .enumerate()
        .filter(|(_, e)| e.link == li)
        .collect();
    let first = encs
        .first()
        .map(|(_, e)| (e.date, e.time))
        .unwrap_or((params.as_of, 9 * 3600));

    // ADT-00: patient basic information as of the first contact.
    let ts = ts14(first.0, first.1);
    let mut m = Msg::new(inst, "ADT^A08^ADT_A01", &format!("{pid}00"), &ts);
    m.seg(&format!("EVN|A08|{ts}"));
    m.seg(&pid_segment(p, pid));
    m.seg(&pv1(None));
    let ins = &p.insurance;
    m.seg(&format!(
        "IN1|1|{}^{}^JHSD0001|{}|||||||{}|{}|{}|||||SEL^本人^HL70063",
        ins.plan.0,
        ins.plan.1,
        ins.insurer,
        ins.symbol,
        ins.number,
        first.0.compact()
    ));
    files.push((
        path(
            pid,
            None,
            "ADT-00",
            &"9".repeat(15),
            &format!("{ts}000"),
            "-",
        ),
        m.finish()?,
    ));

    // PPR-01: the problems recorded at this institution.
    let mut listed: Vec<usize> = Vec::new();
    for (_, e) in &encs {
        for &c in &e.diagnoses {
            if !listed.contains(&c) {
                listed.push(c);
            }
        }
    }
    if !listed.is_empty() {
        let mut m = Msg::new(inst, "PPR^ZD1^PPR_ZD1", &format!("{pid}01"), &ts);
        m.seg(&pid_segment(p, pid));
        m.seg(&pv1(None));
        for (n, &c) in listed.iter().enumerate() {
            let cond = &p.conditions[c];
            let dis = &DISEASES[cond.disease];
            m.seg(&format!(
                "PRB|AD|{}|{}^{}^I10|{pid}{n:03}|||{}|||{}^^I10||||||{}",
                first.0.compact(),
                dis.icd10,
                esc(dis.name),
                cond.onset.compact(),
                dis.icd10,
                cond.onset.compact()
            ));
        }
        files.push((
            path(
                pid,
                None,
                "PPR-01",
                &"9".repeat(15),
                &format!("{ts}001"),
                "-",
            ),
            m.finish()?,
        ));
    }

    for (ei, e) in encs {
        let ts = ts14(e.date, e.time);
        let dept = e.dept;
        if !e.drugs.is_empty() {
            let order = order_no(p, ei, 0);
            let mut m = Msg::new(inst, "RDE^O11^RDE_O11", &format!("{order}P"), &ts);
            m.seg(&pid_segment(p, pid));
            m.seg(&pv1(Some(dept)));
            for (rp, &(k, days)) in e.drugs.iter().enumerate() {
                let d = &DRUGS[k];
                m.seg(&format!(
                    "ORC|NW|{order}||{}|||||{ts}|||||||||{}^{}^99XY1||||{}",
                    rp + 1,
                    dept.0,
                    dept.1,
                    esc(&inst.name)
                ));
                m.seg(&format!(
                    "RXE||{}^{}^99SYN|{}||{}^{}^MR9P|||||{}|{}^{}^MR9P||||{order}||||{}^{}&{}&MR9P",
                    d.code,
                    esc(d.name),
                    d.per_dose,
                    d.unit.0,
                    d.unit.1,
                    d.per_dose * d.per_day * days,
                    d.unit.0,
                    d.unit.1,
                    d.per_dose * d.per_day,
                    d.unit.0,
                    d.unit.1
                ));
                m.seg(&format!(
                    "TQ1|1||&{}&99SYN|||{days}^d|{}",
                    esc(d.usage),
                    e.date.compact()
                ));
                m.seg(&format!("RXR|{}^{}^HL70162", d.route.0, d.route.1));
            }
            files.push((
                path(
                    pid,
                    Some(e.date),
                    "OMP-01",
                    &order,
                    &format!("{ts}000"),
                    dept.0,
                ),
                m.finish()?,
            ));
        }
        if !e.labs.is_empty() {
            let order = order_no(p, ei, 1);
            let specimen = order_no(p, ei, 2);
            // OML-01: the order.
            let mut m = Msg::new(inst, "OML^O33^OML_O33", &format!("{order}O"), &ts);
            m.seg(&pid_segment(p, pid));
            m.seg(&pv1(Some(dept)));
            m.seg("SPM|1|||023^血清^JC10");
            m.seg(&format!(
                "ORC|NW|{order}|||||||{ts}|||||||||{}^{}^99XY1",
                dept.0, dept.1
            ));
            m.seg(&format!("OBR|1|{order}||E002^生化学的検査^99O03"));
            for (n, &(li2, _)) in e.labs.iter().enumerate() {
                let l = &LABS[li2];
                m.seg(&format!(
                    "OBX|{}||{}^{}^JC10||||||||O",
                    n + 1,
                    l.jlac10,
                    esc(l.name)
                ));
            }
            files.push((
                path(
                    pid,
                    Some(e.date),
                    "OML-01",
                    &order,
                    &format!("{ts}000"),
                    dept.0,
                ),
                m.finish()?,
            ));
            // OML-11: the results, reported two hours later.
            let rts = ts14(e.date, (e.time + 7200).min(86_399));
            let mut m = Msg::new(inst, "OUL^R22^OUL_R22", &format!("{order}R"), &rts);
            m.seg(&pid_segment(p, pid));
            m.seg(&pv1(Some(dept)));
            m.seg(&format!("SPM|1|{specimen}||023^血清^JC10|||||||||||||{ts}"));
            m.seg(&format!(
                "OBR|1|{order}|{specimen}|E002^生化学的検査^99O03|||{ts}|{ts}"
            ));
            m.seg(&format!(
                "ORC|SC|{order}|{specimen}||CM||||{rts}|||||||||{}^{}^99XY1",
                dept.0, dept.1
            ));
            for (n, &(li2, v)) in e.labs.iter().enumerate() {
                let l = &LABS[li2];
                let value = fixed(v, l.decimals);
                let flag = abnormal_flag(v, l.range);
                let range = if l.range.1.is_empty() {
                    format!("{}-", l.range.0)
                } else {
                    format!("{}-{}", l.range.0, l.range.1)
                };
                m.seg(&format!(
                    "OBX|{}|NM|{}^{}^JC10||{value}|{}^{}^99XYZ|{range}|{flag}|||F|||{ts}",
                    n + 1,
                    l.jlac10,
                    esc(l.name),
                    l.unit,
                    l.unit
                ));
            }
            files.push((
                path(
                    pid,
                    Some(e.date),
                    "OML-11",
                    &order,
                    &format!("{rts}000"),
                    dept.0,
                ),
                m.finish()?,
            ));
        }
    }
    Ok(files)
}

/// `H`/`L` when outside the printed reference range, empty otherwise.
pub fn abnormal_flag(v: f64, range: (&str, &str)) -> &'static str {
    let lo = range.0.parse::<f64>().ok();
    let hi = range.1.parse::<f64>().ok();
    match (lo, hi) {
        (Some(lo), _) if v < lo => "L",
        (_, Some(hi)) if v > hi => "H",
        _ => "",
    }
}
