//! Free space on the embedded store's file system. A write that hits a full disk leaves redb
//! unusable until it is reopened (and reopening needs room itself), so new mail is refused early,
//! with a temporary error the MTA retries, while reads and deletions keep working.

use crate::config::{Config, StoreKind};

/// Bytes available to this (unprivileged or not) process on the file system holding `path`.
fn available(path: &std::path::Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `st` a valid out-pointer for the call.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // The field types differ between targets (u32 on some); u64::from is a no-op on this one.
    #[allow(clippy::useless_conversion)]
    Ok(u64::from(st.f_bavail) * u64::from(st.f_frsize))
}

/// Whether the store can take another recipient: room for one more message of the largest size
/// (capped at 64 MiB) above the reserve. What a transaction really writes is checked again as
/// each chunk's copies are written ([`room_for`]), so many recipients cannot write past it.
pub fn room_for_mail(config: &Config) -> bool {
    free_above_reserve(config, config.max_message_size.min(64 << 20))
}

/// Whether `bytes` of content can be written and still leave the reserve. redb is a
/// copy-on-write B-tree: pages a transaction replaces stay allocated until a later durable
/// commit frees them, so content takes up to about twice its size on disk for a while (a 60-copy
/// delivery on a small file system ran out of room at half the reserve without this factor).
/// Always true for Cassandra (its nodes manage their disks); on an unreadable statvfs the write
/// itself decides.
pub fn room_for(config: &Config, bytes: u64) -> bool {
    free_above_reserve(config, bytes.saturating_mul(2))
}

fn free_above_reserve(config: &Config, bytes: u64) -> bool {
    if config.store != StoreKind::Embedded {
        return true;
    }
    available(&config.data_dir).map_or(true, |free| free >= config.min_free_space.saturating_add(bytes))
}
