//! The SCU side: one association to a remote AE, C-ECHO and C-STORE of
//! Part 10 files streamed from disk, with re-encoding to an uncompressed
//! transfer syntax when the peer refuses the file's own.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use dicom_ul::pdu::{AssociationRQ, Pdu, PresentationContextProposed, PresentationContextResultReason, UserVariableItem};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::net::TcpStream;

use super::command::{self, tag, Command};
use super::connection::{max_fragment, ConnError, Connection, Frame};
use super::RemoteAe;
use crate::dicom_uids as uids;
use crate::part10;

#[derive(Debug, thiserror::Error)]
pub enum ScuError {
    #[error("cannot connect to {remote}: {reason}")]
    Connect { remote: String, reason: String },
    #[error("{remote} rejected the association: {reason}")]
    Rejected { remote: String, reason: String, transient: bool },
    #[error("{remote}: {error}")]
    Conn { remote: String, error: ConnError },
    #[error("{remote}: protocol error: {reason}")]
    Protocol { remote: String, reason: String },
    #[error("{0}")]
    Part10(#[from] part10::Part10Error),
    #[error("{path}: {reason}")]
    Encode { path: String, reason: String },
    #[error("{remote} accepted no presentation context for SOP class {sop_class} ({ts})")]
    NoContext { remote: String, sop_class: String, ts: String },
}

#[derive(Debug, Clone)]
pub struct ScuOptions {
    pub calling_ae: String,
    pub connect_timeout: Duration,
    pub dimse_timeout: Duration,
    pub max_pdu: u32,
}

impl Default for ScuOptions {
    fn default() -> Self {
        ScuOptions { calling_ae: "AINODE".into(), connect_timeout: Duration::from_secs(10), dimse_timeout: Duration::from_secs(60), max_pdu: 262144 }
    }
}

#[derive(Debug, Clone)]
struct Accepted {
    id: u8,
    abstract_syntax: String,
    transfer_syntax: String,
}

/// The presentation contexts to propose for files of these (SOP class,
/// transfer syntax) pairs: each pair as is, plus an uncompressed fallback
/// per SOP class. At most 128 contexts fit an association.
pub fn propose_for(pairs: &BTreeSet<(String, String)>) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    let mut classes = BTreeSet::new();
    for (class, ts) in pairs {
        out.push((class.clone(), vec![ts.clone()]));
        classes.insert(class.clone());
    }
    for class in classes {
        out.push((class, vec![uids::EXPLICIT_VR_LE.to_string(), uids::IMPLICIT_VR_LE.to_string()]));
    }
    out
}

pub struct Association {
    conn: Connection,
    remote: String,
    accepted: Vec<Accepted>,
    peer_max_pdu: u32,
    next_message_id: u16,
    dimse_timeout: Duration,
}

impl Association {
    pub async fn connect(remote: &RemoteAe, opts: &ScuOptions, proposals: &[(String, Vec<String>)]) -> Result<Association, ScuError> {
        let name = remote.to_string();
        if proposals.is_empty() || proposals.len() > 128 {
            return Err(ScuError::Protocol { remote: name, reason: format!("{} presentation contexts (1..=128 allowed)", proposals.len()) });
        }
        let addr = format!("{}:{}", remote.host, remote.port);
        let stream = match tokio::time::timeout(opts.connect_timeout, TcpStream::connect(&addr)).await {
            Err(_) => return Err(ScuError::Connect { remote: name, reason: format!("timed out after {:?}", opts.connect_timeout) }),
            Ok(Err(e)) => return Err(ScuError::Connect { remote: name, reason: e.to_string() }),
            Ok(Ok(s)) => s,
        };
        let mut conn = Connection::new(stream, opts.max_pdu);
        let presentation_contexts: Vec<PresentationContextProposed> = proposals
            .iter()
            .enumerate()
            .map(|(i, (abs, ts))| PresentationContextProposed { id: (2 * i + 1) as u8, abstract_syntax: abs.clone(), transfer_syntaxes: ts.clone() })
            .collect();
        let rq = AssociationRQ {
            protocol_version: 1,
            calling_ae_title: opts.calling_ae.clone(),
            called_ae_title: remote.ae_title.clone(),
            application_context_name: uids::APPLICATION_CONTEXT.to_string(),
            presentation_contexts: presentation_contexts.clone(),
            user_variables: vec![
                UserVariableItem::MaxLength(opts.max_pdu),
                UserVariableItem::ImplementationClassUID(uids::IMPLEMENTATION_CLASS_UID.to_string()),
                UserVariableItem::ImplementationVersionName(uids::IMPLEMENTATION_VERSION_NAME.to_string()),
            ],
        };
        let cerr = |error| ScuError::Conn { remote: name.clone(), error };
        conn.write_pdu(&Pdu::AssociationRQ(rq)).await.map_err(cerr)?;
        let ac = match conn.read_frame(opts.dimse_timeout).await.map_err(cerr)? {
            Frame::Other(Pdu::AssociationAC(ac)) => ac,
            Frame::Other(Pdu::AssociationRJ(rj)) => {
                let transient = rj.result == dicom_ul::pdu::AssociationRJResult::Transient;
                return Err(ScuError::Rejected { remote: name, reason: format!("{:?}: {}", rj.result, rj.source), transient });
            }
            Frame::Other(Pdu::AbortRQ { source }) => return Err(ScuError::Rejected { remote: name, reason: format!("aborted: {source:?}"), transient: true }),
            _ => return Err(ScuError::Protocol { remote: name, reason: "unexpected answer to A-ASSOCIATE-RQ".into() }),
        };
        let peer_max_pdu = ac.user_variables.iter().find_map(|v| if let UserVariableItem::MaxLength(m) = v { Some(*m) } else { None }).unwrap_or(0);
        let accepted = ac
            .presentation_contexts
            .iter()
            .filter(|r| r.reason == PresentationContextResultReason::Acceptance)
            .filter_map(|r| {
                presentation_contexts.iter().find(|p| p.id == r.id).map(|p| Accepted {
                    id: r.id,
                    abstract_syntax: p.abstract_syntax.clone(),
                    transfer_syntax: r.transfer_syntax.trim_end_matches('\0').to_string(),
                })
            })
            .collect();
        Ok(Association { conn, remote: name, accepted, peer_max_pdu, next_message_id: 1, dimse_timeout: opts.dimse_timeout })
    }

    pub fn remote(&self) -> &str {
        &self.remote
    }

    /// The context to send a (class, ts) file on: its own syntax if accepted,
    /// else an uncompressed one (the file is then re-encoded).
    fn context_for(&self, sop_class: &str, ts: &str) -> Option<&Accepted> {
        let same_class = || self.accepted.iter().filter(move |a| a.abstract_syntax == sop_class);
        same_class()
            .find(|a| a.transfer_syntax == ts)
            .or_else(|| same_class().find(|a| a.transfer_syntax == uids::EXPLICIT_VR_LE))
            .or_else(|| same_class().find(|a| a.transfer_syntax == uids::IMPLICIT_VR_LE))
    }

    fn message_id(&mut self) -> u16 {
        let id = self.next_message_id;
        self.next_message_id = self.next_message_id.wrapping_add(1).max(1);
        id
    }

    pub async fn echo(&mut self) -> Result<u16, ScuError> {
        let ctx = self.accepted.iter().find(|a| a.abstract_syntax == uids::VERIFICATION).map(|a| a.id).ok_or_else(|| ScuError::NoContext {
            remote: self.remote.clone(),
            sop_class: uids::VERIFICATION.into(),
            ts: "-".into(),
        })?;
        let id = self.message_id();
        let rq = Command::c_echo_rq(id);
        self.send_command(ctx, &rq).await?;
        let rsp = self.read_response(id).await?;
        rsp.status().map_err(|e| ScuError::Protocol { remote: self.remote.clone(), reason: e.to_string() })
    }

    /// Sends one Part 10 file. Returns the peer's status and error comment.
    pub async fn store_file(&mut self, path: &Path) -> Result<(u16, Option<String>), ScuError> {
        let meta = part10::read_meta(path)?;
        let ctx = self.context_for(&meta.sop_class_uid, &meta.transfer_syntax).cloned().ok_or_else(|| ScuError::NoContext {
            remote: self.remote.clone(),
            sop_class: meta.sop_class_uid.clone(),
            ts: meta.transfer_syntax.clone(),
        })?;
        let id = self.message_id();
        let rq = Command::c_store_rq(id, &meta.sop_class_uid, &meta.sop_instance_uid);
        self.send_command(ctx.id, &rq).await?;
        if ctx.transfer_syntax == meta.transfer_syntax {
            self.stream_dataset(ctx.id, path, meta.dataset_offset).await?;
        } else {
            let bytes = reencode(path, &meta.transfer_syntax, &ctx.transfer_syntax).await?;
            let r = self.remote.clone();
            self.conn.write_message(ctx.id, false, &bytes, self.peer_max_pdu).await.map_err(|error| ScuError::Conn { remote: r, error })?;
        }
        let rsp = self.read_response(id).await?;
        let st = rsp.status().map_err(|e| ScuError::Protocol { remote: self.remote.clone(), reason: e.to_string() })?;
        Ok((st, rsp.str(tag::ERROR_COMMENT)))
    }

    async fn stream_dataset(&mut self, ctx: u8, path: &Path, offset: u64) -> Result<(), ScuError> {
        let io = |e: std::io::Error| ScuError::Part10(part10::Part10Error::Io { path: path.display().to_string(), error: e });
        let mut f = tokio::fs::File::open(path).await.map_err(io)?;
        let total = f.metadata().await.map_err(io)?.len().saturating_sub(offset);
        f.seek(std::io::SeekFrom::Start(offset)).await.map_err(io)?;
        let chunk = max_fragment(self.peer_max_pdu).min(4 << 20);
        let mut buf = vec![0u8; chunk];
        let mut left = total;
        if left == 0 {
            return self.conn.write_pdv(ctx, false, true, &[]).await.map_err(|error| ScuError::Conn { remote: self.remote.clone(), error });
        }
        while left > 0 {
            let n = (left as usize).min(chunk);
            f.read_exact(&mut buf[..n]).await.map_err(io)?;
            left -= n as u64;
            self.conn.write_pdv(ctx, false, left == 0, &buf[..n]).await.map_err(|error| ScuError::Conn { remote: self.remote.clone(), error })?;
        }
        Ok(())
    }

    async fn send_command(&mut self, ctx: u8, cmd: &Command) -> Result<(), ScuError> {
        let bytes = cmd.encode();
        let max = self.peer_max_pdu;
        self.conn.write_message(ctx, true, &bytes, max).await.map_err(|error| ScuError::Conn { remote: self.remote.clone(), error })
    }

    async fn read_response(&mut self, message_id: u16) -> Result<Command, ScuError> {
        let mut buf = Vec::new();
        loop {
            let frame = self.conn.read_frame(self.dimse_timeout).await.map_err(|error| ScuError::Conn { remote: self.remote.clone(), error })?;
            let pdvs = match frame {
                Frame::PData(p) => p,
                Frame::Other(Pdu::AbortRQ { source }) => {
                    return Err(ScuError::Protocol { remote: self.remote.clone(), reason: format!("peer aborted: {source:?}") })
                }
                Frame::Other(p) => return Err(ScuError::Protocol { remote: self.remote.clone(), reason: format!("unexpected {}", p.short_description()) }),
            };
            for pdv in pdvs {
                if !pdv.is_command {
                    return Err(ScuError::Protocol { remote: self.remote.clone(), reason: "unexpected data set in a response".into() });
                }
                buf.extend_from_slice(&pdv.data);
                if pdv.is_last {
                    let cmd = Command::decode(&buf).map_err(|e| ScuError::Protocol { remote: self.remote.clone(), reason: e.to_string() })?;
                    let responded = cmd.u16(tag::MESSAGE_ID_RESPONDED_TO).unwrap_or(0);
                    if responded != message_id {
                        return Err(ScuError::Protocol {
                            remote: self.remote.clone(),
                            reason: format!("response to message {responded}, expected {message_id}"),
                        });
                    }
                    let field = cmd.command_field().unwrap_or(0);
                    if field & 0x8000 == 0 {
                        return Err(ScuError::Protocol { remote: self.remote.clone(), reason: format!("expected a response, got 0x{field:04X}") });
                    }
                    let _ = command::C_STORE_RSP;
                    return Ok(cmd);
                }
            }
        }
    }

    pub async fn release(mut self) {
        if self.conn.write_pdu(&Pdu::ReleaseRQ).await.is_ok() {
            // Wait briefly for A-RELEASE-RP; the peer may also just close.
            let _ = tokio::time::timeout(Duration::from_secs(5), self.conn.read_frame(Duration::from_secs(5))).await;
        }
        self.conn.shutdown().await;
    }
}

/// Re-encodes a file's data set into an uncompressed transfer syntax for a
/// peer that refused the file's own; compressed pixel data is decoded.
async fn reencode(path: &Path, from: &str, to: &str) -> Result<Vec<u8>, ScuError> {
    use crate::imaging::decode;
    use dicom_pixeldata::Transcode;
    use dicom_transfer_syntax_registry::{TransferSyntaxIndex, TransferSyntaxRegistry};
    let p = path.to_path_buf();
    let (from, to) = (from.to_string(), to.to_string());
    tokio::task::spawn_blocking(move || {
        let err = |reason: String| ScuError::Encode { path: p.display().to_string(), reason };
        let ts = TransferSyntaxRegistry.get(&to).ok_or_else(|| err(format!("unknown transfer syntax {to}")))?;
        let mut obj = dicom_object::open_file(&p).map_err(|e| err(e.to_string()))?;
        if decode::is_jpeg_ls(&from) && !cfg!(feature = "charls") {
            // no JPEG-LS codec in dicom-pixeldata without CharLS: our decoder gives the native samples
            if ts.is_encapsulated_pixel_data() {
                return Err(err(format!("cannot transcode {from} to {to} (compressed): {}", decode::CHARLS_HINT)));
            }
            decode::decompress_jpeg_ls(&mut obj).map_err(|e| err(format!("cannot transcode {from} to {to}: {e}")))?;
        } else {
            obj.transcode(ts).map_err(|e| err(format!("cannot transcode {from} to {to}: {e}")))?;
        }
        let mut out = Vec::new();
        obj.write_dataset_with_ts(&mut out, ts).map_err(|e| err(e.to_string()))?;
        Ok(out)
    })
    .await
    .map_err(|e| ScuError::Encode { path: path.display().to_string(), reason: e.to_string() })?
}
