//! SS-MIX2 standardized storage paths:
//! `…/<first 3 of patient id>/<next 3>/<patient id>/<care date|->/<data type>/<file>` with
//! file names `<patient id>_<care date|->_<data type>_<order no>_<timestamp>_<dept|->_<flag>`.
//!
//! The path is storage metadata; the message is the record. Disagreements are reported as
//! warnings (a misfiled message is still the message its PID says), and a condition flag of
//! `0` marks an entry the sender cancelled.

use crate::hl7::Message;
use crate::model::Identity;

/// What an SS-MIX2 path says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathInfo {
    /// Folder levels 1–3: first three digits, next three, patient id.
    pub folders: [String; 3],
    /// Care-date folder.
    pub date_folder: String,
    /// Data-type folder.
    pub type_folder: String,
    /// Patient id in the file name.
    pub patient: String,
    /// Care date in the file name.
    pub date: String,
    /// Data type in the file name (ADT-00, OMP-01 …).
    pub data_type: String,
    /// Condition flag: `1` valid, `0` cancelled.
    pub flag: String,
}

/// Reads `path` as an SS-MIX2 storage path; `None` when the file name does not have the
/// seven `_`-separated parts (the file is then not from a storage tree, which is allowed).
pub fn parse(path: &str) -> Option<PathInfo> {
    let parts: Vec<&str> = path.split(['/', '\\']).filter(|p| !p.is_empty()).collect();
    let file = *parts.last()?;
    let name: Vec<&str> = file.split('_').collect();
    if name.len() != 7 || parts.len() < 6 {
        return None;
    }
    let n = parts.len();
    Some(PathInfo {
        folders: [
            parts[n - 6].to_owned(),
            parts[n - 5].to_owned(),
            parts[n - 4].to_owned(),
        ],
        date_folder: parts[n - 3].to_owned(),
        type_folder: parts[n - 2].to_owned(),
        patient: name[0].to_owned(),
        date: name[1].to_owned(),
        data_type: name[2].to_owned(),
        flag: name[6].to_owned(),
    })
}

impl PathInfo {
    /// Warnings where the path disagrees with the message (and with itself).
    pub fn check_against(&self, _m: &Message, who: &Identity) -> Vec<String> {
        let mut w = self.self_check();
        if let Some(local) = &who.local_id {
            if *local != self.patient {
                w.push(format!(
                    "PID-3 {local:?} differs from the file name's patient id {:?}; the message's PID is used",
                    self.patient
                ));
            }
        }
        match self.flag.as_str() {
            "1" => {}
            "0" => w.push("condition flag 0: the sender cancelled this entry".to_owned()),
            other => w.push(format!("condition flag {other:?} is neither 1 nor 0")),
        }
        w
    }

    /// Where the path disagrees with itself.
    pub fn self_check(&self) -> Vec<String> {
        let mut w = Vec::new();
        if self.folders[2] != self.patient {
            w.push(format!(
                "file name patient id {:?} differs from its folder {:?}",
                self.patient, self.folders[2]
            ));
        }
        let digits = &self.folders[2];
        if digits.len() >= 6
            && (digits.get(..3) != Some(self.folders[0].as_str())
                || digits.get(3..6) != Some(self.folders[1].as_str()))
        {
            w.push(format!(
                "folders {}/{} are not the first six digits of patient id {:?}",
                self.folders[0], self.folders[1], digits
            ));
        }
        if self.date_folder != self.date {
            w.push(format!(
                "file name care date {:?} differs from its folder {:?}",
                self.date, self.date_folder
            ));
        }
        if self.type_folder != self.data_type {
            w.push(format!(
                "file name data type {:?} differs from its folder {:?}",
                self.data_type, self.type_folder
            ));
        }
        w
    }
}
