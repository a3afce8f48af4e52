//! The release workflow as a state machine: a release moves only by these events, each
//! refused unless the state and the person allow it. Nothing is packaged without a built
//! dataset and report, a first approval by a reviewer who read it, and a confirmation by a
//! second reviewer — neither of them the requester (R-RL-1, R-RL-2). A release with
//! cumulative-release findings ([`crate::cumulative`]) is not approved until a reviewer
//! records an override with a reason.

use serde::{Deserialize, Serialize};

use crate::cumulative::Finding;
use crate::method::{Method, MethodState};

/// Why an event is refused. A refused event changes nothing.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize)]
pub enum Refusal {
    /// The event does not apply in the current state.
    #[error("{0}")]
    WrongState(String),
    /// Separation of duties: this person may not take this step.
    #[error("{0}")]
    SamePerson(String),
    /// A required field is empty.
    #[error("missing {0}")]
    Missing(String),
    /// The method is not approved (or not known).
    #[error("{0}")]
    Method(String),
    /// Cumulative-release findings stand and no override is recorded.
    #[error("{0}")]
    Findings(String),
    /// Persons in the build opted out after it was made (R-IN-6): it must be rebuilt.
    #[error("{0}")]
    Stale(String),
}

/// What an operator asks for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// The recipient (a registered researcher).
    pub recipient: String,
    /// The purpose of use.
    pub purpose: String,
    /// The committee's decision id (R-RL-1).
    pub committee_decision: String,
    /// The decision's date.
    pub committee_date: String,
    /// Conditions of use the recipient accepted.
    pub conditions: String,
    /// Which persons and records (the cohort selection).
    pub cohort: String,
    /// The approved method to apply.
    pub method: String,
}

/// Where a release stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Asked for.
    Requested,
    /// Dataset built and anonymized; the report is attached.
    Built,
    /// A first reviewer approved it after reading the report.
    Approved,
    /// A second reviewer confirmed it.
    Confirmed,
    /// The signed, sealed package exists.
    Packaged,
    /// Handed to the egress link.
    Sent,
    /// Refused by a reviewer.
    Rejected,
    /// Withdrawn by the requester.
    Cancelled,
}

/// What happens to a release.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// The vault built the dataset and ran the method; the report's SHA-256.
    Build {
        /// SHA-256 of the anonymization report.
        report: String,
    },
    /// A reviewer approves after reading the report.
    Approve {
        /// Who.
        by: String,
    },
    /// A second reviewer confirms.
    Confirm {
        /// Who.
        by: String,
    },
    /// A reviewer accepts the cumulative-release findings, with the reason.
    Override {
        /// Who.
        by: String,
        /// Why the findings are acceptable.
        reason: String,
    },
    /// A reviewer refuses it.
    Reject {
        /// Who.
        by: String,
        /// Why.
        reason: String,
    },
    /// The requester withdraws it.
    Cancel {
        /// Who.
        by: String,
    },
    /// The package was built; its SHA-256.
    Package {
        /// SHA-256 of the package.
        package: String,
    },
    /// The package was put into the egress link's outbox.
    Send,
    /// Persons of the build opted out (register number): nothing built before may leave.
    OptedOut {
        /// The opt-out's register number.
        register: u64,
    },
    /// The vault built the dataset again under the same approved method (after an opt-out);
    /// approvals given to the earlier build no longer count.
    Rebuild {
        /// Who asked for the rebuild.
        by: String,
        /// SHA-256 of the new report.
        report: String,
    },
}

/// One release.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    /// Release id.
    pub id: String,
    /// Who asked.
    pub requester: String,
    /// What was asked for.
    pub request: Request,
    /// Where it stands.
    pub state: State,
    /// SHA-256 of the report, once built.
    pub report: Option<String>,
    /// The first reviewer.
    pub approved_by: Option<String>,
    /// The second reviewer.
    pub confirmed_by: Option<String>,
    /// SHA-256 of the package, once built.
    pub package: Option<String>,
    /// Cumulative-release findings against earlier releases, set when built.
    #[serde(default)]
    pub findings: Vec<Finding>,
    /// The reviewer who accepted the findings, and why.
    #[serde(default)]
    pub findings_override: Option<(String, String)>,
    /// Every step taken: (time, state reached, who — empty for the vault itself).
    pub history: Vec<(String, State, String)>,
    /// Opt-outs (register numbers) that removed persons of the current build since it was
    /// made; approval and confirmation are refused while any stands (R-IN-6).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stale: Vec<u64>,
}

impl Release {
    /// A new request by `requester`; its method must be in `methods` and approved.
    pub fn request(
        id: &str,
        requester: &str,
        request: Request,
        methods: &[Method],
        at: &str,
    ) -> Result<Self, Refusal> {
        for (name, value) in [
            ("recipient", &request.recipient),
            ("purpose", &request.purpose),
            ("committee decision", &request.committee_decision),
            ("committee date", &request.committee_date),
            ("conditions of use", &request.conditions),
            ("cohort", &request.cohort),
            ("method", &request.method),
        ] {
            if value.trim().is_empty() {
                return Err(Refusal::Missing(name.into()));
            }
        }
        match methods.iter().find(|m| m.id == request.method) {
            Some(m) if m.state == MethodState::Approved => {}
            Some(m) => {
                return Err(Refusal::Method(format!(
                    "method {} is {:?}, not approved",
                    m.name, m.state
                )))
            }
            None => return Err(Refusal::Method(format!("no method {}", request.method))),
        }
        Ok(Self {
            id: id.to_owned(),
            requester: requester.to_owned(),
            request,
            state: State::Requested,
            report: None,
            approved_by: None,
            confirmed_by: None,
            package: None,
            findings: Vec::new(),
            findings_override: None,
            history: vec![(at.to_owned(), State::Requested, requester.to_owned())],
            stale: Vec::new(),
        })
    }

    /// Applies `event` at time `at`, or refuses it and changes nothing.
    pub fn apply(&mut self, event: Event, at: &str) -> Result<(), Refusal> {
        let wrong = |s: State, what: &str| {
            Refusal::WrongState(format!("cannot {what} a release that is {s:?}"))
        };
        let (next, who) = match (&event, self.state) {
            (Event::Build { report }, State::Requested) => {
                if report.is_empty() {
                    return Err(Refusal::Missing("report".into()));
                }
                self.report = Some(report.clone());
                (State::Built, String::new())
            }
            (Event::Override { by, reason }, State::Built) => {
                if *by == self.requester {
                    return Err(Refusal::SamePerson(
                        "the requester cannot accept the findings on their own release".into(),
                    ));
                }
                if reason.trim().is_empty() {
                    return Err(Refusal::Missing("reason".into()));
                }
                if self.findings.is_empty() {
                    return Err(Refusal::WrongState(
                        "this release has no cumulative-release findings to override".into(),
                    ));
                }
                self.findings_override = Some((by.clone(), reason.clone()));
                (State::Built, by.clone())
            }
            (Event::Approve { .. } | Event::Confirm { .. }, State::Built | State::Approved)
                if !self.stale.is_empty() =>
            {
                return Err(self.stale_refusal());
            }
            (Event::Approve { by }, State::Built) => {
                if *by == self.requester {
                    return Err(Refusal::SamePerson(
                        "the requester cannot approve their own release".into(),
                    ));
                }
                if !self.findings.is_empty() && self.findings_override.is_none() {
                    return Err(Refusal::Findings(format!(
                        "release {} has {} cumulative-release finding(s) against earlier \
                         releases ({}); a reviewer must first record why they are acceptable \
                         (release override --reason), or reject it",
                        self.id,
                        self.findings.len(),
                        self.findings
                            .iter()
                            .map(|f| f.detail.as_str())
                            .collect::<Vec<_>>()
                            .join("; ")
                    )));
                }
                self.approved_by = Some(by.clone());
                (State::Approved, by.clone())
            }
            (Event::Confirm { by }, State::Approved) => {
                if *by == self.requester {
                    return Err(Refusal::SamePerson(
                        "the requester cannot confirm their own release".into(),
                    ));
                }
                if Some(by) == self.approved_by.as_ref() {
                    return Err(Refusal::SamePerson(
                        "the confirmation must come from a second reviewer".into(),
                    ));
                }
                self.confirmed_by = Some(by.clone());
                (State::Confirmed, by.clone())
            }
            (Event::Reject { by, reason }, State::Requested | State::Built | State::Approved) => {
                if *by == self.requester {
                    return Err(Refusal::SamePerson(
                        "the requester cancels, a reviewer rejects".into(),
                    ));
                }
                if reason.trim().is_empty() {
                    return Err(Refusal::Missing("reason".into()));
                }
                (State::Rejected, by.clone())
            }
            (Event::Cancel { by }, State::Requested | State::Built | State::Approved) => {
                if *by != self.requester {
                    return Err(Refusal::SamePerson(
                        "only the requester cancels a release".into(),
                    ));
                }
                (State::Cancelled, by.clone())
            }
            (Event::Package { package }, State::Confirmed) => {
                self.package = Some(package.clone());
                (State::Packaged, String::new())
            }
            (Event::Send, State::Packaged) => (State::Sent, String::new()),
            (Event::OptedOut { register }, State::Requested | State::Built | State::Approved) => {
                if !self.stale.contains(register) {
                    self.stale.push(*register);
                }
                // The state stays: the history shows the opt-out, and approval or
                // confirmation waits for a rebuild.
                (self.state, String::new())
            }
            (Event::Rebuild { by, report }, State::Built | State::Approved) => {
                if report.is_empty() {
                    return Err(Refusal::Missing("report".into()));
                }
                self.report = Some(report.clone());
                self.approved_by = None;
                self.findings_override = None;
                self.stale.clear();
                (State::Built, by.clone())
            }
            (e, s) => {
                let what = match e {
                    Event::Build { .. } => "build",
                    Event::Approve { .. } => "approve",
                    Event::Override { .. } => "override the findings of",
                    Event::Confirm { .. } => "confirm",
                    Event::Reject { .. } => "reject",
                    Event::Cancel { .. } => "cancel",
                    Event::Package { .. } => "package",
                    Event::Send => "send",
                    Event::OptedOut { .. } => "mark as touched by an opt-out",
                    Event::Rebuild { .. } => "rebuild",
                };
                return Err(wrong(s, what));
            }
        };
        self.state = next;
        self.history.push((at.to_owned(), next, who));
        Ok(())
    }

    fn stale_refusal(&self) -> Refusal {
        let list: Vec<String> = self.stale.iter().map(|n| format!("#{n}")).collect();
        Refusal::Stale(format!(
            "release {} was built before opt-out {} removed persons in it; nothing built \
             before may leave: rebuild it (release rebuild --id {}) and have the new build \
             approved and confirmed",
            self.id,
            list.join(", "),
            self.id
        ))
    }
}
