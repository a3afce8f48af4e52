//! Anonymization methods as approved artefacts (R-AN-3). A method is a set of files (the
//! anonymization settings and the hierarchies they name); its id is the SHA-256 over the
//! sorted list of (file name, SHA-256 of its bytes), so changing any byte of any file, adding
//! or removing a file, or renaming one gives another method that needs its own approval.

use ring::digest;
use serde::{Deserialize, Serialize};

use crate::workflow::Refusal;

/// Domain tag of method ids.
const DOMAIN: &[u8] = b"enclave-method-v1\0";

/// The id of a method made of `files` (name, bytes); the order given does not matter.
pub fn method_id(files: &[(String, Vec<u8>)]) -> String {
    let mut listed: Vec<(&str, String)> = files
        .iter()
        .map(|(n, b)| {
            (
                n.as_str(),
                hex::encode(digest::digest(&digest::SHA256, b).as_ref()),
            )
        })
        .collect();
    listed.sort();
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(DOMAIN);
    for (name, hash) in listed {
        ctx.update(name.as_bytes());
        ctx.update(b"\0");
        ctx.update(hash.as_bytes());
        ctx.update(b"\n");
    }
    hex::encode(ctx.finish().as_ref())
}

/// Where a method stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MethodState {
    /// Proposed, waiting for a second person.
    Proposed,
    /// Approved: releases may use it.
    Approved,
    /// Withdrawn: no new release may use it.
    Withdrawn,
}

/// A method in the register.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Method {
    /// Its id ([`method_id`]).
    pub id: String,
    /// A name people use ("checkup-2026", …).
    pub name: String,
    /// File names with their SHA-256.
    pub files: Vec<(String, String)>,
    /// Where it stands.
    pub state: MethodState,
    /// Who proposed it, and when.
    pub proposed_by: String,
    /// See `proposed_by`.
    pub proposed_at: String,
    /// Who approved it, and when.
    pub approved_by: Option<String>,
    /// See `approved_by`.
    pub approved_at: Option<String>,
}

impl Method {
    /// A proposal of `files` named `name`.
    pub fn propose(name: &str, files: &[(String, Vec<u8>)], by: &str, at: &str) -> Self {
        let mut listed: Vec<(String, String)> = files
            .iter()
            .map(|(n, b)| {
                (
                    n.clone(),
                    hex::encode(digest::digest(&digest::SHA256, b).as_ref()),
                )
            })
            .collect();
        listed.sort();
        Self {
            id: method_id(files),
            name: name.to_owned(),
            files: listed,
            state: MethodState::Proposed,
            proposed_by: by.to_owned(),
            proposed_at: at.to_owned(),
            approved_by: None,
            approved_at: None,
        }
    }

    /// A second person approves it.
    pub fn approve(&mut self, by: &str, at: &str) -> Result<(), Refusal> {
        if self.state != MethodState::Proposed {
            return Err(Refusal::WrongState(format!(
                "method {} is {:?}",
                self.name, self.state
            )));
        }
        if by == self.proposed_by {
            return Err(Refusal::SamePerson(
                "the proposer cannot approve their own method".into(),
            ));
        }
        self.state = MethodState::Approved;
        self.approved_by = Some(by.to_owned());
        self.approved_at = Some(at.to_owned());
        Ok(())
    }

    /// Withdraws it from use by new releases.
    pub fn withdraw(&mut self) {
        self.state = MethodState::Withdrawn;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files() -> Vec<(String, Vec<u8>)> {
        vec![
            ("method.json".into(), b"{\"k\":5}".to_vec()),
            ("age.csv".into(), b"30;30-39;*\n".to_vec()),
        ]
    }

    #[test]
    fn the_id_follows_every_byte_and_name_but_not_the_order() {
        let base = method_id(&files());
        let mut reversed = files();
        reversed.reverse();
        assert_eq!(method_id(&reversed), base);
        let mut changed = files();
        changed[1].1[0] = b'4';
        assert_ne!(method_id(&changed), base);
        let mut renamed = files();
        renamed[1].0 = "age2.csv".into();
        assert_ne!(method_id(&renamed), base);
        let mut more = files();
        more.push(("sex.csv".into(), b"M;*\n".to_vec()));
        assert_ne!(method_id(&more), base);
    }

    #[test]
    fn a_method_needs_a_second_person() {
        let mut m = Method::propose("checkup", &files(), "admin1", "t0");
        assert!(matches!(
            m.approve("admin1", "t1"),
            Err(Refusal::SamePerson(_))
        ));
        assert_eq!(m.state, MethodState::Proposed);
        m.approve("rev1", "t1").expect("approved");
        assert_eq!(m.approved_by.as_deref(), Some("rev1"));
        assert!(matches!(
            m.approve("rev2", "t2"),
            Err(Refusal::WrongState(_))
        ));
    }
}
