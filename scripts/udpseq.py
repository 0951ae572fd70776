#!/usr/bin/env python3
"""A sequence-numbered UDP stream, to measure loss and gaps across a handover or failover.

    udpseq.py recv --bind IP:PORT --seconds S --json OUT
    udpseq.py send --to IP:PORT --rate PPS --seconds S [--size B] [--json OUT]

Start the receiver first. The sender paces packets on a 1 ms tick: at every tick it sends all
packets due by then (rate * elapsed), so 10,000 pps is ten packets per tick, not one sleep per
packet (a sleep is ~60 us of jitter, too coarse for 100 us spacing). Each packet carries a
sequence number and its send time (CLOCK_MONOTONIC, shared by all network namespaces of one
host) and the planned count; after the stream the sender sends a few "end" packets carrying
the count actually sent, so the receiver can count tail losses. If none arrive (e.g. the path
died for good), the receiver takes the planned count and says so ("sent_source").

The receiver reports: sent, received (unique), lost, duplicates, reordered (arrived after a
higher sequence number), the longest gap between two arrivals in ms (a gap that is never
closed, i.e. lost packets at the end, counts up to the end of the stream), and the loss
timeline: runs of consecutive lost packets with their time in the stream (first 100 runs).
Only the Python 3.11 standard library is used.
"""

from __future__ import annotations

import argparse
import errno
import json
import socket
import struct
import sys
import time

MAGIC = b"USQ1"
# magic, kind (0 data, 1 end), 3 pad bytes, sequence number, send time ns, total count (the
# planned count in data packets, the count actually sent in end packets)
HDR = struct.Struct("!4sB3xQQQ")
KIND_DATA, KIND_END = 0, 1
TICK_NS = 1_000_000
MAX_SEQ = 50_000_000  # bounds the receiver's memory (one byte per sequence number)
MAX_TIMELINE = 100
END_COPIES = 5


def parse_addr(text: str) -> tuple[socket.AddressFamily, tuple]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not IP:PORT")
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return family, (host, int(port))


def set_buf(sock: socket.socket, force: int, plain: int, size: int) -> None:
    # The *FORCE variants ignore net.core.[rw]mem_max (we run as root in the lab).
    try:
        sock.setsockopt(socket.SOL_SOCKET, force, size)
    except OSError:
        try:
            sock.setsockopt(socket.SOL_SOCKET, plain, size)
        except OSError:
            pass


def cmd_send(a: argparse.Namespace) -> int:
    family, dest = a.to
    if a.size < HDR.size:
        sys.exit(f"--size must be at least {HDR.size}")
    sock = socket.socket(family, socket.SOCK_DGRAM)
    set_buf(sock, 32, socket.SO_SNDBUF, 4 << 20)  # 32 = SO_SNDBUFFORCE
    sock.connect(dest)
    total = int(a.rate * a.seconds)
    buf = bytearray(a.size)
    errors: dict[str, int] = {}
    seq = 0
    max_lag_ns = 0
    t0 = time.monotonic_ns()
    # Bound in time too: if the host starves us, stop at 1.5x the planned duration + 1 s.
    hard_end = t0 + int(a.seconds * 1.5e9) + 1_000_000_000
    rate = a.rate
    while seq < total:
        now = time.monotonic_ns()
        if now > hard_end:
            break
        due = min(total, (now - t0) * rate // 1_000_000_000 + 1)
        if due > seq + 1:
            # How far behind schedule is the oldest packet sent in this tick?
            lag = now - (t0 + seq * 1_000_000_000 // rate)
            max_lag_ns = max(max_lag_ns, lag)
        while seq < due:
            HDR.pack_into(buf, 0, MAGIC, KIND_DATA, seq, time.monotonic_ns(), total)
            try:
                sock.send(buf)
            except OSError as e:
                # ENOBUFS, ECONNREFUSED (an ICMP error from an earlier packet), ENETUNREACH:
                # the packet counts as sent (and, if it never arrives, as lost).
                name = errno.errorcode.get(e.errno, str(e.errno))
                errors[name] = errors.get(name, 0) + 1
            seq += 1
        next_tick = t0 + ((now - t0) // TICK_NS + 1) * TICK_NS
        delay = next_tick - time.monotonic_ns()
        if delay > 0:
            time.sleep(delay / 1e9)
    elapsed = (time.monotonic_ns() - t0) / 1e9
    end = bytearray(a.size)
    for _ in range(END_COPIES):
        HDR.pack_into(end, 0, MAGIC, KIND_END, seq, time.monotonic_ns(), seq)
        try:
            sock.send(end)
        except OSError:
            pass
        time.sleep(0.01)
    report = {
        "sent": seq,
        "planned": total,
        "seconds": round(elapsed, 3),
        "rate_pps": round(seq / elapsed, 1) if elapsed > 0 else None,
        "max_lag_ms": round(max_lag_ns / 1e6, 3),
        "send_errors": errors,
    }
    write_json(report, a.json)
    return 0


def cmd_recv(a: argparse.Namespace) -> int:
    family, addr = a.bind
    sock = socket.socket(family, socket.SOCK_DGRAM)
    set_buf(sock, 33, socket.SO_RCVBUF, 16 << 20)  # 33 = SO_RCVBUFFORCE
    sock.bind(addr)
    sock.settimeout(0.05)
    buf = bytearray(65536)
    seen = bytearray(1 << 16)
    received = duplicates = reordered = foreign = 0
    max_seq = -1
    first_seq = first_send = last_seq_sent_ns = None
    last_seq_for_rate = None
    prev_arrival = first_arrival = None
    max_gap = 0
    max_gap_after = None
    owd_sum = 0
    owd_max = 0
    end_total = None
    planned = 0
    end_arrival = None
    t_start = time.monotonic_ns()
    deadline = t_start + int(a.seconds * 1e9)
    unpack = HDR.unpack_from
    while True:
        now = time.monotonic_ns()
        if now >= deadline:
            break
        # Once the end marker is in, wait a little for reordered stragglers, then stop.
        if end_arrival is not None and now - end_arrival > 300_000_000:
            break
        try:
            n = sock.recv_into(buf)
        except TimeoutError:
            continue
        now = time.monotonic_ns()
        if n < HDR.size:
            foreign += 1
            continue
        magic, kind, seq, sent_ns, total = unpack(buf)
        if magic != MAGIC:
            foreign += 1
            continue
        if kind == KIND_END:
            if end_total is None:
                end_total, end_arrival = total, now
            continue
        if seq >= MAX_SEQ:
            foreign += 1
            continue
        planned = max(planned, min(total, MAX_SEQ))
        if seq >= len(seen):
            seen.extend(bytes(max(seq + 1 - len(seen), len(seen))))
        if seen[seq]:
            duplicates += 1
            continue
        seen[seq] = 1
        received += 1
        if seq < max_seq:
            reordered += 1
        else:
            max_seq = seq
        if first_seq is None or seq < first_seq:
            first_seq, first_send = seq, sent_ns
        if last_seq_for_rate is None or seq > last_seq_for_rate:
            last_seq_for_rate, last_seq_sent_ns = seq, sent_ns
        if prev_arrival is None:
            first_arrival = now
        else:
            gap = now - prev_arrival
            if gap > max_gap:
                max_gap, max_gap_after = gap, seq
        prev_arrival = now
        owd = now - sent_ns
        owd_sum += owd
        owd_max = max(owd_max, owd)
    stop = time.monotonic_ns()

    if end_total is not None:
        sent, sent_source = end_total, "end-marker"
    elif planned:
        sent, sent_source = planned, "planned"
    else:
        sent, sent_source = 0, "nothing-received"
    sent = min(sent, MAX_SEQ)
    if len(seen) < sent:
        seen.extend(bytes(sent - len(seen)))
    lost = sent - seen.count(1, 0, sent)

    # Period between packets, from the send times of the first and last received packets.
    period_ns = None
    if first_seq is not None and last_seq_for_rate > first_seq:
        period_ns = (last_seq_sent_ns - first_send) / (last_seq_for_rate - first_seq)

    def at_ms(seq: int) -> float | None:
        if period_ns is None:
            return None
        return round((seq - first_seq) * period_ns / 1e6, 1)

    runs = 0
    longest_run = 0
    timeline = []
    pos = 0
    while pos < sent:
        start = seen.find(0, pos, sent)
        if start < 0:
            break
        end = seen.find(1, start, sent)
        if end < 0:
            end = sent
        runs += 1
        longest_run = max(longest_run, end - start)
        if len(timeline) < MAX_TIMELINE:
            timeline.append({"seq": start, "count": end - start, "at_ms": at_ms(start)})
        pos = end

    # Lost packets at the end: the gap stays open until the stream ended (end marker) or the
    # receiver gave up; count it so that a path that never recovers shows a long gap.
    tail_lost = sent - 1 - max_seq if sent > 0 else 0
    recovered = tail_lost <= 0
    if not recovered and prev_arrival is not None:
        closing = end_arrival
        if closing is None:
            # No end marker: the stream ended about when its last planned packet was due.
            closing = stop
            if period_ns is not None:
                closing = min(stop, first_arrival + int((sent - 1 - first_seq) * period_ns))
        if closing - prev_arrival > max_gap:
            max_gap, max_gap_after = closing - prev_arrival, None

    report = {
        "sent": sent,
        "sent_source": sent_source,
        "received": received,
        "lost": lost,
        "loss_pct": round(100.0 * lost / sent, 4) if sent else None,
        "duplicates": duplicates,
        "reordered": reordered,
        "longest_gap_ms": round(max_gap / 1e6, 3),
        "longest_gap_before_seq": max_gap_after,
        "longest_loss_run": longest_run,
        "loss_runs": runs,
        "loss_timeline": timeline,
        "timeline_truncated": runs > len(timeline),
        "recovered": recovered,
        "owd_ms": {
            "avg": round(owd_sum / received / 1e6, 3) if received else None,
            "max": round(owd_max / 1e6, 3),
        },
        "receive_seconds": round(((prev_arrival or stop) - (first_arrival or stop)) / 1e9, 3),
        "foreign_packets": foreign,
    }
    write_json(report, a.json)
    print(
        f"udpseq: sent {sent} received {received} lost {lost} dup {duplicates} "
        f"reordered {reordered} longest gap {report['longest_gap_ms']} ms",
        file=sys.stderr,
    )
    return 0


def write_json(report: dict, path: str | None) -> None:
    text = json.dumps(report)
    if path and path != "-":
        with open(path, "w") as f:
            f.write(text + "\n")
    else:
        print(text)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("send", help="send a paced, numbered stream")
    s.add_argument("--to", type=parse_addr, required=True, metavar="IP:PORT")
    s.add_argument("--rate", type=int, required=True, metavar="PPS")
    s.add_argument("--seconds", type=float, required=True)
    s.add_argument("--size", type=int, default=64, metavar="B", help="UDP payload bytes (default 64)")
    s.add_argument("--json", metavar="OUT", help="write the sender's report here (default stdout)")
    r = sub.add_parser("recv", help="receive and report")
    r.add_argument("--bind", type=parse_addr, required=True, metavar="IP:PORT")
    r.add_argument("--seconds", type=float, required=True, help="give up after this long")
    r.add_argument("--json", metavar="OUT", help="write the report here (default stdout)")
    a = p.parse_args()
    if a.cmd == "send":
        if not 1 <= a.rate <= 1_000_000 or not 0 < a.seconds <= 3600:
            p.error("--rate must be 1..1000000 and --seconds 0..3600")
        if a.rate * a.seconds > MAX_SEQ:
            p.error(f"at most {MAX_SEQ} packets per stream")
        return cmd_send(a)
    if not 0 < a.seconds <= 7200:
        p.error("--seconds must be 0..7200")
    return cmd_recv(a)


if __name__ == "__main__":
    sys.exit(main())
