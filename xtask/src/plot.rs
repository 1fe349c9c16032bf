//! A small SVG line chart: TaskManager memory against restart number, one line per series.
//! It is written by hand rather than with a plotting crate: plotters' text layout needs a
//! font stack (font-kit or a TTF) that CI machines may not have, and this chart needs only
//! axes, polylines and labels, byte-stable for the same data.

use std::fmt::Write;

pub(crate) struct Series {
    pub label: String,
    /// CSS colour.
    pub color: &'static str,
    pub dashed: bool,
    /// (x, y) points.
    pub points: Vec<(f64, f64)>,
}

/// Returns a "nice" tick step for a range: 1, 2 or 5 times a power of ten, for about `n`
/// ticks.
fn tick_step(range: f64, n: f64) -> f64 {
    if range <= 0.0 || !range.is_finite() {
        return 1.0;
    }
    let raw = range / n;
    let mag = 10f64.powf(raw.log10().floor());
    let f = raw / mag;
    let nice = if f <= 1.0 {
        1.0
    } else if f <= 2.0 {
        2.0
    } else if f <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * mag
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Returns the chart as an SVG document.
pub(crate) fn line_chart(title: &str, x_label: &str, y_label: &str, series: &[Series]) -> String {
    // Text is measured by an average glyph width (sans-serif at 12 px is about 6.6 px a
    // character, at 15 px about 8.3): the legend's column and the title fit their text.
    let longest = series
        .iter()
        .map(|s| s.label.chars().count())
        .max()
        .unwrap_or(0) as f64;
    let (left, top, bottom) = (70.0, 40.0, 50.0);
    let right = (42.0 + 6.6 * longest).max(190.0);
    let w = (left + 460.0 + right).max(8.3 * title.chars().count() as f64 + 40.0);
    let h = 420.0;
    let pts = series.iter().flat_map(|s| s.points.iter());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in pts {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if x0 > x1 {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    let (xs, ys) = (tick_step(x1 - x0, 8.0).max(1.0), tick_step(y1 - y0, 6.0));
    let (x0, x1) = ((x0 / xs).floor() * xs, ((x1 / xs).ceil() * xs).max(x0 + xs));
    let (y0, y1) = ((y0 / ys).floor() * ys, ((y1 / ys).ceil() * ys).max(y0 + ys));
    let (pw, ph) = (w - left - right, h - top - bottom);
    let px = |x: f64| left + (x - x0) / (x1 - x0) * pw;
    let py = |y: f64| top + ph - (y - y0) / (y1 - y0) * ph;

    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="22" font-size="15" text-anchor="middle">{}</text>"#,
        w / 2.0,
        esc(title)
    );
    // Grid and ticks.
    let mut y = y0;
    while y <= y1 + ys / 2.0 {
        let _ = writeln!(
            s,
            r##"<line x1="{left}" x2="{:.1}" y1="{:.1}" y2="{:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            left + pw,
            py(y),
            py(y),
            left - 6.0,
            py(y) + 4.0,
            y
        );
        y += ys;
    }
    let mut x = x0;
    while x <= x1 + xs / 2.0 {
        let _ = writeln!(
            s,
            r##"<line x1="{:.1}" x2="{:.1}" y1="{top}" y2="{:.1}" stroke="#eee"/><text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
            px(x),
            px(x),
            top + ph,
            px(x),
            top + ph + 16.0,
            x
        );
        x += xs;
    }
    let _ = writeln!(
        s,
        r#"<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="black"/>"#
    );
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
        left + pw / 2.0,
        h - 12.0,
        esc(x_label)
    );
    let _ = writeln!(
        s,
        r#"<text transform="translate(18 {:.1}) rotate(-90)" text-anchor="middle">{}</text>"#,
        top + ph / 2.0,
        esc(y_label)
    );
    // Lines and legend.
    for (i, se) in series.iter().enumerate() {
        let dash = if se.dashed {
            r#" stroke-dasharray="6 4""#
        } else {
            ""
        };
        let points: Vec<String> = se
            .points
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
            .collect();
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{}" stroke-width="2"{dash} points="{}"/>"#,
            se.color,
            points.join(" ")
        );
        for p in &points {
            let (cx, cy) = p.split_once(',').expect("formatted above");
            let _ = writeln!(
                s,
                r#"<circle cx="{cx}" cy="{cy}" r="3" fill="{}"/>"#,
                se.color
            );
        }
        let ly = top + 10.0 + i as f64 * 20.0;
        let lx = left + pw + 12.0;
        let _ = writeln!(
            s,
            r#"<line x1="{lx}" x2="{}" y1="{ly}" y2="{ly}" stroke="{}" stroke-width="2"{dash}/><text x="{}" y="{}">{}</text>"#,
            lx + 24.0,
            se.color,
            lx + 30.0,
            ly + 4.0,
            esc(&se.label)
        );
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_nice() {
        assert_eq!(tick_step(10.0, 5.0), 2.0);
        assert_eq!(tick_step(330.0, 6.0), 100.0);
        assert_eq!(tick_step(0.0, 6.0), 1.0);
    }

    #[test]
    fn the_title_and_the_legend_fit_their_text() {
        let one = |label: &str, title: &str| {
            let svg = line_chart(
                title,
                "restart",
                "MiB",
                &[Series {
                    label: label.into(),
                    color: "#000",
                    dashed: false,
                    points: vec![(0.0, 1.0), (1.0, 2.0)],
                }],
            );
            // The number after the first `attr"` of the document.
            let first = |attr: &str| -> f64 {
                let rest = svg.split(attr).nth(1).unwrap();
                rest[..rest.find('"').unwrap()].parse().unwrap()
            };
            (first("width=\""), first("<text x=\""))
        };
        assert_eq!(one("glibc", "t"), (720.0, 360.0));
        let label = "jemalloc-nonprof native +0.46 ± 0.44 MiB/restart (no trend shown)";
        let (w, _) = one(label, "t");
        assert!(
            w >= 70.0 + 460.0 + 42.0 + 6.6 * label.chars().count() as f64 - 0.1,
            "{w}"
        );
        // A title wider than the plot widens the chart and stays centred in it.
        let title = "TaskManager memory per restart (flink-39923-control, --driver docker, --mode cancel-resubmit)".repeat(2);
        let (w, x) = one("glibc", &title);
        assert!(
            w >= 8.3 * title.chars().count() as f64 && x == w / 2.0,
            "{w} {x}"
        );
    }

    #[test]
    fn chart_has_a_line_and_legend_per_series() {
        let svg = line_chart(
            "TaskManager memory",
            "restart",
            "MB",
            &[
                Series {
                    label: "jemalloc <native>".into(),
                    color: "#1f77b4",
                    dashed: false,
                    points: vec![(0.0, 100.0), (1.0, 150.0), (2.0, 180.0)],
                },
                Series {
                    label: "glibc".into(),
                    color: "#ff7f0e",
                    dashed: true,
                    points: vec![(0.0, 120.0), (1.0, 200.0)],
                },
            ],
        );
        assert!(svg.starts_with("<svg"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert_eq!(svg.matches("<circle").count(), 5);
        assert!(svg.contains("jemalloc &lt;native&gt;"));
        assert!(svg.contains("stroke-dasharray"));
        assert!(svg.trim_end().ends_with("</svg>"));
        // Same data, same bytes.
        assert_eq!(
            svg,
            line_chart(
                "TaskManager memory",
                "restart",
                "MB",
                &[
                    Series {
                        label: "jemalloc <native>".into(),
                        color: "#1f77b4",
                        dashed: false,
                        points: vec![(0.0, 100.0), (1.0, 150.0), (2.0, 180.0)]
                    },
                    Series {
                        label: "glibc".into(),
                        color: "#ff7f0e",
                        dashed: true,
                        points: vec![(0.0, 120.0), (1.0, 200.0)]
                    }
                ]
            )
        );
    }
}
