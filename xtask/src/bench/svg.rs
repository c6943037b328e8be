//! A small hand-written SVG bar chart: no plotting dependency for one plot.

use serde_json::Value;

/// Horizontal bars of the packets per second each program handled (rx),
/// from the pps bench's result.
pub fn pps_chart(pps: &Value) -> String {
    let rows: Vec<(String, f64)> = pps["rows"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|r| {
                    (
                        r["name"].as_str().unwrap_or("?").to_owned(),
                        r["rx_mpps"].as_f64().unwrap_or(0.0),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let max = rows.iter().map(|r| r.1).fold(0.0, f64::max).max(1e-9);
    let (left, bar_w, row_h, top) = (230.0, 420.0, 30.0, 50.0);
    let height = top + row_h * rows.len() as f64 + 40.0;
    let width = left + bar_w + 90.0;
    let mut s = format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="13">
<rect width="100%" height="100%" fill="white"/>
<text x="10" y="22" font-size="15" font-weight="bold">Packets per second handled by the balancer CPU (Mpps, 64-byte frames, veth)</text>
<text x="10" y="40" fill="#555">flows: {flows}; generator on CPU {g}, balancer NAPI on CPU {l}; higher is better</text>
"##,
        flows = pps["flows"],
        g = pps["gen_cpu"],
        l = pps["lb_cpu"],
    );
    for (i, (name, mpps)) in rows.iter().enumerate() {
        let y = top + row_h * i as f64;
        let w = bar_w * mpps / max;
        let color = if name.starts_with("xdplb") {
            "#d9534f"
        } else if name.contains("baseline") {
            "#8aa4c8"
        } else {
            "#999999"
        };
        s += &format!(
            r#"<text x="{tx}" y="{ty}" text-anchor="end">{name}</text>
<rect x="{left}" y="{y}" width="{w:.1}" height="{h}" fill="{color}"/>
<text x="{vx:.1}" y="{ty}">{mpps:.2}</text>
"#,
            tx = left - 8.0,
            ty = y + row_h * 0.55,
            h = row_h * 0.7,
            vx = left + w + 6.0,
            name = escape(name),
        );
    }
    s += "</svg>\n";
    s
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
