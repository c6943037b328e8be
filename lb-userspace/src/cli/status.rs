//! `xdplb status` and `xdplb top`: the node (state, BGP) and the services
//! and backends as the daemon reports them, with packets per second
//! between two reads.

use std::{io::Write as _, time::Duration};

use xdplb::client::{self, ClientError, Rates};

use super::admin::AdminArgs;

/// `status`: the node head and the tables (rates unless `interval` is 0),
/// or JSON: the services as the API answers them (with rates added on
/// `rates`), unchanged for scripts; the node and BGP state in JSON are
/// `GET /api/v1/status`.
pub fn status(
    admin: &AdminArgs,
    json: bool,
    rates: bool,
    interval: Duration,
) -> Result<(), ClientError> {
    let client = admin.client(false)?;
    if json {
        let answer = if rates && !interval.is_zero() {
            let first = client.sample()?;
            std::thread::sleep(interval);
            let (second, mut answer) = client.sample_with_json()?;
            Rates::between(&first, &second).add_to_json(&mut answer);
            answer
        } else {
            client.services_json()?
        };
        println!(
            "{}",
            serde_json::to_string_pretty(&answer).expect("JSON prints")
        );
        return Ok(());
    }
    let first = client.sample()?;
    let (services, rates) = if interval.is_zero() {
        (first.services, None)
    } else {
        std::thread::sleep(interval);
        let second = client.sample()?;
        let rates = Rates::between(&first, &second);
        (second.services, Some(rates))
    };
    let node = client.node_status()?;
    let rollouts: String = client
        .rollouts()?
        .iter()
        .map(client::render_rollout_line)
        .collect();
    print!(
        "{}{rollouts}\n{}",
        client::render_node(&node),
        client::render_status(&services, rates.as_ref())
    );
    Ok(())
}

/// `top`: the status table with rates, redrawn in place.
pub fn top(admin: &AdminArgs, interval: Duration, count: Option<u64>) -> Result<(), ClientError> {
    let client = admin.client(false)?;
    let mut before = client.sample()?;
    let mut shown = 0;
    while count.is_none_or(|c| shown < c) {
        std::thread::sleep(interval);
        let after = client.sample()?;
        let rates = Rates::between(&before, &after);
        // Clear the screen and home the cursor, then the table.
        print!(
            "\x1b[2J\x1b[Hxdplb top: {} every {}\n\n{}",
            client.admin(),
            humantime::format_duration(interval),
            client::render_status(&after.services, Some(&rates))
        );
        let _ = std::io::stdout().flush();
        before = after;
        shown += 1;
    }
    Ok(())
}
