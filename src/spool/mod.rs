//! The spool: received instances as Part 10 files plus their SQLite index.
//!
//! Durability contract: `Spool::commit` returns only after the file is
//! fsync'd, renamed into place, its folder fsync'd and the index updated.
//! Only then may the SCP answer success.

pub mod index;

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use dicom_dictionary_std::tags;
use dicom_object::{DefaultDicomObject, OpenFileOptions};

pub use index::{now_ms, Index, InstanceHeader, StoredInstance, StudySummary};

use crate::config::DuplicatePolicy;
use crate::part10;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The data set cannot be parsed or lacks identifying attributes (C000-class).
    #[error("instance {sop_uid}: {reason}")]
    Unreadable { sop_uid: String, reason: String },
    /// The data set's SOP class differs from the command's (A900).
    #[error("instance {sop_uid}: data set SOP Class {found} does not match the C-STORE request's {expected}")]
    ClassMismatch { sop_uid: String, expected: String, found: String },
    /// Disk or index failure (A700).
    #[error("instance {sop_uid}: cannot store: {reason}")]
    Resources { sop_uid: String, reason: String },
}

#[derive(Debug, Clone, PartialEq)]
pub enum StoreOutcome {
    Stored(InstanceHeader),
    /// Same SOP Instance UID already stored; kept the first copy.
    Duplicate(InstanceHeader),
}

#[derive(Clone)]
pub struct Spool {
    root: PathBuf,
    pub index: Index,
    duplicates: DuplicatePolicy,
}

/// An instance being received: a temp file with the meta group written,
/// data set bytes appended as PDVs arrive.
pub struct IncomingInstance {
    pub sop_class: String,
    pub sop_uid: String,
    pub transfer_syntax: String,
    pub calling_ae: String,
    path: PathBuf,
    dataset_offset: u64,
    file: Option<BufWriter<File>>,
    pub bytes: u64,
    /// Bytes already handed to the kernel's write-back.
    flushed: u64,
}

/// Large data sets start their write-back while they are still arriving,
/// so the final fsync has little left to do.
const EARLY_WRITEBACK_BYTES: u64 = 8 << 20;

impl IncomingInstance {
    pub fn write(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.bytes += data.len() as u64;
        let file = self.file.as_mut().expect("open until finished");
        file.write_all(data)?;
        if self.bytes - self.flushed >= EARLY_WRITEBACK_BYTES {
            file.flush()?;
            start_writeback(file.get_ref(), self.dataset_offset + self.flushed, self.bytes - self.flushed);
            self.flushed = self.bytes;
        }
        Ok(())
    }
}

/// Asks Linux to start writing a range to disk without waiting for it.
fn start_writeback(file: &File, offset: u64, len: u64) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: a valid open fd; sync_file_range only schedules I/O.
        unsafe {
            libc::sync_file_range(file.as_raw_fd(), offset as libc::off64_t, len as libc::off64_t, libc::SYNC_FILE_RANGE_WRITE);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (file, offset, len);
}

impl Drop for IncomingInstance {
    fn drop(&mut self) {
        // Not committed (aborted association, rejected data set): remove.
        if self.file.is_some() {
            let _ = fs::remove_file(&self.path);
        }
    }
}

impl Spool {
    pub fn open(data_dir: &Path, duplicates: DuplicatePolicy) -> anyhow::Result<Spool> {
        use anyhow::Context;
        for d in ["spool", "tmp"] {
            fs::create_dir_all(data_dir.join(d)).with_context(|| format!("creating {}", data_dir.join(d).display()))?;
        }
        let index = Index::open(&data_dir.join("index.sqlite")).with_context(|| format!("opening index {}", data_dir.join("index.sqlite").display()))?;
        Ok(Spool { root: data_dir.to_path_buf(), index, duplicates })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Free bytes on the file system that holds the spool.
    pub fn free_bytes(&self) -> Option<u64> {
        free_bytes(&self.root)
    }

    pub fn begin(&self, sop_class: &str, sop_uid: &str, ts: &str, calling_ae: &str) -> std::io::Result<IncomingInstance> {
        let name = format!("{}-{:016x}.part", std::process::id(), rand::random::<u64>());
        let path = self.root.join("tmp").join(name);
        let mut file = BufWriter::with_capacity(1 << 20, File::create(&path)?);
        let dataset_offset = part10::write_meta(&mut file, sop_class, sop_uid, ts, calling_ae)?;
        Ok(IncomingInstance {
            sop_class: sop_class.to_string(),
            sop_uid: sop_uid.to_string(),
            transfer_syntax: ts.to_string(),
            calling_ae: calling_ae.to_string(),
            path,
            dataset_offset,
            file: Some(file),
            bytes: 0,
            flushed: 0,
        })
    }

    /// Makes a received instance durable and indexed. Blocking: call it
    /// from a blocking thread.
    pub fn commit(&self, mut inc: IncomingInstance) -> Result<StoreOutcome, StoreError> {
        let sop_uid = inc.sop_uid.clone();
        let res = |reason: String| StoreError::Resources { sop_uid: sop_uid.clone(), reason };
        let file = inc.file.take().expect("commit once");
        let file = file.into_inner().map_err(|e| res(format!("write {}: {}", inc.path.display(), e.error())))?;
        let temp = inc.path.clone();
        // From here on the temp file is ours to clean up on every error path.
        let cleanup = |e: StoreError| {
            let _ = fs::remove_file(&temp);
            e
        };
        // The fsync (the slow part: a journal commit on ext4) runs while
        // this thread parses and checks the data set.
        let (checked, synced) = std::thread::scope(|s| {
            let sync = s.spawn(|| file.sync_data());
            let checked = validate(&temp, &inc);
            (checked, sync.join())
        });
        let header = checked.map_err(cleanup)?;
        let existing = self.index.instance(&header.sop_uid).map_err(|e| cleanup(res(format!("index: {e}"))))?;
        if existing.is_some() && self.duplicates == DuplicatePolicy::KeepFirst {
            let _ = fs::remove_file(&temp);
            return Ok(StoreOutcome::Duplicate(header));
        }
        // Our own result object sent back by a PACS (auto-routing loops):
        // acknowledged, not stored, so it never re-opens or re-analyses the study.
        if self.index.is_result(&header.sop_uid).map_err(|e| cleanup(res(format!("index: {e}"))))? {
            let _ = fs::remove_file(&temp);
            tracing::info!(sop_uid = %header.sop_uid, study_uid = %header.study_uid, "our own result object came back; acknowledged, not stored");
            return Ok(StoreOutcome::Duplicate(header));
        }
        match synced {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(cleanup(res(format!("fsync {}: {e}", temp.display())))),
            Err(_) => return Err(cleanup(res("fsync thread panicked".into()))),
        }
        drop(file);
        let dir = self.root.join("spool").join(safe_name(&header.study_uid)).join(safe_name(&header.series_uid));
        let fresh_dirs = !dir.exists();
        fs::create_dir_all(&dir).map_err(|e| cleanup(res(format!("create {}: {e}", dir.display()))))?;
        let dest = dir.join(format!("{}.dcm", safe_name(&header.sop_uid)));
        fs::rename(&temp, &dest).map_err(|e| cleanup(res(format!("rename to {}: {e}", dest.display()))))?;
        sync_dir(&dir).map_err(|e| res(format!("fsync {}: {e}", dir.display())))?;
        if fresh_dirs {
            // New folders must be durable in their parents too.
            if let Some(study_dir) = dir.parent() {
                sync_dir(study_dir).map_err(|e| res(format!("fsync {}: {e}", study_dir.display())))?;
                sync_dir(&self.root.join("spool")).map_err(|e| res(format!("fsync spool: {e}")))?;
            }
        }
        self.index.insert_instance(&header, &dest.to_string_lossy(), inc.bytes, &inc.calling_ae).map_err(|e| res(format!("index: {e}")))?;
        Ok(StoreOutcome::Stored(header))
    }

    /// After a crash: removes partial temp files and indexes spool files the
    /// index does not know (stored and fsync'd, but the index commit was lost).
    pub fn recover(&self) -> anyhow::Result<usize> {
        for e in fs::read_dir(self.root.join("tmp"))?.flatten() {
            let _ = fs::remove_file(e.path());
        }
        let known = self.index.all_instance_paths()?;
        let mut added = 0;
        for entry in walkdir::WalkDir::new(self.root.join("spool")).into_iter().flatten() {
            let p = entry.path();
            if !entry.file_type().is_file() || p.extension().is_none_or(|e| e != "dcm") {
                continue;
            }
            let s = p.to_string_lossy().to_string();
            if known.contains(&s) {
                continue;
            }
            let meta = match part10::read_meta(p) {
                Ok(m) => m,
                Err(e) => {
                    // A stray or damaged file must not keep the node from starting.
                    tracing::warn!(file = %s, "spool file not indexable; left in place: {e}");
                    continue;
                }
            };
            match read_header(p, &meta.transfer_syntax) {
                Ok(h) => {
                    let size = fs::metadata(p).map(|m| m.len()).unwrap_or(0);
                    self.index.insert_instance(&h, &s, size, "")?;
                    added += 1;
                }
                Err(reason) => tracing::warn!(file = %s, %reason, "spool file not indexable; left in place"),
            }
        }
        Ok(added)
    }

    /// Removes a study's files and forgets it.
    pub fn remove_study(&self, study_uid: &str) -> anyhow::Result<()> {
        for dir in [self.root.join("spool").join(safe_name(study_uid)), self.results_dir(study_uid)] {
            if dir.exists() {
                fs::remove_dir_all(&dir)?;
            }
        }
        self.index.delete_study(study_uid)?;
        Ok(())
    }
}

impl Spool {
    /// Where the result objects of a study's analyses are written.
    pub fn results_dir(&self, study_uid: &str) -> PathBuf {
        self.root.join("results").join(safe_name(study_uid))
    }
}

/// Parses and checks a received data set against its C-STORE request.
fn validate(path: &Path, inc: &IncomingInstance) -> Result<InstanceHeader, StoreError> {
    let unreadable = |reason: String| StoreError::Unreadable { sop_uid: inc.sop_uid.clone(), reason };
    let header = read_header(path, &inc.transfer_syntax).map_err(unreadable)?;
    part10::check_structure(path, inc.dataset_offset, &inc.transfer_syntax).map_err(|reason| unreadable(format!("malformed data set: {reason}")))?;
    if header.sop_uid != inc.sop_uid {
        return Err(unreadable(format!("data set SOP Instance UID {} differs from the C-STORE request's", header.sop_uid)));
    }
    if header.sop_class != inc.sop_class {
        return Err(StoreError::ClassMismatch { sop_uid: inc.sop_uid.clone(), expected: inc.sop_class.clone(), found: header.sop_class.clone() });
    }
    Ok(header)
}

/// Parses the header (everything before Pixel Data) of a spool file.
pub fn read_header(path: &Path, ts: &str) -> Result<InstanceHeader, String> {
    let obj: DefaultDicomObject =
        OpenFileOptions::new().read_until(tags::PIXEL_DATA).open_file(path).map_err(|e| format!("cannot parse data set: {}", crate::error_chain(&e)))?;
    let get = |tag| -> String {
        obj.element_opt(tag).ok().flatten().and_then(|e| e.to_str().ok().map(|s| s.trim_end_matches(['\0', ' ']).trim().to_string())).unwrap_or_default()
    };
    let h = InstanceHeader {
        sop_uid: get(tags::SOP_INSTANCE_UID),
        sop_class: get(tags::SOP_CLASS_UID),
        study_uid: get(tags::STUDY_INSTANCE_UID),
        series_uid: get(tags::SERIES_INSTANCE_UID),
        transfer_syntax: ts.to_string(),
        patient_id: get(tags::PATIENT_ID),
        patient_name: get(tags::PATIENT_NAME),
        study_description: get(tags::STUDY_DESCRIPTION),
        accession: get(tags::ACCESSION_NUMBER),
        study_date: get(tags::STUDY_DATE),
        modality: get(tags::MODALITY),
        body_part: get(tags::BODY_PART_EXAMINED),
        series_description: get(tags::SERIES_DESCRIPTION),
        series_number: get(tags::SERIES_NUMBER),
    };
    for (name, tag, v) in [
        ("SOP Instance UID", "(0008,0018)", &h.sop_uid),
        ("SOP Class UID", "(0008,0016)", &h.sop_class),
        ("Study Instance UID", "(0020,000D)", &h.study_uid),
        ("Series Instance UID", "(0020,000E)", &h.series_uid),
    ] {
        if !crate::config::is_uid(v) {
            return Err(format!("attribute {name} {tag} is missing or not a valid UID (`{v}`)"));
        }
    }
    Ok(h)
}

/// UIDs are digits and dots; anything else is replaced so a hostile UID
/// cannot escape the spool folder.
pub fn safe_name(uid: &str) -> String {
    uid.chars().map(|c| if c.is_ascii_digit() || c == '.' { c } else { '_' }).collect()
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

pub fn free_bytes(path: &Path) -> Option<u64> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let c = CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: c is a valid NUL-terminated path and st a valid out-pointer.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    Some(st.f_bavail as u64 * st.f_frsize as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safe_names() {
        assert_eq!(safe_name("1.2.3"), "1.2.3");
        assert_eq!(safe_name("../etc"), "..____");
    }

    #[test]
    fn free_space_is_reported() {
        assert!(free_bytes(Path::new("/")).unwrap() > 0);
    }
}

#[cfg(test)]
mod recover_tests {
    use super::*;

    #[test]
    fn recovery_indexes_orphans_skips_junk_and_drops_partials() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), DuplicatePolicy::KeepFirst).unwrap();
        // a partial upload left in tmp/ by a crash
        std::fs::write(dir.path().join("tmp").join("1-0.part"), b"partial").unwrap();
        // junk where a spool file would be
        let junk = dir.path().join("spool").join("1.2").join("1.2.3");
        std::fs::create_dir_all(&junk).unwrap();
        std::fs::write(junk.join("9.9.dcm"), b"not dicom").unwrap();
        // a complete instance whose index row was lost
        let mut obj = dicom_object::InMemDicomObject::new_empty();
        use dicom_core::{DataElement, PrimitiveValue, VR};
        for (tag, v) in [
            (tags::SOP_CLASS_UID, "1.2.840.10008.5.1.4.1.1.7"),
            (tags::SOP_INSTANCE_UID, "1.2.3.4"),
            (tags::STUDY_INSTANCE_UID, "1.2"),
            (tags::SERIES_INSTANCE_UID, "1.2.3"),
        ] {
            obj.put(DataElement::new(tag, VR::UI, PrimitiveValue::from(v)));
        }
        let path = junk.join("1.2.3.4.dcm");
        let mut f = File::create(&path).unwrap();
        part10::write_meta(&mut f, "1.2.840.10008.5.1.4.1.1.7", "1.2.3.4", "1.2.840.10008.1.2.1", "").unwrap();
        let ts = dicom_transfer_syntax_registry::entries::EXPLICIT_VR_LITTLE_ENDIAN.erased();
        obj.write_dataset_with_ts(&mut f, &ts).unwrap();
        drop(f);
        assert_eq!(spool.recover().unwrap(), 1);
        assert!(spool.index.instance("1.2.3.4").unwrap().is_some());
        assert_eq!(std::fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
        assert!(junk.join("9.9.dcm").exists(), "junk is left in place, not deleted");
    }
}
