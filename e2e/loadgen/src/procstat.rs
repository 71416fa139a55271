//! CPU seconds and peak RSS of a server's whole process tree, read from /proc, so a multi-process
//! server (Dovecot) and a single-process one (pop3d) are measured the same way.

use std::collections::HashMap;
use std::fs;

fn ticks_per_second() -> f64 {
    100.0 // USER_HZ on Linux (x86_64, arm64)
}

/// utime+stime of a process, plus cutime+cstime (its waited-for children, which is how Dovecot's
/// short-lived workers get counted), in seconds; and RSS in KiB.
fn read(pid: u32) -> Option<(f64, f64, u64)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    let n = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // Fields after "(comm) ": state=0, ppid=1, ..., utime=11, stime=12, cutime=13, cstime=14.
    let own = (n(11) + n(12)) / ticks_per_second();
    let children = (n(13) + n(14)) / ticks_per_second();
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    Some((own, children, rss))
}

fn parent_of(pid: u32) -> Option<u32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 2..].split_whitespace().nth(1)?.parse().ok()
}

/// The root and all its live descendants.
fn tree(root: u32) -> Vec<u32> {
    let parents: HashMap<u32, u32> = fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|p| Some((p, parent_of(p)?)))
        .collect();
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() {
        let p = out[i];
        out.extend(parents.iter().filter(|(_, &pp)| pp == p).map(|(&c, _)| c));
        i += 1;
    }
    out
}

/// A snapshot: total CPU seconds (live processes + reaped children) and total RSS in KiB.
pub fn sample(roots: &[u32]) -> (f64, u64) {
    let mut cpu = 0.0;
    let mut rss = 0;
    for &root in roots {
        for (i, pid) in tree(root).into_iter().enumerate() {
            if let Some((own, children, r)) = read(pid) {
                // Reaped grandchildren are in their parent's cutime; count cutime only at the root
                // and for live descendants' own time, so nothing is counted twice.
                cpu += own + if i == 0 { children } else { 0.0 };
                rss += r;
            }
        }
    }
    (cpu, rss)
}
