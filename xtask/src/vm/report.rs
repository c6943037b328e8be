//! What the guest said: init.sh's markers on the console
//! (`VMTEST BOOT`, `VMTEST START name`, `VMTEST PASS|FAIL|SKIP name`,
//! `VMTEST DONE`) turned into per-test results and timings, and the
//! summary table over kernels.

use std::time::Duration;

use super::qemu::Line;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Pass,
    Fail,
    /// Started, never finished: the guest hung (timeout) or died.
    Unfinished,
    /// Skipped by the guest (the program did not load).
    Skipped,
    /// Never started.
    NotRun,
}

pub struct TestResult {
    pub name: String,
    pub status: Status,
    pub time: Option<Duration>,
    /// Index range of the test's console lines (START..end).
    pub lines: std::ops::Range<usize>,
}

pub struct KernelReport {
    pub label: String,
    pub release: String,
    /// From QEMU's start to init's first line (BIOS, kernel, initramfs).
    pub boot: Option<Duration>,
    pub total: Duration,
    pub tests: Vec<TestResult>,
    /// init.sh reached its end (no hang, no panic).
    pub done: bool,
    pub timed_out: bool,
    /// The guest's kernel panicked.
    pub panicked: bool,
    /// The test the first guest's kernel panicked in, when the tests from
    /// it on ran again in a new guest.
    pub retried: Option<String>,
}

impl KernelReport {
    pub fn passed(&self) -> bool {
        self.done && self.tests.iter().all(|t| t.status == Status::Pass)
    }

    /// The tests to run again after a guest kernel panic: from the one
    /// the guest died in to the end of `plan` (none if it did not panic, or
    /// this is already a retry).
    pub fn rerun_after_panic(&self, plan: &[String]) -> Option<Vec<String>> {
        if !self.panicked || self.retried.is_some() {
            return None;
        }
        let died = self
            .tests
            .iter()
            .position(|t| t.status == Status::Unfinished)?;
        Some(plan[died..].to_vec())
    }

    /// Takes the retry's results for the tests it ran.
    pub fn merge_retry(&mut self, retry: KernelReport) {
        self.retried = retry.tests.first().map(|t| t.name.clone());
        for t in retry.tests {
            if let Some(mine) = self.tests.iter_mut().find(|m| m.name == t.name) {
                *mine = t;
            }
        }
        self.done = retry.done;
        self.timed_out = retry.timed_out;
        self.total += retry.total;
    }
}

/// The words after "VMTEST " in a console line, if it is a marker (a
/// kernel message may precede it on the same line).
fn marker(text: &str) -> Option<Vec<&str>> {
    let at = text.find("VMTEST ")?;
    Some(text[at + 7..].split_whitespace().collect())
}

pub fn parse(plan: &[String], lines: &[Line]) -> (Option<Duration>, Vec<TestResult>, bool) {
    let mut tests: Vec<TestResult> = plan
        .iter()
        .map(|name| TestResult {
            name: name.clone(),
            status: Status::NotRun,
            time: None,
            lines: 0..0,
        })
        .collect();
    let (mut boot, mut done) = (None, false);
    let mut started: Option<(usize, Duration)> = None;
    for (i, line) in lines.iter().enumerate() {
        let Some(words) = marker(&line.text) else {
            continue;
        };
        let find = |tests: &[TestResult], name: &str| tests.iter().position(|t| t.name == name);
        match words.as_slice() {
            ["BOOT", ..] => boot = Some(line.at),
            ["DONE", ..] => done = true,
            ["START", name, ..] => {
                if let Some(t) = find(&tests, name) {
                    tests[t].status = Status::Unfinished;
                    tests[t].lines = i..lines.len();
                    started = Some((i, line.at));
                }
            }
            ["SKIP", name, ..] => {
                if let Some(t) = find(&tests, name) {
                    tests[t].status = Status::Skipped;
                }
            }
            [verdict @ ("PASS" | "FAIL"), name, ..] => {
                if let Some(t) = find(&tests, name) {
                    let (from, at) = started.take().unwrap_or((i, line.at));
                    tests[t].status = if *verdict == "PASS" {
                        Status::Pass
                    } else {
                        Status::Fail
                    };
                    tests[t].time = Some(line.at.saturating_sub(at));
                    tests[t].lines = from..i + 1;
                }
            }
            _ => {}
        }
    }
    (boot, tests, done)
}

pub fn secs(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 60.0 {
        format!("{s:.1}s")
    } else {
        format!("{}m{:02}s", d.as_secs() / 60, d.as_secs() % 60)
    }
}

/// One column per kernel, one row per test, plus boot and total times.
pub fn table(reports: &[KernelReport]) -> String {
    let mut rows: Vec<Vec<String>> = Vec::new();
    let mut header = vec!["".to_owned()];
    header.extend(
        reports
            .iter()
            .map(|r| format!("{} ({})", r.label, r.release)),
    );
    rows.push(header);
    let mut boot = vec!["boot".to_owned()];
    boot.extend(reports.iter().map(|r| r.boot.map_or("-".to_owned(), secs)));
    rows.push(boot);
    let names: Vec<&String> = reports
        .first()
        .map(|r| r.tests.iter().map(|t| &t.name).collect())
        .unwrap_or_default();
    for (i, name) in names.into_iter().enumerate() {
        let mut row = vec![name.clone()];
        for r in reports {
            let t = &r.tests[i];
            let time = t.time.map(|d| format!(" {}", secs(d))).unwrap_or_default();
            row.push(match t.status {
                Status::Pass => format!("PASS{time}"),
                Status::Fail => format!("FAIL{time}"),
                Status::Unfinished if r.timed_out => "TIMEOUT".to_owned(),
                Status::Unfinished => "DIED".to_owned(),
                Status::Skipped => "skipped".to_owned(),
                Status::NotRun => "not run".to_owned(),
            });
            if r.retried.as_ref() == Some(name) {
                let cell = row.last_mut().expect("just pushed");
                cell.push_str(" (rerun after a guest kernel panic)");
            }
        }
        rows.push(row);
    }
    let mut total = vec!["total".to_owned()];
    total.extend(reports.iter().map(|r| {
        let verdict = if r.passed() { "PASS" } else { "FAIL" };
        format!("{verdict} {}", secs(r.total))
    }));
    rows.push(total);

    let widths: Vec<usize> = (0..rows[0].len())
        .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    rows.iter()
        .map(|r| {
            let cells: Vec<String> = r
                .iter()
                .zip(&widths)
                .map(|(cell, w)| format!("{cell:<w$}"))
                .collect();
            format!("{}\n", cells.join("  ").trim_end())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(s: u64, text: &str) -> Line {
        Line {
            at: Duration::from_secs(s),
            text: text.to_owned(),
        }
    }

    #[test]
    fn markers_become_results() {
        let plan = ["load", "packet", "nat"].map(String::from).to_vec();
        let lines = [
            line(1, "SeaBIOS"),
            line(5, "VMTEST BOOT 6.1.0-56-amd64 uptime=3.1s cpus=2"),
            line(6, "VMTEST START load"),
            line(9, "[  8.1] veth: xyz VMTEST PASS load"),
            line(9, "VMTEST START packet"),
            line(20, "thread panicked"),
            line(30, "VMTEST FAIL packet exit=101"),
            line(31, "VMTEST START nat"),
        ];
        let (boot, tests, done) = parse(&plan, &lines);
        assert_eq!(boot, Some(Duration::from_secs(5)));
        assert!(!done);
        assert_eq!(tests[0].status, Status::Pass);
        assert_eq!(tests[0].time, Some(Duration::from_secs(3)));
        assert_eq!(tests[1].status, Status::Fail);
        assert_eq!(tests[1].lines, 4..7);
        assert_eq!(tests[2].status, Status::Unfinished);
    }

    fn report(plan: &[String], lines: &[Line], panicked: bool) -> KernelReport {
        let (boot, tests, done) = parse(plan, lines);
        KernelReport {
            label: "6.12".into(),
            release: "6.12.117".into(),
            boot,
            total: Duration::from_secs(60),
            tests,
            done,
            timed_out: false,
            panicked,
            retried: None,
        }
    }

    #[test]
    fn a_guest_kernel_panic_reruns_the_rest_once() {
        let plan = ["load", "operations", "virtio"].map(String::from).to_vec();
        let died = [
            line(1, "VMTEST START load"),
            line(2, "VMTEST PASS load"),
            line(3, "VMTEST START operations"),
            line(
                4,
                "Kernel panic - not syncing: Fatal exception in interrupt",
            ),
        ];
        let mut first = report(&plan, &died, true);
        assert!(!first.passed());
        let rest = first.rerun_after_panic(&plan).expect("a rerun");
        assert_eq!(rest, ["operations", "virtio"]);
        let again = [
            line(1, "VMTEST START operations"),
            line(5, "VMTEST PASS operations"),
            line(6, "VMTEST START virtio"),
            line(7, "VMTEST PASS virtio"),
            line(8, "VMTEST DONE uptime=8s"),
        ];
        first.merge_retry(report(&rest, &again, false));
        assert!(first.passed());
        assert_eq!(first.retried.as_deref(), Some("operations"));
        assert_eq!(first.rerun_after_panic(&plan), None, "only once");
        assert!(table(&[first]).contains("rerun after a guest kernel panic"));
        // A test failure or a hang is no reason to run again.
        assert_eq!(report(&plan, &died, false).rerun_after_panic(&plan), None);
    }
}
