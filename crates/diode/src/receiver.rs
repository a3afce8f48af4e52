//! The receiving end of a one-way link, as a state machine.
//!
//! Method families:
//! - `handle_datagram(now, bytes)` for every datagram received, in any order;
//! - `handle_timeout(now)` when `poll_timeout` says so;
//! - `poll_event` → what the driver must do or record: start a `.part` file, write bytes at
//!   an offset, rename on completion, discard on failure, log a gap report.
//!
//! Bytes are released strictly in order (block by block, after each block decodes). Once all
//! of them are out, the driver is asked for the SHA-256 of exactly the bytes it was handed
//! (`Digest`, answered with `handle_digest`: hashing a whole object is the receiver's largest
//! CPU item, so it belongs beside the disk writes, not in the socket loop); an object is
//! reported complete only when every block arrived, its length matches, and the keyed hash
//! from the sender's end datagram matches that digest. Memory is bounded by
//! `max_bytes_in_flight` (across all objects) and `max_objects_in_flight`, whatever the
//! object sizes.
//!
//! Nothing is ever sent back (R-GW-4, R-GW-5): what the receiver cannot recover it lists in
//! its gap report, computed from the sender's manifests, for an operator to re-send.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use ring::aead::LessSafeKey;

use crate::error::ObjectFailure;
use crate::ranges::RangeSet;
use crate::wire::{self, DataHeader, LinkKey, Manifest, Packet};

/// Limits of a receiver.
#[derive(Clone, Debug)]
pub struct ReceiverConfig {
    /// An incomplete object with no datagram for this long has failed.
    pub idle_timeout: Duration,
    /// Larger objects are refused.
    pub max_object_size: u64,
    /// Bytes of partially received, decoding and decoded-but-unwritten blocks, all objects
    /// together, each block counted at its full size (`data_shards × shard_size`: 175 KiB by
    /// default, 1.1 MiB with jumbo frames). Bytes rather than blocks, so that the bound
    /// means the same whatever block size the sender chose.
    pub max_bytes_in_flight: u64,
    /// Objects received at once. The sender interleaves blocks of up to `interleave` objects
    /// and their end datagrams follow a group, so about twice that many are normal.
    pub max_objects_in_flight: usize,
}

impl Default for ReceiverConfig {
    fn default() -> Self {
        Self {
            idle_timeout: Duration::from_secs(3),
            max_object_size: 1 << 40,
            // 768 default blocks, 131 MiB: room for decode jobs queued behind a busy CPU (a
            // bound of 384 failed objects in CI under load), within the 256 MB receiver goal.
            max_bytes_in_flight: 768 * 128 * 1400,
            max_objects_in_flight: 512,
        }
    }
}

/// What the driver must do or record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReceiverEvent {
    /// Create the temporary file for object `id`.
    ObjectStarted {
        /// Object id.
        id: u64,
        /// Announced size.
        size: u64,
    },
    /// Write `data` at `offset` of object `id`'s temporary file (offsets only increase).
    Write {
        /// Object id.
        id: u64,
        /// Offset.
        offset: u64,
        /// Bytes.
        data: Vec<u8>,
    },
    /// Object `id` is complete and verified: rename its temporary file to its final name.
    ObjectComplete {
        /// Object id.
        id: u64,
        /// Name given by the sender.
        name: String,
        /// Size.
        size: u64,
        /// SHA-256 of the bytes.
        sha256: [u8; 32],
    },
    /// Object `id` cannot be delivered: delete its temporary file.
    ObjectFailed {
        /// Object id.
        id: u64,
        /// Why.
        reason: ObjectFailure,
    },
    /// The ids the sender has sent but this receiver does not have (inclusive ranges).
    Gaps {
        /// Missing ids.
        missing: Vec<(u64, u64)>,
    },
    /// Run `job.run()` (off the socket loop, if you like) and pass the result to
    /// [`Receiver::handle_decoded`].
    Decode(DecodeJob),
    /// Every byte of object `id` has been handed out in `Write`s: pass the SHA-256 of exactly
    /// those bytes, in order, to [`Receiver::handle_digest`] with this `generation`.
    Digest {
        /// Object id.
        id: u64,
        /// Which reception of the object this is (an id can start again).
        generation: u64,
    },
}

/// A block with enough shards, some data shards among them missing: Reed–Solomon decoding
/// to do. Pure computation; the driver chooses the thread.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodeJob {
    object_id: u64,
    session: u64,
    block: u64,
    block_len: usize,
    shards: Shards,
}

/// The outcome of a [`DecodeJob`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodedBlock {
    object_id: u64,
    session: u64,
    block: u64,
    data: Option<Vec<u8>>,
    by_parity: bool,
}

impl DecodeJob {
    /// Reassembles the block from its shards.
    pub fn run(self) -> DecodedBlock {
        let by_parity = self.shards.parity_will_do();
        let data = self.shards.decode(self.block_len);
        DecodedBlock {
            object_id: self.object_id,
            session: self.session,
            block: self.block,
            data,
            by_parity,
        }
    }
}

/// Counters for the metrics file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReceiverStats {
    /// Datagrams handled.
    pub datagrams: u64,
    /// Dropped: tag did not verify (corrupted, injected, wrong key).
    pub bad_auth: u64,
    /// Dropped: not our format, or authenticated but inconsistent.
    pub malformed: u64,
    /// Shards not needed: for blocks already decoded (unused recovery shards, the normal
    /// case without loss) or received twice.
    pub surplus_shards: u64,
    /// Blocks decoded.
    pub blocks: u64,
    /// Blocks that needed recovery shards.
    pub blocks_recovered: u64,
    /// Of those, blocks rebuilt from the XOR parity shard alone (one data shard lost).
    pub blocks_by_parity: u64,
    /// Objects completed.
    pub objects_complete: u64,
    /// Objects failed.
    pub objects_failed: u64,
    /// Datagrams the sequence numbers say were sent but never arrived.
    pub datagrams_lost: u64,
    /// Objects being received now: neither complete nor failed yet. Zero once the link
    /// has settled, which is when the gap report is final.
    pub in_flight: u64,
}

struct Session {
    key: LessSafeKey,
    received: u64,
    max_seq: u64,
    last_used: Instant,
}

/// The shards of one block received so far. Data shards are copied straight to their place
/// in the block, so a block that lost none is already assembled: no allocation per datagram
/// and no second copy (both showed in the receiver's profile).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Shards {
    k: u16,
    r: u16,
    shard_size: u16,
    /// `k × shard_size` bytes; data shard `i` at `i × shard_size`.
    data: Vec<u8>,
    /// Which of the `k + r + 1` shards (data, Reed–Solomon recovery, XOR parity) are here.
    have: Vec<bool>,
    /// Recovery shards, only kept if they arrive.
    recovery: Vec<Option<Vec<u8>>>,
    /// The XOR parity shard, if it arrived.
    parity: Option<Vec<u8>>,
    /// Data shards here.
    data_count: usize,
    /// Reed–Solomon recovery shards here.
    recovery_count: usize,
}

/// Why a shard was not taken.
enum Refused {
    /// Its block's parameters or its length do not match the block's first shard.
    Malformed,
    /// It is already here.
    Duplicate,
}

impl Shards {
    /// `buffer`: a spare block buffer to reuse, whatever it holds: every byte of the block is
    /// overwritten by a data shard or by the decoder before the block is used.
    fn new(k: u16, r: u16, shard_size: u16, buffer: Vec<u8>) -> Self {
        let (ku, ru) = (usize::from(k), usize::from(r));
        let mut data = buffer;
        data.resize(ku * usize::from(shard_size), 0);
        Shards {
            k,
            r,
            shard_size,
            data,
            have: vec![false; ku + ru + 1],
            recovery: vec![None; ru],
            parity: None,
            data_count: 0,
            recovery_count: 0,
        }
    }

    fn insert(&mut self, h: &DataHeader, shard: &[u8]) -> Result<(), Refused> {
        if (h.k, h.r, h.shard_size) != (self.k, self.r, self.shard_size)
            || shard.len() != usize::from(self.shard_size)
        {
            return Err(Refused::Malformed);
        }
        let i = usize::from(h.shard);
        match self.have.get(i) {
            None => return Err(Refused::Malformed),
            Some(true) => return Err(Refused::Duplicate),
            Some(false) => {}
        }
        let (k, s) = (usize::from(self.k), usize::from(self.shard_size));
        if i < k {
            self.data
                .get_mut(i * s..(i + 1) * s)
                .ok_or(Refused::Malformed)?
                .copy_from_slice(shard);
            self.data_count += 1;
        } else if let Some(slot) = self.recovery.get_mut(i - k) {
            *slot = Some(shard.to_vec());
            self.recovery_count += 1;
        } else {
            // `have` has k + r + 1 entries, so this is the parity shard.
            self.parity = Some(shard.to_vec());
        }
        self.have[i] = true;
        Ok(())
    }

    fn missing_data(&self) -> usize {
        usize::from(self.k) - self.data_count
    }

    /// Whether the block can be rebuilt now: nothing lost, one data shard lost and the
    /// parity or any recovery shard here, or as many recovery shards as lost data shards
    /// (the parity shard cannot stand in for a second lost shard).
    fn enough(&self) -> bool {
        let missing = self.missing_data();
        missing <= self.recovery_count || (missing == 1 && self.parity.is_some())
    }

    fn needs_recovery(&self) -> bool {
        self.missing_data() > 0
    }

    /// Whether [`Shards::decode`] takes the parity path.
    fn parity_will_do(&self) -> bool {
        self.missing_data() == 1 && self.parity.is_some()
    }

    /// The block's first `block_len` bytes, restoring missing data shards from recovery
    /// shards; `None` if there are too few shards or the decoder refuses them.
    fn decode(mut self, block_len: usize) -> Option<Vec<u8>> {
        let (k, s) = (usize::from(self.k), usize::from(self.shard_size));
        if let (true, Some(parity)) = (self.parity_will_do(), self.parity.as_deref()) {
            let lost = self.have.iter().take(k).position(|h| !h)?;
            let (before, rest) = self.data.split_at_mut(lost * s);
            let (slot, after) = rest.split_at_mut(s);
            slot.copy_from_slice(parity);
            for shard in before.chunks_exact(s).chain(after.chunks_exact(s)) {
                crate::parity::xor_into(slot, shard);
            }
        } else if self.needs_recovery() {
            let originals = self
                .data
                .chunks_exact(s)
                .zip(&self.have)
                .enumerate()
                .filter_map(|(i, (d, have))| have.then_some((i, d)));
            let recovery = self
                .recovery
                .iter()
                .enumerate()
                .filter_map(|(i, r)| r.as_deref().map(|r| (i, r)));
            let restored =
                reed_solomon_simd::decode(k, usize::from(self.r), originals, recovery).ok()?;
            for (i, shard) in restored {
                self.data
                    .get_mut(i * s..(i + 1) * s)?
                    .copy_from_slice(shard.get(..s)?);
            }
        }
        if block_len > self.data.len() {
            return None;
        }
        self.data.truncate(block_len);
        Some(self.data)
    }
}

struct Incoming {
    session: u64,
    size: u64,
    block_bytes: Option<u32>,
    end: Option<([u8; 32], String)>,
    next_write: u64,
    ready: BTreeMap<u64, Vec<u8>>,
    partial: HashMap<u64, Shards>,
    /// Blocks handed to the driver for erasure decoding, not back yet.
    decoding: std::collections::HashSet<u64>,
    /// Tells this reception of the object from an earlier one of the same id.
    generation: u64,
    /// Every block is written and the digest has been asked for.
    digest_requested: bool,
    last_seen: Instant,
}

impl Incoming {
    fn blocks_total(&self) -> Option<u64> {
        if self.size == 0 {
            return Some(0);
        }
        self.block_bytes
            .map(|b| self.size.div_ceil(u64::from(b.max(1))))
    }
    fn block_done(&self, b: u64) -> bool {
        b < self.next_write || self.ready.contains_key(&b) || self.decoding.contains(&b)
    }
    fn blocks_in_flight(&self) -> usize {
        self.partial.len() + self.ready.len() + self.decoding.len()
    }
    fn bytes_in_flight(&self) -> u64 {
        self.blocks_in_flight() as u64 * u64::from(self.block_bytes.unwrap_or(0))
    }
}

/// Receiver state machine. See the module docs.
pub struct Receiver {
    cfg: ReceiverConfig,
    link: LinkKey,
    sessions: HashMap<u64, Session>,
    current_session: Option<u64>,
    objects: BTreeMap<u64, Incoming>,
    delivered: RangeSet,
    /// Ids that failed (or were refused as too large), with the session and the time their
    /// last datagram arrived: further datagrams of the same send are ignored — one failure,
    /// not one per datagram — until they stop for the idle timeout or an announce starts the
    /// object again.
    refused: HashMap<u64, (u64, Instant)>,
    floor: Option<u64>,
    /// Whether `floor` is final: it came from persisted state or from a manifest.
    floor_settled: bool,
    /// Generation of the next object reception (see `Incoming::generation`).
    next_generation: u64,
    manifest: Option<Manifest>,
    last_gaps: Option<Vec<(u64, u64)>>,
    events: VecDeque<ReceiverEvent>,
    stats: ReceiverStats,
    /// Block buffers the driver gave back ([`Receiver::recycle`]), reused for new blocks.
    spare: Vec<Vec<u8>>,
    /// Capacity of `spare`, in bytes.
    spare_bytes: usize,
}

const MAX_SESSIONS: usize = 8;

/// Most bytes of spare block buffers kept for reuse (outside `max_bytes_in_flight`, which
/// counts blocks in use): 93 default blocks or 14 jumbo ones.
pub const MAX_SPARE_BYTES: usize = 16 << 20;

impl Receiver {
    /// A receiver that already holds the objects in `delivered` and cares about ids from
    /// `floor` on (`None`: from the first id the sender reports sending).
    pub fn new(
        cfg: ReceiverConfig,
        link: LinkKey,
        delivered: RangeSet,
        floor: Option<u64>,
    ) -> Self {
        Self {
            cfg,
            link,
            sessions: HashMap::new(),
            current_session: None,
            objects: BTreeMap::new(),
            delivered,
            refused: HashMap::new(),
            floor_settled: floor.is_some(),
            next_generation: 0,
            floor,
            manifest: None,
            last_gaps: None,
            events: VecDeque::new(),
            stats: ReceiverStats::default(),
            spare: Vec::new(),
            spare_bytes: 0,
        }
    }

    /// Ids delivered so far (to persist).
    pub fn delivered(&self) -> &RangeSet {
        &self.delivered
    }

    /// Lowest id of interest (to persist).
    pub fn floor(&self) -> Option<u64> {
        self.floor
    }

    /// Counters.
    pub fn stats(&self) -> ReceiverStats {
        let mut s = self.stats.clone();
        s.datagrams_lost = self
            .sessions
            .values()
            .map(|x| (x.max_seq + 1).saturating_sub(x.received))
            .sum();
        s.in_flight = self.objects.len() as u64;
        s
    }

    /// Objects being received now.
    pub fn in_flight(&self) -> Vec<u64> {
        self.objects.keys().copied().collect()
    }

    /// The current gap report.
    pub fn gaps(&self) -> Vec<(u64, u64)> {
        let (Some(m), Some(floor)) = (self.manifest, self.floor) else {
            return Vec::new();
        };
        if m.sending_from == 0 || m.sending_from <= floor {
            return Vec::new();
        }
        let mut known = self.delivered.clone();
        for id in self.objects.keys() {
            known.insert(*id);
        }
        known.missing_in(floor, m.sending_from - 1)
    }

    /// Next thing for the driver to do.
    pub fn poll_event(&mut self) -> Option<ReceiverEvent> {
        self.events.pop_front()
    }

    /// When to call `handle_timeout` next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.objects
            .iter()
            .map(|(id, o)| self.deadline(*id, o))
            .min()
    }

    /// When an incomplete object counts as failed. Idle means the sender went on talking
    /// for `idle_timeout` without a datagram for this object, or its latest manifest says
    /// it has handed out every datagram of the object (`sending_from` is past it), so none
    /// is still to come. A link that is otherwise silent says nothing — the sender may be
    /// stalled on its disk with the object's end datagrams still queued — so then the
    /// object waits ten times longer.
    fn deadline(&self, id: u64, o: &Incoming) -> Instant {
        let idle = self.cfg.idle_timeout;
        let sender_went_on = self
            .sessions
            .get(&o.session)
            .is_some_and(|s| s.last_used >= o.last_seen + idle);
        let sender_is_past_it = self.current_session == Some(o.session)
            && self.manifest.is_some_and(|m| m.sending_from > id);
        if sender_went_on || sender_is_past_it {
            o.last_seen + idle
        } else {
            o.last_seen + idle * 10
        }
    }

    /// Fails objects that have been idle too long (see `deadline`).
    pub fn handle_timeout(&mut self, now: Instant) {
        let idle: Vec<u64> = self
            .objects
            .iter()
            // One that waits for its digest has all its bytes: the driver's answer decides.
            .filter(|(id, o)| !o.digest_requested && self.deadline(**id, o) <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in idle {
            let reason = self.objects.get(&id).map(|o| {
                let total = o.blocks_total().unwrap_or(1).max(1);
                ObjectFailure::Incomplete {
                    blocks_missing: total.saturating_sub(o.next_write),
                    blocks_total: total,
                }
            });
            if let Some(reason) = reason {
                self.fail(id, reason, now);
            }
        }
        let keep = self.cfg.idle_timeout * 4;
        self.refused.retain(|_, (_, at)| *at + keep > now);
        self.report_gaps();
    }

    /// Handles one received datagram.
    /// The datagram is decrypted in place (its buffer is scratch afterwards).
    pub fn handle_datagram(&mut self, now: Instant, datagram: &mut [u8]) {
        self.stats.datagrams += 1;
        let (session, seq) = match wire::peek_session(datagram) {
            Ok(x) => x,
            Err(_) => {
                self.stats.malformed += 1;
                return;
            }
        };
        let packet = {
            let key_owned;
            let key = match self.sessions.get(&session) {
                Some(s) => &s.key,
                None => {
                    key_owned = self.link.session_key(session);
                    &key_owned
                }
            };
            match wire::open(key, datagram) {
                Ok(p) => p,
                Err(crate::error::WireError::BadTag) => {
                    self.stats.bad_auth += 1;
                    return;
                }
                Err(_) => {
                    self.stats.malformed += 1;
                    return;
                }
            }
        };
        self.note_session(session, seq, now);
        match packet {
            Packet::Data(h, shard) => {
                self.on_data(now, session, h, shard);
            }
            Packet::Announce {
                object_id,
                size,
                name: _,
            } => {
                self.refused.remove(&object_id);
                if !self.delivered.contains(object_id) {
                    self.touch(now, session, object_id, size);
                }
            }
            Packet::End {
                object_id,
                size,
                keyed_hash,
                name,
            } => {
                if self.ignored(object_id, session, now) {
                    return;
                }
                if let Some(o) = self.touch(now, session, object_id, size) {
                    o.end = Some((keyed_hash, name.to_owned()));
                }
                self.check_complete(object_id);
            }
            Packet::Manifest(m) => {
                if self.current_session == Some(session) {
                    self.manifest = Some(m);
                    if !self.floor_settled {
                        // First contact: everything this sender session has queued counts,
                        // even objects of which not one datagram arrived.
                        let first = m.session_start.min(m.sending_from);
                        self.floor = Some(self.floor.map_or(first, |f| f.min(first)));
                        self.floor_settled = true;
                    }
                    self.report_gaps();
                }
            }
        }
    }

    fn note_session(&mut self, session: u64, seq: u64, now: Instant) {
        if !self.sessions.contains_key(&session) {
            if self.sessions.len() >= MAX_SESSIONS {
                if let Some(oldest) = self
                    .sessions
                    .iter()
                    .min_by_key(|(_, s)| s.last_used)
                    .map(|(k, _)| *k)
                {
                    self.sessions.remove(&oldest);
                }
            }
            self.sessions.insert(
                session,
                Session {
                    key: self.link.session_key(session),
                    received: 0,
                    max_seq: 0,
                    last_used: now,
                },
            );
        }
        if let Some(s) = self.sessions.get_mut(&session) {
            s.received += 1;
            s.max_seq = s.max_seq.max(seq);
            s.last_used = now;
        }
        // The newest session to speak is the sender's current one.
        let newer = self
            .current_session
            .and_then(|c| self.sessions.get(&c))
            .is_none_or(|c| c.last_used + self.cfg.idle_timeout < now);
        if self.current_session != Some(session) && newer {
            self.current_session = Some(session);
            self.manifest = None;
        }
    }

    fn ignored(&mut self, id: u64, session: u64, now: Instant) -> bool {
        if self.delivered.contains(id) && !self.objects.contains_key(&id) {
            return true;
        }
        let idle = self.cfg.idle_timeout;
        match self.refused.get_mut(&id) {
            Some((s, last)) if *s == session && now < *last + idle => {
                *last = now;
                true
            }
            _ => false,
        }
    }

    /// Finds or creates the state of object `id`, resetting it if the sender restarted.
    fn touch(&mut self, now: Instant, session: u64, id: u64, size: u64) -> Option<&mut Incoming> {
        if size > self.cfg.max_object_size {
            if !self.refused.contains_key(&id) {
                self.fail(
                    id,
                    ObjectFailure::TooLarge {
                        size,
                        limit: self.cfg.max_object_size,
                    },
                    now,
                );
                self.refused.insert(id, (session, now));
            }
            return None;
        }
        let restart = self
            .objects
            .get(&id)
            .is_some_and(|o| o.session != session || o.size != size);
        if restart {
            // Same id from a new sender session: it is being sent again from the start.
            self.objects.remove(&id);
            self.events.push_back(ReceiverEvent::ObjectFailed {
                id,
                reason: ObjectFailure::SessionChanged,
            });
        }
        if !self.objects.contains_key(&id) {
            // Until its floor is settled, a receiver cares about everything it sees.
            if !self.floor_settled {
                self.floor = Some(self.floor.map_or(id, |f| f.min(id)));
            }
            if self.objects.len() >= self.cfg.max_objects_in_flight {
                // Not one whose bytes are all written: it only waits for its digest.
                let oldest = self
                    .objects
                    .iter()
                    .filter(|(_, o)| !o.digest_requested)
                    .min_by_key(|(_, o)| o.last_seen)
                    .map(|(k, _)| *k);
                if let Some(oldest) = oldest {
                    self.fail(
                        oldest,
                        ObjectFailure::Incomplete {
                            blocks_missing: 1,
                            blocks_total: 1,
                        },
                        now,
                    );
                }
            }
            self.objects.insert(
                id,
                Incoming {
                    session,
                    size,
                    block_bytes: None,
                    end: None,
                    next_write: 0,
                    ready: BTreeMap::new(),
                    partial: HashMap::new(),
                    decoding: std::collections::HashSet::new(),
                    generation: self.next_generation,
                    digest_requested: false,
                    last_seen: now,
                },
            );
            self.next_generation += 1;
            self.events
                .push_back(ReceiverEvent::ObjectStarted { id, size });
        }
        let o = self.objects.get_mut(&id)?;
        o.last_seen = now;
        Some(o)
    }

    fn on_data(&mut self, now: Instant, session: u64, h: DataHeader, shard: &[u8]) {
        let id = h.object_id;
        if self.ignored(id, session, now) {
            self.stats.surplus_shards += 1;
            return;
        }
        let Some(block_len) = valid_block_len(&h) else {
            self.stats.malformed += 1;
            return;
        };
        let max_bytes = self.cfg.max_bytes_in_flight;
        if self.touch(now, session, id, h.object_size).is_none() {
            return;
        }
        let Self {
            objects,
            stats,
            events,
            spare,
            spare_bytes,
            ..
        } = self;
        let Some(o) = objects.get_mut(&id) else {
            return;
        };
        match o.block_bytes {
            None => o.block_bytes = Some(h.block_bytes),
            Some(b) if b != h.block_bytes => {
                stats.malformed += 1;
                return;
            }
            Some(_) => {}
        }
        let b = u64::from(h.block);
        if o.block_done(b) {
            stats.surplus_shards += 1;
            return;
        }
        let new_block = !o.partial.contains_key(&b);
        let partial = o.partial.entry(b).or_insert_with(|| {
            let buffer = spare.pop().unwrap_or_default();
            *spare_bytes -= buffer.capacity();
            Shards::new(h.k, h.r, h.shard_size, buffer)
        });
        match partial.insert(&h, shard) {
            Ok(()) => {}
            Err(Refused::Malformed) => {
                stats.malformed += 1;
                if new_block {
                    o.partial.remove(&b);
                }
                return;
            }
            Err(Refused::Duplicate) => {
                stats.surplus_shards += 1;
                return;
            }
        }
        if partial.enough() {
            if let Some(shards) = o.partial.remove(&b) {
                if shards.needs_recovery() {
                    // Erasure decoding costs a fraction of a millisecond: the driver runs it
                    // off the socket loop and hands the result back.
                    o.decoding.insert(b);
                    events.push_back(ReceiverEvent::Decode(DecodeJob {
                        object_id: id,
                        session,
                        block: b,
                        block_len,
                        shards,
                    }));
                } else {
                    match shards.decode(block_len) {
                        Some(data) => {
                            stats.blocks += 1;
                            o.ready.insert(b, data);
                        }
                        None => stats.malformed += 1,
                    }
                }
            }
        }
        if new_block {
            let total: u64 = self.objects.values().map(Incoming::bytes_in_flight).sum();
            if total > max_bytes {
                // Over the memory bound: give up the object holding the most blocks (usually
                // one whose missing block holds back everything after it).
                let worst = self
                    .objects
                    .iter()
                    .max_by_key(|(_, o)| o.bytes_in_flight())
                    .map(|(k, _)| *k);
                if let Some(worst) = worst {
                    self.fail(
                        worst,
                        ObjectFailure::TooManyBytesInFlight(max_bytes >> 20),
                        now,
                    );
                }
                if worst == Some(id) {
                    return;
                }
            }
        }
        self.release(id);
    }

    /// Writes out every block that is next in order, then checks for completion.
    fn release(&mut self, id: u64) {
        let Some(o) = self.objects.get_mut(&id) else {
            return;
        };
        let block_bytes = u64::from(o.block_bytes.unwrap_or(0));
        while let Some(data) = o.ready.remove(&o.next_write) {
            self.events.push_back(ReceiverEvent::Write {
                id,
                offset: o.next_write * block_bytes,
                data,
            });
            o.next_write += 1;
        }
        self.check_complete(id);
    }

    /// Takes back the buffer of a [`ReceiverEvent::Write`] once its bytes are written, to be
    /// reused for a later block: a steady stream then touches no fresh memory (on this
    /// machine kind, faulting in fresh pages was a visible part of the receiver's time).
    /// Buffers beyond [`MAX_SPARE_BYTES`] are dropped.
    pub fn recycle(&mut self, buffer: Vec<u8>) {
        if self.spare_bytes + buffer.capacity() <= MAX_SPARE_BYTES {
            self.spare_bytes += buffer.capacity();
            self.spare.push(buffer);
        }
    }

    /// Takes back a block the driver decoded (see [`ReceiverEvent::Decode`]).
    pub fn handle_decoded(&mut self, now: Instant, decoded: DecodedBlock) {
        let id = decoded.object_id;
        let Some(o) = self.objects.get_mut(&id) else {
            return;
        };
        if o.session != decoded.session || !o.decoding.remove(&decoded.block) {
            // The object was reset or failed meanwhile: the result is stale.
            return;
        }
        o.last_seen = now;
        match decoded.data {
            Some(data) => {
                self.stats.blocks += 1;
                self.stats.blocks_recovered += 1;
                self.stats.blocks_by_parity += u64::from(decoded.by_parity);
                o.ready.insert(decoded.block, data);
                self.release(id);
            }
            None => {
                self.stats.malformed += 1;
                self.fail(id, ObjectFailure::Undecodable(decoded.block), now);
            }
        }
    }

    fn check_complete(&mut self, id: u64) {
        let Some(o) = self.objects.get_mut(&id) else {
            return;
        };
        if o.end.is_none() || o.digest_requested || o.blocks_total() != Some(o.next_write) {
            return;
        }
        o.digest_requested = true;
        self.events.push_back(ReceiverEvent::Digest {
            id,
            generation: o.generation,
        });
    }

    /// Takes the SHA-256 of the bytes written for object `id` (see [`ReceiverEvent::Digest`]);
    /// completes the object if the sender's keyed hash matches, fails it otherwise. A digest
    /// for an object that has failed or started again meanwhile is ignored.
    pub fn handle_digest(&mut self, now: Instant, id: u64, generation: u64, sha256: [u8; 32]) {
        let Some(o) = self.objects.get(&id) else {
            return;
        };
        if o.generation != generation || !o.digest_requested {
            return;
        }
        let Some((expected, name)) = o.end.clone() else {
            return;
        };
        let size = o.size;
        if self.link.object_hash(id, size, &sha256, &name) != expected {
            self.fail(id, ObjectFailure::HashMismatch, now);
            self.report_gaps();
            return;
        }
        self.objects.remove(&id);
        self.delivered.insert(id);
        self.stats.objects_complete += 1;
        self.events.push_back(ReceiverEvent::ObjectComplete {
            id,
            name,
            size,
            sha256,
        });
        self.report_gaps();
    }

    fn fail(&mut self, id: u64, reason: ObjectFailure, now: Instant) {
        if let Some(o) = self.objects.remove(&id) {
            self.refused.insert(id, (o.session, now));
        }
        self.stats.objects_failed += 1;
        self.events
            .push_back(ReceiverEvent::ObjectFailed { id, reason });
    }

    fn report_gaps(&mut self) {
        let gaps = self.gaps();
        if self.manifest.is_some() && self.last_gaps.as_ref() != Some(&gaps) {
            self.last_gaps = Some(gaps.clone());
            self.events.push_back(ReceiverEvent::Gaps { missing: gaps });
        }
    }
}

/// Checks a data header's geometry; returns the block's plaintext length.
fn valid_block_len(h: &DataHeader) -> Option<usize> {
    let shard = u64::from(h.shard_size);
    let block_bytes = u64::from(h.block_bytes);
    // A short block (an object's last) may use a smaller shard than the full blocks, so the
    // shard size need not divide `block_bytes`; k, checked below, bounds the allocation.
    if shard < 2 || shard % 2 != 0 || block_bytes == 0 {
        return None;
    }
    let start = u64::from(h.block).checked_mul(block_bytes)?;
    if start >= h.object_size {
        return None;
    }
    let len = (h.object_size - start).min(block_bytes);
    let k = len.div_ceil(shard);
    if u64::from(h.k) != k
        || h.k > wire::MAX_DATA_SHARDS
        || h.r == 0
        || h.shard > h.k.saturating_add(h.r)
    {
        return None;
    }
    if !reed_solomon_simd::ReedSolomonEncoder::supports(usize::from(h.k), usize::from(h.r)) {
        return None;
    }
    usize::try_from(len).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(shard: u16, k: u16, r: u16, size: u16) -> DataHeader {
        DataHeader {
            object_id: 1,
            object_size: u64::from(k) * u64::from(size),
            block: 0,
            block_bytes: u32::from(k) * u32::from(size),
            shard,
            k,
            r,
            shard_size: size,
        }
    }

    /// Data shards land in place; lost ones come back from recovery shards; duplicates and
    /// shards of another shape are refused.
    #[test]
    fn shards_assemble_in_place_and_recover_what_was_lost() {
        let (k, r, size) = (8u16, 3u16, 64u16);
        let data: Vec<u8> = (0..usize::from(k) * usize::from(size))
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        let originals: Vec<&[u8]> = data.chunks(usize::from(size)).collect();
        let recovery =
            reed_solomon_simd::encode(usize::from(k), usize::from(r), &originals).expect("encode");

        let mut whole = Shards::new(k, r, size, Vec::new());
        for i in (0..k).rev() {
            assert!(whole
                .insert(&header(i, k, r, size), originals[usize::from(i)])
                .is_ok());
        }
        assert!(whole.enough() && !whole.needs_recovery());
        assert_eq!(
            whole.clone().decode(data.len() - 5).as_deref(),
            Some(&data[..data.len() - 5])
        );

        // A reused buffer full of another block's bytes: none of them may show through.
        let mut lossy = Shards::new(k, r, size, vec![0xee; 3 * data.len()]);
        for i in [7u16, 0, 2, 4, 6] {
            assert!(lossy
                .insert(&header(i, k, r, size), originals[usize::from(i)])
                .is_ok());
        }
        assert!(matches!(
            lossy.insert(&header(2, k, r, size), originals[2]),
            Err(Refused::Duplicate)
        ));
        assert!(matches!(
            lossy.insert(&header(3, k, r, size), &originals[3][1..]),
            Err(Refused::Malformed)
        ));
        assert!(matches!(
            lossy.insert(&header(3, k, 4, size), originals[3]),
            Err(Refused::Malformed)
        ));
        assert!(!lossy.enough());
        for j in 0..r {
            assert!(lossy
                .insert(&header(k + j, k, r, size), &recovery[usize::from(j)])
                .is_ok());
        }
        assert!(lossy.enough() && lossy.needs_recovery());
        assert_eq!(lossy.decode(data.len()), Some(data));
    }

    /// One lost data shard comes back from the parity alone; two need two Reed–Solomon
    /// shards, parity or not; nothing past the parity's index is taken.
    #[test]
    fn the_parity_restores_one_lost_shard_and_never_stands_in_for_a_second() {
        let (k, r, size) = (6u16, 2u16, 32u16);
        let data: Vec<u8> = (0..usize::from(k) * usize::from(size))
            .map(|i| (i * 13 % 241) as u8)
            .collect();
        let originals: Vec<&[u8]> = data.chunks(usize::from(size)).collect();
        let recovery =
            reed_solomon_simd::encode(usize::from(k), usize::from(r), &originals).expect("encode");
        let parity = crate::parity::xor_parity(&originals, usize::from(size));

        for lost in 0..k {
            let mut one = Shards::new(k, r, size, vec![0x5a; data.len()]);
            for i in (0..k).filter(|i| *i != lost) {
                assert!(one
                    .insert(&header(i, k, r, size), originals[usize::from(i)])
                    .is_ok());
            }
            assert!(!one.enough());
            assert!(one.insert(&header(k + r, k, r, size), &parity).is_ok());
            assert!(one.enough() && one.needs_recovery());
            assert_eq!(one.decode(data.len()).as_deref(), Some(&data[..]));
        }

        let mut two = Shards::new(k, r, size, Vec::new());
        for i in 2..k {
            assert!(two
                .insert(&header(i, k, r, size), originals[usize::from(i)])
                .is_ok());
        }
        assert!(two.insert(&header(k + r, k, r, size), &parity).is_ok());
        assert!(two.insert(&header(k, k, r, size), &recovery[0]).is_ok());
        assert!(!two.enough(), "parity and one recovery shard for two lost");
        assert!(two.insert(&header(k + 1, k, r, size), &recovery[1]).is_ok());
        assert!(two.enough());
        assert_eq!(two.decode(data.len()).as_deref(), Some(&data[..]));

        let mut past = Shards::new(k, r, size, Vec::new());
        assert!(matches!(
            past.insert(&header(k + r + 1, k, r, size), &parity),
            Err(Refused::Malformed)
        ));
        assert!(valid_block_len(&header(k + r, k, r, size)).is_some());
        assert!(valid_block_len(&header(k + r + 1, k, r, size)).is_none());
    }

    #[test]
    fn a_block_of_more_than_the_most_data_shards_is_malformed() {
        let size = 2u16;
        assert!(valid_block_len(&header(0, wire::MAX_DATA_SHARDS, 1, size)).is_some());
        assert!(valid_block_len(&header(0, wire::MAX_DATA_SHARDS + 1, 1, size)).is_none());
    }
}
