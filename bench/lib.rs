//! Shared helpers for mifsec's benchmarks: packet builders with the engine's headroom.

/// Headroom left in front of each packet, as the engine's receive buffers do.
pub const HEAD: usize = 64;

/// An IPv4/UDP packet of exactly `size` bytes (at least 28), with a valid header.
pub fn inner_ipv4(size: usize) -> Vec<u8> {
    let size = size.max(28);
    let mut p = vec![0u8; size];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(size as u16).to_be_bytes());
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&[10, 0, 0, 1]);
    p[16..20].copy_from_slice(&[10, 0, 0, 2]);
    for (i, b) in p[28..].iter_mut().enumerate() {
        *b = i as u8;
    }
    p
}
