//! JP Core FHIR R4 JSON: a Bundle or a single resource (R-IN-1).
//!
//! The JSON is parsed completely (serde_json; duplicate keys are an error there) and then
//! walked with an explicit depth bound. Every resource, including Bundle entries and
//! `contained` resources, must name an R4 resource type and a valid id; the primitives the
//! vault reads (dates, gender, quantities) must have their FHIR types. Profile-level checks
//! of the JP eCS profiles that decide whether a record is usable for research become
//! warnings, not refusals: the data is still what the institution recorded.

use std::collections::HashMap;

use crate::json::{Map, Value};

use crate::model::{nonempty, Extract, Identity, Kind, Record};
use crate::{valid_date, Format, Limits, Refusal};

/// Resource types of FHIR R4 (4.0.1).
const R4_TYPES: &[&str] = &[
    "Account",
    "ActivityDefinition",
    "AdverseEvent",
    "AllergyIntolerance",
    "Appointment",
    "AppointmentResponse",
    "AuditEvent",
    "Basic",
    "Binary",
    "BiologicallyDerivedProduct",
    "BodyStructure",
    "Bundle",
    "CapabilityStatement",
    "CarePlan",
    "CareTeam",
    "CatalogEntry",
    "ChargeItem",
    "ChargeItemDefinition",
    "Claim",
    "ClaimResponse",
    "ClinicalImpression",
    "CodeSystem",
    "Communication",
    "CommunicationRequest",
    "CompartmentDefinition",
    "Composition",
    "ConceptMap",
    "Condition",
    "Consent",
    "Contract",
    "Coverage",
    "CoverageEligibilityRequest",
    "CoverageEligibilityResponse",
    "DetectedIssue",
    "Device",
    "DeviceDefinition",
    "DeviceMetric",
    "DeviceRequest",
    "DeviceUseStatement",
    "DiagnosticReport",
    "DocumentManifest",
    "DocumentReference",
    "EffectEvidenceSynthesis",
    "Encounter",
    "Endpoint",
    "EnrollmentRequest",
    "EnrollmentResponse",
    "EpisodeOfCare",
    "EventDefinition",
    "Evidence",
    "EvidenceVariable",
    "ExampleScenario",
    "ExplanationOfBenefit",
    "FamilyMemberHistory",
    "Flag",
    "Goal",
    "GraphDefinition",
    "Group",
    "GuidanceResponse",
    "HealthcareService",
    "ImagingStudy",
    "Immunization",
    "ImmunizationEvaluation",
    "ImmunizationRecommendation",
    "ImplementationGuide",
    "InsurancePlan",
    "Invoice",
    "Library",
    "Linkage",
    "List",
    "Location",
    "Measure",
    "MeasureReport",
    "Media",
    "Medication",
    "MedicationAdministration",
    "MedicationDispense",
    "MedicationKnowledge",
    "MedicationRequest",
    "MedicationStatement",
    "MedicinalProduct",
    "MedicinalProductAuthorization",
    "MedicinalProductContraindication",
    "MedicinalProductIndication",
    "MedicinalProductIngredient",
    "MedicinalProductInteraction",
    "MedicinalProductManufactured",
    "MedicinalProductPackaged",
    "MedicinalProductPharmaceutical",
    "MedicinalProductUndesirableEffect",
    "MessageDefinition",
    "MessageHeader",
    "MolecularSequence",
    "NamingSystem",
    "NutritionOrder",
    "Observation",
    "ObservationDefinition",
    "OperationDefinition",
    "OperationOutcome",
    "Organization",
    "OrganizationAffiliation",
    "Parameters",
    "Patient",
    "PaymentNotice",
    "PaymentReconciliation",
    "Person",
    "PlanDefinition",
    "Practitioner",
    "PractitionerRole",
    "Procedure",
    "Provenance",
    "Questionnaire",
    "QuestionnaireResponse",
    "RelatedPerson",
    "RequestGroup",
    "ResearchDefinition",
    "ResearchElementDefinition",
    "ResearchStudy",
    "ResearchSubject",
    "RiskAssessment",
    "RiskEvidenceSynthesis",
    "Schedule",
    "SearchParameter",
    "ServiceRequest",
    "Slot",
    "Specimen",
    "SpecimenDefinition",
    "StructureDefinition",
    "StructureMap",
    "Subscription",
    "Substance",
    "SubstanceNucleicAcid",
    "SubstancePolymer",
    "SubstanceProtein",
    "SubstanceReferenceInformation",
    "SubstanceSourceMaterial",
    "SubstanceSpecification",
    "SupplyDelivery",
    "SupplyRequest",
    "Task",
    "TerminologyCapabilities",
    "TestReport",
    "TestScript",
    "ValueSet",
    "VerificationResult",
    "VisionPrescription",
];

const BUNDLE_TYPES: &[&str] = &[
    "document",
    "message",
    "transaction",
    "transaction-response",
    "batch",
    "batch-response",
    "history",
    "searchset",
    "collection",
];

/// JP Core: 被保険者個人識別子, `保険者番号:記号:番号:枝番`.
pub const MEMBER_ID_SYSTEM: &str = "http://jpfhir.jp/fhir/clins/Idsystem/JP_Insurance_memberID";
/// JP Core: a local patient id is `urn:oid:1.2.392.100495.20.3.51.1` + 医療機関コード.
pub const LOCAL_ID_PREFIX: &str = "urn:oid:1.2.392.100495.20.3.51.";

const YJ: &str = "http://capstandard.jp/iyaku.info/CodeSystem/YJ-code";
const GENERAL_ORDER: &str = "http://jpfhir.jp/fhir/core/mhlw/CodeSystem/MedicationGeneralOrderCode";
const NOCODED: &str = "http://jpfhir.jp/fhir/eCS/CodeSystem/MedicationCodeNocoded_CS";
const LAB_LOCAL: &str = "http://jpfhir.jp/fhir/clins/CodeSystem/JP_CLINS_ObsLabResult_LocalCode_CS";

fn refuse(code: &'static str, reason: impl Into<String>) -> Refusal {
    Refusal::new(code, reason)
}

/// Depth of `v`, stopping (and returning `limit + 1`) as soon as it exceeds `limit`. Iterative,
/// so a hostile nesting cannot overflow the stack here either.
fn depth_exceeds(v: &Value, limit: usize) -> bool {
    let mut stack: Vec<(&Value, usize)> = vec![(v, 1)];
    while let Some((v, d)) = stack.pop() {
        if d > limit {
            return true;
        }
        match v {
            Value::Array(a) => stack.extend(a.iter().map(|x| (x, d + 1))),
            Value::Object(o) => stack.extend(o.values().map(|x| (x, d + 1))),
            _ => {}
        }
    }
    false
}

fn s<'a>(o: &'a Map<'a>, k: &str) -> Option<&'a str> {
    o.get(k).and_then(Value::as_str)
}

fn obj<'a>(o: &'a Map<'a>, k: &str) -> Option<&'a Map<'a>> {
    o.get(k).and_then(Value::as_object)
}

fn arr<'a>(o: &'a Map<'a>, k: &str) -> &'a [Value<'a>] {
    o.get(k)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// A FHIR `date` or `dateTime` as `YYYYMMDD` when it has a full date; `Err` when malformed.
fn fhir_date(v: &str) -> Result<Option<String>, ()> {
    let b = v.as_bytes();
    let year_ok = |n: usize| b.len() >= n && b[..4].iter().all(u8::is_ascii_digit);
    match b.len() {
        4 if year_ok(4) => Ok(None),
        7 if year_ok(7) && b[4] == b'-' && valid_date(&format!("{}-01", v), true).is_some() => {
            Ok(None)
        }
        n if n >= 10 => {
            // `get`, not indexing: byte 10 may fall inside a multi-byte character.
            let d = valid_date(v.get(..10).ok_or(())?, true).ok_or(())?;
            if n > 10 {
                let t = v.get(10..).ok_or(())?;
                // dateTime: T hh:mm:ss(.fff)(Z|±hh:mm)
                let tb = t.as_bytes();
                let ok = tb.len() >= 9
                    && tb[0] == b'T'
                    && tb[3] == b':'
                    && tb[6] == b':'
                    && [1, 2, 4, 5, 7, 8].iter().all(|&i| tb[i].is_ascii_digit());
                if !ok {
                    return Err(());
                }
            }
            Ok(Some(d))
        }
        _ => Err(()),
    }
}

fn checked_date(o: &Map<'_>, k: &str, at: &str) -> Result<Option<String>, Refusal> {
    match o.get(k) {
        None => Ok(None),
        Some(Value::String(v)) => fhir_date(v).map_err(|_| {
            refuse(
                "fhir.value",
                format!("{at}.{k} {v:?} is not a FHIR date/dateTime"),
            )
        }),
        Some(other) => Err(refuse(
            "fhir.value",
            format!("{at}.{k} must be a string, found {other}"),
        )),
    }
}

struct Walk<'a> {
    x: Extract,
    /// Patient ids and fullUrls → identity index.
    patients: HashMap<String, usize>,
    pending: Vec<(&'a Map<'a>, String)>,
}

/// Parses one FHIR JSON file.
pub fn parse(bytes: &[u8], limits: &Limits) -> Result<Extract, Refusal> {
    let bytes = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes);
    // UTF-8 is checked once over the whole file (RFC 8259 §8.1), so the JSON reader need not
    // check every string again: a sixth of the parse time went to that.
    let text = std::str::from_utf8(bytes).map_err(|e| {
        refuse(
            "fhir.json",
            format!(
                "not well-formed JSON: not UTF-8 at byte {}",
                e.valid_up_to()
            ),
        )
    })?;
    let v: Value = serde_json::from_str(text)
        .map_err(|e| refuse("fhir.json", format!("not well-formed JSON: {e}")))?;
    if depth_exceeds(&v, limits.max_depth) {
        return Err(refuse(
            "fhir.limits",
            format!("JSON nested deeper than {}", limits.max_depth),
        ));
    }
    let root = v
        .as_object()
        .ok_or_else(|| refuse("fhir.resource", "the top level is not a JSON object"))?;
    let rt = resource_type(root, "the file")?;
    let doc_type = if rt == "Bundle" {
        format!("Bundle/{}", s(root, "type").unwrap_or(""))
    } else {
        rt.to_owned()
    };
    let mut w = Walk {
        x: Extract::new(Format::FhirJp, doc_type),
        patients: HashMap::new(),
        pending: Vec::new(),
    };
    if rt == "Bundle" {
        let ty = s(root, "type").unwrap_or("");
        if !BUNDLE_TYPES.contains(&ty) {
            return Err(refuse(
                "fhir.bundle",
                format!("Bundle.type {ty:?} is not an R4 bundle type"),
            ));
        }
        check_id(root, "Bundle")?;
        for (i, e) in arr(root, "entry").iter().enumerate() {
            let at = format!("Bundle.entry[{i}]");
            let e = e
                .as_object()
                .ok_or_else(|| refuse("fhir.bundle", format!("{at} is not an object")))?;
            let r = obj(e, "resource")
                .ok_or_else(|| refuse("fhir.bundle", format!("{at} has no resource object")))?;
            let full_url = s(e, "fullUrl").map(str::to_owned);
            visit(&mut w, r, &at, full_url)?;
        }
    } else {
        visit(&mut w, root, rt, None)?;
    }
    // Records are resolved after every Patient is known: a Bundle may list them later.
    let pending = std::mem::take(&mut w.pending);
    for (r, at) in pending {
        record(&mut w, r, &at)?;
    }
    Ok(w.x)
}

fn resource_type<'a>(r: &'a Map<'_>, at: &str) -> Result<&'a str, Refusal> {
    let rt = s(r, "resourceType")
        .ok_or_else(|| refuse("fhir.resource", format!("{at}: no resourceType string")))?;
    // The list is sorted (a unit test keeps it so): a binary search instead of up to 146
    // string comparisons for every resource.
    if R4_TYPES.binary_search(&rt).is_err() {
        return Err(refuse(
            "fhir.resource",
            format!("{at}: resourceType {rt:?} is not a FHIR R4 resource"),
        ));
    }
    Ok(rt)
}

fn check_id(r: &Map<'_>, at: &str) -> Result<(), Refusal> {
    match r.get("id") {
        None => Ok(()),
        Some(Value::String(id))
            if !id.is_empty()
                && id.len() <= 64
                && id
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'.') =>
        {
            Ok(())
        }
        Some(other) => Err(refuse(
            "fhir.id",
            format!("{at}.id {other} is not a FHIR id ([A-Za-z0-9-.]{{1,64}})"),
        )),
    }
}

fn visit<'a>(
    w: &mut Walk<'a>,
    r: &'a Map<'_>,
    at: &str,
    full_url: Option<String>,
) -> Result<(), Refusal> {
    let rt = resource_type(r, at)?;
    let at = format!("{at}({rt})");
    check_id(r, &at)?;
    for (i, c) in arr(r, "contained").iter().enumerate() {
        let c = c.as_object().ok_or_else(|| {
            refuse(
                "fhir.resource",
                format!("{at}.contained[{i}] is not an object"),
            )
        })?;
        resource_type(c, &format!("{at}.contained[{i}]"))?;
        check_id(c, &format!("{at}.contained[{i}]"))?;
    }
    match rt {
        "Bundle" => Err(refuse(
            "fhir.bundle",
            format!("{at}: a Bundle inside a Bundle"),
        )),
        "Patient" => {
            let id = patient_identity(r, &at)?;
            let n = w.x.identity(id);
            if let Some(pid) = s(r, "id") {
                w.patients.insert(format!("Patient/{pid}"), n);
            }
            if let Some(u) = full_url {
                w.patients.insert(u, n);
            }
            Ok(())
        }
        "Encounter" | "Condition" | "Observation" | "MedicationRequest" | "AllergyIntolerance" => {
            w.pending.push((r, at));
            Ok(())
        }
        _ => Ok(()),
    }
}

fn patient_identity(r: &Map<'_>, at: &str) -> Result<Identity, Refusal> {
    let mut id = Identity::default();
    for ident in arr(r, "identifier").iter().filter_map(Value::as_object) {
        let system = s(ident, "system").unwrap_or("");
        let value = s(ident, "value").unwrap_or("");
        if system == MEMBER_ID_SYSTEM {
            member_id(value, &mut id);
        } else if system.starts_with(LOCAL_ID_PREFIX) {
            id.local_id = id.local_id.take().or_else(|| nonempty(value));
        }
    }
    if let Some(b) = checked_date(r, "birthDate", at)? {
        id.birth = Some(b);
    }
    id.sex = match s(r, "gender") {
        None => None,
        Some("male") => Some('M'),
        Some("female") => Some('F'),
        Some("other") => Some('O'),
        Some("unknown") => Some('U'),
        Some(g) => {
            return Err(refuse(
                "fhir.value",
                format!("{at}.gender {g:?} is not male/female/other/unknown"),
            ))
        }
    };
    for n in arr(r, "name").iter().filter_map(Value::as_object) {
        let repr = arr(n, "extension")
            .iter()
            .filter_map(Value::as_object)
            .find_map(|e| s(e, "valueCode"))
            .unwrap_or("IDE");
        let given: Vec<&str> = arr(n, "given").iter().filter_map(Value::as_str).collect();
        let text = match (s(n, "family"), given.is_empty()) {
            (Some(f), false) => Some(format!("{f} {}", given.join(" "))),
            (Some(f), true) => Some(f.to_owned()),
            _ => s(n, "text").map(str::to_owned),
        };
        match repr {
            "SYL" => id.name_kana = id.name_kana.take().or(text),
            _ => id.name_kanji = id.name_kanji.take().or(text),
        }
    }
    if let Some(a) = arr(r, "address").iter().filter_map(Value::as_object).next() {
        let postal: String = s(a, "postalCode")
            .unwrap_or("")
            .chars()
            .filter(char::is_ascii_digit)
            .collect();
        id.postal = nonempty(&postal);
    }
    Ok(id)
}

/// `保険者番号:記号:番号:枝番` into the identity.
fn member_id(value: &str, id: &mut Identity) {
    let mut parts = value.split(':');
    id.insurer = parts.next().and_then(nonempty);
    id.symbol = parts.next().and_then(nonempty);
    id.number = parts.next().and_then(nonempty);
    id.branch = parts.next().and_then(nonempty);
}

fn subject(w: &mut Walk<'_>, r: &Map<'_>, at: &str) -> usize {
    let key = if r.contains_key("patient") {
        "patient"
    } else {
        "subject"
    };
    if let Some(sub) = obj(r, key) {
        if let Some(reference) = s(sub, "reference") {
            if let Some(&n) = w.patients.get(reference) {
                return n;
            }
        }
        if let Some(ident) = obj(sub, "identifier") {
            if s(ident, "system") == Some(MEMBER_ID_SYSTEM) {
                let mut id = Identity::default();
                member_id(s(ident, "value").unwrap_or(""), &mut id);
                return w.x.identity(id);
            }
        }
    }
    w.x.warnings.push(format!(
        "{at}: subject is not a Patient in this file nor an insurance member id; stored unlinked"
    ));
    w.x.identity(Identity::default())
}

fn first_coding(cc: Option<&Map<'_>>, r: &mut Record) {
    let Some(cc) = cc else { return };
    if let Some(c) = arr(cc, "coding").iter().filter_map(Value::as_object).next() {
        r.code = s(c, "code").and_then(nonempty);
        r.system = s(c, "system").and_then(nonempty);
        r.display = s(c, "display").and_then(nonempty);
    }
    if r.display.is_none() {
        r.display = s(cc, "text").and_then(nonempty);
    }
}

fn has_system(cc: Option<&Map<'_>>, systems: &[&str]) -> bool {
    cc.is_some_and(|cc| {
        arr(cc, "coding")
            .iter()
            .filter_map(Value::as_object)
            .any(|c| s(c, "system").is_some_and(|sys| systems.contains(&sys)))
    })
}

fn profiles<'a>(r: &'a Map<'a>) -> Vec<&'a str> {
    obj(r, "meta")
        .map(|m| arr(m, "profile").iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

fn record(w: &mut Walk<'_>, r: &Map<'_>, at: &str) -> Result<(), Refusal> {
    let rt = s(r, "resourceType").unwrap_or("");
    let who = subject(w, r, at);
    let claims = |p: &str| profiles(r).iter().any(|x| x.split('|').next() == Some(p));
    let rec = match rt {
        "Encounter" => {
            let mut rec = Record::new(Kind::Encounter, who);
            if let Some(c) = obj(r, "class") {
                rec.code = s(c, "code").and_then(nonempty);
                rec.system = s(c, "system").and_then(nonempty);
                rec.display = s(c, "display").and_then(nonempty);
            }
            if let Some(p) = obj(r, "period") {
                rec.date = checked_date(p, "start", at)?;
            }
            rec
        }
        "Condition" => {
            let mut rec = Record::new(Kind::Diagnosis, who);
            first_coding(obj(r, "code"), &mut rec);
            rec.date = match checked_date(r, "onsetDateTime", at)? {
                Some(d) => Some(d),
                None => checked_date(r, "recordedDate", at)?,
            };
            rec
        }
        "Observation" => {
            let mut rec = Record::new(Kind::Observation, who);
            first_coding(obj(r, "code"), &mut rec);
            if let Some(q) = obj(r, "valueQuantity") {
                match q.get("value") {
                    None => {}
                    Some(Value::Number(n)) => rec.value = Some(n.to_string()),
                    Some(other) => {
                        return Err(refuse(
                            "fhir.value",
                            format!("{at}.valueQuantity.value {other} is not a number"),
                        ))
                    }
                }
                rec.unit = s(q, "unit").or_else(|| s(q, "code")).and_then(nonempty);
            } else if let Some(v) = s(r, "valueString") {
                rec.value = nonempty(v);
            } else if let Some(cc) = obj(r, "valueCodeableConcept") {
                let mut tmp = Record::default();
                first_coding(Some(cc), &mut tmp);
                rec.value = tmp.code.or(tmp.display);
            }
            rec.date = checked_date(r, "effectiveDateTime", at)?;
            if claims("http://jpfhir.jp/fhir/eCS/StructureDefinition/JP_Observation_LabResult_eCS")
                && !has_system(obj(r, "code"), &[LAB_LOCAL])
            {
                w.x.warnings.push(format!(
                    "{at}: JP_Observation_LabResult_eCS requires a local lab code (JP_CLINS_ObsLabResult_LocalCode_CS) in code.coding; none is present"
                ));
            }
            rec
        }
        "MedicationRequest" => {
            let mut rec = Record::new(Kind::Medication, who);
            let cc = obj(r, "medicationCodeableConcept");
            first_coding(cc, &mut rec);
            rec.date = checked_date(r, "authoredOn", at)?;
            if let Some(q) = arr(r, "dosageInstruction")
                .iter()
                .filter_map(Value::as_object)
                .flat_map(|d| arr(d, "doseAndRate").iter().filter_map(Value::as_object))
                .find_map(|d| obj(d, "doseQuantity"))
            {
                rec.value = q
                    .get("value")
                    .filter(|v| v.is_number())
                    .map(Value::to_string);
                rec.unit = s(q, "unit").and_then(nonempty);
            }
            if claims("http://jpfhir.jp/fhir/eCS/StructureDefinition/JP_MedicationRequest_eCS")
                && !has_system(cc, &[YJ, GENERAL_ORDER, NOCODED])
            {
                w.x.warnings.push(format!(
                    "{at}: JP_MedicationRequest_eCS requires a YJ code, a 一般処方名 code or the explicit NOCODED code; medicationCodeableConcept has none"
                ));
            }
            rec
        }
        "AllergyIntolerance" => {
            let mut rec = Record::new(Kind::Allergy, who);
            first_coding(obj(r, "code"), &mut rec);
            rec.date = checked_date(r, "recordedDate", at)?;
            rec
        }
        _ => return Ok(()),
    };
    w.x.records.push(rec);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_bound_is_enforced_without_recursion() {
        let deep = format!("{}{}", "[".repeat(100), "]".repeat(100));
        let v: Value = serde_json::from_str(&deep).expect("serde_json allows 128");
        assert!(depth_exceeds(&v, 64));
        assert!(!depth_exceeds(&v, 200));
    }

    #[test]
    fn the_resource_type_list_is_sorted_for_binary_search() {
        assert!(R4_TYPES.windows(2).all(|w| w[0] < w[1]));
        assert!(R4_TYPES.binary_search(&"Patient").is_ok());
    }

    #[test]
    fn unknown_resource_type_is_refused() {
        let e = parse(br#"{"resourceType":"Patientx"}"#, &Limits::default()).expect_err("refused");
        assert_eq!(e.code, "fhir.resource");
    }

    #[test]
    fn patient_and_subject_link_inside_a_bundle() {
        let b = br#"{"resourceType":"Bundle","type":"collection","entry":[
          {"fullUrl":"urn:uuid:1","resource":{"resourceType":"Condition","subject":{"reference":"urn:uuid:2"},"code":{"coding":[{"system":"icd10","code":"E11.9"}]},"onsetDateTime":"2020-01-02"}},
          {"fullUrl":"urn:uuid:2","resource":{"resourceType":"Patient","id":"p1","gender":"female","birthDate":"1960-02-29",
            "identifier":[{"system":"http://jpfhir.jp/fhir/clins/Idsystem/JP_Insurance_memberID","value":"06123456:AB:123:01"}]}}]}"#;
        let x = parse(b, &Limits::default()).expect("parses");
        assert_eq!(x.identities.len(), 1);
        assert_eq!(x.identities[0].insurer.as_deref(), Some("06123456"));
        assert_eq!(x.identities[0].birth.as_deref(), Some("19600229"));
        assert_eq!(x.records[0].subject, 0);
        assert_eq!(x.records[0].date.as_deref(), Some("20200102"));
        assert!(x.warnings.is_empty());
    }

    #[test]
    fn bad_dates_are_refused() {
        let e = parse(
            br#"{"resourceType":"Patient","birthDate":"1961-02-29"}"#,
            &Limits::default(),
        )
        .expect_err("refused");
        assert_eq!(e.code, "fhir.value");
        assert!(fhir_date("2021-07-05T19:28:23.000+09:00").is_ok());
        assert!(fhir_date("2021-07").is_ok());
        assert!(fhir_date("2021-7-5").is_err());
        // A multi-byte character across byte 10 is an error, not a panic.
        assert!(fhir_date("2021-07-0日").is_err());
        assert!(fhir_date("2021-07-01日本").is_err());
    }
}
