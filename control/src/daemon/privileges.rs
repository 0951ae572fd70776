//! Dropping root: once the daemon has opened what needs it (TUN queues, outer sockets, the
//! IKE port-500 sockets, the control socket), it becomes an unprivileged user that keeps
//! only the capabilities it still uses, and can never gain more.
//!
//! Kept: CAP_NET_ADMIN (routes and addresses on the TUN, by rtnetlink requests, and large
//! socket buffers) and CAP_NET_RAW (SO_BINDTODEVICE for interfaces added later). They stay
//! in the permitted, effective, inheritable and ambient sets (the last two were for the
//! `ip` program, which the daemon no longer runs: it runs no program); the bounding set is
//! cut to them; no_new_privs is set, so no setuid or file-capability program can give
//! anything back. Port 500 is bound before the drop, so CAP_NET_BIND_SERVICE is not kept.
//!
//! Credentials are per thread in Linux (capsets and prctls are, glibc only broadcasts the
//! set*id calls), so the drop must happen while the process has one thread: every thread
//! started afterwards inherits the reduced credentials. [`drop_to`] refuses otherwise.
//! The order is the one that works: PR_SET_KEEPCAPS and the bounding set while still root,
//! then setgroups, setresgid, setresuid, then the capability sets, the ambient set and
//! no_new_privs.
//!
//! Paths the dropped user must still write (the control socket's directory, a state
//! directory) are handed to [`drop_to`], which gives them to the user first.

use std::ffi::CString;
use std::io;
use std::mem::MaybeUninit;
use std::path::PathBuf;

use caps::{CapSet, Capability, CapsHashSet};

/// The capabilities the daemon keeps after the drop.
pub const KEPT: [Capability; 2] = [Capability::CAP_NET_ADMIN, Capability::CAP_NET_RAW];

/// Users tried, in order, when the configuration names none.
pub const DEFAULT_USERS: [&str; 2] = ["mifsec", "nobody"];

/// A user to run as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Its name.
    pub name: String,
    /// Its uid.
    pub uid: libc::uid_t,
    /// Its primary group, the only group the daemon keeps.
    pub gid: libc::gid_t,
}

/// Looks `name` up in the user database (`getpwnam_r`); `None` if there is no such user.
pub fn lookup(name: &str) -> io::Result<Option<User>> {
    let cname = CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL in a user name"))?;
    let mut buf: Vec<libc::c_char> = vec![0; 4096];
    loop {
        let mut pw = MaybeUninit::<libc::passwd>::uninit();
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: `cname` is a NUL-terminated string; `pw` is writable memory for one
        // passwd; `buf` is writable for `buf.len()` bytes and outlives every use of the
        // strings getpwnam_r points into it (we read only the numeric fields); `result` is
        // a valid out-pointer.
        let rc = unsafe {
            libc::getpwnam_r(
                cname.as_ptr(),
                pw.as_mut_ptr(),
                buf.as_mut_ptr(),
                buf.len(),
                &mut result,
            )
        };
        if rc == libc::ERANGE && buf.len() < 1 << 20 {
            buf.resize(buf.len() * 2, 0);
            continue;
        }
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        if result.is_null() {
            return Ok(None);
        }
        // SAFETY: getpwnam_r succeeded and set `result` to `pw`, which it initialised.
        let pw = unsafe { pw.assume_init() };
        return Ok(Some(User {
            name: name.to_owned(),
            uid: pw.pw_uid,
            gid: pw.pw_gid,
        }));
    }
}

/// What the daemon does about privileges, decided from `[dataplane] user` before it opens
/// anything (so that a missing user fails at once).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Become this user.
    Drop(User),
    /// Stay as we are: `user = "root"` was asked for, or we do not run as root.
    Keep(String),
}

/// The plan for `configured` (`[dataplane] user`; `None`: the first of [`DEFAULT_USERS`]
/// that exists).
pub fn plan(configured: Option<&str>) -> Result<Plan, String> {
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if configured == Some("root") {
        return Ok(Plan::Keep(
            "user = \"root\": running as root with every privilege".into(),
        ));
    }
    if euid != 0 {
        return Ok(Plan::Keep(format!(
            "not started as root (uid {euid}): privileges left as they are"
        )));
    }
    let names: Vec<&str> = match configured {
        Some(n) => vec![n],
        None => DEFAULT_USERS.to_vec(),
    };
    for n in &names {
        match lookup(n) {
            Ok(Some(u)) if u.uid == 0 => {
                return Err(format!(
                    "dataplane.user {n:?} has uid 0; say user = \"root\" to keep root"
                ));
            }
            Ok(Some(u)) => return Ok(Plan::Drop(u)),
            Ok(None) => {}
            Err(e) => return Err(format!("looking up user {n:?}: {e}")),
        }
    }
    Err(match configured {
        Some(n) => format!("dataplane.user: no user named {n:?}"),
        None => format!(
            "none of the default users ({}) exists; set dataplane.user",
            DEFAULT_USERS.join(", ")
        ),
    })
}

/// Gives `path` to `user` (the owner only: a group set on purpose, the control group's,
/// stays); a directory with the regular files in it, one level deep, so that files created
/// there before the drop can be rewritten after it. Nothing else in it changes hands: not
/// the control socket (who may connect stays root's decision), not what a symbolic link
/// points to.
fn give(path: &std::path::Path, user: &User) -> Result<(), String> {
    let chown = |p: &std::path::Path| {
        std::os::unix::fs::lchown(p, Some(user.uid), None)
            .map_err(|e| format!("giving {} to {}: {e}", p.display(), user.name))
    };
    chown(path)?;
    let is_dir = std::fs::symlink_metadata(path).is_ok_and(|m| m.is_dir());
    if is_dir {
        let entries =
            std::fs::read_dir(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
        for e in entries.flatten() {
            let p = e.path();
            if std::fs::symlink_metadata(&p).is_ok_and(|m| m.is_file()) {
                chown(&p)?;
            }
        }
    }
    Ok(())
}

fn os(what: &str) -> String {
    format!("{what}: {}", io::Error::last_os_error())
}

fn threads() -> Option<usize> {
    let st = std::fs::read_to_string("/proc/self/status").ok()?;
    st.lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
}

/// Becomes `user`, keeping only [`KEPT`], after giving `chown` (paths the daemon must still
/// write: the control socket's directory, a state directory; a directory with the entries
/// in it) to the user (their group is left as it is).
/// Must be called while the process has a single thread.
pub fn drop_to(user: &User, chown: &[PathBuf]) -> Result<(), String> {
    if let Some(n) = threads().filter(|&n| n != 1) {
        return Err(format!(
            "{n} threads are running: privileges must be dropped before any thread starts"
        ));
    }
    for p in chown {
        give(p, user)?;
    }
    let kept: CapsHashSet = KEPT.iter().copied().collect();
    caps::securebits::set_keepcaps(true).map_err(|e| format!("PR_SET_KEEPCAPS: {e}"))?;
    for c in caps::runtime::thread_all_supported() {
        if !kept.contains(&c) {
            caps::drop(None, CapSet::Bounding, c)
                .map_err(|e| format!("dropping {c} from the bounding set: {e}"))?;
        }
    }
    let groups = [user.gid];
    // SAFETY: `groups` is a valid array of one gid_t for the duration of the call.
    if unsafe { libc::setgroups(groups.len(), groups.as_ptr()) } != 0 {
        return Err(os("setgroups"));
    }
    // SAFETY: setresgid(2) takes plain integers.
    if unsafe { libc::setresgid(user.gid, user.gid, user.gid) } != 0 {
        return Err(os("setresgid"));
    }
    // SAFETY: setresuid(2) takes plain integers. With PR_SET_KEEPCAPS the permitted set
    // survives; the effective set is cleared and set again below.
    if unsafe { libc::setresuid(user.uid, user.uid, user.uid) } != 0 {
        return Err(os("setresuid"));
    }
    // Permitted first (it bounds the others), then inheritable (it bounds the ambient set).
    for set in [CapSet::Permitted, CapSet::Inheritable, CapSet::Effective] {
        caps::set(None, set, &kept).map_err(|e| format!("setting the {set:?} set: {e}"))?;
    }
    for c in KEPT {
        caps::raise(None, CapSet::Ambient, c)
            .map_err(|e| format!("raising {c} in the ambient set: {e}"))?;
    }
    caps::securebits::set_keepcaps(false).map_err(|e| format!("PR_SET_KEEPCAPS: {e}"))?;
    // SAFETY: prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) takes plain integers.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(os("PR_SET_NO_NEW_PRIVS"));
    }
    // Root must be gone for good.
    // SAFETY: setuid(2) takes a plain integer; it must fail here.
    if unsafe { libc::setuid(0) } == 0 {
        return Err("setuid(0) still works after the drop".into());
    }
    // SAFETY: getuid(2) and getgid(2) have no preconditions and cannot fail.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    if (uid, gid) != (user.uid, user.gid) {
        return Err(format!("still uid {uid} gid {gid} after the drop"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_are_looked_up() {
        let root = lookup("root").unwrap().expect("root exists");
        assert_eq!((root.uid, root.gid), (0, 0));
        assert_eq!(lookup("no-such-user-mifsec").unwrap(), None);
        assert!(lookup("a\0b").is_err());
        assert!(matches!(plan(Some("root")), Ok(Plan::Keep(_))));
    }

    /// Needs root: the plan of a root process, and giving a directory away.
    #[test]
    #[cfg_attr(skip_root_tests, ignore = "needs root (MIFSEC_SKIP_ROOT_TESTS=1)")]
    fn root_plans_a_drop_and_gives_a_directory_with_its_entries() {
        // SAFETY: geteuid(2) has no preconditions and cannot fail.
        assert_eq!(unsafe { libc::geteuid() }, 0, "this test needs root");
        assert!(
            plan(Some("no-such-user-mifsec"))
                .unwrap_err()
                .contains("no user named")
        );
        let Ok(Plan::Drop(nobody)) = plan(Some("nobody")) else {
            panic!("nobody is a user to drop to");
        };
        assert_ne!(nobody.uid, 0);
        let dir = std::env::temp_dir().join(format!("mifsec-give-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("mark"), "1").unwrap();
        let outside = dir.with_extension("outside");
        std::fs::write(&outside, "x").unwrap();
        std::os::unix::fs::symlink(&outside, dir.join("link")).unwrap();
        let sock = std::os::unix::net::UnixListener::bind(dir.join("s.sock")).unwrap();
        give(&dir, &nobody).unwrap();
        use std::os::unix::fs::MetadataExt as _;
        let uid = |p: &std::path::Path| std::fs::symlink_metadata(p).unwrap().uid();
        assert_eq!(uid(&dir), nobody.uid);
        assert_eq!(uid(&dir.join("mark")), nobody.uid);
        assert_eq!(uid(&dir.join("link")), 0, "links stay");
        assert_eq!(uid(&outside), 0, "a link is never followed");
        assert_eq!(uid(&dir.join("s.sock")), 0, "a socket stays root's");
        drop(sock);
        // The group stays.
        assert_eq!(std::fs::metadata(&dir).unwrap().gid(), 0);
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::remove_file(&outside);
    }
}
