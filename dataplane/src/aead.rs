//! AEAD ciphers for ESP, behind one small trait with two backends.
//!
//! ESP uses an AEAD with a 4-byte salt fixed per SA and an 8-byte explicit IV carried in every
//! packet (RFC 4106 for AES-GCM, RFC 7634 for ChaCha20-Poly1305): the nonce is `salt || IV`
//! and the key material handed over by IKE is `key || salt`.
//!
//! [`AeadKey`] is what the packet path holds. It dispatches to an [`AeadBackend`]: ring (the
//! default, the fastest measured here) or the RustCrypto `aes-gcm`/`chacha20poly1305` crates,
//! kept for differential tests. Both backends' key schedules live in a [`Scrubbed`] box that is
//! zeroed when the key is dropped, and no key byte ever appears in `Debug` output.

use std::fmt;
use std::mem::MaybeUninit;

use zeroize::{Zeroize, Zeroizing};

/// Length of the integrity check value (the AEAD tag) for every cipher here.
pub const TAG_LEN: usize = 16;
/// Length of the per-SA salt that prefixes every nonce.
pub const SALT_LEN: usize = 4;
/// Length of the explicit IV carried in each ESP packet.
pub const IV_LEN: usize = 8;
/// Length of the AEAD nonce, `salt || IV`.
pub const NONCE_LEN: usize = SALT_LEN + IV_LEN;

/// An ESP AEAD transform.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cipher {
    /// ENCR_AES_GCM_16 with a 128-bit key (RFC 4106).
    Aes128Gcm,
    /// ENCR_AES_GCM_16 with a 256-bit key (RFC 4106).
    Aes256Gcm,
    /// ENCR_CHACHA20_POLY1305 (RFC 7634).
    ChaCha20Poly1305,
}

impl Cipher {
    /// Every cipher, for tests and benchmarks that cover them all.
    pub const ALL: [Cipher; 3] = [
        Cipher::Aes128Gcm,
        Cipher::Aes256Gcm,
        Cipher::ChaCha20Poly1305,
    ];

    /// Length of the cipher key, without the salt.
    pub const fn key_len(self) -> usize {
        match self {
            Cipher::Aes128Gcm => 16,
            Cipher::Aes256Gcm | Cipher::ChaCha20Poly1305 => 32,
        }
    }

    /// Length of the key material IKE derives for this cipher: key followed by salt.
    pub const fn keymat_len(self) -> usize {
        self.key_len() + SALT_LEN
    }

    /// The name used in configuration files and status output (strongSwan's spelling).
    pub const fn name(self) -> &'static str {
        match self {
            Cipher::Aes128Gcm => "aes128gcm16",
            Cipher::Aes256Gcm => "aes256gcm16",
            Cipher::ChaCha20Poly1305 => "chacha20poly1305",
        }
    }
}

impl fmt::Display for Cipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which implementation performs the AEAD.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Backend {
    /// ring: assembly AES-GCM and ChaCha20-Poly1305. The default.
    #[default]
    Ring,
    /// The RustCrypto `aes-gcm` and `chacha20poly1305` crates.
    RustCrypto,
}

impl Backend {
    /// Every backend, for tests that must run once per backend.
    pub const ALL: [Backend; 2] = [Backend::Ring, Backend::RustCrypto];
}

/// Why a key could not be built or a packet could not be sealed or opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CryptoError {
    /// The key material has the wrong length for the cipher.
    KeyLength {
        /// Bytes expected (key plus salt).
        expected: usize,
        /// Bytes given.
        got: usize,
    },
    /// The tag did not verify: the packet was forged, corrupted or opened with the wrong key.
    Integrity,
    /// The backend refused to seal (input too long for the cipher).
    Seal,
}

impl fmt::Display for CryptoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CryptoError::KeyLength { expected, got } => {
                write!(
                    f,
                    "key material is {got} bytes, the cipher needs {expected}"
                )
            }
            CryptoError::Integrity => f.write_str("integrity check failed"),
            CryptoError::Seal => f.write_str("the AEAD refused to seal"),
        }
    }
}

impl std::error::Error for CryptoError {}

/// One AEAD implementation with its key schedule. Works in place with a detached tag so that
/// ESP can encrypt the payload where it lies in a packet buffer.
pub trait AeadBackend: Send + Sync {
    /// Encrypts `in_out` in place and returns the tag.
    fn seal_in_place(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        in_out: &mut [u8],
    ) -> Result<[u8; TAG_LEN], CryptoError>;

    /// Verifies `tag` over `aad` and the ciphertext in `in_out`, then decrypts it in place.
    /// On error the contents of `in_out` are unspecified.
    fn open_in_place(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        in_out: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), CryptoError>;
}

/// A heap cell whose bytes are zeroed after its value is dropped.
///
/// ring keeps expanded key schedules in plain structs with no `Drop`, so zeroizing the caller's
/// copy of the key material is not enough. The value lives in a `MaybeUninit` so that writing
/// zeros over it after `drop_in_place` never creates an invalid value.
pub struct Scrubbed<T> {
    cell: Box<MaybeUninit<T>>,
}

impl<T> Scrubbed<T> {
    /// Moves `value` into a scrubbed heap cell.
    pub fn new(value: T) -> Self {
        Scrubbed {
            cell: Box::new(MaybeUninit::new(value)),
        }
    }

    /// The value.
    #[inline]
    pub fn get(&self) -> &T {
        // SAFETY: `cell` is initialised in `new` and only de-initialised in `drop`, after which
        // `self` is never used again.
        unsafe { self.cell.assume_init_ref() }
    }
}

impl<T> Drop for Scrubbed<T> {
    fn drop(&mut self) {
        // SAFETY: the value was initialised in `new` and has not been dropped before; after
        // this line it is never read again, only overwritten with zeros below.
        unsafe { self.cell.assume_init_drop() };
        // `MaybeUninit<T>` is valid for any byte pattern, so zeroing it is sound.
        self.cell.zeroize();
    }
}

impl<T> fmt::Debug for Scrubbed<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Scrubbed(..)")
    }
}

/// The ring backend.
struct RingAead {
    key: Scrubbed<ring::aead::LessSafeKey>,
}

impl RingAead {
    fn new(cipher: Cipher, key: &[u8]) -> Result<Self, CryptoError> {
        let alg = match cipher {
            Cipher::Aes128Gcm => &ring::aead::AES_128_GCM,
            Cipher::Aes256Gcm => &ring::aead::AES_256_GCM,
            Cipher::ChaCha20Poly1305 => &ring::aead::CHACHA20_POLY1305,
        };
        let unbound =
            ring::aead::UnboundKey::new(alg, key).map_err(|_| CryptoError::KeyLength {
                expected: cipher.keymat_len(),
                got: key.len() + SALT_LEN,
            })?;
        Ok(RingAead {
            key: Scrubbed::new(ring::aead::LessSafeKey::new(unbound)),
        })
    }
}

impl AeadBackend for RingAead {
    #[inline]
    fn seal_in_place(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        in_out: &mut [u8],
    ) -> Result<[u8; TAG_LEN], CryptoError> {
        let nonce = ring::aead::Nonce::assume_unique_for_key(*nonce);
        let tag = self
            .key
            .get()
            .seal_in_place_separate_tag(nonce, ring::aead::Aad::from(aad), in_out)
            .map_err(|_| CryptoError::Seal)?;
        let mut out = [0u8; TAG_LEN];
        out.copy_from_slice(tag.as_ref());
        Ok(out)
    }

    #[inline]
    fn open_in_place(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        in_out: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), CryptoError> {
        let nonce = ring::aead::Nonce::assume_unique_for_key(*nonce);
        let tag = ring::aead::Tag::from(*tag);
        self.key
            .get()
            .open_in_place_separate_tag(nonce, ring::aead::Aad::from(aad), tag, in_out, 0..)
            .map(|_| ())
            .map_err(|_| CryptoError::Integrity)
    }
}

/// The RustCrypto backend.
enum RustCryptoAead {
    Aes128(Scrubbed<aes_gcm::Aes128Gcm>),
    Aes256(Scrubbed<aes_gcm::Aes256Gcm>),
    ChaCha(Scrubbed<chacha20poly1305::ChaCha20Poly1305>),
}

impl RustCryptoAead {
    fn new(cipher: Cipher, key: &[u8]) -> Result<Self, CryptoError> {
        use aes_gcm::KeyInit;
        let bad = |_| CryptoError::KeyLength {
            expected: cipher.keymat_len(),
            got: key.len() + SALT_LEN,
        };
        Ok(match cipher {
            Cipher::Aes128Gcm => RustCryptoAead::Aes128(Scrubbed::new(
                aes_gcm::Aes128Gcm::new_from_slice(key).map_err(bad)?,
            )),
            Cipher::Aes256Gcm => RustCryptoAead::Aes256(Scrubbed::new(
                aes_gcm::Aes256Gcm::new_from_slice(key).map_err(bad)?,
            )),
            Cipher::ChaCha20Poly1305 => RustCryptoAead::ChaCha(Scrubbed::new(
                chacha20poly1305::ChaCha20Poly1305::new_from_slice(key).map_err(bad)?,
            )),
        })
    }
}

impl AeadBackend for RustCryptoAead {
    fn seal_in_place(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        in_out: &mut [u8],
    ) -> Result<[u8; TAG_LEN], CryptoError> {
        use aes_gcm::AeadInPlace;
        let n = nonce.into();
        let tag = match self {
            RustCryptoAead::Aes128(k) => k.get().encrypt_in_place_detached(n, aad, in_out),
            RustCryptoAead::Aes256(k) => k.get().encrypt_in_place_detached(n, aad, in_out),
            RustCryptoAead::ChaCha(k) => k.get().encrypt_in_place_detached(n, aad, in_out),
        }
        .map_err(|_| CryptoError::Seal)?;
        Ok(tag.into())
    }

    fn open_in_place(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        in_out: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), CryptoError> {
        use aes_gcm::AeadInPlace;
        let n = nonce.into();
        let t = tag.into();
        match self {
            RustCryptoAead::Aes128(k) => k.get().decrypt_in_place_detached(n, aad, in_out, t),
            RustCryptoAead::Aes256(k) => k.get().decrypt_in_place_detached(n, aad, in_out, t),
            RustCryptoAead::ChaCha(k) => k.get().decrypt_in_place_detached(n, aad, in_out, t),
        }
        .map_err(|_| CryptoError::Integrity)
    }
}

/// The backend of an [`AeadKey`]: an enum rather than a `dyn AeadBackend`, so that the packet
/// path's call into ring is direct (no allocation, no vtable). Measured at 64 bytes against
/// the boxed trait object in the same criterion run, it made no difference beyond the noise.
enum AnyAead {
    Ring(RingAead),
    RustCrypto(RustCryptoAead),
}

/// An SA's AEAD: cipher key schedule plus salt. Build it from the `key || salt` material that
/// IKE derives (or a manual SA's configuration supplies).
pub struct AeadKey {
    cipher: Cipher,
    backend: Backend,
    salt: Zeroizing<[u8; SALT_LEN]>,
    aead: AnyAead,
}

impl AeadKey {
    /// Builds a key from `keymat = key || salt`.
    pub fn new(cipher: Cipher, backend: Backend, keymat: &[u8]) -> Result<Self, CryptoError> {
        if keymat.len() != cipher.keymat_len() {
            return Err(CryptoError::KeyLength {
                expected: cipher.keymat_len(),
                got: keymat.len(),
            });
        }
        let (key, salt_bytes) = keymat.split_at(cipher.key_len());
        let mut salt = Zeroizing::new([0u8; SALT_LEN]);
        salt.copy_from_slice(salt_bytes);
        let aead = match backend {
            Backend::Ring => AnyAead::Ring(RingAead::new(cipher, key)?),
            Backend::RustCrypto => AnyAead::RustCrypto(RustCryptoAead::new(cipher, key)?),
        };
        Ok(AeadKey {
            cipher,
            backend,
            salt,
            aead,
        })
    }

    /// The cipher.
    pub fn cipher(&self) -> Cipher {
        self.cipher
    }

    /// The backend.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The nonce for an explicit IV: `salt || iv`.
    #[inline]
    pub fn nonce(&self, iv: &[u8; IV_LEN]) -> [u8; NONCE_LEN] {
        let mut nonce = [0u8; NONCE_LEN];
        nonce[..SALT_LEN].copy_from_slice(&*self.salt);
        nonce[SALT_LEN..].copy_from_slice(iv);
        nonce
    }

    /// Encrypts `in_out` in place under `salt || iv` and returns the tag.
    #[inline]
    pub fn seal(
        &self,
        iv: &[u8; IV_LEN],
        aad: &[u8],
        in_out: &mut [u8],
    ) -> Result<[u8; TAG_LEN], CryptoError> {
        let nonce = self.nonce(iv);
        match &self.aead {
            AnyAead::Ring(k) => k.seal_in_place(&nonce, aad, in_out),
            AnyAead::RustCrypto(k) => k.seal_in_place(&nonce, aad, in_out),
        }
    }

    /// Verifies and decrypts `in_out` in place under `salt || iv`.
    #[inline]
    pub fn open(
        &self,
        iv: &[u8; IV_LEN],
        aad: &[u8],
        in_out: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), CryptoError> {
        let nonce = self.nonce(iv);
        match &self.aead {
            AnyAead::Ring(k) => k.open_in_place(&nonce, aad, in_out, tag),
            AnyAead::RustCrypto(k) => k.open_in_place(&nonce, aad, in_out, tag),
        }
    }
}

impl fmt::Debug for AeadKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AeadKey")
            .field("cipher", &self.cipher)
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrong_key_length_is_an_error() {
        for backend in Backend::ALL {
            for cipher in Cipher::ALL {
                let err = AeadKey::new(cipher, backend, &[0u8; 7]).unwrap_err();
                assert_eq!(
                    err,
                    CryptoError::KeyLength {
                        expected: cipher.keymat_len(),
                        got: 7
                    }
                );
            }
        }
    }

    #[test]
    fn debug_shows_no_key_bytes() {
        let keymat = [0xA5u8; 20];
        let key = AeadKey::new(Cipher::Aes128Gcm, Backend::Ring, &keymat).unwrap();
        let dbg = format!("{key:?}");
        assert!(!dbg.to_lowercase().contains("a5"), "{dbg}");
        assert!(!dbg.contains("165"), "{dbg}");
        assert!(dbg.contains("Aes128Gcm"));
    }

    #[test]
    fn backends_agree_and_tamper_fails() {
        for cipher in Cipher::ALL {
            let keymat: Vec<u8> = (0..cipher.keymat_len() as u8).collect();
            let a = AeadKey::new(cipher, Backend::Ring, &keymat).unwrap();
            let b = AeadKey::new(cipher, Backend::RustCrypto, &keymat).unwrap();
            let iv = [9u8; IV_LEN];
            let mut x = b"attack at dawn, attack at dusk".to_vec();
            let mut y = x.clone();
            let ta = a.seal(&iv, b"aad", &mut x).unwrap();
            let tb = b.seal(&iv, b"aad", &mut y).unwrap();
            assert_eq!((x.clone(), ta), (y, tb));
            let mut bad = x.clone();
            bad[3] ^= 1;
            assert_eq!(
                b.open(&iv, b"aad", &mut bad, &ta),
                Err(CryptoError::Integrity)
            );
            a.open(&iv, b"aad", &mut x, &ta).unwrap();
            assert_eq!(&x, b"attack at dawn, attack at dusk");
        }
    }

    #[test]
    fn scrubbed_runs_the_destructor() {
        use std::sync::Arc;
        let marker = Arc::new(());
        let s = Scrubbed::new(Arc::clone(&marker));
        assert_eq!(Arc::strong_count(&marker), 2);
        drop(s);
        assert_eq!(Arc::strong_count(&marker), 1);
    }
}
