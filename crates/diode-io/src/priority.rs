//! Priority of the receiver's socket loop. It is the one receiver thread whose lateness loses
//! data: the kernel's socket buffer (4 MiB here, `net.core.rmem_max`) holds about ten
//! milliseconds of a fast link, and nothing can ask the sender to wait. The writer, finisher
//! and decoder have queues in front of them and may lag for a while without loss.
//!
//! So the socket loop's thread asks to run [`SOCKET_LOOP_RAISE`] nice steps above the
//! process, and every other thread stays where it is. The opposite — lowering the helpers —
//! was tried and dropped: beside other work at normal priority (the vault's intake and
//! anonymizer share its process) a writer ten steps down starved and thousands of objects
//! failed (docs/diode.md, "Thread priorities"). Raising needs `CAP_SYS_NICE` or an
//! `RLIMIT_NICE` that allows it (`LimitNICE=` in the systemd units) and the `setpriority`
//! system call; without them the loop runs at the process's priority, as before, and the
//! start-up event says why.

use rustix::process::{getpriority_process, setpriority_process};
use rustix::thread::gettid;

/// Nice steps the socket loop asks for above the process's own niceness (the vault's and
/// egress's systemd units allow exactly this much with `LimitNICE=`).
pub const SOCKET_LOOP_RAISE: i32 = 10;

/// Priority of the calling thread before and after [`raise_this_thread`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Raised {
    /// Nice value the thread had.
    pub(crate) before: i32,
    /// Nice value it has now.
    pub(crate) now: i32,
}

/// Raises the calling thread (Linux applies `setpriority(PRIO_PROCESS, tid)` to the one
/// thread) by `steps` nice steps, at most to −20. Threads it creates afterwards would inherit
/// the raise, so callers start their helper threads first.
pub(crate) fn raise_this_thread(steps: i32) -> Result<Raised, String> {
    let tid = gettid();
    let before = getpriority_process(Some(tid)).map_err(|e| format!("getpriority: {e}"))?;
    let now = (before - steps).max(-20);
    setpriority_process(Some(tid), now).map_err(|e| {
        format!("setpriority to {now}: {e} (needs CAP_SYS_NICE or LimitNICE={now}, and the system call allowed)")
    })?;
    Ok(Raised { before, now })
}

/// Puts the calling thread back where [`raise_this_thread`] found it (lowering needs no
/// privilege), for a thread that goes on to other work.
pub(crate) fn restore_this_thread(raised: Raised) {
    let _ = setpriority_process(Some(gettid()), raised.before);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Only the calling thread is raised, by the given steps, and restored afterwards; a
    /// thread that may not raise itself gets an error that says what it lacks. (The test
    /// runs as root in CI, where the raise succeeds; elsewhere it checks the refusal.)
    #[test]
    fn only_the_calling_thread_is_raised_and_restored() {
        let own = getpriority_process(Some(gettid())).expect("own priority");
        let (result, during, after) = std::thread::spawn(|| {
            let result = raise_this_thread(3);
            let during = getpriority_process(Some(gettid())).expect("during");
            if let Ok(r) = result {
                restore_this_thread(r);
            }
            let after = getpriority_process(Some(gettid())).expect("after");
            (result, during, after)
        })
        .join()
        .expect("join");
        match result {
            Ok(r) => {
                assert_eq!(
                    r,
                    Raised {
                        before: own,
                        now: (own - 3).max(-20)
                    }
                );
                assert_eq!(during, r.now);
            }
            Err(why) => {
                assert!(why.contains("CAP_SYS_NICE"), "{why}");
                assert_eq!(during, own);
            }
        }
        assert_eq!(after, own);
        assert_eq!(getpriority_process(Some(gettid())).expect("own"), own);
    }
}
