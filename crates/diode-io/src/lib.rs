//! Driver of the one-way link: the sockets, files, clock and threads around the sans-IO
//! `diode` core. Sender: durable outbox, paced GSO batches. Receiver: `recvmmsg`/GRO socket
//! loop that never waits for the disk and runs above the process's priority when allowed, an
//! inbox writer thread, a JSON-lines event log, a persisted state file and a gap report.
//!
//! What it must never do: send a single datagram from the receiving side (R-GW-4, R-GW-5)
//! — the receiver's socket is only ever read — or put a partial object under a final name.

#![forbid(unsafe_code)]

mod error;
mod events;
mod inbox;
mod link;
mod outbox;
mod priority;

pub use error::{IoError, LinkError};
pub use events::EventLog;
pub use inbox::{Inbox, InboxState};
pub use link::{
    run_receiver, run_sender, ReceiverThread, RecvOptions, Retention, SendOptions, SendSummary,
};
pub use outbox::{entry_name, parse_entry_name, Entry, Outbox};
pub use priority::SOCKET_LOOP_RAISE;

/// Resolves on SIGTERM or Ctrl-C: how the link's daemons (and egress) are told to stop.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
