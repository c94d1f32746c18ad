//! Fuzzing of every parser that sees untrusted input, on the stable toolchain: proptest-driven
//! targets (libFuzzer needs nightly) that
//!
//! 1. replay the committed seed corpus `fuzz/corpus/<target>/` (real tegrastats lines,
//!    valid encoded envelopes, signed commands, configs, pushes, scrapes, API bodies), and
//! 2. run `FUZZ_CASES` cases (default 256, so CI stays short) of a *structure-aware* strategy:
//!    stacked mutations of corpus inputs (bit flips, interesting integers and numbers, chunk
//!    insert/delete/duplicate, splices between seeds, line and token edits) beside plain
//!    random input. With `FUZZ_SECS=N` a target repeats rounds of `FUZZ_CASES` with fresh
//!    seeds until N seconds have passed (see `fuzz/README.md`).
//!
//! Each target asserts "never panics" and the target's own invariants (what decodes
//! re-encodes, numbers reported are finite, a refused command is never run, an HTTP answer is
//! never a 5xx). A failure is saved by proptest in `tests/proptest-regressions/fuzz.txt` and
//! replayed first on the next run. Targets already covered by unit proptests (arbitrary bytes into
//! `codec::decode`, `command::verify`, `tegrastats::parse::parse_line`) are not repeated here: these
//! start from the corpus and go through the same entry points the binaries use
//! (`ingest::decode_record`, `agent::commands::verify::check`, the sysfs backend on a real tree).

use std::path::{Path, PathBuf};
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

#[path = "fuzz/engine.rs"]
mod engine;
use engine::{INTERESTING_NUMBERS, corpus, corpus_lines, fuzz, input, mutate, op, repo, text};
use proptest::sample::Index;

// ---------------------------------------------------------------------------------------------
// Targets

/// Every record kind through the server's ingest decoder, every bare decoder, and JSON.
fn check_envelope(bytes: &[u8]) -> Result<(), TestCaseError> {
    use common::codec::{decode, decode_bare, encode, from_json};
    use common::command::{CommandResult, SignedCommand};
    use common::topics::Kind;
    use common::{DeviceState, Envelope, Event, HealthReport, Telemetry};
    let dev = common::DeviceId::new("rvm0001").map_err(|e| TestCaseError::fail(e.to_string()))?;
    for kind in Kind::ALL {
        let _ = fleet_server::ingest::decode::decode_record(&dev, kind, bytes);
    }
    // what decodes re-encodes, and that encoding is stable: decode(encode(x)) encodes the same.
    // (Not byte-identical to the input: bincode's varints accept non-minimal lengths, which is
    // harmless here, since dedup is by (device, seq), never by bytes.)
    fn canonical<T: serde::Serialize + serde::de::DeserializeOwned>(
        bytes: &[u8],
    ) -> Result<(), TestCaseError> {
        if let Ok(env) = decode::<T>(bytes) {
            let once = encode(&env).map_err(|e| TestCaseError::fail(format!("re-encode: {e}")))?;
            let back = decode::<T>(&once).map_err(|e| TestCaseError::fail(format!("re-decode: {e}")))?;
            let twice = encode(&back).map_err(|e| TestCaseError::fail(format!("re-encode: {e}")))?;
            prop_assert_eq!(once, twice, "encoding is not stable");
        }
        Ok(())
    }
    canonical::<Telemetry>(bytes)?;
    canonical::<HealthReport>(bytes)?;
    canonical::<Event>(bytes)?;
    canonical::<DeviceState>(bytes)?;
    canonical::<CommandResult>(bytes)?;
    let _ = decode_bare::<SignedCommand>(bytes);
    let _ = decode_bare::<common::command::Command>(bytes);
    let _ = from_json::<Envelope<Telemetry>>(bytes);
    let _ = from_json::<Envelope<HealthReport>>(bytes);
    let _ = from_json::<Envelope<Event>>(bytes);
    let _ = from_json::<Envelope<DeviceState>>(bytes);
    let _ = from_json::<Envelope<CommandResult>>(bytes);
    Ok(())
}

#[test]
fn fuzz_envelope_decode() {
    let seeds = corpus("envelope");
    // the valid seeds still decode with this build (else regenerate: fuzz/README.md)
    for (name, b) in &seeds {
        check_envelope(b).unwrap_or_else(|e| panic!("corpus {name}: {e}"));
        if name.starts_with("valid-") {
            let dev = common::DeviceId::new("rvm0001").unwrap();
            let what = name.trim_start_matches("valid-");
            let kind = [
                ("telemetry", common::topics::Kind::Telemetry),
                ("health", common::topics::Kind::Health),
                ("event", common::topics::Kind::Event),
                ("state", common::topics::Kind::State),
                ("cmd-result", common::topics::Kind::CmdResult),
            ]
            .into_iter()
            .find(|(p, _)| what.starts_with(p))
            .map(|(_, k)| k)
            .unwrap_or_else(|| panic!("corpus {name}: which kind?"));
            assert!(
                fleet_server::ingest::decode::decode_record(&dev, kind, b).is_ok(),
                "corpus {name} no longer decodes: the wire format changed (fuzz/README.md says how to regenerate)"
            );
        }
    }
    let seeds: Vec<Vec<u8>> = seeds.into_iter().map(|(_, b)| b).collect();
    fuzz("envelope_decode", input(seeds, 4096), |b| check_envelope(&b));
}

fn test_signer() -> common::command::CommandSigner {
    test_keys().0
}

/// A fresh command-signing key, as the server's signer and as a raw Ed25519 key pair (to sign
/// arbitrary payloads, which the signer's API cannot).
fn test_keys() -> (common::command::CommandSigner, ring::signature::Ed25519KeyPair) {
    let der = common::command::CommandSigner::generate_pkcs8().unwrap();
    (
        common::command::CommandSigner::from_pkcs8(&der).unwrap(),
        ring::signature::Ed25519KeyPair::from_pkcs8(&der).unwrap(),
    )
}

#[test]
fn fuzz_signed_command_verify() {
    use common::command::{Command, SignedCommand};
    use rvm_agent::commands::executed::MemExecuted;
    use rvm_agent::commands::verify::{Verdict, check};
    let seeds = corpus("command");
    let (signer, raw) = test_keys();
    let key = signer.public_key();
    let me = common::DeviceId::new("rvm0001").unwrap();
    let now = 1_800_000_000_000i64;
    // signed with a key that is not ours: every seed is refused, never run
    for (name, b) in &seeds {
        if let Ok(sc) = common::codec::decode_bare::<SignedCommand>(b) {
            let store = MemExecuted::default();
            assert!(
                !matches!(check(&sc, Some(&key), &me, &store, now), Verdict::Run(_)),
                "corpus {name}: a command signed by another key would run"
            );
        }
    }
    let seeds: Vec<Vec<u8>> = seeds.into_iter().map(|(_, b)| b).collect();
    // Two shapes: (1) a mutated SignedCommand checked as it arrives (bad signatures, broken
    // framing); (2) a mutated *payload* signed with our key, so the fuzzer reaches what lies
    // behind the signature: the payload decoder, the device and expiry checks, replay.
    let strategy = (input(seeds, 1024), any::<bool>(), any::<i64>());
    fuzz("signed_command_verify", strategy, move |(b, sign, now_ms)| {
        let store = MemExecuted::default();
        let sc = if sign {
            let payload = common::codec::decode_bare::<SignedCommand>(&b)
                .map(|s| s.payload)
                .unwrap_or(b);
            let mut msg = common::command::SIGNING_CONTEXT.to_vec();
            msg.extend_from_slice(&payload);
            let signature = raw.sign(&msg).as_ref().to_vec();
            // the signer agrees on what it signs (a valid Command)
            if let Ok(c) = common::codec::decode_bare::<Command>(&payload) {
                let again = signer.sign(&c).map_err(|e| TestCaseError::fail(e.to_string()))?;
                if c.expires_ms > i64::MIN {
                    prop_assert!(common::command::verify(&again, &key, &c.device, c.expires_ms - 1).is_ok());
                }
            }
            SignedCommand { payload, signature }
        } else {
            match common::codec::decode_bare::<SignedCommand>(&b) {
                Ok(sc) => sc,
                Err(_) => return Ok(()),
            }
        };
        let verdict = check(&sc, Some(&key), &me, &store, now_ms);
        if let Verdict::Run(cmd) = &verdict {
            // only a command for this device, not expired, signed by our key, ever runs
            prop_assert_eq!(&cmd.device, &me);
            prop_assert!(cmd.expires_ms > now_ms);
            prop_assert!(common::command::verify(&sc, &key, &me, now_ms).is_ok());
        }
        let _ = common::command::verify(&sc, &key, &me, now_ms);
        Ok(())
    });
}

fn finite_gpu(g: &common::GpuStats) -> Result<(), TestCaseError> {
    let opt = [
        g.load_pct,
        g.freq_mhz,
        g.min_freq_mhz,
        g.max_freq_mhz,
        g.emc_pct,
        g.emc_freq_mhz,
        g.fan_pct,
    ];
    for v in opt.into_iter().flatten() {
        prop_assert!(v.is_finite(), "non-finite GPU figure {v} in {g:?}");
    }
    for t in &g.temperatures {
        prop_assert!(t.value.is_finite(), "non-finite temperature {t:?}");
    }
    for r in &g.rails {
        prop_assert!(r.power_mw.is_finite(), "non-finite rail {r:?}");
        for v in [r.voltage_mv, r.current_ma, r.avg_power_mw].into_iter().flatten() {
            prop_assert!(v.is_finite(), "non-finite rail {r:?}");
        }
    }
    Ok(())
}

fn check_tegrastats(b: &[u8]) -> Result<(), TestCaseError> {
    use rvm_agent::collect::gpu::tegrastats::parse::parse_line;
    if let Ok(s) = parse_line(&text(b)) {
        let g = s.to_gpu_stats();
        finite_gpu(&g)?;
        // what it reports goes on the wire
        let t = common::Telemetry {
            gpu: Some(g),
            ..Default::default()
        };
        common::codec::encode(&t).map_err(|e| TestCaseError::fail(e.to_string()))?;
    }
    Ok(())
}

#[test]
fn fuzz_tegrastats_line() {
    let seeds = corpus_lines("tegrastats");
    for l in &seeds {
        check_tegrastats(l).unwrap_or_else(|e| panic!("corpus line {:?}: {e}", text(l)));
    }
    fuzz("tegrastats_line", input(seeds, 512), |b| check_tegrastats(&b));
}

/// Copies a directory tree (plain files and directories).
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let p = e.path();
        let q = to.join(e.file_name());
        if p.is_dir() {
            copy_tree(&p, &q);
        } else {
            std::fs::copy(&p, &q).unwrap();
        }
    }
}

fn files_under(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(root).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out.sort();
    out
}

#[test]
fn fuzz_jetson_sysfs_values() {
    use rvm_agent::collect::gpu::platform;
    use rvm_agent::collect::gpu::sysfs::JetsonSysfs;
    use rvm_agent::collect::gpu::{GpuBackend, GpuPaths};
    // the real trees of two boards, copied once; each case rewrites a few of their files
    let dir = tempfile::tempdir().unwrap();
    let fixtures = repo().join("agent/tests/fixtures/jetson");
    let mut trees = Vec::new();
    for board in ["orin-nano-jp6", "agx-orin-jp5"] {
        let root = dir.path().join(board);
        copy_tree(&fixtures.join(board), &root);
        let files: Vec<(PathBuf, Vec<u8>)> = files_under(&root)
            .into_iter()
            .map(|p| {
                let b = std::fs::read(&p).unwrap();
                (p, b)
            })
            .collect();
        trees.push((root, files));
    }
    let values = corpus_lines("sysfs");
    let check = |root: &Path| -> Result<(), TestCaseError> {
        let paths = GpuPaths::under_root(root);
        if let Some(mut b) = JetsonSysfs::probe(&paths)
            && let Some(g) = b.sample()
        {
            finite_gpu(&g)?;
        }
        let p = platform::Platform::read(&paths);
        let _ = (p.nvpmodel(), p.nvmap_used_bytes());
        Ok(())
    };
    for (root, _) in &trees {
        check(root).unwrap();
    }
    // (board, [(file, value seed or file's own content, mutations)])
    let edit = (
        any::<Index>(),
        any::<Index>(),
        any::<bool>(),
        proptest::collection::vec(op(), 0..6),
    );
    let strategy = (any::<Index>(), proptest::collection::vec(edit, 1..5));
    fuzz("jetson_sysfs_values", strategy, |(board, edits)| {
        let (root, files) = &trees[board.index(trees.len())];
        let mut touched = Vec::new();
        for (f, v, own, ops) in &edits {
            let (path, original) = &files[f.index(files.len())];
            let base = if *own {
                original.clone()
            } else {
                values[v.index(values.len())].clone()
            };
            let content = mutate(&base, ops, &values);
            std::fs::write(path, &content).map_err(|e| TestCaseError::fail(e.to_string()))?;
            // the pure parsers of the same texts
            let t = text(&content);
            let _ = platform::parse_model(&content);
            let _ = platform::parse_nv_tegra_release(&t);
            let _ = platform::jetpack_for_l4t(&t);
            if let Some(id) = platform::parse_nvpmodel_status(&t) {
                let _ = platform::nvpmodel_name(&t, id);
            }
            let _ = platform::parse_nvmap_used_bytes(&t);
            touched.push((path.clone(), original.clone()));
        }
        let r = check(root);
        for (p, orig) in touched {
            std::fs::write(&p, &orig).map_err(|e| TestCaseError::fail(e.to_string()))?;
        }
        r
    });
}

#[test]
fn fuzz_agent_config() {
    use rvm_agent::config::AgentFile;
    let seeds: Vec<Vec<u8>> = corpus("agent-config").into_iter().map(|(_, b)| b).collect();
    let check = |b: &[u8]| {
        // parse + validate never panic; a config that validates loads its derived settings
        if let Ok(f) = AgentFile::parse(&text(b)) {
            let problems = f.validate();
            if problems.is_empty() {
                let _ = rvm_agent::agent::gpu_paths(&f);
            }
        }
    };
    for s in &seeds {
        check(s);
    }
    fuzz("agent_config", input(seeds, 2048), |b| {
        check(&b);
        Ok(())
    });
}

#[test]
fn fuzz_server_config() {
    use fleet_server::config::ServerFile;
    let seeds: Vec<Vec<u8>> = corpus("server-config").into_iter().map(|(_, b)| b).collect();
    let check = |b: &[u8]| {
        let t = text(b);
        if let Ok(f) = toml::from_str::<ServerFile>(&t)
            && let Ok(cfg) = f.validate()
            && let Some(a) = &cfg.alerting
        {
            let _ = a.rules.load();
        }
        // the same text as a rules file
        if let Ok(r) = fleet_server::alerts::rules::parse_rules(&t) {
            let _ = fleet_server::alerts::engine::AlertEngine::new(r.rules);
        }
    };
    for s in &seeds {
        check(s);
    }
    fuzz("server_config", input(seeds, 2048), |b| {
        check(&b);
        Ok(())
    });
}

#[test]
fn fuzz_app_metrics_push_json() {
    use rvm_agent::appmetrics::push::parse_push;
    let seeds: Vec<Vec<u8>> = corpus("app-push").into_iter().map(|(_, b)| b).collect();
    let check = |b: &[u8], max: usize| -> Result<(), TestCaseError> {
        if let Ok(r) = parse_push(b, max) {
            prop_assert!(r.len() <= max, "{} readings over the limit {max}", r.len());
            for x in &r {
                prop_assert!(x.value.is_finite(), "non-finite pushed value {x:?}");
                prop_assert!(
                    rvm_agent::appmetrics::names::validate_name(&x.name).is_ok(),
                    "bad name accepted {x:?}"
                );
            }
        }
        Ok(())
    };
    for s in &seeds {
        check(s, 64).unwrap();
    }
    fuzz(
        "app_metrics_push_json",
        (input(seeds, 1024), 0usize..80),
        |(b, max)| check(&b, max),
    );
}

#[test]
fn fuzz_app_metrics_prometheus_text() {
    use rvm_agent::appmetrics::prometheus::{parse_prometheus, samples_to_readings};
    let seeds: Vec<Vec<u8>> = corpus("prometheus").into_iter().map(|(_, b)| b).collect();
    let check = |b: &[u8]| -> Result<(), TestCaseError> {
        if let Ok(parsed) = parse_prometheus(&text(b)) {
            for r in samples_to_readings(&parsed.samples) {
                prop_assert!(r.value.is_finite(), "non-finite reading {r:?}");
                prop_assert!(r.name.len() <= 64, "over-long name {:?}", r.name);
            }
        }
        Ok(())
    };
    for s in &seeds {
        check(s).unwrap();
    }
    fuzz("app_metrics_prometheus_text", input(seeds, 2048), |b| check(&b));
}

#[test]
fn fuzz_metrics_history_query_plan() {
    use fleet_server::history::query::{MetricsParams, plan};
    use fleet_server::history::rollup::HistoryPolicy;
    // values of each parameter as the seeds; mutations of them, or none
    let seeds: Vec<Vec<u8>> = corpus_lines("http")
        .into_iter()
        .filter(|l| !l.starts_with(b"{") && !l.starts_with(b"POST") && !l.starts_with(b"GET"))
        .collect();
    // each parameter: absent, a mutated seed, or an interesting number with or without a unit
    let param = |seeds: &Vec<Vec<u8>>| {
        proptest::option::of(prop_oneof![
            input(seeds.clone(), 64).prop_map(|b| text(&b)),
            (
                any::<Index>(),
                proptest::sample::select(vec!["", "ms", "s", "m", "h", "d"])
            )
                .prop_map(|(i, u)| format!("{}{u}", INTERESTING_NUMBERS[i.index(INTERESTING_NUMBERS.len())])),
        ])
    };
    let name = proptest::option::of(prop_oneof![
        proptest::sample::select(vec![
            "cpu.usage_pct".to_string(),
            "gpu.temp_c".into(),
            "app.items_recognised".into()
        ]),
        input(seeds.clone(), 64).prop_map(|b| text(&b)),
    ]);
    let now = prop_oneof![Just(1_800_000_000_000i64), any::<i64>()];
    let strategy = (name, param(&seeds), param(&seeds), param(&seeds), now);
    fuzz(
        "metrics_history_query_plan",
        strategy,
        |(name, from, to, step, now)| {
            let p = MetricsParams { name, from, to, step };
            if let Ok(pl) = plan(&p, &HistoryPolicy::default(), now) {
                prop_assert!(pl.step_ms > 0, "step {} in {pl:?}", pl.step_ms);
                prop_assert!(pl.from_ms <= pl.to_ms, "{pl:?}");
            }
            Ok(())
        },
    );
}

/// Requests of the corpus file `fuzz/corpus/http/requests.txt`: `METHOD PATH` lines, each
/// followed by JSON body lines (`{...}`) for POSTs; query values are separate seeds.
fn http_requests() -> Vec<(String, String, Vec<Vec<u8>>)> {
    let mut out: Vec<(String, String, Vec<Vec<u8>>)> = Vec::new();
    for l in corpus_lines("http") {
        let l = text(&l);
        if let Some(rest) = l.strip_prefix("POST ").or_else(|| l.strip_prefix("GET ")) {
            let method = if l.starts_with("POST") { "POST" } else { "GET" };
            out.push((method.into(), rest.trim().to_string(), Vec::new()));
        } else if l.starts_with('{')
            && let Some(last) = out.last_mut()
        {
            last.2.push(l.into_bytes());
        }
    }
    out
}

#[test]
fn fuzz_http_query_and_body_parsing() {
    // a real server, its HTTP API on loopback; bodies and query strings mutated from valid ones
    let fleet = rvm_fleet_tests::TestFleet::start().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = reqwest::Client::new();
    let reqs = http_requests();
    assert!(
        reqs.iter().any(|r| r.0 == "POST" && !r.2.is_empty()),
        "corpus has bodies"
    );
    let send = |method: &str, path: &str, body: Option<Vec<u8>>| -> Result<u16, reqwest::Error> {
        rt.block_on(async {
            let url = fleet.url(path);
            let mut r = match method {
                "POST" => client.post(url),
                _ => client.get(url),
            }
            .bearer_auth(&fleet.admin)
            .timeout(Duration::from_secs(20));
            if let Some(b) = body {
                r = r.header("content-type", "application/json").body(b);
            }
            let resp = r.send().await?;
            let status = resp.status().as_u16();
            let _ = resp.bytes().await;
            Ok(status)
        })
    };
    for (m, p, bodies) in &reqs {
        for b in bodies
            .iter()
            .map(|b| Some(b.clone()))
            .chain(std::iter::once(None))
        {
            let s = send(m, p, b).unwrap();
            assert!(s < 500, "corpus {m} {p}: {s}");
        }
    }
    let all_bodies: Vec<Vec<u8>> = reqs.iter().flat_map(|r| r.2.clone()).collect();
    let query_seeds: Vec<Vec<u8>> = reqs.iter().map(|r| r.1.as_bytes().to_vec()).collect();
    let n = reqs.len();
    let strategy = (
        any::<Index>(),
        input(all_bodies, 512),
        input(query_seeds, 128),
        any::<bool>(),
    );
    fuzz(
        "http_query_and_body_parsing",
        strategy,
        |(i, body, query, mutate_path)| {
            let (m, p, _) = &reqs[i.index(n)];
            // keep the route, fuzz what follows it: path parameters and the query string
            let path = if mutate_path || m == "GET" {
                let q = text(&query);
                let enc: String = q
                    .chars()
                    .map(|c| {
                        if c.is_ascii_graphic() && c != '#' {
                            c.to_string()
                        } else {
                            format!("%{:02X}", c as u32 & 0xFF)
                        }
                    })
                    .collect();
                if enc.starts_with("/api/v1/") {
                    enc
                } else {
                    format!("{p}{}", if p.contains('?') { "&" } else { "?" }) + &enc
                }
            } else {
                p.clone()
            };
            let body = (m == "POST").then_some(body);
            match send(m, &path, body) {
                Ok(s) => prop_assert!(s < 500, "{m} {path}: {s}"),
                Err(e) => prop_assert!(false, "{m} {path}: no answer: {e}"),
            }
            Ok(())
        },
    );
    // still serving
    assert_eq!(send("GET", "/api/v1/health", None).ok(), Some(200));
}

/// Writes the binary seeds of `fuzz/corpus/envelope` and `fuzz/corpus/command` from the JSON
/// examples in `docs/examples` (run after a wire change: fuzz/README.md).
#[test]
#[ignore = "writes the corpus; run by hand"]
fn fuzz_write_binary_corpus() {
    use common::command::{Action, Command, CommandResult};
    use common::{DeviceState, Envelope, Event, HealthReport, Telemetry};
    let ex = repo().join("docs/examples");
    let out = repo().join("fuzz/corpus/envelope");
    std::fs::create_dir_all(&out).unwrap();
    fn one<T: serde::Serialize + serde::de::DeserializeOwned>(ex: &Path, out: &Path, json: &str, name: &str) {
        let text = std::fs::read(ex.join(json)).unwrap();
        let mut env: Envelope<T> = common::codec::from_json(&text).unwrap();
        env.device = common::DeviceId::new("rvm0001").unwrap();
        std::fs::write(
            out.join(format!("valid-{name}.bin")),
            common::codec::encode(&env).unwrap(),
        )
        .unwrap();
        std::fs::write(
            out.join(format!("json-{name}.json")),
            common::codec::to_json(&env).unwrap(),
        )
        .unwrap();
    }
    one::<Telemetry>(&ex, &out, "telemetry.json", "telemetry");
    one::<HealthReport>(&ex, &out, "health.json", "health");
    one::<Event>(&ex, &out, "event.json", "event");
    one::<DeviceState>(&ex, &out, "state-online.json", "state-online");
    one::<DeviceState>(&ex, &out, "state-offline.json", "state-offline");
    one::<CommandResult>(&ex, &out, "cmd-result.json", "cmd-result");
    // an empty telemetry, the smallest valid record
    let env = Envelope::new(
        common::DeviceId::new("rvm0001").unwrap(),
        1,
        0,
        Telemetry::default(),
    );
    std::fs::write(
        out.join("valid-telemetry-empty.bin"),
        common::codec::encode(&env).unwrap(),
    )
    .unwrap();

    let out = repo().join("fuzz/corpus/command");
    std::fs::create_dir_all(&out).unwrap();
    let signer = test_signer();
    let actions = [
        Action::RestartUnit {
            unit: "vision.service".into(),
        },
        Action::RestartProcess {
            name: "vision".into(),
        },
        Action::DropCaches,
        Action::CleanTemp,
        Action::RestartNetwork {
            interface: "eth0".into(),
        },
        Action::Reboot,
        Action::CollectDiagnostics,
        Action::ResetCamera {
            camera: "front".into(),
        },
    ];
    for (i, action) in actions.into_iter().enumerate() {
        let c = Command {
            id: format!("c{i}"),
            device: common::DeviceId::new("rvm0001").unwrap(),
            action,
            issued_ms: 1_800_000_000_000,
            expires_ms: 1_800_000_300_000,
            issued_by: "fuzz".into(),
            reason: "seed".into(),
        };
        let sc = signer.sign(&c).unwrap();
        std::fs::write(
            out.join(format!("signed-{i}.bin")),
            common::codec::encode(&sc).unwrap(),
        )
        .unwrap();
        std::fs::write(out.join(format!("payload-{i}.bin")), &sc.payload).unwrap();
    }
}
