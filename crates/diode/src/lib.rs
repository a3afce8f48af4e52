//! The one-way link protocol ("data diode"), sans-IO: bytes and time in, datagrams and
//! events out. No sockets, files, clock or randomness inside: the driver (`diode-io`) owns
//! those, and tests run both ends on a virtual clock through a lossy simulated link.
//!
//! Both internal links of the appliance are one-way (R-GW-4 ingress → vault, R-GW-5 vault →
//! egress): not one packet travels back. So there are no acknowledgements, and the protocol
//! carries everything the receiver needs:
//! - 64-bit session, sequence and object ids (no counter that can wrap in practice);
//! - every datagram authenticated with a key shared by the two ends (`wire`);
//! - Reed–Solomon recovery shards and an XOR parity shard per block (`parity`), with the
//!   shards of several blocks interleaved so that bursts of loss are spread across blocks
//!   (`sender`);
//! - repeated announce and end datagrams and periodic manifests, so a receiver that restarts
//!   resynchronises and can list exactly which object ids it lacks (`receiver`);
//! - an object is complete only when every block decoded and the keyed hash of its id, size,
//!   SHA-256 and name matches.
//!
//! See `docs/diode.md` for the wire format and the operator's recovery procedure.

#![forbid(unsafe_code)]

mod error;
mod parity;
mod ranges;
mod receiver;
mod sender;
mod wire;

pub use error::{ObjectFailure, SenderError, WireError};
pub use ranges::RangeSet;
pub use receiver::{
    DecodeJob, DecodedBlock, Receiver, ReceiverConfig, ReceiverEvent, ReceiverStats,
    MAX_SPARE_BYTES,
};
pub use sender::{ObjectMeta, ReadRequest, Sender, SenderConfig, SenderEvent};
pub use wire::{shard_size_for_mtu, LinkKey, Manifest, MAX_DATAGRAM, MAX_MTU, MAX_SHARD, MIN_MTU};
