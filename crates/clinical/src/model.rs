//! The one record model every format is normalised into.
//!
//! Direct identifiers live only in [`Identity`]; clinical facts are [`Record`]s that point at
//! an identity by index. The vault turns identities into keyed pseudonyms (crate `linkage`)
//! and stores the two apart (R-IN-5), so analytic tables never carry a name, an insurance
//! number or a local patient id.

use serde::Serialize;

use crate::Format;

/// Who a file is about, as the sending institution identifies them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize)]
pub struct Identity {
    /// The institution's local patient id (SS-MIX2 PID-3, FHIR Patient.identifier, UKE RE).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local_id: Option<String>,
    /// 保険者番号.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub insurer: Option<String>,
    /// 被保険者証記号.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub symbol: Option<String>,
    /// 被保険者証番号.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub number: Option<String>,
    /// 枝番.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// Birth date, `YYYYMMDD`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub birth: Option<String>,
    /// Administrative sex: `M`, `F`, `O` or `U`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sex: Option<char>,
    /// Name in kana (ヨミ).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name_kana: Option<String>,
    /// Name in kanji.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name_kanji: Option<String>,
    /// Home postal code, digits only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub postal: Option<String>,
}

impl Identity {
    /// True when nothing at all identifies the person.
    pub fn is_empty(&self) -> bool {
        *self == Identity::default()
    }
}

/// What a record is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// A visit or admission.
    Encounter,
    /// A diagnosis (病名).
    Diagnosis,
    /// A prescription or administration.
    Medication,
    /// A lab result or other observation.
    Observation,
    /// An allergy.
    Allergy,
    /// A 特定健診 checkup item.
    CheckupItem,
    /// A claim line (診療行為, 医薬品, 特定器材).
    ClaimLine,
    /// A row of a plain table.
    Row,
}

impl Kind {
    /// Name in JSON and in storage partitions.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Encounter => "encounter",
            Kind::Diagnosis => "diagnosis",
            Kind::Medication => "medication",
            Kind::Observation => "observation",
            Kind::Allergy => "allergy",
            Kind::CheckupItem => "checkup-item",
            Kind::ClaimLine => "claim-line",
            Kind::Row => "row",
        }
    }
}

/// One clinical fact, re-encoded from the parsed file.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Record {
    /// What it is.
    pub kind: Option<Kind>,
    /// Index into [`Extract::identities`].
    pub subject: usize,
    /// When, `YYYYMMDD` (the clinically relevant date: onset, order, result, checkup).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub date: Option<String>,
    /// Code (ICD-10, JLAC10, YJ/HOT, 特定健診 item code, レセ電 code …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// The code's system as the file names it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    /// Text of the code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display: Option<String>,
    /// Value (numbers as written, never reformatted).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Unit of the value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
}

impl Record {
    /// A record of `kind` about identity `subject`.
    pub fn new(kind: Kind, subject: usize) -> Self {
        Record {
            kind: Some(kind),
            subject,
            ..Record::default()
        }
    }
}

/// Everything taken from one accepted file.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Extract {
    /// The format it parsed as.
    pub format: Format,
    /// The persons it is about.
    pub identities: Vec<Identity>,
    /// The facts.
    pub records: Vec<Record>,
    /// Things a careful reader should know that do not make the file unusable (profile
    /// non-conformance, a cancelled SS-MIX2 entry, a record whose subject is not in the file).
    pub warnings: Vec<String>,
    /// The file's own message or document type (`ADT^A08`, `Bundle/collection`, …).
    pub doc_type: String,
}

impl Extract {
    /// An empty extract of `format`.
    pub fn new(format: Format, doc_type: impl Into<String>) -> Self {
        Extract {
            format,
            identities: Vec::new(),
            records: Vec::new(),
            warnings: Vec::new(),
            doc_type: doc_type.into(),
        }
    }

    /// Adds an identity and returns its index.
    pub fn identity(&mut self, id: Identity) -> usize {
        if let Some(i) = self.identities.iter().position(|x| *x == id) {
            return i;
        }
        self.identities.push(id);
        self.identities.len() - 1
    }
}

/// `Some(s)` for a non-empty trimmed string.
pub(crate) fn nonempty(s: &str) -> Option<String> {
    let t = s.trim();
    (!t.is_empty()).then(|| t.to_owned())
}
