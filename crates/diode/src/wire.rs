//! Datagram wire format of the one-way link, and its authentication.
//!
//! Every datagram: a 24-byte header, a body, and a 16-byte tag.
//!
//! | field | bytes | notes |
//! |---|---|---|
//! | magic | 4 | `JDIO` |
//! | version | 1 | 2 (1 had no parity shard) |
//! | kind | 1 | 1 data, 2 announce, 3 end, 4 manifest |
//! | reserved | 2 | zero |
//! | session id | 8 | random per sender start |
//! | sequence | 8 | per session, from 0, never repeats |
//! | body | n | by kind, below |
//! | tag | 16 | AES-256-GCM: the body is encrypted, the header is associated data |
//!
//! Bodies (integers big-endian):
//! - **data** (32 + shard): object id 8, object size 8, block 4, block bytes 4, shard index 2,
//!   data shards *k* 2, recovery shards *r* 2, shard size 2, then the shard. Shard index
//!   `0..k` is data, `k..k+r` Reed–Solomon recovery, `k+r` the XOR of the data shards.
//! - **announce**: object id 8, object size 8, name length 2, name.
//! - **end**: object id 8, object size 8, keyed object hash 32, name length 2, name.
//! - **manifest**: next object id 8, sending from 8, oldest retained 8, session start 8.
//!
//! The key is derived per session from the link key (HKDF-SHA256, salt = session id), and the
//! nonce is the sequence number, so nonces never repeat under one key even across sender
//! restarts. A datagram whose tag does not verify is dropped and counted, never parsed.
//! Encrypting the body (rather than only authenticating it) hides object names and sizes on
//! the link, and costs less: ring's AES-GCM encrypts at about 4.7 GB/s here but authenticates
//! associated data alone at about 2 GB/s.

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use ring::{hkdf, hmac};

use crate::error::WireError;

/// First four bytes of every datagram.
pub const MAGIC: [u8; 4] = *b"JDIO";
/// Protocol version.
pub const VERSION: u8 = 2;
/// Header length.
pub const HEADER_LEN: usize = 24;
/// Tag length.
pub const TAG_LEN: usize = 16;
/// Data body header length (before the shard bytes).
pub const DATA_HEADER_LEN: usize = 32;
/// IPv4 and UDP headers, which the link MTU must also carry.
pub const IP_UDP_OVERHEAD: usize = 28;
/// Bytes of a data datagram that are not shard.
pub const DATA_OVERHEAD: usize = HEADER_LEN + DATA_HEADER_LEN + TAG_LEN;
/// Largest link MTU a sender accepts: 9000-byte jumbo frames.
pub const MAX_MTU: usize = 9000;
/// Largest datagram we send or accept: `MAX_MTU` minus IPv4 and UDP headers. What a sender
/// actually uses follows from its link's MTU ([`shard_size_for_mtu`]).
pub const MAX_DATAGRAM: usize = MAX_MTU - IP_UDP_OVERHEAD;
/// Largest shard that fits a datagram.
pub const MAX_SHARD: usize = MAX_DATAGRAM - DATA_OVERHEAD;
/// Most data shards in one block: bounds a block at `MAX_DATA_SHARDS × MAX_SHARD` (8.7 MiB),
/// which a receiver allocates when a block's first shard arrives.
pub const MAX_DATA_SHARDS: u16 = 1024;
/// Smallest link MTU a sender accepts (the IPv4 minimum every host must take).
pub const MIN_MTU: usize = 576;

/// The largest even shard whose data datagram fits one IPv4 packet of `mtu` bytes: 1400 for
/// Ethernet's 1500, 8900 for 9000-byte jumbo frames. `None` outside `MIN_MTU..=MAX_MTU`.
pub fn shard_size_for_mtu(mtu: usize) -> Option<u16> {
    if !(MIN_MTU..=MAX_MTU).contains(&mtu) {
        return None;
    }
    u16::try_from((mtu - IP_UDP_OVERHEAD - DATA_OVERHEAD) & !1).ok()
}
/// Longest object name.
pub const MAX_NAME: usize = 255;

const PACKET_KEY_INFO: &[u8] = b"jp-med-enclave/diode/v1/packet-key";
const OBJECT_KEY_INFO: &[u8] = b"jp-med-enclave/diode/v1/object-hash";

/// The secret shared by the two ends of one link (32 bytes, from `diode keygen`).
pub struct LinkKey {
    master: [u8; 32],
    object: hmac::Key,
}

impl LinkKey {
    /// Wraps raw key bytes.
    pub fn new(master: [u8; 32]) -> Self {
        let object = hkdf::Salt::new(hkdf::HKDF_SHA256, b"")
            .extract(&master)
            .expand(&[OBJECT_KEY_INFO], hmac::HMAC_SHA256)
            .map(hmac::Key::from)
            .expect("HKDF-SHA256 expands 32 bytes (limit 8160)");
        Self { master, object }
    }

    /// The per-session packet key.
    pub(crate) fn session_key(&self, session: u64) -> LessSafeKey {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, &session.to_be_bytes()).extract(&self.master);
        let key = prk
            .expand(&[PACKET_KEY_INFO], &AES_256_GCM)
            .map(UnboundKey::from)
            .expect("HKDF-SHA256 expands 32 bytes (limit 8160)");
        LessSafeKey::new(key)
    }

    /// Keyed hash that proves an object complete: HMAC-SHA256 over its id, size, SHA-256
    /// and name.
    pub fn object_hash(&self, id: u64, size: u64, sha256: &[u8; 32], name: &str) -> [u8; 32] {
        let mut ctx = hmac::Context::with_key(&self.object);
        ctx.update(&id.to_be_bytes());
        ctx.update(&size.to_be_bytes());
        ctx.update(sha256);
        ctx.update(name.as_bytes());
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.sign().as_ref());
        out
    }
}

impl Drop for LinkKey {
    fn drop(&mut self) {
        // Best effort without a zeroize dependency in the core: overwrite the master copy.
        self.master = [0u8; 32];
        std::hint::black_box(&self.master);
    }
}

fn nonce(seq: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[..8].copy_from_slice(&seq.to_be_bytes());
    Nonce::assume_unique_for_key(n)
}

/// Datagram kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A data or recovery shard of one block.
    Data = 1,
    /// An object is about to be sent.
    Announce = 2,
    /// An object has been sent; carries its keyed hash.
    End = 3,
    /// Heartbeat: what the sender has sent, so a receiver can find gaps.
    Manifest = 4,
}

/// Fields of a data datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataHeader {
    /// Object id.
    pub object_id: u64,
    /// Object size in bytes.
    pub object_size: u64,
    /// Block index within the object.
    pub block: u32,
    /// Bytes per full block (`k_max × shard_size`): block *b* starts at `b × block_bytes`.
    pub block_bytes: u32,
    /// Shard index: `0..k` data, `k..k+r` Reed–Solomon recovery, `k+r` XOR parity.
    pub shard: u16,
    /// Data shards in this block.
    pub k: u16,
    /// Recovery shards in this block.
    pub r: u16,
    /// Bytes per shard.
    pub shard_size: u16,
}

/// Heartbeat contents.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Manifest {
    /// One past the highest object id the sender has assigned.
    pub next_object_id: u64,
    /// Lowest object id the sender is still sending or has queued; every id below it has
    /// been sent completely at least once.
    pub sending_from: u64,
    /// Lowest object id still in the sender's outbox (older ones cannot be re-sent).
    pub oldest_retained: u64,
    /// Lowest object id queued when this sender session started: a receiver meeting the
    /// sender for the first time cares about everything from here.
    pub session_start: u64,
}

/// A parsed, authenticated datagram.
#[derive(Debug, PartialEq, Eq)]
pub enum Packet<'a> {
    /// A shard.
    Data(DataHeader, &'a [u8]),
    /// Object start.
    Announce {
        /// Object id.
        object_id: u64,
        /// Size.
        size: u64,
        /// Name.
        name: &'a str,
    },
    /// Object end.
    End {
        /// Object id.
        object_id: u64,
        /// Size.
        size: u64,
        /// Keyed hash of id, size, SHA-256 and name.
        keyed_hash: [u8; 32],
        /// Name.
        name: &'a str,
    },
    /// Heartbeat.
    Manifest(Manifest),
}

/// Builds authenticated datagrams for one session.
pub(crate) struct Sealer {
    session: u64,
    seq: u64,
    key: LessSafeKey,
}

impl Sealer {
    pub(crate) fn new(link: &LinkKey, session: u64) -> Self {
        Self {
            session,
            seq: 0,
            key: link.session_key(session),
        }
    }

    /// Header with a zero sequence number: the number and the tag are added by
    /// [`Sealer::seal`] when the datagram is actually sent, so sequence numbers follow the
    /// order on the wire and the receiver's loss count is exact.
    fn start(&self, kind: Kind, body_len: usize) -> Vec<u8> {
        let mut d = Vec::with_capacity(HEADER_LEN + body_len + TAG_LEN);
        d.extend_from_slice(&MAGIC);
        d.push(VERSION);
        d.push(kind as u8);
        d.extend_from_slice(&[0, 0]);
        d.extend_from_slice(&self.session.to_be_bytes());
        d.extend_from_slice(&[0; 8]);
        d
    }

    /// Numbers, encrypts and authenticates a datagram built by one of the builders: the
    /// header is associated data, the body is encrypted in place.
    pub(crate) fn seal(&mut self, mut d: Vec<u8>) -> Vec<u8> {
        let seq = self.seq;
        self.seq += 1;
        d[16..24].copy_from_slice(&seq.to_be_bytes());
        let (header, body) = d.split_at_mut(HEADER_LEN);
        let tag = self
            .key
            .seal_in_place_separate_tag(nonce(seq), Aad::from(&header[..]), body)
            // Fails only for inputs beyond AES-GCM's 64 GiB limit; a datagram is 1472 bytes.
            .map(|t| {
                let mut out = [0u8; TAG_LEN];
                out.copy_from_slice(t.as_ref());
                out
            })
            .unwrap_or([0u8; TAG_LEN]);
        d.extend_from_slice(&tag);
        d
    }

    pub(crate) fn data(&self, h: &DataHeader, shard: &[u8]) -> Vec<u8> {
        let mut d = self.start(Kind::Data, DATA_HEADER_LEN + shard.len());
        d.extend_from_slice(&h.object_id.to_be_bytes());
        d.extend_from_slice(&h.object_size.to_be_bytes());
        d.extend_from_slice(&h.block.to_be_bytes());
        d.extend_from_slice(&h.block_bytes.to_be_bytes());
        d.extend_from_slice(&h.shard.to_be_bytes());
        d.extend_from_slice(&h.k.to_be_bytes());
        d.extend_from_slice(&h.r.to_be_bytes());
        d.extend_from_slice(&h.shard_size.to_be_bytes());
        d.extend_from_slice(shard);
        d
    }

    pub(crate) fn announce(&self, object_id: u64, size: u64, name: &str) -> Vec<u8> {
        let mut d = self.start(Kind::Announce, 18 + name.len());
        d.extend_from_slice(&object_id.to_be_bytes());
        d.extend_from_slice(&size.to_be_bytes());
        push_name(&mut d, name);
        d
    }

    pub(crate) fn end(&self, object_id: u64, size: u64, hash: &[u8; 32], name: &str) -> Vec<u8> {
        let mut d = self.start(Kind::End, 50 + name.len());
        d.extend_from_slice(&object_id.to_be_bytes());
        d.extend_from_slice(&size.to_be_bytes());
        d.extend_from_slice(hash);
        push_name(&mut d, name);
        d
    }

    pub(crate) fn manifest(&self, m: &Manifest) -> Vec<u8> {
        let mut d = self.start(Kind::Manifest, 32);
        d.extend_from_slice(&m.next_object_id.to_be_bytes());
        d.extend_from_slice(&m.sending_from.to_be_bytes());
        d.extend_from_slice(&m.oldest_retained.to_be_bytes());
        d.extend_from_slice(&m.session_start.to_be_bytes());
        d
    }
}

fn push_name(d: &mut Vec<u8>, name: &str) {
    // Names are validated (≤ MAX_NAME) before they reach the sealer.
    let bytes = &name.as_bytes()[..name.len().min(MAX_NAME)];
    d.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
    d.extend_from_slice(bytes);
}

/// Session and sequence of a datagram, read before authentication (to pick the key).
pub(crate) fn peek_session(d: &[u8]) -> Result<(u64, u64), WireError> {
    if d.len() < HEADER_LEN + TAG_LEN {
        return Err(WireError::TooShort(d.len()));
    }
    if d.len() > MAX_DATAGRAM {
        return Err(WireError::TooLong(d.len()));
    }
    if d[..4] != MAGIC {
        return Err(WireError::BadMagic);
    }
    if d[4] != VERSION {
        return Err(WireError::UnknownVersion(d[4]));
    }
    Ok((be_u64(&d[8..16]), be_u64(&d[16..24])))
}

/// Verifies and decrypts the datagram in place with the session key, then parses the body.
pub(crate) fn open<'a>(key: &LessSafeKey, d: &'a mut [u8]) -> Result<Packet<'a>, WireError> {
    let (_, seq) = peek_session(d)?;
    let (header, sealed) = d.split_at_mut(HEADER_LEN);
    let kind = header[5];
    let body = key
        .open_in_place(nonce(seq), Aad::from(&header[..]), sealed)
        .map_err(|_| WireError::BadTag)?;
    parse_body(kind, body)
}

fn parse_body(kind: u8, b: &[u8]) -> Result<Packet<'_>, WireError> {
    let mut r = Reader { b, at: 0 };
    let packet = match kind {
        1 => {
            let h = DataHeader {
                object_id: r.u64()?,
                object_size: r.u64()?,
                block: r.u32()?,
                block_bytes: r.u32()?,
                shard: r.u16()?,
                k: r.u16()?,
                r: r.u16()?,
                shard_size: r.u16()?,
            };
            let shard = r.rest();
            if shard.len() != usize::from(h.shard_size) {
                return Err(WireError::Malformed("shard length differs from shard size"));
            }
            return Ok(Packet::Data(h, shard));
        }
        2 => Packet::Announce {
            object_id: r.u64()?,
            size: r.u64()?,
            name: r.name()?,
        },
        3 => Packet::End {
            object_id: r.u64()?,
            size: r.u64()?,
            keyed_hash: r.array()?,
            name: r.name()?,
        },
        4 => Packet::Manifest(Manifest {
            next_object_id: r.u64()?,
            sending_from: r.u64()?,
            oldest_retained: r.u64()?,
            session_start: r.u64()?,
        }),
        other => return Err(WireError::UnknownKind(other)),
    };
    if r.at != b.len() {
        return Err(WireError::Malformed("trailing bytes"));
    }
    Ok(packet)
}

fn be_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(b);
    u64::from_be_bytes(a)
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        let s = self
            .b
            .get(self.at..self.at + n)
            .ok_or(WireError::Malformed("body too short"))?;
        self.at += n;
        Ok(s)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    fn u64(&mut self) -> Result<u64, WireError> {
        Ok(u64::from_be_bytes(self.array()?))
    }
    fn u32(&mut self) -> Result<u32, WireError> {
        Ok(u32::from_be_bytes(self.array()?))
    }
    fn u16(&mut self) -> Result<u16, WireError> {
        Ok(u16::from_be_bytes(self.array()?))
    }
    fn name(&mut self) -> Result<&'a str, WireError> {
        let n = usize::from(self.u16()?);
        if n > MAX_NAME {
            return Err(WireError::Malformed("name too long"));
        }
        std::str::from_utf8(self.take(n)?).map_err(|_| WireError::Malformed("name not UTF-8"))
    }
    fn rest(&mut self) -> &'a [u8] {
        let s = self.b.get(self.at..).unwrap_or(&[]);
        self.at = self.b.len();
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_round_trips_and_any_flip_is_caught() {
        let link = LinkKey::new([7; 32]);
        let mut s = Sealer::new(&link, 42);
        let h = DataHeader {
            object_id: u64::MAX - 1,
            object_size: 1 << 40,
            block: 3,
            block_bytes: 1400 * 128,
            shard: 130,
            k: 128,
            r: 13,
            shard_size: 4,
        };
        let m = Manifest {
            next_object_id: 9,
            sending_from: 7,
            oldest_retained: 1,
            session_start: 3,
        };
        let built = [
            s.data(&h, &[1, 2, 3, 4]),
            s.announce(5, 6, "a.env"),
            s.end(5, 6, &[9; 32], "a.env"),
            s.manifest(&m),
        ];
        let datagrams: Vec<Vec<u8>> = built.into_iter().map(|d| s.seal(d)).collect();
        let key = link.session_key(42);
        let mut copies = datagrams.clone();
        let parsed: Vec<_> = copies
            .iter_mut()
            .map(|d| open(&key, d).expect("open"))
            .collect();
        assert_eq!(parsed[0], Packet::Data(h, &[1, 2, 3, 4]));
        assert!(matches!(
            parsed[1],
            Packet::Announce {
                object_id: 5,
                size: 6,
                name: "a.env"
            }
        ));
        assert!(
            matches!(parsed[2], Packet::End { object_id: 5, keyed_hash, .. } if keyed_hash == [9; 32])
        );
        assert_eq!(parsed[3], Packet::Manifest(m));
        for d in &datagrams {
            assert!(
                !d.windows(5).any(|w| w == b"a.env"),
                "object name visible on the wire"
            );
            for i in 0..d.len() {
                let mut bad = d.clone();
                bad[i] ^= 0x10;
                assert!(open(&key, &mut bad).is_err(), "flip at {i} accepted");
            }
        }
        let other_session = link.session_key(43);
        let mut first = datagrams[0].clone();
        assert_eq!(open(&other_session, &mut first), Err(WireError::BadTag));
    }

    #[test]
    fn shards_for_common_mtus() {
        assert_eq!(shard_size_for_mtu(1500), Some(1400));
        assert_eq!(shard_size_for_mtu(9000), Some(MAX_SHARD as u16));
        assert_eq!(shard_size_for_mtu(575), None);
        assert_eq!(shard_size_for_mtu(9001), None);
        for mtu in MIN_MTU..=MAX_MTU {
            let shard =
                usize::from(shard_size_for_mtu(mtu).expect("every MTU in range has a shard"));
            assert!(shard % 2 == 0 && shard + DATA_OVERHEAD + IP_UDP_OVERHEAD <= mtu);
            assert!(shard + 2 + DATA_OVERHEAD + IP_UDP_OVERHEAD > mtu);
        }
    }

    #[test]
    fn max_shard_fits_the_mtu() {
        let link = LinkKey::new([1; 32]);
        let mut s = Sealer::new(&link, 1);
        let h = DataHeader {
            object_id: 1,
            object_size: 1,
            block: 0,
            block_bytes: MAX_SHARD as u32,
            shard: 0,
            k: 1,
            r: 1,
            shard_size: MAX_SHARD as u16,
        };
        let d = s.data(&h, &vec![0; MAX_SHARD]);
        assert_eq!(s.seal(d).len(), MAX_DATAGRAM);
    }
}
