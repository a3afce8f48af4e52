//! JP Core FHIR R4 JSON: one `Bundle` (type `collection`) per person and institution with
//! Patient, Encounter, Condition, Observation (lab results) and MedicationRequest, using the
//! JP Core profiles and the code systems the JAMI example files use (JLAC10, ICD-10, the
//! institution-scoped patient-id OID `1.2.392.100495.20.3.51.1{医療機関コード}`).
//!
//! `fullUrl`s are `urn:uuid:` with a UUID (RFC 9562 version 8) derived by SHA-256 from the
//! institution and resource id, so they are stable across runs and unique across files.

use serde_json::{json, Value};

use crate::date::Date;
use crate::model::{Institution, Person};
use crate::tables::{DISEASES, DRUGS, LABS, PREFECTURES};

fn uuid(inst: &str, id: &str) -> String {
    let h = ring::digest::digest(&ring::digest::SHA256, format!("{inst}/{id}").as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&h.as_ref()[..16]);
    b[6] = (b[6] & 0x0f) | 0x80; // version 8
    b[8] = (b[8] & 0x3f) | 0x80; // RFC 9562 variant
    let x = hex::encode(b);
    format!(
        "urn:uuid:{}-{}-{}-{}-{}",
        &x[..8],
        &x[8..12],
        &x[12..16],
        &x[16..20],
        &x[20..]
    )
}

fn datetime(date: Date, secs: u32) -> String {
    format!(
        "{date}T{:02}:{:02}:{:02}+09:00",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

fn round(v: f64, decimals: usize) -> f64 {
    let f = 10f64.powi(decimals as i32);
    (v * f).round() / f
}

fn ucum(unit: &str) -> &str {
    match unit {
        "mL/min/1.73m2" => "mL/min/{1.73_m2}",
        other => other,
    }
}

const PROFILE: &str = "http://jpfhir.jp/fhir/core/StructureDefinition/";

/// The Bundle of `p` at the institution of link `li`, as JSON bytes.
pub fn bundle(insts: &[Institution], p: &Person, li: usize) -> Vec<u8> {
    let link = &p.links[li];
    let inst = &insts[link.inst];
    let pid = &link.local_id;
    let mut entries: Vec<Value> = Vec::new();
    let patient_url = uuid(&inst.code, &format!("Patient/{pid}"));
    let ins = &p.insurance;
    let pref = PREFECTURES[p.postal.pref].0;
    let postal = format!("{}-{}", &p.postal.code[..3], &p.postal.code[3..]);
    entries.push(json!({
        "fullUrl": patient_url,
        "resource": {
            "resourceType": "Patient",
            "id": format!("patient-{pid}"),
            "meta": { "profile": [format!("{PROFILE}JP_Patient")] },
            "identifier": [
                { "system": format!("urn:oid:1.2.392.100495.20.3.51.1{}", inst.code), "value": pid },
                { "system": "http://jpfhir.jp/fhir/clins/Idsystem/JP_Insurance_memberID",
                  "value": format!("{}:{}:{}:{}", ins.insurer, ins.symbol, ins.number, ins.branch) }
            ],
            "active": true,
            "name": [
                { "extension": [{ "url": "http://hl7.org/fhir/StructureDefinition/iso21090-EN-representation", "valueCode": "IDE" }],
                  "use": "official", "text": p.kanji_name(), "family": p.family.kanji, "given": [p.given.kanji] },
                { "extension": [{ "url": "http://hl7.org/fhir/StructureDefinition/iso21090-EN-representation", "valueCode": "SYL" }],
                  "use": "official", "text": p.kana_name(), "family": p.family.kata, "given": [p.given.kata] }
            ],
            "telecom": [{ "system": "phone", "value": p.phone, "use": "home" }],
            "gender": p.sex.fhir(),
            "birthDate": p.birth.to_string(),
            "address": [{
                "use": "home",
                "text": format!("{pref}{}{}{}", p.postal.city, p.postal.town, p.street),
                "line": [format!("{}{}", p.postal.town, p.street)],
                "city": p.postal.city,
                "state": pref,
                "postalCode": postal,
                "country": "JP"
            }]
        }
    }));
    let patient_ref = json!({ "reference": patient_url });
    let mut cond_urls: Vec<(usize, String)> = Vec::new();
    for (ei, e) in p
        .encounters
        .iter()
        .enumerate()
        .filter(|(_, e)| e.link == li)
    {
        let enc_id = format!("enc-{pid}-{ei}");
        let enc_url = uuid(&inst.code, &format!("Encounter/{enc_id}"));
        let start = datetime(e.date, e.time);
        entries.push(json!({
            "fullUrl": enc_url,
            "resource": {
                "resourceType": "Encounter",
                "id": enc_id,
                "meta": { "profile": [format!("{PROFILE}JP_Encounter")] },
                "status": "finished",
                "class": { "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB", "display": "外来" },
                "serviceType": { "coding": [{ "system": "http://jami.jp/SS-MIX2/CodeSystem/ClinicalDepartment", "code": e.dept.0, "display": e.dept.1 }] },
                "subject": patient_ref,
                "period": { "start": start, "end": datetime(e.date, (e.time + 1800).min(86_399)) },
                "serviceProvider": { "identifier": { "system": "http://jpfhir.jp/fhir/core/IdSystem/insurance-medical-institution-no", "value": inst.code }, "display": inst.name }
            }
        }));
        let enc_ref = json!({ "reference": enc_url });
        for &c in &e.diagnoses {
            if cond_urls.iter().any(|(x, _)| *x == c) {
                continue;
            }
            let cond = &p.conditions[c];
            let dis = &DISEASES[cond.disease];
            let id = format!("cond-{pid}-{c}");
            let url = uuid(&inst.code, &format!("Condition/{id}"));
            let status = if dis.chronic { "active" } else { "resolved" };
            entries.push(json!({
                "fullUrl": url,
                "resource": {
                    "resourceType": "Condition",
                    "id": id,
                    "meta": { "profile": [format!("{PROFILE}JP_Condition")] },
                    "clinicalStatus": { "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": status }] },
                    "verificationStatus": { "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": "confirmed" }] },
                    "category": [{ "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/condition-category", "code": "encounter-diagnosis" }] }],
                    "code": { "coding": [{ "system": "http://hl7.org/fhir/sid/icd-10", "code": dis.icd10, "display": dis.name }], "text": dis.name },
                    "subject": patient_ref,
                    "encounter": enc_ref,
                    "onsetDateTime": cond.onset.to_string(),
                    "recordedDate": e.date.to_string()
                }
            }));
            cond_urls.push((c, url));
        }
        for (k, &(li2, v)) in e.labs.iter().enumerate() {
            let l = &LABS[li2];
            let id = format!("obs-{pid}-{ei}-{k}");
            let mut range = serde_json::Map::new();
            if let Ok(lo) = l.range.0.parse::<f64>() {
                range.insert("low".into(), json!({ "value": lo, "unit": l.unit, "system": "http://unitsofmeasure.org", "code": ucum(l.unit) }));
            }
            if let Ok(hi) = l.range.1.parse::<f64>() {
                range.insert("high".into(), json!({ "value": hi, "unit": l.unit, "system": "http://unitsofmeasure.org", "code": ucum(l.unit) }));
            }
            let mut obs = json!({
                "resourceType": "Observation",
                "id": id,
                "meta": { "profile": [format!("{PROFILE}JP_Observation_LabResult")] },
                "status": "final",
                "category": [{ "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "laboratory" }] }],
                "code": { "coding": [{ "system": "http://medis.or.jp/CodeSystem/master-JLAC10-17digits", "code": l.jlac10, "display": l.name }], "text": l.name },
                "subject": patient_ref,
                "encounter": enc_ref,
                "effectiveDateTime": start,
                "valueQuantity": { "value": round(v, l.decimals), "unit": l.unit, "system": "http://unitsofmeasure.org", "code": ucum(l.unit) },
                "referenceRange": [Value::Object(range)]
            });
            let flag = crate::hl7::abnormal_flag(v, l.range);
            if !flag.is_empty() {
                obs["interpretation"] = json!([{ "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation", "code": flag }] }]);
            }
            entries.push(json!({ "fullUrl": uuid(&inst.code, &format!("Observation/{id}")), "resource": obs }));
        }
        for (k, &(di, days)) in e.drugs.iter().enumerate() {
            let d = &DRUGS[di];
            let id = format!("medreq-{pid}-{ei}-{k}");
            entries.push(json!({
                "fullUrl": uuid(&inst.code, &format!("MedicationRequest/{id}")),
                "resource": {
                    "resourceType": "MedicationRequest",
                    "id": id,
                    "meta": { "profile": [format!("{PROFILE}JP_MedicationRequest")] },
                    "status": "completed",
                    "intent": "order",
                    "medicationCodeableConcept": { "coding": [{ "system": "urn:enclave-synth:formulary", "code": d.code, "display": d.name }], "text": d.name },
                    "subject": patient_ref,
                    "encounter": enc_ref,
                    "authoredOn": start,
                    "dosageInstruction": [{
                        "text": format!("{} １回{}{}", d.usage, d.per_dose, d.unit.1),
                        "timing": { "repeat": {
                            "boundsDuration": { "value": days, "unit": "日", "system": "http://unitsofmeasure.org", "code": "d" },
                            "frequency": d.per_day, "period": 1, "periodUnit": "d" } },
                        "route": { "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/v2-0162", "code": d.route.0, "display": d.route.1 }] },
                        "doseAndRate": [{ "doseQuantity": { "value": d.per_dose, "unit": d.unit.1, "system": "urn:oid:1.2.392.100495.20.2.101", "code": d.unit.0 } }]
                    }],
                    "dispenseRequest": {
                        "quantity": { "value": d.per_dose * d.per_day * days, "unit": d.unit.1, "system": "urn:oid:1.2.392.100495.20.2.101", "code": d.unit.0 },
                        "expectedSupplyDuration": { "value": days, "unit": "日", "system": "http://unitsofmeasure.org", "code": "d" }
                    }
                }
            }));
        }
    }
    let bundle = json!({
        "resourceType": "Bundle",
        "id": format!("bundle-{}-{pid}", inst.code),
        "meta": { "profile": ["http://hl7.org/fhir/StructureDefinition/Bundle"] },
        "type": "collection",
        "entry": entries
    });
    let mut out = Vec::with_capacity(16 * 1024);
    write_json(&bundle, &mut out);
    out.push(b'\n');
    out
}

/// Compact JSON with `resourceType` first in every object that has one: FHIR parsers
/// (fhirbolt among them) read it first to pick the resource model. Other keys keep
/// serde_json's sorted order, so the bytes are deterministic.
fn write_json(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Object(map) => {
            out.push(b'{');
            let first = map.get_key_value("resourceType");
            let rest = map.iter().filter(|(k, _)| k.as_str() != "resourceType");
            for (i, (k, v)) in first.into_iter().chain(rest).enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                // Serializing a str into a Vec cannot fail.
                let _ = serde_json::to_writer(&mut *out, k.as_str());
                out.push(b':');
                write_json(v, out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_json(item, out);
            }
            out.push(b']');
        }
        scalar => write_scalar(scalar, out),
    }
}

fn write_scalar(v: &Value, out: &mut Vec<u8>) {
    // Serializing a string, number, bool or null into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, v);
}
