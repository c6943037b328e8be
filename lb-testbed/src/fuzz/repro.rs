//! Reproducers: the config and the frames a failure needs, written to
//! files and printed as a ready `xdplb trace` command line. The frames are
//! the failing one and the earlier frames of the same flows in its epoch
//! (the program's state at the failure came from them), checked by
//! replaying them in a fresh program; failing that, every frame of the
//! epoch up to the failure.

use std::{
    collections::HashSet,
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};
use lb_common::FlowKey;
use pcap_file::{
    DataLink,
    pcap::{PcapHeader, PcapPacket, PcapWriter},
};

use super::{report::key_text, wire::hex};

/// One step of an epoch: a frame run, with the flow keys it touched, or a
/// flow the fuzzer aged.
#[derive(Clone, Debug)]
pub enum Entry {
    Frame {
        frame: Vec<u8>,
        keys: Vec<FlowKey>,
    },
    Aged(FlowKey),
    /// Flow sync: the flow handed over to peer N.
    HandedOver(FlowKey, u32),
}

/// Indexes of the entries of `log` (up to and with its last) that the
/// last one depends on: those sharing a flow key with it, or with one
/// that does, and so on back.
pub fn related(log: &[Entry]) -> Vec<usize> {
    let Some(Entry::Frame { keys, .. }) = log.last() else {
        return Vec::new();
    };
    let mut want: HashSet<FlowKey> = keys.iter().copied().collect();
    let mut picked = vec![log.len() - 1];
    for (i, e) in log.iter().enumerate().rev().skip(1) {
        let hit = match e {
            Entry::Frame { keys, .. } => keys.iter().any(|k| want.contains(k)),
            Entry::Aged(k) | Entry::HandedOver(k, _) => want.contains(k),
        };
        if hit {
            if let Entry::Frame { keys, .. } = e {
                want.extend(keys.iter().copied());
            }
            picked.push(i);
        }
    }
    picked.reverse();
    picked
}

/// A failure's files and text.
pub struct Repro<'a> {
    pub dir: &'a Path,
    pub name: String,
    pub yaml: &'a str,
    /// How commands name the xdplb binary.
    pub xdplb: &'a str,
    /// The namespace kept for `--fib` replays, if any.
    pub netns: Option<&'a str>,
}

impl Repro<'_> {
    /// Writes the config and the frames (pcap) and returns the text that
    /// tells how to replay them. `frames`: the entries picked; `verified`:
    /// whether replaying them in a fresh program failed the same way.
    pub fn write(&self, entries: &[Entry], verified: bool, rerun: &str) -> Result<String> {
        fs::create_dir_all(self.dir).with_context(|| format!("creating {}", self.dir.display()))?;
        let config = self.dir.join(format!("{}.yaml", self.name));
        fs::write(&config, self.yaml).with_context(|| format!("writing {}", config.display()))?;
        let frames: Vec<&Vec<u8>> = entries
            .iter()
            .filter_map(|e| match e {
                Entry::Frame { frame, .. } => Some(frame),
                _ => None,
            })
            .collect();
        let pcap = self.dir.join(format!("{}.pcap", self.name));
        write_pcap(&pcap, &frames)?;
        let mut t = String::new();
        let _ = writeln!(t, "  config: {}", config.display());
        let aged: Vec<String> = entries
            .iter()
            .filter_map(|e| match e {
                Entry::Aged(k) => Some(format!("aged {}", key_text(k))),
                Entry::HandedOver(k, p) => Some(format!("{} handed to peer {p}", key_text(k))),
                Entry::Frame { .. } => None,
            })
            .collect();
        let how = if verified {
            "replayed in a fresh program: fails the same way"
        } else {
            "NOT reproduced by replaying these frames in a fresh program"
        };
        let _ = writeln!(t, "  {} frame(s), {how}", frames.len());
        if !aged.is_empty() {
            let more = aged.len().saturating_sub(3);
            let _ = writeln!(
                t,
                "  the fuzzer changed {} flow(s) in between (aged, or handed to a flow sync peer), \
                 which xdplb trace cannot: {}{}",
                aged.len(),
                aged[..aged.len().min(3)].join("; "),
                if more > 0 {
                    format!("; {more} more")
                } else {
                    String::new()
                }
            );
        }
        let trace = format!("{} trace --config {}", self.xdplb, config.display());
        if frames.len() <= 16 {
            let hexes: String = frames
                .iter()
                .map(|f| format!(" --hex {}", hex(f)))
                .collect();
            let _ = writeln!(
                t,
                "  replay (FIB skipped: REDIRECT shows as TX):\n    {trace}{hexes}"
            );
            if let Some(ns) = self.netns {
                let _ = writeln!(
                    t,
                    "  with the real FIB, in the namespace kept for it (ip netns del {ns} when done):\n    \
                     ip netns exec {ns} {trace} --fib{hexes}"
                );
            }
        }
        let _ = writeln!(t, "  or: {trace} --pcap {}", pcap.display());
        let _ = write!(t, "  the whole run: {rerun}");
        Ok(t)
    }
}

fn write_pcap(path: &PathBuf, frames: &[&Vec<u8>]) -> Result<()> {
    let file = fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let header = PcapHeader {
        datalink: DataLink::ETHERNET,
        ..Default::default()
    };
    let mut w = PcapWriter::with_header(file, header)?;
    for (i, f) in frames.iter().enumerate() {
        let t = std::time::Duration::from_millis(i as u64);
        w.write_packet(&PcapPacket::new(t, f.len() as u32, f))?;
    }
    Ok(())
}
