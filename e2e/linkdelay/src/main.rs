//! popfleet-linkdelay: delays every packet of one NFQUEUE queue by a fixed time, in arrival order.
//!
//!   iptables -t mangle -A PREROUTING -i veth0 -j NFQUEUE --queue-num 9   (why inbound: README.md)
//!   popfleet-linkdelay --queue 9 --delay-ms 30
//!
//! One thread: packets are received without blocking into a delay line, and ppoll sleeps on the
//! queue's socket (and a signalfd) until the next deadline. SIGTERM/SIGINT accept all held packets
//! and exit 0.

mod delay_line;
mod sys;

use std::io::ErrorKind;
use std::os::fd::AsRawFd;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;
use nfq::{Message, Queue, Verdict};

use delay_line::DelayLine;

/// Room for bursts while we are busy sending verdicts; see sys::set_recv_buffer.
const RECV_BUFFER_BYTES: i32 = 16 << 20;
/// Receives per wake-up before verdicts get a turn, so a flood cannot postpone due packets.
const RECV_BATCH: usize = 256;

#[derive(Parser)]
#[command(name = "popfleet-linkdelay", version, about = "Delay every packet of an NFQUEUE queue by a fixed time")]
struct Args {
    /// NFQUEUE queue number (the iptables rule's --queue-num).
    #[arg(long)]
    queue: u16,
    /// One-way delay in milliseconds; 0 accepts at once.
    #[arg(long)]
    delay_ms: u64,
    /// Kernel queue length. Packets held here count against it, and past it the kernel drops
    /// (fail-open is off), so it must cover delay x packet rate.
    #[arg(long, default_value_t = 8192)]
    max_queue: u32,
}

/// What the delayer did, for its exit line.
#[derive(Default)]
struct Counts {
    /// Verdicts sent.
    delayed: u64,
    /// Of those, verdicts the kernel refused because it had already dropped the packet (see `receive`).
    gone: u64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let mut counts = Counts::default();
    let result = run(&args, &mut counts);
    let (q, delayed, gone) = (args.queue, counts.delayed, counts.gone);
    match result {
        Ok(()) => {
            eprintln!(
                "popfleet-linkdelay: queue {q}: exiting, {delayed} packets delayed, {gone} of them dropped by the kernel first"
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("popfleet-linkdelay: queue {q}: {e:#} ({delayed} packets delayed, {gone} of them dropped by the kernel first)");
            ExitCode::FAILURE
        }
    }
}

fn open_queue(args: &Args) -> Result<Queue> {
    let q = args.queue;
    let mut queue = Queue::open().context("open netfilter netlink socket")?;
    queue.bind(q).with_context(|| format!("bind queue {q} (is another process bound to it?)"))?;
    // Verdicts are all we give, so the kernel sends metadata only, not copies of the packets.
    queue.set_copy_range(q, 0).context("set copy range")?;
    queue.set_queue_max_len(q, args.max_queue).context("set queue length")?;
    // Off: a delayer that cannot keep up shows as loss, not as a link that silently lost its delay.
    queue.set_fail_open(q, false).context("set fail-open off")?;
    // Without it the kernel segments GSO packets (and fills their checksums) before queueing them:
    // CPU spent for nothing, since we never look at the bytes.
    queue.set_recv_gso(q, true).context("set GSO")?;
    queue.set_nonblocking(true);
    Ok(queue)
}

fn run(args: &Args, counts: &mut Counts) -> Result<()> {
    // Before anything else, so a SIGTERM during setup is read by the loop rather than killing us.
    let signals = sys::termination_signals().context("signalfd")?;
    let mut queue = open_queue(args)?;
    let queue_fd = sys::find_nfqueue_fd().context("find the queue's socket")?;
    sys::set_recv_buffer(queue_fd, RECV_BUFFER_BYTES).context("set receive buffer")?;
    eprintln!(
        "popfleet-linkdelay: queue {}, delay {} ms, kernel queue length {}",
        args.queue, args.delay_ms, args.max_queue
    );

    let mut line = DelayLine::new(Duration::from_millis(args.delay_ms));
    loop {
        let timeout = line.next_deadline().map(|d| d.saturating_duration_since(Instant::now()));
        let [_, stop] = sys::wait_readable([queue_fd, signals.as_raw_fd()], timeout).context("ppoll")?;
        if stop {
            break;
        }
        // Received and held packets alike: nfq buffers messages past what the socket shows.
        receive(&mut queue, &mut line, RECV_BATCH, counts)?;
        for msg in line.due(Instant::now()) {
            accept(&mut queue, msg, counts)?;
        }
    }
    // Packets still in the kernel queue would be dropped when the socket closes; take them too.
    receive(&mut queue, &mut line, usize::MAX, counts)?;
    for msg in line.drain_all() {
        accept(&mut queue, msg, counts)?;
    }
    Ok(())
}

fn receive(queue: &mut Queue, line: &mut DelayLine<Message>, max: usize, counts: &mut Counts) -> Result<()> {
    let now = Instant::now();
    for _ in 0..max {
        match queue.recv() {
            Ok(msg) => line.push(now, msg),
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            // The kernel's answer to a verdict for a packet it no longer holds: when the interface a
            // held packet came in on goes down (a partition: `ip link set ... down`), the kernel drops
            // the queued packets of that interface, and our later verdicts for them come back as
            // ENOENT. The packet is lost as on a real cut link; the delayer must live on, or the
            // link stays dead after the heal (it did: the WAN partition test could not converge).
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => counts.gone += 1,
            Err(e) => return Err(e).context("receive from the queue"),
        }
    }
    Ok(())
}

fn accept(queue: &mut Queue, mut msg: Message, counts: &mut Counts) -> Result<()> {
    msg.set_verdict(Verdict::Accept);
    queue.verdict(msg).context("send verdict")?;
    counts.delayed += 1;
    Ok(())
}
