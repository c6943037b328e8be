//! The `xdplb` command line: exit codes and messages (design.md section 4).

use std::process::{Command, Output};

fn xdplb(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_xdplb"))
        .args(args)
        .output()
        .expect("run xdplb")
}

fn temp_config(name: &str, text: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("xdplb-cli-{}-{name}.yaml", std::process::id()));
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn check_accepts_the_shipped_configs() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../config");
    for file in ["demo.yaml", "example.yaml"] {
        let path = format!("{root}/{file}");
        let out = xdplb(&["check", "--config", &path]);
        assert_eq!(out.status.code(), Some(0), "{file}: {out:?}");
        assert!(String::from_utf8_lossy(&out.stdout).contains("ok"));
    }
}

#[test]
fn check_rejects_an_invalid_config_with_exit_2_and_the_key_path() {
    let path = temp_config(
        "bad",
        "interfaces: [eth0]\nsnat: { ipv4: 198.18.1.1 }\nservices:\n  - name: web\n    vip: 198.18.100.10\n    port: 80\n    backends:\n      - { address: 198.18.1.11, port: 0 }\n",
    );
    let out = xdplb(&["check", "--config", path.to_str().unwrap()]);
    std::fs::remove_file(&path).unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("services[0].backends[0].port"), "{err}");
    assert!(err.contains("line 8"), "{err}");
}

#[test]
fn check_of_a_missing_file_says_so() {
    let out = xdplb(&["check", "--config", "/nonexistent/xdplb.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/xdplb.yaml"));
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(xdplb(&["frobnicate"]).status.code(), Some(2));
    assert_eq!(xdplb(&["check"]).status.code(), Some(2));
    assert_eq!(xdplb(&["--help"]).status.code(), Some(0));
}

#[test]
fn run_with_an_invalid_config_exits_2_before_touching_anything() {
    let path = temp_config("bad-run", "interfaces: []\n");
    let out = xdplb(&["run", "--config", path.to_str().unwrap()]);
    std::fs::remove_file(&path).unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("interfaces"));
}

#[test]
fn backend_setup_holds_dsr_vips_on_lo_idempotently() {
    let ns = format!("xdplb-cli-{}", std::process::id());
    let ip = |args: &[&str]| Command::new("ip").args(args).output().expect("ip");
    assert!(ip(&["netns", "add", &ns]).status.success());
    let run = |args: &[&str]| {
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns,
                env!("CARGO_BIN_EXE_xdplb"),
                "backend-setup",
            ])
            .args(args)
            .output()
            .expect("run xdplb")
    };
    let vips = ["--vip", "198.18.100.20", "--vip", "2001:db8:100::20"];
    let first = run(&vips);
    let again = run(&vips);
    let lo = String::from_utf8_lossy(&ip(&["-n", &ns, "addr", "show", "lo"]).stdout).into_owned();
    let arp_ignore = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns,
            "sysctl",
            "-n",
            "net.ipv4.conf.all.arp_ignore",
        ])
        .output()
        .unwrap();
    let removed = run(&[
        "--remove",
        "--vip",
        "198.18.100.20",
        "--vip",
        "2001:db8:100::20",
    ]);
    let lo_after =
        String::from_utf8_lossy(&ip(&["-n", &ns, "addr", "show", "lo"]).stdout).into_owned();
    ip(&["netns", "del", &ns]);

    assert!(first.status.success(), "{first:?}");
    assert!(String::from_utf8_lossy(&first.stdout).contains("added 198.18.100.20/32 to lo"));
    assert_eq!(
        String::from_utf8_lossy(&again.stdout).trim(),
        "nothing to change"
    );
    assert!(
        lo.contains("198.18.100.20/32") && lo.contains("2001:db8:100::20/128"),
        "{lo}"
    );
    assert_eq!(String::from_utf8_lossy(&arp_ignore.stdout).trim(), "1");
    assert!(removed.status.success());
    assert!(!lo_after.contains("198.18.100.20"), "{lo_after}");
}
