//! Frames in and out of `xdplb trace`: captures (pcap with either byte
//! order and micro- or nanosecond timestamps, and pcapng) read with
//! `pcap-file`, frames given as hex, and the pcap of the output frames.

use std::{
    fs::File,
    io::{BufWriter, ErrorKind, Write},
    path::{Path, PathBuf},
    time::Duration,
};

use pcap_file::{
    DataLink, Endianness, PcapError, TsResolution,
    pcap::{PcapHeader, PcapPacket, PcapParser, PcapWriter},
    pcapng::{
        Block, PcapNgParser,
        blocks::interface_description::{InterfaceDescriptionBlock, InterfaceDescriptionOption},
    },
};

/// One captured frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Capture time (since the Unix epoch); zero for `--hex` frames.
    pub time: Duration,
    /// The captured bytes, from the Ethernet header on.
    pub data: Vec<u8>,
    /// Length on the wire; more than `data.len()` when the capture cut it
    /// (tcpdump -s).
    pub orig_len: u32,
}

impl Frame {
    pub fn new(data: Vec<u8>) -> Frame {
        Frame {
            time: Duration::ZERO,
            orig_len: data.len() as u32,
            data,
        }
    }
}

/// The frames of a capture file, in file order.
#[derive(Debug, Clone)]
pub struct Capture {
    pub frames: Vec<Frame>,
    /// Timestamps had nanosecond resolution (the output keeps it).
    pub nanos: bool,
}

/// Why a capture cannot be traced. All are the user's input: exit 2.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("{path}: {err}")]
    Read {
        path: PathBuf,
        #[source]
        err: std::io::Error,
    },
    #[error("{path}: empty file (no pcap header, no packets)")]
    Empty { path: PathBuf },
    #[error(
        "{path}: not a pcap or pcapng file (it starts with {start}); \
         write one with tcpdump -w, tshark -w or scapy's wrpcap"
    )]
    NotPcap { path: PathBuf, start: String },
    #[error(
        "{path}: link type {name} ({number}) is not Ethernet: xdplb trace runs Ethernet frames, \
         as an XDP program gets them (capture on the NIC itself, e.g. tcpdump -i eth0, not -i any)"
    )]
    NotEthernet {
        path: PathBuf,
        name: String,
        number: u32,
    },
    #[error("{path}: truncated: the file ends inside {what}")]
    Truncated { path: PathBuf, what: String },
    #[error("{path}: {what}: {detail}")]
    Corrupt {
        path: PathBuf,
        what: String,
        detail: String,
    },
    #[error("{path}: no packets")]
    NoPackets { path: PathBuf },
    #[error("--hex {value:?}: {detail}")]
    Hex { value: String, detail: String },
}

const PCAP_MAGICS: [[u8; 4]; 4] = [
    [0xa1, 0xb2, 0xc3, 0xd4],
    [0xd4, 0xc3, 0xb2, 0xa1],
    [0xa1, 0xb2, 0x3c, 0x4d],
    [0x4d, 0x3c, 0xb2, 0xa1],
];
const PCAPNG_MAGIC: [u8; 4] = [0x0a, 0x0d, 0x0d, 0x0a];

/// Reads a whole capture: pcap or pcapng (told apart by their first
/// bytes), Ethernet frames only.
pub fn read(path: &Path) -> Result<Capture, CaptureError> {
    let bytes = std::fs::read(path).map_err(|err| CaptureError::Read {
        path: path.into(),
        err,
    })?;
    parse(path, &bytes)
}

/// [`read`] on bytes already in memory (`path` only names them in errors).
pub fn parse(path: &Path, bytes: &[u8]) -> Result<Capture, CaptureError> {
    if bytes.is_empty() {
        return Err(CaptureError::Empty { path: path.into() });
    }
    let start = &bytes[..bytes.len().min(4)];
    let capture = if PCAP_MAGICS.iter().any(|m| m[..] == *start) {
        read_pcap(path, bytes)?
    } else if start == PCAPNG_MAGIC {
        read_pcapng(path, bytes)?
    } else if start.len() < 4
        && (PCAP_MAGICS.iter().any(|m| m.starts_with(start)) || PCAPNG_MAGIC.starts_with(start))
    {
        return Err(truncated(path, "the file header"));
    } else {
        return Err(CaptureError::NotPcap {
            path: path.into(),
            start: hex_start(bytes),
        });
    };
    if capture.frames.is_empty() {
        return Err(CaptureError::NoPackets { path: path.into() });
    }
    Ok(capture)
}

fn hex_start(bytes: &[u8]) -> String {
    let shown: Vec<String> = bytes.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("bytes {}", shown.join(" "))
}

fn truncated(path: &Path, what: impl Into<String>) -> CaptureError {
    CaptureError::Truncated {
        path: path.into(),
        what: what.into(),
    }
}

/// Maps a pcap-file error met while reading `what`.
fn read_error(path: &Path, what: String, err: PcapError) -> CaptureError {
    match err {
        PcapError::IncompleteBuffer => truncated(path, what),
        PcapError::IoError(e) if e.kind() == ErrorKind::UnexpectedEof => truncated(path, what),
        other => CaptureError::Corrupt {
            path: path.into(),
            what,
            detail: other.to_string(),
        },
    }
}

fn check_ethernet(path: &Path, link: DataLink) -> Result<(), CaptureError> {
    if link == DataLink::ETHERNET {
        return Ok(());
    }
    Err(CaptureError::NotEthernet {
        path: path.into(),
        name: format!("{link:?}"),
        number: u32::from(link),
    })
}

// The whole file is in memory: pcap-file's parsers read it in place (its
// readers would copy it through a buffer of 8 MB, and refuse a record
// larger than that as truncated).

fn read_pcap(path: &Path, bytes: &[u8]) -> Result<Capture, CaptureError> {
    let (mut rest, parser) =
        PcapParser::new(bytes).map_err(|e| read_error(path, "the pcap file header".into(), e))?;
    let header = parser.header();
    check_ethernet(path, header.datalink)?;
    let nanos = header.ts_resolution == TsResolution::NanoSecond;
    let mut frames = Vec::new();
    // Raw records: pcap-file's checked packets refuse an original length
    // above the snap length, which is just what `tcpdump -s 96` writes.
    while !rest.is_empty() {
        let n = frames.len() + 1;
        let raw;
        (rest, raw) = parser
            .next_raw_packet(rest)
            .map_err(|e| read_error(path, format!("packet {n}"), e))?;
        let sub_ns = if nanos {
            Some(raw.ts_frac)
        } else {
            raw.ts_frac.checked_mul(1000)
        };
        let time = match sub_ns {
            Some(ns) if ns < 1_000_000_000 => Duration::new(raw.ts_sec.into(), ns),
            _ => {
                return Err(CaptureError::Corrupt {
                    path: path.into(),
                    what: format!("packet {n}"),
                    detail: format!("timestamp fraction {} out of range", raw.ts_frac),
                });
            }
        };
        frames.push(Frame {
            time,
            orig_len: raw.orig_len.max(raw.incl_len),
            data: raw.data.into_owned(),
        });
    }
    Ok(Capture { frames, nanos })
}

/// Units per second of an interface's timestamps (`if_tsresol`, default
/// microseconds).
fn ts_units_per_sec(idb: &InterfaceDescriptionBlock) -> u128 {
    let resol = idb.options.iter().find_map(|o| match o {
        InterfaceDescriptionOption::IfTsResol(r) => Some(*r),
        _ => None,
    });
    match resol {
        None => 1_000_000,
        Some(r) if r & 0x80 == 0 => 10u128.saturating_pow(u32::from(r).min(30)),
        Some(r) => 1u128 << u32::from(r & 0x7f).min(100),
    }
}

fn read_pcapng(path: &Path, bytes: &[u8]) -> Result<Capture, CaptureError> {
    let (mut rest, mut parser) = PcapNgParser::new(bytes)
        .map_err(|e| read_error(path, "the pcapng section header".into(), e))?;
    let mut frames = Vec::new();
    let mut nanos = false;
    while !rest.is_empty() {
        let n = frames.len() + 1;
        let block;
        (rest, block) = parser
            .next_block(rest)
            .map_err(|e| read_error(path, format!("the block after packet {}", n - 1), e))?;
        // pcap-file hands the timestamp over as a count of the interface's
        // units (labelled nanoseconds); `units` turns it into time.
        let (interface, units, orig_len, data): (u32, Option<u128>, u32, Vec<u8>) = match block {
            Block::EnhancedPacket(p) => (
                p.interface_id,
                Some(p.timestamp.as_nanos()),
                p.original_len,
                p.data.into_owned(),
            ),
            Block::Packet(p) => (
                u32::from(p.interface_id),
                Some(u128::from(p.timestamp)),
                p.original_len,
                p.data.into_owned(),
            ),
            Block::SimplePacket(p) => (0, None, p.original_len, p.data.into_owned()),
            _ => continue,
        };
        let Some(idb) = parser.interfaces().get(interface as usize) else {
            return Err(CaptureError::Corrupt {
                path: path.into(),
                what: format!("packet {n}"),
                detail: format!("it names interface {interface}, which is not described"),
            });
        };
        check_ethernet(path, idb.linktype)?;
        let per_sec = ts_units_per_sec(idb);
        nanos |= per_sec > 1_000_000;
        let time = units.map_or(Duration::ZERO, |u| {
            let secs = u / per_sec;
            let ns = (u % per_sec) * 1_000_000_000 / per_sec;
            Duration::new(secs.min(u64::MAX as u128) as u64, ns as u32)
        });
        frames.push(Frame {
            time,
            orig_len: orig_len.max(data.len() as u32),
            data,
        });
    }
    Ok(Capture { frames, nanos })
}

/// A frame written as hex: whitespace, `:` and `-` between bytes are
/// ignored, as is a leading `0x`.
pub fn parse_hex(value: &str) -> Result<Frame, CaptureError> {
    let err = |detail: String| CaptureError::Hex {
        value: if value.len() > 40 {
            format!("{}...", &value[..value.floor_char_boundary(40)])
        } else {
            value.to_string()
        },
        detail,
    };
    let trimmed = value.trim();
    let body = trimmed
        .strip_prefix("0x")
        .or_else(|| trimmed.strip_prefix("0X"))
        .unwrap_or(trimmed);
    let digits: Vec<(usize, char)> = body
        .char_indices()
        .filter(|(_, c)| !(c.is_whitespace() || *c == ':' || *c == '-'))
        .collect();
    if let Some((i, c)) = digits.iter().find(|(_, c)| !c.is_ascii_hexdigit()) {
        return Err(err(format!("{c:?} at offset {i} is not a hex digit")));
    }
    if !digits.len().is_multiple_of(2) {
        return Err(err(format!(
            "odd number of hex digits ({}): every byte takes two",
            digits.len()
        )));
    }
    if digits.is_empty() {
        return Err(err("no bytes".into()));
    }
    let data = digits
        .chunks(2)
        .map(|pair| {
            let hi = pair[0].1.to_digit(16).unwrap_or_default();
            let lo = pair[1].1.to_digit(16).unwrap_or_default();
            (hi * 16 + lo) as u8
        })
        .collect();
    Ok(Frame::new(data))
}

/// Writes frames to a pcap file (Ethernet, this machine's byte order).
pub struct Writer {
    inner: PcapWriter<BufWriter<File>>,
}

impl Writer {
    /// Creates (or truncates) `path`; `nanos` picks nanosecond timestamps.
    pub fn create(path: &Path, nanos: bool) -> std::io::Result<Writer> {
        let file = BufWriter::new(File::create(path)?);
        let header = PcapHeader {
            // The largest frame XDP can hand us is far below this.
            snaplen: 262_144,
            datalink: DataLink::ETHERNET,
            ts_resolution: if nanos {
                TsResolution::NanoSecond
            } else {
                TsResolution::MicroSecond
            },
            endianness: if cfg!(target_endian = "big") {
                Endianness::Big
            } else {
                Endianness::Little
            },
            ..PcapHeader::default()
        };
        let inner = PcapWriter::with_header(file, header).map_err(pcap_io)?;
        Ok(Writer { inner })
    }

    pub fn write(&mut self, frame: &Frame) -> std::io::Result<()> {
        let orig_len = frame.orig_len.max(frame.data.len() as u32);
        self.inner
            .write_packet(&PcapPacket::new(frame.time, orig_len, &frame.data))
            .map_err(pcap_io)?;
        Ok(())
    }

    pub fn finish(self) -> std::io::Result<()> {
        self.inner.into_writer().flush()
    }
}

fn pcap_io(e: PcapError) -> std::io::Error {
    match e {
        PcapError::IoError(e) => e,
        other => std::io::Error::other(other.to_string()),
    }
}
