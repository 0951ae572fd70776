#!/usr/bin/env python3
"""Summarises criterion's estimates: Mpps and GB/s per core, ESP/bare ratios, replay rates."""
import json, os, sys

root, out_path = sys.argv[1], sys.argv[2]
rows, replay, ike, swaps, path = {}, {}, {}, {}, {}
for dirpath, _, files in os.walk(root):
    if "estimates.json" not in files or not dirpath.endswith("/new"):
        continue
    bench = json.load(open(os.path.join(dirpath, "benchmark.json")))
    est = json.load(open(os.path.join(dirpath, "estimates.json")))
    ns = est["mean"]["point_estimate"]
    group, func, param = bench["group_id"], bench["function_id"], bench.get("value_str")
    tp = bench.get("throughput") or {}
    if group == "ike":
        ike[f"{group}/{func}"] = 1e9 / ns  # handshakes per second on one core
        continue
    if group.startswith("sa_table"):
        swaps[f"{group}/{func}/{param}"] = 1e9 / ns  # table swaps per second
        continue
    if group.startswith("replay"):
        elems = tp.get("Elements", 1)
        replay[f"{group}/{func}/{param}"] = elems / ns * 1e3  # M ops/s
        continue
    if group in ("gso_split", "gro") or group.endswith("/seal_open"):
        path[f"{group}/{func}"] = tp.get("Bytes", 0) / ns  # GB/s of packet (packet_path)
        continue
    size = int(param)
    rows.setdefault((group, size), {})[func] = ns

table = []
print(f"{'cipher/backend':32} {'size':>5} {'bare Mpps':>10} {'esp Mpps':>9} {'esp GB/s':>9} "
      f"{'seal%':>6} {'rt%':>6} {'seal% of bare over ESP bytes':>6}")
for (group, size), r in sorted(rows.items()):
    if not all(k in r for k in ("bare_seal", "esp_seal", "bare_seal_open", "esp_seal_open")):
        continue
    rec = {
        "group": group, "size": size,
        "bare_seal_mpps": 1e3 / r["bare_seal"], "esp_seal_mpps": 1e3 / r["esp_seal"],
        "esp_seal_gbps": size / r["esp_seal"],
        "seal_ratio": r["bare_seal"] / r["esp_seal"],
        "seal_open_ratio": r["bare_seal_open"] / r["esp_seal_open"],
        "esp_seal_open_mpps": 1e3 / r["esp_seal_open"],
    }
    if "bare_seal_esp_bytes" in r:
        # Against the AEAD over the bytes ESP encrypts (trailer included): ESP's own share.
        rec["seal_ratio_esp_bytes"] = r["bare_seal_esp_bytes"] / r["esp_seal"]
    table.append(rec)
    print(f"{group:32} {size:5} {rec['bare_seal_mpps']:10.3f} {rec['esp_seal_mpps']:9.3f} "
          f"{rec['esp_seal_gbps']:9.2f} {100*rec['seal_ratio']:5.1f}% {100*rec['seal_open_ratio']:5.1f}%"
          + (f" {100*rec['seal_ratio_esp_bytes']:5.1f}%" if "seal_ratio_esp_bytes" in rec else ""))
print("seal% / rt%: ESP throughput as a share of the bare AEAD's (seal alone / seal+open), same run;"
      " the last column (ring): seal against the bare AEAD over the bytes ESP encrypts (its trailer)")
for k, v in sorted(replay.items()):
    print(f"{k:48} {v:8.1f} M checks+marks/s")
for k, v in sorted(swaps.items()):
    print(f"{k:48} {v:8.0f} table swaps/s")
for k, v in sorted(path.items()):
    print(f"{k:48} {v:8.2f} GB/s (IP header work of the packet path)")
for k, v in sorted(ike.items()):
    print(f"{k:48} {v:8.0f} handshakes/s (responder, one core)")
os.makedirs(os.path.dirname(out_path), exist_ok=True)
json.dump({"esp": table, "replay_mops": replay, "ike_handshakes_per_s": ike,
           "sa_table_swaps_per_s": swaps, "packet_path_gbps": path}, open(out_path, "w"), indent=1)
print(f"wrote {out_path}")
