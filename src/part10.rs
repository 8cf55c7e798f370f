//! DICOM Part 10 file framing: the preamble and File Meta Information group.
//! The node stores data sets byte for byte as received, so it writes the meta
//! group itself and needs the data set's offset to send a file back out.

use std::io::{Read, Write};
use std::path::Path;

use crate::dicom_uids::{IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME};

#[derive(Debug, Clone, PartialEq)]
pub struct FileMeta {
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
    pub transfer_syntax: String,
    /// Byte offset of the data set in the file.
    pub dataset_offset: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum Part10Error {
    #[error("{path}: not a DICOM Part 10 file (no DICM prefix)")]
    NotDicom { path: String },
    #[error("{path}: file meta information is malformed: {reason}")]
    BadMeta { path: String, reason: String },
    #[error("{path}: {error}")]
    Io { path: String, error: std::io::Error },
}

/// Writes preamble, "DICM" and the File Meta Information group.
pub fn write_meta<W: Write>(w: &mut W, sop_class: &str, sop_instance: &str, ts: &str, source_ae: &str) -> std::io::Result<u64> {
    let mut group = Vec::with_capacity(256);
    put(&mut group, 0x0001, b"OB", &[0, 1]);
    put(&mut group, 0x0002, b"UI", &uid_bytes(sop_class));
    put(&mut group, 0x0003, b"UI", &uid_bytes(sop_instance));
    put(&mut group, 0x0010, b"UI", &uid_bytes(ts));
    put(&mut group, 0x0012, b"UI", &uid_bytes(IMPLEMENTATION_CLASS_UID));
    put(&mut group, 0x0013, b"SH", &text_bytes(IMPLEMENTATION_VERSION_NAME));
    if !source_ae.trim().is_empty() {
        put(&mut group, 0x0016, b"AE", &text_bytes(source_ae.trim()));
    }
    let mut head = vec![0u8; 128];
    head.extend_from_slice(b"DICM");
    put(&mut head, 0x0000, b"UL", &(group.len() as u32).to_le_bytes());
    w.write_all(&head)?;
    w.write_all(&group)?;
    Ok((head.len() + group.len()) as u64)
}

fn uid_bytes(s: &str) -> Vec<u8> {
    let mut b = s.as_bytes().to_vec();
    if b.len() % 2 == 1 {
        b.push(0);
    }
    b
}

fn text_bytes(s: &str) -> Vec<u8> {
    let mut b = s.as_bytes().to_vec();
    if b.len() % 2 == 1 {
        b.push(b' ');
    }
    b
}

fn put(out: &mut Vec<u8>, elem: u16, vr: &[u8; 2], value: &[u8]) {
    out.extend_from_slice(&0x0002u16.to_le_bytes());
    out.extend_from_slice(&elem.to_le_bytes());
    out.extend_from_slice(vr);
    if matches!(vr, b"OB" | b"OW" | b"UN" | b"SQ" | b"UT") {
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    } else {
        out.extend_from_slice(&(value.len() as u16).to_le_bytes());
    }
    out.extend_from_slice(value);
}

/// Reads the File Meta Information of a Part 10 file, element by element
/// (explicit VR LE), without trusting the group length.
pub fn read_meta(path: &Path) -> Result<FileMeta, Part10Error> {
    let p = || path.display().to_string();
    let mut f = std::io::BufReader::new(std::fs::File::open(path).map_err(|error| Part10Error::Io { path: p(), error })?);
    let mut pre = [0u8; 132];
    f.read_exact(&mut pre).map_err(|_| Part10Error::NotDicom { path: p() })?;
    if &pre[128..132] != b"DICM" {
        return Err(Part10Error::NotDicom { path: p() });
    }
    let bad = |reason: &str| Part10Error::BadMeta { path: p(), reason: reason.to_string() };
    let mut offset = 132u64;
    let (mut class, mut inst, mut ts) = (None, None, None);
    loop {
        let mut h = [0u8; 8];
        match f.read_exact(&mut h) {
            Ok(()) => {}
            Err(_) => break, // meta only, no data set
        }
        let group = u16::from_le_bytes([h[0], h[1]]);
        if group != 0x0002 {
            break;
        }
        let elem = u16::from_le_bytes([h[2], h[3]]);
        let vr = [h[4], h[5]];
        let (len, head_len) = if matches!(&vr, b"OB" | b"OW" | b"UN" | b"SQ" | b"UT" | b"OF" | b"UC" | b"UR") {
            let mut l = [0u8; 4];
            f.read_exact(&mut l).map_err(|_| bad("truncated element header"))?;
            (u32::from_le_bytes(l) as u64, 12)
        } else {
            (u16::from_le_bytes([h[6], h[7]]) as u64, 8)
        };
        if len > 1 << 20 {
            return Err(bad("meta element longer than 1 MiB"));
        }
        let mut v = vec![0u8; len as usize];
        f.read_exact(&mut v).map_err(|_| bad("truncated element value"))?;
        let text = || String::from_utf8_lossy(&v).trim_end_matches(['\0', ' ']).to_string();
        match elem {
            0x0002 => class = Some(text()),
            0x0003 => inst = Some(text()),
            0x0010 => ts = Some(text()),
            _ => {}
        }
        offset += head_len + len;
    }
    Ok(FileMeta {
        sop_class_uid: class.ok_or_else(|| bad("no Media Storage SOP Class UID (0002,0002)"))?,
        sop_instance_uid: inst.ok_or_else(|| bad("no Media Storage SOP Instance UID (0002,0003)"))?,
        transfer_syntax: ts.ok_or_else(|| bad("no Transfer Syntax UID (0002,0010)"))?,
        dataset_offset: offset,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.dcm");
        let mut f = std::fs::File::create(&path).unwrap();
        let off = write_meta(&mut f, "1.2.840.10008.5.1.4.1.1.2", "1.2.3", "1.2.840.10008.1.2", "SENDER").unwrap();
        f.write_all(&[8, 0, 0x16, 0, 2, 0, 0, 0, b'1', 0]).unwrap();
        drop(f);
        let m = read_meta(&path).unwrap();
        assert_eq!(m.sop_class_uid, "1.2.840.10008.5.1.4.1.1.2");
        assert_eq!(m.sop_instance_uid, "1.2.3");
        assert_eq!(m.transfer_syntax, "1.2.840.10008.1.2");
        assert_eq!(m.dataset_offset, off);
        // dicom-object agrees that this is a valid file
        let obj = dicom_object::open_file(&path).unwrap();
        assert_eq!(obj.meta().media_storage_sop_instance_uid(), "1.2.3");
    }

    #[test]
    fn not_dicom() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.txt");
        std::fs::write(&path, b"hello").unwrap();
        assert!(matches!(read_meta(&path), Err(Part10Error::NotDicom { .. })));
    }
}

/// Walks a data set element by element, skipping values, and fails when an
/// element runs past the end of the file or the bytes end mid-element. The
/// header parser stops before Pixel Data, so without this a truncated
/// instance would be accepted.
pub fn check_structure(path: &Path, dataset_offset: u64, ts: &str) -> Result<(), String> {
    use std::io::{BufReader, Seek, SeekFrom};
    let mut f = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let len = f.metadata().map_err(|e| e.to_string())?.len();
    f.seek(SeekFrom::Start(dataset_offset)).map_err(|e| e.to_string())?;
    let (explicit, big) = match ts {
        crate::dicom_uids::IMPLICIT_VR_LE => (false, false),
        crate::dicom_uids::EXPLICIT_VR_BE => (true, true),
        _ => (true, false),
    };
    if ts == crate::dicom_uids::DEFLATED_EXPLICIT_VR_LE {
        let mut r = Walker { r: flate2::read::DeflateDecoder::new(BufReader::new(f)), explicit, big, pos: 0, end: None };
        return r.elements(None).map(|_| ());
    }
    let mut r = Walker { r: BufReader::with_capacity(64 * 1024, f), explicit, big, pos: dataset_offset, end: Some(len) };
    r.elements(None)?;
    Ok(())
}

struct Walker<R> {
    r: R,
    explicit: bool,
    big: bool,
    pos: u64,
    /// Known total length (seekable files); None for streams.
    end: Option<u64>,
}

/// Readers the walker can skip over: seek where possible, read otherwise.
trait Skip: Read {
    fn skip(&mut self, n: u64) -> std::io::Result<()>;
}

impl Skip for std::io::BufReader<std::fs::File> {
    fn skip(&mut self, n: u64) -> std::io::Result<()> {
        self.seek_relative(n as i64)
    }
}

impl<R: Read> Skip for flate2::read::DeflateDecoder<R> {
    fn skip(&mut self, n: u64) -> std::io::Result<()> {
        std::io::copy(&mut self.take(n), &mut std::io::sink()).map(|_| ())
    }
}

enum Next {
    Element,
    ItemEnd,
    SequenceEnd,
    Eof,
}

impl<R: Skip> Walker<R> {
    fn read_exact_or_eof(&mut self, buf: &mut [u8]) -> Result<bool, String> {
        let mut got = 0;
        while got < buf.len() {
            match self.r.read(&mut buf[got..]) {
                Ok(0) if got == 0 => return Ok(false),
                Ok(0) => return Err(format!("data set ends inside an element header at byte {}", self.pos)),
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.to_string()),
            }
        }
        self.pos += buf.len() as u64;
        Ok(true)
    }

    fn u16(&self, b: &[u8]) -> u16 {
        if self.big {
            u16::from_be_bytes([b[0], b[1]])
        } else {
            u16::from_le_bytes([b[0], b[1]])
        }
    }

    fn u32(&self, b: &[u8]) -> u32 {
        let a = [b[0], b[1], b[2], b[3]];
        if self.big {
            u32::from_be_bytes(a)
        } else {
            u32::from_le_bytes(a)
        }
    }

    fn skip(&mut self, n: u64) -> Result<(), String> {
        if let Some(end) = self.end {
            if self.pos + n > end {
                return Err(format!("element value of {n} bytes at byte {} runs past the end of the data ({end} bytes)", self.pos));
            }
        }
        if self.end.is_none() {
            let copied = std::io::copy(&mut (&mut self.r).take(n), &mut std::io::sink()).map_err(|e| e.to_string())?;
            if copied != n {
                return Err(format!("data set ends inside an element value at byte {}", self.pos + copied));
            }
        } else {
            // Known length, checked above: skip without reading (pixel data).
            self.r.skip(n).map_err(|e| e.to_string())?;
        }
        self.pos += n;
        Ok(())
    }

    /// Reads elements until EOF (top level) or the given delimiter.
    fn elements(&mut self, until: Option<u32>) -> Result<(), String> {
        loop {
            match self.next()? {
                Next::Element => {}
                Next::Eof if until.is_none() => return Ok(()),
                Next::Eof => return Err(format!("data set ends inside a sequence or item at byte {}", self.pos)),
                Next::ItemEnd if until == Some(0xFFFE_E00D) => return Ok(()),
                Next::SequenceEnd if until == Some(0xFFFE_E0DD) => return Ok(()),
                _ => return Err(format!("unexpected delimiter at byte {}", self.pos)),
            }
        }
    }

    /// Items of an undefined-length sequence (or encapsulated pixel data).
    fn items(&mut self) -> Result<(), String> {
        loop {
            let mut h = [0u8; 8];
            if !self.read_exact_or_eof(&mut h)? {
                return Err(format!("data set ends inside a sequence at byte {}", self.pos));
            }
            let tag = ((self.u16(&h[0..2]) as u32) << 16) | self.u16(&h[2..4]) as u32;
            let len = self.u32(&h[4..8]);
            match tag {
                0xFFFE_E0DD => return Ok(()),
                0xFFFE_E000 if len == 0xFFFF_FFFF => self.elements(Some(0xFFFE_E00D))?,
                0xFFFE_E000 => self.skip(len as u64)?,
                _ => return Err(format!("expected an item tag at byte {}, found ({:04X},{:04X})", self.pos - 8, tag >> 16, tag & 0xFFFF)),
            }
        }
    }

    fn next(&mut self) -> Result<Next, String> {
        let mut h = [0u8; 8];
        if !self.read_exact_or_eof(&mut h)? {
            return Ok(Next::Eof);
        }
        let tag = ((self.u16(&h[0..2]) as u32) << 16) | self.u16(&h[2..4]) as u32;
        match tag {
            0xFFFE_E00D => return Ok(Next::ItemEnd),
            0xFFFE_E0DD => return Ok(Next::SequenceEnd),
            _ => {}
        }
        let len = if self.explicit && (tag >> 16) != 0xFFFE {
            let vr = [h[4], h[5]];
            if matches!(&vr, b"OB" | b"OD" | b"OF" | b"OL" | b"OV" | b"OW" | b"SQ" | b"UC" | b"UN" | b"UR" | b"UT" | b"SV" | b"UV") {
                let mut l = [0u8; 4];
                if !self.read_exact_or_eof(&mut l)? {
                    return Err(format!("data set ends inside an element header at byte {}", self.pos));
                }
                self.u32(&l)
            } else {
                self.u16(&h[6..8]) as u32
            }
        } else {
            self.u32(&h[4..8])
        };
        if len == 0xFFFF_FFFF {
            self.items()?;
        } else {
            self.skip(len as u64)?;
        }
        Ok(Next::Element)
    }
}

#[cfg(test)]
mod structure_tests {
    use super::*;

    fn file_with(dataset: &[u8], ts: &str) -> (tempfile::TempDir, std::path::PathBuf, u64) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.dcm");
        let mut f = std::fs::File::create(&path).unwrap();
        let off = write_meta(&mut f, "1.2", "1.2.3", ts, "").unwrap();
        f.write_all(dataset).unwrap();
        (dir, path, off)
    }

    #[test]
    fn complete_and_truncated_data_sets() {
        // (0010,0010) PN "A " then OB pixel data of 4 bytes, explicit VR LE
        let mut ok = vec![0x10, 0, 0x10, 0, b'P', b'N', 2, 0, b'A', b' '];
        ok.extend_from_slice(&[0xE0, 0x7F, 0x10, 0, b'O', b'B', 0, 0, 4, 0, 0, 0, 1, 2, 3, 4]);
        let (_d, p, off) = file_with(&ok, "1.2.840.10008.1.2.1");
        assert!(check_structure(&p, off, "1.2.840.10008.1.2.1").is_ok());
        let (_d, p, off) = file_with(&ok[..ok.len() - 2], "1.2.840.10008.1.2.1");
        let e = check_structure(&p, off, "1.2.840.10008.1.2.1").unwrap_err();
        assert!(e.contains("runs past the end"), "{e}");
        let (_d, p, off) = file_with(&ok[..5], "1.2.840.10008.1.2.1");
        assert!(check_structure(&p, off, "1.2.840.10008.1.2.1").is_err());
    }

    #[test]
    fn undefined_length_sequences_and_encapsulated_pixels() {
        // implicit VR LE: SQ (0008,1115) undefined length, one undefined-length item
        let mut ds = vec![0x08, 0, 0x15, 0x11, 0xFF, 0xFF, 0xFF, 0xFF];
        ds.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF]);
        ds.extend_from_slice(&[0x20, 0, 0x0E, 0, 2, 0, 0, 0, b'1', 0]);
        ds.extend_from_slice(&[0xFE, 0xFF, 0x0D, 0xE0, 0, 0, 0, 0]);
        ds.extend_from_slice(&[0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0]);
        let (_d, p, off) = file_with(&ds, "1.2.840.10008.1.2");
        assert!(check_structure(&p, off, "1.2.840.10008.1.2").is_ok());
        let (_d, p, off) = file_with(&ds[..ds.len() - 8], "1.2.840.10008.1.2");
        assert!(check_structure(&p, off, "1.2.840.10008.1.2").is_err(), "missing sequence delimiter");
        // encapsulated pixel data: offset table item + one fragment + delimiter
        let mut px = vec![0xE0, 0x7F, 0x10, 0, b'O', b'B', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF];
        px.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0, 0, 0, 0]);
        px.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 2, 0, 0, 0, 0xFF, 0xD9]);
        px.extend_from_slice(&[0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0]);
        let (_d, p, off) = file_with(&px, "1.2.840.10008.1.2.4.50");
        assert!(check_structure(&p, off, "1.2.840.10008.1.2.4.50").is_ok());
    }
}
