"""Helpers shared by the benchmark drivers: peers' python, load, stats, output."""

import json
import os
import subprocess
import sys
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
PEER_VENV = os.environ.get("CHANSERVE_BENCH_PEER_VENV", os.path.join(BENCH, ".venv-peers"))
PEER_PYTHON = os.path.join(PEER_VENV, "bin", "python")
RESULTS = os.path.join(BENCH, "results")


def chanserve_python():
    """The interpreter chanserve is installed in (this one, normally)."""
    return os.environ.get("CHANSERVE_BENCH_PYTHON", sys.executable)


def chanserve_env(extra=None):
    """Environment for chanserve processes: the checkout first on sys.path
    (so the code under test is this tree's, installed or not)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    if extra:
        env.update(extra)
    return env


def require_peers():
    if not os.path.exists(PEER_PYTHON):
        sys.exit(f"peer venv missing ({PEER_PYTHON}); run bench/run.sh (it creates it)")


def cpu_times():
    with open("/proc/stat") as f:
        fields = f.readline().split()[1:]
    values = [int(x) for x in fields]
    idle = values[3] + values[4]
    return sum(values), idle


class MachineLoad:
    """Load average and whole-machine CPU use over the span of a benchmark."""

    def __init__(self):
        self.start = cpu_times()
        self.load_start = os.getloadavg()

    def report(self):
        total, idle = cpu_times()
        dt = total - self.start[0]
        busy = 1.0 - (idle - self.start[1]) / dt if dt else 0.0
        return {
            "loadavg_start": [round(x, 2) for x in self.load_start],
            "loadavg_end": [round(x, 2) for x in os.getloadavg()],
            "cpu_busy_pct": round(100 * busy, 1),
            "cpus": os.cpu_count(),
        }


def percentile(sorted_values, p):
    if not sorted_values:
        return float("nan")
    k = (len(sorted_values) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo)


def median(values):
    values = sorted(values)
    return percentile(values, 50)


def run_json(argv, timeout, env=None, cwd=None):
    """Run a side process that prints one JSON object as its last stdout line."""
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd)
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[:3]} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    lines = [l for l in proc.stdout.splitlines() if l.strip()]
    return json.loads(lines[-1])


def save(name, data):
    os.makedirs(RESULTS, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    path = os.path.join(RESULTS, f"{name}-{stamp}.json")
    with open(path, "w") as f:
        json.dump(data, f, indent=2, sort_keys=True)
    return path


def print_table(headers, rows):
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) for i, h in enumerate(headers)]
    line = "  ".join(str(h).ljust(w) for h, w in zip(headers, widths))
    print(line)
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)))


def fmt_load(load):
    return (f"machine: {load['cpus']} cpus, loadavg {load['loadavg_start'][0]} -> "
            f"{load['loadavg_end'][0]} (1 min), whole-machine CPU busy {load['cpu_busy_pct']}% "
            f"during the run")


def print_targets(targets):
    """targets: [(label, value, "ge"|"le", threshold, unit)]; prints met/MISSED lines."""
    if not targets:
        return
    print("\n-- targets")
    for label, value, op, threshold, unit in targets:
        if value != value:  # nan: a side failed
            print(f"   ?       {label}: no figure")
            continue
        met = value >= threshold if op == "ge" else value <= threshold
        sign = ">=" if op == "ge" else "<="
        print(f"   {'met   ' if met else 'MISSED'}  {label}: {value:.2f}{unit} (target {sign} {threshold}{unit})")
