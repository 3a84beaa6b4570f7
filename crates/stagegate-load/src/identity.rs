//! Who each virtual user is: a row of variables from a CSV or JSON file.
//!
//! Virtual user `i` takes row `i` (wrapping around when there are fewer rows than users; the
//! report says so, since users sharing an identity cannot prove isolation from each other).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::LoadError;

/// One virtual user's variables (`${{ vu.NAME }}` in requests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The row it came from (0-based).
    pub index: usize,
    vars: Vec<(String, String)>,
}

impl Identity {
    pub fn new<K: Into<String>, V: Into<String>>(
        index: usize,
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        Self {
            index,
            vars: vars
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }

    /// The identity of a run without identities: no variables.
    pub fn anonymous(index: usize) -> Self {
        Self {
            index,
            vars: Vec::new(),
        }
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Sets a variable (a captured value), replacing its value if it has one; returns the
    /// value it replaced.
    pub fn set(&mut self, name: &str, value: impl Into<String>) -> Option<String> {
        let value = value.into();
        match self.vars.iter_mut().find(|(k, _)| k == name) {
            Some((_, v)) => Some(std::mem::replace(v, value)),
            None => {
                self.vars.push((name.to_string(), value));
                None
            }
        }
    }

    /// Puts back what [`Identity::set`] replaced.
    pub(crate) fn restore(&mut self, name: &str, old: Option<String>) {
        match old {
            Some(v) => {
                self.set(name, v);
            }
            None => self.vars.retain(|(k, _)| k != name),
        }
    }
}

/// The identities virtual users take, in order.
#[derive(Debug, Clone, Default)]
pub struct Identities {
    pub columns: Vec<String>,
    rows: Vec<Arc<Identity>>,
    /// The file they were read from, to name it in errors.
    source: Option<PathBuf>,
}

impl Identities {
    pub fn new(columns: Vec<String>, rows: Vec<Identity>) -> Self {
        Self {
            columns,
            rows: rows.into_iter().map(Arc::new).collect(),
            source: None,
        }
    }

    /// The file they were read from by [`Identities::from_path`], as it was given.
    pub fn source(&self) -> Option<&Path> {
        self.source.as_deref()
    }

    /// Reads a `.csv` (a header row, then one user per row) or `.json` file (an array of
    /// objects whose values are strings, numbers or booleans).
    pub fn from_path(path: &Path) -> Result<Self, LoadError> {
        let err = |reason: String| LoadError::Identities {
            path: path.to_path_buf(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let is_json = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("json"))
            || text.trim_start().starts_with('[');
        let ids = if is_json {
            Self::from_json(&text)
        } else {
            Self::from_csv(&text)
        }
        .map_err(err)?;
        if ids.is_empty() {
            return Err(err("it has no users: add at least one row".into()));
        }
        Ok(Self {
            source: Some(path.to_path_buf()),
            ..ids
        })
    }

    pub fn from_csv(text: &str) -> Result<Self, String> {
        let mut records = parse_csv(text)?.into_iter();
        let columns: Vec<String> = records
            .next()
            .ok_or("it is empty: the first line must name the columns (id,token,...)")?
            .into_iter()
            .map(|c| c.trim().to_string())
            .collect();
        if columns.iter().any(|c| c.is_empty()) {
            return Err("a column in the header row has no name".into());
        }
        let mut rows = Vec::new();
        for (i, rec) in records.enumerate() {
            if rec.len() == 1 && rec[0].trim().is_empty() {
                continue;
            }
            if rec.len() != columns.len() {
                return Err(format!(
                    "row {} has {} fields, the header has {}",
                    i + 2,
                    rec.len(),
                    columns.len()
                ));
            }
            let index = rows.len();
            rows.push(Identity::new(index, columns.iter().cloned().zip(rec)));
        }
        Ok(Self::new(columns, rows))
    }

    pub fn from_json(text: &str) -> Result<Self, String> {
        let v: serde_json::Value =
            serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))?;
        let arr = v
            .as_array()
            .ok_or("it must be an array of objects, one per user")?;
        let mut columns: Vec<String> = Vec::new();
        let mut rows = Vec::new();
        for (i, item) in arr.iter().enumerate() {
            let obj = item
                .as_object()
                .ok_or_else(|| format!("item {} is not an object", i + 1))?;
            let mut vars = Vec::new();
            for (k, v) in obj {
                let s = match v {
                    serde_json::Value::String(s) => s.clone(),
                    serde_json::Value::Number(n) => n.to_string(),
                    serde_json::Value::Bool(b) => b.to_string(),
                    _ => {
                        return Err(format!(
                            "item {}: `{k}` must be a string, number or boolean",
                            i + 1
                        ));
                    }
                };
                if !columns.contains(k) {
                    columns.push(k.clone());
                }
                vars.push((k.clone(), s));
            }
            rows.push(Identity::new(i, vars));
        }
        Ok(Self::new(columns, rows))
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The identity of virtual user `vu`.
    pub fn for_vu(&self, vu: usize) -> Arc<Identity> {
        if self.rows.is_empty() {
            Arc::new(Identity::anonymous(vu))
        } else {
            self.rows[vu % self.rows.len()].clone()
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = &Identity> {
        self.rows.iter().map(|r| r.as_ref())
    }
}

/// RFC 4180 records: quoted fields may hold commas, newlines and doubled quotes.
fn parse_csv(text: &str) -> Result<Vec<Vec<String>>, String> {
    let mut records = Vec::new();
    let mut record = Vec::new();
    let mut field = String::new();
    let mut chars = text.chars().peekable();
    let mut quoted = false;
    let mut line = 1;
    while let Some(c) = chars.next() {
        if quoted {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => quoted = false,
                '\n' => {
                    line += 1;
                    field.push(c);
                }
                _ => field.push(c),
            }
            continue;
        }
        match c {
            '"' if field.is_empty() => quoted = true,
            ',' => record.push(std::mem::take(&mut field)),
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' => {
                line += 1;
                record.push(std::mem::take(&mut field));
                records.push(std::mem::take(&mut record));
            }
            _ => field.push(c),
        }
    }
    if quoted {
        return Err(format!("a quoted field is not closed (line {line})"));
    }
    if !field.is_empty() || !record.is_empty() {
        record.push(field);
        records.push(record);
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_rows_become_identities() {
        let ids = Identities::from_csv("id,token\n1,aaa\n2,\"b,\"\"b\"\"\"\n\n3,ccc\r\n").unwrap();
        assert_eq!(ids.columns, ["id", "token"]);
        assert_eq!(ids.len(), 3);
        assert_eq!(ids.for_vu(1).get("token"), Some("b,\"b\""));
        assert_eq!(ids.for_vu(5).get("id"), Some("3"), "wraps around");
        let e = Identities::from_csv("id,token\n1\n").unwrap_err();
        assert!(e.contains("row 2 has 1 fields, the header has 2"), "{e}");
    }

    #[test]
    fn json_objects_become_identities() {
        let ids = Identities::from_json(r#"[{"id": 1, "name": "ann"}, {"id": 2, "name": "bo"}]"#)
            .unwrap();
        assert_eq!(ids.for_vu(1).get("name"), Some("bo"));
        assert_eq!(ids.for_vu(0).get("id"), Some("1"));
        let e = Identities::from_json(r#"{"id": 1}"#).unwrap_err();
        assert!(e.contains("array of objects"), "{e}");
    }

    #[test]
    fn set_replaces_or_adds_and_restore_undoes_it() {
        let mut id = Identity::new(0, [("id", "1")]);
        assert_eq!(id.set("token", "a"), None);
        assert_eq!(id.set("token", "b").as_deref(), Some("a"));
        assert_eq!(id.get("token"), Some("b"));
        id.restore("token", Some("a".into()));
        assert_eq!(id.get("token"), Some("a"));
        id.restore("token", None);
        assert_eq!(id.get("token"), None);
        assert_eq!(id.get("id"), Some("1"));
    }
}
