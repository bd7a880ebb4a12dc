//! The run's timeline: samples taken every few simulated seconds, rendered as JSON for tools,
//! as a dependency-free SVG chart for people, and as a fixed-width live table for the terminal.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::common::{format_bytes, format_cpu_millis};

/// One workload's state at a sample. Requests and recommendations are per pod (summed over
/// its containers), which is what HPA percentages and VPA recommendations are relative to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadSample {
    pub namespace: String,
    pub name: String,
    pub replicas: u32,
    pub desired_replicas: u32,
    pub ready: u32,
    pub cpu_utilization_percent: Option<f64>,
    pub cpu_request_millis: f64,
    pub memory_request_bytes: f64,
    pub recommendation_cpu_millis: Option<f64>,
    pub recommendation_memory_bytes: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Sample {
    pub t: f64,
    pub workloads: Vec<WorkloadSample>,
    pub pending_pods: u32,
    pub nodes: u32,
    pub ready_nodes: u32,
    pub hourly_cost: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Timeline {
    pub scenario: String,
    pub speed: f64,
    pub samples: Vec<Sample>,
}

impl Timeline {
    /// Pretty JSON; non-finite numbers become `null`, as serde_json does.
    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string_pretty(self)
    }

    pub fn from_json(json: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(json)
    }

    /// A workload's desired replica count each time it changed, with the sample's time: the
    /// decisions of a run, to compare runs (backends, upstream HPA) by.
    pub fn replica_changes(&self, workload: &str) -> Vec<(u32, f64)> {
        let mut out: Vec<(u32, f64)> = Vec::new();
        for s in &self.samples {
            if let Some(w) = s.workloads.iter().find(|w| w.name == workload) {
                if out.last().is_none_or(|(r, _)| *r != w.desired_replicas) {
                    out.push((w.desired_replicas, s.t));
                }
            }
        }
        out
    }
}

/// Escapes text for XML content and attribute values; workload names come from user input.
pub fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Control characters other than tab/newline are not allowed in XML 1.0.
            c if (c as u32) < 0x20 && c != '\t' && c != '\n' && c != '\r' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

const PALETTE: &[&str] =
    &["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];

const WIDTH: f64 = 960.0;
const MARGIN_LEFT: f64 = 70.0;
const MARGIN_RIGHT: f64 = 20.0;
const TITLE_HEIGHT: f64 = 50.0;
const PANEL_HEIGHT: f64 = 170.0;
const PANEL_GAP: f64 = 45.0;
const LEGEND_ROW: f64 = 18.0;
const PANEL_TITLE: f64 = 20.0;

fn fin(x: f64) -> f64 {
    if x.is_finite() { x } else { 0.0 }
}

/// A "nice" tick step (1, 2 or 5 times a power of ten) giving about `target` ticks.
fn nice_step(span: f64, target: f64) -> f64 {
    let span = if span.is_finite() && span > 0.0 { span } else { 1.0 };
    let raw = span / target.max(1.0);
    let mag = 10f64.powf(raw.log10().floor());
    let norm = raw / mag;
    let step = if norm <= 1.0 {
        1.0
    } else if norm <= 2.0 {
        2.0
    } else if norm <= 5.0 {
        5.0
    } else {
        10.0
    };
    step * mag
}

fn fmt_tick(v: f64) -> String {
    let v = fin(v);
    if (v - v.round()).abs() < 1e-9 { format!("{}", v.round()) } else { format!("{v:.1}") }
}

/// A line to draw: points in data units; `None` breaks the line (e.g. a metric not yet known).
struct Series {
    label: String,
    color: &'static str,
    dashed: bool,
    /// Discrete quantities (replicas, nodes) hold their value until the next sample.
    step: bool,
    points: Vec<(f64, Option<f64>)>,
}

struct Panel {
    title: &'static str,
    unit: &'static str,
    series: Vec<Series>,
}

/// Workloads in order of first appearance, keyed by namespace/name.
fn workload_keys(tl: &Timeline) -> Vec<(String, String)> {
    let mut keys: Vec<(String, String)> = Vec::new();
    for s in &tl.samples {
        for w in &s.workloads {
            if !keys.iter().any(|(ns, n)| *ns == w.namespace && *n == w.name) {
                keys.push((w.namespace.clone(), w.name.clone()));
            }
        }
    }
    keys
}

fn workload_series(
    tl: &Timeline,
    key: &(String, String),
    f: impl Fn(&WorkloadSample) -> Option<f64>,
) -> Vec<(f64, Option<f64>)> {
    tl.samples
        .iter()
        .map(|s| {
            let v = s.workloads.iter().find(|w| w.namespace == key.0 && w.name == key.1).and_then(&f);
            (s.t / 60.0, v.filter(|x| x.is_finite()))
        })
        .collect()
}

fn build_panels(tl: &Timeline) -> Vec<Panel> {
    let keys = workload_keys(tl);
    let color = |i: usize| PALETTE[i % PALETTE.len()];
    let label = |k: &(String, String)| format!("{}/{}", k.0, k.1);
    let mut replicas = Vec::new();
    let mut util = Vec::new();
    let mut requests = Vec::new();
    for (i, k) in keys.iter().enumerate() {
        replicas.push(Series {
            label: label(k),
            color: color(i),
            dashed: false,
            step: true,
            points: workload_series(tl, k, |w| Some(f64::from(w.replicas))),
        });
        replicas.push(Series {
            label: format!("{} desired", label(k)),
            color: color(i),
            dashed: true,
            step: true,
            points: workload_series(tl, k, |w| Some(f64::from(w.desired_replicas))),
        });
        util.push(Series {
            label: label(k),
            color: color(i),
            dashed: false,
            step: false,
            points: workload_series(tl, k, |w| w.cpu_utilization_percent),
        });
        requests.push(Series {
            label: label(k),
            color: color(i),
            dashed: false,
            step: true,
            points: workload_series(tl, k, |w| Some(w.cpu_request_millis)),
        });
        let rec = workload_series(tl, k, |w| w.recommendation_cpu_millis);
        if rec.iter().any(|(_, v)| v.is_some()) {
            requests.push(Series {
                label: format!("{} recommendation", label(k)),
                color: color(i),
                dashed: true,
                step: true,
                points: rec,
            });
        }
    }
    let cluster = |f: fn(&Sample) -> f64| tl.samples.iter().map(|s| (s.t / 60.0, Some(fin(f(s))))).collect::<Vec<_>>();
    let nodes = vec![
        Series {
            label: "nodes".into(),
            color: "#1f77b4",
            dashed: false,
            step: true,
            points: cluster(|s| f64::from(s.nodes)),
        },
        Series {
            label: "ready nodes".into(),
            color: "#2ca02c",
            dashed: true,
            step: true,
            points: cluster(|s| f64::from(s.ready_nodes)),
        },
        Series {
            label: "pending pods".into(),
            color: "#d62728",
            dashed: false,
            step: true,
            points: cluster(|s| f64::from(s.pending_pods)),
        },
    ];
    vec![
        Panel { title: "Replicas (dashed: desired)", unit: "pods", series: replicas },
        Panel { title: "CPU utilization (% of request)", unit: "%", series: util },
        Panel { title: "CPU request per pod (dashed: recommendation)", unit: "millicores", series: requests },
        Panel { title: "Nodes and pending pods", unit: "count", series: nodes },
    ]
}

/// Splits a series at gaps into runs of at least one point.
fn segments(points: &[(f64, Option<f64>)]) -> Vec<Vec<(f64, f64)>> {
    let mut out = Vec::new();
    let mut cur = Vec::new();
    for (x, y) in points {
        match y {
            Some(y) => cur.push((*x, *y)),
            None => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Renders the timeline as stacked panels sharing a time axis in minutes. Every number
/// written is finite, even for an empty timeline or a single sample.
pub fn render_svg(tl: &Timeline) -> String {
    let panels = build_panels(tl);
    let (t_min, t_max) = tl
        .samples
        .iter()
        .map(|s| fin(s.t) / 60.0)
        .fold(None, |acc: Option<(f64, f64)>, t| Some(acc.map_or((t, t), |(a, b)| (a.min(t), b.max(t)))))
        .unwrap_or((0.0, 1.0));
    let x0 = t_min.min(0.0);
    let x1 = if t_max > x0 { t_max } else { x0 + 1.0 };
    let plot_w = WIDTH - MARGIN_LEFT - MARGIN_RIGHT;
    let sx = |x: f64| MARGIN_LEFT + (fin(x) - x0) / (x1 - x0) * plot_w;

    let legend_rows: Vec<usize> = panels.iter().map(|p| p.series.len().div_ceil(4)).collect();
    let height = TITLE_HEIGHT
        + panels
            .iter()
            .zip(&legend_rows)
            .map(|(_, r)| PANEL_TITLE + PANEL_HEIGHT + PANEL_GAP + *r as f64 * LEGEND_ROW)
            .sum::<f64>()
        + 10.0;

    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{h:.0}" viewBox="0 0 {WIDTH} {h:.0}" font-family="sans-serif" font-size="11">"#,
        h = fin(height)
    );
    let _ = writeln!(svg, r#"<rect x="0" y="0" width="{WIDTH}" height="{:.0}" fill="white"/>"#, fin(height));
    let cost = tl.samples.last().map_or(0.0, |s| fin(s.hourly_cost));
    let _ = writeln!(
        svg,
        r#"<text x="{MARGIN_LEFT}" y="24" font-size="16" font-weight="bold">{}</text>"#,
        xml_escape(&format!("Scenario: {}", tl.scenario))
    );
    let _ = writeln!(
        svg,
        r##"<text x="{MARGIN_LEFT}" y="40" fill="#555">{}</text>"##,
        xml_escape(&format!(
            "{} samples, {:.1} simulated minutes, speed {}x, final cost ${cost:.4}/h",
            tl.samples.len(),
            fin(t_max - t_min).max(0.0),
            fmt_tick(tl.speed)
        ))
    );

    let mut top = TITLE_HEIGHT;
    for (panel, rows) in panels.iter().zip(&legend_rows) {
        top += PANEL_TITLE;
        let y_max_data = panel
            .series
            .iter()
            .flat_map(|s| s.points.iter().filter_map(|(_, y)| *y))
            .fold(0.0f64, |a, b| a.max(fin(b)));
        let step = nice_step(y_max_data.max(1.0), 4.0);
        let y_max = ((y_max_data.max(1.0) / step).ceil() * step).max(step);
        let bottom = top + PANEL_HEIGHT;
        let sy = |y: f64| bottom - fin(y).clamp(0.0, y_max) / y_max * PANEL_HEIGHT;

        let _ = writeln!(
            svg,
            r##"<text x="{MARGIN_LEFT}" y="{:.1}" font-size="13" font-weight="bold">{} <tspan fill="#777" font-weight="normal">[{}]</tspan></text>"##,
            top - 6.0,
            xml_escape(panel.title),
            xml_escape(panel.unit)
        );
        let _ = writeln!(
            svg,
            r##"<rect x="{MARGIN_LEFT}" y="{top:.1}" width="{plot_w:.1}" height="{PANEL_HEIGHT}" fill="none" stroke="#999"/>"##
        );
        // Y ticks and grid.
        let n_y = (y_max / step).round().clamp(1.0, 20.0) as u32;
        for i in 0..=n_y {
            let v = step * f64::from(i);
            let y = sy(v);
            let _ = writeln!(
                svg,
                r##"<line x1="{MARGIN_LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#eee"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
                MARGIN_LEFT + plot_w,
                MARGIN_LEFT - 6.0,
                y + 4.0,
                fmt_tick(v)
            );
        }
        // X ticks, minutes.
        let x_step = nice_step(x1 - x0, 8.0);
        let mut x = (x0 / x_step).ceil() * x_step;
        let mut guard = 0;
        while x <= x1 + 1e-9 && guard < 50 {
            let px = sx(x);
            let _ = writeln!(
                svg,
                r##"<line x1="{px:.1}" y1="{top:.1}" x2="{px:.1}" y2="{bottom:.1}" stroke="#f3f3f3"/><text x="{px:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
                bottom + 14.0,
                fmt_tick(x)
            );
            x += x_step;
            guard += 1;
        }
        let _ = writeln!(
            svg,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="end" fill="#555">minutes</text>"##,
            MARGIN_LEFT + plot_w,
            bottom + 28.0
        );
        // Lines.
        for s in &panel.series {
            for seg in segments(&s.points) {
                let mut pts: Vec<String> = Vec::with_capacity(seg.len() * 2);
                for (i, (x, y)) in seg.iter().enumerate() {
                    if s.step && i > 0 {
                        pts.push(format!("{:.1},{:.1}", sx(*x), sy(seg[i - 1].1)));
                    }
                    pts.push(format!("{:.1},{:.1}", sx(*x), sy(*y)));
                }
                let dash = if s.dashed { r#" stroke-dasharray="6 4""# } else { "" };
                let _ = writeln!(
                    svg,
                    r#"<polyline fill="none" stroke="{}" stroke-width="2"{dash} points="{}"><title>{}</title></polyline>"#,
                    s.color,
                    pts.join(" "),
                    xml_escape(&s.label)
                );
                if seg.len() == 1 {
                    let (x, y) = seg[0];
                    let _ = writeln!(svg, r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{}"/>"#, sx(x), sy(y), s.color);
                }
            }
        }
        // Legend, four entries per row.
        let legend_top = bottom + 40.0;
        for (i, s) in panel.series.iter().enumerate() {
            let lx = MARGIN_LEFT + (i % 4) as f64 * (plot_w / 4.0);
            let ly = legend_top + (i / 4) as f64 * LEGEND_ROW;
            let dash = if s.dashed { r#" stroke-dasharray="6 4""# } else { "" };
            let _ = writeln!(
                svg,
                r#"<line x1="{lx:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="{}" stroke-width="2"{dash}/><text x="{:.1}" y="{ly:.1}">{}</text>"#,
                ly - 4.0,
                lx + 22.0,
                ly - 4.0,
                s.color,
                lx + 28.0,
                xml_escape(&s.label)
            );
        }
        top = bottom + PANEL_GAP + *rows as f64 * LEGEND_ROW;
    }
    svg.push_str("</svg>\n");
    svg
}

const COLUMNS: [(&str, usize); 9] = [
    ("TIME", 6),
    ("WORKLOAD", 28),
    ("REPLICAS", 9),
    ("CPU%", 6),
    ("CPU-REQ", 8),
    ("RECOMMEND", 14),
    ("PENDING", 7),
    ("NODES", 7),
    ("COST$/H", 8),
];

fn fit(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        s.to_string()
    } else {
        let mut out: String = s.chars().take(width.saturating_sub(1)).collect();
        out.push('~');
        out
    }
}

fn row(cells: [String; 9]) -> String {
    let mut out = String::new();
    for (i, (cell, (_, width))) in cells.iter().zip(COLUMNS).enumerate() {
        let cell = fit(cell, width);
        if i > 0 {
            out.push(' ');
        }
        // Names left-aligned, numbers right-aligned.
        if i == 1 {
            let _ = write!(out, "{cell:<width$}");
        } else {
            let _ = write!(out, "{cell:>width$}");
        }
    }
    out.trim_end().to_string()
}

/// The header line of the live table.
pub fn progress_header() -> String {
    row(COLUMNS.map(|(h, _)| h.to_string()))
}

fn mm_ss(t: f64) -> String {
    let secs = if t.is_finite() && t > 0.0 { t.round() as u64 } else { 0 };
    format!("{:02}:{:02}", secs / 60, secs % 60)
}

/// One line per workload (at least one line), every column fixed-width, so the output lines
/// up under [`progress_header`].
pub fn progress_row(sample: &Sample) -> String {
    let cluster = |first: bool| {
        if first {
            [
                sample.pending_pods.to_string(),
                format!("{}/{}", sample.ready_nodes, sample.nodes),
                format!("{:.4}", fin(sample.hourly_cost)),
            ]
        } else {
            [String::new(), String::new(), String::new()]
        }
    };
    let time = mm_ss(sample.t);
    if sample.workloads.is_empty() {
        let [p, n, c] = cluster(true);
        return row([time, "-".into(), "-".into(), "-".into(), "-".into(), "-".into(), p, n, c]);
    }
    let mut lines = Vec::new();
    for (i, w) in sample.workloads.iter().enumerate() {
        let util = w.cpu_utilization_percent.filter(|u| u.is_finite()).map_or("-".to_string(), |u| format!("{u:.0}%"));
        let rec = match (w.recommendation_cpu_millis, w.recommendation_memory_bytes) {
            (None, None) => "-".to_string(),
            (c, m) => {
                format!("{}/{}", c.map_or("-".to_string(), format_cpu_millis), m.map_or("-".to_string(), format_bytes))
            }
        };
        let [p, n, c] = cluster(i == 0);
        lines.push(row([
            if i == 0 { time.clone() } else { String::new() },
            format!("{}/{}", w.namespace, w.name),
            format!("{}/{}", w.replicas, w.desired_replicas),
            util,
            format_cpu_millis(w.cpu_request_millis),
            rec,
            p,
            n,
            c,
        ]));
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ws(name: &str, replicas: u32, util: Option<f64>) -> WorkloadSample {
        WorkloadSample {
            namespace: "default".into(),
            name: name.into(),
            replicas,
            desired_replicas: replicas + 1,
            ready: replicas,
            cpu_utilization_percent: util,
            cpu_request_millis: 200.0,
            memory_request_bytes: 64.0 * 1024.0 * 1024.0,
            recommendation_cpu_millis: None,
            recommendation_memory_bytes: None,
        }
    }

    fn sample(t: f64, workloads: Vec<WorkloadSample>) -> Sample {
        Sample { t, workloads, pending_pods: 2, nodes: 3, ready_nodes: 2, hourly_cost: 0.1234 }
    }

    fn timeline() -> Timeline {
        Timeline {
            scenario: "php-apache".into(),
            speed: 10.0,
            samples: (0..20)
                .map(|i| {
                    let t = f64::from(i) * 15.0;
                    sample(t, vec![ws("php-apache", 1 + i / 3, Some(240.0 - f64::from(i))), ws("nginx", 2, Some(10.0))])
                })
                .collect(),
        }
    }

    /// A tiny well-formedness check: balanced tags, quoted attributes, no stray `&` or `<`.
    fn assert_well_formed(xml: &str) {
        let mut stack: Vec<String> = Vec::new();
        let mut rest = xml;
        while let Some(start) = rest.find('<') {
            let text = &rest[..start];
            check_text(text);
            let end = rest[start..].find('>').map(|e| start + e).expect("unclosed tag");
            let tag = &rest[start + 1..end];
            assert!(!tag.contains('<'), "'<' inside tag: {tag}");
            if let Some(name) = tag.strip_prefix('/') {
                assert_eq!(stack.pop().as_deref(), Some(name.trim()), "mismatched close {name}");
            } else if !tag.starts_with('?') && !tag.starts_with('!') {
                let name: String = tag.chars().take_while(|c| !c.is_whitespace() && *c != '/').collect();
                assert_eq!(tag.matches('"').count() % 2, 0, "unbalanced quotes in {tag}");
                check_text(tag);
                if !tag.ends_with('/') {
                    stack.push(name);
                }
            }
            rest = &rest[end + 1..];
        }
        check_text(rest);
        assert!(stack.is_empty(), "unclosed: {stack:?}");
    }

    fn check_text(text: &str) {
        for (i, _) in text.match_indices('&') {
            let ent = &text[i..];
            assert!(
                ["&amp;", "&lt;", "&gt;", "&quot;", "&apos;"].iter().any(|e| ent.starts_with(e)),
                "bare & in {text}"
            );
        }
    }

    #[test]
    fn json_round_trip() {
        let tl = timeline();
        let json = tl.to_json().unwrap();
        assert!(json.contains("\"cpuUtilizationPercent\""));
        assert!(json.contains("\"hourlyCost\""));
        assert_eq!(Timeline::from_json(&json).unwrap(), tl);
    }

    #[test]
    fn svg_structure() {
        let svg = render_svg(&timeline());
        // Per workload: replicas + desired + utilization + request = 4; nodes panel: 3.
        assert_eq!(svg.matches("<polyline").count(), 2 * 4 + 3);
        assert!(svg.starts_with("<svg"));
        assert!(svg.contains("Scenario: php-apache"));
        assert!(svg.contains("default/nginx"));
        assert!(!svg.contains("NaN") && !svg.contains("inf"));
        assert_well_formed(&svg);
    }

    #[test]
    fn svg_breaks_lines_at_missing_metrics_and_draws_recommendations() {
        let mut tl = timeline();
        tl.samples[5].workloads[1].cpu_utilization_percent = None;
        tl.samples[3].workloads[0].recommendation_cpu_millis = Some(587.0);
        tl.samples[4].workloads[0].recommendation_cpu_millis = Some(587.0);
        let svg = render_svg(&tl);
        // nginx utilization splits in two; php-apache gains a recommendation line.
        assert_eq!(svg.matches("<polyline").count(), 2 * 4 + 3 + 2);
        assert_well_formed(&svg);
    }

    #[test]
    fn svg_degenerate_inputs() {
        let empty = Timeline { scenario: "empty".into(), speed: 10.0, samples: vec![] };
        let svg = render_svg(&empty);
        assert!(!svg.contains("NaN") && !svg.contains("inf"));
        assert_eq!(svg.matches("<polyline").count(), 0);
        assert_well_formed(&svg);

        let single = Timeline {
            scenario: "one".into(),
            speed: f64::INFINITY,
            samples: vec![sample(f64::NAN, vec![ws("a", 1, Some(f64::NAN))])],
        };
        let svg = render_svg(&single);
        assert!(!svg.contains("NaN") && !svg.contains("inf"), "{svg}");
        assert_eq!(svg.matches("<polyline").count(), 3 + 3);
        assert!(svg.contains("<circle"));
        assert_well_formed(&svg);
    }

    #[test]
    fn svg_escapes_names() {
        let mut tl = timeline();
        tl.scenario = "a<b>&\"c\"".into();
        tl.samples[0].workloads[0].name = "evil<&>'".into();
        let svg = render_svg(&tl);
        assert!(svg.contains("a&lt;b&gt;&amp;&quot;c&quot;"));
        assert!(svg.contains("evil&lt;&amp;&gt;&apos;"));
        assert!(!svg.contains("evil<"));
        assert_well_formed(&svg);
        assert_eq!(xml_escape("x\u{1}y"), "x y");
    }

    #[test]
    fn progress_table() {
        let header = progress_header();
        assert!(header.starts_with("  TIME WORKLOAD"));
        let mut s =
            sample(125.0, vec![ws("php-apache", 3, Some(241.4)), ws("a-very-long-workload-name-indeed", 2, None)]);
        s.workloads[0].recommendation_cpu_millis = Some(587.0);
        s.workloads[0].recommendation_memory_bytes = Some(262144000.0);
        let out = progress_row(&s);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with(" 02:05 default/php-apache"), "{}", lines[0]);
        assert!(lines[0].contains("3/4"));
        assert!(lines[0].contains("241%"));
        assert!(lines[0].contains("200m"));
        assert!(lines[0].contains("587m/250Mi"));
        assert!(lines[0].contains("2/3"));
        assert!(lines[0].ends_with("0.1234"));
        assert!(lines[1].contains("default/a-very-long-workloa~"));
        // Columns line up with the header.
        let col = header.find("REPLICAS").unwrap() + "REPLICAS".len();
        assert_eq!(&lines[0][col - 3..col], "3/4");
        let empty = progress_row(&Sample { t: f64::NAN, ..sample(0.0, vec![]) });
        assert!(empty.starts_with(" 00:00 -"));
        assert_eq!(mm_ss(3600.0), "60:00");
    }
}
