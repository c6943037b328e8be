//! `xdplb`: the command line. Exit codes: 0 ok, 1 runtime failure (for
//! client commands: daemon unreachable, timeout, 5xx), 2 usage or invalid
//! config (for client commands: also a 4xx answer, with its message).
//!
//! This file holds the commands and their arguments and hands each to its
//! handler in `cli/` (a module of this binary, not of the `xdplb` library).

mod cli;

use std::{
    io::IsTerminal,
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    process::ExitCode,
    sync::LazyLock,
    time::Duration,
};

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use clap_complete::Shell;
use cli::{admin::AdminArgs, changes::BackendCommand, decap::DecapCommand, trace::TraceArgs};
use xdplb::{api_types::NodeState, config::Protocol};

#[derive(Parser)]
#[command(
    name = "xdplb",
    about = "XDP layer-4 load balancer",
    long_about = "XDP layer-4 load balancer.\n\n\
        `xdplb run --config FILE` is the daemon: it loads the XDP program, fills its maps \
        from the YAML config, attaches to the configured interfaces, health-checks the \
        backends and serves the admin API, the dashboard and Prometheus metrics \
        (admin.listen, default 127.0.0.1:9100). The package runs it as the systemd \
        service xdplb.service, as user xdplb with CAP_BPF, CAP_NET_ADMIN and \
        CAP_PERFMON, reading /etc/xdplb/xdplb.yaml. The other commands validate a \
        config, talk to a running daemon, or trace frames through the program offline.\n\n\
        Logs go to stderr (XDPLB_LOG=debug for more; plain text unless stderr is a terminal)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon in the foreground (needs root, or CAP_BPF, CAP_NET_ADMIN and
    /// CAP_PERFMON: see xdplb.service).
    Run {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate a config file: exit 0 if valid, 2 if not.
    Check {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Show services and backends: state, health and packets per second.
    ///
    /// Reads GET /api/v1/services twice, --interval apart, for the rates.
    /// With --json: prints the daemon's JSON answer (pretty) from one read,
    /// with no rates; add --rates to read twice and add packets_per_second
    /// and bytes_per_second to each service and backend.
    Status {
        /// Print the API's JSON instead of tables.
        #[arg(long)]
        json: bool,
        /// With --json: also measure rates (reads twice, --interval apart).
        #[arg(long, requires = "json")]
        rates: bool,
        /// Time between the two reads that give the rates ("1s", "500ms");
        /// 0 reads once and shows no rates.
        #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
        interval: Duration,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Change a backend at runtime: admin state or weight.
    Backend {
        #[command(subcommand)]
        command: BackendCommand,
    },
    /// This node's VIP announcements (BGP): drain withdraws every VIP while
    /// the node keeps forwarding whatever still reaches it (maintenance);
    /// ready announces the usable ones again. Not kept across restarts.
    Node {
        #[command(subcommand)]
        command: NodeCommand,
    },
    /// Canary rollouts: move a service's new flows to new backends step by
    /// step, rolled back at once if their signals breach a condition.
    Rollout {
        #[command(subcommand)]
        command: cli::rollout::RolloutCommand,
    },
    /// Make the daemon re-read its config file and apply the difference
    /// (same as SIGHUP). An invalid file changes nothing.
    Reload {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Live packets per second per service and backend, refreshed every
    /// --interval until Ctrl-C (or --count refreshes).
    Top {
        /// Time between refreshes ("1s", "500ms").
        #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
        interval: Duration,
        /// Stop after this many refreshes (default: run until interrupted).
        #[arg(long)]
        count: Option<u64>,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Which backend a flow goes to, and why (asks the running daemon: its
    /// flow table first, else the flow hash and the service's Maglev ring).
    Explain {
        /// Client address and port.
        src: SocketAddr,
        /// VIP and port.
        dst: SocketAddr,
        /// tcp or udp.
        #[arg(value_parser = cli::explain::parse_protocol)]
        protocol: Protocol,
        /// Print the API's JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// The backend side of tunnel mode (needs root): attach or detach the
    /// decapsulating XDP program on the interface tunnelled packets arrive
    /// on. It stays attached after this command exits (pinned link).
    Decap {
        #[command(subcommand)]
        command: DecapCommand,
    },
    /// Prepare this host as a dsr or tunnel backend (needs root): each VIP on `lo`,
    /// and for IPv4 VIPs arp_ignore=1 / arp_announce=2 so the host never
    /// answers ARP for them. Idempotent; --remove takes the VIPs off `lo`.
    BackendSetup {
        /// A VIP this backend serves in dsr mode (repeat for several).
        #[arg(long = "vip", required = true, value_name = "VIP")]
        vips: Vec<IpAddr>,
        /// Remove the VIPs from lo instead.
        #[arg(long)]
        remove: bool,
    },
    /// Run captured or crafted frames through the real XDP program, offline,
    /// and show what it does with each (needs root).
    ///
    /// Loads the program with --config into maps of its own (nothing is
    /// attached or pinned; a running daemon is not touched) and runs every
    /// frame through it with BPF_PROG_TEST_RUN, in order: the program's
    /// state carries from frame to frame, so a SYN creates the flow the
    /// next packets use and a backend's reply finds its NAT entry.
    ///
    /// Prints one line per frame: its number (from 1, as in Wireshark), the
    /// verdict (PASS, DROP, TX, REDIRECT, ABORTED; ERROR when the kernel
    /// refuses the frame), the service and backend chosen, and the headers
    /// of the frame as the program left it.
    ///
    /// Forwarding: by default the FIB lookup is skipped (the program gets
    /// FLAG_SKIP_FIB in its own config map: it answers TX with the MACs
    /// untouched) and the lookup it would make is shown. With --fib the
    /// lookup is the kernel's, in this network namespace: verdicts REDIRECT,
    /// TX and DROP (neigh_miss, fib_fail) are then the real ones.
    #[command(after_long_help = cli::trace::JSON_HELP)]
    Trace(TraceArgs),
    /// Print a shell completion script (the package installs them):
    /// `xdplb completions bash > /etc/bash_completion.d/xdplb`.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: Shell,
    },
    /// Print the man page, xdplb(1), in roff (`xdplb manpage | man -l -`);
    /// with --dir, write it and a page per command (xdplb-run.1, ...) there.
    Manpage {
        /// Write every page into this directory instead.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

/// `xdplb --version`: the crate version, the commit it was built from
/// (`-modified` when the tree had uncommitted changes) and, when built by
/// `cargo xtask package`, the Debian package's version.
static VERSION: LazyLock<String> = LazyLock::new(version);

fn version() -> String {
    let commit = git_version::git_version!(
        args = [
            "--always",
            "--dirty=-modified",
            "--abbrev=12",
            "--exclude=*"
        ],
        fallback = "unknown"
    );
    let mut line = format!("{} (commit {commit}", env!("CARGO_PKG_VERSION"));
    if let Some(package) = option_env!("XDPLB_PACKAGE_VERSION") {
        line.push_str(&format!(", package {package}"));
    }
    line.push(')');
    line
}

/// `xdplb manpage [--dir DIR]`.
fn manpage(dir: Option<&std::path::Path>) -> std::io::Result<()> {
    match dir {
        Some(dir) => clap_mangen::generate_to(command(), dir),
        None => clap_mangen::Man::new(command()).render(&mut std::io::stdout()),
    }
}

/// The command line's definition, with the version line.
fn command() -> clap::Command {
    Cli::command().version(VERSION.as_str())
}

#[derive(Subcommand)]
enum NodeCommand {
    /// Withdraw every VIP; keep forwarding.
    Drain {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Announce every usable VIP again.
    Ready {
        #[command(flatten)]
        admin: AdminArgs,
    },
}

fn main() -> ExitCode {
    let parsed = command()
        .try_get_matches()
        .and_then(|m| Cli::from_arg_matches(&m));
    let cli = match parsed {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("XDPLB_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        // Colour only on a terminal: journald and log files get plain text.
        .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
        .init();
    match cli.command {
        Command::Run { config } => cli::daemon::run(&config),
        Command::Check { config } => cli::daemon::check(&config),
        Command::Status {
            json,
            rates,
            interval,
            admin,
        } => cli::admin::exit(cli::status::status(&admin, json, rates, interval)),
        Command::Top {
            interval,
            count,
            admin,
        } => cli::admin::exit(cli::status::top(&admin, interval, count)),
        Command::Backend { command } => cli::admin::exit(cli::changes::backend(&command)),
        Command::Node { command } => {
            let (state, admin) = match command {
                NodeCommand::Drain { admin } => (NodeState::Drain, admin),
                NodeCommand::Ready { admin } => (NodeState::Ready, admin),
            };
            cli::admin::exit(cli::changes::node(state, &admin))
        }
        Command::Rollout { command } => cli::admin::exit(cli::rollout::rollout(command)),
        Command::Reload { admin } => cli::admin::exit(cli::changes::reload(&admin)),
        Command::Explain {
            src,
            dst,
            protocol,
            json,
            admin,
        } => cli::admin::exit(cli::explain::explain(&admin, src, dst, protocol, json)),
        Command::Decap { command } => cli::decap::decap(command),
        Command::BackendSetup { vips, remove } => cli::backend_setup::backend_setup(&vips, remove),
        Command::Trace(args) => cli::trace::trace(args),
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut command(), "xdplb", &mut std::io::stdout());
            ExitCode::SUCCESS
        }
        Command::Manpage { dir } => match manpage(dir.as_deref()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("xdplb: writing the man page: {e}");
                ExitCode::FAILURE
            }
        },
    }
}
