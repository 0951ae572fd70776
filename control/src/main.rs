//! The `mifsec` command.

fn main() {
    eprintln!(
        "mifsec {}: the daemon is not built yet",
        env!("CARGO_PKG_VERSION")
    );
    std::process::exit(2);
}
