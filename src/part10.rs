//! DICOM Part 10 file framing: the preamble and File Meta Information group.
//! The node stores data sets byte for byte as received, so it writes the meta
//! group itself and needs the data set's offset to send a file back out.

use std::io::{Read, Write};
use std::path::Path;

use crate::dimse::uids::{IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME};

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
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
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
    let mut f = std::io::BufReader::new(std::fs::File::open(path).map_err(|source| Part10Error::Io { path: p(), source })?);
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
