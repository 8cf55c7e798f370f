//! The storage SCP: accepts associations, answers C-ECHO, stores C-STORE
//! data sets through the spool. One tokio task per association; the data
//! set streams to a temp file PDV by PDV, so memory stays flat for any size.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dicom_ul::pdu::{
    AbortRQServiceProviderReason, AssociationAC, AssociationRJ, AssociationRJResult, AssociationRJServiceProviderPresentationReason,
    AssociationRJServiceUserReason, AssociationRJSource, AssociationRQ, Pdu, PresentationContextResult, PresentationContextResultReason, UserVariableItem,
};
use tokio::net::TcpListener;
use tracing::{debug, error, info, warn, Instrument};

use super::command::{self, tag, Command};
use super::connection::{ConnError, Connection, Frame};
use super::status;
use crate::config::Config;
use crate::dicom_uids as uids;
use crate::metrics::Metrics;
use crate::spool::{IncomingInstance, Spool, StoreError, StoreOutcome};

pub struct Scp {
    cfg: Arc<Config>,
    spool: Spool,
    metrics: Arc<Metrics>,
    active: AtomicUsize,
    next_id: AtomicU64,
}

/// Decrements the active-association count when an association ends.
struct ActiveGuard<'a>(&'a AtomicUsize);
impl Drop for ActiveGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// One accepted presentation context.
#[derive(Debug, Clone)]
struct Context {
    id: u8,
    abstract_syntax: String,
    transfer_syntax: String,
}

/// Where the data set of the current C-STORE goes.
enum Sink {
    File(IncomingInstance),
    /// Consume and drop the data set, then answer with this status.
    Refuse(u16, String),
}

struct PendingStore {
    rq: Command,
    context_id: u8,
    sink: Sink,
}

impl Scp {
    pub fn new(cfg: Arc<Config>, spool: Spool, metrics: Arc<Metrics>) -> Arc<Scp> {
        Arc::new(Scp { cfg, spool, metrics, active: AtomicUsize::new(0), next_id: AtomicU64::new(1) })
    }

    pub async fn run(self: Arc<Self>, listener: TcpListener) -> std::io::Result<()> {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            let me = self.clone();
            let span = tracing::info_span!("assoc", id, peer = %peer);
            tokio::spawn(
                async move {
                    let conn = Connection::new(stream, me.cfg.node.max_pdu);
                    me.handle(conn, peer).await;
                }
                .instrument(span),
            );
        }
    }

    async fn handle(&self, mut conn: Connection, peer: SocketAddr) {
        let artim = Duration::from_secs(self.cfg.node.artim_seconds);
        let rq = match conn.read_frame(artim).await {
            Ok(Frame::Other(Pdu::AssociationRQ(rq))) => rq,
            Ok(other) => {
                warn!(peer = %peer, "expected A-ASSOCIATE-RQ, got {}; aborting", describe(&other));
                conn.abort(AbortRQServiceProviderReason::UnexpectedPdu).await;
                return;
            }
            Err(e) => {
                warn!(peer = %peer, error = %e, "no valid A-ASSOCIATE-RQ; closing");
                conn.abort(e.abort_reason()).await;
                return;
            }
        };
        let calling = rq.calling_ae_title.trim().to_string();
        let span = tracing::info_span!("ae", calling_ae = %calling);
        self.associated(conn, peer, rq).instrument(span).await;
    }

    async fn associated(&self, mut conn: Connection, peer: SocketAddr, rq: AssociationRQ) {
        let active_now = self.active.fetch_add(1, Ordering::SeqCst) + 1;
        let _guard = ActiveGuard(&self.active);
        let decision = self.negotiate(&rq, peer, active_now);
        let (ac, contexts) = match decision {
            Ok(x) => x,
            Err((rj, why)) => {
                warn!(peer = %peer, called_ae = %rq.called_ae_title.trim(), "association rejected: {why}");
                Metrics::inc(&self.metrics.associations_rejected);
                let _ = conn.write_pdu(&Pdu::AssociationRJ(rj)).await;
                conn.shutdown().await;
                return;
            }
        };
        let peer_max_pdu = rq.user_variables.iter().find_map(|v| if let UserVariableItem::MaxLength(m) = v { Some(*m) } else { None }).unwrap_or(0);
        info!(
            peer = %peer,
            contexts = contexts.len(),
            proposed = rq.presentation_contexts.len(),
            "association accepted"
        );
        if let Err(e) = conn.write_pdu(&Pdu::AssociationAC(ac)).await {
            warn!(peer = %peer, error = %e, "cannot send A-ASSOCIATE-AC");
            return;
        }
        let calling = rq.calling_ae_title.trim().to_string();
        let mut stored = 0u64;
        Metrics::inc(&self.metrics.associations_accepted);
        self.metrics.associations_active.fetch_add(1, Ordering::Relaxed);
        let outcome = self.serve_messages(&mut conn, &contexts, peer_max_pdu, &calling, &mut stored).await;
        self.metrics.associations_active.fetch_sub(1, Ordering::Relaxed);
        if outcome.is_err() {
            Metrics::inc(&self.metrics.associations_aborted);
        }
        match outcome {
            Ok(()) => info!(peer = %peer, stored, "association released"),
            Err(e @ (ConnError::Closed | ConnError::PeerAborted(_))) => {
                warn!(peer = %peer, stored, "association ended without release: {e}")
            }
            Err(e) => {
                warn!(peer = %peer, stored, error = %e, "aborting association");
                conn.abort(e.abort_reason()).await;
            }
        }
    }

    /// Decides on an A-ASSOCIATE-RQ. Rejections come with the log reason.
    fn negotiate(&self, rq: &AssociationRQ, peer: SocketAddr, active: usize) -> Result<(AssociationAC, Vec<Context>), (AssociationRJ, String)> {
        let node = &self.cfg.node;
        let reject = |result, source, why: String| Err((AssociationRJ { result, source }, why));
        if active > node.max_associations {
            return reject(
                AssociationRJResult::Transient,
                AssociationRJSource::ServiceProviderPresentation(AssociationRJServiceProviderPresentationReason::LocalLimitExceeded),
                format!("{} associations open, max_associations = {}", active - 1, node.max_associations),
            );
        }
        if rq.called_ae_title.trim() != node.ae_title.trim() {
            return reject(
                AssociationRJResult::Permanent,
                AssociationRJSource::ServiceUser(AssociationRJServiceUserReason::CalledAETitleNotRecognized),
                format!("called AE `{}` is not ours (`{}`)", rq.called_ae_title.trim(), node.ae_title),
            );
        }
        let calling = rq.calling_ae_title.trim();
        if !self.cfg.accept.is_empty() {
            let ip = peer.ip().to_string();
            let allowed = self.cfg.accept.iter().any(|a| (a.calling_ae.is_empty() || a.calling_ae.trim() == calling) && (a.host.is_empty() || a.host == ip));
            if !allowed {
                return reject(
                    AssociationRJResult::Permanent,
                    AssociationRJSource::ServiceUser(AssociationRJServiceUserReason::CallingAETitleNotRecognized),
                    format!("calling AE `{calling}` from {ip} is not in [[accept]]"),
                );
            }
        }
        if rq.application_context_name.trim_end_matches('\0') != uids::APPLICATION_CONTEXT {
            return reject(
                AssociationRJResult::Permanent,
                AssociationRJSource::ServiceUser(AssociationRJServiceUserReason::ApplicationContextNameNotSupported),
                format!("application context `{}`", rq.application_context_name),
            );
        }
        let floor = node.min_free_disk_mb * 1024 * 1024;
        if let Some(free) = self.spool.free_bytes() {
            if free < floor {
                return reject(
                    AssociationRJResult::Transient,
                    AssociationRJSource::ServiceProviderPresentation(AssociationRJServiceProviderPresentationReason::LocalLimitExceeded),
                    format!("disk pressure: {} MB free < min_free_disk_mb {}", free / 1_048_576, node.min_free_disk_mb),
                );
            }
        }
        let mut results = Vec::new();
        let mut contexts = Vec::new();
        for pc in &rq.presentation_contexts {
            let abs = pc.abstract_syntax.trim_end_matches('\0');
            let known = abs == uids::VERIFICATION || uids::is_standard_storage_sop_class(abs) || node.private_sop_classes.iter().any(|p| p == abs);
            let chosen = pc.transfer_syntaxes.iter().map(|t| t.trim_end_matches('\0')).find(|t| {
                if abs == uids::VERIFICATION {
                    uids::is_uncompressed(t)
                } else {
                    uids::is_supported_transfer_syntax(t)
                }
            });
            let (reason, ts) = match (known, chosen) {
                (false, _) => (PresentationContextResultReason::AbstractSyntaxNotSupported, uids::IMPLICIT_VR_LE.to_string()),
                (true, None) => (PresentationContextResultReason::TransferSyntaxesNotSupported, uids::IMPLICIT_VR_LE.to_string()),
                (true, Some(t)) => {
                    contexts.push(Context { id: pc.id, abstract_syntax: abs.to_string(), transfer_syntax: t.to_string() });
                    (PresentationContextResultReason::Acceptance, t.to_string())
                }
            };
            if reason != PresentationContextResultReason::Acceptance {
                info!("presentation context {} ({} - {}) rejected: {}", pc.id, abs, uids::sop_class_name(abs), reason);
            }
            results.push(PresentationContextResult { id: pc.id, reason, transfer_syntax: ts });
        }
        let ac = AssociationAC {
            protocol_version: 1,
            calling_ae_title: rq.calling_ae_title.clone(),
            called_ae_title: rq.called_ae_title.clone(),
            application_context_name: uids::APPLICATION_CONTEXT.to_string(),
            presentation_contexts: results,
            user_variables: vec![
                UserVariableItem::MaxLength(node.max_pdu),
                UserVariableItem::ImplementationClassUID(uids::IMPLEMENTATION_CLASS_UID.to_string()),
                UserVariableItem::ImplementationVersionName(uids::IMPLEMENTATION_VERSION_NAME.to_string()),
            ],
        };
        Ok((ac, contexts))
    }

    /// The DIMSE loop of one association. Ok on orderly release.
    async fn serve_messages(&self, conn: &mut Connection, contexts: &[Context], peer_max_pdu: u32, calling: &str, stored: &mut u64) -> Result<(), ConnError> {
        let idle = Duration::from_secs(self.cfg.node.idle_seconds);
        let mut command_buf: Vec<u8> = Vec::new();
        let mut pending: Option<PendingStore> = None;
        loop {
            let pdvs = match conn.read_frame(idle).await? {
                Frame::PData(p) => p,
                Frame::Other(Pdu::ReleaseRQ) => {
                    if pending.is_some() {
                        warn!("release requested in the middle of a C-STORE data set; partial instance dropped");
                    }
                    conn.write_pdu(&Pdu::ReleaseRP).await?;
                    conn.shutdown().await;
                    return Ok(());
                }
                Frame::Other(Pdu::AbortRQ { source }) => {
                    if let Some(p) = &pending {
                        warn!(sop_uid = %p.rq.str(tag::AFFECTED_SOP_INSTANCE_UID).unwrap_or_default(),
                              "peer aborted in the middle of a C-STORE data set; partial instance dropped");
                    }
                    return Err(ConnError::PeerAborted(format!("{source:?}")));
                }
                Frame::Other(p) => {
                    return Err(ConnError::Malformed(format!("unexpected {} during an association", p.short_description())));
                }
            };
            for pdv in pdvs {
                let Some(ctx) = contexts.iter().find(|c| c.id == pdv.context_id) else {
                    return Err(ConnError::Malformed(format!("PDV on presentation context {} that was not accepted", pdv.context_id)));
                };
                if pdv.is_command {
                    if pending.is_some() {
                        return Err(ConnError::Malformed("command PDV while a data set was expected".into()));
                    }
                    command_buf.extend_from_slice(&pdv.data);
                    if command_buf.len() > 64 * 1024 {
                        return Err(ConnError::Malformed("command set larger than 64 KiB".into()));
                    }
                    if !pdv.is_last {
                        continue;
                    }
                    let cmd = Command::decode(&command_buf).map_err(|e| ConnError::Malformed(format!("command set: {e}")))?;
                    command_buf.clear();
                    pending = self.on_command(conn, ctx, cmd, peer_max_pdu, calling).await?;
                } else {
                    let Some(p) = pending.as_mut() else {
                        return Err(ConnError::Malformed("data PDV without a preceding command".into()));
                    };
                    if p.context_id != pdv.context_id {
                        return Err(ConnError::Malformed("data PDV on a different presentation context than its command".into()));
                    }
                    if let Sink::File(inc) = &mut p.sink {
                        // Writes go to a 1 MiB buffer and the page cache; the
                        // slow part (fsync) happens on a blocking thread below.
                        self.metrics.bytes_received.fetch_add(pdv.data.len() as u64, Ordering::Relaxed);
                        if let Err(e) = inc.write(&pdv.data) {
                            error!(sop_uid = %inc.sop_uid, error = %e, "cannot write incoming instance");
                            p.sink = Sink::Refuse(status::OUT_OF_RESOURCES, format!("write failed: {e}"));
                        }
                    }
                    if pdv.is_last {
                        let p = pending.take().expect("checked above");
                        if self.finish_store(conn, ctx, p, peer_max_pdu).await? {
                            *stored += 1;
                        }
                    }
                }
            }
        }
    }

    /// Handles a complete command. Returns the pending store for C-STORE.
    async fn on_command(
        &self,
        conn: &mut Connection,
        ctx: &Context,
        cmd: Command,
        peer_max_pdu: u32,
        calling: &str,
    ) -> Result<Option<PendingStore>, ConnError> {
        let field = cmd.command_field().map_err(|e| ConnError::Malformed(e.to_string()))?;
        match field {
            command::C_ECHO_RQ => {
                let rsp = Command::response_to(&cmd, command::C_ECHO_RSP, status::SUCCESS, None);
                conn.write_message(ctx.id, true, &rsp.encode(), peer_max_pdu).await?;
                debug!("C-ECHO answered");
                Ok(None)
            }
            command::C_STORE_RQ => {
                let sop_uid = cmd.str(tag::AFFECTED_SOP_INSTANCE_UID).unwrap_or_default();
                let sop_class = cmd.str(tag::AFFECTED_SOP_CLASS_UID).unwrap_or_default();
                if !cmd.has_data_set() {
                    let rsp = Command::response_to(&cmd, command::C_STORE_RSP, status::CANNOT_UNDERSTAND, Some("C-STORE-RQ without a data set"));
                    conn.write_message(ctx.id, true, &rsp.encode(), peer_max_pdu).await?;
                    return Ok(None);
                }
                let sink = if sop_class != ctx.abstract_syntax {
                    Sink::Refuse(status::SOP_CLASS_NOT_SUPPORTED, format!("SOP class {sop_class} sent on a {} context", ctx.abstract_syntax))
                } else if !crate::config::is_uid(&sop_uid) {
                    Sink::Refuse(status::CANNOT_UNDERSTAND, format!("Affected SOP Instance UID `{sop_uid}` is not a UID"))
                } else if self.low_disk() {
                    Sink::Refuse(status::OUT_OF_RESOURCES, "disk space below min_free_disk_mb".into())
                } else {
                    match self.spool.begin(&sop_class, &sop_uid, &ctx.transfer_syntax, calling) {
                        Ok(inc) => Sink::File(inc),
                        Err(e) => {
                            error!(%sop_uid, error = %e, "cannot open spool temp file");
                            Sink::Refuse(status::OUT_OF_RESOURCES, format!("spool: {e}"))
                        }
                    }
                };
                Ok(Some(PendingStore { rq: cmd, context_id: ctx.id, sink }))
            }
            other => {
                warn!("unsupported DIMSE command 0x{other:04X}; answering 'unrecognized operation'");
                if cmd.has_data_set() {
                    // We would have to swallow its data set; simpler and
                    // standard-conformant to abort this unexpected exchange.
                    return Err(ConnError::Malformed(format!("unsupported DIMSE command 0x{other:04X} with a data set")));
                }
                let rsp = Command::response_to(&cmd, other | 0x8000, status::UNRECOGNIZED_OPERATION, None);
                conn.write_message(ctx.id, true, &rsp.encode(), peer_max_pdu).await?;
                Ok(None)
            }
        }
    }

    /// Commits (or refuses) a received data set and answers the C-STORE.
    async fn finish_store(&self, conn: &mut Connection, ctx: &Context, p: PendingStore, peer_max_pdu: u32) -> Result<bool, ConnError> {
        let sop_uid = p.rq.str(tag::AFFECTED_SOP_INSTANCE_UID).unwrap_or_default();
        let (st, comment, ok) = match p.sink {
            Sink::Refuse(st, why) => {
                warn!(%sop_uid, status = format!("{st:04X}"), "C-STORE refused: {why}");
                (st, Some(why), false)
            }
            Sink::File(inc) => {
                let spool = self.spool.clone();
                let outcome = tokio::task::spawn_blocking(move || spool.commit(inc)).await;
                match outcome {
                    Ok(Ok(StoreOutcome::Stored(h))) => {
                        Metrics::inc(&self.metrics.instances_stored);
                        debug!(%sop_uid, study_uid = %h.study_uid, "stored");
                        (status::SUCCESS, None, true)
                    }
                    Ok(Ok(StoreOutcome::Duplicate(h))) => {
                        Metrics::inc(&self.metrics.instances_duplicate);
                        info!(%sop_uid, study_uid = %h.study_uid, "duplicate SOP Instance UID; first copy kept");
                        (status::SUCCESS, None, false)
                    }
                    Ok(Err(e)) => {
                        let st = match e {
                            StoreError::Unreadable { .. } => status::CANNOT_UNDERSTAND,
                            StoreError::ClassMismatch { .. } => status::DATA_SET_DOES_NOT_MATCH_SOP_CLASS,
                            StoreError::Resources { .. } => status::OUT_OF_RESOURCES,
                        };
                        warn!(%sop_uid, sop_class = %ctx.abstract_syntax, status = format!("{st:04X}"), "C-STORE rejected: {e}");
                        (st, Some(e.to_string()), false)
                    }
                    Err(join) => {
                        error!(%sop_uid, "store task failed: {join}");
                        (status::OUT_OF_RESOURCES, Some("internal error while storing".to_string()), false)
                    }
                }
            }
        };
        if st != status::SUCCESS {
            Metrics::inc(&self.metrics.instances_refused);
        }
        let rsp = Command::response_to(&p.rq, command::C_STORE_RSP, st, comment.as_deref());
        conn.write_message(ctx.id, true, &rsp.encode(), peer_max_pdu).await?;
        Ok(ok)
    }

    fn low_disk(&self) -> bool {
        let floor = self.cfg.node.min_free_disk_mb * 1024 * 1024;
        self.spool.free_bytes().is_some_and(|f| f < floor)
    }
}

fn describe(f: &Frame) -> String {
    match f {
        Frame::PData(_) => "P-DATA-TF".into(),
        Frame::Other(p) => p.short_description().to_string(),
    }
}
