//! The fuzzing engine of `tests/fuzz.rs`: the runner (cases, rounds, saved regressions), the
//! committed seed corpus, and the structure-aware mutations the targets draw their inputs from.

use std::fmt::Debug;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, FileFailurePersistence, TestCaseError, TestError, TestRunner};

// ---------------------------------------------------------------------------------------------
// The runner

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// Failing inputs are kept here and replayed first (commit the file).
const REGRESSIONS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/proptest-regressions/fuzz.txt");

/// Runs `check` on `FUZZ_CASES` values of `strategy` (in rounds until `FUZZ_SECS`, if set).
pub(crate) fn fuzz<S>(name: &str, strategy: S, check: impl Fn(S::Value) -> Result<(), TestCaseError>)
where
    S: Strategy,
    S::Value: Debug,
{
    let cases = env_u64("FUZZ_CASES", 256) as u32;
    let budget = std::env::var("FUZZ_SECS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .map(Duration::from_secs);
    let start = Instant::now();
    let mut total = 0u64;
    loop {
        let config = Config {
            cases,
            source_file: Some(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fuzz.rs")),
            failure_persistence: Some(Box::new(FileFailurePersistence::Direct(REGRESSIONS))),
            max_shrink_iters: 4096,
            ..Config::default()
        };
        let mut runner = TestRunner::new(config);
        match runner.run(&strategy, &check) {
            Ok(()) => {}
            Err(TestError::Fail(why, value)) => {
                panic!("fuzz {name}: {why}\nminimal failing input: {value:#?}")
            }
            Err(TestError::Abort(why)) => panic!("fuzz {name}: aborted: {why}"),
        }
        total += u64::from(cases);
        if budget.is_none_or(|b| start.elapsed() >= b) {
            break;
        }
    }
    println!(
        "fuzz {name}: {total} cases in {:.1} s, no failure",
        start.elapsed().as_secs_f64()
    );
}

pub(crate) fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The files of `fuzz/corpus/<target>/`, sorted, as (name, bytes).
pub(crate) fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = repo().join("fuzz/corpus").join(target);
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_file())
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap_or_default(),
            )
        })
        .collect();
    out.sort();
    assert!(!out.is_empty(), "empty corpus {}", dir.display());
    out
}

/// Corpus seeds split into lines (text targets whose unit is one line).
pub(crate) fn corpus_lines(target: &str) -> Vec<Vec<u8>> {
    corpus(target)
        .into_iter()
        .flat_map(|(_, b)| {
            String::from_utf8_lossy(&b)
                .lines()
                .map(|l| l.as_bytes().to_vec())
                .collect::<Vec<_>>()
        })
        .filter(|l| !l.is_empty())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Structure-aware mutations

/// Numbers that break parsers: bounds, signs, NaN and infinities, exponents, empty.
pub(crate) const INTERESTING_NUMBERS: &[&str] = &[
    "0",
    "-0",
    "-1",
    "1",
    "255",
    "256",
    "65535",
    "65536",
    "2147483647",
    "-2147483648",
    "4294967295",
    "4294967296",
    "9223372036854775807",
    "-9223372036854775808",
    "18446744073709551615",
    "18446744073709551616",
    "99999999999999999999999999",
    "1e308",
    "1e309",
    "-1e309",
    "1e-400",
    "NaN",
    "nan",
    "inf",
    "-inf",
    "+Inf",
    "Infinity",
    "0x10",
    "1_000",
    "1.5",
    ".5",
    "5.",
    "-",
    "+",
    "",
    "1e",
    "١٢٣",
];

const INTERESTING_BYTES: &[&[u8]] = &[
    &[0],
    &[0xFF],
    &[0x7F],
    &[0x80],
    &[0xFB],
    &[0xFC],
    &[0xFD],
    &[0xFE],
    &[0xFF; 8],
    &[0; 8],
    &[0xFD, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F],
    &[0xFC, 0xFF, 0xFF, 0xFF, 0xFF],
    b"\"",
    b"\\",
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b":",
    b"=",
    b"\n",
    b"\r\n",
    b"\t",
    b" ",
    b"#",
    b"%",
    b"@",
    b"\xC3\x28",
    b"\xF0\x9F\x92\xA9",
    b"\xEF\xBB\xBF",
];

#[derive(Debug, Clone)]
pub(crate) enum Op {
    FlipBit(Index, u8),
    SetByte(Index, u8),
    Interesting(Index, Index),
    Insert(Index, Vec<u8>),
    Delete(Index, Index),
    Duplicate(Index, Index),
    Truncate(Index),
    Splice(Index, Index, Index, Index),
    // text
    Number(Index, Index),
    DeleteLine(Index),
    DuplicateLine(Index),
    SwapLines(Index, Index),
    DeleteToken(Index),
}

pub(crate) fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (any::<Index>(), 0u8..8).prop_map(|(i, b)| Op::FlipBit(i, b)),
        (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Op::SetByte(i, b)),
        (any::<Index>(), any::<Index>()).prop_map(|(i, v)| Op::Interesting(i, v)),
        (any::<Index>(), proptest::collection::vec(any::<u8>(), 1..16)).prop_map(|(i, v)| Op::Insert(i, v)),
        (any::<Index>(), any::<Index>()).prop_map(|(i, n)| Op::Delete(i, n)),
        (any::<Index>(), any::<Index>()).prop_map(|(i, n)| Op::Duplicate(i, n)),
        any::<Index>().prop_map(Op::Truncate),
        (any::<Index>(), any::<Index>(), any::<Index>(), any::<Index>())
            .prop_map(|(s, a, n, at)| Op::Splice(s, a, n, at)),
        (any::<Index>(), any::<Index>()).prop_map(|(t, v)| Op::Number(t, v)),
        any::<Index>().prop_map(Op::DeleteLine),
        any::<Index>().prop_map(Op::DuplicateLine),
        (any::<Index>(), any::<Index>()).prop_map(|(a, b)| Op::SwapLines(a, b)),
        any::<Index>().prop_map(Op::DeleteToken),
    ]
}

/// Spans of ASCII digits (with sign, point and exponent) in `b`.
fn number_spans(b: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i].is_ascii_digit() {
            let mut s = i;
            if s > 0 && (b[s - 1] == b'-' || b[s - 1] == b'+') {
                s -= 1;
            }
            let mut e = i;
            while e < b.len() && (b[e].is_ascii_digit() || b[e] == b'.' || b[e] == b'e' || b[e] == b'E') {
                e += 1;
            }
            out.push((s, e));
            i = e;
        } else {
            i += 1;
        }
    }
    out
}

fn line_spans(b: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut s = 0;
    for (i, c) in b.iter().enumerate() {
        if *c == b'\n' {
            out.push((s, i + 1));
            s = i + 1;
        }
    }
    if s < b.len() {
        out.push((s, b.len()));
    }
    out
}

fn token_spans(b: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i].is_ascii_whitespace() {
            i += 1;
            continue;
        }
        let s = i;
        while i < b.len() && !b[i].is_ascii_whitespace() {
            i += 1;
        }
        out.push((s, i));
    }
    out
}

/// Applies `ops` to `base`; `seeds` feed splices.
pub(crate) fn mutate(base: &[u8], ops: &[Op], seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut b = base.to_vec();
    for op in ops {
        let len = b.len();
        match op {
            Op::FlipBit(i, bit) if len > 0 => b[i.index(len)] ^= 1 << bit,
            Op::SetByte(i, v) if len > 0 => b[i.index(len)] = *v,
            Op::Interesting(i, v) => {
                let at = i.index(len + 1);
                let x = INTERESTING_BYTES[v.index(INTERESTING_BYTES.len())];
                let end = (at + x.len()).min(len);
                b.splice(at..end, x.iter().copied());
            }
            Op::Insert(i, v) => {
                let at = i.index(len + 1);
                b.splice(at..at, v.iter().copied());
            }
            Op::Delete(i, n) if len > 0 => {
                let at = i.index(len);
                let n = n.index((len - at).min(64)) + 1;
                b.drain(at..at + n);
            }
            Op::Duplicate(i, n) if len > 0 => {
                let at = i.index(len);
                let n = n.index((len - at).min(256)) + 1;
                let chunk: Vec<u8> = b[at..at + n].to_vec();
                b.splice(at..at, chunk);
            }
            Op::Truncate(i) => b.truncate(i.index(len + 1)),
            Op::Splice(s, a, n, at) if !seeds.is_empty() => {
                let src = &seeds[s.index(seeds.len())];
                if !src.is_empty() {
                    let from = a.index(src.len());
                    let n = n.index((src.len() - from).min(512)) + 1;
                    let at = at.index(len + 1);
                    b.splice(at..at, src[from..from + n].iter().copied());
                }
            }
            Op::Number(t, v) => {
                let spans = number_spans(&b);
                if !spans.is_empty() {
                    let (s, e) = spans[t.index(spans.len())];
                    let x = INTERESTING_NUMBERS[v.index(INTERESTING_NUMBERS.len())];
                    b.splice(s..e, x.bytes());
                }
            }
            Op::DeleteLine(i) => {
                let l = line_spans(&b);
                if !l.is_empty() {
                    let (s, e) = l[i.index(l.len())];
                    b.drain(s..e);
                }
            }
            Op::DuplicateLine(i) => {
                let l = line_spans(&b);
                if !l.is_empty() {
                    let (s, e) = l[i.index(l.len())];
                    let line = b[s..e].to_vec();
                    b.splice(s..s, line);
                }
            }
            Op::SwapLines(x, y) => {
                let l = line_spans(&b);
                if l.len() > 1 {
                    let (mut i, mut j) = (x.index(l.len()), y.index(l.len()));
                    if i > j {
                        std::mem::swap(&mut i, &mut j);
                    }
                    if i != j {
                        let (a, c) = (l[i], l[j]);
                        let mut out = b[..a.0].to_vec();
                        out.extend_from_slice(&b[c.0..c.1]);
                        out.extend_from_slice(&b[a.1..c.0]);
                        out.extend_from_slice(&b[a.0..a.1]);
                        out.extend_from_slice(&b[c.1..]);
                        b = out;
                    }
                }
            }
            Op::DeleteToken(i) => {
                let t = token_spans(&b);
                if !t.is_empty() {
                    let (s, e) = t[i.index(t.len())];
                    b.drain(s..e);
                }
            }
            _ => {}
        }
    }
    b
}

/// A seed (by index) with 1..8 stacked mutations, or (one case in eight) random bytes.
pub(crate) fn input(seeds: Vec<Vec<u8>>, max_random: usize) -> impl Strategy<Value = Vec<u8>> {
    let s2 = seeds.clone();
    prop_oneof![
        7 => (any::<Index>(), proptest::collection::vec(op(), 1..8))
            .prop_map(move |(i, ops)| mutate(&s2[i.index(s2.len())], &ops, &s2)),
        1 => proptest::collection::vec(any::<u8>(), 0..max_random),
    ]
}

pub(crate) fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}
