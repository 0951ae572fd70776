//! The multi-interface extension's codec (`wire::mif`, docs/PROTOCOL.md sections 2 to 5)
//! and its pure path computation (`ike::sa::mif_paths`, section 4.2) on arbitrary bytes:
//! never a panic; whatever parses emits back to bytes that parse to the same value (an
//! interface's name only shortened, as invalid UTF-8 is shown lossily and cut to 32 octets);
//! `MifOperation::refusal` agrees with `parse`; a message's MIF notifies collect within
//! their limits; and the paths of any two announced tables stay within the limit, of one
//! family each, named uniquely and the same from both ends.
//!
//! Input: a selector byte, then the Notification Data (selector 0 to 6), or (7) a list of
//! notifies `type_low | len | data` collected as one message, then its interfaces paired
//! with themselves.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mifsec_control::ike::sa::mif_paths;
use mifsec_control::wire::{
    MifChild, MifInterface, MifInterfaceList, MifNotifies, MifOperation, MifRefusal, MifResult,
    MifRole, MifSupported, NotifyPayload, NotifyType, Payload,
};

fn interface(data: &[u8]) {
    let Ok(i) = MifInterface::parse(data) else {
        return;
    };
    assert!(i.name.len() <= 3 * 32);
    let back = MifInterface::parse(&i.emit()).expect("emitted interface parses");
    assert_eq!(
        (back.id, back.alternate, back.priority, back.addr),
        (i.id, i.alternate, i.priority, i.addr)
    );
    assert!(i.name.starts_with(&back.name) && back.name.len() <= 32);
}

fn collect(mut data: &[u8]) {
    let mut payloads = Vec::new();
    while let [low, len, rest @ ..] = data {
        let n = usize::from(*len).min(rest.len());
        let t = NotifyType::from_raw(NotifyType::MifSupported.to_raw() + u16::from(*low % 8));
        payloads.push(Payload::Notify(NotifyPayload::new(t, rest[..n].to_vec())));
        data = &rest[n..];
    }
    let Ok(m) = MifNotifies::collect(&payloads) else {
        return;
    };
    assert!(m.interfaces.len() <= 64 && m.results.len() <= 256);
    // Every interface active on one side, its order reversed on the other.
    let set: Vec<(u16, MifRole)> = m
        .interfaces
        .iter()
        .map(|i| {
            (
                i.id,
                if i.alternate {
                    MifRole::Standby
                } else {
                    MifRole::Active
                },
            )
        })
        .collect();
    let rev: Vec<(u16, MifRole)> = set.iter().rev().copied().collect();
    let max = m.supported.map_or(16, |s| usize::from(s.max_paths.min(64)));
    let a = mif_paths(&set, &rev, &m.interfaces, &m.interfaces, true, max);
    let b = mif_paths(&set, &rev, &m.interfaces, &m.interfaces, false, max);
    assert!(a.len() <= max && a.len() == b.len());
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.name, y.name);
        assert_eq!((x.local, x.remote), (y.remote, y.local));
        assert_eq!(x.local.is_ipv4(), x.remote.is_ipv4());
    }
    let mut names: Vec<&str> = a.iter().map(|p| p.name.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), a.len());
}

fuzz_target!(|data: &[u8]| {
    let [sel, d @ ..] = data else {
        return;
    };
    match sel % 8 {
        0 => {
            if let Ok(s) = MifSupported::parse(d) {
                assert_eq!(MifSupported::parse(&s.emit()), Ok(s));
            }
        }
        1 => interface(d),
        2 => {
            if let Ok(l) = MifInterfaceList::parse(d) {
                assert_eq!(MifInterfaceList::parse(&l.emit()), Ok(l));
            }
        }
        3 => {
            let parsed = MifOperation::parse(d);
            let refusal = MifOperation::refusal(d);
            assert_eq!(parsed.is_ok(), refusal.is_ok());
            if let Ok(o) = parsed {
                assert_eq!(refusal, Ok(o.clone()));
                assert_eq!(MifOperation::parse(&o.emit()), Ok(o));
            }
        }
        4 => {
            if let Ok(r) = MifResult::parse(d) {
                assert_eq!(MifResult::parse(&r.emit()), Ok(r));
            }
        }
        5 => {
            if let Ok(r) = MifRefusal::parse(d) {
                assert_eq!(MifRefusal::parse(&r.emit()), Ok(r));
            }
        }
        6 => {
            if let Ok(c) = MifChild::parse(d) {
                assert!(c.interfaces.len() <= 64);
                assert_eq!(MifChild::parse(&c.emit()), Ok(c));
            }
        }
        _ => collect(d),
    }
});
