//! Flood-proof flow tracking, a short pass (the bench runs the long one,
//! docs/benchmarks.md): a SYN flood of 10x the flow table's size from
//! random sources, while 100 idle keep-alive connections through a nat
//! VIP wait and new clients keep connecting. Established connections must
//! survive (at least 99%), new ones must succeed, and the flood must show
//! in the events. The real daemon, real sockets, real kernel.
//! Needs root and the built XDP program.

use lb_testbed::{
    flood::{Plan, run},
    xdplb_bin,
};

#[test]
fn established_connections_survive_a_syn_flood_of_ten_times_the_flow_table() {
    let plan = Plan {
        flow_table_size: 4096,
        connections: 100,
        flood_factor: 10,
    };
    let out = run(plan, xdplb_bin!()).expect("the flood runs");
    eprintln!("{out:#?}");
    assert!(
        out.survived * 100 >= plan.connections * 99,
        "{} of {} idle connections survived",
        out.survived,
        plan.connections
    );
    assert!(
        out.new_ok > 0 && out.new_failed * 20 <= out.new_ok,
        "new connections during the flood: {out:?}"
    );
}
