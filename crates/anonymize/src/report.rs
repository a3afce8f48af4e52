//! The release report of one anonymization run (R-AN-3): what was chosen, what it cost, the
//! residual re-identification risk, and the configuration with its hash so that an approved
//! method version can be recognised later. JSON for machines; [`html`] renders the same
//! figures as a self-contained page for the approving operator.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{json, Value};

use crate::evaluate::{Metric, NodeResult};
use crate::hierarchy::Hierarchy;

/// Identifies the algorithm and metric definitions; bumped whenever a result could change.
pub const METHOD_VERSION: &str = "enclave-anonymize/1 (full-domain optimal; ARX 3.9.2 metrics)";

/// Residual re-identification risk of the released records (suppressed ones excluded).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Risk {
    /// Highest prosecutor risk: 1 / smallest class.
    pub prosecutor_max: f64,
    /// Average prosecutor risk over released records: classes / records.
    pub prosecutor_avg: f64,
    /// Records whose prosecutor risk is above `threshold`.
    pub records_at_risk: u64,
    /// The threshold used.
    pub threshold: f64,
    /// Marketer risk: expected share of records re-identified = classes / records.
    pub marketer: f64,
}

/// Risk figures from the sizes of the released (not suppressed) classes.
pub fn risk(released: &[u64], threshold: f64) -> Risk {
    let mut kept_rows = 0u64;
    let mut kept_classes = 0u64;
    let mut min = u64::MAX;
    let mut at_risk = 0u64;
    for &n in released {
        kept_rows += n;
        kept_classes += 1;
        min = min.min(n);
        if 1.0 / n as f64 > threshold {
            at_risk += n;
        }
    }
    let avg = if kept_rows == 0 {
        0.0
    } else {
        kept_classes as f64 / kept_rows as f64
    };
    Risk {
        prosecutor_max: if kept_classes == 0 {
            0.0
        } else {
            1.0 / min as f64
        },
        prosecutor_avg: avg,
        records_at_risk: at_risk,
        threshold,
        marketer: avg,
    }
}

/// Class sizes in buckets (1, 2, 3–4, 5–9, 10–19, …): classes and records per bucket.
pub fn class_size_histogram(released: &[u64]) -> Vec<Value> {
    let mut buckets: BTreeMap<u64, (u64, u64, u64)> = BTreeMap::new();
    for &n in released {
        // Lower edges 1, 2, 3, 5, 10, 20, 30, 50, 100, …
        let mut lo = 1u64;
        let mut edges = vec![1u64, 2, 3, 5];
        let mut decade = 10u64;
        while decade <= n {
            edges.extend([decade, 2 * decade, 3 * decade, 5 * decade]);
            decade = decade.saturating_mul(10);
        }
        for e in edges {
            if e <= n {
                lo = e;
            }
        }
        let b = buckets.entry(lo).or_insert((0, 0, 0));
        b.0 += 1;
        b.1 += n;
        b.2 = b.2.max(n);
    }
    buckets
        .into_iter()
        .map(|(lo, (classes, records, largest))| {
            json!({ "from": lo, "largest": largest, "classes": classes, "records": records })
        })
        .collect()
}

/// An object column → value, in column order.
fn by_column<T: Serialize>(columns: &[String], values: &[T]) -> Value {
    Value::Object(
        columns
            .iter()
            .zip(values)
            .map(|(c, v)| (c.clone(), json!(v)))
            .collect(),
    )
}

/// What was done to each quasi-identifier, for readers of the plain-language report: the
/// level chosen of the levels its hierarchy has, one example of a value and what it became
/// (taken from the hierarchy, the middle leaf, so the same run always shows the same
/// example), and the information lost on it.
pub fn attributes(hierarchies: &[Hierarchy], levels: &[usize], loss: &[f64]) -> Value {
    Value::Object(
        hierarchies
            .iter()
            .zip(levels)
            .zip(loss)
            .map(|((h, &level), &loss)| {
                let example = (h.leaves() > 0).then(|| {
                    let leaf = (h.leaves() / 2) as u32;
                    let from = h.value(0, h.code(leaf, 0));
                    let to = h.value(level, h.code(leaf, level));
                    json!([from, to])
                });
                (
                    h.column().to_owned(),
                    json!({"level": level, "top_level": h.height().saturating_sub(1),
                           "example": example, "loss": loss}),
                )
            })
            .collect(),
    )
}

/// Everything a report needs.
pub struct ReportInput<'a> {
    /// The configuration as given (columns, k, limit, metric, hierarchy hashes…).
    pub config: Value,
    /// Quasi-identifier names in hierarchy order.
    pub columns: &'a [String],
    /// The chosen transformation.
    pub best: &'a NodeResult,
    /// Sizes of its released classes.
    pub released: &'a [u64],
    /// The metric.
    pub metric: Metric,
    /// k.
    pub k: u64,
    /// Rows read.
    pub rows: u64,
    /// Distinct quasi-identifier tuples.
    pub distinct: u64,
    /// How the transformation was found (search counters, or the partitioning's figures).
    pub search: Value,
    /// `optimal` (proven over the lattice), `heuristic` or `mondrian` (greedy local recoding).
    pub mode: &'a str,
    /// Other optimal transformations.
    pub ties: &'a [Vec<usize>],
    /// Wall time of the whole run.
    pub seconds: f64,
    /// Risk threshold for `records_at_risk`.
    pub risk_threshold: f64,
}

/// The JSON report. `levels` is an object column → level; `score`, `suppressed`,
/// `classes`, `min_class` and `seconds` are top-level, as scripts rely on them.
pub fn build(r: &ReportInput<'_>) -> Value {
    let levels = by_column(r.columns, &r.best.levels);
    let per_attribute = by_column(r.columns, &r.best.per_attribute);
    let config_bytes = serde_json::to_vec(&r.config).unwrap_or_default();
    let config_sha256 = hex::encode(ring::digest::digest(&ring::digest::SHA256, &config_bytes));
    let ties: Vec<Value> = r.ties.iter().map(|t| by_column(r.columns, t)).collect();
    json!({
        "method_version": METHOD_VERSION,
        "config": r.config,
        "config_sha256": config_sha256,
        "metric": r.metric.name(),
        "k": r.k,
        "rows": r.rows,
        "distinct_qi_tuples": r.distinct,
        "levels": levels,
        "score": r.best.score,
        "per_attribute_loss": per_attribute,
        "suppressed": r.best.suppressed,
        "suppressed_fraction": if r.rows == 0 { 0.0 } else { r.best.suppressed as f64 / r.rows as f64 },
        "classes": r.best.classes,
        "min_class": r.best.min_class,
        "min_distinct_sensitive": r.best.min_distinct,
        "min_entropy_l": r.best.min_entropy_l,
        "max_t_distance": r.best.max_distance,
        "risk": risk(r.released, r.risk_threshold),
        "class_sizes": class_size_histogram(r.released),
        "ties": ties,
        "mode": r.mode,
        "proven_optimal": r.mode == "optimal",
        "search": r.search,
        "seconds": r.seconds,
    })
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn bars(rows: &[(String, f64, String)]) -> String {
    let max = rows.iter().map(|r| r.1).fold(0.0f64, f64::max).max(1e-300);
    let h = 22 * rows.len() + 10;
    let mut svg =
        format!("<svg xmlns='http://www.w3.org/2000/svg' width='640' height='{h}' role='img'>");
    for (i, (label, v, text)) in rows.iter().enumerate() {
        let y = 22 * i + 5;
        let w = (v / max * 380.0).max(0.0);
        svg.push_str(&format!(
            "<text x='0' y='{}' font-size='12'>{}</text><rect x='160' y='{y}' width='{w:.1}' height='16' fill='#4a78b5'/><text x='{:.1}' y='{}' font-size='12'>{}</text>",
            y + 12,
            esc(label),
            165.0 + w,
            y + 12,
            esc(text)
        ));
    }
    svg.push_str("</svg>");
    svg
}

/// The small Markdown subset [`crate::plain`] writes (headings, list items, tables, bold,
/// code) as HTML, every text escaped.
fn markdown_html(md: &str) -> String {
    let inline = |s: &str| {
        let mut out = String::new();
        let (mut bold, mut code) = (false, false);
        let mut rest = s;
        while !rest.is_empty() {
            if let Some(r) = rest.strip_prefix("**") {
                out.push_str(if bold { "</b>" } else { "<b>" });
                bold = !bold;
                rest = r;
            } else if let Some(r) = rest.strip_prefix('`') {
                out.push_str(if code { "</code>" } else { "<code>" });
                code = !code;
                rest = r;
            } else {
                let next = rest
                    .find(['*', '`'])
                    .filter(|&i| i > 0)
                    .unwrap_or_else(|| rest.char_indices().nth(1).map_or(rest.len(), |(i, _)| i));
                out.push_str(&esc(&rest[..next]));
                rest = &rest[next..];
            }
        }
        if code {
            out.push_str("</code>");
        }
        if bold {
            out.push_str("</b>");
        }
        out
    };
    let mut html = String::new();
    let (mut list, mut table) = (false, false);
    for line in md.lines() {
        let is_item = line.starts_with("- ");
        let is_row = line.starts_with('|');
        if list && !is_item {
            html.push_str("</ul>");
            list = false;
        }
        if table && !is_row {
            html.push_str("</table>");
            table = false;
        }
        if let Some(h) = line.strip_prefix("## ") {
            html.push_str(&format!("<h3>{}</h3>", inline(h)));
        } else if let Some(h) = line.strip_prefix("# ") {
            html.push_str(&format!("<h2>{}</h2>", inline(h)));
        } else if let Some(item) = line.strip_prefix("- ") {
            if !list {
                html.push_str("<ul>");
                list = true;
            }
            html.push_str(&format!("<li>{}</li>", inline(item)));
        } else if is_row {
            if line.starts_with("|---") {
                continue;
            }
            if !table {
                html.push_str("<table>");
                table = true;
            }
            let cells: String = line
                .trim_matches('|')
                .split('|')
                .map(|c| format!("<td>{}</td>", inline(c.trim())))
                .collect();
            html.push_str(&format!("<tr>{cells}</tr>"));
        } else if !line.trim().is_empty() {
            html.push_str(&format!("<p>{}</p>", inline(line)));
        }
    }
    if list {
        html.push_str("</ul>");
    }
    if table {
        html.push_str("</table>");
    }
    html
}

/// A self-contained HTML page (no scripts, no external resources) with the report's
/// figures and plots: class sizes, loss per attribute, suppression.
pub fn html(report: &Value) -> String {
    let get = |k: &str| report.get(k).cloned().unwrap_or(Value::Null);
    let classes: Vec<(String, f64, String)> = get("class_sizes")
        .as_array()
        .map(|a| {
            a.iter()
                .map(|b| {
                    (
                        format!("size ≥ {}", b["from"]),
                        b["classes"].as_f64().unwrap_or(0.0),
                        format!("{} classes, {} records", b["classes"], b["records"]),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let loss: Vec<(String, f64, String)> = get("per_attribute_loss")
        .as_object()
        .map(|o| {
            o.iter()
                .map(|(k, v)| {
                    let x = v.as_f64().unwrap_or(0.0);
                    (k.clone(), x, format!("{x:.4}"))
                })
                .collect()
        })
        .unwrap_or_default();
    let rows = get("rows").as_f64().unwrap_or(0.0);
    let sup = get("suppressed").as_f64().unwrap_or(0.0);
    let suppression = vec![
        ("released".to_owned(), rows - sup, format!("{}", rows - sup)),
        ("suppressed".to_owned(), sup, format!("{sup}")),
    ];
    let levels = get("levels")
        .as_object()
        .map(|o| {
            o.iter()
                .map(|(k, v)| format!("<tr><td>{}</td><td>{v}</td></tr>", esc(k)))
                .collect::<String>()
        })
        .unwrap_or_default();
    let pretty = serde_json::to_string_pretty(report).unwrap_or_default();
    format!(
        "<!doctype html><html lang='en'><head><meta charset='utf-8'><title>Anonymization report</title>\
<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto}}td{{padding:0 1em}}pre{{background:#f4f4f4;padding:1em;overflow:auto}}</style></head><body>\
<h1>Anonymization report / 匿名加工の報告</h1>\
<section lang='ja'>{ja}</section><section lang='en'>{en}</section>\
<h2>Figures</h2>\
<p>Method: {method}<br>Configuration SHA-256: <code>{hash}</code></p>\
<p>Metric {metric}, score {score}; k = {k}; {classes} classes, smallest {min}; {sup} of {rows} records suppressed.</p>\
<h2>Generalization levels</h2><table>{levels}</table>\
<h2>Class sizes</h2>{c}\
<h2>Information loss per attribute</h2>{l}\
<h2>Suppressed records</h2>{s}\
<h2>Risk</h2><pre>{risk}</pre>\
<h2>Full report</h2><pre>{pretty}</pre></body></html>",
        method = esc(get("method_version").as_str().unwrap_or("")),
        hash = esc(get("config_sha256").as_str().unwrap_or("")),
        metric = esc(get("metric").as_str().unwrap_or("")),
        score = get("score"),
        k = get("k"),
        classes = get("classes"),
        min = get("min_class"),
        levels = levels,
        c = bars(&classes),
        l = bars(&loss),
        s = bars(&suppression),
        risk = esc(&serde_json::to_string_pretty(&get("risk")).unwrap_or_default()),
        ja = markdown_html(&crate::plain::render(report, crate::plain::Lang::Ja)),
        en = markdown_html(&crate::plain::render(report, crate::plain::Lang::En)),
        pretty = esc(&pretty),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plain_report_becomes_escaped_html() {
        let html = markdown_html(
            "# T\n## S <x>\n- **a<b**: `c&d` é\n- two\n\n| x | y |\n|---|---|\n| 1 | 2 |\ntext",
        );
        assert_eq!(
            html,
            "<h2>T</h2><h3>S &lt;x&gt;</h3><ul><li><b>a&lt;b</b>: <code>c&amp;d</code> é</li>\
             <li>two</li></ul><table><tr><td>x</td><td>y</td></tr><tr><td>1</td><td>2</td></tr>\
             </table><p>text</p>"
        );
        // An unclosed marker is closed, so nothing after the section turns bold.
        assert_eq!(markdown_html("**open"), "<p><b>open</b></p>");
    }

    #[test]
    fn the_page_carries_both_languages() {
        let page = html(&json!({"k": 5, "rows": 10, "risk": {"prosecutor_max": 0.2}}));
        assert!(page.contains("<section lang='ja'>") && page.contains("<section lang='en'>"));
        assert!(page.contains("検察官モデル") && page.contains("Prosecutor"));
        assert!(!page.contains("<script"));
    }
}
