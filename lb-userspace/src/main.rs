//! `xdplb`: the command line. Exit codes: 0 ok, 1 runtime failure (for
//! client commands: daemon unreachable, timeout, 5xx), 2 usage or invalid
//! config (for client commands: also a 4xx answer, with its message).

use std::{net::SocketAddr, path::PathBuf, process::ExitCode, time::Duration};

use clap::{Args, Parser, Subcommand, builder::PossibleValuesParser, builder::TypedValueParser};
use xdplb::{
    api_types::BackendState,
    client::{self, Client, ClientError, Rates, Settings},
    config::Config,
};

#[derive(Parser)]
#[command(name = "xdplb", version, about = "XDP layer-4 load balancer")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon in the foreground (needs root).
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
        src: std::net::SocketAddr,
        /// VIP and port.
        dst: std::net::SocketAddr,
        /// tcp or udp.
        #[arg(value_parser = parse_protocol)]
        protocol: xdplb::config::Protocol,
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
        vips: Vec<std::net::IpAddr>,
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
    #[command(after_long_help = TRACE_JSON_HELP)]
    Trace(TraceArgs),
}

const TRACE_JSON_HELP: &str = "\
JSON lines (--json), one object per frame:
  index        frame number, from 1
  verdict      PASS | DROP | TX | REDIRECT | ABORTED | ERROR
  service      service that counted the packet, or null
  backend      its backend, \"ADDR:PORT\", or null
  mode         the service's mode: nat | dsr | tunnel, or null
  new_flow     true if the packet created a flow (a backend was selected)
  reply        true for a backend's reply translated back to the client
  pass_reason  PASS only: not_ip | stacked_vlan | malformed | fragment |
               not_tcp_udp | no_nat_entry | not_a_vip | passed
  drop_reason  DROP only: no_backend | snat_exhausted | neigh_miss |
               fib_fail | unknown
  fib          skipped | ok | no_neigh | failed, or null (not forwarded)
  fib_lookup   {dst, ifindex, iface}: the lookup made (or skipped)
  egress       interface the frame leaves by (fib ok), or null
  next_hop     {addr, iface}: neighbour to resolve (no_neigh), or null
  note         a remark (frame cut by the capture, FIB hint), or null
  error        ERROR only: why the kernel refused the frame
  in, out      the frame as it came and as the program left it (out is
               null for ERROR): {len, src_mac, dst_mac, vlan, ethertype,
               src, dst, proto, sport, dport, flags, fragment, inner,
               malformed, text}; flags in tcpdump's letters (S, F, R, P,
               . for ACK, U, E, W); inner: the packet inside an IP-in-IP
               tunnel; text: the one-line summary

Exit codes: 0 ok; 2 invalid config, capture (not pcap or pcapng, not
Ethernet, truncated, no packets), hex or interface; 1 anything else.";

#[derive(Subcommand)]
enum DecapCommand {
    /// Attach (or replace) the decapsulator on IFACE.
    Attach {
        iface: String,
        /// UDP port of GUE packets (the balancer's `gue_port`).
        #[arg(long, default_value_t = xdplb::config::DEFAULT_GUE_PORT)]
        gue_port: u16,
        /// XDP mode: auto (native, else generic), native or generic.
        #[arg(long, default_value = "auto", value_parser = parse_xdp_mode)]
        mode: xdplb::config::XdpModeSetting,
    },
    /// Detach it from IFACE.
    Detach { iface: String },
}

fn parse_protocol(s: &str) -> Result<xdplb::config::Protocol, String> {
    match s {
        "tcp" => Ok(xdplb::config::Protocol::Tcp),
        "udp" => Ok(xdplb::config::Protocol::Udp),
        _ => Err(format!("{s:?}: expected tcp or udp")),
    }
}

fn parse_xdp_mode(s: &str) -> Result<xdplb::config::XdpModeSetting, String> {
    use xdplb::config::XdpModeSetting::*;
    match s {
        "auto" => Ok(Auto),
        "native" => Ok(Native),
        "generic" => Ok(Generic),
        _ => Err(format!("{s:?}: expected auto, native or generic")),
    }
}

#[derive(Args)]
#[command(group = clap::ArgGroup::new("frames").required(true).args(["pcap", "hex"]))]
struct TraceArgs {
    /// The balancer's config (its services, backends, SNAT and limits).
    #[arg(long, short, value_name = "FILE")]
    config: PathBuf,
    /// Frames to run: a pcap or pcapng capture of Ethernet frames (tcpdump
    /// -w, tshark -w, scapy's wrpcap).
    #[arg(long, value_name = "IN.pcap")]
    pcap: Option<PathBuf>,
    /// A frame in hex, from the Ethernet header on (spaces and colons are
    /// ignored); repeat for several frames, run in order.
    #[arg(long, value_name = "FRAME")]
    hex: Vec<String>,
    /// Write the frames that leave as a pcap: the rewrite for TX and
    /// REDIRECT, the frame unchanged for PASS; dropped frames are left out.
    #[arg(long, value_name = "OUT.pcap")]
    out: Option<PathBuf>,
    /// Print JSON lines instead of text (fields: see --help).
    #[arg(long)]
    json: bool,
    /// Do the real FIB lookup (routes and neighbours of this network
    /// namespace; forwarding must be on for the ingress interface) instead
    /// of skipping it.
    #[arg(long)]
    fib: bool,
    /// The interface frames arrive on, in this namespace [default: lo].
    #[arg(long, value_name = "IFACE")]
    iface: Option<String>,
}

impl TraceArgs {
    fn options(self) -> xdplb::trace::Options {
        xdplb::trace::Options {
            config: self.config,
            input: match self.pcap {
                Some(path) => xdplb::trace::Input::Pcap(path),
                None => xdplb::trace::Input::Hex(self.hex),
            },
            out: self.out,
            json: self.json,
            fib: if self.fib {
                xdplb::trace::FibMode::Kernel
            } else {
                xdplb::trace::FibMode::Skip
            },
            iface: self.iface,
        }
    }
}

fn trace(args: TraceArgs) -> ExitCode {
    let options = args.options();
    let stdout = std::io::stdout();
    let mut report = std::io::BufWriter::new(stdout.lock());
    match xdplb::trace::run(&options, &mut report) {
        Ok(_) => ExitCode::SUCCESS,
        // `xdplb trace ... | head`: not an error.
        Err(xdplb::trace::TraceError::Report(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            ExitCode::SUCCESS
        }
        Err(e) => {
            drop(report);
            eprintln!("xdplb trace: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

#[derive(Subcommand)]
enum BackendCommand {
    /// Set a backend's admin state: ready (new flows), drain (keeps its
    /// flows, no new ones), maint (loses its flows too).
    State {
        /// Service name.
        service: String,
        /// Backend, as ADDR:PORT.
        #[arg(value_name = "ADDR:PORT")]
        backend: SocketAddr,
        #[arg(value_parser = PossibleValuesParser::new(["ready", "drain", "maint"])
            .map(|s| match s.as_str() {
                "ready" => BackendState::Ready,
                "drain" => BackendState::Drain,
                _ => BackendState::Maint,
            }))]
        state: BackendState,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Set a backend's weight (0: no new flows, like drain).
    Weight {
        /// Service name.
        service: String,
        /// Backend, as ADDR:PORT.
        #[arg(value_name = "ADDR:PORT")]
        backend: SocketAddr,
        weight: u32,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

/// Where the daemon's admin API is, and its token.
#[derive(Args)]
struct AdminArgs {
    /// The daemon's admin address [default: admin.listen of --config, else
    /// 127.0.0.1:9100].
    #[arg(long, value_name = "ADDR:PORT", value_parser = client::parse_admin)]
    admin: Option<String>,
    /// The daemon's config file: only admin.listen and admin.token_file are
    /// read from it.
    #[arg(long, short, value_name = "FILE")]
    config: Option<PathBuf>,
    /// File holding the bearer token for changes [default: admin.token_file
    /// of --config].
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
}

impl AdminArgs {
    /// A client of the daemon; `changes`: it sends the token (read now).
    fn client(&self, changes: bool) -> Result<Client, ClientError> {
        let settings = Settings::resolve(
            self.admin.as_deref(),
            self.config.as_deref(),
            self.token_file.as_deref(),
        )?;
        let token = if changes { settings.token()? } else { None };
        Ok(Client::new(&settings.admin, token))
    }
}

fn status(
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
    print!("{}", client::render_status(&services, rates.as_ref()));
    Ok(())
}

/// `top`: the status table with rates, redrawn in place.
fn top(admin: &AdminArgs, interval: Duration, count: Option<u64>) -> Result<(), ClientError> {
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
        use std::io::Write as _;
        let _ = std::io::stdout().flush();
        before = after;
        shown += 1;
    }
    Ok(())
}

fn backend(command: &BackendCommand) -> Result<(), ClientError> {
    let (service, backend) = match command {
        BackendCommand::State {
            service,
            backend,
            state,
            admin,
        } => (
            service,
            admin.client(true)?.set_state(service, *backend, *state)?,
        ),
        BackendCommand::Weight {
            service,
            backend,
            weight,
            admin,
        } => (
            service,
            admin.client(true)?.set_weight(service, *backend, *weight)?,
        ),
    };
    print!("{}", client::render_backend(service, &backend));
    Ok(())
}

/// Exit code of a client command; errors on one line.
fn client_exit(result: Result<(), ClientError>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xdplb: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
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
        .init();
    match cli.command {
        Command::Check { config } => {
            // Load errors name the file already; host checks do not.
            let checked = Config::load(&config)
                .map_err(|e| e.to_string())
                .and_then(|c| {
                    xdplb::config::check_host(&c)
                        .map(|()| c)
                        .map_err(|e| format!("{}: {e}", config.display()))
                });
            match checked {
                Ok(c) => {
                    println!("{}: ok ({} services)", config.display(), c.services.len());
                    ExitCode::SUCCESS
                }
                Err(message) => {
                    eprintln!("{message}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Status {
            json,
            rates,
            interval,
            admin,
        } => client_exit(status(&admin, json, rates, interval)),
        Command::Backend { command } => client_exit(backend(&command)),
        Command::Reload { admin } => client_exit(
            admin
                .client(true)
                .and_then(|c| c.reload())
                .map(|summary| print!("{}", client::render_reload(&summary))),
        ),
        Command::Top {
            interval,
            count,
            admin,
        } => client_exit(top(&admin, interval, count)),
        Command::Explain {
            src,
            dst,
            protocol,
            json,
            admin,
        } => client_exit(
            admin
                .client(false)
                .and_then(|c| c.explain(src, dst, protocol))
                .map(|e| {
                    if json {
                        println!(
                            "{}",
                            serde_json::to_string_pretty(&e).expect("serializable")
                        );
                    } else {
                        println!("{}", e.reason);
                    }
                }),
        ),
        Command::Trace(args) => trace(args),
        Command::Decap { command } => {
            let done = match command {
                DecapCommand::Attach {
                    iface,
                    gue_port,
                    mode,
                } => xdplb::decap::attach(&iface, gue_port, mode).map(|how| {
                    format!("decapsulator attached to {iface} in {how} (GUE port {gue_port})")
                }),
                DecapCommand::Detach { iface } => xdplb::decap::detach(&iface).map(|was| {
                    if was {
                        format!("decapsulator detached from {iface}")
                    } else {
                        format!("no decapsulator on {iface}")
                    }
                }),
            };
            match done {
                Ok(line) => {
                    println!("{line}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("xdplb: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::BackendSetup { vips, remove } => {
            let done = if remove {
                xdplb::backend_setup::dsr_teardown(&vips)
            } else {
                xdplb::backend_setup::dsr_setup(&vips)
            };
            match done {
                Ok(lines) if lines.is_empty() => {
                    println!("nothing to change");
                    ExitCode::SUCCESS
                }
                Ok(lines) => {
                    lines.iter().for_each(|l| println!("{l}"));
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("xdplb: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Run { config } => {
            let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
            match rt.block_on(xdplb::daemon::run(&config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("xdplb: {e:#}");
                    let invalid = e.downcast_ref::<xdplb::config::ConfigError>().is_some();
                    ExitCode::from(if invalid { 2 } else { 1 })
                }
            }
        }
    }
}
