//! SYN flood against established connections (docs/design.md section 8,
//! issue "hardening"): idle keep-alive connections through a nat VIP, then
//! SYNs from random spoofed sources, 10x the flow table's size, while new
//! clients connect every 20 ms; then every idle connection is used again.
//! Reports how many survived and how the new ones fared. Needs root.

mod common;

use lb_testbed::{
    flood::{Outcome, Plan, run},
    xdplb_bin,
};
use serde_json::json;

fn main() -> anyhow::Result<()> {
    let plan = if common::quick() {
        Plan {
            flow_table_size: 4096,
            connections: 50,
            flood_factor: 10,
        }
    } else {
        Plan {
            flow_table_size: 65536,
            connections: 200,
            flood_factor: 10,
        }
    };
    let out = run(plan, xdplb_bin!())?;
    print_table(&out);
    let events: serde_json::Map<_, _> = out
        .events
        .iter()
        .filter(|(_, v)| *v > 0.0)
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect();
    common::emit(
        "flood",
        json!({
            "flow_table_size": plan.flow_table_size,
            "connections": plan.connections,
            "flood_factor": plan.flood_factor,
            "syns_sent": out.syns_sent,
            "flood_secs": out.flood_secs,
            "survived": out.survived,
            "new_ok": out.new_ok,
            "new_failed": out.new_failed,
            "events": events,
        }),
    );
    Ok(())
}

fn print_table(out: &Outcome) {
    let p = out.plan;
    println!(
        "SYN flood: {} SYNs ({}x flow_table_size {}) in {:.1} s ({:.0}/s)",
        out.syns_sent,
        p.flood_factor,
        p.flow_table_size,
        out.flood_secs,
        out.syns_sent as f64 / out.flood_secs
    );
    println!(
        "idle established connections that survived: {} of {} ({:.1}%)",
        out.survived,
        p.connections,
        100.0 * out.survived as f64 / p.connections as f64
    );
    println!(
        "new connections during the flood: {} ok, {} failed",
        out.new_ok, out.new_failed
    );
    for (event, n) in out.events.iter().filter(|(_, n)| *n > 0.0) {
        println!("  event {event}: {n}");
    }
}
