//! The SQLite index of the spool: studies, series, instances, jobs and
//! deliveries. Files on disk are the truth for instances (see
//! `Spool::recover`); the index is what every other layer queries.

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS studies (
    study_uid TEXT PRIMARY KEY,
    patient_id TEXT, patient_name TEXT, study_description TEXT, accession TEXT,
    calling_ae TEXT,
    study_date TEXT,                    -- DA as received (YYYYMMDD)
    first_received INTEGER NOT NULL,   -- start of the current receiving phase (ms)
    last_received INTEGER NOT NULL,
    state TEXT NOT NULL,                -- receiving | complete
    generation INTEGER NOT NULL DEFAULT 0, -- how many times the study completed
    completed_at INTEGER
);
CREATE TABLE IF NOT EXISTS series (
    series_uid TEXT PRIMARY KEY,
    study_uid TEXT NOT NULL,
    modality TEXT, body_part TEXT, series_description TEXT, series_number TEXT
);
CREATE INDEX IF NOT EXISTS series_study ON series(study_uid);
CREATE TABLE IF NOT EXISTS instances (
    sop_uid TEXT PRIMARY KEY,
    sop_class TEXT NOT NULL,
    series_uid TEXT NOT NULL,
    study_uid TEXT NOT NULL,
    transfer_syntax TEXT NOT NULL,
    path TEXT NOT NULL,
    size INTEGER NOT NULL,
    calling_ae TEXT,
    received_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS instances_study ON instances(study_uid);
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,                 -- forward | analyze | results
    study_uid TEXT NOT NULL,
    rule TEXT NOT NULL,
    destination TEXT NOT NULL DEFAULT '',
    pipeline TEXT NOT NULL DEFAULT '',
    generation INTEGER NOT NULL,
    state TEXT NOT NULL,                -- pending | running | retry | done | dead
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    instances INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    UNIQUE(kind, study_uid, rule, destination, generation)
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state, next_attempt_at);
CREATE INDEX IF NOT EXISTS jobs_study ON jobs(study_uid);
-- Result objects the node made (SR, PR, SEG...); never routed or analysed.
CREATE TABLE IF NOT EXISTS results (
    sop_uid TEXT PRIMARY KEY,
    sop_class TEXT NOT NULL,
    series_uid TEXT NOT NULL,
    study_uid TEXT NOT NULL,
    transfer_syntax TEXT NOT NULL,
    path TEXT NOT NULL,
    job_id INTEGER NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS results_study ON results(study_uid);
CREATE TABLE IF NOT EXISTS deliveries (
    sop_uid TEXT NOT NULL,
    destination TEXT NOT NULL,
    status INTEGER NOT NULL,
    delivered_at INTEGER NOT NULL,
    PRIMARY KEY (sop_uid, destination)
);
"#;

/// Indexes on columns that older indexes may lack: created after
/// [`migrate`] has added those columns.
const LATE_INDEXES: &str = "CREATE INDEX IF NOT EXISTS studies_recent ON studies(last_received);";

/// Brings an index written by an older version up to [`SCHEMA`]: columns
/// added since are added here (NULL for the studies already indexed).
fn migrate(conn: &Connection) -> rusqlite::Result<()> {
    let has = |table: &str, column: &str| -> rusqlite::Result<bool> {
        let mut st = conn.prepare(&format!("PRAGMA table_info({table})"))?;
        let names = st.query_map([], |r| r.get::<_, String>(1))?.collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(names.iter().any(|n| n == column))
    };
    if !has("studies", "study_date")? {
        conn.execute_batch("ALTER TABLE studies ADD COLUMN study_date TEXT")?;
    }
    conn.execute_batch(LATE_INDEXES)
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Header attributes the node indexes and routes on.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InstanceHeader {
    pub sop_uid: String,
    pub sop_class: String,
    pub study_uid: String,
    pub series_uid: String,
    pub transfer_syntax: String,
    pub patient_id: String,
    pub patient_name: String,
    pub study_description: String,
    pub accession: String,
    pub study_date: String,
    pub modality: String,
    pub body_part: String,
    pub series_description: String,
    pub series_number: String,
}

#[derive(Clone)]
pub struct Index {
    conn: Arc<Mutex<Connection>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StoredInstance {
    pub sop_uid: String,
    pub sop_class: String,
    pub series_uid: String,
    pub study_uid: String,
    pub transfer_syntax: String,
    pub path: String,
}

/// A study as operators see it (status page, `ainode jobs`): what came in.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StudyRow {
    pub study_uid: String,
    pub patient_id: String,
    pub patient_name: String,
    pub study_date: String,
    pub study_description: String,
    pub accession: String,
    pub calling_ae: String,
    /// Modalities of its series, sorted.
    pub modalities: Vec<String>,
    pub instances: i64,
    /// `receiving` or `complete`.
    pub state: String,
    pub generation: i64,
    pub first_received: i64,
    pub last_received: i64,
    pub completed_at: Option<i64>,
}

/// A result object the node made, with the peers that acknowledged it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ResultRow {
    pub sop_uid: String,
    pub sop_class: String,
    /// e.g. "Segmentation Storage", "Comprehensive 3D SR Storage".
    pub sop_class_name: &'static str,
    pub series_uid: String,
    pub job_id: i64,
    pub created_at: i64,
    pub delivered_to: Vec<Delivery>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Delivery {
    pub destination: String,
    /// The C-STORE response status (0 = success, 0xB... = warning).
    pub status: u16,
    pub delivered_at: i64,
}

const STUDY_ROW: &str = "SELECT s.study_uid, COALESCE(s.patient_id,''), COALESCE(s.patient_name,''), COALESCE(s.study_date,''),
        COALESCE(s.study_description,''), COALESCE(s.accession,''), COALESCE(s.calling_ae,''),
        (SELECT COALESCE(GROUP_CONCAT(m, '\\'), '') FROM (SELECT DISTINCT modality AS m FROM series WHERE study_uid = s.study_uid AND modality <> '' ORDER BY 1)),
        (SELECT COUNT(*) FROM instances i WHERE i.study_uid = s.study_uid),
        s.state, s.generation, s.first_received, s.last_received, s.completed_at
     FROM studies s";

fn row_to_study(r: &rusqlite::Row<'_>) -> rusqlite::Result<StudyRow> {
    let modalities: String = r.get(7)?;
    Ok(StudyRow {
        study_uid: r.get(0)?,
        patient_id: r.get(1)?,
        patient_name: r.get(2)?,
        study_date: r.get(3)?,
        study_description: r.get(4)?,
        accession: r.get(5)?,
        calling_ae: r.get(6)?,
        modalities: modalities.split('\\').filter(|m| !m.is_empty()).map(str::to_string).collect(),
        instances: r.get(8)?,
        state: r.get(9)?,
        generation: r.get(10)?,
        first_received: r.get(11)?,
        last_received: r.get(12)?,
        completed_at: r.get(13)?,
    })
}

/// What routing needs to know about a study.
#[derive(Debug, Clone, Default)]
pub struct StudySummary {
    pub study_uid: String,
    pub study_description: String,
    pub calling_aes: Vec<String>,
    pub series: Vec<SeriesSummary>,
    pub sop_classes: Vec<String>,
    pub generation: i64,
}

#[derive(Debug, Clone, Default)]
pub struct SeriesSummary {
    pub series_uid: String,
    pub modality: String,
    pub body_part: String,
    pub series_description: String,
}

impl Index {
    pub fn open(path: &Path) -> rusqlite::Result<Index> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // WAL + NORMAL survives a process crash; power loss may lose the last
        // commits, which `Spool::recover` re-indexes from the fsync'd files.
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.busy_timeout(std::time::Duration::from_secs(30))?;
        conn.execute_batch(SCHEMA)?;
        migrate(&conn)?;
        Ok(Index { conn: Arc::new(Mutex::new(conn)) })
    }

    pub fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn instance(&self, sop_uid: &str) -> rusqlite::Result<Option<StoredInstance>> {
        self.conn()
            .query_row("SELECT sop_uid, sop_class, series_uid, study_uid, transfer_syntax, path FROM instances WHERE sop_uid = ?1", [sop_uid], row_to_instance)
            .optional()
    }

    /// Records a stored instance; re-opens its study if it had completed.
    pub fn insert_instance(&self, h: &InstanceHeader, path: &str, size: u64, calling_ae: &str) -> rusqlite::Result<()> {
        let now = now_ms();
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "INSERT INTO studies (study_uid, patient_id, patient_name, study_description, accession, calling_ae,
                                  first_received, last_received, state, study_date)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, 'receiving', ?8)
             ON CONFLICT(study_uid) DO UPDATE SET
                last_received = ?7,
                first_received = CASE WHEN state = 'complete' THEN ?7 ELSE first_received END,
                state = 'receiving',
                study_date = COALESCE(NULLIF(study_date, ''), ?8)",
            params![h.study_uid, h.patient_id, h.patient_name, h.study_description, h.accession, calling_ae, now, h.study_date],
        )?;
        tx.execute(
            "INSERT INTO series (series_uid, study_uid, modality, body_part, series_description, series_number)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT(series_uid) DO NOTHING",
            params![h.series_uid, h.study_uid, h.modality, h.body_part, h.series_description, h.series_number],
        )?;
        tx.execute(
            "INSERT OR REPLACE INTO instances (sop_uid, sop_class, series_uid, study_uid, transfer_syntax, path, size, calling_ae, received_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![h.sop_uid, h.sop_class, h.series_uid, h.study_uid, h.transfer_syntax, path, size as i64, calling_ae, now],
        )?;
        // A replaced instance must be delivered again.
        tx.execute("DELETE FROM deliveries WHERE sop_uid = ?1", [&h.sop_uid])?;
        tx.commit()
    }

    pub fn study_instances(&self, study_uid: &str) -> rusqlite::Result<Vec<StoredInstance>> {
        let conn = self.conn();
        let mut st = conn.prepare(
            "SELECT sop_uid, sop_class, series_uid, study_uid, transfer_syntax, path FROM instances
             WHERE study_uid = ?1 ORDER BY series_uid, received_at",
        )?;
        let rows = st.query_map([study_uid], row_to_instance)?;
        rows.collect()
    }

    pub fn summary(&self, study_uid: &str) -> rusqlite::Result<Option<StudySummary>> {
        let conn = self.conn();
        let head: Option<(String, String, i64)> = conn
            .query_row("SELECT COALESCE(study_description, ''), COALESCE(calling_ae, ''), generation FROM studies WHERE study_uid = ?1", [study_uid], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .optional()?;
        let Some((study_description, _, generation)) = head else { return Ok(None) };
        let mut st = conn.prepare(
            "SELECT series_uid, COALESCE(modality,''), COALESCE(body_part,''), COALESCE(series_description,'')
             FROM series WHERE study_uid = ?1 ORDER BY series_uid",
        )?;
        let series = st
            .query_map([study_uid], |r| Ok(SeriesSummary { series_uid: r.get(0)?, modality: r.get(1)?, body_part: r.get(2)?, series_description: r.get(3)? }))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let mut st = conn.prepare("SELECT DISTINCT sop_class FROM instances WHERE study_uid = ?1 ORDER BY 1")?;
        let sop_classes = st.query_map([study_uid], |r| r.get(0))?.collect::<rusqlite::Result<Vec<String>>>()?;
        let mut st = conn.prepare("SELECT DISTINCT COALESCE(calling_ae,'') FROM instances WHERE study_uid = ?1 ORDER BY 1")?;
        let calling_aes = st.query_map([study_uid], |r| r.get(0))?.collect::<rusqlite::Result<Vec<String>>>()?;
        Ok(Some(StudySummary { study_uid: study_uid.to_string(), study_description, calling_aes, series, sop_classes, generation }))
    }

    /// Studies still receiving: (uid, first_received, last_received).
    pub fn receiving_studies(&self) -> rusqlite::Result<Vec<(String, i64, i64)>> {
        let conn = self.conn();
        let mut st = conn.prepare("SELECT study_uid, first_received, last_received FROM studies WHERE state = 'receiving'")?;
        let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        rows.collect()
    }

    pub fn mark_delivered(&self, sop_uid: &str, destination: &str, status: u16) -> rusqlite::Result<()> {
        self.conn().execute(
            "INSERT OR REPLACE INTO deliveries (sop_uid, destination, status, delivered_at) VALUES (?1, ?2, ?3, ?4)",
            params![sop_uid, destination, status as i64, now_ms()],
        )?;
        Ok(())
    }

    /// Instances of a study not yet delivered to `destination`.
    pub fn undelivered(&self, study_uid: &str, destination: &str) -> rusqlite::Result<Vec<StoredInstance>> {
        self.undelivered_in("instances", "received_at", study_uid, destination)
    }

    /// Rows of `table` (instances or results) of a study without a delivery to `destination`.
    fn undelivered_in(&self, table: &str, order: &str, study_uid: &str, destination: &str) -> rusqlite::Result<Vec<StoredInstance>> {
        let conn = self.conn();
        let mut st = conn.prepare(&format!(
            "SELECT t.sop_uid, t.sop_class, t.series_uid, t.study_uid, t.transfer_syntax, t.path FROM {table} t
             WHERE t.study_uid = ?1
               AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.sop_uid = t.sop_uid AND d.destination = ?2)
             ORDER BY t.series_uid, t.{order}"
        ))?;
        let rows = st.query_map([study_uid, destination], row_to_instance)?;
        rows.collect()
    }

    /// Studies whose files may be removed: complete, no unfinished or dead
    /// job, and quiet for `keep_ms` since completion and the last job.
    pub fn expired_studies(&self, keep_ms: i64) -> rusqlite::Result<Vec<String>> {
        let cutoff = now_ms() - keep_ms;
        let conn = self.conn();
        let mut st = conn.prepare(
            "SELECT s.study_uid FROM studies s
             WHERE s.state = 'complete' AND s.completed_at <= ?1
               AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.study_uid = s.study_uid
                               AND (j.state <> 'done' OR j.updated_at > ?1))",
        )?;
        let rows = st.query_map([cutoff], |r| r.get(0))?;
        rows.collect()
    }

    /// Forgets a study (after its files were removed). Jobs stay as history.
    pub fn delete_study(&self, study_uid: &str) -> rusqlite::Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute("DELETE FROM deliveries WHERE sop_uid IN (SELECT sop_uid FROM instances WHERE study_uid = ?1)", [study_uid])?;
        tx.execute("DELETE FROM deliveries WHERE sop_uid IN (SELECT sop_uid FROM results WHERE study_uid = ?1)", [study_uid])?;
        tx.execute("DELETE FROM results WHERE study_uid = ?1", [study_uid])?;
        tx.execute("DELETE FROM instances WHERE study_uid = ?1", [study_uid])?;
        tx.execute("DELETE FROM series WHERE study_uid = ?1", [study_uid])?;
        tx.execute("DELETE FROM studies WHERE study_uid = ?1", [study_uid])?;
        tx.commit()
    }

    /// Result objects of a study not yet delivered to `destination`.
    pub fn undelivered_results(&self, study_uid: &str, destination: &str) -> rusqlite::Result<Vec<StoredInstance>> {
        self.undelivered_in("results", "sop_uid", study_uid, destination)
    }

    /// Whether the node made this instance (a result object echoed back by a peer).
    pub fn is_result(&self, sop_uid: &str) -> rusqlite::Result<bool> {
        self.conn().query_row("SELECT 1 FROM results WHERE sop_uid = ?1", [sop_uid], |_| Ok(())).optional().map(|r| r.is_some())
    }

    /// Result objects of a study (`ainode jobs`, tests).
    pub fn study_results(&self, study_uid: &str) -> rusqlite::Result<Vec<StoredInstance>> {
        let conn = self.conn();
        let mut st =
            conn.prepare("SELECT sop_uid, sop_class, series_uid, study_uid, transfer_syntax, path FROM results WHERE study_uid = ?1 ORDER BY sop_uid")?;
        let rows = st.query_map([study_uid], row_to_instance)?;
        rows.collect()
    }

    /// The studies that received an instance most recently, newest first:
    /// `limit` of them after skipping `offset` (an indexed range scan, so a
    /// page costs the same however large the index is).
    pub fn recent_studies(&self, limit: usize, offset: usize) -> rusqlite::Result<Vec<StudyRow>> {
        let conn = self.conn();
        let mut st = conn.prepare(&format!("{STUDY_ROW} ORDER BY s.last_received DESC, s.study_uid LIMIT ?1 OFFSET ?2"))?;
        let rows = st.query_map([limit as i64, offset as i64], row_to_study)?;
        rows.collect()
    }

    pub fn study_row(&self, study_uid: &str) -> rusqlite::Result<Option<StudyRow>> {
        self.conn().query_row(&format!("{STUDY_ROW} WHERE s.study_uid = ?1"), [study_uid], row_to_study).optional()
    }

    /// Result objects of a study with their deliveries, by series then SOP Instance UID.
    pub fn study_result_rows(&self, study_uid: &str) -> rusqlite::Result<Vec<ResultRow>> {
        let conn = self.conn();
        let mut st =
            conn.prepare("SELECT sop_uid, sop_class, series_uid, job_id, created_at FROM results WHERE study_uid = ?1 ORDER BY series_uid, sop_uid")?;
        let mut rows = st
            .query_map([study_uid], |r| {
                let sop_class: String = r.get(1)?;
                Ok(ResultRow {
                    sop_uid: r.get(0)?,
                    sop_class_name: crate::dicom_uids::sop_class_name(&sop_class),
                    sop_class,
                    series_uid: r.get(2)?,
                    job_id: r.get(3)?,
                    created_at: r.get(4)?,
                    delivered_to: vec![],
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let mut st = conn.prepare("SELECT destination, status, delivered_at FROM deliveries WHERE sop_uid = ?1 ORDER BY destination")?;
        for row in &mut rows {
            row.delivered_to = st
                .query_map([&row.sop_uid], |r| Ok(Delivery { destination: r.get(0)?, status: r.get::<_, i64>(1)? as u16, delivered_at: r.get(2)? }))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
        }
        Ok(rows)
    }

    pub fn all_instance_paths(&self) -> rusqlite::Result<std::collections::HashSet<String>> {
        let conn = self.conn();
        let mut st = conn.prepare("SELECT path FROM instances")?;
        let rows = st.query_map([], |r| r.get(0))?;
        rows.collect()
    }
}

fn row_to_instance(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredInstance> {
    Ok(StoredInstance { sop_uid: r.get(0)?, sop_class: r.get(1)?, series_uid: r.get(2)?, study_uid: r.get(3)?, transfer_syntax: r.get(4)?, path: r.get(5)? })
}
