//! The few system calls nfq does not wrap, on raw descriptors.

use std::io;
use std::mem::{size_of, zeroed};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::ptr::null;
use std::time::Duration;

/// nfq 0.2.5, the newest release on crates.io, keeps its netlink socket private (AsRawFd exists
/// only on its unreleased master), and we need the descriptor to poll it with a timeout. It is found
/// by what it is: the process's only AF_NETLINK socket of protocol NETLINK_NETFILTER.
pub fn find_nfqueue_fd() -> io::Result<RawFd> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc/self/fd")? {
        let Ok(fd) = entry?.file_name().to_string_lossy().parse::<RawFd>() else { continue };
        if sockopt_int(fd, libc::SO_DOMAIN).ok() == Some(libc::AF_NETLINK)
            && sockopt_int(fd, libc::SO_PROTOCOL).ok() == Some(libc::NETLINK_NETFILTER)
        {
            found.push(fd);
        }
    }
    match found[..] {
        [fd] => Ok(fd),
        _ => Err(io::Error::other(format!("expected one netfilter netlink socket, found {found:?}"))),
    }
}

fn sockopt_int(fd: RawFd, name: libc::c_int) -> io::Result<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: value and len are live locals of the sizes passed.
    let rc = unsafe { libc::getsockopt(fd, libc::SOL_SOCKET, name, (&raw mut value).cast(), &mut len) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(value)
}

/// A burst of packets arrives as one netlink message each; if they overflow the socket the kernel
/// drops the packets, so the buffer is made larger than rmem_max allows (we run as root).
pub fn set_recv_buffer(fd: RawFd, bytes: libc::c_int) -> io::Result<()> {
    for name in [libc::SO_RCVBUFFORCE, libc::SO_RCVBUF] {
        // SAFETY: bytes is a live c_int and its size is passed.
        let rc = unsafe {
            libc::setsockopt(fd, libc::SOL_SOCKET, name, (&raw const bytes).cast(), size_of::<libc::c_int>() as _)
        };
        if rc == 0 {
            return Ok(());
        }
    }
    Err(io::Error::last_os_error())
}

/// Blocks SIGTERM and SIGINT and returns a signalfd that reads them, so a signal wakes the poll
/// instead of racing it (a handler that sets a flag can fire just before poll and be missed).
pub fn termination_signals() -> io::Result<OwnedFd> {
    // SAFETY: the set is initialised by sigemptyset before use; signalfd returns a new descriptor we own.
    unsafe {
        let mut set: libc::sigset_t = zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        let fd = libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(OwnedFd::from_raw_fd(fd))
    }
}

/// Waits until one of `fds` is readable or `timeout` passes; returns which are readable. ppoll
/// rather than poll because poll counts in whole milliseconds, and rounding up a 1 ms delay would
/// nearly double it.
pub fn wait_readable<const N: usize>(fds: [RawFd; N], timeout: Option<Duration>) -> io::Result<[bool; N]> {
    let mut pfds = fds.map(|fd| libc::pollfd { fd, events: libc::POLLIN, revents: 0 });
    let ts = timeout.map(|t| libc::timespec {
        tv_sec: t.as_secs().try_into().unwrap_or(libc::time_t::MAX),
        tv_nsec: t.subsec_nanos().into(),
    });
    let ts_ptr = ts.as_ref().map_or(null(), |t| t as *const libc::timespec);
    // SAFETY: pfds and ts outlive the call and the length passed is pfds' own.
    let rc = unsafe { libc::ppoll(pfds.as_mut_ptr(), N as libc::nfds_t, ts_ptr, null()) };
    if rc < 0 {
        let err = io::Error::last_os_error();
        return if err.kind() == io::ErrorKind::Interrupted { Ok([false; N]) } else { Err(err) };
    }
    // Errors and hang-ups count as readable: the next recv reports them.
    Ok(pfds.map(|p| p.revents != 0))
}
