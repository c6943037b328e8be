//! The `xdplb trace` command: the config and the frames in, one record a
//! frame to the report, the frames that leave to `--out`.

use std::{
    io::{self, Write},
    path::Path,
};

use super::{
    Capture, CaptureError, FibMode, Frame, Input, Options, Totals, TraceError, Tracer, capture,
};
use crate::config::Config;

/// Reads the frames of `input`.
pub fn read_input(input: &Input) -> Result<Capture, CaptureError> {
    match input {
        Input::Pcap(path) => capture::read(path),
        Input::Hex(values) => Ok(Capture {
            frames: values
                .iter()
                .map(|v| capture::parse_hex(v))
                .collect::<Result<_, _>>()?,
            nanos: false,
        }),
    }
}

/// `xdplb trace`: reads the config and the frames, runs them, writes one
/// line per frame to `report` (and the output frames to `opts.out`).
pub fn run(opts: &Options, report: &mut dyn Write) -> Result<Totals, TraceError> {
    let cfg = Config::load(&opts.config)?;
    let capture = read_input(&opts.input)?;
    let mut writer = opts
        .out
        .as_deref()
        .map(|path| {
            capture::Writer::create(path, capture.nanos).map_err(|err| output_error(path, err))
        })
        .transpose()?;
    let mut tracer = Tracer::new(&cfg, opts.fib, opts.iface.as_deref())?;
    if !opts.json {
        let fib = match opts.fib {
            FibMode::Skip => "FIB lookup skipped: MACs untouched, --fib for the real one".into(),
            FibMode::Kernel => format!(
                "FIB lookups in this network namespace, from {}",
                tracer.ingress_name()
            ),
        };
        let n = capture.frames.len();
        writeln!(
            report,
            "-- {n} frame{} through xdplb ({fib})",
            if n == 1 { "" } else { "s" }
        )
        .map_err(TraceError::Report)?;
    }
    let mut totals = Totals::default();
    for (i, frame) in capture.frames.iter().enumerate() {
        let (record, out) = tracer.trace(i + 1, frame)?;
        totals.add(&record.verdict);
        let line = if opts.json {
            serde_json::to_string(&record).expect("a record serializes")
        } else {
            record.text()
        };
        writeln!(report, "{line}").map_err(TraceError::Report)?;
        if let Some(w) = writer.as_mut() {
            // What leaves: the rewrite (TX, REDIRECT) or, for the kernel,
            // the frame as it came (PASS). Dropped frames leave nothing.
            let data = match record.verdict.as_str() {
                "TX" | "REDIRECT" => Some(out),
                "PASS" => Some(frame.data.clone()),
                _ => None,
            };
            if let Some(data) = data {
                let cut = (frame.orig_len as usize).saturating_sub(frame.data.len());
                let written = Frame {
                    time: frame.time,
                    orig_len: (data.len() + cut) as u32,
                    data,
                };
                w.write(&written).map_err(|err| {
                    output_error(opts.out.as_deref().unwrap_or(Path::new("")), err)
                })?;
            }
        }
    }
    if let Some(w) = writer {
        w.finish()
            .map_err(|err| output_error(opts.out.as_deref().unwrap_or(Path::new("")), err))?;
    }
    if !opts.json {
        writeln!(report, "-- {totals}").map_err(TraceError::Report)?;
    }
    report.flush().map_err(TraceError::Report)?;
    Ok(totals)
}

fn output_error(path: &Path, err: io::Error) -> TraceError {
    TraceError::Output {
        path: path.into(),
        err,
    }
}
