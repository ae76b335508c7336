//! A minimal JSON writer (the results file needs nothing more than this).

use std::fmt::{self, Write};

#[derive(Clone, Debug)]
pub enum Json {
    Bool(bool),
    Num(f64),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(String, Json)>),
}

impl Json {
    /// A value from a generator `key=value` field: numbers and booleans keep their type.
    pub fn guess(v: &str) -> Json {
        match v {
            "true" => Json::Bool(true),
            "false" => Json::Bool(false),
            _ => v
                .parse::<f64>()
                .map(Json::Num)
                .unwrap_or_else(|_| Json::Str(v.to_string())),
        }
    }

    fn write(&self, f: &mut fmt::Formatter<'_>, indent: usize) -> fmt::Result {
        let pad = |f: &mut fmt::Formatter<'_>, n: usize| write!(f, "\n{:1$}", "", n);
        match self {
            Json::Bool(b) => write!(f, "{b}"),
            Json::Num(n) if !n.is_finite() => f.write_str("null"),
            Json::Num(n) if n.fract() == 0.0 && n.abs() < 1e15 => write!(f, "{}", *n as i64),
            Json::Num(n) => write!(f, "{n}"),
            Json::Str(s) => write_str(f, s),
            Json::Arr(items) if items.is_empty() => f.write_str("[]"),
            Json::Arr(items) => {
                f.write_char('[')?;
                for (i, v) in items.iter().enumerate() {
                    f.write_str(if i == 0 { "" } else { "," })?;
                    pad(f, indent + 2)?;
                    v.write(f, indent + 2)?;
                }
                pad(f, indent)?;
                f.write_char(']')
            }
            Json::Obj(fields) if fields.is_empty() => f.write_str("{}"),
            Json::Obj(fields) => {
                f.write_char('{')?;
                for (i, (k, v)) in fields.iter().enumerate() {
                    f.write_str(if i == 0 { "" } else { "," })?;
                    pad(f, indent + 2)?;
                    write_str(f, k)?;
                    f.write_str(": ")?;
                    v.write(f, indent + 2)?;
                }
                pad(f, indent)?;
                f.write_char('}')
            }
        }
    }
}

fn write_str(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
    f.write_char('"')?;
    for c in s.chars() {
        match c {
            '"' => f.write_str("\\\"")?,
            '\\' => f.write_str("\\\\")?,
            '\n' => f.write_str("\\n")?,
            c if (c as u32) < 0x20 => write!(f, "\\u{:04x}", c as u32)?,
            c => f.write_char(c)?,
        }
    }
    f.write_char('"')
}

impl fmt::Display for Json {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write(f, 0)
    }
}

#[cfg(test)]
mod tests {
    use super::Json;

    #[test]
    fn writes_nested_values() {
        let v = Json::Obj(vec![
            (
                "a".into(),
                Json::Arr(vec![
                    Json::guess("1"),
                    Json::guess("2.5"),
                    Json::guess("true"),
                ]),
            ),
            ("b\"".into(), Json::Str("x\ny".into())),
            ("c".into(), Json::Num(f64::NAN)),
        ]);
        let s = v.to_string();
        assert!(
            s.contains("\"a\": [\n    1,\n    2.5,\n    true\n  ]"),
            "{s}"
        );
        assert!(s.contains("\"b\\\"\": \"x\\ny\""), "{s}");
        assert!(s.contains("\"c\": null"), "{s}");
    }
}
