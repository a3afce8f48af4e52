//! 特定健診 (specific health checkup) results as HL7 CDA R2 XML, and the submission ZIP that
//! carries them: `index.xml` (who sends what to whom), `summary.xml` (counts) and the CDA
//! documents under `DATA/`. Checkup item codes are under OID 1.2.392.200119.6.1005.
//!
//! No openly licensed 特定健診 instance or schema was available to compare with (see
//! `../shared/samples/cda-tokutei/README.md`); the structure follows the CDA R2 standard and
//! the MHLW 電子的標準様式 as documented in docs/synth.md, which lists what is approximate.

use std::fmt::Write as _;
use std::io::{Seek, Write};

use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, DateTime, ZipWriter};

use crate::model::{Institution, Person};
use crate::tables::{CHECKUP_ITEMS, PREFECTURES};
use crate::text::{fixed, xml_escape as x};

/// Namespace of index.xml / summary.xml.
const CHECKUP_NS: &str = "http://tokuteikenshin.jp/checkup/";

/// The CDA document of `p`'s checkup (`None` when the person had none).
pub fn document(insts: &[Institution], p: &Person) -> Option<(usize, String)> {
    let c = p.checkup.as_ref()?;
    let inst = &insts[p.links[c.link].inst];
    let ins = &p.insurance;
    let pref = PREFECTURES[p.postal.pref].0;
    let date = c.date.compact();
    let mut s = String::with_capacity(6 * 1024);
    let _ = write!(
        s,
        r#"<?xml version="1.0" encoding="UTF-8"?>
<ClinicalDocument xmlns="urn:hl7-org:v3" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <realmCode code="JP"/>
  <typeId root="2.16.840.1.113883.1.3" extension="POCD_HD000040"/>
  <id root="1.2.392.200119.6.102.1{code}" extension="{idx:012}"/>
  <code code="10" codeSystem="1.2.392.200119.6.1001" displayName="特定健診情報"/>
  <title>特定健康診査情報</title>
  <effectiveTime value="{date}"/>
  <confidentialityCode code="N" codeSystem="2.16.840.1.113883.5.25"/>
  <recordTarget>
    <patientRole>
      <id root="1.2.392.200119.6.101" extension="{insurer}"/>
      <id root="1.2.392.200119.6.204" extension="{symbol}"/>
      <id root="1.2.392.200119.6.205" extension="{number}"/>
      <addr><postalCode>{postal}</postalCode>{addr}</addr>
      <patient>
        <name use="SYL"><family>{kfam}</family><given>{kgiv}</given></name>
        <administrativeGenderCode code="{sex}" codeSystem="1.2.392.200119.6.1104"/>
        <birthTime value="{birth}"/>
      </patient>
    </patientRole>
  </recordTarget>
  <author>
    <time value="{date}"/>
    <assignedAuthor>
      <id root="1.2.392.200119.6.102" extension="{code}"/>
      <representedOrganization>
        <id root="1.2.392.200119.6.102" extension="{code}"/>
        <name>{iname}</name>
        <telecom value="tel:{itel}"/>
        <addr><postalCode>{ipostal}</postalCode>{iaddr}</addr>
      </representedOrganization>
    </assignedAuthor>
  </author>
  <custodian>
    <assignedCustodian>
      <representedCustodianOrganization>
        <id root="1.2.392.200119.6.102" extension="{code}"/>
        <name>{iname}</name>
      </representedCustodianOrganization>
    </assignedCustodian>
  </custodian>
  <documentationOf>
    <serviceEvent>
      <code code="1" codeSystem="1.2.392.200119.6.1002" displayName="特定健診"/>
      <effectiveTime value="{date}"/>
    </serviceEvent>
  </documentationOf>
  <component>
    <structuredBody>
      <component>
        <section>
          <code code="01010" codeSystem="1.2.392.200119.6.1010" displayName="特定健診結果"/>
          <title>検査・問診結果</title>
"#,
        code = inst.code,
        idx = p.index,
        insurer = ins.insurer,
        symbol = x(&ins.symbol),
        number = x(&ins.number),
        postal = format_args!("{}-{}", &p.postal.code[..3], &p.postal.code[3..]),
        addr = x(&format!(
            "{pref}{}{}{}",
            p.postal.city, p.postal.town, p.street
        )),
        kfam = x(p.family.kata),
        kgiv = x(p.given.kata),
        sex = p.sex.digit(),
        birth = p.birth.compact(),
        iname = x(&inst.name),
        itel = inst.phone,
        ipostal = format_args!("{}-{}", &inst.postal.code[..3], &inst.postal.code[3..]),
        iaddr = x(&format!(
            "{}{}{}",
            PREFECTURES[inst.postal.pref].0, inst.postal.city, inst.street
        )),
    );
    for item in CHECKUP_ITEMS {
        let Some(&(_, v)) = c.values.iter().find(|(k, _)| *k == item.key) else {
            continue;
        };
        let _ = write!(
            s,
            r#"          <entry>
            <observation classCode="OBS" moodCode="EVN">
              <code code="{}" codeSystem="1.2.392.200119.6.1005" displayName="{}"/>
              <value xsi:type="PQ" value="{}" unit="{}"/>
            </observation>
          </entry>
"#,
            item.code,
            x(item.name),
            fixed(v, item.decimals),
            x(item.unit)
        );
    }
    s.push_str("        </section>\n      </component>\n    </structuredBody>\n  </component>\n</ClinicalDocument>\n");
    Some((p.links[c.link].inst, s))
}

/// Writes one submission ZIP holding `docs` (file name, CDA XML), sent by `inst`.
pub fn write_zip<W: Write + Seek>(
    w: W,
    inst: &Institution,
    created: &str,
    docs: &[(String, String)],
) -> zip::result::ZipResult<W> {
    let mut z = ZipWriter::new(w);
    // Fixed timestamps and method: the archive bytes depend only on its contents.
    let opts = SimpleFileOptions::default()
        .compression_method(CompressionMethod::Deflated)
        .last_modified_time(DateTime::default())
        .unix_permissions(0o644);
    let index = format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<index xmlns="{CHECKUP_NS}">
  <interactionType code="1"/>
  <creationTime value="{created}"/>
  <sender><id root="1.2.392.200119.6.102" extension="{code}"/></sender>
  <receiver><id root="1.2.392.200119.6.101" extension="99999999"/></receiver>
  <serviceEventType code="1"/>
  <totalRecordCount value="{n}"/>
</index>
"#,
        code = inst.code,
        n = docs.len()
    );
    z.start_file("index.xml", opts)?;
    z.write_all(index.as_bytes())?;
    let summary = format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<summary xmlns="{CHECKUP_NS}">
  <serviceEventType code="1"/>
  <totalRegistration value="{n}"/>
  <totalCostAmount value="0" currency="JPY"/>
  <totalPaymentAmount value="0" currency="JPY"/>
  <totalClaimAmount value="0" currency="JPY"/>
</summary>
"#,
        n = docs.len()
    );
    z.start_file("summary.xml", opts)?;
    z.write_all(summary.as_bytes())?;
    for (name, xml) in docs {
        z.start_file(format!("DATA/{name}"), opts)?;
        z.write_all(xml.as_bytes())?;
    }
    z.finish()
}
