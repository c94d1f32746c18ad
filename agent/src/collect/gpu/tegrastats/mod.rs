//! tegrastats: a pure line parser and a backend that runs the command.
//!
//! The parser ([`parse::parse_line`]) reads every tegrastats format seen from JetPack 3 to 7
//! (real lines in `agent/tests/fixtures/tegrastats/`): an optional timestamp; `RAM`, `SWAP`,
//! `IRAM` with their `(lfb ...)` / `(cached ...)` groups; `CPU [..]` with `off` cores;
//! `EMC_FREQ`, `GR3D_FREQ`, `GR3D2_FREQ` as `N%`, `N%@F`, `N%@[F,..]` or `@[F,..]`; engine
//! fields (`APE 174`, `NVENC off`); `MTS fg N% bg N%`; temperatures `X@NC`, `X@-256C`,
//! `X@NC/NC`, `X@cur/maxC`; and power rails `NAME cur/avg[/max]` with or without `mW`. Fields
//! are found by shape, not by position, and any run of whitespace separates them.
//!
//! Invariants: the parser never panics; a line without a `RAM` field is not a tegrastats line;
//! a known field with a malformed value is an error naming the field; a token the parser does
//! not know is kept in [`parse::TegraSample::unknown`] rather than failing the line (new
//! JetPack releases add fields). An offline sensor (`-256C`, `NC`) is not a reading; `NC` rails
//! are unconnected and skipped.
//!
//! The backend ([`backend::TegrastatsBackend`]) keeps one child process and a reader thread
//! that stores the latest parsed line; `sample()` only reads that, so it never waits for the
//! child.

pub mod backend;
pub mod parse;
