//! The root check every root test starts with.

/// Panics unless the test runs as root: a root test never passes without doing its work.
///
/// Every test that calls this carries
/// `#[cfg_attr(skip_root_tests, ignore = "needs root (MIFSEC_SKIP_ROOT_TESTS=1)")]`.
/// `MIFSEC_SKIP_ROOT_TESTS=1 scripts/test.sh` builds the tests with `--cfg skip_root_tests`,
/// so libtest reports them as ignored, never as passed.
pub fn require_root() {
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return;
    }
    const NEEDS: &str = "this test needs root (CAP_NET_ADMIN, network namespaces, TUN, strongSwan)";
    if std::env::var("MIFSEC_SKIP_ROOT_TESTS").as_deref() == Ok("1") {
        panic!(
            "{NEEDS}. MIFSEC_SKIP_ROOT_TESTS=1 takes effect at build time: run \
             `MIFSEC_SKIP_ROOT_TESTS=1 scripts/test.sh` (it builds with RUSTFLAGS=\"--cfg \
             skip_root_tests\"), and give the test \
             #[cfg_attr(skip_root_tests, ignore = \"needs root (MIFSEC_SKIP_ROOT_TESTS=1)\")]."
        );
    }
    panic!("{NEEDS}. Run it as root, or skip it with MIFSEC_SKIP_ROOT_TESTS=1 scripts/test.sh.");
}
