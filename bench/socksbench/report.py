"""The markdown table, the ratios to Dante, the targets and the headroom lines."""

from .peers import LABELS, UDP_NOTES

NA_DIRECT = "n/a (no proxy)"

# (label, key, kind, higher is better, target); target is (reference peer,
# reference key or None for the same key, "ge"/"le", factor), or ("abs", None,
# "le", bytes) for an absolute limit, or None.
ROWS = [
    ("download MB/s (1 stream)", "download_mbs", "mbs", True, ("dante", None, "ge", 1.0)),
    ("upload MB/s (1 stream)", "upload_mbs", "mbs", True, ("dante", None, "ge", 1.0)),
    ("download MB/s (8 streams, total)", "download8_mbs", "mbs", True, ("dante", None, "ge", 1.0)),
    ("upload MB/s (8 streams, total)", "upload8_mbs", "mbs", True, ("dante", None, "ge", 1.0)),
    ("download MB/s (64 streams, total)", "download64_mbs", "mbs", True,
     ("dante", None, "ge", 1.0)),
    ("upload MB/s (64 streams, total)", "upload64_mbs", "mbs", True, ("dante", None, "ge", 1.0)),
    ("connections/s (32 clients)", "cps", "cps", True, ("dante", None, "ge", 1.0)),
    ("connections/s with auth (RFC 1929) ¹", "cps_auth", "cps", True,
     ("dante", "cps", "ge", 1.0)),
    ("handshake p50 µs", "hs_p50_us", "us", False, ("dante", None, "le", 1.0)),
    ("handshake p99 µs", "hs_p99_us", "us", False, None),
    ("handshake p50 µs with auth ¹", "hs_auth_p50_us", "us", False, None),
    ("handshake p99 µs with auth ¹", "hs_auth_p99_us", "us", False, None),
    ("64 B round trip p50 µs", "rtt_p50_us", "us", False, ("direct", None, "le", 1.3)),
    ("64 B round trip p99 µs", "rtt_p99_us", "us", False, None),
    ("idle tunnel KiB (RSS summed over processes)", "idle_bytes", "kib", False,
     ("abs", None, "le", 10 * 1024)),
    ("idle tunnel KiB (PSS summed over processes)", "idle_pss_bytes", "kib", False, None),
    ("UDP ASSOCIATE echo datagrams/s (64 B, 32 in flight)", "udp_dps", "cps", True,
     ("dante", None, "ge", 1.0)),
    ("UDP datagrams lost (of those sent)", "udp_lost", "lost", False, None),
    ("proxy CPU s per GB relayed", "cpu_s_per_gb", "cpu", False, ("dante", None, "le", 1.0)),
]

# Rows where direct loopback is the reference for the client's headroom:
# key -> direct's key (auth: direct has no handshake, so its plain figure).
HEADROOM = {"download_mbs": "download_mbs", "upload_mbs": "upload_mbs",
            "download8_mbs": "download8_mbs", "upload8_mbs": "upload8_mbs",
            "download64_mbs": "download64_mbs", "upload64_mbs": "upload64_mbs",
            "cps": "cps", "cps_auth": "cps", "hs_p50_us": "hs_p50_us",
            "rtt_p50_us": "rtt_p50_us", "udp_dps": "udp_dps"}
# The run (Bench.run label) whose client CPU share goes with a row.
CLIENT_RUN = {"hs_p50_us": "cps", "rtt_p50_us": "rtt"}


def num(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def fmt(v, kind):
    if isinstance(v, str):
        return v
    if v is None:
        return "-"
    if kind in ("mbs", "us", "cps"):
        return "%.0f" % v
    if kind == "kib":
        return "%.1f" % (v / 1024.0)
    if kind == "cpu":
        return "%.2f" % v
    if kind == "lost":
        return "%d" % v
    return str(v)


def _ratio(results, peer, key, ref_key):
    a = results.get(peer, {}).get(key)
    b = results.get("dante", {}).get(ref_key or key)
    return a / b if num(a) and num(b) and b else None


def target_text(target):
    if not target:
        return ""
    ref, _, op, factor = target
    sign = "≥" if op == "ge" else "≤"
    if ref == "abs":
        return "%s %.0f KiB" % (sign, factor / 1024)
    return "%s %.1f× %s" % (sign, factor, ref)


def meets(results, peer, key, target):
    """True/False whether peer meets the target on key; None if unknown."""
    if not target or peer not in results:
        return None
    ref, ref_key, op, factor = target
    a = results[peer].get(key)
    if not num(a):
        return None
    if ref == "abs":
        b = factor
    else:
        b = results.get(ref, {}).get(ref_key or key)
        if not num(b):
            return None
        b *= factor
    return a >= b if op == "ge" else a <= b


def headroom(results):
    """For each measure: direct's figure against the best proxy's."""
    out = {}
    proxies = [p for p in results if p != "direct"]
    for label, key, kind, higher, _ in ROWS:
        dkey = HEADROOM.get(key)
        if not dkey:
            continue
        d = results.get("direct", {}).get(dkey)
        vals = [(results[p].get(key), p) for p in proxies if num(results[p].get(key))]
        if not num(d) or not vals or not d:
            continue
        v, p = max(vals) if higher else min(vals)
        ratio = d / v if higher else v / d
        run = CLIENT_RUN.get(key, key)
        out[key] = {"measure": label.rstrip(" ¹"), "direct": d, "best_proxy": p,
                    "best_value": v, "ratio": ratio, "kind": kind, "higher": higher,
                    "client_cpu_direct": results["direct"].get("client_cpu", {}).get(
                        CLIENT_RUN.get(dkey, dkey)),
                    "client_cpu_best": results[p].get("client_cpu", {}).get(run)}
    return out


def markdown(results, meta, peers):
    cols = [p for p in peers if p in results]
    ratio_cols = [p for p in ("socksrelay", "socksrelay-workers") if p in cols and "dante" in cols]
    head = [LABELS.get(c, c) for c in cols] + ["%s/dante" % LABELS.get(p, p) for p in ratio_cols]
    ours = [p for p in ("socksrelay", "socksrelay-workers") if p in cols]
    head += ["target", "met (%s)" % ", ".join(LABELS.get(p, p) for p in ours)] if ours else []
    lines = ["| measure | " + " | ".join(head) + " |", "|---" * (len(head) + 1) + "|"]
    for label, key, kind, _, target in ROWS:
        cells = ["n/a ²" if "error" in results[c] else fmt(results[c].get(key), kind)
                 for c in cols]
        if key == "udp_lost":  # the reason is in the row above
            cells = ["n/a" if c.startswith("n/a (UDP") else c for c in cells]
        for p in ratio_cols:
            r = _ratio(results, p, key, target[1] if target else None)
            cells.append("%.2f×" % r if r is not None else "-")
        if ours:
            cells.append(target_text(target))
            marks = [meets(results, p, key, target) for p in ours]
            cells.append(" ".join({True: "✓", False: "✗", None: "-"}[m] for m in marks)
                         if target else "")
        lines.append("| %s | %s |" % (label, " | ".join(cells)))
    lines.append("")
    notes = ["¹ Dante's username method needs a system account, so Dante has no "
             "auth figure; the ratio and the target for the auth row use Dante's "
             "no-auth connections/s. Handshake latency with auth runs from connect "
             "to the CONNECT reply, RFC 1929 sub-negotiation included."]
    dead = ["%s: %s" % (LABELS.get(c, c), results[c]["error"]) for c in cols
            if "error" in results[c]]
    if dead:
        notes.append("² Could not be started, so no figures: %s." % "; ".join(dead))
    for c in cols:
        if c in UDP_NOTES and str(results[c].get("udp_dps", "")).startswith("n/a"):
            notes.append("UDP: %s." % UDP_NOTES[c])
    if "socksrelay-workers" in cols:
        w = meta.get("processes", {}).get("socksrelay-workers")
        notes.append("socksrelay ×N is `twistd socks5 --workers auto`%s." % (
            " (%d processes in its tree)" % w if w else ""))
    for n in notes:
        lines += [n, ""]
    lines.pop()
    hr = meta.get("headroom") or {}
    if hr:
        lines.append("")
        lines.append("Headroom: direct loopback (same client, same targets, no proxy) "
                     "against the best proxy. For rates, direct well above every proxy "
                     "shows the client is not the bottleneck; for latencies, direct is "
                     "the floor a proxy adds its hops to. Client CPU is the benchmark "
                     "process's user+system time over the run's wall time, all threads "
                     "(the connections/s client is one thread: 100% would be "
                     "saturated).")
        lines.append("")
        for h in hr.values():
            flag = ""
            if h["higher"] and h["ratio"] < 2:
                flag = " (under 2×: see the client CPU)"
            cpu = ""
            if num(h.get("client_cpu_best")) and num(h.get("client_cpu_direct")):
                cpu = "; client CPU %.0f%% of a core (direct %.0f%%)" % (
                    100 * h["client_cpu_best"], 100 * h["client_cpu_direct"])
            lines.append("- %s: direct %s, best proxy %s %s: %.1f×%s%s" % (
                h["measure"], fmt(h["direct"], h["kind"]),
                LABELS.get(h["best_proxy"], h["best_proxy"]),
                fmt(h["best_value"], h["kind"]), h["ratio"], cpu, flag))
    lines.append("")
    lines.append(
        "%s; %d MiB each way per throughput run (split across the streams); %d idle "
        "tunnels; %s s per connections/s run, %d clients in %d process(es); %d round "
        "trips; %s s of UDP; %d-core %s; rounds %d (best for throughput, connections/s "
        "and datagrams/s, median of round medians for latencies); %.0f s wall." % (
            meta["date"], meta["size_mib"], meta["tunnels"], meta["cps_seconds"],
            meta["cps_clients"], meta["cps_procs"], meta["rtt_count"], meta["udp_seconds"],
            meta["cpus"], meta["machine"], meta["rounds"], meta.get("wall_seconds", 0)))
    other = meta.get("other_processes_user_cpu")
    if other is not None:
        lines.append("")
        lines.append("Other processes on the host used %.0f%% of its CPUs (user time) during "
                     "the run%s." % (100 * other, "" if other < 0.05 else
                                     ": the figures are disturbed, run again when idle"))
    return "\n".join(lines) + "\n"
