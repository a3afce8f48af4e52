//! Roles and the commands each may run (least privilege), and the separation-of-duties rule
//! (no one approves what they asked for). The table is the one place these are decided; the
//! vault's operator socket asks it before every command and audits every refusal.

use serde::{Deserialize, Serialize};

/// An operator's role. A person has exactly one; someone who needs two has two accounts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Manages accounts, institutions, software inventory, media disposal and backups.
    Administrator,
    /// Runs the data side: opt-outs, release requests, reports.
    Operator,
    /// Approves and confirms releases and anonymization methods.
    Reviewer,
    /// Reads and verifies the audit log and every register; changes nothing.
    Auditor,
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 4] = [
        Role::Administrator,
        Role::Operator,
        Role::Reviewer,
        Role::Auditor,
    ];

    /// The role's name as typed.
    pub fn name(self) -> &'static str {
        match self {
            Role::Administrator => "administrator",
            Role::Operator => "operator",
            Role::Reviewer => "reviewer",
            Role::Auditor => "auditor",
        }
    }

    /// Parses a role name.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.name() == text)
    }
}

macro_rules! commands {
    ($( $variant:ident = $name:literal : [$($role:ident),*] ; $doc:literal )*) => {
        /// A command of the operator interface.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum Command {
            $( #[doc = $doc] $variant, )*
        }

        impl Command {
            /// Every command.
            pub const ALL: &'static [Command] = &[$(Command::$variant),*];

            /// The command's name (also its audit action).
            pub fn name(self) -> &'static str {
                match self { $(Command::$variant => $name,)* }
            }

            /// The roles that may run it; an empty list means every role.
            pub fn roles(self) -> &'static [Role] {
                match self { $(Command::$variant => &[$(Role::$role),*],)* }
            }

            /// Parses a command name.
            pub fn parse(text: &str) -> Option<Self> {
                match text { $($name => Some(Command::$variant),)* _ => None }
            }
        }
    };
}

commands! {
    WhoAmI = "whoami": []; "Show the session's user, role and times."
    Logout = "logout": []; "End the session."
    Password = "password": []; "Change one's own password."
    UserList = "user.list": [Administrator, Auditor]; "List accounts."
    UserAdd = "user.add": [Administrator]; "Create an account (prints its first password and TOTP secret once)."
    UserDisable = "user.disable": [Administrator]; "Disable an account."
    UserUnlock = "user.unlock": [Administrator]; "Unlock an account locked by failed logins."
    UserReset = "user.reset": [Administrator]; "Give an account a new password and TOTP secret."
    InstitutionAdd = "institution.add": [Administrator]; "Register an institution (R-IN-3)."
    InstitutionList = "institution.list": [Administrator, Operator, Auditor]; "List institutions."
    OptOutAdd = "optout.add": [Operator]; "Record an opt-out and delete the person's records (R-IN-6)."
    OptOutList = "optout.list": [Operator, Auditor]; "List opt-outs and deletion records."
    DisposalAdd = "disposal.add": [Administrator]; "Record the disposal of a storage medium (R-OP-6)."
    DisposalList = "disposal.list": [Administrator, Auditor]; "List disposal records."
    InventoryScan = "inventory.scan": [Administrator]; "Record the installed software with versions and hashes (R-OP-7)."
    InventoryList = "inventory.list": [Administrator, Auditor]; "List the software inventory."
    AuditShow = "audit.show": [Auditor]; "Show audit entries."
    AuditVerify = "audit.verify": [Auditor]; "Verify the audit chain and its checkpoints."
    AuditAnchor = "audit.anchor": [Auditor]; "Sign a checkpoint now and print it, to be kept on write-once media (`vault audit verify --anchor`)."
    AuditArchive = "audit.archive": [Auditor]; "Move the audit log up to now into an archive file."
    Report = "report": [Operator, Reviewer, Auditor]; "Store and usage figures."
    Backup = "backup": [Administrator]; "Write a verified backup of the whole encrypted state."
    ReleaseRequest = "release.request": [Operator]; "Ask for a release; the vault builds the dataset and runs the method (R-RL-1)."
    ReleaseApprove = "release.approve": [Reviewer]; "First reviewer's approval of a release, after reading its report (R-RL-2)."
    ReleaseConfirm = "release.confirm": [Reviewer]; "Second reviewer's confirmation; the package is built and sent to egress (R-RL-2)."
    ReleaseRebuild = "release.rebuild": [Operator]; "Build a release again from the store as it is now, under its approved method (after an opt-out); approvals start over."
    ReleaseOverride = "release.override": [Reviewer]; "Accept a release's cumulative-release findings, with the reason (kept in the audit log)."
    ReleaseReject = "release.reject": [Reviewer]; "Refuse a release, with the reason."
    ReleaseCancel = "release.cancel": [Operator]; "Withdraw one's own release request."
    ReleaseList = "release.list": [Operator, Reviewer, Auditor]; "List releases and where they stand."
    ReleaseShow = "release.show": [Operator, Reviewer, Auditor]; "Show a release with its anonymization report."
    RecipientAdd = "recipient.add": [Administrator]; "Register a recipient of releases and its encryption key."
    RecipientList = "recipient.list": [Administrator, Operator, Reviewer, Auditor]; "List recipients."
    LedgerList = "ledger.list": [Operator, Reviewer, Auditor]; "The ledger of releases provided (R-RL-3)."
    LedgerOnwardAdd = "ledger.onward.add": [Operator]; "Record an onward recipient a recipient reported, with the permission (R-RL-3)."
    LedgerOnwardList = "ledger.onward.list": [Operator, Reviewer, Auditor]; "List onward recipients (R-RL-3)."
    MethodPropose = "method.propose": [Administrator]; "Propose an anonymization method (R-AN-3)."
    MethodApprove = "method.approve": [Reviewer]; "Approve an anonymization method (R-AN-3)."
    MethodList = "method.list": [Administrator, Operator, Reviewer, Auditor]; "List anonymization methods."
}

impl Command {
    /// Whether `role` may run this command.
    pub fn permits(self, role: Role) -> bool {
        let roles = self.roles();
        roles.is_empty() || roles.contains(&role)
    }
}

/// Separation of duties: `approver` may approve what `requester` asked for, and a second
/// confirmation must come from yet another person.
pub fn may_approve(requester: &str, approver: &str, earlier_approvers: &[&str]) -> bool {
    approver != requester && !earlier_approvers.contains(&approver)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for &c in Command::ALL {
            assert_eq!(Command::parse(c.name()), Some(c));
            assert!(seen.insert(c.name()));
        }
        for r in Role::ALL {
            assert_eq!(Role::parse(r.name()), Some(r));
        }
    }

    #[test]
    fn no_one_approves_their_own_request_or_confirms_their_own_approval() {
        assert!(!may_approve("alice", "alice", &[]));
        assert!(may_approve("alice", "bob", &[]));
        assert!(!may_approve("alice", "bob", &["bob"]));
        assert!(may_approve("alice", "carol", &["bob"]));
    }

    #[test]
    fn releases_and_their_approvals_are_in_different_hands() {
        // Whoever may ask for a release or propose a method may not approve either.
        for r in Role::ALL {
            let asks = Command::ReleaseRequest.permits(r) || Command::MethodPropose.permits(r);
            let approves = Command::ReleaseApprove.permits(r) || Command::MethodApprove.permits(r);
            assert!(!(asks && approves), "{r:?}");
        }
        // The auditor changes nothing but the audit log's own archive and anchors.
        for &c in Command::ALL {
            let writes = !matches!(
                c,
                Command::WhoAmI
                    | Command::Logout
                    | Command::Password
                    | Command::AuditArchive
                    | Command::AuditAnchor
            ) && !c.name().ends_with(".list")
                && !c.name().ends_with(".show")
                && !c.name().ends_with(".verify")
                && c != Command::Report;
            if writes {
                assert!(!c.permits(Role::Auditor), "{c:?}");
            }
        }
    }
}
