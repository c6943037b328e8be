//! Maps at exactly their configured limits take every change: all
//! `max_services` services with an echo entry each (SERVICES holds both),
//! all `max_backends` backends, then a VIP moved and a service replaced
//! while full. What the kernel's maps hold is read back by a second load
//! that adopts the pinned maps, as a restarted daemon would.
//!
//! Needs root and the built XDP program.

use std::path::PathBuf;

use lb_common::{MODE_ECHO, MODE_NAT};
use xdplb::{config::Config, dataplane::Dataplane, ids::Ids, plan};

const MAX_SERVICES: usize = 4;
const BACKENDS_PER_SERVICE: usize = 2;

/// `MAX_SERVICES` services (`names`, `vips`), each answering echo requests,
/// with `BACKENDS_PER_SERVICE` backends each: every map at its limit.
fn config(names: &[&str], vips: &[&str]) -> Config {
    let mut yaml = format!(
        "interfaces: [lo]\nsnat: {{ ipv4: 198.18.1.1 }}\n\
         limits: {{ max_services: {MAX_SERVICES}, max_backends: {}, \
         maglev_table_size: 101, flow_table_size: 1024 }}\nservices:\n",
        MAX_SERVICES * BACKENDS_PER_SERVICE
    );
    for (i, (name, vip)) in names.iter().zip(vips).enumerate() {
        yaml += &format!(
            "  - name: {name}\n    vip: {vip}\n    port: 80\n    icmp_echo: true\n    backends:\n"
        );
        for b in 0..BACKENDS_PER_SERVICE {
            yaml += &format!(
                "      - {{ address: 198.18.1.{}, port: 8080 }}\n",
                10 + 10 * i + b
            );
        }
    }
    Config::from_yaml(&yaml).expect("valid config")
}

/// A pin dir of its own, removed at the end even if the test fails.
struct PinDir(PathBuf);

impl Drop for PinDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// (VIP, mode) of every SERVICES entry, as a second load adopts them.
fn in_kernel(cfg: &Config, pins: &PinDir) -> Vec<(String, u8)> {
    let dp = Dataplane::load(&cfg.limits, Some(&pins.0)).expect("second load");
    let mut entries: Vec<(String, u8)> = dp
        .adopted()
        .services
        .iter()
        .map(|(k, m)| (lb_common::words_addr(k.addr, k.family).to_string(), m.mode))
        .collect();
    entries.sort();
    entries
}

fn expected(vips: &[&str]) -> Vec<(String, u8)> {
    let mut e: Vec<(String, u8)> = vips
        .iter()
        .flat_map(|v| [(v.to_string(), MODE_NAT), (v.to_string(), MODE_ECHO)])
        .collect();
    e.sort();
    e
}

#[test]
fn full_maps_take_every_change() {
    let pins = PinDir(PathBuf::from(format!(
        "/sys/fs/bpf/xdplb-test-capacity-{}",
        std::process::id()
    )));
    let names = ["a", "b", "c", "d"];
    let vips = [
        "198.18.100.1",
        "198.18.100.2",
        "198.18.100.3",
        "198.18.100.4",
    ];
    let cfg = config(&names, &vips);
    let mut ids = Ids::default();
    ids.assign(&cfg).unwrap();
    let mut dp = Dataplane::load(&cfg.limits, Some(&pins.0)).expect("load (root, built program)");
    let write = |dp: &mut Dataplane, cfg: &Config, ids: &mut Ids| {
        ids.assign(cfg).expect("ids within the limits");
        dp.apply(&plan::plan(cfg, ids, |_, b| plan::configured(b)))
    };

    write(&mut dp, &cfg, &mut ids).expect("every service with its echo entry fits");
    assert_eq!(in_kernel(&cfg, &pins), expected(&vips));

    let steps: [(&str, [&str; 4], [&str; 4]); 2] = [
        (
            "a VIP moved while the map is full",
            names,
            [
                "198.18.100.1",
                "198.18.100.2",
                "198.18.100.3",
                "198.18.100.9",
            ],
        ),
        (
            "a service replaced by another (new name, new VIP) while full",
            ["a", "b", "c", "e"],
            [
                "198.18.100.1",
                "198.18.100.2",
                "198.18.100.3",
                "198.18.100.5",
            ],
        ),
    ];
    for (what, names, vips) in steps {
        let cfg = config(&names, &vips);
        write(&mut dp, &cfg, &mut ids).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(in_kernel(&cfg, &pins), expected(&vips), "{what}");
    }

    dp.unpin_all().unwrap();
}
