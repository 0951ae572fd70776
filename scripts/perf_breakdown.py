#!/usr/bin/env python3
"""Where the daemons' time goes in a sampled profile, by kind of work (issue 14):

    scripts/perf_breakdown.py PERF_DATA        -> one JSON object on stdout
    scripts/perf_breakdown.py PERF_DATA JSON   -> that JSON object with the shares added as
                                                  breakdown_<bucket> (how bench-e2e and
                                                  anchors.sh record them)
    scripts/perf_breakdown.py --self-test      -> checks the classifier on made-up samples

Reads `perf script` of a `perf record -g` of both mifsec daemons (scripts/bench-e2e.sh takes
one per profiled case) and puts every sample in exactly one bucket, by its leaf frame and its
call chain, in this order (the first that matches wins):

- marks:       any sample of a `mifsec-marks` thread (the manual SAs' sequence marks);
- aead:        user code of ring's AES-GCM / ChaCha20-Poly1305 (asm and Rust glue);
- kernel_copy: the kernel copying packet bytes between user memory and socket buffers
               (_copy_to_iter, _copy_from_iter, copy_user_*, rep_movs_alternative, ...);
- sched:       sleeping and waking: a chain through epoll_wait / schedule, or a leaf where the
               kernel switches tasks or re-enables interrupts after a wake-up
               (finish_task_switch, _raw_spin_unlock_irqrestore, try_to_wake_up). On a VM
               with a software clock, samples taken with interrupts off land on these leaves,
               so this bucket is "waking and being woken", not the lock itself;
- tun_write / tun_read / udp_send / udp_recv: the rest of the kernel's work under each of
               the four data syscalls (for a TUN write: the inner packet's whole receive path,
               TCP included; for a UDP send: the outer packet through veth and the peer's UDP
               receive in softirq);
- kernel_other: any other kernel sample;
- user_other:  every other user sample (mifsec's own code, libc).

The shares are of all samples and add up to 1 (rounding aside). A sample's leaf is its first
frame; a frame is kernel when its DSO is [kernel.kallsyms].
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

# Go's runtime hashes maps with AES instructions (runtime.aeshashbody): not an AEAD.
AEAD = re.compile(r"^(?!.*aeshash).*(aes|gcm|ghash|chacha|poly1305)", re.I)
COPY = re.compile(
    r"^(_copy_to_iter|_copy_from_iter|copy_user_\w+|rep_movs_alternative|__copy_user\w*|"
    r"copy_page\w*|memcpy_orig|__memcpy|skb_copy_bits|csum_partial_copy\w*)$"
)
SCHED_LEAF = re.compile(
    r"^(finish_task_switch\S*|_raw_spin_unlock_irqrestore|__schedule|schedule\w*|"
    r"try_to_wake_up|__wake_up\w*)$"
)
SCHED_CHAIN = ("__x64_sys_epoll_wait", "__x64_sys_epoll_pwait", "do_nanosleep")
BUCKETS = (
    "marks", "aead", "kernel_copy", "sched", "tun_write", "tun_read", "udp_send", "udp_recv",
    "kernel_other", "user_other",
)


def parse(text: str):
    """`perf script -F comm,ip,sym,dso` output -> [(comm, [(sym, is_kernel), ...])]."""
    samples = []
    for block in text.split("\n\n"):
        lines = [l.strip() for l in block.strip().split("\n") if l.strip()]
        if len(lines) < 2:
            continue
        frames = []
        for l in lines[1:]:
            parts = l.split(None, 1)
            if len(parts) < 2:
                continue
            m = re.match(r"(.*?)\s*\(([^()]*)\)\s*$", parts[1])
            sym, dso = (m[1], m[2]) if m else (parts[1], "")
            sym = re.sub(r"\+0x[0-9a-f]+$", "", sym)
            frames.append((sym, dso == "[kernel.kallsyms]"))
        if frames:
            samples.append((lines[0].split()[0] if lines[0].split() else "", frames))
    return samples


def bucket(comm: str, frames) -> str:
    leaf, leaf_k = frames[0]
    syms = [s for s, _ in frames]
    if comm.startswith("mifsec-marks"):
        return "marks"
    if not leaf_k:
        return "aead" if AEAD.search(leaf) else "user_other"
    if COPY.match(leaf):
        return "kernel_copy"
    if SCHED_LEAF.match(leaf) or any(s in SCHED_CHAIN for s in syms):
        return "sched"
    # The syscall: its kernel entry where the chain has one, else the libc wrapper (perf does
    # not always unwind TUN reads and writes through __x64_sys_read/write).
    if any("sendmmsg" in s or "sendmsg" in s for s in syms):
        return "udp_send"
    if any("recvmmsg" in s or "recvmsg" in s for s in syms):
        return "udp_recv"
    if any(s in ("tun_get_user", "tun_chr_write_iter") or "libc_write" in s or s == "writev"
           for s in syms):
        return "tun_write"
    if any(s in ("tun_do_read", "tun_chr_read_iter") or s in ("read", "__GI___libc_read", "readv")
           for s in syms):
        return "tun_read"
    return "kernel_other"


def breakdown(samples) -> dict:
    counts = dict.fromkeys(BUCKETS, 0)
    for comm, frames in samples:
        counts[bucket(comm, frames)] += 1
    total = sum(counts.values())
    out = {k: round(v / total, 3) if total else None for k, v in counts.items()}
    out["samples"] = total
    return out


def merged(fragment: dict, b: dict) -> dict:
    """`fragment` with every figure of breakdown `b` as breakdown_<name>."""
    return {**fragment, **{"breakdown_" + k: v for k, v in b.items()}}


def self_test() -> int:
    def sample(comm, *frames):
        return f"{comm} \n" + "".join(f"\t ffff {f}\n" for f in frames)

    k, u = "([kernel.kallsyms])", "(/usr/bin/mifsec)"
    text = "\n".join([
        sample("mifsec-worker-0", f"ring_core_0_17_14__aes_gcm_enc_update_vaes_avx2 {u}"),
        sample("mifsec-worker-0", f"ring::aead::aes_gcm::seal {u}"),
        sample("mifsec-worker-1", f"mifsec_dataplane::offload::GsoSplit::write_segment {u}"),
        sample("mifsec-worker-1", f"_copy_from_iter {k}", f"tun_get_user {k}",
               f"__GI___libc_write (/usr/lib/x86_64-linux-gnu/libc.so.6)"),
        sample("mifsec-worker-1", f"tcp_v4_rcv {k}", f"tun_get_user {k}",
               f"__GI___libc_write (/usr/lib/x86_64-linux-gnu/libc.so.6)"),
        sample("mifsec-worker-0", f"finish_task_switch.isra.0 {k}", f"__schedule {k}",
               f"__x64_sys_sendmmsg {k}"),
        sample("mifsec-worker-0", f"fib_table_lookup+0x12 {k}", f"__x64_sys_sendmmsg {k}"),
        sample("mifsec-worker-0", f"ep_poll {k}", f"__x64_sys_epoll_wait {k}"),
        sample("mifsec-worker-0", f"_copy_to_iter {k}", f"tun_do_read {k}",
               "read (/usr/lib/x86_64-linux-gnu/libc.so.6)"),
        sample("mifsec-worker-0", f"udp_recvmsg {k}", f"__x64_sys_recvmmsg {k}"),
        sample("mifsec-marks", f"ext4_sync_file {k}", f"__x64_sys_fsync {k}"),
        sample("mifsec-monitor", f"handle_softirqs {k}"),
        sample("wireguard-go", "golang.org/x/crypto/chacha20poly1305.chacha20Poly1305Seal (/x/wg)"),
        sample("wireguard-go", "runtime.aeshashbody (/x/wg)"),
    ])
    got = {}
    for comm, frames in parse(text):
        b = bucket(comm, frames)
        got[b] = got.get(b, 0) + 1
    want = {"aead": 3, "user_other": 2, "kernel_copy": 2, "tun_write": 1, "sched": 2,
            "udp_send": 1, "udp_recv": 1, "marks": 1, "kernel_other": 1}
    b = breakdown(parse(text))
    m = merged({"forward_mbps": 1.0}, b)
    ok = (got == want and b["samples"] == 14 and abs(sum(b[x] for x in BUCKETS) - 1) < 0.01
          and m["forward_mbps"] == 1.0 and m["breakdown_samples"] == 14)
    print(f"perf_breakdown self-test: {'ok' if ok else 'FAILED'} {got}")
    return 0 if ok else 1


def main() -> int:
    if sys.argv[1:] == ["--self-test"]:
        return self_test()
    if len(sys.argv) not in (2, 3):
        print(__doc__, file=sys.stderr)
        return 2
    text = subprocess.run(
        ["perf", "script", "-i", sys.argv[1], "-F", "comm,ip,sym,dso"],
        capture_output=True, text=True, check=True,
    ).stdout
    b = breakdown(parse(text))
    print(json.dumps(merged(json.loads(sys.argv[2]), b) if len(sys.argv) == 3 else b))
    return 0


if __name__ == "__main__":
    sys.exit(main())
