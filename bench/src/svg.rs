//! Hand-written SVG line plots: a plotting crate would cost more build time than these lines.

use std::fmt::Write;

const W: f64 = 640.0;
const H: f64 = 400.0;
/// Margins: left (tick labels), right (legend), top (title), bottom (axis label).
const L: f64 = 80.0;
const R: f64 = 160.0;
const T: f64 = 40.0;
const B: f64 = 50.0;
const COLORS: [&str; 6] = [
    "#d62728", "#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
];

pub struct Plot<'a> {
    pub title: &'a str,
    pub x_label: &'a str,
    pub y_label: &'a str,
    pub log_x: bool,
    pub log_y: bool,
    /// (name, points); points with a non-positive coordinate on a log axis are skipped.
    pub series: Vec<(String, Vec<(f64, f64)>)>,
}

struct Axis {
    lo: f64,
    hi: f64,
    log: bool,
}

impl Axis {
    fn new(values: impl Iterator<Item = f64>, log: bool) -> Axis {
        let (mut lo, mut hi) = values.fold((f64::MAX, f64::MIN), |(a, b), v| (a.min(v), b.max(v)));
        if lo > hi {
            (lo, hi) = (1.0, 10.0);
        }
        if log {
            (lo, hi) = (
                10f64.powf(lo.log10().floor()),
                10f64.powf(hi.log10().ceil().max(lo.log10().floor() + 1.0)),
            );
        } else {
            let step = nice_step(hi.max(lo.abs()).max(1e-9));
            (lo, hi) = (
                (lo.min(0.0) / step).floor() * step,
                (hi / step).ceil().max(1.0) * step,
            );
        }
        Axis { lo, hi, log }
    }

    /// Position of `v` in [0, 1].
    fn frac(&self, v: f64) -> f64 {
        if self.log {
            (v.log10() - self.lo.log10()) / (self.hi.log10() - self.lo.log10())
        } else {
            (v - self.lo) / (self.hi - self.lo)
        }
    }

    fn ticks(&self) -> Vec<f64> {
        if self.log {
            let (a, b) = (
                self.lo.log10().round() as i32,
                self.hi.log10().round() as i32,
            );
            // 2× and 5× ticks too while there are few decades, else the grid is too sparse.
            let steps: &[f64] = if b - a <= 3 { &[1.0, 2.0, 5.0] } else { &[1.0] };
            (a..=b)
                .flat_map(|e| steps.iter().map(move |m| m * 10f64.powi(e)))
                .filter(|&t| t <= self.hi * 1.0001)
                .collect()
        } else {
            let step = nice_step(self.hi - self.lo);
            (0..=((self.hi - self.lo) / step).round() as i32)
                .map(|i| self.lo + step * f64::from(i))
                .collect()
        }
    }
}

/// A 1/2/5 × 10^k step giving about five ticks over `span`.
fn nice_step(span: f64) -> f64 {
    let raw = span / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag)
}

fn label(v: f64) -> String {
    match v.abs() {
        a if a >= 1e6 => format!("{}M", v / 1e6),
        a if a >= 1e3 => format!("{}k", v / 1e3),
        _ => format!("{v}"),
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

impl Plot<'_> {
    pub fn render(&self) -> String {
        let usable = |log: bool, v: f64| v.is_finite() && (!log || v > 0.0);
        let pts = || self.series.iter().flat_map(|(_, p)| p.iter());
        let xa = Axis::new(
            pts().map(|p| p.0).filter(|&v| usable(self.log_x, v)),
            self.log_x,
        );
        let ya = Axis::new(
            pts().map(|p| p.1).filter(|&v| usable(self.log_y, v)),
            self.log_y,
        );
        let (pw, ph) = (W - L - R, H - T - B);
        let px = |v: f64| L + xa.frac(v) * pw;
        let py = |v: f64| T + (1.0 - ya.frac(v)) * ph;
        let mut s = String::new();
        let _ = write!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{}" y="22" text-anchor="middle" font-size="15">{}</text>
<text x="{}" y="{}" text-anchor="middle">{}</text>
<text transform="translate(18,{}) rotate(-90)" text-anchor="middle">{}</text>
<rect x="{L}" y="{T}" width="{pw}" height="{ph}" fill="none" stroke="black"/>
"#,
            L + pw / 2.0,
            esc(self.title),
            L + pw / 2.0,
            H - 12.0,
            esc(self.x_label),
            T + ph / 2.0,
            esc(self.y_label)
        );
        for t in xa.ticks() {
            let x = px(t);
            let _ = writeln!(
                s,
                r##"<line x1="{x:.1}" y1="{T}" x2="{x:.1}" y2="{}" stroke="#ddd"/><text x="{x:.1}" y="{}" text-anchor="middle">{}</text>"##,
                T + ph,
                T + ph + 16.0,
                label(t)
            );
        }
        for t in ya.ticks() {
            let y = py(t);
            let _ = writeln!(
                s,
                r##"<line x1="{L}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
                L + pw,
                L - 6.0,
                y + 4.0,
                label(t)
            );
        }
        for (i, (name, points)) in self.series.iter().enumerate() {
            let color = COLORS[i % COLORS.len()];
            let coords: Vec<String> = points
                .iter()
                .filter(|p| usable(self.log_x, p.0) && usable(self.log_y, p.1))
                .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
                .collect();
            let _ = writeln!(
                s,
                r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="2"/>"#,
                coords.join(" ")
            );
            for c in &coords {
                let (x, y) = c.split_once(',').unwrap_or(("0", "0"));
                let _ = writeln!(s, r#"<circle cx="{x}" cy="{y}" r="3" fill="{color}"/>"#);
            }
            let ly = T + 10.0 + 18.0 * i as f64;
            let _ = writeln!(
                s,
                r#"<line x1="{}" y1="{ly}" x2="{}" y2="{ly}" stroke="{color}" stroke-width="2"/><text x="{}" y="{}">{}</text>"#,
                W - R + 12.0,
                W - R + 32.0,
                W - R + 38.0,
                ly + 4.0,
                esc(name)
            );
        }
        s.push_str("</svg>\n");
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_log_and_linear_axes() {
        let p = Plot {
            title: "t <1>",
            x_label: "N",
            y_label: "v",
            log_x: true,
            log_y: false,
            series: vec![("a".into(), vec![(10.0, 5.0), (1000.0, 7.5), (0.0, 1.0)])],
        };
        let svg = p.render();
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert!(svg.contains("t &lt;1&gt;"));
        assert_eq!(svg.matches("<circle").count(), 2);
        assert!(svg.contains(">200<") && svg.contains(">1k<"));
        assert_eq!(nice_step(7.5), 2.0);
        assert_eq!(label(5000.0), "5k");
    }
}
