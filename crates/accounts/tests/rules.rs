//! Every account rule of issue #8, each tried so that it can fail (R-OP-1, R-OP-2): password
//! length, classes, the user id, reuse, close variants; lockout and its growing delay; TOTP
//! within and outside the skew window, and a replayed code; session expiry.

use accounts::lockout::Failure;
use accounts::password::skeleton;
use accounts::{
    Expired, Lockout, LockoutPolicy, PasswordPolicy, Refused, Role, Session, SessionPolicy,
    StoredPassword, Totp, TotpError, Violation,
};
use proptest::prelude::*;
use ring::rand::SystemRandom;

/// Real rules with a cheap hash, so the test runs in seconds (the cost parameters are read
/// back from each stored hash, so verification does not depend on them).
fn policy() -> PasswordPolicy {
    PasswordPolicy {
        memory_kib: 64,
        passes: 1,
        ..PasswordPolicy::default()
    }
}

fn accept(user: &str, pw: &str, prev: &[StoredPassword]) -> Result<StoredPassword, Vec<Violation>> {
    policy()
        .accept(user, pw, prev, &SystemRandom::new())
        .expect("hash")
}

#[test]
fn a_good_password_is_accepted_and_verifies() {
    let stored = accept("tanaka", "Kuma-no-Pooh42", &[]).expect("accepted");
    assert!(
        stored.hash.starts_with("$argon2id$v=19$"),
        "{}",
        stored.hash
    );
    assert!(stored.verify("Kuma-no-Pooh42"));
    assert!(!stored.verify("kuma-no-pooh42"));
    assert!(!stored.hash.contains("Kuma"));
}

#[test]
fn the_default_policy_is_the_documented_one() {
    let p = PasswordPolicy::default();
    assert_eq!((p.min_len, p.min_classes, p.history), (10, 3, 5));
    assert!(p.memory_kib >= 19 * 1024 && p.passes >= 2);
    let stored = p
        .accept("sato", "Hokkaido#Snow7", &[], &SystemRandom::new())
        .expect("hash")
        .expect("accepted");
    assert!(
        stored.hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
        "{}",
        stored.hash
    );
}

#[test]
fn too_short_is_refused() {
    assert_eq!(
        accept("tanaka", "Ab1!Ab1!x", &[]),
        Err(vec![Violation::TooShort { min: 10 }])
    );
    assert!(
        accept("tanaka", "Ab1!Ab1!xy", &[]).is_ok(),
        "10 characters is enough"
    );
    // Characters, not bytes: 9 kanji and a digit and a letter are 11.
    assert!(accept("tanaka", "東京都千代田区丸の内A1", &[]).is_ok());
}

#[test]
fn too_few_classes_are_refused() {
    assert_eq!(
        accept("tanaka", "abcdefghijkl", &[]),
        Err(vec![Violation::TooFewClasses { have: 1, need: 3 }])
    );
    assert_eq!(
        accept("tanaka", "abcdefGHIJKL", &[]),
        Err(vec![Violation::TooFewClasses { have: 2, need: 3 }])
    );
    assert!(accept("tanaka", "abcdefGHIJK1", &[]).is_ok());
    assert!(accept("tanaka", "abcdefghij-1", &[]).is_ok());
}

#[test]
fn the_user_id_in_the_password_is_refused() {
    assert_eq!(
        accept("Tanaka01", "Tanaka01", &[])
            .expect_err("refused")
            .last(),
        Some(&Violation::ContainsUserId)
    );
    assert_eq!(
        accept("tanaka", "My-TANAKA-99", &[]),
        Err(vec![Violation::ContainsUserId])
    );
    assert_eq!(
        accept("tanaka", "T@n@k@-2026-x", &[]),
        Err(vec![Violation::ContainsUserId])
    );
    assert!(accept("tanaka", "Suzuki-2026-x", &[]).is_ok());
}

#[test]
fn the_last_five_passwords_may_not_be_reused_but_the_sixth_may() {
    let pws = [
        "Alpha-River-11",
        "Bravo-Stone-22",
        "Charlie#Moon33",
        "Delta!Cloud44",
        "Echo$Forest55",
        "Foxtrot%Lake66",
    ];
    let mut history: Vec<StoredPassword> = Vec::new();
    for pw in pws {
        let stored = accept("tanaka", pw, &history).expect("new password");
        history.insert(0, stored);
    }
    for pw in &pws[1..] {
        assert_eq!(
            accept("tanaka", pw, &history),
            Err(vec![Violation::Reused { history: 5 }]),
            "{pw}"
        );
    }
    assert!(
        accept("tanaka", pws[0], &history).is_ok(),
        "the sixth-newest is out of the history"
    );
}

#[test]
fn close_variants_of_recent_passwords_are_refused() {
    let history = vec![accept("tanaka", "Summer2025!go", &[]).expect("first")];
    for variant in [
        "Summer2026!go",
        "summer2025!GO",
        "5ummer2025!go",
        "Summer2025?go!",
    ] {
        let got = accept("tanaka", variant, &history);
        assert_eq!(
            got,
            Err(vec![Violation::CloseVariant { history: 5 }]),
            "{variant} ({})",
            skeleton(variant)
        );
    }
    assert!(accept("tanaka", "Winter2025!go", &history).is_ok());
}

#[test]
fn all_violations_are_reported_at_once() {
    let got = accept("abc", "abc", &[]).expect_err("refused");
    assert_eq!(
        got,
        vec![
            Violation::TooShort { min: 10 },
            Violation::TooFewClasses { have: 1, need: 3 },
            Violation::ContainsUserId
        ]
    );
}

#[test]
fn lockout_delay_doubles_and_the_fifth_failure_locks() {
    let policy = LockoutPolicy::default();
    let mut l = Lockout::default();
    let mut now = 1_000;
    let mut waits = Vec::new();
    for _ in 0..4 {
        assert_eq!(l.check(now), Ok(()));
        let Failure {
            wait, locked_now, ..
        } = l.fail(now, &policy);
        assert!(!locked_now);
        waits.push(wait);
        assert_eq!(
            l.check(now + wait - 1),
            Err(Refused::Wait(1)),
            "one second early"
        );
        now += wait;
    }
    assert_eq!(waits, vec![1, 2, 4, 8]);
    let fifth = l.fail(now, &policy);
    assert!(fifth.locked_now, "the fifth failure locks");
    assert_eq!(
        l.check(now + 1_000_000),
        Err(Refused::Locked),
        "locked until unlocked"
    );
    assert!(
        !l.fail(now, &policy).locked_now,
        "the lock alert is raised once"
    );
    l.unlock();
    assert_eq!(l.check(now), Ok(()));
    // A success starts the count again.
    l.fail(now, &policy);
    l.fail(now + 1, &policy);
    l.succeed();
    assert_eq!(l.failures, 0);
    assert_eq!(l.check(now + 1), Ok(()));
}

#[test]
fn the_delay_is_capped() {
    let policy = LockoutPolicy {
        max_failures: 100,
        base_delay: 1,
        max_delay: 300,
    };
    let mut l = Lockout::default();
    let waits: Vec<u64> = (0..12).map(|_| l.fail(0, &policy).wait).collect();
    assert_eq!(waits[9..], [300, 300, 300]);
}

fn totp() -> Totp {
    Totp::new(b"operator-secret-0001")
}

#[test]
fn totp_accepts_one_step_of_skew_either_side_and_no_more() {
    let t = totp();
    let now = 1_795_790_100; // mid-step
    let c = t.counter(now);
    let code = |k: u64| format!("{:06}", t.code(k));
    assert_eq!(t.verify(&code(c), now, None), Ok(c));
    assert_eq!(
        t.verify(&code(c - 1), now, None),
        Ok(c - 1),
        "authenticator 30 s behind"
    );
    assert_eq!(
        t.verify(&code(c + 1), now, None),
        Ok(c + 1),
        "authenticator 30 s ahead"
    );
    for k in [c - 3, c - 2, c + 2, c + 3] {
        if [c - 1, c, c + 1].iter().all(|&w| t.code(w) != t.code(k)) {
            assert_eq!(
                t.verify(&code(k), now, None),
                Err(TotpError::Wrong),
                "step {k}"
            );
        }
    }
    assert_eq!(
        t.verify("12345", now, None),
        Err(TotpError::Wrong),
        "too short"
    );
    assert_eq!(t.verify("12a456", now, None), Err(TotpError::Wrong));
    assert_eq!(
        t.verify(&format!(" {} ", code(c)), now, None),
        Ok(c),
        "spaces trimmed"
    );
}

#[test]
fn a_used_totp_code_cannot_be_replayed() {
    let t = totp();
    let now = 1_795_790_100;
    let c = t.counter(now);
    let code = format!("{:06}", t.code(c));
    let used = t.verify(&code, now, None).expect("first use");
    assert_eq!(
        t.verify(&code, now + 5, Some(used)),
        Err(TotpError::Replayed)
    );
    // Nor an older code that is still inside the window.
    let older = format!("{:06}", t.code(c - 1));
    assert_eq!(t.verify(&older, now, Some(used)), Err(TotpError::Replayed));
    // The next step's code is fine.
    let next = format!("{:06}", t.code(c + 1));
    assert_eq!(t.verify(&next, now + 30, Some(used)), Ok(c + 1));
}

#[test]
fn the_enrolment_uri_carries_the_secret_in_base32() {
    let t = Totp::new(b"12345678901234567890");
    assert_eq!(
        t.uri("Enclave vault", "tanaka"),
        "otpauth://totp/Enclave%20vault:tanaka?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=Enclave%20vault&algorithm=SHA1&digits=6&period=30"
    );
    assert!(!format!("{t:?}").contains("1234"), "Debug hides the secret");
}

fn session(break_glass: bool) -> Session {
    Session {
        id: "s1".into(),
        user: "tanaka".into(),
        role: Role::Operator,
        break_glass,
        started: 10_000,
        last_seen: 10_000,
        records: 0,
    }
}

#[test]
fn sessions_expire_when_idle_and_at_their_maximum_length() {
    let p = SessionPolicy::default();
    let mut s = session(false);
    assert_eq!(s.touch(10_000 + 899, &p), Ok(()));
    assert_eq!(
        s.touch(10_899 + 900, &p),
        Err(Expired::Idle),
        "15 minutes idle"
    );
    let mut s = session(false);
    let mut now = 10_000;
    while now + 600 < 10_000 + 8 * 3600 {
        now += 600;
        assert_eq!(s.touch(now, &p), Ok(()));
    }
    assert_eq!(
        s.touch(10_000 + 8 * 3600, &p),
        Err(Expired::Absolute),
        "8 hours at most"
    );
    let mut s = session(true);
    for k in 1..6 {
        assert_eq!(s.touch(10_000 + k * 600, &p), Ok(()));
    }
    assert_eq!(
        s.touch(10_000 + 3600, &p),
        Err(Expired::Absolute),
        "break-glass: 1 hour"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// Whatever a password is, what `check_shape` says matches the rules written out again.
    #[test]
    fn shape_rules_match_their_definition(pw in "[a-zA-Z0-9!#-]{0,14}", user in "[a-z]{2,6}") {
        let got = policy().check_shape(&user, &pw);
        let classes = [
            pw.chars().any(|c| c.is_ascii_lowercase()),
            pw.chars().any(|c| c.is_ascii_uppercase()),
            pw.chars().any(|c| c.is_ascii_digit()),
            pw.chars().any(|c| !c.is_ascii_alphanumeric()),
        ].iter().filter(|&&b| b).count();
        prop_assert_eq!(got.contains(&Violation::TooShort { min: 10 }), pw.len() < 10);
        prop_assert_eq!(got.contains(&Violation::TooFewClasses { have: classes, need: 3 }), classes < 3);
        if pw.to_lowercase().contains(&user) {
            prop_assert!(got.contains(&Violation::ContainsUserId));
        }
    }
}
