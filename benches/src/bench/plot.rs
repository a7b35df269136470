//! `farm bench --plot FILE.svg`: latency CDFs (one line per transaction
//! type, or per run of a sweep) and, for a sweep, throughput against client
//! threads (one line per node count). Drawn with plotters' SVG backend.

use std::path::Path;

use plotters::prelude::*;

use super::BenchReport;

type PlotResult = Result<(), Box<dyn std::error::Error>>;

fn color(index: usize) -> RGBColor {
    const PALETTE: [RGBColor; 8] = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(127, 127, 127),
    ];
    PALETTE[index % PALETTE.len()]
}

/// Writes the plot of `reports` (one run, or the runs of a sweep).
/// `farm plot`: reads the JSON reports of `farm bench --json` (one run, or
/// a sweep's `{"runs": [...]}`) and draws them into `out`. Runs of several
/// files are named after their file.
///
/// # Errors
/// Names the file that cannot be read or is no report; the plot's errors.
pub fn plot_files(files: &[std::path::PathBuf], out: &Path) -> PlotResult {
    let mut reports: Vec<BenchReport> = Vec::new();
    for path in files {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let value: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| format!("{} is not JSON: {e}", path.display()))?;
        let runs = match value.get("runs") {
            Some(runs) => runs.clone(),
            None => serde_json::Value::Array(vec![value]),
        };
        let mut parsed: Vec<BenchReport> = serde_json::from_value(runs).map_err(|e| {
            format!(
                "{} is not a `farm bench --json` report: {e}",
                path.display()
            )
        })?;
        if files.len() > 1 {
            // Runs from different files: tell them apart by the file's name.
            let name = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            for report in &mut parsed {
                report.label.get_or_insert_with(|| name.clone());
            }
        }
        reports.extend(parsed);
    }
    if reports.is_empty() {
        return Err("the reports hold no runs".into());
    }
    write_svg(out, &reports)?;
    eprintln!("farm plot: {} runs into {}", reports.len(), out.display());
    Ok(())
}

/// The throughput of `report` over its measured time, per millisecond (as
/// transactions per second), with each kill marked by a red line.
fn draw_timeline(
    area: &DrawingArea<SVGBackend, plotters::coord::Shift>,
    report: &BenchReport,
) -> PlotResult {
    let points: Vec<(f64, f64)> = report
        .timeline
        .iter()
        .map(|(ms, committed)| (*ms as f64 / 1000.0, *committed as f64 * 1000.0))
        .collect();
    let end_s = points.last().map(|p| p.0).unwrap_or(1.0).max(0.001);
    let max_tps = points.iter().map(|p| p.1).fold(1.0, f64::max) * 1.1;
    let mut chart = ChartBuilder::on(area)
        .caption(
            format!(
                "{} throughput, 1 ms buckets (kills in red)",
                report.workload
            ),
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(80)
        .build_cartesian_2d(0f64..end_s, 0f64..max_tps)?;
    chart
        .configure_mesh()
        .x_desc("seconds into the measured time")
        .y_desc("committed transactions per second")
        .y_label_formatter(&|v| format!("{:.0}k", v / 1000.0))
        .draw()?;
    chart.draw_series(LineSeries::new(points, color(0).stroke_width(1)))?;
    for recovery in &report.recovery {
        let at = recovery.killed_at_s;
        chart
            .draw_series(LineSeries::new(
                [(at, 0.0), (at, max_tps)],
                RED.stroke_width(2),
            ))?
            .label(format!(
                "node {} killed; back to 80% after {}",
                recovery.node,
                recovery
                    .back_to_80pct_ms
                    .map_or("-".to_string(), |ms| format!("{ms:.0} ms"))
            ))
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], RED.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

/// Draws `reports` into the SVG file `path`.
///
/// # Errors
/// The plotting library's.
pub fn write_svg(path: &Path, reports: &[BenchReport]) -> PlotResult {
    assert!(!reports.is_empty());
    let sweep = reports.len() > 1;
    // A run with kills gets its throughput timeline beside the CDF.
    let killed = !sweep && !reports[0].recovery.is_empty();
    let root = SVGBackend::new(
        path,
        if sweep || killed {
            (1200, 480)
        } else {
            (720, 480)
        },
    )
    .into_drawing_area();
    root.fill(&WHITE)?;
    let (left, right) = if sweep {
        let (l, r) = root.split_horizontally(600);
        (l, Some(r))
    } else if killed {
        let (l, r) = root.split_horizontally(600);
        draw_timeline(&r, &reports[0])?;
        (l, None)
    } else {
        (root.clone(), None)
    };
    // Latency CDF: per type for one run, the whole mix per run of a sweep.
    let first = &reports[0];
    let lines: Vec<(String, &Vec<(f64, f64)>)> = if sweep {
        reports
            .iter()
            .map(|r| {
                (
                    format!(
                        "{}{} nodes × {} thread{}",
                        r.label
                            .as_ref()
                            .map(|l| format!("{l}: "))
                            .unwrap_or_default(),
                        r.nodes,
                        r.threads / r.nodes.max(1),
                        if r.threads / r.nodes.max(1) == 1 {
                            ""
                        } else {
                            "s"
                        }
                    ),
                    &r.cdf_us,
                )
            })
            .collect()
    } else {
        first
            .types
            .iter()
            .filter(|t| !t.cdf_us.is_empty())
            .map(|t| (t.name.to_string(), &t.cdf_us))
            .collect()
    };
    let max_us = lines
        .iter()
        .flat_map(|(_, points)| points.iter().map(|(us, _)| *us))
        .fold(1.0f64, f64::max)
        * 1.5;
    let min_us = lines
        .iter()
        .flat_map(|(_, points)| points.iter().map(|(us, _)| *us))
        .fold(f64::MAX, f64::min)
        .clamp(0.01, 1.0);
    let mut chart = ChartBuilder::on(&left)
        .caption(
            {
                let fabric = if reports.iter().all(|r| r.fabric == first.fabric) {
                    format!("{} fabric", first.fabric)
                } else {
                    "several fabrics".to_string()
                };
                if reports.iter().all(|r| r.copies == first.copies) {
                    format!(
                        "{} latency CDF ({fabric}, {} copies)",
                        first.workload, first.copies
                    )
                } else {
                    format!(
                        "{} latency CDF ({fabric}, copies = min(3, nodes))",
                        first.workload
                    )
                }
            },
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(56)
        .build_cartesian_2d((min_us..max_us).log_scale(), 0f64..100f64)?;
    chart
        .configure_mesh()
        .x_desc("latency [µs] (log scale)")
        .y_desc("transactions at or below [%]")
        .draw()?;
    for (index, (name, points)) in lines.iter().enumerate() {
        let style = color(index).stroke_width(2);
        chart
            .draw_series(LineSeries::new(points.iter().copied(), style))?
            .label(name.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 16, y)], color(index).stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    if let Some(right) = right {
        let max_threads = reports.iter().map(|r| r.threads).max().unwrap_or(1) as f64;
        let max_tps = reports.iter().map(|r| r.throughput_tps).fold(1.0, f64::max) * 1.15;
        let mut chart = ChartBuilder::on(&right)
            .caption(format!("{} throughput", first.workload), ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(44)
            .y_label_area_size(80)
            .build_cartesian_2d(0f64..max_threads * 1.1, 0f64..max_tps)?;
        chart
            .configure_mesh()
            .x_desc("client threads (all nodes)")
            // Threads are whole: no label between two of them.
            .x_label_formatter(&|v| {
                if (v - v.round()).abs() < 1e-9 {
                    format!("{v:.0}")
                } else {
                    String::new()
                }
            })
            .y_desc("committed transactions per second")
            .y_label_formatter(&|v| format!("{:.0}k", v / 1000.0))
            .draw()?;
        // One line per (label, node count).
        let mut series: Vec<(Option<&String>, usize)> = reports
            .iter()
            .map(|r| (r.label.as_ref(), r.nodes))
            .collect();
        series.sort_unstable();
        series.dedup();
        for (index, (label, nodes)) in series.iter().enumerate() {
            let mut points: Vec<(f64, f64)> = reports
                .iter()
                .filter(|r| r.nodes == *nodes && r.label.as_ref() == *label)
                .map(|r| (r.threads as f64, r.throughput_tps))
                .collect();
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            let style = color(index).stroke_width(2);
            chart
                .draw_series(LineSeries::new(points.clone(), style))?
                .label(match label {
                    Some(label) => format!("{label}: {nodes} nodes"),
                    None => format!("{nodes} nodes"),
                })
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 16, y)], color(index).stroke_width(2))
                });
            chart.draw_series(
                points
                    .iter()
                    .map(|p| Circle::new(*p, 4, color(index).filled())),
            )?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
    }
    root.present()?;
    Ok(())
}
