//! Network headers below ESP, in one place: [`ip`] (IPv4 and IPv6 header views, builders,
//! protocol numbers, the pseudo-header) and [`checksum`] (the Internet checksum). ESP itself
//! is [`crate::esp::wire`]; TCP and UDP fields, which only the offloads touch, are in
//! [`crate::offload`].

pub mod checksum;
pub mod ip;
