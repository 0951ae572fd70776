//! The MS-CHAPv2 computations (RFC 2759) and the MSK of EAP-MSCHAPv2 (RFC 3079's master
//! keys, laid out as strongSwan's eap-mschapv2 does: receive key, send key, 32 zero
//! octets). SHA-1 from ring; MD4 and DES, which ring does not have, from the RustCrypto
//! `md4` and `des` crates, for exactly these two primitives of the protocol.

use des::Des;
use des::cipher::{BlockEncrypt, KeyInit};
use md4::{Digest, Md4};
use ring::digest::{Context, SHA1_FOR_LEGACY_USE_ONLY};
use zeroize::{Zeroize, Zeroizing};

/// The length of an MS-CHAPv2 challenge (authenticator's and peer's).
pub const CHALLENGE_LEN: usize = 16;
/// The NT-Response length.
pub const NT_RESPONSE_LEN: usize = 24;
/// The MSK of EAP-MSCHAPv2.
pub const MSK_LEN: usize = 64;

fn sha1(parts: &[&[u8]]) -> [u8; 20] {
    let mut c = Context::new(&SHA1_FOR_LEGACY_USE_ONLY);
    for p in parts {
        c.update(p);
    }
    let mut out = [0u8; 20];
    out.copy_from_slice(c.finish().as_ref());
    out
}

fn md4(data: &[u8]) -> Zeroizing<[u8; 16]> {
    let mut h = Md4::new();
    h.update(data);
    let mut out = Zeroizing::new([0u8; 16]);
    out.copy_from_slice(&h.finalize());
    out
}

/// `NtPasswordHash`: MD4 of the password in UTF-16LE (the password is taken as UTF-8, as
/// strongSwan does).
pub fn nt_password_hash(password: &[u8]) -> Zeroizing<[u8; 16]> {
    let text = Zeroizing::new(String::from_utf8_lossy(password).into_owned());
    let mut utf16 = Zeroizing::new(Vec::with_capacity(text.len() * 2));
    for u in text.encode_utf16() {
        utf16.extend_from_slice(&u.to_le_bytes());
    }
    md4(&utf16)
}

/// The user name part of an identity: what follows the last backslash
/// (`DOMAIN\user`), else the whole (RFC 2759 section 8.2).
pub fn username(identity: &[u8]) -> &[u8] {
    match identity.iter().rposition(|&b| b == b'\\') {
        Some(i) => &identity[i + 1..],
        None => identity,
    }
}

/// `ChallengeHash`: the first 8 octets of SHA-1(PeerChallenge | AuthenticatorChallenge |
/// UserName).
pub fn challenge_hash(peer: &[u8; 16], auth: &[u8; 16], user: &[u8]) -> [u8; 8] {
    let d = sha1(&[peer, auth, user]);
    let mut out = [0u8; 8];
    out.copy_from_slice(&d[..8]);
    out
}

/// A 56-bit key of 7 octets spread over the 8 octets DES takes (parity bits left 0; DES
/// ignores them).
fn des_key(k7: &[u8]) -> Zeroizing<[u8; 8]> {
    let mut bits = 0u64;
    for b in k7 {
        bits = (bits << 8) | u64::from(*b);
    }
    let mut out = Zeroizing::new([0u8; 8]);
    for (i, o) in out.iter_mut().enumerate() {
        *o = (((bits >> (49 - 7 * i)) & 0x7f) as u8) << 1;
    }
    bits.zeroize();
    out
}

/// `ChallengeResponse`: three DES encryptions of the challenge hash under the password
/// hash, zero-padded to 21 octets and cut in three keys.
pub fn challenge_response(challenge: &[u8; 8], password_hash: &[u8; 16]) -> [u8; 24] {
    let mut z = Zeroizing::new([0u8; 21]);
    z[..16].copy_from_slice(password_hash);
    let mut out = [0u8; 24];
    for i in 0..3 {
        let key = des_key(&z[i * 7..i * 7 + 7]);
        let cipher = Des::new_from_slice(&key[..]).expect("8-octet DES key");
        let mut block = des::cipher::Block::<Des>::clone_from_slice(challenge);
        cipher.encrypt_block(&mut block);
        out[i * 8..i * 8 + 8].copy_from_slice(&block);
    }
    out
}

/// `GenerateNTResponse`.
pub fn nt_response(
    auth_challenge: &[u8; 16],
    peer_challenge: &[u8; 16],
    user: &[u8],
    password_hash: &[u8; 16],
) -> [u8; 24] {
    let c = challenge_hash(peer_challenge, auth_challenge, username(user));
    challenge_response(&c, password_hash)
}

const MAGIC1: &[u8] = b"Magic server to client signing constant";
const MAGIC2: &[u8] = b"Pad to make it do more than one iteration";

/// `GenerateAuthenticatorResponse`: the 20 octets the authenticator proves itself with
/// (`S=` and their upper-case hex in the Success request).
pub fn authenticator_response(
    password_hash: &[u8; 16],
    nt_response: &[u8; 24],
    peer_challenge: &[u8; 16],
    auth_challenge: &[u8; 16],
    user: &[u8],
) -> [u8; 20] {
    let hash_hash = md4(password_hash);
    let d = sha1(&[&hash_hash[..], nt_response, MAGIC1]);
    let c = challenge_hash(peer_challenge, auth_challenge, username(user));
    sha1(&[&d, &c, MAGIC2])
}

const MPPE_MAGIC1: &[u8] = b"This is the MPPE Master Key";
const MPPE_MAGIC2: &[u8] =
    b"On the client side, this is the send key; on the server side, it is the receive key.";
const MPPE_MAGIC3: &[u8] =
    b"On the client side, this is the receive key; on the server side, it is the send key.";

/// The MSK: `MasterReceiveKey | MasterSendKey | 32 zero octets`, the 16-octet keys of
/// RFC 3079 section 3.4 from the server's point of view (strongSwan's layout, which
/// Windows and other RADIUS-backed gateways share).
pub fn msk(password_hash: &[u8; 16], nt_response: &[u8; 24]) -> Zeroizing<Vec<u8>> {
    let hash_hash = md4(password_hash);
    let mut master = Zeroizing::new(sha1(&[&hash_hash[..], nt_response, MPPE_MAGIC1]));
    let pad1 = [0u8; 40];
    let pad2 = [0xf2u8; 40];
    let mut recv = Zeroizing::new(sha1(&[&master[..16], &pad1, MPPE_MAGIC2, &pad2]));
    let mut send = Zeroizing::new(sha1(&[&master[..16], &pad1, MPPE_MAGIC3, &pad2]));
    let mut out = Zeroizing::new(vec![0u8; MSK_LEN]);
    out[..16].copy_from_slice(&recv[..16]);
    out[16..32].copy_from_slice(&send[..16]);
    master.zeroize();
    recv.zeroize();
    send.zeroize();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(s: &str) -> Vec<u8> {
        hex::decode(s.replace(' ', "")).unwrap()
    }

    /// RFC 2759 section 9.2 and RFC 3079 section 3.5.3.
    #[test]
    fn rfc_vectors() {
        let auth: [u8; 16] = h("5B5D7C7D7B3F2F3E3C2C602132262628").try_into().unwrap();
        let peer: [u8; 16] = h("21402324255E262A28295F2B3A337C7E").try_into().unwrap();
        let pw = nt_password_hash(b"clientPass");
        assert_eq!(&pw[..], &h("44EBBA8D5312B8D611474411F56989AE")[..]);
        assert_eq!(
            challenge_hash(&peer, &auth, b"User"),
            h("D02E4386BCE91226")[..]
        );
        let nt = nt_response(&auth, &peer, b"User", &pw);
        assert_eq!(
            nt[..],
            h("82309ECD8D708B5EA08FAA3981CD83544233114A3D85D6DF")[..]
        );
        assert_eq!(
            &md4(&pw[..])[..],
            &h("41C00C584BD2D91C4017A2A12FA59F3F")[..]
        );
        let a = authenticator_response(&pw, &nt, &peer, &auth, b"User");
        assert_eq!(
            hex::encode_upper(a),
            "407A5589115FD0D6209F510FE9C04566932CDA56"
        );
        // A domain prefix is not part of the user name hashed.
        assert_eq!(nt_response(&auth, &peer, b"DOM\\User", &pw), nt);
        let m = msk(&pw, &nt);
        // Master key FDECE3717A8C838CB388E527AE3CDD31 (RFC 3079 3.5.3); its 128-bit start
        // key there (8B7C...) is the second half of strongSwan's layout, the first its
        // other direction.
        assert_eq!(&m[..16], &h("D5F0E9521E3EA9589645E86051C82226")[..]);
        assert_eq!(&m[16..32], &h("8B7CDC149B993A1BA118CB153F56DCCB")[..]);
        assert_eq!(&m[32..], &[0u8; 32][..]);
    }
}
