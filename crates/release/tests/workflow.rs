//! The release workflow under random events by random people (R-RL-1, R-RL-2, R-AN-3): a
//! release reaches the package only through a built report, an approval and a confirmation
//! by two different reviewers, neither the requester; refused events change nothing.

use proptest::prelude::*;
use release::cumulative::{Finding, FindingKind};
use release::{Event, Method, Refusal, Release, Request, State};

fn method(approved: bool) -> Method {
    let files = vec![("method.json".to_string(), b"{\"k\":5}".to_vec())];
    let mut m = Method::propose("checkup", &files, "admin1", "t0");
    if approved {
        m.approve("rev9", "t0").expect("approve");
    }
    m
}

fn request(method: &Method) -> Request {
    Request {
        recipient: "univ-a".into(),
        purpose: "diabetes follow-up study".into(),
        committee_decision: "C-2026-014".into(),
        committee_date: "2026-11-20".into(),
        conditions: "no re-identification, no onward transfer".into(),
        cohort: "HbA1c ≥ 6.5 in 2025".into(),
        method: method.id.clone(),
    }
}

#[test]
fn the_happy_path_and_its_history() {
    let m = method(true);
    let mut r = Release::request("R1", "op1", request(&m), std::slice::from_ref(&m), "t1")
        .expect("request");
    r.apply(
        Event::Build {
            report: "ab".into(),
        },
        "t2",
    )
    .expect("build");
    r.apply(Event::Approve { by: "rev1".into() }, "t3")
        .expect("approve");
    r.apply(Event::Confirm { by: "rev2".into() }, "t4")
        .expect("confirm");
    r.apply(
        Event::Package {
            package: "cd".into(),
        },
        "t5",
    )
    .expect("package");
    r.apply(Event::Send, "t6").expect("send");
    let states: Vec<State> = r.history.iter().map(|h| h.1).collect();
    assert_eq!(
        states,
        vec![
            State::Requested,
            State::Built,
            State::Approved,
            State::Confirmed,
            State::Packaged,
            State::Sent
        ]
    );
}

#[test]
fn only_approved_methods_and_complete_requests() {
    let proposed = method(false);
    let got = Release::request(
        "R1",
        "op1",
        request(&proposed),
        std::slice::from_ref(&proposed),
        "t1",
    );
    assert!(matches!(got, Err(Refusal::Method(_))), "{got:?}");
    let m = method(true);
    let mut req = request(&m);
    req.committee_decision = " ".into();
    assert_eq!(
        Release::request("R1", "op1", req, std::slice::from_ref(&m), "t1"),
        Err(Refusal::Missing("committee decision".into()))
    );
    let got = Release::request("R1", "op1", request(&m), &[], "t1");
    assert!(matches!(got, Err(Refusal::Method(_))));
}

#[test]
fn separation_of_duties() {
    let m = method(true);
    let mut r = Release::request("R1", "op1", request(&m), std::slice::from_ref(&m), "t1")
        .expect("request");
    assert!(
        matches!(
            r.apply(Event::Approve { by: "rev1".into() }, "t"),
            Err(Refusal::WrongState(_))
        ),
        "no approval before the report"
    );
    r.apply(
        Event::Build {
            report: "ab".into(),
        },
        "t2",
    )
    .expect("build");
    assert!(matches!(
        r.apply(Event::Approve { by: "op1".into() }, "t"),
        Err(Refusal::SamePerson(_))
    ));
    r.apply(Event::Approve { by: "rev1".into() }, "t3")
        .expect("approve");
    assert!(matches!(
        r.apply(Event::Confirm { by: "rev1".into() }, "t"),
        Err(Refusal::SamePerson(_))
    ));
    assert!(matches!(
        r.apply(Event::Confirm { by: "op1".into() }, "t"),
        Err(Refusal::SamePerson(_))
    ));
    assert!(matches!(
        r.apply(
            Event::Package {
                package: "x".into()
            },
            "t"
        ),
        Err(Refusal::WrongState(_))
    ));
    r.apply(Event::Confirm { by: "rev2".into() }, "t4")
        .expect("confirm");
}

#[test]
fn findings_block_approval_until_a_reviewer_overrides_with_a_reason() {
    let m = method(true);
    let mut r = Release::request("R2", "op1", request(&m), std::slice::from_ref(&m), "t1")
        .expect("request");
    r.apply(
        Event::Build {
            report: "ab".into(),
        },
        "t2",
    )
    .expect("build");
    r.findings.push(Finding {
        kind: FindingKind::Differencing,
        earlier: "R1".into(),
        persons: 3,
        detail: "3 person(s) of release R2 are not in release R1 (k = 5)".into(),
    });
    let refused = r.apply(Event::Approve { by: "rev1".into() }, "t3");
    assert!(
        matches!(&refused, Err(Refusal::Findings(m)) if m.contains("release R2 are not in release R1")),
        "{refused:?}"
    );
    let blank = Event::Override {
        by: "rev1".into(),
        reason: " ".into(),
    };
    assert!(matches!(r.apply(blank, "t3"), Err(Refusal::Missing(_))));
    let own = Event::Override {
        by: "op1".into(),
        reason: "mine".into(),
    };
    assert!(matches!(r.apply(own, "t3"), Err(Refusal::SamePerson(_))));
    r.apply(
        Event::Override {
            by: "rev1".into(),
            reason: "the committee accepted the opt-outs' effect".into(),
        },
        "t4",
    )
    .expect("override");
    assert_eq!(r.state, State::Built);
    r.apply(Event::Approve { by: "rev1".into() }, "t5")
        .expect("approve after the override");
}

fn event() -> impl Strategy<Value = Event> {
    let who = prop::sample::select(vec!["op1", "rev1", "rev2", "rev3"]).prop_map(str::to_owned);
    prop_oneof![
        Just(Event::Build {
            report: "ab".into()
        }),
        who.clone().prop_map(|by| Event::Approve { by }),
        who.clone().prop_map(|by| Event::Confirm { by }),
        who.clone().prop_map(|by| Event::Reject {
            by,
            reason: "no".into()
        }),
        who.clone().prop_map(|by| Event::Cancel { by }),
        who.prop_map(|by| Event::Override {
            by,
            reason: "cohort change approved by the committee".into()
        }),
        Just(Event::Package {
            package: "cd".into()
        }),
        Just(Event::Send),
        (1u64..4).prop_map(|register| Event::OptedOut { register }),
        Just(Event::Rebuild {
            by: "op2".into(),
            report: "ef".into()
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]
    #[test]
    fn no_sequence_of_events_gets_around_the_rules(
        events in prop::collection::vec(event(), 0..12),
        flagged in any::<bool>(),
    ) {
        let m = method(true);
        let mut r = Release::request("R1", "op1", request(&m), std::slice::from_ref(&m), "t0").expect("request");
        if flagged {
            r.findings.push(Finding {
                kind: FindingKind::Differencing,
                earlier: "R0".into(),
                persons: 3,
                detail: "3 persons".into(),
            });
        }
        for (i, e) in events.into_iter().enumerate() {
            let before = r.clone();
            match r.apply(e, &format!("t{}", i + 1)) {
                Ok(()) => prop_assert_eq!(r.history.len(), before.history.len() + 1),
                Err(_) => prop_assert_eq!(&r, &before, "a refused event changed the release"),
            }
            if matches!(r.state, State::Confirmed | State::Packaged | State::Sent) {
                prop_assert!(r.stale.is_empty(), "confirmed with an opt-out unapplied");
                let a = r.approved_by.clone().expect("approved");
                let c = r.confirmed_by.clone().expect("confirmed");
                prop_assert!(a != c && a != r.requester && c != r.requester);
                prop_assert!(r.report.is_some());
                let states: Vec<State> = r.history.iter().map(|h| h.1).collect();
                let at = |s: State| states.iter().position(|&x| x == s);
                prop_assert!(at(State::Built) < at(State::Approved));
                prop_assert!(at(State::Approved) < at(State::Confirmed));
            }
            if matches!(r.state, State::Approved | State::Confirmed | State::Packaged | State::Sent) && flagged {
                // A flagged release is approved only after a recorded override, by a reviewer
                // other than the requester.
                let (by, reason) = r.findings_override.clone().expect("override recorded");
                prop_assert!(by != r.requester && !reason.is_empty());
            }
            if !flagged {
                prop_assert!(r.findings_override.is_none(), "an override without findings");
            }
            if matches!(r.state, State::Rejected | State::Cancelled) {
                prop_assert!(r.package.is_none());
            }
        }
    }
}

/// Issue #31, item 1: an opt-out that touches a build stops it at approval and at
/// confirmation until it is rebuilt; the rebuild clears the earlier approval.
#[test]
fn an_opt_out_holds_a_build_until_it_is_rebuilt_and_approved_again() {
    let m = method(true);
    let mut r = Release::request("R1", "op1", request(&m), std::slice::from_ref(&m), "t1")
        .expect("request");
    r.apply(
        Event::Build {
            report: "ab".into(),
        },
        "t2",
    )
    .expect("build");
    r.apply(Event::Approve { by: "rev1".into() }, "t3")
        .expect("approve");
    r.apply(Event::OptedOut { register: 7 }, "t4")
        .expect("opted out");
    assert_eq!(
        r.state,
        State::Approved,
        "the state stays, the build is held"
    );
    let refused = r.apply(Event::Confirm { by: "rev2".into() }, "t5");
    assert!(
        matches!(&refused, Err(Refusal::Stale(m)) if m.contains("opt-out #7") && m.contains("rebuild")),
        "{refused:?}"
    );
    assert_eq!(r.confirmed_by, None);
    let blank = r.apply(
        Event::Rebuild {
            by: "op2".into(),
            report: String::new(),
        },
        "t6",
    );
    assert!(blank.is_err(), "a rebuild without a report");
    r.apply(
        Event::Rebuild {
            by: "op2".into(),
            report: "ef".into(),
        },
        "t6",
    )
    .expect("rebuild");
    assert_eq!(r.state, State::Built);
    assert_eq!(r.approved_by, None, "the old approval does not carry over");
    assert!(r.stale.is_empty());
    assert_eq!(r.report.as_deref(), Some("ef"));
    assert!(r.apply(Event::Confirm { by: "rev2".into() }, "t7").is_err());
    r.apply(Event::Approve { by: "rev1".into() }, "t7")
        .expect("approve");
    r.apply(Event::Confirm { by: "rev2".into() }, "t8")
        .expect("confirm");
    // Once confirmed, an opt-out no longer changes the workflow: the vault lists the
    // release for the operator to tell the recipient.
    assert!(r.apply(Event::OptedOut { register: 8 }, "t9").is_err());
    assert!(r
        .apply(
            Event::Rebuild {
                by: "op2".into(),
                report: "gh".into()
            },
            "t9"
        )
        .is_err());
}
