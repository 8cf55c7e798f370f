//! A minimal CSV reader for the data sets' index files: a header row,
//! comma-separated fields, double quotes for fields with commas or quotes
//! (no line breaks inside fields). Errors name the file and line.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::error::{DataError, Result};

pub struct Table {
    pub path: PathBuf,
    pub header: Vec<String>,
    /// (1-based line number, fields)
    pub rows: Vec<(usize, Vec<String>)>,
    columns: HashMap<String, usize>,
}

impl Table {
    pub fn read(path: &Path) -> Result<Table> {
        let text = std::fs::read_to_string(path).map_err(|e| DataError::Io { path: path.to_path_buf(), error: e })?;
        Self::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Table> {
        let mut lines = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty());
        let (_, head) = lines.next().ok_or_else(|| DataError::table(path, 1, "empty file: expected a header row"))?;
        let header = split_line(head.trim_start_matches('\u{feff}')).map_err(|r| DataError::table(path, 1, r))?;
        let columns = header.iter().enumerate().map(|(i, h)| (h.trim().to_string(), i)).collect();
        let mut rows = Vec::new();
        for (i, line) in lines {
            let fields = split_line(line).map_err(|r| DataError::table(path, i + 1, r))?;
            if fields.len() != header.len() {
                return Err(DataError::table(path, i + 1, format!("{} fields, the header has {}", fields.len(), header.len())));
            }
            rows.push((i + 1, fields));
        }
        Ok(Table { path: path.to_path_buf(), header, rows, columns })
    }

    /// Index of a required column.
    pub fn column(&self, name: &str) -> Result<usize> {
        self.columns.get(name).copied().ok_or_else(|| DataError::table(&self.path, 1, format!("no column '{name}' (columns: {})", self.header.join(", "))))
    }

    /// Parses field `col` of the row at `line` as f64.
    pub fn number(&self, line: usize, fields: &[String], col: usize) -> Result<f64> {
        let s = fields[col].trim();
        s.parse::<f64>()
            .ok()
            .filter(|v| v.is_finite())
            .ok_or_else(|| DataError::table(&self.path, line, format!("column '{}': '{s}' is not a number", self.header[col])))
    }
}

fn split_line(line: &str) -> std::result::Result<Vec<String>, String> {
    let line = line.trim_end_matches('\r');
    let mut fields = Vec::new();
    let mut cur = String::new();
    let mut chars = line.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                cur.push('"');
            }
            (true, '"') => quoted = false,
            (false, '"') if cur.is_empty() => quoted = true,
            (false, ',') => fields.push(std::mem::take(&mut cur)),
            (_, c) => cur.push(c),
        }
    }
    if quoted {
        return Err("unterminated quoted field".into());
    }
    fields.push(cur);
    Ok(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_and_errors() {
        let t = Table::parse(Path::new("t.csv"), "a,b\n1,\"x, \"\"y\"\"\"\n\n2,z\n").unwrap();
        assert_eq!(t.rows, vec![(2, vec!["1".to_string(), "x, \"y\"".to_string()]), (4, vec!["2".to_string(), "z".to_string()])]);
        let e = Table::parse(Path::new("t.csv"), "a,b\n1,2\n3\n").err().unwrap().to_string();
        assert_eq!(e, "t.csv:3: 1 fields, the header has 2");
        assert!(t.column("c").err().unwrap().to_string().contains("no column 'c'"));
        let e = t.number(4, &t.rows[1].1, 1).err().unwrap().to_string();
        assert_eq!(e, "t.csv:4: column 'b': 'z' is not a number");
    }
}
