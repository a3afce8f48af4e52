//! The sending end of a one-way link, as a state machine.
//!
//! Method families, in the order a driver calls them:
//! - `enqueue` objects (id, size, name) in the order they should go;
//! - `poll_read` → the driver reads that byte range of that object and passes it to
//!   `handle_read` (or `abort_current` if the read failed);
//! - `poll_transmit(now)` → datagrams to send, paced by a token bucket, with heartbeats;
//! - `poll_event` → objects that have been sent completely;
//! - `poll_timeout` → when to call `poll_transmit` again.
//!
//! Each object is cut into blocks of up to `data_shards × shard_size` bytes. Each block gets
//! Reed–Solomon recovery shards (`overhead_percent`, at least `min_recovery`) and one XOR
//! parity shard (a single lost data shard, the commonest loss, is then cheap to restore),
//! and the shards of `interleave` consecutive blocks — across object boundaries, so small
//! objects are protected as well as large ones — are sent column by column: a burst of lost
//! datagrams costs each block only a few shards. An object's end datagrams follow the group
//! that holds its last block. Memory: at most two groups of encoded datagrams.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::error::SenderError;
use crate::wire::{DataHeader, LinkKey, Manifest, Sealer, MAX_DATA_SHARDS, MAX_NAME, MAX_SHARD};

/// Tuning of a sender.
#[derive(Clone, Debug)]
pub struct SenderConfig {
    /// Bytes per shard (even, ≤ `MAX_SHARD`): one shard per datagram.
    pub shard_size: u16,
    /// Data shards per full block.
    pub data_shards: u16,
    /// Recovery shards as a percentage of a block's data shards.
    pub overhead_percent: u16,
    /// Recovery shards per block at least (small objects get relatively more).
    pub min_recovery: u16,
    /// Blocks whose shards are interleaved.
    pub interleave: usize,
    /// Longest run of consecutive lost datagrams every group must survive on top of the
    /// scattered loss that `overhead_percent` covers. Short groups (the tail of a queue) get
    /// more recovery shards for it, full groups hardly any.
    pub burst_datagrams: u16,
    /// Pacing rate in bytes per second of datagrams; 0 = unpaced.
    pub rate_bytes_per_sec: u64,
    /// Token bucket depth in bytes.
    pub burst_bytes: u64,
    /// Interval between manifests.
    pub heartbeat: Duration,
    /// Copies of each announce and end datagram.
    pub copies: u8,
    /// After an object is sent, one more copy of its end datagram follows each of this many
    /// manifests, so a loss burst right after the object cannot take every copy.
    pub end_repeats: u8,
}

impl Default for SenderConfig {
    fn default() -> Self {
        Self {
            shard_size: 1400,
            data_shards: 128,
            overhead_percent: 10,
            min_recovery: 4,
            interleave: 16,
            burst_datagrams: 32,
            rate_bytes_per_sec: 0,
            burst_bytes: 256 * 1024,
            heartbeat: Duration::from_millis(200),
            copies: 3,
            end_repeats: 10,
        }
    }
}

impl SenderConfig {
    /// Checks the ranges the codec and the wire format need.
    pub fn validate(&self) -> Result<(), SenderError> {
        let bad = |what: &'static str| Err(SenderError::Config(what));
        if self.shard_size < 2
            || !self.shard_size.is_multiple_of(2)
            || usize::from(self.shard_size) > MAX_SHARD
        {
            return bad("shard size must be even and 2..=8900 (MAX_SHARD)");
        }
        if self.data_shards == 0 || self.data_shards > MAX_DATA_SHARDS {
            return bad("data shards must be 1..=1024");
        }
        if self.overhead_percent > 1000 {
            return bad("overhead must be at most 1000%");
        }
        if self.min_recovery == 0 {
            return bad("at least one recovery shard per block");
        }
        if self.interleave == 0 || self.interleave > 1024 {
            return bad("interleave must be 1..=1024 blocks");
        }
        if self.copies == 0 {
            return bad("at least one copy of announce and end");
        }
        Ok(())
    }

    fn block_bytes(&self) -> u64 {
        u64::from(self.data_shards) * u64::from(self.shard_size)
    }

    fn recovery_for(&self, k: u16) -> u16 {
        let r = (u32::from(k) * u32::from(self.overhead_percent)).div_ceil(100);
        u16::try_from(r).unwrap_or(u16::MAX).max(self.min_recovery)
    }

    /// Datagrams of a block of `k` data shards before burst shares: the data, the
    /// overhead's recovery shards and the parity shard.
    fn block_datagrams(&self, k: u16) -> u64 {
        u64::from(k) + u64::from(self.recovery_for(k)) + 1
    }
}

/// An object to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectMeta {
    /// Durable id from the outbox.
    pub id: u64,
    /// Size in bytes.
    pub size: u64,
    /// File name to deliver under (≤ 255 bytes).
    pub name: String,
}

/// A byte range the driver must read and hand to [`Sender::handle_read`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadRequest {
    /// Which object.
    pub object_id: u64,
    /// Offset in the object.
    pub offset: u64,
    /// Bytes to read (the object must have exactly these).
    pub len: usize,
}

/// What the sender reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SenderEvent {
    /// Every datagram of the object has been handed out by `poll_transmit`.
    ObjectSent {
        /// Which object.
        id: u64,
    },
    /// The object was dropped from sending (its read failed).
    ObjectAborted {
        /// Which object.
        id: u64,
    },
}

struct Job {
    meta: ObjectMeta,
    blocks_total: u64,
    next_block: u64,
    sha: ring::digest::Context,
}

struct Outgoing {
    datagram: Vec<u8>,
    completes: Option<u64>,
}

/// Sender state machine. See the module docs for the call order.
pub struct Sender {
    cfg: SenderConfig,
    link: LinkKey,
    sealer: Sealer,
    queue: VecDeque<ObjectMeta>,
    job: Option<Job>,
    group: Vec<GroupBlock>,
    /// Objects whose blocks are all in `group`: their end datagrams follow it.
    finished: Vec<RecentEnd>,
    out: VecDeque<Outgoing>,
    tokens: f64,
    refilled_at: Option<Instant>,
    next_heartbeat: Option<Instant>,
    next_object_id: u64,
    oldest_retained: u64,
    session_start: Option<u64>,
    events: VecDeque<SenderEvent>,
    /// End datagrams of recently finished objects, repeated after the next few manifests so
    /// that a burst of loss right after an object cannot take every copy.
    recent_ends: VecDeque<RecentEnd>,
}

struct GroupBlock {
    object_id: u64,
    object_size: u64,
    block: u64,
    data: Vec<u8>,
    /// Data shards.
    k: u16,
    /// Bytes per shard of this block (see `shard_size_for`).
    shard_size: u16,
    /// Recovery shards the datagrams below were encoded with.
    r: u16,
    /// The block's datagrams, encoded when it was read (so the CPU work is spread between
    /// sends rather than bunched at the end of a group).
    datagrams: Vec<Vec<u8>>,
}

struct RecentEnd {
    id: u64,
    size: u64,
    hash: [u8; 32],
    name: String,
    repeats_left: u8,
}

impl Sender {
    /// A sender for session `session` (random per start, chosen by the driver).
    pub fn new(cfg: SenderConfig, link: LinkKey, session: u64) -> Result<Self, SenderError> {
        cfg.validate()?;
        let sealer = Sealer::new(&link, session);
        Ok(Self {
            tokens: cfg.burst_bytes as f64,
            cfg,
            link,
            sealer,
            queue: VecDeque::new(),
            job: None,
            group: Vec::new(),
            finished: Vec::new(),
            out: VecDeque::new(),
            refilled_at: None,
            next_heartbeat: None,
            next_object_id: 0,
            oldest_retained: 0,
            session_start: None,
            events: VecDeque::new(),
            recent_ends: VecDeque::new(),
        })
    }

    /// Queues an object. Ids need not be increasing (re-sends are older ids).
    pub fn enqueue(&mut self, meta: ObjectMeta) -> Result<(), SenderError> {
        if meta.name.len() > MAX_NAME || meta.name.is_empty() {
            return Err(SenderError::BadName(meta.name));
        }
        self.next_object_id = self.next_object_id.max(meta.id.saturating_add(1));
        self.session_start.get_or_insert(meta.id);
        self.queue.push_back(meta);
        Ok(())
    }

    /// Tells the sender the outbox's id state, for manifests: the next id it will assign and
    /// the oldest id it still retains.
    pub fn set_outbox_state(&mut self, next_object_id: u64, oldest_retained: u64) {
        self.next_object_id = self.next_object_id.max(next_object_id);
        self.oldest_retained = oldest_retained;
    }

    /// Objects queued or in flight.
    pub fn pending(&self) -> usize {
        self.queue.len() + usize::from(self.job.is_some())
    }

    /// Whether nothing remains to send (queue, current object and datagrams all empty).
    pub fn is_idle(&self) -> bool {
        self.queue.is_empty()
            && self.job.is_none()
            && self.group.is_empty()
            && self.finished.is_empty()
            && self.out.is_empty()
    }

    /// Idle, and every end datagram has also been repeated as configured: a driver that
    /// stops now loses nothing it could still have done for the receiver.
    pub fn is_quiescent(&self) -> bool {
        self.is_idle() && self.recent_ends.is_empty()
    }

    /// The next read the driver should do, if the datagram queue needs refilling.
    pub fn poll_read(&mut self) -> Option<ReadRequest> {
        if self.out.len() as u64 > self.full_group_datagrams() {
            return None;
        }
        while self.job.is_none() {
            if self.queue.is_empty() {
                // Nothing more to add: send what the open group holds.
                if !self.group.is_empty() || !self.finished.is_empty() {
                    self.close_group();
                }
                return None;
            }
            self.start_next();
        }
        self.poll_read_peek()
    }

    fn start_next(&mut self) {
        let Some(meta) = self.queue.pop_front() else {
            return;
        };
        for _ in 0..self.cfg.copies {
            let d = self.sealer.announce(meta.id, meta.size, &meta.name);
            self.push(d, None);
        }
        let blocks_total = meta.size.div_ceil(self.cfg.block_bytes());
        self.job = Some(Job {
            meta,
            blocks_total,
            next_block: 0,
            sha: ring::digest::Context::new(&ring::digest::SHA256),
        });
        self.finish_job_if_read();
    }

    /// Hands over the bytes of the last [`ReadRequest`].
    pub fn handle_read(
        &mut self,
        object_id: u64,
        offset: u64,
        data: &[u8],
    ) -> Result<(), SenderError> {
        let expected = self.poll_read_peek();
        if expected
            != Some(ReadRequest {
                object_id,
                offset,
                len: data.len(),
            })
        {
            return Err(SenderError::UnexpectedRead { object_id, offset });
        }
        let k = self.data_shards(data.len());
        let shard_size = self.shard_size_for(data.len(), k);
        let r = self.recovery_in_group(k, self.full_group_datagrams());
        let job = self
            .job
            .as_mut()
            .ok_or(SenderError::UnexpectedRead { object_id, offset })?;
        job.sha.update(data);
        let mut gb = GroupBlock {
            object_id,
            object_size: job.meta.size,
            block: job.next_block,
            data: data.to_vec(),
            k,
            shard_size,
            r,
            datagrams: Vec::new(),
        };
        job.next_block += 1;
        self.encode_block(&mut gb, r);
        self.group.push(gb);
        self.finish_job_if_read();
        if self.group.len() >= self.cfg.interleave {
            self.close_group();
        }
        Ok(())
    }

    fn poll_read_peek(&self) -> Option<ReadRequest> {
        let job = self.job.as_ref()?;
        (job.next_block < job.blocks_total).then(|| {
            let offset = job.next_block * self.cfg.block_bytes();
            let len = (job.meta.size - offset).min(self.cfg.block_bytes());
            ReadRequest {
                object_id: job.meta.id,
                offset,
                len: usize::try_from(len).unwrap_or(usize::MAX),
            }
        })
    }

    /// Drops the current object (its read failed); it is reported as aborted and the
    /// receiver will time it out and list it as a gap.
    pub fn abort_current(&mut self) {
        if let Some(job) = self.job.take() {
            self.group.retain(|b| b.object_id != job.meta.id);
            self.events
                .push_back(SenderEvent::ObjectAborted { id: job.meta.id });
        }
    }

    /// Data shards of a block of `len` bytes.
    fn data_shards(&self, len: usize) -> u16 {
        // A block holds at most data_shards (≤ 1024) shards.
        u16::try_from(len.div_ceil(usize::from(self.cfg.shard_size))).unwrap_or(u16::MAX)
    }

    /// Shard size of a block of `len` bytes cut into `k` shards: the configured size for a
    /// full block; for a shorter one (an object's last block, or a small object's only one)
    /// the smallest even size that still holds it in `k` shards. Padding every such block to
    /// full shards cost up to a whole shard per object on the wire — at `--mtu 9000` 8.9 KB,
    /// on top of the recovery shards, which are as large — for nothing.
    fn shard_size_for(&self, len: usize, k: u16) -> u16 {
        let full = self.cfg.shard_size;
        let fitted = len
            .div_ceil(usize::from(k.max(1)))
            .max(2)
            .next_multiple_of(2);
        u16::try_from(fitted).map_or(full, |f| f.min(full))
    }

    /// Recovery shards for a block of `k` data shards in a group of `group_datagrams`
    /// datagrams (before the burst share): the overhead share, plus enough that a burst of
    /// `burst_datagrams` spread over the group (see the ordering in `close_group`) costs no
    /// block more than its extra shards.
    fn recovery_in_group(&self, k: u16, group_datagrams: u64) -> u16 {
        let r0 = self.cfg.recovery_for(k);
        let len = u64::from(k) + u64::from(r0);
        let burst = u64::from(self.cfg.burst_datagrams);
        let extra = (burst * len).div_ceil(group_datagrams.max(1)) + u64::from(burst > 0);
        u16::try_from(u64::from(r0) + extra).unwrap_or(u16::MAX)
    }

    /// Datagrams of a full group of full blocks, before burst shares: what a block read
    /// before its group is complete is encoded for.
    fn full_group_datagrams(&self) -> u64 {
        self.cfg.interleave as u64 * self.cfg.block_datagrams(self.cfg.data_shards)
    }

    /// Reed–Solomon encodes one block with `r` recovery shards, plus the XOR parity shard,
    /// into its datagrams.
    fn encode_block(&self, gb: &mut GroupBlock, r: u16) {
        let shard_size = usize::from(gb.shard_size);
        // validate() bounds data_shards × shard_size far below u32::MAX.
        let block_bytes = u32::try_from(self.cfg.block_bytes()).unwrap_or(u32::MAX);
        let k = gb.k;
        let last_len = gb.data.len() - (usize::from(k).saturating_sub(1)) * shard_size;
        let mut padded_last = gb.data[gb.data.len() - last_len..].to_vec();
        padded_last.resize(shard_size, 0);
        let originals: Vec<&[u8]> = gb
            .data
            .chunks(shard_size)
            .take(usize::from(k).saturating_sub(1))
            .chain(std::iter::once(&padded_last[..]))
            .collect();
        // validate() keeps k and r inside what the codec supports; should it ever refuse,
        // the block goes without recovery shards rather than not at all.
        let recovery = reed_solomon_simd::encode(usize::from(k), usize::from(r), &originals)
            .unwrap_or_default();
        let parity =
            (!recovery.is_empty()).then(|| crate::parity::xor_parity(&originals, shard_size));
        let block = u32::try_from(gb.block).unwrap_or(u32::MAX);
        let sealer = &self.sealer;
        let (k_all, r_all) = (originals.len(), recovery.len());
        gb.datagrams = originals
            .iter()
            .copied()
            .enumerate()
            // The parity goes out right after the data shards: the receiver rebuilds a block
            // as soon as it can, and it should be able to before any Reed–Solomon shard
            // makes the (costlier) decode possible.
            .chain(parity.as_deref().map(|p| (k_all + r_all, p)))
            .chain(
                recovery
                    .iter()
                    .enumerate()
                    .map(|(j, shard)| (k_all + j, shard.as_slice())),
            )
            .map(|(i, shard)| {
                let h = DataHeader {
                    object_id: gb.object_id,
                    object_size: gb.object_size,
                    block,
                    block_bytes,
                    shard: u16::try_from(i).unwrap_or(u16::MAX),
                    k,
                    r: u16::try_from(recovery.len()).unwrap_or(r),
                    shard_size: gb.shard_size,
                };
                sealer.data(&h, shard)
            })
            .collect();
        gb.r = u16::try_from(recovery.len()).unwrap_or(r);
    }

    /// Closes the open group: re-encodes any block whose recovery share differs from the
    /// one it was encoded for (short groups at the tail of the queue, groups of small
    /// objects), queues all shards spread evenly over the group, then the end datagrams of
    /// the objects it finished.
    fn close_group(&mut self) {
        let mut group = std::mem::take(&mut self.group);
        let total: u64 = group.iter().map(|gb| self.cfg.block_datagrams(gb.k)).sum();
        for gb in &mut group {
            let r = self.recovery_in_group(gb.k, total);
            if r != gb.r {
                self.encode_block(gb, r);
            }
        }
        let mut ordered: Vec<(u64, u64, Vec<u8>)> = Vec::new();
        for gb in group {
            let n = gb.datagrams.len() as u64;
            for (i, d) in gb.datagrams.into_iter().enumerate() {
                // Position of this shard within its block, as a fraction scaled to 2^32:
                // sorting by it spreads every block's shards evenly over the whole group, so
                // a burst takes from each block in proportion to its size.
                let position = ((2 * i as u64 + 1) << 31) / n;
                ordered.push((position, ordered.len() as u64, d));
            }
        }
        ordered.sort_by_key(|(position, order, _)| (*position, *order));
        for (_, _, d) in ordered {
            self.push(d, None);
        }
        for end in std::mem::take(&mut self.finished) {
            for copy in 0..self.cfg.copies {
                let d = self.sealer.end(end.id, end.size, &end.hash, &end.name);
                let last = copy + 1 == self.cfg.copies;
                self.push(d, last.then_some(end.id));
            }
            // Enough for every object finished in `end_repeats` heartbeats even when objects
            // are small (thousands a second): evicting one early would cost it its repeats.
            const REMEMBERED: usize = 16_384;
            if self.recent_ends.len() >= REMEMBERED {
                self.recent_ends.pop_front();
            }
            self.recent_ends.push_back(end);
        }
    }

    /// Once every block of the current object is in the group, computes its keyed hash; its
    /// end datagrams go out after the group.
    fn finish_job_if_read(&mut self) {
        if self
            .job
            .as_ref()
            .is_none_or(|j| j.next_block != j.blocks_total)
        {
            return;
        }
        let Some(job) = self.job.take() else { return };
        let mut sha = [0u8; 32];
        sha.copy_from_slice(job.sha.finish().as_ref());
        let hash = self
            .link
            .object_hash(job.meta.id, job.meta.size, &sha, &job.meta.name);
        self.finished.push(RecentEnd {
            id: job.meta.id,
            size: job.meta.size,
            hash,
            name: job.meta.name,
            repeats_left: self.cfg.end_repeats,
        });
    }

    fn push(&mut self, datagram: Vec<u8>, completes: Option<u64>) {
        self.out.push_back(Outgoing {
            datagram,
            completes,
        });
    }

    fn manifest(&self) -> Manifest {
        let sending_from = self
            .job
            .iter()
            .map(|j| j.meta.id)
            .chain(self.queue.iter().map(|m| m.id))
            .chain(self.group.iter().map(|b| b.object_id))
            .chain(self.finished.iter().map(|e| e.id))
            .chain(self.out.iter().filter_map(|o| o.completes))
            .min()
            .unwrap_or(self.next_object_id);
        Manifest {
            next_object_id: self.next_object_id,
            sending_from,
            oldest_retained: self.oldest_retained,
            session_start: self.session_start.unwrap_or(self.next_object_id),
        }
    }

    fn refill(&mut self, now: Instant) {
        if self.cfg.rate_bytes_per_sec == 0 {
            return;
        }
        if let Some(then) = self.refilled_at {
            let dt = now.saturating_duration_since(then).as_secs_f64();
            self.tokens = (self.tokens + dt * self.cfg.rate_bytes_per_sec as f64)
                .min(self.cfg.burst_bytes as f64);
        }
        self.refilled_at = Some(now);
    }

    /// The next datagram to send now, if pacing allows.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Vec<u8>> {
        self.refill(now);
        if self.next_heartbeat.is_none_or(|t| t <= now) {
            self.next_heartbeat = Some(now + self.cfg.heartbeat);
            let m = self.manifest();
            let d = self.sealer.seal(self.sealer.manifest(&m));
            self.tokens -= d.len() as f64;
            self.repeat_recent_ends();
            return Some(d);
        }
        let len = (self.out.front()?.datagram.len() + crate::wire::TAG_LEN) as f64;
        if self.cfg.rate_bytes_per_sec != 0 && self.tokens < len {
            return None;
        }
        let o = self.out.pop_front()?;
        self.tokens -= len;
        if let Some(id) = o.completes {
            self.events.push_back(SenderEvent::ObjectSent { id });
        }
        Some(self.sealer.seal(o.datagram))
    }

    /// Queues one more copy of the end datagram of each object whose data has all been
    /// handed out, right after the manifest.
    fn repeat_recent_ends(&mut self) {
        let in_queue: Vec<u64> = self.out.iter().filter_map(|o| o.completes).collect();
        let mut repeats = Vec::new();
        for e in self.recent_ends.iter_mut() {
            if e.repeats_left == 0 || in_queue.contains(&e.id) {
                continue;
            }
            e.repeats_left -= 1;
            repeats.push((e.id, e.size, e.hash, e.name.clone()));
        }
        self.recent_ends.retain(|e| e.repeats_left > 0);
        for (id, size, hash, name) in repeats.into_iter().rev() {
            let d = self.sealer.end(id, size, &hash, &name);
            self.out.push_front(Outgoing {
                datagram: d,
                completes: None,
            });
        }
    }

    /// When `poll_transmit` will next have something to send.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let heartbeat = self.next_heartbeat;
        let data = match (self.out.front(), self.refilled_at) {
            (Some(o), Some(at)) if self.cfg.rate_bytes_per_sec != 0 => {
                let short =
                    ((o.datagram.len() + crate::wire::TAG_LEN) as f64 - self.tokens).max(0.0);
                Some(at + Duration::from_secs_f64(short / self.cfg.rate_bytes_per_sec as f64))
            }
            (Some(_), _) => self.refilled_at,
            (None, _) => None,
        };
        match (heartbeat, data) {
            (Some(h), Some(d)) => Some(h.min(d)),
            (h, d) => h.or(d),
        }
    }

    /// Reports of sent and aborted objects.
    pub fn poll_event(&mut self) -> Option<SenderEvent> {
        self.events.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sender(shard_size: u16) -> Sender {
        let cfg = SenderConfig {
            shard_size,
            ..SenderConfig::default()
        };
        Sender::new(cfg, LinkKey::new([7; 32]), 1).expect("sender")
    }

    #[test]
    fn short_blocks_get_the_smallest_even_shard_that_holds_them_in_as_many_shards() {
        let s = sender(8900);
        let full = 128 * 8900;
        assert_eq!(s.shard_size_for(full, s.data_shards(full)), 8900);
        assert_eq!(s.shard_size_for(1, s.data_shards(1)), 2);
        assert_eq!(s.shard_size_for(1001, s.data_shards(1001)), 1002);
        assert_eq!(s.data_shards(8901), 2);
        assert_eq!(s.shard_size_for(8901, 2), 4452);
        assert_eq!(s.shard_size_for(8900 * 3 - 1, 3), 8900);
        for len in [
            1usize,
            2,
            3,
            999,
            8899,
            8900,
            8901,
            17_800,
            100_001,
            full - 1,
        ] {
            let k = s.data_shards(len);
            let size = usize::from(s.shard_size_for(len, k));
            assert!(size.is_multiple_of(2) && size <= 8900, "{len}");
            assert!(size * usize::from(k) >= len, "{len} fits");
            assert_eq!(
                len.div_ceil(size),
                usize::from(k),
                "{len}: same shard count"
            );
        }
    }

    /// A small object's datagrams are as small as its bytes: no shard padded to the MTU.
    #[test]
    fn a_small_object_goes_out_in_datagrams_of_its_own_size() {
        let mut s = sender(8900);
        s.enqueue(ObjectMeta {
            id: 1,
            size: 1000,
            name: "small".into(),
        })
        .expect("enqueue");
        let req = s.poll_read().expect("read");
        assert_eq!(req.len, 1000);
        s.handle_read(1, 0, &[0x42; 1000]).expect("read");
        assert_eq!(
            s.poll_read(),
            None,
            "nothing more to read: the group closes"
        );
        // Any instant will do: the test only drains what is queued (clippy keeps the clock
        // out of the core; a test may read it once as its origin).
        #[allow(clippy::disallowed_methods)]
        let now = Instant::now();
        let mut data = 0;
        while let Some(d) = s.poll_transmit(now) {
            if d[5] == crate::wire::Kind::Data as u8 {
                data += 1;
                assert_eq!(d.len(), crate::wire::DATA_OVERHEAD + 1000);
            }
        }
        // One data shard, its recovery shards and the parity.
        assert!(data > 1 + usize::from(SenderConfig::default().min_recovery));
    }
}
