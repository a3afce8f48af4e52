//! The two socket loops: a paced sender that batches datagrams into GSO sends, and a
//! receiver that drains the socket with `recvmmsg`/GRO and hands all disk work to the inbox
//! writer thread. Both are thin: every decision is the `diode` core's.

use std::collections::HashMap;
use std::fs::File;
use std::future::Future;
use std::io::IoSliceMut;
use std::net::SocketAddr;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use diode::{
    DecodeJob, DecodedBlock, LinkKey, ObjectMeta, Receiver, ReceiverConfig, ReceiverEvent, Sender,
    SenderConfig, SenderEvent, MAX_DATAGRAM,
};
use quinn_udp::{RecvMeta, Transmit, UdpSocketState};
use serde_json::json;
use tokio::io::Interest;
use tokio::net::UdpSocket;

use crate::error::{io_on, LinkError};
use crate::events::EventLog;
use crate::inbox::{spawn_writer, DigestReply, Inbox, WriterCmd};
use crate::outbox::Outbox;

/// How often the retention policy is applied to `sent/` (it lists the directory).
const PRUNE_INTERVAL: Duration = Duration::from_secs(60);

/// Waits shorter than this are slept precisely (see the pacing comment in `run_sender`).
const PRECISE_SLEEP: Duration = Duration::from_millis(2);

/// Largest UDP payload one GSO send may carry.
const GSO_MAX_BYTES: usize = 65_000;

/// GSO sends per turn of the sender loop at most (4 MiB), so the shutdown signal and the
/// outbox scan still get their turn when the link is unpaced.
const MAX_BATCHES_PER_TURN: usize = 64;

/// How long sent objects stay in the outbox for re-sending.
#[derive(Clone, Copy, Debug)]
pub struct Retention {
    /// Delete sent objects older than this.
    pub max_age: Duration,
    /// Keep at most this many sent objects.
    pub max_count: usize,
}

/// What `run_sender` needs.
pub struct SendOptions {
    /// Receiver address.
    pub to: SocketAddr,
    /// Local address to send from.
    pub bind: SocketAddr,
    /// The outbox directory.
    pub outbox: PathBuf,
    /// Link key bytes.
    pub key: [u8; 32],
    /// Protocol tuning (pacing, FEC).
    pub config: SenderConfig,
    /// How often `incoming/` is scanned.
    pub scan_interval: Duration,
    /// Retention policy for `sent/`.
    pub retention: Retention,
    /// Stop once everything queued has been sent (batch use and tests).
    pub exit_when_idle: bool,
    /// Event log file.
    pub events: Option<PathBuf>,
    /// Session id (random in production).
    pub session: u64,
}

/// Totals of a sender run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SendSummary {
    /// Objects sent completely.
    pub objects: u64,
    /// Datagrams sent.
    pub datagrams: u64,
    /// Bytes of datagrams sent.
    pub bytes: u64,
}

fn socket(
    bind: SocketAddr,
    recv_buffer: Option<usize>,
) -> Result<(UdpSocket, UdpSocketState), LinkError> {
    let std_sock = std::net::UdpSocket::bind(bind).map_err(io_on(format!("bind {bind}")))?;
    std_sock
        .set_nonblocking(true)
        .map_err(io_on(format!("socket {bind}")))?;
    let state = UdpSocketState::new((&std_sock).into()).map_err(io_on(format!("socket {bind}")))?;
    // Larger buffers absorb scheduling hiccups; the kernel caps them at rmem_max/wmem_max.
    let _ = state.set_send_buffer_size((&std_sock).into(), 4 << 20);
    if let Some(size) = recv_buffer {
        let _ = state.set_recv_buffer_size((&std_sock).into(), size);
    }
    let sock = UdpSocket::from_std(std_sock).map_err(io_on(format!("socket {bind}")))?;
    Ok((sock, state))
}

/// Runs a sender until `shutdown` resolves (or, with `exit_when_idle`, until the outbox is
/// empty and every end datagram has been repeated).
pub async fn run_sender(
    opts: SendOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<SendSummary, LinkError> {
    tokio::pin!(shutdown);
    let outbox = Outbox::open(&opts.outbox)?;
    let mut log = match &opts.events {
        Some(p) => EventLog::open(p)?,
        None => EventLog::none(),
    };
    let mut sender = Sender::new(opts.config.clone(), LinkKey::new(opts.key), opts.session)?;
    let (sock, state) = socket(opts.bind, None)?;
    let max_segments = state.max_gso_segments().clamp(1, 64);
    log.write(
        "sender_started",
        json!({ "session": format!("{:016x}", opts.session), "to": opts.to.to_string(),
                "gso_segments": max_segments }),
    )?;

    let mut pending: HashMap<u64, crate::outbox::Entry> = HashMap::new();
    let mut next_prune = Instant::now();
    let mut oldest_retained = 0;
    let mut files: HashMap<u64, File> = HashMap::new();
    let mut summary = SendSummary::default();
    let mut next_scan = Instant::now();
    let mut batch: Vec<u8> = Vec::with_capacity(max_segments * MAX_DATAGRAM);
    let mut read_buf = Vec::new();
    let mut held: Option<Vec<u8>> = None;
    let full_batch_time = (opts.config.rate_bytes_per_sec > 0).then(|| {
        Duration::from_secs_f64(GSO_MAX_BYTES as f64 / opts.config.rate_bytes_per_sec as f64)
    });
    loop {
        let now = Instant::now();
        if now >= next_scan {
            next_scan = now + opts.scan_interval;
            outbox.admit_incoming()?;
            // The queue holds what is waiting: new files, and re-sends put back by
            // `diode resend` (a separate process).
            for e in outbox.queued()? {
                if let std::collections::hash_map::Entry::Vacant(slot) = pending.entry(e.id) {
                    log.write(
                        "object_queued",
                        json!({ "id": e.id, "name": e.name, "size": e.size }),
                    )?;
                    sender.enqueue(ObjectMeta {
                        id: e.id,
                        size: e.size,
                        name: e.name.clone(),
                    })?;
                    slot.insert(e);
                }
            }
            if now >= next_prune {
                next_prune = now + PRUNE_INTERVAL;
                let pruned = outbox.prune(
                    opts.retention.max_age,
                    opts.retention.max_count,
                    SystemTime::now(),
                )?;
                if !pruned.is_empty() {
                    log.write("objects_pruned", json!({ "ids": pruned }))?;
                }
                oldest_retained = outbox.oldest_retained()?.unwrap_or(outbox.next_id());
            }
            sender.set_outbox_state(outbox.next_id(), oldest_retained);
        }

        // One block per turn: its encoding (a fraction of a millisecond) is spread between
        // sends, so the token bucket never overflows while the CPU is busy encoding.
        let mut did_read = false;
        if let Some(req) = sender.poll_read() {
            did_read = true;
            let read = (|| -> std::io::Result<()> {
                let file = match files.entry(req.object_id) {
                    std::collections::hash_map::Entry::Occupied(f) => f.into_mut(),
                    std::collections::hash_map::Entry::Vacant(slot) => {
                        let entry = pending
                            .get(&req.object_id)
                            .ok_or_else(|| std::io::Error::other("object left the queue"))?;
                        slot.insert(File::open(&entry.path)?)
                    }
                };
                read_buf.resize(req.len, 0);
                file.read_exact_at(&mut read_buf, req.offset)
            })();
            match read {
                Ok(()) => {
                    if let Err(e) = sender.handle_read(req.object_id, req.offset, &read_buf) {
                        log.write(
                            "object_aborted",
                            json!({ "id": req.object_id, "reason": e.to_string() }),
                        )?;
                        sender.abort_current();
                    }
                }
                Err(e) => {
                    log.write(
                        "object_aborted",
                        json!({ "id": req.object_id, "reason": e.to_string() }),
                    )?;
                    sender.abort_current();
                }
            }
        }

        // Send GSO batches while the pacing allows. All of them, not one per turn: a turn
        // that read a block spent up to a millisecond encoding it (jumbo blocks are 1.1 MiB),
        // and the tokens gathered meanwhile must go out now, or the bucket's cap throws them
        // away and the link runs below its rate.
        let mut count = 0;
        for _ in 0..MAX_BATCHES_PER_TURN {
            let sent = send_batch(
                &mut sender,
                &mut held,
                &mut batch,
                max_segments,
                &sock,
                &state,
                opts.to,
                &mut summary,
            )
            .await?;
            if sent == 0 {
                break;
            }
            count += sent;
        }

        while let Some(ev) = sender.poll_event() {
            match ev {
                SenderEvent::ObjectSent { id } => {
                    files.remove(&id);
                    if let Some(entry) = pending.remove(&id) {
                        outbox.mark_sent(&entry)?;
                    }
                    summary.objects += 1;
                    log.write("object_sent", json!({ "id": id }))?;
                }
                SenderEvent::ObjectAborted { id } => {
                    files.remove(&id);
                    pending.remove(&id);
                }
            }
        }

        if opts.exit_when_idle && sender.is_quiescent() && pending.is_empty() && held.is_none() {
            if outbox.admit_incoming()?.is_empty() && outbox.queued()?.is_empty() {
                break;
            }
            next_scan = Instant::now();
        }
        if count == 0 && held.is_none() && !did_read {
            let wake = sender
                .poll_timeout()
                .map_or(next_scan, |t| t.min(next_scan));
            let mut wait = wake.saturating_duration_since(Instant::now());
            if let Some(batch_time) = full_batch_time {
                // Wait for a whole GSO batch worth of tokens: fewer, fuller sends.
                wait = wait
                    .max(batch_time)
                    .min(next_scan.saturating_duration_since(Instant::now()));
            }
            if wait < PRECISE_SLEEP {
                // Pacing gaps are tens of microseconds; the runtime's timer has millisecond
                // granularity and would cut the rate. This loop is the runtime's only task,
                // so a short blocking sleep holds up nothing else.
                std::thread::sleep(wait);
                continue;
            }
            tokio::select! {
                _ = tokio::time::sleep_until(wake.into()) => {}
                _ = &mut shutdown => break,
            }
        } else {
            // Let other tasks and the shutdown signal in between batches.
            tokio::select! {
                biased;
                _ = &mut shutdown => break,
                _ = tokio::task::yield_now() => {}
            }
        }
    }
    log.write(
        "sender_stopped",
        json!({ "objects": summary.objects, "datagrams": summary.datagrams, "bytes": summary.bytes }),
    )?;
    Ok(summary)
}

/// Gathers datagrams into one GSO send (every segment the size of the first, except a
/// shorter last one, at most 64 KiB in all; a datagram that does not fit waits in `held` for
/// the next batch) and sends it. Returns how many datagrams went out.
#[allow(clippy::too_many_arguments)]
async fn send_batch(
    sender: &mut Sender,
    held: &mut Option<Vec<u8>>,
    batch: &mut Vec<u8>,
    max_segments: usize,
    sock: &UdpSocket,
    state: &UdpSocketState,
    to: SocketAddr,
    summary: &mut SendSummary,
) -> Result<usize, LinkError> {
    batch.clear();
    let mut segment = 0;
    let mut count = 0;
    let now = Instant::now();
    while count < max_segments {
        let Some(d) = held.take().or_else(|| sender.poll_transmit(now)) else {
            break;
        };
        if count == 0 {
            segment = d.len();
        } else if d.len() > segment || batch.len() + d.len() > GSO_MAX_BYTES {
            *held = Some(d);
            break;
        }
        batch.extend_from_slice(&d);
        count += 1;
        summary.datagrams += 1;
        summary.bytes += d.len() as u64;
        if d.len() < segment {
            break;
        }
    }
    if count == 0 {
        return Ok(0);
    }
    let transmit = Transmit {
        destination: to,
        ecn: None,
        contents: batch,
        segment_size: (count > 1).then_some(segment),
        src_ip: None,
    };
    loop {
        sock.writable().await.map_err(io_on("socket"))?;
        match sock.try_io(Interest::WRITABLE, || {
            state.try_send(sock.into(), &transmit)
        }) {
            Ok(()) => break,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            // One-way: nobody can answer, so ICMP errors (no listener yet) are noise.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => break,
            Err(e) if e.raw_os_error() == Some(nix::errno::Errno::EMSGSIZE as i32) => {
                let what = format!(
                    "send to {to}: {segment}-byte datagrams do not fit the interface's MTU \
                     (lower --mtu, or raise the interface's MTU first)"
                );
                return Err(io_on(what)(e).into());
            }
            Err(e) => return Err(io_on(format!("send to {to}"))(e).into()),
        }
    }
    Ok(count)
}

/// What `run_receiver` needs.
pub struct RecvOptions {
    /// Address to receive on.
    pub bind: SocketAddr,
    /// The inbox directory.
    pub inbox: PathBuf,
    /// Event log file.
    pub events: PathBuf,
    /// Link key bytes.
    pub key: [u8; 32],
    /// Protocol limits.
    pub config: ReceiverConfig,
    /// Interval between `stats` events.
    pub stats_interval: Duration,
}

/// A receiver on a thread and current-thread runtime of its own, for a server that embeds
/// one: whatever else the process does never delays the socket loop, and the loop can raise
/// its own thread's priority (`priority`), which a worker of a shared multi-thread runtime,
/// running other tasks too, could not.
pub struct ReceiverThread {
    stop: tokio::sync::oneshot::Sender<()>,
    thread: std::thread::JoinHandle<Result<(), LinkError>>,
}

impl ReceiverThread {
    /// Starts the receiver; it runs until [`ReceiverThread::stop`] or until it fails.
    pub fn spawn(opts: RecvOptions) -> Result<Self, LinkError> {
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("link-receiver".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(io_on("the receiver's runtime"))?;
                rt.block_on(run_receiver(opts, async {
                    let _ = stop_rx.await;
                }))
            })
            .map_err(io_on("the receiver's thread"))?;
        Ok(Self { stop, thread })
    }

    /// Whether the receiver has ended by itself (it only does so on an error, such as an
    /// address it cannot bind): a caller should stop waiting for objects.
    pub fn is_finished(&self) -> bool {
        self.thread.is_finished()
    }

    /// Stops the receiver and says how it ended.
    pub fn stop(self) -> Result<(), LinkError> {
        let _ = self.stop.send(());
        self.thread
            .join()
            .unwrap_or(Err(LinkError::Panicked("the receiver's thread")))
    }
}

/// Runs a receiver until `shutdown` resolves.
pub async fn run_receiver(
    opts: RecvOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), LinkError> {
    tokio::pin!(shutdown);
    let mut log = EventLog::open(&opts.events)?;
    let state = Inbox::load_state(&opts.inbox)?;
    let inbox = Inbox::open(&opts.inbox, &mut log)?;
    let mut receiver = Receiver::new(
        opts.config.clone(),
        LinkKey::new(opts.key),
        state.delivered.clone(),
        state.floor,
    );
    let (sock, sock_state) = socket(opts.bind, Some(64 << 20))?;
    log.write(
        "receiver_started",
        json!({ "bind": opts.bind.to_string(), "delivered": state.delivered.ranges(),
                "floor": state.floor, "gro_segments": sock_state.gro_segments() }),
    )?;
    // 64 MiB of blocks may wait for the disk before the socket loop has to.
    // The writer also hashes every object and answers the core's digest requests.
    let (digest_tx, mut digest_rx) = tokio::sync::mpsc::unbounded_channel::<DigestReply>();
    let (writer, writer_thread) = spawn_writer(inbox, log, state, 512, 64 << 20, digest_tx);
    // Erasure decoding runs on its own thread so the socket loop never waits for it. The
    // queue is unbounded on purpose: a block being decoded counts against the core's
    // `max_bytes_in_flight`, which bounds it; a second, smaller bound here (it was 64 jobs)
    // made the socket loop wait whenever decoding fell behind, and the socket buffer
    // overflowed meanwhile.
    let (decode_tx, decode_rx) = std::sync::mpsc::channel::<DecodeJob>();
    let (decoded_tx, mut decoded_rx) = tokio::sync::mpsc::unbounded_channel::<DecodedBlock>();
    let decoder = std::thread::spawn(move || {
        for job in decode_rx {
            if decoded_tx.send(job.run()).is_err() {
                break;
            }
        }
    });

    // Raised only now that the helpers exist: threads inherit their creator's priority, and
    // they must stay at the process's (see `priority`). Only a thread of its own can be
    // raised; a multi-thread runtime's workers also run other tasks.
    let raised = if tokio::runtime::Handle::current().runtime_flavor()
        == tokio::runtime::RuntimeFlavor::CurrentThread
    {
        crate::priority::raise_this_thread(crate::priority::SOCKET_LOOP_RAISE)
    } else {
        Err("not raised: the receiver shares a multi-thread runtime".to_owned())
    };
    writer.send(WriterCmd::Event {
        kind: "socket_loop_priority",
        fields: match &raised {
            Ok(r) => json!({ "nice": r.now, "process_nice": r.before }),
            Err(why) => json!({ "nice": null, "why": why }),
        },
    })?;

    let gro = sock_state.gro_segments().max(1);
    let slot = gro * MAX_DATAGRAM.next_multiple_of(64);
    let mut storage = vec![0u8; slot * quinn_udp::BATCH_SIZE];
    let mut meta = vec![RecvMeta::default(); quinn_udp::BATCH_SIZE];
    let mut stats_at = Instant::now() + opts.stats_interval;
    let send = |cmd: WriterCmd| writer.send(cmd);
    let decode = |job: DecodeJob| {
        decode_tx
            .send(job)
            .map_err(|e| LinkError::Writer(format!("decoder stopped: {e}")))
    };
    let result = loop {
        let wake = receiver
            .poll_timeout()
            .map_or(stats_at, |t| t.min(stats_at));
        tokio::select! {
            // Decoded blocks and datagrams already waiting come first: a timeout must never
            // fire for an object whose next datagram is sitting in the socket buffer.
            biased;
            Some(decoded) = decoded_rx.recv() => {
                receiver.handle_decoded(Instant::now(), decoded);
                drain(&mut receiver, &send, &decode)?;
            }
            Some((id, generation, sha)) = digest_rx.recv() => {
                receiver.handle_digest(Instant::now(), id, generation, sha);
                drain(&mut receiver, &send, &decode)?;
            }
            r = sock.readable() => {
                if let Err(e) = r {
                    break Err(io_on("socket")(e).into());
                }
                for buffer in writer.spare() {
                    receiver.recycle(buffer);
                }
                loop {
                    let mut bufs: Vec<IoSliceMut<'_>> = storage.chunks_mut(slot).map(IoSliceMut::new).collect();
                    let n = match sock.try_io(Interest::READABLE, || sock_state.recv((&sock).into(), &mut bufs, &mut meta)) {
                        Ok(n) => n,
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                        Err(e) => return Err(io_on("receive")(e).into()),
                    };
                    drop(bufs);
                    let now = Instant::now();
                    for (m, buf) in meta.iter().zip(storage.chunks_mut(slot)).take(n) {
                        let stride = m.stride.max(1);
                        let len = m.len.min(buf.len());
                        for d in buf[..len].chunks_mut(stride) {
                            receiver.handle_datagram(now, d);
                            // Drained after every datagram so each command reflects the
                            // core's state at that moment.
                            drain(&mut receiver, &send, &decode)?;
                        }
                    }
                }
            }
            _ = tokio::time::sleep_until(wake.into()) => {
                let now = Instant::now();
                receiver.handle_timeout(now);
                drain(&mut receiver, &send, &decode)?;
                if now >= stats_at {
                    stats_at = now + opts.stats_interval;
                    send(WriterCmd::Stats(receiver.stats()))?;
                }
            }
            _ = &mut shutdown => break Ok(()),
        }
    };
    let _ = send(WriterCmd::Stats(receiver.stats()));
    if let Ok(r) = raised {
        crate::priority::restore_this_thread(r);
    }
    drop(decode_tx);
    let _ = decoder.join();
    drop(writer);
    match writer_thread.join() {
        Ok(Ok(())) => result,
        Ok(Err(e)) => Err(e.into()),
        Err(_) => Err(LinkError::Writer("writer thread panicked".into())),
    }
}

fn drain(
    receiver: &mut Receiver,
    send: &impl Fn(WriterCmd) -> Result<(), LinkError>,
    decode: &impl Fn(DecodeJob) -> Result<(), LinkError>,
) -> Result<(), LinkError> {
    while let Some(e) = receiver.poll_event() {
        let cmd = match e {
            ReceiverEvent::Decode(job) => {
                decode(job)?;
                continue;
            }
            ReceiverEvent::ObjectStarted { id, size } => WriterCmd::Start { id, size },
            ReceiverEvent::Digest { id, generation } => WriterCmd::Digest { id, generation },
            ReceiverEvent::Write { id, offset, data } => WriterCmd::Write { id, offset, data },
            ReceiverEvent::ObjectComplete {
                id,
                name,
                size,
                sha256,
            } => WriterCmd::Complete {
                id,
                name,
                size,
                sha256: sha256.iter().map(|b| format!("{b:02x}")).collect(),
                floor: receiver.floor(),
            },
            ReceiverEvent::ObjectFailed { id, reason } => WriterCmd::Failed {
                id,
                reason: reason.to_string(),
            },
            ReceiverEvent::Gaps { missing } => WriterCmd::Gaps {
                missing,
                floor: receiver.floor(),
            },
        };
        send(cmd)?;
    }
    Ok(())
}
