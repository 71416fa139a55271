//! Free space on the file system of a store that writes to a local disk (the embedded one). A
//! write that hits a full disk leaves redb unusable until it is reopened (and reopening needs room
//! itself), so new mail is refused early, with a temporary error the MTA retries, while reads and
//! deletions keep working.

use std::path::{Path, PathBuf};

/// The room a store keeps free: below `reserve` octets available on `dir`'s file system it takes
/// no more content.
#[derive(Debug, Clone)]
pub struct Reserve {
    pub dir: PathBuf,
    pub reserve: u64,
}

impl Reserve {
    /// Whether `octets` more can be written and `reserve` still be left. On an unreadable
    /// statvfs the write itself decides.
    pub fn leaves_room_after(&self, octets: u64) -> bool {
        available(&self.dir).map_or(true, |free| free >= self.reserve.saturating_add(octets))
    }
}

/// Bytes available to this (unprivileged or not) process on the file system holding `path`.
fn available(path: &Path) -> std::io::Result<u64> {
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
