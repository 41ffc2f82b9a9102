//! The one retry loop for transactions the kernel refused because another writer committed
//! first (`ERESTART` on the batch's generation id): every writer (apply, table deletion,
//! migration) rebuilds its transaction on fresh state and tries again, after a random,
//! growing backoff, a bounded number of times.

use crate::error::NetlinkError;
use std::time::Duration;

/// Attempts of a transaction when concurrent writers keep changing the ruleset.
pub(crate) const MAX_ATTEMPTS: u32 = 50;

/// Wait before attempt `attempt` (from 2) after the kernel refused a batch because another
/// writer committed first: random, growing to at most ~13 ms, so a writer that must read the
/// state again is not starved by one that keeps committing on state it remembers. Bounded in
/// all to well under a second over `MAX_ATTEMPTS`.
fn contention_backoff(attempt: u32) {
    let cap_us = 100u64 << attempt.min(7);
    // Jitter from the clock's low bits: no shared state, no dependency.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::from(d.subsec_nanos()))
        .unwrap_or(0);
    std::thread::sleep(Duration::from_micros(cap_us / 2 + nanos % (cap_us / 2 + 1)));
}

/// Run `attempt(n)` for n = 1, 2, ... until it does anything but fail with a refused
/// generation; [`NetlinkError::Contended`] after [`MAX_ATTEMPTS`].
pub(crate) fn until_not_refused<T>(
    mut attempt: impl FnMut(u32) -> Result<T, NetlinkError>,
) -> Result<T, NetlinkError> {
    for n in 1..=MAX_ATTEMPTS {
        match attempt(n) {
            Err(NetlinkError::Rejected { errno, .. }) if errno == libc::ERESTART => {
                contention_backoff(n + 1);
            }
            other => return other,
        }
    }
    Err(NetlinkError::Contended(MAX_ATTEMPTS))
}
