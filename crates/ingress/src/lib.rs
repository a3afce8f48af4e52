//! Ingress (一次受信サーバ): the receive-only server institutions push sealed envelopes to.
//!
//! QUIC with mutual TLS 1.3 (R-GW-7) from institutions; each envelope's header is checked —
//! signed by the institution its client certificate names, within its limits — but never
//! opened (ingress holds no key that could, R-GW-8). Accepted envelopes are written
//! atomically into the diode outbox towards the vault (R-GW-4) and answered with a signed
//! receipt; every exchange is recorded in the receipt ledger (R-IN-3). Nothing here opens a
//! connection anywhere (R-GW-2): there is no client code path in this crate, and
//! `tests/no_client.rs` keeps it so.

#![forbid(unsafe_code)]

pub mod ledger;
pub mod registry;
pub mod server;
pub mod spool;
pub mod tls;

pub use ledger::{Accepted, Exchange, Ledger};
pub use registry::Registry;
pub use server::Server;
pub use spool::Spool;
