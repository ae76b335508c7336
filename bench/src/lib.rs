//! Shared parts of loopchat's benchmark: the generator's connections, wire format and
//! workloads that tests run too (the room flood), the baselines' common plumbing, statistics,
//! /proc readings and the JSON/SVG writers used by the driver, a small WebSocket client, and the
//! generator's TLS sessions.
pub mod baseline;
pub mod flood;
pub mod generator;
pub mod json;
pub mod procfs;
pub mod stats;
pub mod svg;
pub mod tls;
pub mod traffic;
pub mod wire;
pub mod ws;

/// Parses a generator `RESULT key=value ...` line into ordered pairs.
pub fn parse_result(line: &str) -> Option<Vec<(String, String)>> {
    let rest = line.strip_prefix("RESULT ")?;
    Some(
        rest.split_whitespace()
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_result_lines() {
        let r = super::parse_result("RESULT ok=true n=10 error=none").unwrap();
        assert_eq!(r[1], ("n".to_string(), "10".to_string()));
        assert!(super::parse_result("noise").is_none());
    }
}
