//! `xdplb trace`: frames run offline through the real XDP program.

use std::{io::ErrorKind, path::PathBuf, process::ExitCode};

use clap::Args;
use xdplb::trace::{FibMode, Input, Options, TraceError};

/// The end of `xdplb trace --help`: the fields of `--json` and the exit
/// codes.
pub const JSON_HELP: &str = "\
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
  drop_reason  DROP only: reject_limited | no_backend | snat_exhausted | neigh_miss |
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

#[derive(Args)]
#[command(group = clap::ArgGroup::new("frames").required(true).args(["pcap", "hex"]))]
pub struct TraceArgs {
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
    /// The interface frames arrive on, in this namespace [default: lo]
    /// (Linux 5.15 and later: older kernels take no ingress for a test run).
    #[arg(long, value_name = "IFACE")]
    iface: Option<String>,
}

impl TraceArgs {
    fn options(self) -> Options {
        Options {
            config: self.config,
            input: match self.pcap {
                Some(path) => Input::Pcap(path),
                None => Input::Hex(self.hex),
            },
            out: self.out,
            json: self.json,
            fib: if self.fib {
                FibMode::Kernel
            } else {
                FibMode::Skip
            },
            iface: self.iface,
        }
    }
}

pub fn trace(args: TraceArgs) -> ExitCode {
    let options = args.options();
    let stdout = std::io::stdout();
    let mut report = std::io::BufWriter::new(stdout.lock());
    match xdplb::trace::run(&options, &mut report) {
        Ok(_) => ExitCode::SUCCESS,
        // `xdplb trace ... | head`: not an error.
        Err(TraceError::Report(e)) if e.kind() == ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            drop(report);
            eprintln!("xdplb trace: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
