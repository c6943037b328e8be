//! The state machine on a fake clock: steps held for `every`, pause and
//! resume, a breach rolled back within the step, the request's checks.

use super::*;

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

fn request(steps: &[u32], every: &str, abort_if: Option<&str>) -> RolloutRequest {
    RolloutRequest {
        service: "web".into(),
        canaries: vec!["198.18.1.13:8080".parse().unwrap()],
        steps: Some(steps.to_vec()),
        every: Some(every.into()),
        abort_if: abort_if.map(Into::into),
        min_flows: None,
    }
}

fn totals(flows: u64, resets: u64) -> Totals {
    Totals {
        flows,
        resets: Some(resets),
        unanswered: Some(0),
        handshakes: None,
    }
}

fn started(steps: &[u32], every: &str) -> (Rollout, Instant) {
    let spec = Spec::from_request(&request(steps, every, None)).unwrap();
    let t0 = Instant::now();
    (Rollout::start(spec, t0, totals(1000, 10), vec![]), t0)
}

#[test]
fn defaults_and_refusals() {
    let spec = Spec::from_request(&RolloutRequest {
        service: "web".into(),
        canaries: vec!["198.18.1.13:8080".parse().unwrap()],
        ..RolloutRequest::default()
    })
    .unwrap();
    assert_eq!(spec.steps, DEFAULT_STEPS);
    assert_eq!(spec.every, DEFAULT_EVERY);
    assert_eq!(spec.min_flows, 20);
    assert_eq!(conditions::format(&spec.conditions), conditions::DEFAULT);

    let refused = |r: RolloutRequest, says: &str| {
        let e = Spec::from_request(&r).unwrap_err();
        assert!(e.contains(says), "{r:?}: {e}");
    };
    refused(
        request(&[5, 1, 100], "1s", None),
        "steps 5,1,100 must increase",
    );
    refused(request(&[5, 5, 100], "1s", None), "must increase");
    refused(
        request(&[10, 50], "1s", None),
        "steps 10,50 must end at 100",
    );
    refused(request(&[0, 100], "1s", None), "step 0 is not a percent");
    refused(request(&[10, 101], "1s", None), "step 101 is not a percent");
    refused(request(&[], "1s", None), "steps  must end at 100");
    refused(
        request(&[100], "500ms", None),
        "every 500ms is out of range",
    );
    refused(
        request(&[100], "soon", None),
        "every \"soon\" is not a duration",
    );
    refused(
        request(&[100], "1s", Some("rst>0.1")),
        "bad condition \"rst>0.1\"",
    );
    refused(
        RolloutRequest {
            canaries: vec![],
            ..request(&[100], "1s", None)
        },
        "at least one canary",
    );
    let c = "198.18.1.13:8080".parse().unwrap();
    refused(
        RolloutRequest {
            canaries: vec![c, c],
            ..request(&[100], "1s", None)
        },
        "canary 198.18.1.13:8080 is given twice",
    );
    refused(
        RolloutRequest {
            min_flows: Some(0),
            ..request(&[100], "1s", None)
        },
        "min_flows must be at least 1",
    );
}

#[test]
fn each_step_is_held_for_every_then_the_last_completes() {
    let (mut r, t0) = started(&[10, 50, 100], "2s");
    let good = totals(1000, 10);
    assert_eq!(r.percent(), 10);
    assert_eq!(r.next_check(t0), Some(t0 + secs(1.0)));
    assert_eq!(r.check(t0 + secs(1.0), &good, None), Verdict::Hold);
    assert_eq!(
        r.next_check(t0 + secs(1.5)),
        Some(t0 + secs(2.0)),
        "the step's end"
    );
    assert_eq!(r.check(t0 + secs(2.0), &good, None), Verdict::Step(50));
    assert_eq!(r.in_step(t0 + secs(2.5)), secs(0.5));
    assert_eq!(r.check(t0 + secs(4.1), &good, None), Verdict::Step(100));
    assert_eq!(
        r.check(t0 + secs(5.0), &good, None),
        Verdict::Hold,
        "100% is held too"
    );
    assert_eq!(r.check(t0 + secs(6.1), &good, None), Verdict::Completed);
    r.end(RolloutState::Completed, None, t0 + secs(6.1));
    let v = r.view(t0 + secs(9.0), 100.0);
    assert_eq!(
        (v.state, v.step, v.step_number),
        (RolloutState::Completed, 100, 3)
    );
    assert_eq!(v.elapsed_ms, 6100, "counted to the end");
    assert_eq!(r.check(t0 + secs(10.0), &good, None), Verdict::Hold, "over");
    assert_eq!(r.next_check(t0 + secs(10.0)), None);
}

#[test]
fn a_pause_stops_the_step_clock_and_the_judging() {
    let (mut r, t0) = started(&[10, 100], "2s");
    r.pause(t0 + secs(1.5)).unwrap();
    assert!(
        r.pause(t0 + secs(1.6))
            .unwrap_err()
            .contains("paused already")
    );
    assert_eq!(r.next_check(t0 + secs(3.0)), None);
    let bad = totals(1100, 110);
    assert_eq!(r.check(t0 + secs(9.0), &bad, None), Verdict::Hold, "paused");
    assert_eq!(r.in_step(t0 + secs(9.0)), secs(1.5));
    r.resume(t0 + secs(10.0)).unwrap();
    assert!(
        r.resume(t0 + secs(10.0))
            .unwrap_err()
            .contains("running, not paused")
    );
    assert_eq!(r.in_step(t0 + secs(10.4)), secs(1.9));
    assert_eq!(
        r.check(t0 + secs(10.4), &totals(1000, 10), None),
        Verdict::Hold
    );
    assert_eq!(
        r.check(t0 + secs(10.5), &totals(1000, 10), None),
        Verdict::Step(100)
    );
    r.end(
        RolloutState::Aborted,
        Some("by the operator".into()),
        t0 + secs(11.0),
    );
    assert!(
        r.resume(t0 + secs(12.0))
            .unwrap_err()
            .contains("is over (aborted)")
    );
    assert!(!r.active());
}

#[test]
fn a_breach_rolls_back_within_the_step() {
    let (mut r, t0) = started(&[10, 50, 100], "30s");
    // 42 new flows since the step began, 35 of them reset.
    let v = r.check(t0 + secs(1.0), &totals(1042, 45), None);
    assert_eq!(
        v,
        Verdict::RollBack("rst_ratio 0.83 > 0.05 at step 10%, 1.0 s into it, 42 new flows".into())
    );
    // Too few flows to judge a ratio; health needs none.
    let (mut r, t0) = started(&[10, 100], "30s");
    assert_eq!(
        r.check(t0 + secs(1.0), &totals(1010, 20), None),
        Verdict::Hold
    );
    let view = r.view(t0 + secs(1.0), 9.9);
    assert_eq!((view.window.new_flows, view.window.resets), (10, Some(10)));
    let v = r.check(
        t0 + secs(2.0),
        &totals(1010, 20),
        Some("198.18.1.13:8080".into()),
    );
    assert!(
        matches!(&v, Verdict::RollBack(why) if why.starts_with("health=down (198.18.1.13:8080) at step 10%")),
        "{v:?}"
    );
    // A new step has a new window: the first step's resets are forgotten.
    let (mut r, t0) = started(&[10, 100], "2s");
    assert_eq!(
        r.check(t0 + secs(2.0), &totals(1015, 12), None),
        Verdict::Step(100)
    );
    assert_eq!(
        r.check(t0 + secs(3.0), &totals(1100, 14), None),
        Verdict::Hold
    );
}

#[test]
fn totals_sum_the_canaries_and_the_window_is_a_delta() {
    let sig = |resets, buckets: Vec<u64>| api_types::Signals {
        resets: Some(resets),
        unanswered: Some(1),
        handshakes: Some(Handshakes {
            count: buckets.iter().sum(),
            sum_us: 10,
            buckets,
        }),
        ..api_types::Signals::default()
    };
    let mut t = Totals::default();
    t.add(5, &sig(2, vec![1, 0]));
    t.add(7, &sig(3, vec![0, 2]));
    assert_eq!((t.flows, t.resets, t.unanswered), (12, Some(5), Some(2)));
    assert_eq!(t.handshakes.as_ref().unwrap().buckets, [1, 2]);
    let w = t.since(&Totals {
        flows: 2,
        resets: Some(1),
        unanswered: Some(0),
        handshakes: Some(Handshakes {
            count: 1,
            sum_us: 5,
            buckets: vec![1, 0],
        }),
    });
    assert_eq!(
        (w.new_flows, w.resets, w.unanswered),
        (10, Some(4), Some(2))
    );
    assert_eq!(w.handshakes.unwrap().buckets, [0, 2]);
    // A mode that sees no resets: none in the window either.
    let mut dsr = Totals::default();
    dsr.add(5, &api_types::Signals::default());
    assert_eq!(dsr.since(&Totals::default()).resets, None);
}
