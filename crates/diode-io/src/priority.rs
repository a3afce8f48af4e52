//! Scheduling of the receiver's threads. The socket loop is the only thread whose lateness
//! loses data: the kernel's socket buffer (4 MiB here, `net.core.rmem_max`) holds about ten
//! milliseconds of a fast link, and nothing can ask the sender to wait. The writer, finisher
//! and decoder threads have queues in front of them (64 MiB of blocks for the writer), so
//! they can lag for a while without loss. They therefore run at a lower priority: when the
//! cores are busy, the scheduler gives the socket loop its turn first.
//!
//! Measured on the 2-core bench machine with both ends sharing it (1 GiB, MTU 9000, 0% loss
//! at 5000 Mbit/s, bursts and 1% at 4000): 13 of 18 runs delivered everything without this,
//! 24 of 24 with the helpers at nice +10 (docs/diode.md, "Thread priorities", which also
//! has the price: a writer that can starve when the two ends want more than two cores).

use rustix::process::{getpriority_process, setpriority_process};
use rustix::thread::gettid;

/// Nice steps the helper threads run below the process's own niceness.
pub(crate) const HELPER_NICE_STEPS: i32 = 10;

/// Lowers the calling thread's priority by `HELPER_NICE_STEPS` (Linux applies
/// `setpriority(PRIO_PROCESS, tid)` to the one thread). Lowering needs no privilege; should
/// it fail all the same (a sandbox refusing the call), the thread just keeps its priority.
pub(crate) fn lower_this_thread() -> Option<i32> {
    let tid = gettid();
    let now = getpriority_process(Some(tid)).ok()?;
    let lower = (now + HELPER_NICE_STEPS).min(19);
    setpriority_process(Some(tid), lower).ok()?;
    Some(lower)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The helper is lowered and the thread that spawned it is not.
    #[test]
    fn only_the_calling_thread_is_lowered() {
        let own = getpriority_process(Some(gettid())).expect("own priority");
        let helper = std::thread::spawn(|| {
            let set = lower_this_thread();
            let read = getpriority_process(Some(gettid())).expect("helper priority");
            (set, read)
        })
        .join()
        .expect("join");
        let expected = (own + HELPER_NICE_STEPS).min(19);
        assert_eq!(helper, (Some(expected), expected));
        assert_eq!(getpriority_process(Some(gettid())).expect("own"), own);
    }
}
