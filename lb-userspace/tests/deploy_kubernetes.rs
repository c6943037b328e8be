//! deploy/kubernetes/ checked with the real tools: every manifest against
//! the Kubernetes schemas (PyPI's kubernetes-validate, strict, for a
//! pinned Kubernetes version), the kustomization rendered by kubectl's
//! kustomize (Debian's kubernetes-client if no kubectl is installed) and
//! validated the same way, the ConfigMap's xdplb.yaml accepted by `xdplb
//! check`, and the DaemonSet consistent with the config (admin port,
//! probes, scrape annotations) and with the systemd unit (capabilities).
//! Needs python3 with venv and PyPI; installs what is missing.

mod cli_support;

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::{Command, Output},
};

use cli_support::{TempFile, assert_exit, assert_fails, stderr, stdout, xdplb};
use lb_testbed::host_tools::{apt_program, pip_tool};
use serde_yaml::Value;

/// The Kubernetes version the manifests must be valid for.
const K8S_VERSION: &str = "1.30";
/// The validator, pinned: its schemas decide what passes.
const VALIDATOR: &str = "kubernetes-validate==1.37.0";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn dir() -> PathBuf {
    repo().join("deploy/kubernetes")
}

/// The manifests: every YAML file of the directory but the kustomization.
fn manifests() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir())
        .expect("deploy/kubernetes exists")
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml") && n != "kustomization.yaml")
        .collect();
    names.sort();
    names
}

fn read_yaml(name: &str) -> Value {
    let text = std::fs::read_to_string(dir().join(name)).unwrap();
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// `v[path...]`, a mapping key or a sequence index at each step.
fn at<'a>(v: &'a Value, path: &[&str]) -> &'a Value {
    path.iter().fold(v, |v, key| match key.parse::<usize>() {
        Ok(i) => &v[i],
        Err(_) => &v[*key],
    })
}

fn text(v: &Value, path: &[&str]) -> String {
    match at(v, path) {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        other => panic!("{path:?} is {other:?}, not a scalar"),
    }
}

fn validator() -> PathBuf {
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("kubernetes-validate-venv");
    pip_tool(&venv, VALIDATOR, "kubernetes-validate").expect("kubernetes-validate installs")
}

/// kubernetes-validate, strict, on `files`.
fn validate(files: &[PathBuf]) -> Output {
    Command::new(validator())
        .args(["--strict", "--kubernetes-version", K8S_VERSION])
        .args(files)
        .output()
        .expect("kubernetes-validate runs")
}

fn all_output(out: &Output) -> String {
    format!("{}{}", stdout(out), stderr(out))
}

#[test]
fn every_manifest_is_valid_for_kubernetes_strictly() {
    let names = manifests();
    assert_eq!(
        names,
        ["configmap.yaml", "daemonset.yaml", "namespace.yaml"]
    );
    let files: Vec<PathBuf> = names.iter().map(|n| dir().join(n)).collect();
    let out = validate(&files);
    let said = all_output(&out);
    println!("{said}");
    assert!(out.status.success(), "{said}");
    for (name, kind) in [
        ("namespace.yaml", "namespace/xdplb"),
        ("configmap.yaml", "configmap/xdplb-config"),
        ("daemonset.yaml", "daemonset/xdplb"),
    ] {
        let line = format!("{name} passed for resource {kind} against version {K8S_VERSION}");
        assert!(said.contains(&line), "no {line:?} in:\n{said}");
    }
    assert!(!said.contains("WARN"), "{said}");

    // The same validator refuses a field the schema lacks (a typo).
    let daemonset = std::fs::read_to_string(dir().join("daemonset.yaml")).unwrap();
    let typo = daemonset.replacen(
        "hostNetwork: true",
        "hostNetwork: true\n      hostNetwrk: true",
        1,
    );
    assert_ne!(typo, daemonset);
    let bad = TempFile::new("k8s-typo.yaml", &typo);
    let out = validate(&[PathBuf::from(bad.arg())]);
    assert!(
        !out.status.success(),
        "a typo passed:\n{}",
        all_output(&out)
    );
    assert!(
        all_output(&out).contains("'hostNetwrk' was unexpected"),
        "{}",
        all_output(&out)
    );
}

#[test]
fn the_kustomization_renders_every_manifest_and_the_result_is_valid() {
    let kustomization = read_yaml("kustomization.yaml");
    let resources: Vec<String> = at(&kustomization, &["resources"])
        .as_sequence()
        .expect("resources: a list")
        .iter()
        .map(|r| r.as_str().unwrap().to_owned())
        .collect();
    let listed: BTreeSet<&str> = resources.iter().map(String::as_str).collect();
    let present = manifests();
    let present: BTreeSet<&str> = present.iter().map(String::as_str).collect();
    assert_eq!(
        listed, present,
        "kustomization.yaml resources vs the manifests"
    );

    let kubectl = apt_program("kubectl", "kubernetes-client").expect("kubectl");
    let version = Command::new(&kubectl)
        .args(["version", "--client"])
        .output()
        .expect("kubectl runs");
    println!("{}", stdout(&version).trim());
    let out = Command::new(&kubectl)
        .arg("kustomize")
        .arg(dir())
        .output()
        .expect("kubectl kustomize runs");
    assert!(out.status.success(), "kubectl kustomize: {}", stderr(&out));
    let rendered = stdout(&out);

    let docs: Vec<Value> = serde_yaml::Deserializer::from_str(&rendered)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect();
    let kinds: BTreeSet<String> = docs.iter().map(|d| text(d, &["kind"])).collect();
    let expected: BTreeSet<String> = ["ConfigMap", "DaemonSet", "Namespace"]
        .map(String::from)
        .into();
    assert_eq!(kinds, expected, "{rendered}");
    for doc in docs.iter().filter(|d| text(d, &["kind"]) != "Namespace") {
        assert_eq!(text(doc, &["metadata", "namespace"]), "xdplb", "{doc:?}");
    }
    let file = TempFile::new("k8s-rendered.yaml", &rendered);
    let out = validate(&[PathBuf::from(file.arg())]);
    assert!(out.status.success(), "{}", all_output(&out));
    assert_eq!(all_output(&out).matches(" passed for resource ").count(), 3);
}

/// The ConfigMap's xdplb.yaml, as the pod reads it.
fn embedded_config() -> String {
    let cm = read_yaml("configmap.yaml");
    text(&cm, &["data", "xdplb.yaml"])
}

#[test]
fn xdplb_check_accepts_the_configmaps_config() {
    let config = embedded_config();
    // The token comes from a Secret in the pod: here a file of our own
    // stands at the path the config names (nothing else changes).
    let token = TempFile::new("k8s-token", "0123456789abcdef0123456789abcdef\n");
    let in_pod = "token_file: /etc/xdplb-token/token";
    assert!(config.contains(in_pod), "{config}");
    let here = config.replace(in_pod, &format!("token_file: {}", token.arg()));
    let file = TempFile::new("k8s-xdplb.yaml", &here);
    assert_exit(&xdplb(&["check", "--config", file.arg()]), 0);

    // And check is no rubber stamp: the config without its token is refused.
    let file = TempFile::new("k8s-xdplb-missing-token.yaml", &config);
    let out = xdplb(&["check", "--config", file.arg()]);
    assert_fails(&out, 2, "cannot read /etc/xdplb-token/token");
}

fn container() -> Value {
    let ds = read_yaml("daemonset.yaml");
    let containers = at(&ds, &["spec", "template", "spec", "containers"]);
    assert_eq!(containers.as_sequence().map(Vec::len), Some(1));
    containers[0].clone()
}

#[test]
fn the_daemonset_matches_the_config_and_runs_unprivileged() {
    let ds = read_yaml("daemonset.yaml");
    let pod = at(&ds, &["spec", "template", "spec"]);
    let c = container();
    let config: Value = serde_yaml::from_str(&embedded_config()).unwrap();
    let listen = text(&config, &["admin", "listen"]);
    let port = listen.rsplit(':').next().unwrap().to_owned();

    assert_eq!(at(pod, &["hostNetwork"]), &Value::Bool(true));
    assert_eq!(text(pod, &["dnsPolicy"]), "ClusterFirstWithHostNet");
    assert_eq!(
        text(
            &ds,
            &["spec", "updateStrategy", "rollingUpdate", "maxUnavailable"]
        ),
        "1"
    );
    // Probes on the admin API, over the node's loopback.
    for (probe, path) in [("livenessProbe", "/livez"), ("readinessProbe", "/readyz")] {
        assert_eq!(text(&c, &[probe, "httpGet", "host"]), "127.0.0.1");
        assert_eq!(text(&c, &[probe, "httpGet", "port"]), port);
        assert_eq!(text(&c, &[probe, "httpGet", "path"]), path);
    }
    let notes = at(&ds, &["spec", "template", "metadata", "annotations"]);
    assert_eq!(text(notes, &["prometheus.io/scrape"]), "true");
    assert_eq!(text(notes, &["prometheus.io/port"]), port);
    assert_eq!(text(notes, &["prometheus.io/path"]), "/metrics");
    // The package's binary, with the ConfigMap's config.
    let words = |key: &str| -> Vec<String> {
        at(&c, &[key])
            .as_sequence()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(words("command"), ["/usr/bin/xdplb"]);
    assert_eq!(words("args"), ["run", "--config", "/etc/xdplb/xdplb.yaml"]);
    let mounts = at(&c, &["volumeMounts"]).as_sequence().unwrap();
    let mount = |path: &str| {
        let m = mounts
            .iter()
            .find(|m| text(m, &["mountPath"]) == path)
            .unwrap_or_else(|| panic!("nothing mounted at {path}"));
        let name = text(m, &["name"]);
        at(pod, &["volumes"])
            .as_sequence()
            .unwrap()
            .iter()
            .find(|v| text(v, &["name"]) == name)
            .unwrap_or_else(|| panic!("no volume {name}"))
            .clone()
    };
    assert_eq!(
        text(&mount("/etc/xdplb"), &["configMap", "name"]),
        "xdplb-config"
    );
    assert_eq!(
        text(&mount("/sys/fs/bpf"), &["hostPath", "path"]),
        "/sys/fs/bpf"
    );
    let token_dir = Path::new(&text(&config, &["admin", "token_file"]))
        .parent()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert!(at(&mount(&token_dir), &["secret"]).is_mapping());
    assert!(text(&config, &["pin_dir"]).starts_with("/sys/fs/bpf/"));
    // Not privileged: all capabilities dropped but the set, a read-only root.
    let sc = at(&c, &["securityContext"]);
    assert_eq!(at(sc, &["privileged"]), &Value::Bool(false));
    assert_eq!(at(sc, &["allowPrivilegeEscalation"]), &Value::Bool(false));
    assert_eq!(at(sc, &["readOnlyRootFilesystem"]), &Value::Bool(true));
    assert_eq!(
        at(sc, &["capabilities", "drop"]),
        &serde_yaml::from_str::<Value>("[ALL]").unwrap()
    );
    for key in ["requests", "limits"] {
        for what in ["cpu", "memory"] {
            assert!(
                at(&c, &["resources", key, what]).is_string(),
                "resources.{key}.{what}"
            );
        }
    }
}

/// The capabilities the DaemonSet adds, as `CAP_*` names.
fn daemonset_caps() -> BTreeSet<String> {
    at(&container(), &["securityContext", "capabilities", "add"])
        .as_sequence()
        .expect("capabilities.add: a list")
        .iter()
        .map(|c| format!("CAP_{}", c.as_str().unwrap()))
        .collect()
}

#[test]
fn the_daemonset_adds_the_capabilities_of_the_systemd_unit() {
    let unit_path = repo().join("deploy/systemd/xdplb.service");
    let unit = std::fs::read_to_string(&unit_path)
        .unwrap_or_else(|e| panic!("{}: {e}", unit_path.display()));
    let ambient: BTreeSet<String> = unit
        .lines()
        .filter_map(|l| l.trim().strip_prefix("AmbientCapabilities="))
        .flat_map(|v| v.split_whitespace().map(String::from))
        .collect();
    assert!(!ambient.is_empty(), "no AmbientCapabilities= in the unit");
    assert_eq!(daemonset_caps(), ambient, "daemonset.yaml vs xdplb.service");
}
