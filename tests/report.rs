//! The report's summary table (docs/report.md, between `<!-- summary-table -->` and
//! `<!-- /summary-table -->`) says what docs/bench/results.json says.
//!
//! Every cell is recomputed from the benchmark's raw runs the way `bench` computes its plots
//! (bench/src/bin/bench.rs, `median` and `plot`): the median of a server's runs that worked at
//! one point (with an even count, the upper of the two middle values), printed with bench's
//! `fmt_num`. So after `make bench` rewrites results.json, this test fails until the table is
//! brought up to date, and a figure typed by hand cannot drift from the run it quotes.

use loopchat_bench::stats::fmt_num;
use serde_json::Value;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The point every throughput column is taken at, and the idle columns too.
const N: u64 = 1000;

/// The table's columns, in order: (header, workload, key in a run).
const COLUMNS: &[(&str, &str, &str)] = &[
    ("deliveries/s", "throughput", "deliveries_per_s"),
    ("p99 latency µs", "throughput", "p99_us"),
    (
        "server CPU ns per delivery",
        "throughput",
        "server_ns_per_op",
    ),
    ("idle RSS per connection, bytes", "idle", "rss_per_conn_b"),
    ("threads (idle)", "idle", "server_threads"),
];

/// The last column: deliveries/s as a multiple of loopchat's.
const RATIO: &str = "deliveries/s ÷ loopchat's";

/// Servers the table must show whenever results.json has them.
const REQUIRED: &[&str] = &[
    "loopchat",
    "threaded-server",
    "tokio-server",
    "min-broadcaster",
];
const IF_MEASURED: &[&str] = &["loopchat-tls", "loopchat-1node", "loopchat-2nodes"];

/// bench's `median`: over the runs of `server` at (`workload`, N) that worked.
fn median(runs: &[Value], server: &str, workload: &str, key: &str) -> Option<f64> {
    let mut v: Vec<f64> = runs
        .iter()
        .filter(|r| r["server"] == server && r["workload"] == workload)
        .filter(|r| r["n"].as_u64() == Some(N))
        .filter(|r| r["ok"] == true)
        .filter_map(|r| r[key].as_f64())
        .collect();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied()
}

fn results() -> Value {
    let path = format!("{ROOT}/docs/bench/results.json");
    let text = std::fs::read_to_string(&path).expect("docs/bench/results.json is readable");
    serde_json::from_str(&text).expect("docs/bench/results.json is JSON")
}

/// The table's rows, cells trimmed, header first (the `|---|` line left out).
fn summary_table() -> Vec<Vec<String>> {
    let report = std::fs::read_to_string(format!("{ROOT}/docs/report.md")).expect("docs/report.md");
    let start = report
        .find("<!-- summary-table -->")
        .expect("docs/report.md has <!-- summary-table -->");
    let end = report
        .find("<!-- /summary-table -->")
        .expect("docs/report.md has <!-- /summary-table -->");
    assert!(start < end, "the summary table's markers are out of order");
    report[start..end]
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with('|') && !l.starts_with("|---") && !l.starts_with("|:-"))
        .map(|l| {
            l.trim_matches('|')
                .split('|')
                .map(|c| c.trim().to_string())
                .collect()
        })
        .collect()
}

/// The server a row is about: the first name in backticks in its first cell.
fn server_of(cell: &str) -> &str {
    cell.split('`')
        .nth(1)
        .unwrap_or_else(|| panic!("no `server` name in backticks in {cell:?}"))
}

#[test]
fn the_summary_table_says_what_results_json_says() {
    let json = results();
    let runs = json["runs"].as_array().expect("results.json has runs");
    let table = summary_table();
    let (header, rows) = table.split_first().expect("the summary table has a header");
    let mut want_header = vec!["server".to_string()];
    want_header.extend(COLUMNS.iter().map(|(h, ..)| h.to_string()));
    want_header.push(RATIO.to_string());
    assert_eq!(header, &want_header, "the summary table's columns");

    let loopchat = median(runs, "loopchat", "throughput", "deliveries_per_s");
    let mut wrong = Vec::new();
    let mut shown = Vec::new();
    for row in rows {
        assert_eq!(row.len(), header.len(), "a row of the wrong width: {row:?}");
        let server = server_of(&row[0]);
        shown.push(server.to_string());
        for ((title, workload, key), cell) in COLUMNS.iter().zip(&row[1..]) {
            let want = fmt_num(median(runs, server, workload, key));
            if *cell != want {
                wrong.push(format!(
                    "{server}, {title}: the table says {cell}, results.json {want}"
                ));
            }
        }
        let ratio = median(runs, server, "throughput", "deliveries_per_s")
            .zip(loopchat)
            .map_or("–".to_string(), |(v, l)| format!("{:.2}×", v / l));
        if row[header.len() - 1] != ratio {
            wrong.push(format!(
                "{server}, {RATIO}: the table says {}, results.json {ratio}",
                row[header.len() - 1]
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "the summary table in docs/report.md is out of date with docs/bench/results.json \
         (run on {}):\n{}",
        json["date"],
        wrong.join("\n")
    );

    let measured = |s: &str| runs.iter().any(|r| r["server"] == s);
    for server in REQUIRED
        .iter()
        .chain(IF_MEASURED.iter().filter(|s| measured(s)))
    {
        assert!(
            shown.iter().any(|s| s == server),
            "the summary table has no row for {server}, which results.json measured"
        );
    }
    for server in &shown {
        assert!(
            measured(server),
            "the summary table shows {server}, which results.json never measured"
        );
    }
}

#[test]
fn the_figures_are_formatted_as_bench_prints_them() {
    assert_eq!(fmt_num(Some(11_662_000.0)), "11.66M");
    assert_eq!(fmt_num(Some(30_540.0)), "31k");
    assert_eq!(fmt_num(Some(85.0)), "85");
    assert_eq!(fmt_num(Some(7.26)), "7.3");
    assert_eq!(fmt_num(None), "–");
}
