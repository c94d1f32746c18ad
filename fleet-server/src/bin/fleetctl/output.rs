//! How listings print: `--output table` (the default, columns padded to their widest cell)
//! or `--output json` (the server's answer as it came, pretty-printed, for scripts and `jq`).

use clap::{Args, ValueEnum};
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum Format {
    #[default]
    Table,
    Json,
}

/// `--output table|json`, flattened into each listing.
#[derive(Args, Clone, Debug)]
pub struct OutputArg {
    /// table (columns) or json (the server's answer).
    #[arg(long, short = 'o', value_enum, default_value_t = Format::Table)]
    pub output: Format,
}

/// A table: a header and rows of cells (each already text).
pub struct Table {
    head: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(head: &[&'static str]) -> Table {
        Table {
            head: head.to_vec(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table as text: columns as wide as their widest cell, the last one unpadded.
    pub fn render(&self) -> String {
        let n = self.head.len();
        let mut width: Vec<usize> = self.head.iter().map(|h| h.chars().count()).collect();
        for r in &self.rows {
            for (i, c) in r.iter().enumerate().take(n) {
                width[i] = width[i].max(c.chars().count());
            }
        }
        let line = |cells: &mut dyn Iterator<Item = &str>| {
            let mut s = String::new();
            for (i, c) in cells.enumerate().take(n) {
                if i + 1 < n {
                    s.push_str(&format!("{c:<w$}  ", w = width[i]));
                } else {
                    s.push_str(c);
                }
            }
            s.trim_end().to_string() + "\n"
        };
        let mut out = line(&mut self.head.iter().copied());
        for r in &self.rows {
            out.push_str(&line(&mut r.iter().map(String::as_str)));
        }
        out
    }
}

/// Prints `v` as JSON, or `table(v)` as a table.
pub fn print(format: Format, v: &Value, table: impl FnOnce(&Value) -> Table) -> anyhow::Result<()> {
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(v)?),
        Format::Table => print!("{}", table(v).render()),
    }
    Ok(())
}

/// With `--output json`, prints `v` and says so (true): the caller's own table is skipped.
pub fn printed_json(out: &OutputArg, v: &Value) -> anyhow::Result<bool> {
    if out.output == Format::Json {
        println!("{}", serde_json::to_string_pretty(v)?);
        return Ok(true);
    }
    Ok(false)
}

/// A string field, or `-`.
pub fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// A number with `d` decimals, or `-`.
pub fn num(v: &Value, d: usize) -> String {
    v.as_f64().map_or_else(|| "-".into(), |x| format!("{x:.d$}"))
}

/// Milliseconds since the epoch as RFC 3339 UTC to the second, or `-`.
pub fn time(v: &Value) -> String {
    v.as_i64()
        .and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok())
        .map_or_else(
            || "-".into(),
            |t| {
                t.round(jiff::Unit::Second)
                    .map_or_else(|_| t.to_string(), |t| t.to_string())
            },
        )
}

/// The items of `v[key]` (an empty list when absent).
pub fn items<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v[key].as_array().map_or(&[], Vec::as_slice)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_as_wide_as_their_widest_cell() {
        let mut t = Table::new(&["ID", "STATE", "SUMMARY"]);
        t.row(vec!["a:rvm1:1".into(), "firing".into(), "too hot".into()]);
        t.row(vec!["b".into(), "-".into(), String::new()]);
        assert_eq!(
            t.render(),
            "ID        STATE   SUMMARY\na:rvm1:1  firing  too hot\nb         -\n"
        );
    }

    #[test]
    fn times_are_utc_seconds_and_absent_values_a_dash() {
        assert_eq!(
            time(&serde_json::json!(1_796_637_600_123_i64)),
            "2026-12-07T10:00:00Z"
        );
        assert_eq!(time(&Value::Null), "-");
        assert_eq!(num(&serde_json::json!(1.234), 1), "1.2");
        assert_eq!(s(&Value::Null), "-");
    }
}
