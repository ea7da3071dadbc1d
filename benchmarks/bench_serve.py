"""Load test of `ductai serve` on loopback: throughput, latency, 503s and peak memory.

    .venv/bin/python benchmarks/bench_serve.py [--model models/default] [--clients 4]
        [--seconds 60] [--studies 2] [--paths sync,queued] [--queue-size 8]
        [--set key=value ...] [--summary FILE.json]

Starts the real server (`ductai serve`, its own process group, a temporary data_dir, DICOM
node off, a random bearer token) on a free loopback port, simulates ``--studies`` breasts
(full-field CC + MLO DICOMs, the simulator's default preset, fixed seed) and sends one
warm-up image. Then, for each path, ``--clients`` threads send work for ``--seconds``
(requests in flight at the end are awaited, and counted):

* ``sync``: one view per request, ``POST /v1/analyses/sync`` (`application/dicom` body),
  latency = request to answer;
* ``queued``: one breast (CC + MLO) per request, multipart ``POST /v1/analyses``, then
  ``GET /v1/analyses/{id}`` every 0.2 s until done or failed; latency = submit to done.

A client that gets 503 (queue full) waits for Retry-After (at most 2 s) and tries again; the
503s are counted. Throughput = views analysed / (last answer - phase start). Memory = peak
RSS of the server process and its children, sampled every 0.1 s (psutil when installed, else
/proc). Latency percentiles are nearest-rank over the requests that succeeded.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import httpx
from _common import add_summary_argument, figure, print_table, write_summary

ROOT = Path(__file__).resolve().parents[1]
SEED = 2026
POLL_S = 0.2
MAX_BACKOFF_S = 2.0
UNIT = {"sync": "view", "queued": "breast, 2 views"}  # what one request carries


# ---- inputs --------------------------------------------------------------------------------
def simulate(folder: Path, n_breasts: int) -> list[list[Path]]:
    """``n_breasts`` simulated breasts, full-field views; one list of DICOM paths per breast."""
    from ductai.simulation.generate import generate_dataset

    summary = generate_dataset(folder, n_breasts=n_breasts, seed=SEED)
    by_breast: dict[str, list[Path]] = {}
    for path in sorted(summary.images):
        # DUCTAI-SIM-<year>-<n>_<L|R><view>.dcm: the breast is the name before the view.
        by_breast.setdefault(path.stem.rsplit("_", 1)[0], []).append(Path(path))
    return list(by_breast.values())


# ---- the server ----------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ductai_command() -> list[str]:
    exe = Path(sys.executable).with_name("ductai")
    if exe.exists():
        return [str(exe)]
    found = shutil.which("ductai")
    return [found] if found else [sys.executable, "-m", "ductai"]


@dataclass
class Server:
    process: subprocess.Popen
    base_url: str
    token: str
    command: list[str]
    log: Path

    def stop(self, timeout: float = 30) -> None:
        if self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)  # the group: workers die with it
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
        except ProcessLookupError:
            pass


def start_server(args, data_dir: Path, log: Path) -> Server:
    port = free_port()
    token = os.urandom(16).hex()
    overrides = [
        "host=127.0.0.1",
        f"port={port}",
        f"data_dir={data_dir}",
        "dicom.enabled=false",
        f"queue_size={args.queue_size}",
        *([f"model={args.model}"] if args.model else []),
        *args.set,
    ]
    command = [*ductai_command(), "serve", *overrides]
    env = {**os.environ, "DUCTAI_SERVE_TOKENS": token}
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    server = Server(process, f"http://127.0.0.1:{port}", token, command, log)
    deadline = time.monotonic() + args.start_timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"ductai serve exited ({process.returncode}):\n{_tail(log)}")
        try:
            if httpx.get(f"{server.base_url}/readyz", timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    server.stop()
    raise SystemExit(f"ductai serve not ready after {args.start_timeout} s:\n{_tail(log)}")


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# ---- memory of the server's process tree ----------------------------------------------------
def tree_rss_bytes(pid: int) -> int:
    try:
        import psutil
    except ImportError:
        psutil = None
    if psutil is not None:
        try:
            root = psutil.Process(pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            return 0
        total = 0
        for p in procs:
            with contextlib.suppress(psutil.Error):  # exited since the listing
                total += p.memory_info().rss
        return total
    return sum(_proc_rss(p) for p in _proc_tree(pid))


def _proc_tree(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])  # after "(comm)": state, ppid
        children.setdefault(ppid, []).append(int(entry))
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo.extend(children.get(p, []))
    return tree


def _proc_rss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class MemorySampler(threading.Thread):
    """Peak RSS of the server tree; ``reset()`` starts a new phase's peak."""

    def __init__(self, pid: int, every_s: float = 0.1):
        super().__init__(daemon=True)
        self.pid, self.every_s = pid, every_s
        self.peak = self.overall = 0
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            rss = tree_rss_bytes(self.pid)
            self.peak = max(self.peak, rss)
            self.overall = max(self.overall, rss)
            self._halt.wait(self.every_s)

    def reset(self) -> None:
        self.peak = tree_rss_bytes(self.pid)

    def stop(self) -> None:
        self._halt.set()


# ---- clients ---------------------------------------------------------------------------------
@dataclass
class Tally:
    latencies: list[float] = field(default_factory=list)
    views: int = 0
    busy: int = 0  # 503 answers
    errors: list[str] = field(default_factory=list)
    last_done: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def ok(self, latency: float, views: int) -> None:
        with self.lock:
            self.latencies.append(latency)
            self.views += views
            self.last_done = time.perf_counter()

    def error(self, text: str) -> None:
        with self.lock:
            self.errors.append(text)
            self.last_done = time.perf_counter()


def _backoff(response: httpx.Response, until: float, tally: Tally) -> None:
    """A 503: count it, then wait as Retry-After says (at most MAX_BACKOFF_S)."""
    with tally.lock:
        tally.busy += 1
    try:
        wait = float(response.headers.get("Retry-After", 1))
    except ValueError:
        wait = 1.0
    time.sleep(max(0.0, min(wait, MAX_BACKOFF_S, until - time.perf_counter())))


def sync_client(http: httpx.Client, items: list[Path], start: int, until: float, tally: Tally):
    i = start
    while time.perf_counter() < until:
        path = items[i % len(items)]
        t0 = time.perf_counter()
        r = http.post(
            "/v1/analyses/sync",
            content=path.read_bytes(),
            headers={"Content-Type": "application/dicom"},
        )
        if r.status_code == 503:
            _backoff(r, until, tally)
            continue
        i += 1
        body = r.json() if r.headers.get("content-type", "").startswith("application/json") else {}
        if r.status_code == 200 and body.get("state") == "done":
            tally.ok(time.perf_counter() - t0, max(1, len(body.get("reports") or [])))
        else:
            tally.error(f"sync {path.name}: {r.status_code} {str(body or r.text)[:200]}")


def queued_client(http: httpx.Client, items: list[list[Path]], start: int, until: float, tally):
    i = start
    while time.perf_counter() < until:
        study = items[i % len(items)]
        t0 = time.perf_counter()
        files = [("files", (p.name, p.read_bytes(), "application/dicom")) for p in study]
        r = http.post("/v1/analyses", files=files)
        if r.status_code == 503:
            _backoff(r, until, tally)
            continue
        i += 1
        if r.status_code != 202:
            tally.error(f"queued {study[0].name}: {r.status_code} {r.text[:200]}")
            continue
        analysis = r.json()["id"]
        while True:  # a started analysis is awaited past `until`: its views count
            status = http.get(f"/v1/analyses/{analysis}").json()
            if status.get("state") in ("done", "failed"):
                break
            time.sleep(POLL_S)
        if status["state"] == "done":
            tally.ok(time.perf_counter() - t0, len(study))
        else:
            tally.error(f"queued {analysis}: failed: {status.get('error')}")


def run_phase(server: Server, name: str, args, breasts: list[list[Path]], memory) -> dict:
    views = [p for breast in breasts for p in breast]
    tally = Tally()
    memory.reset()
    start = time.perf_counter()
    until = start + args.seconds
    timeout = httpx.Timeout(args.request_timeout, connect=10)
    headers = {"Authorization": f"Bearer {server.token}"}
    threads = []
    for c in range(args.clients):
        http = httpx.Client(base_url=server.base_url, headers=headers, timeout=timeout)
        if name == "sync":
            target, items = sync_client, views
        else:
            target, items = queued_client, breasts
        t = threading.Thread(target=_guard, args=(target, http, items, c, until, tally))
        threads.append((t, http))
        t.start()
    for t, http in threads:
        t.join()
        http.close()
    elapsed = max(tally.last_done, until) - start if tally.views else args.seconds
    lat = sorted(tally.latencies)
    for text in tally.errors[:5]:
        print(f"  {name}: {text}", file=sys.stderr)
    return {
        "requests": len(lat),
        "views": tally.views,
        "views_per_s": tally.views / elapsed,
        "p50_s": percentile(lat, 50),
        "p95_s": percentile(lat, 95),
        "busy_503": tally.busy,
        "errors": len(tally.errors),
        "peak_rss_mb": memory.peak / 2**20,
        "wall_s": elapsed,
    }


def _guard(target, http, items, start, until, tally: Tally) -> None:
    # One broken connection must cost one request, not the whole client thread.
    while time.perf_counter() < until:
        try:
            target(http, items, start, until, tally)
            return
        except httpx.HTTPError as exc:
            tally.error(f"{type(exc).__name__}: {exc}")
            start += 1


def percentile(ordered: list[float], q: float) -> float:
    if not ordered:
        return float("nan")
    rank = max(1, -(-len(ordered) * q // 100))  # nearest rank: ceil(n q / 100)
    return ordered[int(rank) - 1]


# ---- main ------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", default="models/default", help="bundle, checkpoint or MLflow URI"
    )
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=60, help="per path")
    parser.add_argument("--studies", type=int, default=2, help="simulated breasts to cycle through")
    parser.add_argument("--paths", default="sync,queued")
    parser.add_argument("--queue-size", type=int, default=8, help="the server's queue_size")
    parser.add_argument("--set", nargs="*", default=[], help="more `ductai serve` key=value")
    parser.add_argument("--start-timeout", type=float, default=300)
    parser.add_argument("--request-timeout", type=float, default=600)
    parser.add_argument("--keep", action="store_true", help="keep the temporary data_dir")
    add_summary_argument(parser)
    args = parser.parse_args()
    if args.model and not args.model.startswith(("models:/", "runs:/")):
        args.model = (
            str((ROOT / args.model).resolve()) if not Path(args.model).is_absolute() else args.model
        )
    paths = [p.strip() for p in args.paths.split(",") if p.strip()]
    if unknown := set(paths) - {"sync", "queued"}:
        parser.error(f"--paths: unknown {sorted(unknown)} (sync, queued)")

    tmp = Path(tempfile.mkdtemp(prefix="bench_serve_"))
    t0 = time.perf_counter()
    breasts = simulate(tmp / "studies", args.studies)
    n_views = sum(len(b) for b in breasts)
    mb = sum(p.stat().st_size for b in breasts for p in b) / 2**20
    print(f"simulated {n_views} views ({mb:.0f} MB) in {time.perf_counter() - t0:.0f} s")

    server = start_server(args, tmp / "serve-data", tmp / "server.log")
    memory = MemorySampler(server.process.pid)
    memory.start()
    results: dict[str, dict] = {}
    try:
        idle_rss = tree_rss_bytes(server.process.pid) / 2**20
        t0 = time.perf_counter()
        warm = httpx.post(
            f"{server.base_url}/v1/analyses/sync",
            content=breasts[0][0].read_bytes(),
            headers={
                "Authorization": f"Bearer {server.token}",
                "Content-Type": "application/dicom",
            },
            timeout=args.request_timeout,
        )
        warm_s = time.perf_counter() - t0
        if warm.status_code != 200:
            raise SystemExit(f"warm-up request: {warm.status_code} {warm.text[:500]}")
        print(f"server ready, RSS {idle_rss:.0f} MB; warm-up view {warm_s:.1f} s")
        for name in paths:
            print(f"running {name}: {args.clients} clients, {args.seconds:g} s ...", flush=True)
            results[name] = run_phase(server, name, args, breasts, memory)
    finally:
        memory.stop()
        server.stop()
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"kept {tmp} (server log: {server.log})")

    print_table(
        f"ductai serve on loopback, {args.clients} clients x {args.seconds:g} s per path, "
        f"{os.cpu_count()} CPUs, model {Path(args.model).name if args.model else 'default'}",
        [
            "path",
            "requests",
            "views",
            "views/s",
            "p50 s",
            "p95 s",
            "503s",
            "errors",
            "peak RSS MB",
            "wall s",
        ],
        [
            [
                f"{name} ({UNIT[name]})",
                r["requests"],
                r["views"],
                r["views_per_s"],
                r["p50_s"],
                r["p95_s"],
                r["busy_503"],
                r["errors"],
                f"{r['peak_rss_mb']:.0f}",
                f"{r['wall_s']:.1f}",
            ]
            for name, r in results.items()
        ],
    )
    ratio = ""
    if {"sync", "queued"} <= results.keys() and results["sync"]["views_per_s"] > 0:
        ratio = f"{results['queued']['views_per_s'] / results['sync']['views_per_s']:.2f}x sync"
        print(f"\nqueued / sync throughput: {ratio}")
    print(
        f"peak RSS over the run: {memory.overall / 2**20:.0f} MB (after start: {idle_rss:.0f} MB)"
    )
    print(f"server: {shlex.join(server.command)}")
    python = Path(sys.executable)
    if python.is_relative_to(ROOT):
        python = python.relative_to(ROOT)
    print(f"command: {shlex.join([str(python), *sys.argv])}")

    area = f"server ({args.clients} clients, {args.seconds:g} s)"
    figures = []
    for name, r in results.items():
        figures += [
            figure(
                area,
                f"{name}: throughput",
                r["views_per_s"],
                "views/s",
                ratio if name == "queued" else "",
            ),
            figure(area, f"{name}: latency p50 ({UNIT[name]})", r["p50_s"], "s"),
            figure(area, f"{name}: latency p95 ({UNIT[name]})", r["p95_s"], "s"),
            figure(area, f"{name}: 503 answers", r["busy_503"], ""),
        ]
    figures.append(figure(area, "server peak RSS (process tree)", memory.overall / 2**20, "MB"))
    write_summary(args.summary, figures)


if __name__ == "__main__":
    main()
