//! The QUIC listener: one connection per institution session, one bidirectional stream per
//! envelope (protocol in `intake_proto`). Receive-only (R-GW-2): this module accepts and
//! never connects; the only bytes it sends are replies on streams a client opened.

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use envelope::{SignedHeader, SigningKey, MAX_HEADER_LEN};
use intake_proto::{
    check_header, check_offer, utc_day, DailyBytes, Offer, RateLimiter, ReceiptBody, Refusal,
    RefusalCode, Reply, SignedReceipt, OFFER_LEN,
};
use rustls_pki_types::CertificateDer;

use crate::ledger::{outcome, Accepted, Exchange, Ledger};
use crate::registry::Registry;
use crate::spool::Spool;

/// How long a client may take to send its offer.
const OFFER_TIMEOUT: Duration = Duration::from_secs(30);
/// Write buffer for incoming envelope bytes.
const WRITE_BUF: usize = 1 << 20;

/// Everything the connection handlers share.
pub struct Shared {
    registry: Registry,
    ledger: Ledger,
    spool: Spool,
    key: SigningKey,
    in_progress: Mutex<HashSet<(String, String)>>,
    institutions: Mutex<HashMap<String, InstitutionState>>,
}

struct InstitutionState {
    limiter: RateLimiter,
    daily: DailyBytes,
    active: u32,
}

/// Unix milliseconds now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn ms_i64(ms: u64) -> i64 {
    i64::try_from(ms).unwrap_or(i64::MAX)
}

/// The running server.
pub struct Server {
    endpoint: quinn::Endpoint,
    shared: Arc<Shared>,
}

/// The client's identity, from its certificate.
struct Peer {
    remote: String,
    institution: String,
    serial: String,
}

impl Server {
    /// Binds the listener. Finishes any hand-over a crash interrupted first.
    pub async fn bind(
        listen: SocketAddr,
        config: quinn::ServerConfig,
        registry: Registry,
        ledger: Ledger,
        spool: Spool,
        key: SigningKey,
        partial_ttl: Duration,
    ) -> Result<Self> {
        let accepted: HashSet<(String, String)> = ledger
            .accepted()
            .await?
            .into_iter()
            .map(|a| (a.institution, a.envelope_id))
            .collect();
        let rec = spool.recover(SystemTime::now(), partial_ttl, |i, e| {
            Ok(accepted.contains(&(i.to_owned(), e.to_owned())))
        })?;
        if rec != Default::default() {
            eprintln!(
                "ingress: recovery: {} staged envelope(s) published, {} without receipt removed, {} stale partial upload(s) removed",
                rec.published, rec.removed, rec.expired_partials
            );
        }
        let endpoint = quinn::Endpoint::server(config, listen)
            .with_context(|| format!("listening on {listen}"))?;
        Ok(Self {
            endpoint,
            shared: Arc::new(Shared {
                registry,
                ledger,
                spool,
                key,
                in_progress: Mutex::new(HashSet::new()),
                institutions: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> Result<SocketAddr> {
        Ok(self.endpoint.local_addr()?)
    }

    /// Accepts connections until `shutdown` resolves, then lets uploads in progress end.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) -> Result<()> {
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                incoming = self.endpoint.accept() => {
                    let Some(incoming) = incoming else { break };
                    // Validate the source address first (one extra round trip), so a spoofed
                    // source cannot make ingress send its certificate to a victim.
                    if !incoming.remote_address_validated() {
                        let _ = incoming.retry();
                        continue;
                    }
                    tokio::spawn(handle_connection(self.shared.clone(), incoming));
                }
                () = &mut shutdown => break,
            }
        }
        self.endpoint.close(0u32.into(), b"ingress shutting down");
        self.endpoint.wait_idle().await;
        Ok(())
    }
}

async fn handle_connection(shared: Arc<Shared>, incoming: quinn::Incoming) {
    let remote = incoming.remote_address().to_string();
    let started = now_ms();
    // A connection refused before any stream still leaves its row in the ledger (R-IN-3).
    let refused = |outcome: &str, serial: Option<String>, code: &str, reason: String| Exchange {
        at_ms: ms_i64(now_ms()),
        started_ms: ms_i64(started),
        remote: remote.clone(),
        cert_serial: serial,
        outcome: outcome.into(),
        reason_code: Some(code.into()),
        reason: Some(reason),
        ..Default::default()
    };
    let conn = match incoming.await {
        Ok(c) => c,
        Err(e) => {
            let row = refused(outcome::TLS_REFUSED, None, "tls", e.to_string());
            let _ = shared.ledger.record(row).await;
            return;
        }
    };
    let peer = match identify(&conn, &shared.registry) {
        Ok(p) => p,
        Err((refusal, serial)) => {
            let row = refused(
                outcome::REFUSED,
                serial,
                refusal.code.as_str(),
                refusal.message.clone(),
            );
            let _ = shared.ledger.record(row).await;
            conn.close(1u32.into(), refusal.to_string().as_bytes());
            return;
        }
    };
    let peer = Arc::new(Peer { remote, ..peer });
    while let Ok((send, recv)) = conn.accept_bi().await {
        tokio::spawn(handle_stream(shared.clone(), peer.clone(), send, recv));
    }
}

fn identify(
    conn: &quinn::Connection,
    registry: &Registry,
) -> std::result::Result<Peer, (Refusal, Option<String>)> {
    let certs = conn
        .peer_identity()
        .and_then(|any| any.downcast::<Vec<CertificateDer<'static>>>().ok())
        .ok_or_else(|| {
            (
                Refusal::new(RefusalCode::UnknownInstitution, "no client certificate"),
                None,
            )
        })?;
    let leaf = certs.first().ok_or_else(|| {
        (
            Refusal::new(RefusalCode::UnknownInstitution, "no client certificate"),
            None,
        )
    })?;
    let serial = pki::describe(leaf).ok().map(|(s, _)| s);
    let cn = pki::subject_cn(leaf).map_err(|e| {
        (
            Refusal::new(RefusalCode::UnknownInstitution, e.to_string()),
            serial.clone(),
        )
    })?;
    if registry.limits(&cn).is_none() {
        return Err((
            Refusal::new(
                RefusalCode::UnknownInstitution,
                format!("institution {cn:?} holds a valid certificate but is not registered with this ingress"),
            ),
            serial,
        ));
    }
    Ok(Peer {
        remote: String::new(),
        institution: cn,
        serial: serial.unwrap_or_default(),
    })
}

/// How an upload ended, short of acceptance.
enum Stop {
    Refused(Refusal),
    Aborted(String),
}

impl From<Refusal> for Stop {
    fn from(r: Refusal) -> Self {
        Stop::Refused(r)
    }
}

fn internal(e: impl std::fmt::Display) -> Stop {
    Stop::Refused(Refusal::new(RefusalCode::Internal, e.to_string()))
}

/// Releases an upload's slot when the handler ends, however it ends.
struct Slot<'a> {
    shared: &'a Shared,
    key: (String, String),
    size: u64,
    day: u64,
    keep_reservation: bool,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        if let Ok(mut set) = self.shared.in_progress.lock() {
            set.remove(&self.key);
        }
        if let Ok(mut map) = self.shared.institutions.lock() {
            if let Some(st) = map.get_mut(&self.key.0) {
                st.active = st.active.saturating_sub(1);
                if !self.keep_reservation {
                    st.daily.release(self.day, self.size);
                }
            }
        }
    }
}

async fn handle_stream(
    shared: Arc<Shared>,
    peer: Arc<Peer>,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
    let started = now_ms();
    let mut ex = Exchange {
        started_ms: ms_i64(started),
        remote: peer.remote.clone(),
        institution: Some(peer.institution.clone()),
        cert_serial: Some(peer.serial.clone()),
        ..Default::default()
    };
    let result = upload(&shared, &peer, &mut send, &mut recv, &mut ex).await;
    ex.at_ms = ms_i64(now_ms());
    match result {
        // Accepted and duplicate rows were written by `upload` before the reply.
        Ok(()) => {}
        Err(Stop::Refused(refusal)) => {
            ex.outcome = outcome::REFUSED.into();
            ex.reason_code = Some(refusal.code.as_str().into());
            ex.reason = Some(refusal.message.clone());
            let _ = shared.ledger.record(ex).await;
            let _ = send.write_all(&Reply::Refused { refusal }.encode()).await;
            let _ = send.finish();
            let _ = recv.stop(0u32.into());
            let _ = send.stopped().await;
        }
        Err(Stop::Aborted(why)) => {
            ex.outcome = outcome::ABORTED.into();
            ex.reason_code = Some("aborted".into());
            ex.reason = Some(why);
            let _ = shared.ledger.record(ex).await;
        }
    }
}

fn admit(
    shared: &Shared,
    institution: &str,
    offer: &Offer,
    now: u64,
    quota_today: u64,
) -> std::result::Result<(), Refusal> {
    let limits = shared
        .registry
        .limits(institution)
        .copied()
        .ok_or_else(|| Refusal::new(RefusalCode::UnknownInstitution, "not registered"))?;
    check_offer(offer, &limits)?;
    let mut map = shared
        .institutions
        .lock()
        .map_err(|_| Refusal::new(RefusalCode::Internal, "state lock poisoned"))?;
    let st = map
        .entry(institution.to_owned())
        .or_insert_with(|| InstitutionState {
            limiter: RateLimiter::new(&limits, now),
            daily: DailyBytes::new(utc_day(now), quota_today),
            active: 0,
        });
    if st.active >= limits.max_concurrent {
        return Err(Refusal::new(
            RefusalCode::Busy,
            format!(
                "{} uploads already in progress (limit {})",
                st.active, limits.max_concurrent
            ),
        ));
    }
    if !st.limiter.take(&limits, now) {
        return Err(Refusal::new(
            RefusalCode::RateLimited,
            format!(
                "more than {} envelopes per second (burst {})",
                limits.envelopes_per_second, limits.burst
            ),
        ));
    }
    if !st.daily.reserve(&limits, utc_day(now), offer.size) {
        return Err(Refusal::new(
            RefusalCode::QuotaExceeded,
            format!(
                "daily quota of {} bytes reached; try again after 00:00 UTC",
                limits.max_bytes_per_day
            ),
        ));
    }
    st.active += 1;
    Ok(())
}

async fn reply(send: &mut quinn::SendStream, r: &Reply) -> std::result::Result<(), Stop> {
    send.write_all(&r.encode())
        .await
        .map_err(|e| Stop::Aborted(format!("sending reply: {e}")))
}

async fn upload(
    shared: &Shared,
    peer: &Peer,
    send: &mut quinn::SendStream,
    recv: &mut quinn::RecvStream,
    ex: &mut Exchange,
) -> std::result::Result<(), Stop> {
    let mut buf = [0u8; OFFER_LEN];
    match tokio::time::timeout(OFFER_TIMEOUT, recv.read_exact(&mut buf)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            return Err(Stop::Refused(Refusal::new(
                RefusalCode::Protocol,
                format!("reading the offer: {e}"),
            )))
        }
        Err(_) => {
            return Err(Stop::Refused(Refusal::new(
                RefusalCode::Protocol,
                "no offer within 30 s",
            )))
        }
    }
    let offer =
        Offer::decode(&buf).map_err(|e| Refusal::new(RefusalCode::Protocol, e.to_string()))?;
    let id = offer.envelope_id.to_string();
    let sha_hex = hex::encode(offer.sha256);
    ex.envelope_id = Some(id.clone());
    ex.sha256 = Some(sha_hex.clone());
    ex.size = Some(i64::try_from(offer.size).unwrap_or(i64::MAX));
    let inst = peer.institution.as_str();

    if let Some(prev) = shared.ledger.lookup(inst, &id).await.map_err(internal)? {
        if prev.sha256 != sha_hex {
            return Err(Stop::Refused(Refusal::new(
                RefusalCode::IdReused,
                format!(
                    "envelope id {id} was already accepted with different content (sha256 {})",
                    prev.sha256
                ),
            )));
        }
        let receipt: SignedReceipt = serde_json::from_str(&prev.receipt).map_err(internal)?;
        ex.outcome = outcome::DUPLICATE.into();
        ex.receipt = Some(prev.receipt.clone());
        ex.at_ms = ms_i64(now_ms());
        shared.ledger.record(ex.clone()).await.map_err(internal)?;
        return send_receipt(send, receipt, true).await;
    }

    let key = (inst.to_owned(), id.clone());
    {
        let mut set = shared.in_progress.lock().map_err(internal)?;
        if !set.insert(key.clone()) {
            return Err(Stop::Refused(Refusal::new(
                RefusalCode::Busy,
                format!("envelope {id} is being uploaded on another stream"),
            )));
        }
    }
    let now = now_ms();
    let day = utc_day(now);
    // The day's accepted bytes come from the ledger once per institution and process; after
    // that the in-memory count is kept (a query per offer would scan the day's rows).
    let known = shared
        .institutions
        .lock()
        .map_err(internal)?
        .contains_key(inst);
    let quota_today = if known {
        0
    } else {
        shared
            .ledger
            .bytes_since(inst, ms_i64(day * 86_400_000))
            .await
            .map_err(internal)?
    };
    if let Err(r) = admit(shared, inst, &offer, now, quota_today) {
        if let Ok(mut set) = shared.in_progress.lock() {
            set.remove(&key);
        }
        return Err(r.into());
    }
    let mut slot = Slot {
        shared,
        key,
        size: offer.size,
        day,
        keep_reservation: false,
    };

    let part = shared.spool.partial_path(inst, &id).map_err(internal)?;
    let (mut file, mut offset) = open_partial(&part, offer.size).map_err(internal)?;
    // Bytes already held are hashed again (they were received earlier, possibly by a
    // process that crashed); the header is re-checked from them below.
    let (mut hasher, mut head) = rehash(&part, offset).map_err(internal)?;
    let mut checked = false;
    if head.len() >= MAX_HEADER_LEN || offset == offer.size && offset > 0 {
        check_head(&head, inst, shared, &offer, &part)?;
        checked = true;
    }
    reply(send, &Reply::Resume { offset }).await?;

    let mut pending: Vec<u8> = Vec::with_capacity(WRITE_BUF);
    let received_before = offset;
    loop {
        let chunk = match recv.read_chunk(WRITE_BUF, true).await {
            Ok(Some(c)) => c.bytes,
            Ok(None) => break,
            Err(e) => {
                let _ = flush(&mut file, &mut pending);
                ex.bytes_received = i64::try_from(offset - received_before).unwrap_or(0);
                return Err(Stop::Aborted(format!(
                    "upload interrupted at {offset} of {} bytes: {e}",
                    offer.size
                )));
            }
        };
        if offset + chunk.len() as u64 > offer.size {
            drop(file);
            let _ = std::fs::remove_file(&part);
            return Err(Stop::Refused(Refusal::new(
                RefusalCode::SizeMismatch,
                format!("more bytes than the {} offered", offer.size),
            )));
        }
        if !checked {
            let want = MAX_HEADER_LEN.saturating_sub(head.len()).min(chunk.len());
            head.extend_from_slice(&chunk[..want]);
        }
        hasher.update(&chunk);
        pending.extend_from_slice(&chunk);
        offset += chunk.len() as u64;
        if !checked && (head.len() >= MAX_HEADER_LEN || offset == offer.size) {
            if let Err(e) = check_head(&head, inst, shared, &offer, &part) {
                drop(file);
                return Err(e);
            }
            checked = true;
        }
        if pending.len() >= WRITE_BUF {
            flush(&mut file, &mut pending).map_err(internal)?;
        }
    }
    flush(&mut file, &mut pending).map_err(internal)?;
    ex.bytes_received = i64::try_from(offset - received_before).unwrap_or(0);
    if !checked {
        check_head(&head, inst, shared, &offer, &part)?;
    }
    if offset != offer.size {
        // The client finished early: the stream says this is all there is.
        drop(file);
        let _ = std::fs::remove_file(&part);
        return Err(Stop::Refused(Refusal::new(
            RefusalCode::SizeMismatch,
            format!("stream ended after {offset} of {} bytes", offer.size),
        )));
    }
    let digest = hasher.finish();
    if digest.as_ref() != offer.sha256 {
        drop(file);
        let _ = std::fs::remove_file(&part);
        return Err(Stop::Refused(Refusal::new(
            RefusalCode::HashMismatch,
            format!(
                "received bytes hash to {}, not the offered {sha_hex}",
                hex::encode(digest.as_ref())
            ),
        )));
    }
    let content_type = SignedHeader::read_from(&mut &head[..])
        .map(|h| h.header().content_type.to_string())
        .unwrap_or_default();
    tokio::task::spawn_blocking(move || file.sync_all())
        .await
        .map_err(internal)?
        .map_err(internal)?;
    let staged = shared.spool.stage(&part, inst, &id).map_err(internal)?;
    let accepted_ms = now_ms();
    let body = ReceiptBody {
        version: 1,
        envelope_id: id.clone(),
        institution: inst.to_owned(),
        sha256: sha_hex.clone(),
        size: offer.size,
        content_type,
        received_at_ms: accepted_ms,
        ingress_key_id: shared.key.public().key_id().to_string(),
    };
    let receipt = SignedReceipt::sign(&body, &shared.key);
    let receipt_json = serde_json::to_string(&receipt).map_err(internal)?;
    ex.outcome = outcome::ACCEPTED.into();
    ex.receipt = Some(receipt_json.clone());
    ex.at_ms = ms_i64(accepted_ms);
    let row = Accepted {
        institution: inst.to_owned(),
        envelope_id: id,
        sha256: sha_hex,
        size: i64::try_from(offer.size).unwrap_or(i64::MAX),
        receipt: receipt_json,
        accepted_ms: ms_i64(accepted_ms),
    };
    if let Err(e) = shared.ledger.accept(row, ex.clone()).await {
        shared.spool.unstage(&staged);
        return Err(internal(e));
    }
    slot.keep_reservation = true;
    shared.spool.publish(&staged).map_err(internal)?;
    send_receipt(send, receipt, false).await
}

async fn send_receipt(
    send: &mut quinn::SendStream,
    receipt: SignedReceipt,
    duplicate: bool,
) -> std::result::Result<(), Stop> {
    reply(send, &Reply::Receipt { receipt, duplicate }).await?;
    let _ = send.finish();
    Ok(())
}

fn check_head(
    head: &[u8],
    inst: &str,
    shared: &Shared,
    offer: &Offer,
    part: &Path,
) -> std::result::Result<(), Stop> {
    let result = SignedHeader::read_from(&mut &head[..])
        .map_err(|e| Refusal::new(RefusalCode::NotAnEnvelope, e.to_string()))
        .and_then(|signed| check_header(&signed, inst, shared.registry.keys(), offer));
    result.map_err(|r| {
        // Nothing of a refused envelope is kept.
        let _ = std::fs::remove_file(part);
        Stop::Refused(r)
    })
}

fn flush(file: &mut std::fs::File, pending: &mut Vec<u8>) -> std::io::Result<()> {
    if !pending.is_empty() {
        file.write_all(pending)?;
        pending.clear();
    }
    Ok(())
}

/// Opens the partial file for appending; returns it and how many bytes it holds. A partial
/// longer than the offer (a different envelope with the same id?) is started afresh.
fn open_partial(part: &PathBuf, size: u64) -> std::io::Result<(std::fs::File, u64)> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .open(part)?;
    let mut len = file.metadata()?.len();
    if len > size {
        file.set_len(0)?;
        len = 0;
    }
    file.flush()?;
    Ok((file, len))
}

fn rehash(part: &Path, len: u64) -> std::io::Result<(ring::digest::Context, Vec<u8>)> {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut head = Vec::new();
    if len == 0 {
        return Ok((ctx, head));
    }
    let mut f = std::fs::File::open(part)?.take(len);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        if head.len() < MAX_HEADER_LEN {
            let want = (MAX_HEADER_LEN - head.len()).min(n);
            head.extend_from_slice(&buf[..want]);
        }
        ctx.update(&buf[..n]);
    }
    Ok((ctx, head))
}
