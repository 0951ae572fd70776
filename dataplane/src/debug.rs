//! Test hooks that exist only in debug builds.
//!
//! `MIFSEC_DEBUG_PANIC=<point>` makes the thread that reaches [`panic_point`] with that name
//! panic, so that tests can check what the daemon does when one of its threads dies (it
//! must exit with a clear message; see the daemon's panic hook). The points are `worker`
//! (each packet worker as it starts), `monitor` (the path monitor as it starts), `ike` (the
//! IKE thread as it starts), `netlink` (the daemon's interface monitor as it starts, when
//! an interface follows a device) and `control` (the control-socket thread at its first
//! request).
//! Release builds compile the check away and never read the variable.

/// The environment variable naming the point that panics.
pub const PANIC_VAR: &str = "MIFSEC_DEBUG_PANIC";

/// Panics if this is a debug build and `MIFSEC_DEBUG_PANIC` is `point`.
#[inline]
pub fn panic_point(point: &str) {
    #[cfg(debug_assertions)]
    if std::env::var_os(PANIC_VAR).is_some_and(|v| v == point) {
        panic!("{PANIC_VAR}={point}: panicking on purpose (a test hook of debug builds)");
    }
    #[cfg(not(debug_assertions))]
    let _ = point;
}
