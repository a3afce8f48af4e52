//! Audit entries and the hash chain that links them (pure: no files, clock or randomness).
//!
//! An entry's hash is SHA-256 over a domain tag and the entry's canonical JSON without its
//! `hash` and `sig` fields, `prev` included; so an entry commits to its whole past. The
//! canonical JSON is exactly the line the log holds, which lets the verifier refuse a line
//! that was reformatted as well as one whose values changed.

use std::collections::BTreeMap;

use envelope::{SigningKey, VerifyingKey};
use ring::digest;
use serde::{Deserialize, Serialize};

/// Domain tag of entry hashes (a hash of anything else can never pass as an entry's).
const ENTRY_DOMAIN: &[u8] = b"enclave-audit-entry-v1\0";
/// Domain tag of checkpoint signatures.
const CHECKPOINT_DOMAIN: &[u8] = b"enclave-audit-checkpoint-v1\0";
/// The action of a checkpoint entry.
pub const CHECKPOINT: &str = "audit.checkpoint";
/// The `prev` of the first entry of a log.
pub const GENESIS: [u8; 32] = [0; 32];

/// Whether the system clock was synchronised when the entry was stamped (R-OP-3: trusted time).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClockStatus {
    /// The time service reports the clock synchronised.
    Synced,
    /// The time service runs and reports it not synchronised.
    Unsynced,
    /// No time service could be asked.
    Unknown,
}

/// What the caller says happened: everything of an entry except its place in the chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// When, RFC 3339 in UTC, from the system clock.
    pub time: String,
    /// The clock's synchronisation status at that time.
    pub clock: ClockStatus,
    /// Who: a user id, or `vault` for the service itself.
    pub actor: String,
    /// The session the action ran in (empty outside a session).
    pub session: String,
    /// What: a dotted action name (`login`, `user.create`, `optout.delete` …).
    pub action: String,
    /// Which data: a user id, a person's pseudonym, a release id … (empty when none).
    pub target: String,
    /// How many records the action touched.
    pub records: u64,
    /// `ok`, `refused` or `failed`.
    pub outcome: String,
    /// Anything else worth keeping, as text (sorted by key, so the JSON is canonical).
    pub detail: BTreeMap<String, String>,
}

impl Record {
    /// A record with no session, target, records or detail.
    pub fn new(time: &str, clock: ClockStatus, actor: &str, action: &str, outcome: &str) -> Self {
        Self {
            time: time.to_owned(),
            clock,
            actor: actor.to_owned(),
            session: String::new(),
            action: action.to_owned(),
            target: String::new(),
            records: 0,
            outcome: outcome.to_owned(),
            detail: BTreeMap::new(),
        }
    }

    /// Sets the target.
    pub fn target(mut self, target: &str) -> Self {
        target.clone_into(&mut self.target);
        self
    }

    /// Sets the session.
    pub fn session(mut self, session: &str) -> Self {
        session.clone_into(&mut self.session);
        self
    }

    /// Sets the number of records touched.
    pub fn records(mut self, records: u64) -> Self {
        self.records = records;
        self
    }

    /// Adds a detail.
    pub fn detail(mut self, key: &str, value: impl Into<String>) -> Self {
        self.detail.insert(key.to_owned(), value.into());
        self
    }
}

/// One line of the log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// Position in the chain, from 1, no gaps.
    pub seq: u64,
    /// See [`Record::time`].
    pub time: String,
    /// See [`Record::clock`].
    pub clock: ClockStatus,
    /// See [`Record::actor`].
    pub actor: String,
    /// See [`Record::session`].
    pub session: String,
    /// See [`Record::action`].
    pub action: String,
    /// See [`Record::target`].
    pub target: String,
    /// See [`Record::records`].
    pub records: u64,
    /// See [`Record::outcome`].
    pub outcome: String,
    /// See [`Record::detail`].
    pub detail: BTreeMap<String, String>,
    /// Hex SHA-256 of the previous entry (64 zeros for the first).
    pub prev: String,
    /// Hex SHA-256 of this entry (see the module comment).
    pub hash: String,
    /// Checkpoints only: hex Ed25519 signature over the checkpoint's seq and hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sig: Option<String>,
}

/// The hashed part of an entry: the same fields in the same order, without `hash` and `sig`.
#[derive(Serialize)]
struct Hashed<'a> {
    seq: u64,
    time: &'a str,
    clock: ClockStatus,
    actor: &'a str,
    session: &'a str,
    action: &'a str,
    target: &'a str,
    records: u64,
    outcome: &'a str,
    detail: &'a BTreeMap<String, String>,
    prev: &'a str,
}

impl Entry {
    /// The SHA-256 this entry's fields give (compare with [`Entry::hash`]).
    pub fn computed_hash(&self) -> [u8; 32] {
        let hashed = Hashed {
            seq: self.seq,
            time: &self.time,
            clock: self.clock,
            actor: &self.actor,
            session: &self.session,
            action: &self.action,
            target: &self.target,
            records: self.records,
            outcome: &self.outcome,
            detail: &self.detail,
            prev: &self.prev,
        };
        // Serializing strings, integers and a string map cannot fail.
        let json = serde_json::to_vec(&hashed).unwrap_or_default();
        let mut ctx = digest::Context::new(&digest::SHA256);
        ctx.update(ENTRY_DOMAIN);
        ctx.update(&json);
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.finish().as_ref());
        out
    }

    /// The stored hash as bytes, if it is 64 hex digits.
    pub fn stored_hash(&self) -> Option<[u8; 32]> {
        decode32(&self.hash)
    }

    /// The stored `prev` as bytes, if it is 64 hex digits.
    pub fn stored_prev(&self) -> Option<[u8; 32]> {
        decode32(&self.prev)
    }

    /// Whether this entry is a checkpoint.
    pub fn is_checkpoint(&self) -> bool {
        self.action == CHECKPOINT
    }

    /// The line this entry is stored as (without the newline).
    pub fn to_line(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Checks a checkpoint's signature over its seq and stored hash with the key its detail
    /// names, which must be one of `keys`.
    pub fn check_signature(&self, keys: &[VerifyingKey]) -> std::result::Result<(), String> {
        let Some(sig) = self.sig.as_deref() else {
            return Err("checkpoint without a signature".into());
        };
        let sig = hex::decode(sig).map_err(|_| "signature is not hex".to_string())?;
        let Some(hash) = self.stored_hash() else {
            return Err("hash is not 64 hex digits".into());
        };
        let key_id = self.detail.get("key").map(String::as_str).unwrap_or("");
        let Some(key) = keys.iter().find(|k| k.key_id().to_string() == key_id) else {
            return Err(format!(
                "signed with key {key_id:?}, which is not a trusted audit key"
            ));
        };
        key.verify(&checkpoint_message(self.seq, &hash), &sig)
            .map_err(|_| "signature does not verify".to_string())
    }
}

fn checkpoint_message(seq: u64, hash: &[u8; 32]) -> Vec<u8> {
    let mut m = Vec::with_capacity(CHECKPOINT_DOMAIN.len() + 40);
    m.extend_from_slice(CHECKPOINT_DOMAIN);
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(hash);
    m
}

fn decode32(text: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(text, &mut out).ok()?;
    Some(out)
}

/// The writing end of a chain: the next seq and the hash to link to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chain {
    next_seq: u64,
    head: [u8; 32],
    since_checkpoint: u64,
}

impl Default for Chain {
    fn default() -> Self {
        Self::genesis()
    }
}

impl Chain {
    /// A new, empty log.
    pub fn genesis() -> Self {
        Self {
            next_seq: 1,
            head: GENESIS,
            since_checkpoint: 0,
        }
    }

    /// Continues after `last` (the log's last entry), `since_checkpoint` entries after the
    /// last checkpoint.
    pub fn resume(last: &Entry, since_checkpoint: u64) -> std::result::Result<Self, String> {
        let head = last
            .stored_hash()
            .ok_or_else(|| format!("entry {}: hash is not 64 hex digits", last.seq))?;
        Ok(Self {
            next_seq: last.seq + 1,
            head,
            since_checkpoint,
        })
    }

    /// The seq the next entry gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The hash of the last entry (zeros for an empty log).
    pub fn head(&self) -> [u8; 32] {
        self.head
    }

    /// Entries appended since the last checkpoint.
    pub fn since_checkpoint(&self) -> u64 {
        self.since_checkpoint
    }

    /// Makes the next entry from `record`.
    pub fn append(&mut self, record: Record) -> Entry {
        let entry = self.link(record, None);
        self.since_checkpoint += 1;
        entry
    }

    /// Makes a checkpoint entry signed with `key`: it commits, through the chain, to every
    /// entry before it.
    pub fn checkpoint(&mut self, time: &str, clock: ClockStatus, key: &SigningKey) -> Entry {
        let record = Record::new(time, clock, "vault", CHECKPOINT, "ok")
            .detail("key", key.public().key_id().to_string())
            .detail("covers", self.since_checkpoint.to_string());
        let entry = self.link(record, Some(key));
        self.since_checkpoint = 0;
        entry
    }

    fn link(&mut self, r: Record, key: Option<&SigningKey>) -> Entry {
        let mut entry = Entry {
            seq: self.next_seq,
            time: r.time,
            clock: r.clock,
            actor: r.actor,
            session: r.session,
            action: r.action,
            target: r.target,
            records: r.records,
            outcome: r.outcome,
            detail: r.detail,
            prev: hex::encode(self.head),
            hash: String::new(),
            sig: None,
        };
        let hash = entry.computed_hash();
        entry.hash = hex::encode(hash);
        if let Some(key) = key {
            entry.sig = Some(hex::encode(key.sign(&checkpoint_message(entry.seq, &hash))));
        }
        self.next_seq += 1;
        self.head = hash;
        entry
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SigningKey {
        SigningKey::from_seed("vault-audit", &[7; 32]).expect("seed")
    }

    #[test]
    fn entries_link_and_checkpoints_verify() {
        let mut chain = Chain::genesis();
        let a = chain.append(Record::new(
            "2026-11-27T00:00:00Z",
            ClockStatus::Synced,
            "alice",
            "login",
            "ok",
        ));
        let b = chain.append(Record::new(
            "2026-11-27T00:00:01Z",
            ClockStatus::Synced,
            "alice",
            "logout",
            "ok",
        ));
        assert_eq!(a.prev, hex::encode(GENESIS));
        assert_eq!(b.prev, a.hash);
        assert_eq!(a.stored_hash(), Some(a.computed_hash()));
        let cp = chain.checkpoint("2026-11-27T00:00:02Z", ClockStatus::Synced, &key());
        assert_eq!(cp.seq, 3);
        assert_eq!(cp.detail.get("covers").map(String::as_str), Some("2"));
        assert_eq!(cp.check_signature(&[key().public().clone()]), Ok(()));
        let other = SigningKey::from_seed("other", &[8; 32]).expect("seed");
        assert!(cp.check_signature(&[other.public().clone()]).is_err());
        let mut forged = cp.clone();
        forged.seq = 4;
        assert!(forged.check_signature(&[key().public().clone()]).is_err());
        assert_eq!(chain.since_checkpoint(), 0);
    }

    #[test]
    fn the_line_round_trips_and_any_field_changes_the_hash() {
        let mut chain = Chain::genesis();
        let e = chain.append(
            Record::new(
                "2026-11-27T00:00:00Z",
                ClockStatus::Unknown,
                "bob",
                "user.create",
                "ok",
            )
            .target("carol")
            .records(3)
            .detail("role", "reviewer"),
        );
        let back: Entry = serde_json::from_str(&e.to_line()).expect("parse");
        assert_eq!(back, e);
        let h = e.computed_hash();
        let mut changed = e.clone();
        changed.records = 4;
        assert_ne!(changed.computed_hash(), h);
        let mut changed = e.clone();
        changed.detail.insert("role".into(), "administrator".into());
        assert_ne!(changed.computed_hash(), h);
        let mut changed = e;
        changed.prev = hex::encode([1u8; 32]);
        assert_ne!(changed.computed_hash(), h);
    }
}
