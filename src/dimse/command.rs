//! DIMSE command sets (PS3.7 §9, §E): always Implicit VR Little Endian.
//! dicom-ul moves PDUs only; this is the message layer on top of it.

use std::collections::BTreeMap;

pub const C_STORE_RQ: u16 = 0x0001;
pub const C_STORE_RSP: u16 = 0x8001;
pub const C_ECHO_RQ: u16 = 0x0030;
pub const C_ECHO_RSP: u16 = 0x8030;

/// Command Data Set Type value meaning "no data set follows".
pub const NO_DATA_SET: u16 = 0x0101;
/// Any other value means a data set follows; this is the one we write.
pub const DATA_SET_PRESENT: u16 = 0x0000;

pub mod tag {
    pub const GROUP_LENGTH: u32 = 0x0000_0000;
    pub const AFFECTED_SOP_CLASS_UID: u32 = 0x0000_0002;
    pub const COMMAND_FIELD: u32 = 0x0000_0100;
    pub const MESSAGE_ID: u32 = 0x0000_0110;
    pub const MESSAGE_ID_RESPONDED_TO: u32 = 0x0000_0120;
    pub const MOVE_DESTINATION: u32 = 0x0000_0600;
    pub const PRIORITY: u32 = 0x0000_0700;
    pub const DATA_SET_TYPE: u32 = 0x0000_0800;
    pub const STATUS: u32 = 0x0000_0900;
    pub const ERROR_COMMENT: u32 = 0x0000_0902;
    pub const AFFECTED_SOP_INSTANCE_UID: u32 = 0x0000_1000;
    pub const MOVE_ORIGINATOR_AE: u32 = 0x0000_1030;
    pub const MOVE_ORIGINATOR_ID: u32 = 0x0000_1031;
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum CommandError {
    #[error("command set truncated at byte {0}")]
    Truncated(usize),
    #[error("command set lacks required element ({0:04X},{1:04X})")]
    Missing(u16, u16),
    #[error("command element ({0:04X},{1:04X}) has length {2}, expected {3}")]
    BadLength(u16, u16, usize, usize),
}

/// A decoded command set: tag -> raw value bytes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Command {
    elements: BTreeMap<u32, Vec<u8>>,
}

impl Command {
    pub fn new(command_field: u16) -> Self {
        let mut c = Command::default();
        c.set_u16(tag::COMMAND_FIELD, command_field);
        c
    }

    pub fn decode(bytes: &[u8]) -> Result<Command, CommandError> {
        let mut elements = BTreeMap::new();
        let mut pos = 0;
        while pos < bytes.len() {
            if pos + 8 > bytes.len() {
                return Err(CommandError::Truncated(pos));
            }
            let group = u16::from_le_bytes([bytes[pos], bytes[pos + 1]]) as u32;
            let elem = u16::from_le_bytes([bytes[pos + 2], bytes[pos + 3]]) as u32;
            let len = u32::from_le_bytes(bytes[pos + 4..pos + 8].try_into().unwrap()) as usize;
            pos += 8;
            if len > bytes.len() - pos {
                return Err(CommandError::Truncated(pos));
            }
            elements.insert((group << 16) | elem, bytes[pos..pos + len].to_vec());
            pos += len;
        }
        Ok(Command { elements })
    }

    /// Encodes with a correct Command Group Length first.
    pub fn encode(&self) -> Vec<u8> {
        let mut body = Vec::with_capacity(256);
        for (&t, v) in self.elements.iter().filter(|(&t, _)| t != tag::GROUP_LENGTH) {
            body.extend_from_slice(&((t >> 16) as u16).to_le_bytes());
            body.extend_from_slice(&((t & 0xFFFF) as u16).to_le_bytes());
            body.extend_from_slice(&(v.len() as u32).to_le_bytes());
            body.extend_from_slice(v);
        }
        let mut out = Vec::with_capacity(body.len() + 12);
        out.extend_from_slice(&[0, 0, 0, 0, 4, 0, 0, 0]);
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend_from_slice(&body);
        out
    }

    pub fn set_u16(&mut self, t: u32, v: u16) -> &mut Self {
        self.elements.insert(t, v.to_le_bytes().to_vec());
        self
    }

    /// Sets a UI/AE/LO value, padded to even length (UI with NUL, text with space).
    pub fn set_str(&mut self, t: u32, v: &str) -> &mut Self {
        let mut b = v.as_bytes().to_vec();
        if b.len() % 2 == 1 {
            let is_uid = matches!(t, tag::AFFECTED_SOP_CLASS_UID | tag::AFFECTED_SOP_INSTANCE_UID);
            b.push(if is_uid { 0 } else { b' ' });
        }
        self.elements.insert(t, b);
        self
    }

    pub fn u16(&self, t: u32) -> Result<u16, CommandError> {
        let v = self.elements.get(&t).ok_or(CommandError::Missing((t >> 16) as u16, t as u16))?;
        if v.len() != 2 {
            return Err(CommandError::BadLength((t >> 16) as u16, t as u16, v.len(), 2));
        }
        Ok(u16::from_le_bytes([v[0], v[1]]))
    }

    pub fn str(&self, t: u32) -> Option<String> {
        self.elements.get(&t).map(|v| String::from_utf8_lossy(v).trim_end_matches(['\0', ' ']).trim_start().to_string())
    }

    pub fn command_field(&self) -> Result<u16, CommandError> {
        self.u16(tag::COMMAND_FIELD)
    }

    pub fn message_id(&self) -> Result<u16, CommandError> {
        self.u16(tag::MESSAGE_ID)
    }

    pub fn has_data_set(&self) -> bool {
        self.u16(tag::DATA_SET_TYPE).map(|v| v != NO_DATA_SET).unwrap_or(false)
    }

    pub fn status(&self) -> Result<u16, CommandError> {
        self.u16(tag::STATUS)
    }

    /// The response to a request with the given status.
    pub fn response_to(rq: &Command, rsp_field: u16, status: u16, comment: Option<&str>) -> Command {
        let mut c = Command::new(rsp_field);
        if let Some(s) = rq.str(tag::AFFECTED_SOP_CLASS_UID) {
            c.set_str(tag::AFFECTED_SOP_CLASS_UID, &s);
        }
        if let Ok(id) = rq.message_id() {
            c.set_u16(tag::MESSAGE_ID_RESPONDED_TO, id);
        }
        c.set_u16(tag::DATA_SET_TYPE, NO_DATA_SET);
        c.set_u16(tag::STATUS, status);
        if let Some(s) = rq.str(tag::AFFECTED_SOP_INSTANCE_UID) {
            c.set_str(tag::AFFECTED_SOP_INSTANCE_UID, &s);
        }
        if let Some(text) = comment {
            // Error Comment is LO: at most 64 characters.
            let text: String = text.chars().filter(|c| *c != '\\').take(64).collect();
            c.set_str(tag::ERROR_COMMENT, &text);
        }
        c
    }

    pub fn c_store_rq(message_id: u16, sop_class: &str, sop_instance: &str) -> Command {
        let mut c = Command::new(C_STORE_RQ);
        c.set_str(tag::AFFECTED_SOP_CLASS_UID, sop_class)
            .set_u16(tag::MESSAGE_ID, message_id)
            .set_u16(tag::PRIORITY, 0)
            .set_u16(tag::DATA_SET_TYPE, DATA_SET_PRESENT)
            .set_str(tag::AFFECTED_SOP_INSTANCE_UID, sop_instance);
        c
    }

    pub fn c_echo_rq(message_id: u16) -> Command {
        let mut c = Command::new(C_ECHO_RQ);
        c.set_str(tag::AFFECTED_SOP_CLASS_UID, crate::dicom_uids::VERIFICATION).set_u16(tag::MESSAGE_ID, message_id).set_u16(tag::DATA_SET_TYPE, NO_DATA_SET);
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_group_length() {
        let rq = Command::c_store_rq(7, "1.2.840.10008.5.1.4.1.1.2", "1.2.3");
        let bytes = rq.encode();
        // Group length value = bytes after the group length element.
        let gl = u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize;
        assert_eq!(gl, bytes.len() - 12);
        let back = Command::decode(&bytes).unwrap();
        assert_eq!(back.command_field().unwrap(), C_STORE_RQ);
        assert_eq!(back.message_id().unwrap(), 7);
        assert!(back.has_data_set());
        assert_eq!(back.str(tag::AFFECTED_SOP_INSTANCE_UID).unwrap(), "1.2.3");
        // odd-length UID was padded with NUL to even length
        assert_eq!(bytes.len() % 2, 0);
    }

    #[test]
    fn response_copies_identifiers_and_truncates_comment() {
        let rq = Command::c_store_rq(9, "1.2.840.10008.5.1.4.1.1.2", "1.2.3.4");
        let long = "x".repeat(100);
        let rsp = Command::response_to(&rq, C_STORE_RSP, 0xA700, Some(&long));
        assert_eq!(rsp.u16(tag::MESSAGE_ID_RESPONDED_TO).unwrap(), 9);
        assert_eq!(rsp.status().unwrap(), 0xA700);
        assert!(!rsp.has_data_set());
        assert_eq!(rsp.str(tag::ERROR_COMMENT).unwrap().len(), 64);
    }

    #[test]
    fn truncated_command_is_an_error() {
        let bytes = Command::c_echo_rq(1).encode();
        assert!(matches!(Command::decode(&bytes[..bytes.len() - 3]), Err(CommandError::Truncated(_))));
    }
}
