//! What one scenario run reports, and the meter that takes the server's and the generator's
//! memory and CPU around the measured window.

use std::time::Instant;

use serde::Serialize;
use serde_json::Value;

use crate::stats::Summary;
use crate::sys::{self, ProcSample};

/// The server process over the measured window.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct ServerFigures {
    /// RSS when the window opened, MiB.
    pub rss_start_mib: f64,
    /// RSS when it closed, MiB.
    pub rss_end_mib: f64,
    /// Peak RSS of the process so far, MiB.
    pub rss_peak_mib: f64,
    /// CPU seconds (user + system) spent in the window.
    pub cpu_secs: f64,
    /// Of which user CPU seconds (the server's own code and libraries; the rest is the
    /// kernel).
    pub user_cpu_secs: f64,
    /// CPU use in the window, % of one core (200 % = both cores of the reference box).
    pub cpu_pct: f64,
    /// Threads at the end.
    pub threads: u64,
}

/// One scenario against one target.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `idle`, `rooms`, `relay`, `fanout`, `lambda-cold`.
    pub scenario: String,
    /// `voice`, `node`, `echo`, `lambda`.
    pub target: String,
    /// The knobs of the run.
    pub params: Value,
    /// The scenario's headline rate.
    pub throughput: f64,
    /// Its unit (`msg/s`, `ops/s`, `conn/s`, …).
    pub unit: String,
    /// The scenario's headline latency.
    pub latency: Summary,
    /// Server process figures.
    pub server: ServerFigures,
    /// `pinned` (server and generator each on its own core, `taskset`) or `unpinned`.
    pub pinning: String,
    /// Server CPU time per unit of the headline rate (per relayed signal, per operation), µs;
    /// `None` where the scenario has no such unit.
    pub server_cpu_us_each: Option<f64>,
    /// The generator's own CPU in the window, % of one core (it shares the 2 cores).
    pub generator_cpu_pct: f64,
    /// 1-minute load average before and after (other builds on the box show up here).
    pub load: (f64, f64),
    /// Refused requests, broken sockets, missing deliveries.
    pub errors: u64,
    /// Scenario-specific figures.
    pub extra: Value,
}

impl Report {
    /// One line for a terminal.
    pub fn line(&self) -> String {
        format!(
            "{:<7} {:<6} {:<8} {:>12.0} {:<7} cpu/each {:>6.1} µs  p50 {:>9.1} µs  p99 {:>9.1} µs  max {:>9.1} µs  n {:>8}  server rss {:>7.1} MiB cpu {:>5.0}% (user {:>3.0}%)  gen cpu {:>4.0}%  load {:.1}/{:.1}  errors {}",
            self.scenario,
            self.target,
            self.pinning,
            self.throughput,
            self.unit,
            self.server_cpu_us_each.unwrap_or(f64::NAN),
            self.latency.p50_us,
            self.latency.p99_us,
            self.latency.max_us,
            self.latency.n,
            self.server.rss_end_mib,
            self.server.cpu_pct,
            100.0 * self.server.user_cpu_secs / self.server.cpu_secs.max(1e-9),
            self.generator_cpu_pct,
            self.load.0,
            self.load.1,
            self.errors
        )
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Takes server and generator samples at the start of a window.
pub struct Meter {
    pid: u32,
    t0: Instant,
    server0: ProcSample,
    gen0: ProcSample,
    load0: f64,
}

impl Meter {
    /// Opens the window now.
    pub fn start(server_pid: u32) -> Self {
        Self {
            pid: server_pid,
            t0: Instant::now(),
            server0: sys::sample(server_pid).unwrap_or_default(),
            gen0: sys::sample(std::process::id()).unwrap_or_default(),
            load0: sys::loadavg(),
        }
    }

    /// Seconds since the window opened.
    pub fn elapsed(&self) -> f64 {
        self.t0.elapsed().as_secs_f64()
    }

    /// Closes the window: (server figures, generator CPU %, load before/after).
    pub fn finish(&self) -> (ServerFigures, f64, (f64, f64)) {
        let wall = self.elapsed().max(1e-9);
        let s1 = sys::sample(self.pid).unwrap_or_default();
        let g1 = sys::sample(std::process::id()).unwrap_or_default();
        let server = ServerFigures {
            rss_start_mib: mib(self.server0.rss_kib),
            rss_end_mib: mib(s1.rss_kib),
            rss_peak_mib: mib(s1.hwm_kib),
            cpu_secs: s1.cpu_secs - self.server0.cpu_secs,
            user_cpu_secs: s1.user_secs - self.server0.user_secs,
            cpu_pct: 100.0 * (s1.cpu_secs - self.server0.cpu_secs) / wall,
            threads: s1.threads,
        };
        let gen = 100.0 * (g1.cpu_secs - self.gen0.cpu_secs) / wall;
        (server, gen, (self.load0, sys::loadavg()))
    }
}
