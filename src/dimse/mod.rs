//! DIMSE over dicom-ul's PDU codec: framing (`connection`), command sets
//! (`command`), statuses, the storage SCP and the SCU used for export.

pub mod command;
pub mod connection;
pub mod scp;
pub mod scu;
pub mod status;

/// A remote application entity: `AE@HOST:PORT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteAe {
    pub ae_title: String,
    pub host: String,
    pub port: u16,
}

impl std::str::FromStr for RemoteAe {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (ae, rest) = s.split_once('@').ok_or_else(|| format!("`{s}`: expected AE@HOST:PORT"))?;
        let (host, port) = rest.rsplit_once(':').ok_or_else(|| format!("`{s}`: expected AE@HOST:PORT"))?;
        let port = port.parse().map_err(|_| format!("`{s}`: port `{port}` is not a number"))?;
        if ae.is_empty() || ae.len() > 16 {
            return Err(format!("`{s}`: AE title must be 1 to 16 characters"));
        }
        Ok(RemoteAe { ae_title: ae.to_string(), host: host.trim_matches(['[', ']']).to_string(), port })
    }
}

impl From<&crate::config::Peer> for RemoteAe {
    fn from(p: &crate::config::Peer) -> Self {
        RemoteAe { ae_title: p.ae_title.clone(), host: p.host.clone(), port: p.port }
    }
}

impl std::fmt::Display for RemoteAe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}:{}", self.ae_title, self.host, self.port)
    }
}

#[cfg(test)]
mod tests {
    use super::RemoteAe;

    #[test]
    fn parse_remote_ae() {
        let r: RemoteAe = "PACS@127.0.0.1:104".parse().unwrap();
        assert_eq!(r, RemoteAe { ae_title: "PACS".into(), host: "127.0.0.1".into(), port: 104 });
        assert!("PACS127.0.0.1:104".parse::<RemoteAe>().is_err());
        assert!("PACS@host:x".parse::<RemoteAe>().is_err());
    }
}
