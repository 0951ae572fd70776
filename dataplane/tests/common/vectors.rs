//! Published known-answer vectors for ESP AEADs (sources named per vector).
//!
//! * `draft-mcgrew-gcm-test-01` ("Test Cases for the use of Galois/Counter Mode (GCM)
//!   and Galois Message Authentication Code (GMAC) in IPsec ESP", D. McGrew, March 2009),
//!   Section 4. The draft does not number its cases; "case N" below is the Nth test case
//!   in order of appearance (17 in all), with the draft page given per case. The draft
//!   publishes `nonce` (= salt || IV); it is split here into `salt` (first 4 bytes) and
//!   `iv` (last 8 bytes, which is also the IV carried in the draft's `packet`).
//!   Transcribed from the draft text and cross-checked byte for byte against the copy of
//!   the same vectors in OpenBSD's `regress/sys/crypto/gmac/gmac_test.c`.
//!   Not included: case 7 (AES-192-GCM, key feffe992...; not supported by `ring`, so it
//!   could not be verified here) and case 15 (AES-GMAC-ESP / RFC 4543, which is a
//!   different transform: empty plaintext, payload carried in the AAD).
//! * RFC 7634 ("ChaCha20, Poly1305, and Their Use in IKE and IPsec"), Appendix A (ESP
//!   example); its Appendix B IKEv2 example is [`RFC7634_IKEV2_VECTOR`]. Cross-checked
//!   against strongSwan's `src/libstrongswan/plugins/test_vectors/test_vectors/chacha20poly1305.c`.
//!
//! Every vector was verified by sealing `plaintext` with `ring` (nonce = salt || iv,
//! the given AAD) and comparing with `ciphertext_and_tag`.
//!
//! A note on the draft's ESP trailers: every included draft case ends in a structurally
//! valid RFC 4303 trailer (pad bytes 1, 2, ..., N, then pad length N, then next header;
//! total length a multiple of 4), but all of them use next header 1 (ICMP), even where
//! the payload is an IPv4 packet, and in cases 1, 6 and 9 the inner IPv4 total length
//! does not agree with where the trailer starts. Per-case comments give details.
#![allow(dead_code)]

/// One ESP AEAD known-answer case.
#[derive(Debug, Clone, Copy)]
pub struct EspAeadVector {
    /// Source and case, e.g. "draft-mcgrew-gcm-test-01 case 1".
    pub name: &'static str,
    /// `AesGcm` (AES-128 or AES-256, from the key length) or `ChaCha20Poly1305`.
    pub cipher: VectorCipher,
    /// Hex, the cipher key WITHOUT salt.
    pub key: &'static str,
    /// Hex, 4 bytes.
    pub salt: &'static str,
    /// Hex, 8-byte explicit IV.
    pub iv: &'static str,
    pub spi: u32,
    /// Full sequence number; for ESN cases the high 32 bits are set.
    pub seq: u64,
    /// True when the AAD is 12 bytes (SPI || seq hi || seq lo).
    pub esn: bool,
    /// Hex, the AAD exactly as published (8 or 12 bytes).
    pub aad: &'static str,
    /// Hex, the ESP payload as published (inner packet + padding + pad length + next header).
    pub plaintext: &'static str,
    /// Hex, encrypted payload followed by the 16-byte ICV.
    pub ciphertext_and_tag: &'static str,
}

/// The AEAD a vector uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VectorCipher {
    AesGcm,
    ChaCha20Poly1305,
}

pub const ESP_AEAD_VECTORS: &[EspAeadVector] = &[
    // draft-mcgrew-gcm-test-01 page 7: AES-128-GCM, 64-bit ESN: high half 0x87654321, low half 0x00000000.
    // Trailer: pad 01 02, pad length 2, next header 1: structurally valid RFC 4303 trailer
    // (pad bytes 1..N, 72 bytes, 4-byte aligned). Not self-consistent: the inner IPv4 header's
    // total length is 72, which counts the 4 trailer bytes, and next header 1 (ICMP) does not
    // match the IPv4/UDP inner packet (tunnel mode would be 4).
    EspAeadVector {
        name: "draft-mcgrew-gcm-test-01 case 1",
        cipher: VectorCipher::AesGcm,
        key: "4c80cdefbb5d10da906ac73c3613a634",
        salt: "2e443b68",
        iv: "4956ed7e3b244cfe",
        spi: 0x00004321,
        seq: 0x8765432100000000,
        esn: true,
        aad: "000043218765432100000000",
        plaintext: concat!(
            "45000048699a000080114db7c0a80102",
            "c0a801010a9bf15638d3010000010000",
            "00000000045f736970045f7564700373",
            "69700963796265726369747902646b00",
            "0021000101020201",
        ),
        ciphertext_and_tag: concat!(
            "fecf537e729d5b07dc30df528dd22b76",
            "8d1b98736696a6fd348509fa13ceac34",
            "cfa2436f14a3f3cf65925bf1f4a13c5d",
            "15b21e1884f5ff6247aeabb786b93bce",
            "61bc17d768fd9732459018148f6cbe72",
            "2fd04796562dfdb4",
        ),
    },
    // draft-mcgrew-gcm-test-01 page 8: AES-128-GCM, 32-bit sequence number.
    // Trailer: no padding, pad length 0, next header 1: structurally valid RFC 4303 trailer
    // (64 bytes, 4-byte aligned). The inner IPv4 total length (62) matches the payload, but
    // next header 1 (ICMP) does not match the IPv4/UDP inner packet (tunnel mode would be 4).
    EspAeadVector {
        name: "draft-mcgrew-gcm-test-01 case 2",
        cipher: VectorCipher::AesGcm,
        key: "feffe9928665731c6d6a8f9467308308",
        salt: "cafebabe",
        iv: "facedbaddecaf888",
        spi: 0x0000a5f8,
        seq: 0x0000000a,
        esn: false,
        aad: "0000a5f80000000a",
        plaintext: concat!(
            "4500003e698f000080114dccc0a80102",
            "c0a801010a980035002a2343b2d00100",
            "00010000000000000373697009637962",
            "65726369747902646b00000100010001",
        ),
        ciphertext_and_tag: concat!(
            "deb22cd9b07c72c16e3a65beeb8df304",
            "a5a5897d33ae530f1ba76d5d114d2a5c",
            "3de81827c10e9a4f51330d0eec416642",
            "cfbb85a5b47e48a4ec3b9ba95d918bd1",
            "83b70d3aa8bc6ee4c309e9d85a41ad4a",
        ),
    },
    // draft-mcgrew-gcm-test-01 page 9: AES-256-GCM, 32-bit sequence number.
    // Trailer: pad 01 02, pad length 2, next header 1: structurally valid RFC 4303 trailer
    // (52 bytes, 4-byte aligned). Inner IPv4 total length (48) matches the payload; next
    // header 1 (ICMP) does not match the IPv4/TCP inner packet (tunnel mode would be 4).
    EspAeadVector {
        name: "draft-mcgrew-gcm-test-01 case 3",
        cipher: VectorCipher::AesGcm,
        key: "abbccddef00112233445566778899aababbccddef00112233445566778899aab",
        salt: "11223344",
        iv: "0102030405060708",
        spi: 0x4a2cbfe3,
        seq: 0x00000002,
        esn: false,
        aad: "4a2cbfe300000002",
        plaintext: concat!(
            "4500003069a6400080062690c0a80102",
            "9389155e0a9e008b2dc57ee000000000",
            "7002400020bf0000020405b401010402",
            "01020201",
        ),
        ciphertext_and_tag: concat!(
            "ff425c9b724599df7a3bcd510194e00d",
            "6a78107f1b0b1cbf06efae9d65a5d763",
            "748a637985771d347f0545659f14e99d",
            "ef842d8eb335f4eecfdbf831824b4c49",
            "15956c96",
        ),
    },
    // draft-mcgrew-gcm-test-01 page 10: AES-128-GCM, 32-bit sequence number.
    // Trailer: pad 01 02, pad length 2, next header 1: structurally valid RFC 4303 trailer
    // (64 bytes, 4-byte aligned). Inner IPv4 total length (60) matches the payload; next
    // header 1 (ICMP) does not match the IPv4 inner packet (tunnel mode would be 4).
    EspAeadVector {
        name: "draft-mcgrew-gcm-test-01 case 4",
        cipher: VectorCipher::AesGcm,
        key: "00000000000000000000000000000000",
        salt: "00000000",
        iv: "0000000000000000",
        spi: 0x00000000,
        seq: 0x00000001,
        esn: false,
        aad: "0000000000000001",
        plaintext: concat!(
            "4500003c99c500008001cb7a40679318",
            "010101010800075c0200440061626364",
            "65666768696a6b6c6d6e6f7071727374",
            "75767761626364656667686901020201",
        ),
        ciphertext_and_tag: concat!(
            "4688daf2f973a392732909c331d56d60",
            "f694abaa414b5e7ff5fdcdfff5e9a284",
            "456476492719ffb64de7d9dca1e1d894",
            "bc3bd57873ed4d181d19d4d5c8c18af3",
            "f821d496eeb096e98ad2b69e4799c71d",
        ),
    },
    // draft-mcgrew-gcm-test-01 page 11: AES-128-GCM, 64-bit ESN 0x1010101010101010.
    // Trailer: pad 01 02, pad length 2, next header 1: structurally valid RFC 4303 trailer
    // (64 bytes, 4-byte aligned). Inner IPv4 total length (60) matches the payload; next
    // header 1 (ICMP) does not match the IPv4 inner packet (tunnel mode would be 4).
    EspAeadVector {
        name: "draft-mcgrew-gcm-test-01 case 5",
        cipher: VectorCipher::AesGcm,
        key: "3de09874b388e6491988d0c3607eae1f",
        salt: "57690e43",
        iv: "4e280000a2fca1a3",
        spi: 0x42f67e3f,
        seq: 0x1010101010101010,
        esn: true,
        aad: "42f67e3f1010101010101010",
        plaintext: concat!(
            "4500003c99c300008001cb7c40679318",
            "010101010800085c0200430061626364",
            "65666768696a6b6c6d6e6f7071727374",
            "75767761626364656667686901020201",
        ),
        ciphertext_and_tag: concat!(
            "fba2caa4853cf9f0f22cb10d86dd83b0",
            "fec75691cf1a04b00d1138ec9c357917",
            "65acbd8701ad79845bf9fe3fba487bc9",
            "1755e6662b4c8d0d1f5e22739530320a",
            "e0d731cc978ecafaeae88f00e80d6e48",
        ),
    },
    // draft-mcgrew-gcm-test-01 page 12: AES-128-GCM, Same key/nonce/SPI/ESN as case 5 (nonce reuse is deliberate in the draft).
    // Trailer: pad 01 02, pad length 2, next header 1: structurally valid RFC 4303 trailer
    // (28 bytes, 4-byte aligned). Not self-consistent: the inner IPv4 total length is 28,
    // which counts the 4 trailer bytes, and next header 1 (ICMP) does not match the IPv4
    // inner packet (tunnel mode would be 4).
    EspAeadVector {
        name: "draft-mcgrew-gcm-test-01 case 6",
        cipher: VectorCipher::AesGcm,
        key: "3de09874b388e6491988d0c3607eae1f",
        salt: "57690e43",
        iv: "4e280000a2fca1a3",
        spi: 0x42f67e3f,
        seq: 0x1010101010101010,
        esn: true,
        aad: "42f67e3f1010101010101010",
        plaintext: "4500001c42a200008001441f406793b6e00000020a00f5ff01020201",
        ciphertext_and_tag: concat!(
            "fba2ca845e5df9f0f22c3e6e86dd831e",
            "1fc65792cd1af9130e1379ed369f071f",
            "35e034be95f112e4e7d05d35",
        ),
    },
    // draft-mcgrew-gcm-test-01 page 13: AES-128-GCM, 64-bit ESN 0x0000000000000001.
    // Trailer: pad 01, pad length 1, next header 1: structurally valid RFC 4303 trailer
    // (76 bytes, 4-byte aligned). Inner IPv4 total length (73) matches the payload; next
    // header 1 (ICMP) does not match the IPv4/UDP inner packet (tunnel mode would be 4).
    EspAeadVector {
        name: "draft-mcgrew-gcm-test-01 case 8",
        cipher: VectorCipher::AesGcm,
        key: "abbccddef00112233445566778899aab",
        salt: "decaf888",
        iv: "cafedebaceface74",
        spi: 0x00000100,
        seq: 0x0000000000000001,
        esn: true,
        aad: "000001000000000000000001",
        plaintext: concat!(
            "4500004933ba00007f119106c3fb1d10",
            "c2b1d326c02831ce0035dd7b800302d5",
            "00004e20001e8c18d75b81dc91baa047",
            "6b91b924b280389d92c963bac046ec95",
            "9b6266c04722b14923010101",
        ),
        ciphertext_and_tag: concat!(
            "18a6fd42f72cbf4ab2a2ea901f73d814",
            "e3e7f243d95412e1c349c1d2fbec168f",
            "9190feebaf2cb01984e65863965d7472",
            "b79da345e0e780191f0d2f0e0f496c22",
            "6f2127b27db35724e7845d68651f57e6",
            "5f354f75ff17015769623436",
        ),
    },
    // draft-mcgrew-gcm-test-01 page 14: AES-256-GCM, 64-bit ESN 0x156f3126dd0db99b.
    // Trailer: no padding, pad length 0, next header 1: structurally valid RFC 4303 trailer
    // (40 bytes, 4-byte aligned). Not self-consistent: the inner IPv4 total length is 40, the
    // whole plaintext, so the "trailer" 00 01 is really the TCP urgent pointer; next header 1
    // (ICMP) does not match the IPv4/TCP inner packet either.
    EspAeadVector {
        name: "draft-mcgrew-gcm-test-01 case 9",
        cipher: VectorCipher::AesGcm,
        key: "abbccddef00112233445566778899aababbccddef00112233445566778899aab",
        salt: "73616c74",
        iv: "616e640169766563",
        spi: 0x17405e67,
        seq: 0x156f3126dd0db99b,
        esn: true,
        aad: "17405e67156f3126dd0db99b",
        plaintext: concat!(
            "45080028732c00004006e9f90a010612",
            "0a01038f06b88023dd6bafbecb712602",
            "50101f646d540001",
        ),
        ciphertext_and_tag: concat!(
            "f2d69ecdbd5a0d5b8d5ef38bad4da58d",
            "1f278fde98ef67549d524a3018d9a57f",
            "f4d3a31ce673119e451626c2415771e3",
            "b7eebca614c89b35",
        ),
    },
    // draft-mcgrew-gcm-test-01 page 15: AES-128-GCM, Same key/nonce/SPI/ESN as cases 5 and 6.
    // Trailer: pad 01, pad length 1, next header 1: structurally valid RFC 4303 trailer
    // (76 bytes, 4-byte aligned). Inner IPv4 total length (73) matches the payload; next
    // header 1 (ICMP) does not match the IPv4/UDP inner packet (tunnel mode would be 4).
    EspAeadVector {
        name: "draft-mcgrew-gcm-test-01 case 10",
        cipher: VectorCipher::AesGcm,
        key: "3de09874b388e6491988d0c3607eae1f",
        salt: "57690e43",
        iv: "4e280000a2fca1a3",
        spi: 0x42f67e3f,
        seq: 0x1010101010101010,
        esn: true,
        aad: "42f67e3f1010101010101010",
        plaintext: concat!(
            "45000049333e00007f119182c3fb1d10",
            "c2b1d326c02831ce0035cb458003025b",
            "000001e0001e8c18d65759d52284a035",
            "2c71475c8880391c764d6e5ee0496b32",
            "5ae270c03899493915010101",
        ),
        ciphertext_and_tag: concat!(
            "fba2cad12fc1f9f00d3cebf305410db8",
            "3d7784b607323d220f24b0a97d541828",
            "00cadb0f68d99ef0e0c0c89ae9bea888",
            "4e52d65bc1afd0740f742444747b5b39",
            "ab533163aad4550ee5160975cdb608c5",
            "769189609763b8e18caa81e2",
        ),
    },
    // draft-mcgrew-gcm-test-01 page 16: AES-256-GCM, Same key/nonce/SPI/ESN as case 9.
    // Trailer: pad 01 02, pad length 2, next header 1: structurally valid RFC 4303 trailer
    // (72 bytes, 4-byte aligned). The 68-byte payload is ASCII text, not an ICMP message,
    // so next header 1 is nominal only.
    EspAeadVector {
        name: "draft-mcgrew-gcm-test-01 case 11",
        cipher: VectorCipher::AesGcm,
        key: "abbccddef00112233445566778899aababbccddef00112233445566778899aab",
        salt: "73616c74",
        iv: "616e640169766563",
        spi: 0x17405e67,
        seq: 0x156f3126dd0db99b,
        esn: true,
        aad: "17405e67156f3126dd0db99b",
        plaintext: concat!(
            "636973636f0172756c65730174686501",
            "6e6574776501646566696e6501746865",
            "746563686e6f6c6f6769657301746861",
            "7477696c6c01646566696e65746f6d6f",
            "72726f7701020201",
        ),
        ciphertext_and_tag: concat!(
            "d4b7ed86a1777f2ea13d6973d324c69e",
            "7b43f826fb56831226508bebd2dceb18",
            "d0a6df10e5487df074113e14c641024e",
            "3e6773d91a62ee429b043a10e3efe6b0",
            "12a49363412364f8c0cac587f249e56b",
            "11e24f30e44ccc76",
        ),
    },
    // draft-mcgrew-gcm-test-01 page 17: AES-128-GCM, 32-bit sequence number 0xffffffff (the largest without ESN).
    // Trailer: pad 01 02, pad length 2, next header 1: structurally valid RFC 4303 trailer
    // (4 bytes, 4-byte aligned) around an EMPTY payload (only padding, pad length, next header).
    EspAeadVector {
        name: "draft-mcgrew-gcm-test-01 case 12",
        cipher: VectorCipher::AesGcm,
        key: "7d773d00c144c525ac619d18c84a3f47",
        salt: "d9664267",
        iv: "43457e9182443bc6",
        spi: 0x335467ae,
        seq: 0xffffffff,
        esn: false,
        aad: "335467aeffffffff",
        plaintext: "01020201",
        ciphertext_and_tag: "437f866bcb3f699fe9b0822bac961c4504bef270",
    },
    // draft-mcgrew-gcm-test-01 page 17: AES-128-GCM, Same key/nonce/SPI/ESN as case 8.
    // Trailer: no padding, pad length 0, next header 1: structurally valid RFC 4303 trailer
    // (20 bytes, 4-byte aligned). The 18-byte payload is ASCII text ("to\x01be\x01or..."), not
    // an ICMP message, so next header 1 is nominal only.
    EspAeadVector {
        name: "draft-mcgrew-gcm-test-01 case 13",
        cipher: VectorCipher::AesGcm,
        key: "abbccddef00112233445566778899aab",
        salt: "decaf888",
        iv: "cafedebaceface74",
        spi: 0x00000100,
        seq: 0x0000000000000001,
        esn: true,
        aad: "000001000000000000000001",
        plaintext: "746f016265016f72016e6f7401746f0162650001",
        ciphertext_and_tag: concat!(
            "29c9fc69a197d038ccdd14e2ddfcaa05",
            "43332164412503524303ed3c6c5f2838",
            "43af8c3e",
        ),
    },
    // draft-mcgrew-gcm-test-01 page 18: AES-256-GCM, 64-bit ESN 0xffffffffffffffff.
    // Trailer: pad 01 02, pad length 2, next header 1: structurally valid RFC 4303 trailer
    // (52 bytes, 4-byte aligned). Inner IPv4 total length (48) matches the payload; next
    // header 1 (ICMP) does not match the IPv4 inner packet (tunnel mode would be 4).
    EspAeadVector {
        name: "draft-mcgrew-gcm-test-01 case 14",
        cipher: VectorCipher::AesGcm,
        key: "6c6567616c697a656d6172696a75616e61616e64646f69746265666f72656961",
        salt: "7475726e",
        iv: "333021696765746d",
        spi: 0x796b6963,
        seq: 0xffffffffffffffff,
        esn: true,
        aad: "796b6963ffffffffffffffff",
        plaintext: concat!(
            "45000030da3a00008001df3bc0a80005",
            "c0a800010800c6cd0200070061626364",
            "65666768696a6b6c6d6e6f7071727374",
            "01020201",
        ),
        ciphertext_and_tag: concat!(
            "f97ab2aa356d8edce17644ac8c78e25d",
            "d24dedbb29ebf1b64a274b39b49c3a86",
            "4cd3d78ca4ae68a32b42458fb57dbe82",
            "1dcc63b9d0937ba2945f669368661a32",
            "9fb4c053",
        ),
    },
    // draft-mcgrew-gcm-test-01 page 20: AES-128-GCM, Same key/nonce/ESN as case 5 but SPI byte-swapped (0x3f7ef642).
    // Trailer: pad 01 02, pad length 2, next header 1: structurally valid RFC 4303 trailer
    // (52 bytes, 4-byte aligned). Inner IPv4 total length (48) matches the payload; next
    // header 1 (ICMP) does not match the IPv4 inner packet (tunnel mode would be 4).
    EspAeadVector {
        name: "draft-mcgrew-gcm-test-01 case 16",
        cipher: VectorCipher::AesGcm,
        key: "3de09874b388e6491988d0c3607eae1f",
        salt: "57690e43",
        iv: "4e280000a2fca1a3",
        spi: 0x3f7ef642,
        seq: 0x1010101010101010,
        esn: true,
        aad: "3f7ef6421010101010101010",
        plaintext: concat!(
            "45000030da3a00008001df3bc0a80005",
            "c0a800010800c6cd0200070061626364",
            "65666768696a6b6c6d6e6f7071727374",
            "01020201",
        ),
        ciphertext_and_tag: concat!(
            "fba2caa8c6c5f9f0f22ca54a061210ad",
            "3f6e5791cf1aca210d117cec9c357917",
            "65acbd8701ad79845bf9fe3fba487bc9",
            "6321930684eecadb56912546e7a95c97",
            "40d7cb05",
        ),
    },
    // draft-mcgrew-gcm-test-01 page 21: AES-128-GCM, 64-bit ESN: high half 0x87654321, low half 0x00000007.
    // Trailer: pad 01 02, pad length 2, next header 1: valid RFC 4303 trailer and fully
    // consistent: the 28-byte payload is an ICMP echo request (transport mode, next header 1).
    EspAeadVector {
        name: "draft-mcgrew-gcm-test-01 case 17",
        cipher: VectorCipher::AesGcm,
        key: "4c80cdefbb5d10da906ac73c3613a634",
        salt: "22433c64",
        iv: "4855ec7d3a234bfd",
        spi: 0x00004321,
        seq: 0x8765432100000007,
        esn: true,
        aad: "000043218765432100000007",
        plaintext: "0800c6cd020007006162636465666768696a6b6c6d6e6f707172737401020201",
        ciphertext_and_tag: concat!(
            "74752e8aeb5d873cd7c0f4acc36c4bff",
            "84b7d7b98f0ca8b6acda6894bc619069",
            "ef9cbc28fe1b56a7c4e0d58c86cd2bc0",
        ),
    },
    // RFC 7634 Appendix A (ESP example): ChaCha20-Poly1305, SPI 0x01020304, 32-bit sequence number 5.
    // Trailer: pad 01 02, pad length 2, next header 4 (IPv4): valid RFC 4303 trailer and fully
    // consistent (tunnel mode; the inner IPv4 total length 84 = 88 - 4 trailer bytes).
    EspAeadVector {
        name: "RFC 7634 Appendix A (ESP example)",
        cipher: VectorCipher::ChaCha20Poly1305,
        key: "808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f",
        salt: "a0a1a2a3",
        iv: "1011121314151617",
        spi: 0x01020304,
        seq: 0x00000005,
        esn: false,
        aad: "0102030400000005",
        plaintext: concat!(
            "45000054a6f200004001e778c6336405",
            "c000020508005b7a3a080000553bec10",
            "0007362708090a0b0c0d0e0f10111213",
            "1415161718191a1b1c1d1e1f20212223",
            "2425262728292a2b2c2d2e2f30313233",
            "3435363701020204",
        ),
        ciphertext_and_tag: concat!(
            "24039428b97f417e3c13753a4f05087b",
            "67c352e6a7fab1b982d466ef407ae5c6",
            "14ee8099d52844eb61aa95dfab4c02f7",
            "2aa71e7c4c4f64c9befe2facc638e8f3",
            "cbec163fac469b502773f6fb94e664da",
            "9165b82829f641e076aaa8266b7fb0f7",
            "b11b369907e1ad43",
        ),
    },
];

/// A generic AEAD known-answer case with no ESP framing.
#[derive(Debug, Clone, Copy)]
pub struct AeadVector {
    pub name: &'static str,
    pub cipher: VectorCipher,
    /// Hex, the cipher key WITHOUT salt.
    pub key: &'static str,
    /// Hex, 4 bytes.
    pub salt: &'static str,
    /// Hex, 8-byte explicit IV (nonce = salt || iv).
    pub iv: &'static str,
    /// Hex, the AAD exactly as published.
    pub aad: &'static str,
    /// Hex.
    pub plaintext: &'static str,
    /// Hex, ciphertext followed by the 16-byte tag.
    pub ciphertext_and_tag: &'static str,
}

/// RFC 7634 Appendix B (IKEv2 example): the AAD is the 28-byte IKE header followed by the
/// 4-byte Encrypted payload header; the plaintext is a Notify payload plus 1 pad-length byte.
pub const RFC7634_IKEV2_VECTOR: AeadVector = AeadVector {
    name: "RFC 7634 Appendix B (IKEv2 example)",
    cipher: VectorCipher::ChaCha20Poly1305,
    key: "808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f",
    salt: "a0a1a2a3",
    iv: "1011121314151617",
    aad: "c0c1c2c3c4c5c6c7d0d1d2d3d4d5d6d72e202500000000090000004529000029",
    plaintext: "0000000c000040010000000a00",
    ciphertext_and_tag: "610394701f8d017f7c129248896b71bfe25236efd7cdc67066906315b2",
};
