"""The watcher (`batch_embedding_processor.py --watch`) against a cron-like poller, in one command:

1. Wake-up latency: a chunk inserted while the watcher idles, until its vector is stored (p50/p95/max over
   several inserts at random moments). The baseline is a poller that runs the plain command every
   `--baseline-interval` seconds (30 by default), as a cron line would (cron's own granularity is a minute).
2. Idle CPU: the watcher's process CPU time (user + system, from /proc) over a quiet minute with nothing
   to do, as a share of one core; the baseline's is the CPU of the processes it started in that minute.
3. Three watchers on one database, 2,000 chunks inserted in bursts of 100: every text embedded exactly
   once (the simulator's per-text counts), nothing left leased, how the work was shared.

    python -m benchmarks.watcher [--inserts 20] [--quiet-seconds 60] [--chunks 2000] [--out PATH]

Everything runs here: a throwaway embedded PostgreSQL, the Gemini simulator (real google-genai client over
HTTP) in a thread, the watchers and the poller as real processes. Prints Markdown tables and writes
benchmarks/results/watcher.json.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import resource
import signal
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psycopg

from benchmarks.harness import REPO, RESULTS, PgServer, format_table, migrate, write_json
from modules.gemini_simulator import SimulatorConfig, run_simulator_in_thread, text_sha256

PROCESSOR = REPO / "batch_embedding_processor.py"
API_KEY = "bench-key-1c7e9a3f5b2d4086"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def env_for(url: str, sim_url: str, logs: Path, name: str, **extra: object) -> dict[str, str]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/tmp"),
        "DATABASE_URL": url,
        "EMBEDDING_PROVIDER": "gemini",
        "GOOGLE_API_KEY": API_KEY,
        "GOOGLE_GEMINI_BASE_URL": sim_url,
        "EMBEDDING_LOG_FILE": str(logs / f"{name}.log"),
        "BATCH_EMBEDDING_DOTENV": str(logs / "no-dotenv"),
        "PYTHONUNBUFFERED": "1",
    }
    env.update({k: str(v) for k, v in extra.items()})
    return env


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc/<pid>/stat (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class Proc:
    def __init__(self, env: dict[str, str], *args: str, logs: Path, name: str) -> None:
        self.out = (logs / f"{name}.stderr").open("w", encoding="utf-8")
        self.proc = subprocess.Popen(
            [sys.executable, str(PROCESSOR), *args], cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=self.out
        )

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=60)
        self.out.close()
        return code


def embedded(url: str, where: str = "TRUE") -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(f"SELECT count(*) FROM chunks WHERE embedding IS NOT NULL AND {where}").fetchone()
        return int(row[0]) if row else 0


def wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise RuntimeError(f"timed out waiting for {what}")


def insert_and_time(url: str, text: str, index: int, timeout: float) -> float:
    """Insert one chunk; seconds until its vector is stored (polled every 5 ms)."""
    with psycopg.connect(url, autocommit=True) as conn:
        started = time.monotonic()
        row = conn.execute(
            "INSERT INTO chunks (doc_id, chunk_index, content) VALUES ('d', %s, %s) RETURNING id", (index, text)
        ).fetchone()
        assert row is not None
        while time.monotonic() - started < timeout:
            done = conn.execute("SELECT embedding IS NOT NULL FROM chunks WHERE id = %s", (row[0],)).fetchone()
            if done and done[0]:
                return time.monotonic() - started
            time.sleep(0.005)
    raise RuntimeError(f"chunk {index} was not embedded within {timeout:.0f}s")


def prepare(url: str) -> None:
    migrate(url)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("INSERT INTO document_sources (id, name, type) VALUES ('d', 'ベンチマーク.txt', 'txt')")


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {
        "n": len(values),
        "p50": round(statistics.median(ordered), 3),
        "p95": round(p95, 3),
        "max": round(ordered[-1], 3),
    }


def watcher_latency_and_idle(server: PgServer, sim: Any, logs: Path, args: argparse.Namespace) -> dict[str, Any]:
    with server.fresh_database("watch") as url:
        prepare(url)
        env = env_for(url, sim.base_url, logs, "watcher", EMBEDDING_WATCH_INTERVAL=args.sweep)
        watcher = Proc(env, "--watch", logs=logs, name="watcher")
        try:
            warm = insert_and_time(url, "起動直後の段落です。", 0, 120)  # the first run (process start, model)
            time.sleep(2)
            before = cpu_seconds(watcher.proc.pid)
            time.sleep(args.quiet_seconds)
            idle_cpu = cpu_seconds(watcher.proc.pid) - before
            rng = random.Random(7)
            latencies = []
            for i in range(args.inserts):
                time.sleep(rng.uniform(0.5, 2.0))
                latencies.append(insert_and_time(url, f"待機中に届いた段落{i}です。", i + 1, args.sweep + 30))
        finally:
            code = watcher.stop()
    return {
        "first_chunk_seconds": round(warm, 3),
        "latency": summary(latencies),
        "idle_cpu_seconds": round(idle_cpu, 3),
        "idle_cpu_percent_of_core": round(100 * idle_cpu / args.quiet_seconds, 3),
        "quiet_seconds": args.quiet_seconds,
        "exit_code": code,
    }


def baseline_poller(server: PgServer, sim: Any, logs: Path, args: argparse.Namespace) -> dict[str, Any]:
    """A cron-like poller: the plain command every `interval` seconds, while chunks are inserted at random."""
    interval = args.baseline_interval
    with server.fresh_database("cron") as url:
        prepare(url)
        env = env_for(url, sim.base_url, logs, "cron")
        stop_at = time.monotonic() + 10**9
        runs = 0
        cpu_before = children_cpu()
        import threading

        stopping = threading.Event()

        def poll() -> None:
            nonlocal runs
            while not stopping.is_set() and time.monotonic() < stop_at:
                subprocess.run(
                    [sys.executable, str(PROCESSOR), "-q"],
                    cwd=REPO,
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    check=False,
                )
                runs += 1
                stopping.wait(interval)

        thread = threading.Thread(target=poll, daemon=True)
        started = time.monotonic()
        thread.start()
        rng = random.Random(11)
        latencies = []
        for i in range(args.baseline_samples):
            time.sleep(rng.uniform(1.0, interval))
            latencies.append(insert_and_time(url, f"定期実行を待つ段落{i}です。", i, interval * 3 + 60))
        minute = time.monotonic() - started
        stopping.set()
        thread.join(timeout=120)
        cpu = children_cpu() - cpu_before
    return {
        "interval_seconds": interval,
        "latency": summary(latencies),
        "runs": runs,
        "cpu_seconds": round(cpu, 3),
        "observed_seconds": round(minute, 1),
        "cpu_percent_of_core": round(100 * cpu / minute, 3),
    }


def three_watchers(server: PgServer, sim: Any, logs: Path, args: argparse.Namespace) -> dict[str, Any]:
    with server.fresh_database("three") as url:
        prepare(url)
        sim.reset()
        env = env_for(url, sim.base_url, logs, "three", EMBEDDING_WATCH_INTERVAL=args.sweep, EMBEDDING_CONCURRENCY=2)
        watchers = [
            Proc({**env, "EMBEDDING_LOG_FILE": str(logs / f"three-{i}.log")}, "--watch", logs=logs, name=f"three-{i}")
            for i in range(3)
        ]
        texts = [
            f"バースト{b}の段落{i}: 社内規程の第{b * 100 + i}条を確認してください。"
            for b in range(args.chunks // 100)
            for i in range(100)
        ]
        try:
            time.sleep(3)  # let them start and idle
            started = time.monotonic()
            with psycopg.connect(url, autocommit=True) as conn:
                for b in range(0, len(texts), 100):
                    with conn.cursor() as cur:
                        cur.executemany(
                            "INSERT INTO chunks (doc_id, chunk_index, content) VALUES ('d', %s, %s)",
                            [(b + i, t) for i, t in enumerate(texts[b : b + 100])],
                        )
                    time.sleep(args.burst_gap)
            wait_for(lambda: embedded(url) == len(texts), 600, "every burst")
            drained = time.monotonic() - started
        finally:
            codes = [w.stop() for w in watchers]
        per_hash = sim.stats.snapshot().embeds_per_text
        counts = Counter(per_hash.get(text_sha256(t), 0) for t in texts)
        with psycopg.connect(url, autocommit=True) as conn:
            leased = conn.execute("SELECT count(*) FROM chunks WHERE embedding_lease_owner IS NOT NULL").fetchone()
            shares = conn.execute("SELECT count(*) FROM chunks GROUP BY embedded_by ORDER BY 1 DESC").fetchall()
    return {
        "chunks": len(texts),
        "bursts": len(texts) // 100,
        "seconds_to_drain": round(drained, 2),
        "embedded_exactly_once": counts.get(1, 0),
        "embedded_twice_or_more": sum(v for k, v in counts.items() if k >= 2),
        "never_embedded": counts.get(0, 0),
        "left_leased": int(leased[0]) if leased else -1,
        "per_watcher": [int(s[0]) for s in shares],
        "exit_codes": codes,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.watcher", description=__doc__.splitlines()[0])
    parser.add_argument("--inserts", type=int, default=20, help="inserts timed while the watcher idles")
    parser.add_argument("--quiet-seconds", type=float, default=60.0, help="the quiet minute for idle CPU")
    parser.add_argument("--sweep", type=float, default=30.0, help="EMBEDDING_WATCH_INTERVAL of the watchers")
    parser.add_argument("--baseline-interval", type=float, default=30.0, help="the cron-like poller's interval")
    parser.add_argument("--baseline-samples", type=int, default=8, help="inserts timed against the poller")
    parser.add_argument("--chunks", type=int, default=2000, help="chunks for the three watchers (bursts of 100)")
    parser.add_argument("--burst-gap", type=float, default=0.25, help="seconds between two bursts")
    parser.add_argument("--out", type=Path, default=RESULTS / "watcher.json")
    args = parser.parse_args(argv)
    logs = args.out.with_suffix("").with_name(args.out.stem + "_logs")
    logs.mkdir(parents=True, exist_ok=True)
    with PgServer() as server, run_simulator_in_thread(SimulatorConfig(api_key=API_KEY, latency_base_ms=15)) as sim:
        print("== watcher: wake-up latency and idle CPU", file=sys.stderr)
        watch = watcher_latency_and_idle(server, sim, logs, args)
        print("== baseline: a cron-like poller", file=sys.stderr)
        cron = baseline_poller(server, sim, logs, args)
        print("== three watchers, bursts", file=sys.stderr)
        three = three_watchers(server, sim, logs, args)
    result = {
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
        "watcher": watch,
        "baseline": cron,
        "three_watchers": three,
    }
    write_json(args.out, result)
    lw, lc = watch["latency"], cron["latency"]
    print(
        format_table(
            ["", "wake-up p50 (s)", "p95 (s)", "max (s)", "inserts", "idle CPU (% of a core)"],
            [
                [
                    f"--watch (LISTEN/NOTIFY, sweep {args.sweep:g} s)",
                    lw["p50"],
                    lw["p95"],
                    lw["max"],
                    lw["n"],
                    watch["idle_cpu_percent_of_core"],
                ],
                [
                    f"cron-like poller every {args.baseline_interval:g} s",
                    lc["p50"],
                    lc["p95"],
                    lc["max"],
                    lc["n"],
                    cron["cpu_percent_of_core"],
                ],
            ],
        )
    )
    print()
    print(
        format_table(
            [
                "3 watchers",
                "chunks",
                "bursts",
                "drained in (s)",
                "exactly once",
                "twice+",
                "never",
                "left leased",
                "per watcher",
            ],
            [
                [
                    "--watch ×3",
                    three["chunks"],
                    three["bursts"],
                    three["seconds_to_drain"],
                    three["embedded_exactly_once"],
                    three["embedded_twice_or_more"],
                    three["never_embedded"],
                    three["left_leased"],
                    " / ".join(str(n) for n in three["per_watcher"]),
                ]
            ],
        )
    )
    print(f"\nwritten: {args.out}", file=sys.stderr)
    ok = three["embedded_exactly_once"] == three["chunks"] and three["left_leased"] == 0 and lw["p95"] < 2.0
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
