//! PDU framing over a TCP stream (the "connection" of the mini-redis split):
//! reads one PDU at a time with a length limit, writes PDUs. P-DATA is parsed
//! here into PDVs without extra copies; every other PDU goes through dicom-ul.

use std::time::Duration;

use dicom_ul::pdu::{read_pdu, write_pdu, AbortRQServiceProviderReason, AbortRQSource, Pdu};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

/// Association-setup PDUs larger than this are refused whatever max_pdu says.
const MAX_CONTROL_PDU: u32 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error("connection closed by peer")]
    Closed,
    #[error("peer sent A-ABORT ({0})")]
    PeerAborted(String),
    #[error("timed out after {0:?} waiting for the peer")]
    Timeout(Duration),
    #[error("PDU of {len} bytes exceeds the limit of {max} bytes")]
    Oversized { len: u32, max: u32 },
    #[error("unrecognised PDU type 0x{0:02X}")]
    UnknownPdu(u8),
    #[error("malformed PDU: {0}")]
    Malformed(String),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

impl ConnError {
    /// The A-ABORT reason that tells the peer what went wrong.
    pub fn abort_reason(&self) -> AbortRQServiceProviderReason {
        match self {
            ConnError::UnknownPdu(_) => AbortRQServiceProviderReason::UnrecognizedPdu,
            ConnError::Oversized { .. } => AbortRQServiceProviderReason::InvalidPduParameter,
            ConnError::Malformed(_) => AbortRQServiceProviderReason::InvalidPduParameter,
            _ => AbortRQServiceProviderReason::ReasonNotSpecified,
        }
    }
}

/// One presentation data value of a P-DATA-TF PDU.
#[derive(Debug)]
pub struct Pdv {
    pub context_id: u8,
    pub is_command: bool,
    pub is_last: bool,
    pub data: Vec<u8>,
}

#[derive(Debug)]
pub enum Frame {
    PData(Vec<Pdv>),
    Other(Pdu),
}

pub struct Connection {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    /// Largest P-DATA PDU body we accept.
    pub max_pdu_in: u32,
    buf: Vec<u8>,
}

impl Connection {
    pub fn new(stream: TcpStream, max_pdu_in: u32) -> Connection {
        // dicom-ul never sets TCP_NODELAY; without it every small response
        // waits for the peer's delayed ACK (~40 ms per C-STORE).
        let _ = stream.set_nodelay(true);
        let (r, w) = stream.into_split();
        Connection { reader: BufReader::with_capacity(256 * 1024, r), writer: w, max_pdu_in, buf: Vec::new() }
    }

    /// Reads the next PDU, waiting at most `timeout`.
    pub async fn read_frame(&mut self, timeout: Duration) -> Result<Frame, ConnError> {
        let mut header = [0u8; 6];
        match tokio::time::timeout(timeout, self.reader.read_exact(&mut header)).await {
            Err(_) => return Err(ConnError::Timeout(timeout)),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(ConnError::Closed),
            Ok(Err(e)) => return Err(e.into()),
            Ok(Ok(_)) => {}
        }
        let pdu_type = header[0];
        let len = u32::from_be_bytes(header[2..6].try_into().unwrap());
        let max = match pdu_type {
            0x04 => self.max_pdu_in,
            0x01..=0x07 => MAX_CONTROL_PDU,
            other => return Err(ConnError::UnknownPdu(other)),
        };
        if len > max {
            return Err(ConnError::Oversized { len, max });
        }
        self.buf.resize(len as usize, 0);
        // A PDU body that never completes is a stalled peer: same timeout.
        match tokio::time::timeout(timeout, self.reader.read_exact(&mut self.buf)).await {
            Err(_) => return Err(ConnError::Timeout(timeout)),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(ConnError::Closed),
            Ok(Err(e)) => return Err(e.into()),
            Ok(Ok(_)) => {}
        }
        self.quick_ack();
        if pdu_type == 0x04 {
            return parse_pdata(&self.buf).map(Frame::PData);
        }
        let mut whole = Vec::with_capacity(6 + self.buf.len());
        whole.extend_from_slice(&header);
        whole.extend_from_slice(&self.buf);
        match read_pdu(&whole[..], MAX_CONTROL_PDU + 6, false) {
            Ok(Some(pdu)) => Ok(Frame::Other(pdu)),
            Ok(None) => Err(ConnError::Malformed("incomplete PDU".into())),
            Err(e) => Err(ConnError::Malformed(e.to_string())),
        }
    }

    /// Asks Linux to ACK at once instead of delaying the ACK: a sender with
    /// Nagle's algorithm on (stock dcmtk) otherwise stalls ~40 ms whenever
    /// it writes a small PDU (a command) after a large one. The kernel clears
    /// the flag again, so it is set after every PDU.
    fn quick_ack(&self) {
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            let fd = self.reader.get_ref().as_ref().as_raw_fd();
            let one: libc::c_int = 1;
            // SAFETY: valid socket fd and a c_int option value of the right size.
            unsafe {
                libc::setsockopt(
                    fd,
                    libc::IPPROTO_TCP,
                    libc::TCP_QUICKACK,
                    &one as *const libc::c_int as *const libc::c_void,
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                );
            }
        }
    }

    pub async fn write_pdu(&mut self, pdu: &Pdu) -> Result<(), ConnError> {
        let mut out = Vec::with_capacity(512);
        write_pdu(&mut out, pdu).map_err(|e| ConnError::Malformed(e.to_string()))?;
        self.writer.write_all(&out).await?;
        Ok(())
    }

    /// Writes one P-DATA-TF PDU holding one PDV.
    pub async fn write_pdv(&mut self, context_id: u8, is_command: bool, is_last: bool, data: &[u8]) -> Result<(), ConnError> {
        let item_len = data.len() as u32 + 2;
        let mut head = [0u8; 12];
        head[0] = 0x04;
        head[2..6].copy_from_slice(&(item_len + 4).to_be_bytes());
        head[6..10].copy_from_slice(&item_len.to_be_bytes());
        head[10] = context_id;
        head[11] = (is_command as u8) | ((is_last as u8) << 1);
        if data.len() <= 1 << 20 {
            // One write per PDU: with TCP_NODELAY a separate 12-byte header
            // write would go out as its own packet.
            let mut pdu = Vec::with_capacity(12 + data.len());
            pdu.extend_from_slice(&head);
            pdu.extend_from_slice(data);
            self.writer.write_all(&pdu).await?;
        } else {
            self.writer.write_all(&head).await?;
            self.writer.write_all(data).await?;
        }
        Ok(())
    }

    /// Sends a message (command, or data set) split into PDVs that fit `max_pdu_out`.
    pub async fn write_message(&mut self, context_id: u8, is_command: bool, data: &[u8], max_pdu_out: u32) -> Result<(), ConnError> {
        let chunk = max_fragment(max_pdu_out);
        if data.is_empty() {
            return self.write_pdv(context_id, is_command, true, data).await;
        }
        let mut chunks = data.chunks(chunk).peekable();
        while let Some(c) = chunks.next() {
            self.write_pdv(context_id, is_command, chunks.peek().is_none(), c).await?;
        }
        Ok(())
    }

    pub async fn abort(&mut self, reason: AbortRQServiceProviderReason) {
        let pdu = Pdu::AbortRQ { source: AbortRQSource::ServiceProvider(reason) };
        let _ = self.write_pdu(&pdu).await;
        let _ = self.writer.shutdown().await;
    }

    pub async fn shutdown(&mut self) {
        let _ = self.writer.flush().await;
        let _ = self.writer.shutdown().await;
    }
}

/// Largest PDV payload for a peer's maximum PDU length (0 = unlimited).
pub fn max_fragment(max_pdu_out: u32) -> usize {
    let max = if max_pdu_out == 0 { 1 << 20 } else { max_pdu_out.min(1 << 22) };
    (max as usize).saturating_sub(6).max(1)
}

fn parse_pdata(body: &[u8]) -> Result<Vec<Pdv>, ConnError> {
    let mut pdvs = Vec::with_capacity(1);
    let mut pos = 0usize;
    while pos < body.len() {
        if body.len() - pos < 6 {
            return Err(ConnError::Malformed("truncated PDV item header".into()));
        }
        let item_len = u32::from_be_bytes(body[pos..pos + 4].try_into().unwrap()) as usize;
        if item_len < 2 || item_len > body.len() - pos - 4 {
            return Err(ConnError::Malformed(format!("PDV item length {item_len} does not fit the PDU")));
        }
        let context_id = body[pos + 4];
        let mch = body[pos + 5];
        pdvs.push(Pdv { context_id, is_command: mch & 1 == 1, is_last: mch & 2 == 2, data: body[pos + 6..pos + 4 + item_len].to_vec() });
        pos += 4 + item_len;
    }
    if pdvs.is_empty() {
        return Err(ConnError::Malformed("P-DATA-TF without PDV items".into()));
    }
    Ok(pdvs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pdata_parsing() {
        let mut body = vec![0, 0, 0, 5, 3, 0b11, 1, 2, 3];
        body.extend_from_slice(&[0, 0, 0, 3, 5, 0b00, 9]);
        let pdvs = parse_pdata(&body).unwrap();
        assert_eq!(pdvs.len(), 2);
        assert!(pdvs[0].is_command && pdvs[0].is_last);
        assert_eq!(pdvs[0].data, vec![1, 2, 3]);
        assert_eq!(pdvs[1].context_id, 5);
        assert!(!pdvs[1].is_command && !pdvs[1].is_last);
        // item length that runs past the PDU
        assert!(parse_pdata(&[0, 0, 0, 50, 1, 0, 1]).is_err());
    }

    #[test]
    fn fragment_size() {
        assert_eq!(max_fragment(16384), 16378);
        assert_eq!(max_fragment(0), (1 << 20) - 6);
    }
}
