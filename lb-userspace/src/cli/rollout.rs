//! `xdplb rollout start|status|pause|resume|abort`: canary rollouts, run
//! by the daemon (POST/GET /api/v1/rollouts): this command starts or
//! changes one and prints it.

use std::{net::SocketAddr, time::Duration};

use clap::Subcommand;
use xdplb::{
    api_types::RolloutRequest,
    client::{self, ClientError},
    rollout::conditions,
};

use super::admin::AdminArgs;

const START_HELP: &str = "\
Example: move new flows of service web to 198.18.1.13:8080 (in the config at
weight 0) in five steps held 30 s each, rolled back at once if it resets more
than 5% of its new connections or fails its health checks:

  xdplb rollout start web 198.18.1.13:8080 --steps 1,5,25,50,100 --every 30s \\
      --abort-if 'health=down,rst_ratio>0.05'

Each step gives the canaries that percent of the service's weights (so of new
flows); the other backends keep theirs, and get weight 0 at 100%. Existing
flows never move. The conditions are judged every second on the canaries'
signals since the step began (ratios once it has --min-flows new flows); on a
breach the weights go back to what they were at the start and the reason is
kept (xdplb rollout status). After the last step is held, the rollout is
completed and its weights stay (as admin changes: write them into the config
to keep them across restarts). A reload keeps a rollout going (one that
removes the service or a canary aborts it); a restart forgets it: the config's
weights are in force again. See docs/operations.md, \"Canary rollouts\".";

#[derive(Subcommand)]
pub enum RolloutCommand {
    /// Start a canary rollout of SERVICE to the CANARY backends.
    #[command(after_help = START_HELP)]
    Start {
        /// Service name.
        service: String,
        /// The new backends (ADDR:PORT, already in the service).
        #[arg(value_name = "CANARY", required = true)]
        canaries: Vec<SocketAddr>,
        /// The canaries' percent of new flows at each step: increasing,
        /// 1 to 100, the last 100.
        #[arg(long, value_delimiter = ',', default_value = "1,5,25,50,100")]
        steps: Vec<u32>,
        /// How long each step is held (1s to 24h).
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        every: Duration,
        /// Conditions that roll the canaries back, comma-separated:
        /// rst_ratio>X, unanswered_ratio>X, handshake_p99>DURATION,
        /// health=down [default: health=down,rst_ratio>0.05,unanswered_ratio>0.05,
        /// those the service can judge].
        #[arg(long, value_name = "CONDITIONS")]
        abort_if: Option<String>,
        /// New flows a step needs before ratios are judged.
        #[arg(long, default_value_t = conditions::DEFAULT_MIN_FLOWS)]
        min_flows: u64,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Show the rollouts (running, paused, or each service's last one).
    Status {
        /// Only this service's.
        service: Option<String>,
        /// Print the API's JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Pause: the step clock stands still, the weights stay.
    Pause {
        service: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Resume a paused rollout.
    Resume {
        service: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Abort: the weights go back to what they were at the start.
    Abort {
        service: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

pub fn rollout(command: RolloutCommand) -> Result<(), ClientError> {
    let (admin, service, action) = match command {
        RolloutCommand::Start {
            service,
            canaries,
            steps,
            every,
            abort_if,
            min_flows,
            admin,
        } => {
            let request = RolloutRequest {
                service,
                canaries,
                steps: Some(steps),
                every: Some(humantime::format_duration(every).to_string()),
                abort_if,
                min_flows: Some(min_flows),
            };
            let r = admin.client(true)?.start_rollout(&request)?;
            print!("{}", client::render_rollout(&r));
            return Ok(());
        }
        RolloutCommand::Status {
            service,
            json,
            admin,
        } => {
            let c = admin.client(false)?;
            let all = match &service {
                Some(s) => vec![c.rollout(s)?],
                None => c.rollouts()?,
            };
            if json {
                let v = serde_json::to_value(&all).expect("rollouts serialize");
                let v = if service.is_some() { v[0].clone() } else { v };
                println!("{}", serde_json::to_string_pretty(&v).expect("JSON prints"));
            } else if all.is_empty() {
                println!("no rollouts");
            } else {
                all.iter()
                    .for_each(|r| print!("{}", client::render_rollout(r)));
            }
            return Ok(());
        }
        RolloutCommand::Pause { service, admin } => (admin, service, "pause"),
        RolloutCommand::Resume { service, admin } => (admin, service, "resume"),
        RolloutCommand::Abort { service, admin } => (admin, service, "abort"),
    };
    let r = admin.client(true)?.rollout_action(&service, action)?;
    print!("{}", client::render_rollout(&r));
    Ok(())
}
