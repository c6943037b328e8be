//! The `xdplb` command line: exit codes and messages (docs/design.md section 4).

mod cli_support;

use std::process::{Command, Output};

use cli_support::{TempFile, assert_exit, assert_fails, stderr, stdout, xdplb};

#[test]
fn check_accepts_the_shipped_configs() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../config");
    let mut files: Vec<String> = ["demo.yaml", "example.yaml"].map(String::from).to_vec();
    // And every file of config/examples/ (the package ships them).
    for entry in std::fs::read_dir(format!("{root}/examples")).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if name.ends_with(".yaml") {
            files.push(format!("examples/{name}"));
        }
    }
    for shipped in ["examples/canary.yaml", "examples/least-flows.yaml"] {
        assert!(files.contains(&shipped.to_string()), "{files:?}");
    }
    for file in files {
        let path = format!("{root}/{file}");
        let out = xdplb(&["check", "--config", &path]);
        assert_eq!(out.status.code(), Some(0), "{file}: {out:?}");
        assert!(stdout(&out).contains("ok"));
    }
}

#[test]
fn check_rejects_an_invalid_config_with_exit_2_and_the_key_path() {
    let config = TempFile::new(
        "bad.yaml",
        "interfaces: [eth0]\nsnat: { ipv4: 198.18.1.1 }\nservices:\n  - name: web\n    vip: 198.18.100.10\n    port: 80\n    backends:\n      - { address: 198.18.1.11, port: 0 }\n",
    );
    let out = xdplb(&["check", "--config", config.arg()]);
    assert_exit(&out, 2);
    let err = stderr(&out);
    assert!(err.contains("services[0].backends[0].port"), "{err}");
    assert!(err.contains("line 8"), "{err}");
}

#[test]
fn check_of_a_missing_file_says_so() {
    let out = xdplb(&["check", "--config", "/nonexistent/xdplb.yaml"]);
    assert_fails(&out, 2, "/nonexistent/xdplb.yaml");
}

#[test]
fn usage_errors_exit_2() {
    assert_exit(&xdplb(&["frobnicate"]), 2);
    assert_exit(&xdplb(&["check"]), 2);
    assert_exit(&xdplb(&["--help"]), 0);
}

#[test]
fn run_with_an_invalid_config_exits_2_before_touching_anything() {
    let config = TempFile::new("bad-run.yaml", "interfaces: []\n");
    let out = xdplb(&["run", "--config", config.arg()]);
    assert_fails(&out, 2, "interfaces");
}

#[test]
fn backend_setup_holds_dsr_vips_on_lo_idempotently() {
    let ns = format!("xdplb-cli-{}", std::process::id());
    let ip = |args: &[&str]| Command::new("ip").args(args).output().expect("ip");
    // A command run inside the namespace.
    let in_ns = |program: &str, args: &[&str]| -> Output {
        Command::new("ip")
            .args(["netns", "exec", &ns, program])
            .args(args)
            .output()
            .expect("ip netns exec")
    };
    let backend_setup = |args: &[&str]| {
        in_ns(
            env!("CARGO_BIN_EXE_xdplb"),
            &[&["backend-setup"], args].concat(),
        )
    };
    let lo = || stdout(&ip(&["-n", &ns, "addr", "show", "lo"]));
    assert!(ip(&["netns", "add", &ns]).status.success());

    let vips = ["--vip", "198.18.100.20", "--vip", "2001:db8:100::20"];
    let first = backend_setup(&vips);
    let again = backend_setup(&vips);
    let lo_set_up = lo();
    let arp_ignore = in_ns("sysctl", &["-n", "net.ipv4.conf.all.arp_ignore"]);
    let removed = backend_setup(&[&["--remove"], &vips[..]].concat());
    let lo_after = lo();
    ip(&["netns", "del", &ns]);

    assert!(first.status.success(), "{first:?}");
    assert!(stdout(&first).contains("added 198.18.100.20/32 to lo"));
    assert_eq!(stdout(&again).trim(), "nothing to change");
    assert!(
        lo_set_up.contains("198.18.100.20/32") && lo_set_up.contains("2001:db8:100::20/128"),
        "{lo_set_up}"
    );
    assert_eq!(stdout(&arp_ignore).trim(), "1");
    assert!(removed.status.success());
    assert!(!lo_after.contains("198.18.100.20"), "{lo_after}");
}
