//! The stores CSV file of `fleetctl estate import` / `export` (pure: text in, rows out).
//!
//! One store a row, a header row first (columns in any order; unknown columns are an error,
//! so a typo is not silently ignored):
//!
//! `id,name,retailer,retailer_name,address,time_zone,latitude,longitude,mon,tue,wed,thu,fri,sat,sun`
//!
//! `id`, `name`, `retailer` and `time_zone` are required; `retailer_name` names the retailer
//! (default: its id); a weekday column holds that day's opening hours (`08:00-20:00`,
//! `closed`, `24h`, several ranges separated by spaces); an empty or absent weekday is closed.
//! `latitude` and `longitude` are decimal degrees, both or neither. Every problem names its
//! line (the header is line 1) and column.

use std::collections::BTreeMap;

use super::hours::DAYS;
use super::{Retailer, StoreFile, WeekFile};

/// The columns, in the order `export` writes them.
pub const COLUMNS: [&str; 15] = [
    "id",
    "name",
    "retailer",
    "retailer_name",
    "address",
    "time_zone",
    "latitude",
    "longitude",
    "mon",
    "tue",
    "wed",
    "thu",
    "fri",
    "sat",
    "sun",
];

/// What an import file holds: the retailers it names and its stores, in file order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Parsed {
    pub retailers: Vec<Retailer>,
    pub stores: Vec<StoreFile>,
}

/// A problem of one cell (or of the file), with where it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}, column {column}: {message}")]
pub struct CsvProblem {
    pub line: u64,
    pub column: String,
    pub message: String,
}

/// Every problem of a file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
pub struct CsvErrors(pub Vec<CsvProblem>);

fn problem(line: u64, column: &str, message: impl Into<String>) -> CsvProblem {
    CsvProblem {
        line,
        column: column.into(),
        message: message.into(),
    }
}

/// The CSV column a validation problem's field (`hours.sat`, `latitude`) is in.
fn column_of(field: &str) -> &str {
    field.strip_prefix("hours.").unwrap_or(field)
}

/// Parses a stores file: every store is validated ([`StoreFile::validate`]); ids must be unique
/// and a retailer's name the same on each of its rows.
pub fn parse(text: &str) -> Result<Parsed, CsvErrors> {
    let mut rdr = ::csv::ReaderBuilder::new()
        .trim(::csv::Trim::All)
        .flexible(false)
        .from_reader(text.as_bytes());
    let mut p = Vec::new();
    let headers = match rdr.headers() {
        Ok(h) => h.clone(),
        Err(e) => return Err(CsvErrors(vec![problem(1, "-", e.to_string())])),
    };
    let mut col: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, h) in headers.iter().enumerate() {
        match COLUMNS.iter().find(|c| **c == h) {
            Some(c) if col.insert(c, i).is_some() => p.push(problem(1, h, "appears twice")),
            Some(_) => {}
            None => p.push(problem(
                1,
                h,
                format!("unknown column (known: {})", COLUMNS.join(", ")),
            )),
        }
    }
    for req in ["id", "name", "retailer", "time_zone"] {
        if !col.contains_key(req) {
            p.push(problem(1, req, "required column missing"));
        }
    }
    if !p.is_empty() {
        return Err(CsvErrors(p));
    }
    let mut out = Parsed::default();
    let mut retailer_names: BTreeMap<String, (String, u64)> = BTreeMap::new();
    let mut ids: BTreeMap<String, u64> = BTreeMap::new();
    for rec in rdr.records() {
        let rec = match rec {
            Ok(r) => r,
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line());
                p.push(problem(line, "-", e.to_string()));
                continue;
            }
        };
        let line = rec.position().map_or(0, |p| p.line());
        let get = |c: &str| col.get(c).and_then(|i| rec.get(*i)).unwrap_or("").to_string();
        let opt = |c: &str| Some(get(c)).filter(|v| !v.is_empty());
        let mut coord = |c: &str| match opt(c) {
            None => None,
            Some(v) => v.parse::<f64>().ok().or_else(|| {
                p.push(problem(line, c, format!("{v:?} is not a number of degrees")));
                None
            }),
        };
        let (latitude, longitude) = (coord("latitude"), coord("longitude"));
        let store = StoreFile {
            id: get("id"),
            name: get("name"),
            retailer: get("retailer"),
            address: get("address"),
            time_zone: get("time_zone"),
            hours: WeekFile::from_days(DAYS.map(|d| Some(opt(d).unwrap_or_else(|| "closed".into())))),
            latitude,
            longitude,
        };
        if let Err(errs) = store.validate() {
            for e in errs {
                let (field, msg) = e.split_once(": ").unwrap_or(("-", &e));
                p.push(problem(line, column_of(field), msg));
            }
        }
        if let Some(first) = ids.insert(store.id.clone(), line) {
            p.push(problem(
                line,
                "id",
                format!("{:?} is also on line {first}", store.id),
            ));
        }
        let rname = opt("retailer_name").unwrap_or_else(|| store.retailer.clone());
        match retailer_names.get(&store.retailer) {
            Some((n, l)) if *n != rname => p.push(problem(
                line,
                "retailer_name",
                format!(
                    "{rname:?} differs from {n:?} on line {l} for retailer {:?}",
                    store.retailer
                ),
            )),
            Some(_) => {}
            None => {
                retailer_names.insert(store.retailer.clone(), (rname.clone(), line));
                out.retailers.push(Retailer {
                    id: store.retailer.clone(),
                    name: rname,
                });
            }
        }
        out.stores.push(store);
    }
    if p.is_empty() { Ok(out) } else { Err(CsvErrors(p)) }
}

/// Writes stores (with their retailers' names) in the import format.
pub fn write(retailers: &[Retailer], stores: &[StoreFile]) -> Result<String, ::csv::Error> {
    let mut w = ::csv::Writer::from_writer(Vec::new());
    w.write_record(COLUMNS)?;
    let names: BTreeMap<&str, &str> = retailers
        .iter()
        .map(|r| (r.id.as_str(), r.name.as_str()))
        .collect();
    for s in stores {
        let num = |v: Option<f64>| v.map(|v| v.to_string()).unwrap_or_default();
        let mut row = vec![
            s.id.clone(),
            s.name.clone(),
            s.retailer.clone(),
            names
                .get(s.retailer.as_str())
                .copied()
                .unwrap_or(&s.retailer)
                .to_string(),
            s.address.clone(),
            s.time_zone.clone(),
            num(s.latitude),
            num(s.longitude),
        ];
        row.extend(
            s.hours
                .days()
                .iter()
                .map(|d| (*d).clone().unwrap_or_else(|| "closed".into())),
        );
        w.write_record(&row)?;
    }
    let bytes = w.into_inner().map_err(|e| e.into_error())?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::estate::tests::build_store;

    const GOOD: &str = "\
id,name,retailer,retailer_name,address,time_zone,latitude,longitude,mon,tue,wed,thu,fri,sat,sun
oslo-1,Coop Oslo,coop,Coop Norge,\"Storgata 1, Oslo\",Europe/Oslo,59.91,10.75,08:00-20:00,08:00-20:00,08:00-20:00,08:00-20:00,08:00-20:00,09:00-18:00,closed
bergen-2,Coop Bergen,coop,Coop Norge,,Europe/Oslo,,,24h,24h,24h,24h,24h,24h,
";

    #[test]
    fn a_good_file_parses_and_exports_back_the_same_stores() {
        let p = parse(GOOD).unwrap();
        assert_eq!(
            p.retailers,
            vec![Retailer {
                id: "coop".into(),
                name: "Coop Norge".into()
            }]
        );
        assert_eq!(p.stores.len(), 2);
        assert_eq!(p.stores[0].address, "Storgata 1, Oslo");
        assert_eq!(p.stores[1].hours.sun.as_deref(), Some("closed"));
        let again = parse(&write(&p.retailers, &p.stores).unwrap()).unwrap();
        assert_eq!(again, p);
        let s = build_store("x", "coop");
        assert_eq!(
            parse(&write(&p.retailers, std::slice::from_ref(&s)).unwrap())
                .unwrap()
                .stores,
            vec![s]
        );
    }

    #[test]
    fn problems_name_the_line_and_the_column() {
        let text = "\
id,name,retailer,time_zone,sat,latitude,longitude
oslo-1,Coop,coop,Europe/Oslo,9-17,59.9,10.7
oslo-2,Coop,coop,Nowhere/City,closed,north,10.7
oslo-1,Coop,coop,UTC,closed,,
";
        let e = parse(text).unwrap_err().0;
        let at: Vec<(u64, &str)> = e.iter().map(|p| (p.line, p.column.as_str())).collect();
        assert_eq!(
            at,
            [
                (2, "sat"),
                (3, "latitude"),
                (3, "time_zone"),
                (3, "latitude"),
                (4, "id")
            ],
            "{e:?}"
        );
        assert!(
            e[0].to_string()
                .starts_with("line 2, column sat: \"9-17\" is not HH:MM-HH:MM"),
            "{}",
            e[0]
        );
    }

    #[test]
    fn an_unknown_or_missing_column_is_named() {
        let e = parse("id,name,retailer,timezone\n").unwrap_err().0;
        assert_eq!(e[0].column, "timezone");
        assert!(
            e.iter()
                .any(|p| p.column == "time_zone" && p.message.contains("missing"))
        );
        let e = parse("id,name,retailer,time_zone\na,b,c\n").unwrap_err().0;
        assert_eq!(e[0].line, 2, "{e:?}");
    }
}
