//! The Debian package (`cargo xtask package`), installed for real on this
//! machine with dpkg: the binary names its commit and the package version,
//! the installed config passes `xdplb check`, the installed unit passes
//! `systemd-analyze verify` as it is, the service user exists, man pages
//! and completions are where man and the shells look; then removed and
//! purged, leaving nothing behind. Needs root; fails if an xdplb package is
//! already installed (the test must not replace an operator's).

use std::{path::Path, process::Command};

use lb_testbed::deb;

/// Runs `program args`; returns (success, stdout + stderr).
fn run(program: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn must(program: &str, args: &[&str]) -> String {
    let (ok, text) = run(program, args);
    assert!(ok, "{program} {}: {text}", args.join(" "));
    text
}

fn installed() -> bool {
    run("dpkg-query", &["-W", "-f=${Status}", "xdplb"])
        .1
        .contains("install ok installed")
}

/// Purges the package (and the user its postinst made) even when the test
/// fails half-way.
struct Installed {
    made_user: bool,
}

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = run("dpkg", &["--purge", "xdplb"]);
        if self.made_user {
            let _ = run("deluser", &["--system", "--quiet", "xdplb"]);
        }
    }
}

#[test]
fn the_package_installs_works_and_removes_cleanly() {
    let deb = deb::path().expect("the .deb");
    assert!(
        !installed(),
        "an xdplb package is installed already: this test installs and purges its own"
    );
    let had_user = run("getent", &["passwd", "xdplb"]).0;
    let guard = Installed {
        made_user: !had_user,
    };
    must("dpkg", &["-i", deb.to_str().unwrap()]);
    assert!(installed());

    // The binary: the commit it was built from and the package version.
    let version = must("/usr/bin/xdplb", &["--version"]);
    assert!(
        version.starts_with("xdplb 0.1.0 (commit ") && version.contains(", package 0.1.0-1)"),
        "{version}"
    );
    let commit = must(
        "git",
        &["-C", env!("CARGO_MANIFEST_DIR"), "rev-parse", "HEAD"],
    );
    let named = version
        .split("commit ")
        .nth(1)
        .and_then(|s| s.split([',', '-']).next())
        .unwrap();
    assert!(
        commit.trim().starts_with(named),
        "--version names {named}, HEAD is {commit}"
    );

    // The installed config is valid, and a conffile.
    let check = must(
        "/usr/bin/xdplb",
        &["check", "--config", "/etc/xdplb/xdplb.yaml"],
    );
    assert!(check.contains("ok"), "{check}");
    let conffiles = must("dpkg-query", &["-W", "-f=${Conffiles}", "xdplb"]);
    assert!(conffiles.contains("/etc/xdplb/xdplb.yaml"), "{conffiles}");

    // The unit as installed (binary and man pages in place).
    let unit = "/usr/lib/systemd/system/xdplb.service";
    let (ok, out) = run("systemd-analyze", &["verify", unit]);
    assert!(
        ok && out.trim().is_empty(),
        "systemd-analyze verify {unit}: {out}"
    );
    let user = must("getent", &["passwd", "xdplb"]);
    let uid: u32 = user.split(':').nth(2).unwrap().parse().unwrap();
    assert!((1..1000).contains(&uid), "a system user: {user}");

    // Man pages and completions where their readers look.
    let page = must("man", &["-w", "xdplb"]);
    assert_eq!(page.trim(), "/usr/share/man/man1/xdplb.1.gz");
    must("man", &["-w", "xdplb-run"]);
    let bash = "/usr/share/bash-completion/completions/xdplb";
    must("bash", &["-n", bash]);
    let (ok, _) = run(
        "bash",
        &["-c", &format!("source {bash} && complete -p xdplb")],
    );
    assert!(ok, "bash registers a completion for xdplb");
    assert!(Path::new("/usr/share/zsh/vendor-completions/_xdplb").is_file());
    let dashboard = std::fs::read_to_string("/usr/share/xdplb/grafana/xdplb.json").unwrap();
    serde_json::from_str::<serde_json::Value>(&dashboard).expect("the Grafana dashboard");

    // Remove: the program goes, the edited config stays; purge: all goes.
    let files = must("dpkg-query", &["-L", "xdplb"]);
    must("dpkg", &["--remove", "xdplb"]);
    assert!(!Path::new("/usr/bin/xdplb").exists());
    assert!(!Path::new(unit).exists());
    assert!(
        Path::new("/etc/xdplb/xdplb.yaml").exists(),
        "remove keeps conffiles"
    );
    must("dpkg", &["--purge", "xdplb"]);
    assert!(!installed());
    for file in files.lines().filter(|f| f.starts_with('/')) {
        let p = Path::new(file);
        // Shared directories (/usr, /usr/share/man/man1, ...) stay.
        assert!(p.is_dir() || !p.exists(), "{file} left behind");
    }
    assert!(
        !Path::new("/etc/xdplb").exists(),
        "purge removes /etc/xdplb"
    );
    drop(guard);
}
