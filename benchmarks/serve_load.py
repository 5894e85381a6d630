"""Load test of the studio (``atelier serve``): API overhead, dynamic batching, overload, job admission.

    python benchmarks/serve_load.py [--quick] [--threads 2] [--client raw|httpx]

Everything runs on 127.0.0.1. The model is a class-conditional DCGAN at 28 px with the default widths
(``create_model("dcgan", num_classes=10)``, about 2.8 M parameters), saved with ``save_pretrained`` and
left *untrained*: only speed is measured, and an untrained network costs exactly what a trained one does.
Its images are not alike, though: an untrained generator gives mid-grey noise, which PNG and npz compress
slowly and badly, where a trained one gives mostly black digits; the encoding costs are therefore also
measured on synthetic digit-like images (``direct.encode_digit_like``) -- the API numbers here are the
pessimistic ones.

Two servers are started as subprocesses through the CLI (``python -m atelier.cli serve --workers 0``),
each with its own temporary ``ATELIER_HOME`` and ``--db``: one with dynamic batching
(``--max-batch 64 --max-wait-ms 5``) and one with batching off (``--max-batch 1``). Their torch threads
are set with ``--threads`` (and ``OMP_NUM_THREADS``); this process calls ``torch.set_num_threads`` with
the same number. The default is half the CPUs: the server's event loop
and the load generator need the other half, and an OpenMP team with a thread per core stalls at its
barriers whenever anything else runs (on a shared 2-core machine, ``sample(64)`` with 2 threads swung
between 9 and 250 ms from one block of calls to the next; with 1 thread it stayed at 18-21 ms). The
machine's other load is reported per phase (``other_processes_cores_busy``). The phases:

1. direct: ``Pipeline.load(dir).sample(64)`` and ``sample(1)`` in this process (median images/s), while the
   servers are idle; plus the cost of encoding the answer (PNG grid, npz) and of the batcher's merged
   forward pass, to split the API's overhead into its parts;
2. API at n=64: sequential requests (one connection), ``format`` npz and png, in blocks alternating with
   blocks of direct calls; ratio to the direct call;
3. dynamic batching: a fixed number of concurrent single-image requests (closed loop, ``--concurrency``
   connections) against both servers, alternated over rounds; images/s, latency p50/p95/p99, 429 and
   5xx shares, the batcher's statistics from ``/v1/stats``, and CPU seconds of server and client;
4. overload: an open-loop request rate of twice the measured capacity for a bounded number of requests
   (latency counted from each request's scheduled start, so a slow server is not hidden by a slow client);
5. job admission: more principals each submitting one more job than ``jobs_per_user`` allows, until
   the queue (``queue_size``) is full: the 429s, their codes and Retry-After, first one request at a time,
   then (after cancelling) all at once, checking that the limits still hold under concurrency.

The load generator is, by default, a minimal HTTP/1.1 keep-alive client on asyncio streams (``raw``):
on a 2-core machine the client shares the CPU with the server, and httpx costs about 25 times more CPU
per request (measured: 3.5 ms against 0.13 ms; ``--client httpx`` uses it instead, for comparison). Server
CPU is read from /proc per phase, the event loop's (main) thread apart. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import itertools
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

MODEL_NAME = "cdcgan28"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
NPZ_MAGIC = b"PK"


# -- a minimal HTTP/1.1 client -------------------------------------------------------------------------


class RawConnection:
    """One keep-alive HTTP/1.1 connection: ``await request(...)`` -> (status, headers, body)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def request(self, method: str, path: str, token: str, body: bytes = b"") -> tuple[int, dict, bytes]:
        if self.writer is None:
            await self.open()
        assert self.reader is not None and self.writer is not None
        head = (f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\nAuthorization: Bearer {token}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode()
        self.writer.write(head + body)
        try:
            raw = await self.reader.readuntil(b"\r\n\r\n")
            lines = raw.decode("latin-1").split("\r\n")
            status = int(lines[0].split(" ", 2)[1])
            headers = {}
            for line in lines[1:]:
                if line:
                    k, _, v = line.partition(":")
                    headers[k.strip().lower()] = v.strip()
            if headers.get("transfer-encoding", "").lower() == "chunked":
                parts = []
                while True:
                    size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                    chunk = await self.reader.readexactly(size + 2)
                    if size == 0:
                        break
                    parts.append(chunk[:-2])
                data = b"".join(parts)
            else:
                data = await self.reader.readexactly(int(headers.get("content-length", "0")))
        except BaseException:
            self.close()
            raise
        if headers.get("connection", "").lower() == "close":
            self.close()
        return status, headers, data


class HttpxConnection:
    """The same interface over one ``httpx.AsyncClient`` (one pooled connection)."""

    def __init__(self, port: int) -> None:
        import httpx

        self.client = httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=120,
                                        limits=httpx.Limits(max_connections=1, max_keepalive_connections=1))

    async def request(self, method: str, path: str, token: str, body: bytes = b"") -> tuple[int, dict, bytes]:
        r = await self.client.request(method, path, content=body, headers={
            "Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        return r.status_code, {k.lower(): v for k, v in r.headers.items()}, r.content

    def close(self) -> None:
        pass  # the event loop that owns the client ends with the phase


def connection(kind: str, port: int):
    return RawConnection(port) if kind == "raw" else HttpxConnection(port)


# -- the servers ------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int, stat: str | None = None) -> float:
    """User + system CPU seconds of a process (Linux /proc), its threads included."""
    try:
        fields = Path(stat or f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


def _uvicorn_stack() -> str:
    """What uvicorn runs on (it picks uvloop and httptools when they are installed, else asyncio and h11)."""
    import importlib.util

    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    return f"single process, {http}, {loop} loop, access log off"


def main_thread_cpu_seconds(pid: int) -> float:
    """CPU seconds of a process's main thread (for the server: its event loop)."""
    return cpu_seconds(pid, f"/proc/{pid}/task/{pid}/stat")


def thread_count(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Threads:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def system_busy_s() -> float:
    """CPU seconds all processes of the machine have been busy (Linux /proc/stat; idle and iowait left out)."""
    try:
        f = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        return (f[0] + f[1] + f[2] + f[5] + f[6] + f[7]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


def loadavg() -> list[float]:
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return []


class Meter:
    """CPU seconds over a phase: the servers', this process's, and everyone else's (the machine's noise)."""

    def __init__(self, servers: list["Server"]) -> None:
        self.servers = servers
        self.t, self.own, self.busy = time.perf_counter(), time.process_time(), system_busy_s()
        self.srv = [s.cpu() for s in servers]
        self.loop = main_thread_cpu_seconds(servers[0].proc.pid) if servers[0].proc else float("nan")

    def read(self, requests: int) -> dict:
        elapsed = time.perf_counter() - self.t
        srv = [s.cpu() - c for s, c in zip(self.servers, self.srv)]
        loop = (main_thread_cpu_seconds(self.servers[0].proc.pid) if self.servers[0].proc else float("nan")) - self.loop
        own = time.process_time() - self.own
        foreign = system_busy_s() - self.busy - sum(srv) - own
        return {"server_cpu_s": round(srv[0], 2), "server_cores_busy": round(srv[0] / elapsed, 2),
                "server_event_loop_thread_busy": round(loop / elapsed, 2),
                "server_cpu_ms_per_request": round(1000 * srv[0] / max(1, requests), 3),
                "client_cpu_ms_per_request": round(1000 * own / max(1, requests), 3),
                "other_processes_cores_busy": round(max(0.0, foreign) / elapsed, 2)}


class Server:
    """``python -m atelier.cli serve`` in a subprocess with its own home and database."""

    def __init__(self, name: str, models: Path, root: Path, threads: int, max_batch: int, max_wait_ms: float) -> None:
        self.name, self.port = name, free_port()
        home = root / f"home-{name}"
        home.mkdir(parents=True)
        self.db_path = home / "studio.sqlite"
        self.log_path = root / f"server-{name}.log"
        self.env = {**os.environ, "ATELIER_HOME": str(home), "OMP_NUM_THREADS": str(threads),
                    "MKL_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
        self.args = [sys.executable, "-m", "atelier.cli", "serve", "--models", str(models), "--db",
                     str(home / "studio.sqlite"), "--host", "127.0.0.1", "--port", str(self.port), "--workers", "0",
                     "--max-batch", str(max_batch), "--max-wait-ms", str(max_wait_ms), "--threads", str(threads),
                     "--generate-rate", ""]  # capacity is measured: no per-user image quota
        self.settings = {"max_batch": max_batch, "max_wait_ms": max_wait_ms, "workers": 0, "torch_threads": threads,
                         "env": {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}}
        self.token = ""
        self.proc: subprocess.Popen | None = None
        self._lines: list[str] = []

    def start(self) -> None:
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(self.args, env=self.env, stdout=subprocess.PIPE, stderr=self.log, text=True)
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.append(line.rstrip())

    def wait_ready(self, timeout: float = 120.0) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"server {self.name} exited ({self.proc.returncode}): "
                                   f"{self.log_path.read_text()[-2000:]}")
            for line in self._lines:
                if "admin token:" in line:
                    self.token = line.split("admin token:", 1)[1].strip()
            if self.token:
                try:
                    if httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=2).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
            time.sleep(0.1)
        raise TimeoutError(f"server {self.name} did not answer /healthz within {timeout:.0f} s")

    def get(self, path: str) -> dict:
        import httpx

        r = httpx.get(f"http://127.0.0.1:{self.port}{path}", headers={"Authorization": f"Bearer {self.token}"},
                      timeout=30)
        r.raise_for_status()
        return r.json()

    def post(self, path: str, body: dict, token: str | None = None):
        import httpx

        return httpx.post(f"http://127.0.0.1:{self.port}{path}", json=body, timeout=30,
                          headers={"Authorization": f"Bearer {token or self.token}"})

    def batching(self) -> dict:
        return self.get("/v1/stats")["batching"].get(MODEL_NAME, {"requests": 0, "images": 0, "batches": 0,
                                                                  "largest": 0})

    def cpu(self) -> float:
        return cpu_seconds(self.proc.pid) if self.proc else float("nan")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if getattr(self, "log", None):
            self.log.close()


def stats_delta(before: dict, after: dict) -> dict:
    d = {k: after[k] - before.get(k, 0) for k in ("requests", "images", "batches")}
    d["mean_batch_images"] = round(d["images"] / d["batches"], 2) if d["batches"] else 0.0
    d["largest_so_far"] = after.get("largest", 0)
    return d


# -- measurements ------------------------------------------------------------------------------------


def median_time(fn, repeats: int, warmup: int = 5) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def digit_like(n: int) -> torch.Tensor:
    """(n, 1, 28, 28) uint8 images shaped like MNIST digits (a few soft strokes on black), for encoding costs."""
    g = torch.Generator().manual_seed(0)
    y = torch.zeros(n, 1, 28, 28)
    for i in range(n):
        for _ in range(6):
            cx, cy = (int(v) for v in torch.randint(8, 20, (2,), generator=g))
            y[i, 0, cy - 2:cy + 3, cx - 1:cx + 2] = 1.0
    y = torch.nn.functional.avg_pool2d(y, 3, 1, 1)
    return (y.clamp(0, 1) * 255).to(torch.uint8)


def direct(model_dir: Path, repeats: int) -> dict:
    """Costs measured in this process: sampling, encoding the answers, the batcher's merged forward pass."""
    from atelier.pipelines import Pipeline
    from atelier.serve.batching import GenerateRequest, generate_batch
    from atelier.serve.operations import encode_samples

    pipe = Pipeline.load(model_dir)
    seeds = itertools.count(1000)
    t64 = median_time(lambda: pipe.sample(64, seed=next(seeds)), repeats)
    t1 = median_time(lambda: pipe.sample(1, seed=next(seeds)), repeats * 5)
    images64 = pipe.sample(64, seed=1)
    labels64 = torch.arange(64) % 10
    one = pipe.sample(1, seed=2)
    enc = {
        "png_n64_ms": 1000 * median_time(lambda: encode_samples(images64, labels64, "png", pipe.class_names), repeats),
        "npz_n64_ms": 1000 * median_time(lambda: encode_samples(images64, labels64, "npz", pipe.class_names), repeats),
        "png_n1_ms": 1000 * median_time(lambda: encode_samples(one, labels64[:1], "png", pipe.class_names),
                                        repeats * 5),
    }
    digits = digit_like(64)
    enc_digits = {
        "png_n64_ms": 1000 * median_time(lambda: encode_samples(digits, labels64, "png", pipe.class_names), repeats),
        "npz_n64_ms": 1000 * median_time(lambda: encode_samples(digits, labels64, "npz", pipe.class_names), repeats),
        "png_n64_bytes": len(encode_samples(digits, labels64, "png").data),
        "npz_n64_bytes": len(encode_samples(digits, labels64, "npz").data),
    }
    enc["png_n64_bytes"] = len(encode_samples(images64, labels64, "png").data)
    enc["npz_n64_bytes"] = len(encode_samples(images64, labels64, "npz").data)
    # the batcher's merged forward pass: 64 requests of one image each (64 generators, 64 latent draws)
    reqs = [GenerateRequest(1, s) for s in range(64)]
    t_merged = median_time(lambda: generate_batch(pipe.model, reqs), repeats)
    return {
        "sample_n64": {"images_per_s": round(64 / t64, 1), "ms_per_call": round(1000 * t64, 2)},
        "sample_n1": {"images_per_s": round(1 / t1, 1), "ms_per_call": round(1000 * t1, 3)},
        "encode": {k: round(v, 3) for k, v in enc.items()},
        "encode_digit_like": {k: round(v, 3) for k, v in enc_digits.items()},
        "batcher_forward_64x1": {"images_per_s": round(64 / t_merged, 1), "ms_per_call": round(1000 * t_merged, 2)},
        "repeats": repeats,
    }


def percentiles(latencies: list[float]) -> dict:
    if not latencies:
        return {"p50_ms": None, "p95_ms": None, "p99_ms": None, "max_ms": None}
    a = np.asarray(latencies) * 1000
    return {"p50_ms": round(float(np.percentile(a, 50)), 2), "p95_ms": round(float(np.percentile(a, 95)), 2),
            "p99_ms": round(float(np.percentile(a, 99)), 2), "max_ms": round(float(a.max()), 2)}


def summarize(results: list[tuple[int, float, bool]], elapsed: float, images_per_request: int) -> dict:
    """results: (status, latency s, body looked right) per request; status -1 is a connection error."""
    n = len(results)
    ok = [r for r in results if r[0] == 200]
    s429 = sum(r[0] == 429 for r in results)
    s5xx = sum(500 <= r[0] < 600 for r in results)
    return {
        "requests": n, "ok": len(ok), "elapsed_s": round(elapsed, 3),
        "requests_per_s": round(len(ok) / elapsed, 1) if elapsed else None,
        "images_per_s": round(len(ok) * images_per_request / elapsed, 1) if elapsed else None,
        "latency_ok": percentiles([r[1] for r in ok]),
        "share_429": round(s429 / n, 4) if n else 0.0, "count_5xx": s5xx,
        "other_status": {str(k): v for k, v in sorted(_count(r[0] for r in results
                                                               if r[0] not in (200, 429) and not 500 <= r[0] < 600))},
        "bad_bodies": sum(1 for r in ok if not r[2]),
    }


def _count(values) -> dict:
    out: dict = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return out


def body_ok(fmt: str, data: bytes) -> bool:
    return data.startswith(PNG_MAGIC if fmt == "png" else NPZ_MAGIC)


async def closed_loop(client: str, port: int, token: str, *, n: int, fmt: str, total: int, concurrency: int,
                      time_limit: float, seed0: int = 0) -> tuple[list, float]:
    """``concurrency`` connections each sending its next request when the previous one is answered."""
    path = f"/v1/models/{MODEL_NAME}/generate"
    counter = itertools.count()
    results: list[tuple[int, float, bool]] = []
    start = time.perf_counter()
    deadline = start + time_limit

    async def worker() -> None:
        conn = connection(client, port)
        try:
            while True:
                i = next(counter)
                if i >= total or time.perf_counter() > deadline:
                    return
                body = json.dumps({"n": n, "seed": seed0 + i, "format": fmt}).encode()
                t = time.perf_counter()
                try:
                    status, _h, data = await conn.request("POST", path, token, body)
                except (OSError, asyncio.IncompleteReadError, ValueError):
                    status, data = -1, b""
                results.append((status, time.perf_counter() - t, status != 200 or body_ok(fmt, data)))
        finally:
            conn.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return results, time.perf_counter() - start


async def open_loop(client: str, port: int, token: str, *, rate: float, count: int, max_connections: int,
                    drain_s: float, fmt: str = "png", seed0: int = 0) -> dict:
    """``count`` single-image requests started at ``rate`` per second whatever the answers; latency is
    counted from each request's scheduled start (no coordinated omission)."""
    path = f"/v1/models/{MODEL_NAME}/generate"
    idle: list = []
    opened = 0
    gate = asyncio.Semaphore(max_connections)
    results: list[tuple[int, float, bool]] = []
    retry_after: list[str] = []

    async def one(i: int, scheduled: float) -> None:
        nonlocal opened
        async with gate:
            if idle:
                conn = idle.pop()
            else:
                conn, opened = connection(client, port), opened + 1
            body = json.dumps({"n": 1, "seed": seed0 + i, "format": fmt}).encode()
            try:
                status, headers, data = await conn.request("POST", path, token, body)
                if status == 429:
                    retry_after.append(headers.get("retry-after", ""))
            except (OSError, asyncio.IncompleteReadError, ValueError):
                status, data = -1, b""
            results.append((status, time.perf_counter() - scheduled, status != 200 or body_ok(fmt, data)))
            idle.append(conn)

    start = time.perf_counter()
    tasks = []
    lag = 0.0
    for i in range(count):
        scheduled = start + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        else:
            lag = max(lag, -delay)
        tasks.append(asyncio.create_task(one(i, scheduled)))
    sent = time.perf_counter() - start
    done, pending = await asyncio.wait(tasks, timeout=drain_s)
    for t in pending:
        t.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    elapsed = time.perf_counter() - start
    for conn in idle:
        conn.close()
    out = summarize(results, elapsed, 1)
    out.update({"offered_rate_per_s": round(rate, 1), "scheduled": count, "unfinished_after_drain": len(pending),
                "send_span_s": round(sent, 3), "max_client_lag_ms": round(1000 * lag, 1),
                "connections_opened": opened, "retry_after_values": sorted(set(retry_after))})
    return out


def run_async(coro):
    return asyncio.run(coro)


def api_vs_direct_n64(server: Server, client: str, model_dir: Path, rounds: int, block: int = 5) -> dict:
    """n=64, in alternating blocks: ``block`` direct ``Pipeline.sample(64)`` calls here (the server idle),
    then ``block`` API requests with format npz, then ``block`` with png, for ``rounds`` rounds; the median
    per kind over all rounds. Blocks rather than strict alternation: a process's OpenMP threads spin for a
    while after a parallel region, which would slow the other process's next call; alternating blocks still
    spreads the machine's other load (which comes and goes) over every kind alike."""
    from atelier.pipelines import Pipeline

    pipe = Pipeline.load(model_dir)
    path = f"/v1/models/{MODEL_NAME}/generate"
    times: dict[str, list[float]] = {"direct": [], "npz": [], "png": []}
    bad: dict[str, int] = {"npz": 0, "png": 0}
    statuses: list[int] = []
    seeds = itertools.count(50_000)

    async def go() -> None:
        conn = connection(client, server.port)
        for r in range(rounds + 1):  # round 0 is a warm-up
            for kind in ("direct", "npz", "png"):
                for _ in range(block):
                    seed = next(seeds)
                    t = time.perf_counter()
                    if kind == "direct":
                        pipe.sample(64, seed=seed)
                    else:
                        body = json.dumps({"n": 64, "seed": seed, "format": kind}).encode()
                        status, _h, data = await conn.request("POST", path, server.token, body)
                        statuses.append(status)
                        bad[kind] += status == 200 and not body_ok(kind, data)
                    if r:
                        times[kind].append(time.perf_counter() - t)
                await asyncio.sleep(0.05)
        conn.close()

    meter = Meter([server])
    asyncio.run(go())
    m = meter.read(1)
    med = {k: statistics.median(v) for k, v in times.items()}
    out: dict = {"rounds": rounds, "block": block,
                 "direct_sample_n64": {"images_per_s": round(64 / med["direct"], 1),
                                       "ms_per_call_p50": round(1000 * med["direct"], 2),
                                       "ms_per_call_max": round(1000 * max(times["direct"]), 2)}}
    for fmt in ("npz", "png"):
        out[fmt] = {"images_per_s": round(64 / med[fmt], 1), "ms_per_request_p50": round(1000 * med[fmt], 2),
                    "ms_per_request_max": round(1000 * max(times[fmt]), 2),
                    "ratio_to_direct": round(med["direct"] / med[fmt], 3), "bad_bodies": bad[fmt]}
    out["status_counts"] = {str(k): v for k, v in _count(statuses).items()}
    out["count_5xx"] = sum(500 <= x < 600 for x in statuses)
    out["goal"] = "ratio_to_direct >= 0.9"
    out["other_processes_cores_busy"] = m["other_processes_cores_busy"]
    return out


def batching_round(server: Server, client: str, *, total: int, concurrency: int, time_limit: float,
                   seed0: int, others: tuple = ()) -> dict:
    before = server.batching()
    meter = Meter([server, *others])
    results, elapsed = run_async(closed_loop(client, server.port, server.token, n=1, fmt="png", total=total,
                                             concurrency=concurrency, time_limit=time_limit, seed0=seed0))
    s = summarize(results, elapsed, 1)
    s["hit_time_limit"] = len(results) < total
    s.update(meter.read(len(results)))
    s["batching"] = stats_delta(before, server.batching())
    return s


def job_admission(server: Server, principals: int, per_user: int, queue_size: int) -> dict:
    """Principals each submit ``per_user + 1`` generate jobs (the server has no workers: they stay queued)."""
    from concurrent.futures import ThreadPoolExecutor

    tokens = []
    for i in range(principals):
        r = server.post("/v1/tokens", {"principal": f"bench{i:03d}", "scopes": ["read", "generate"]})
        r.raise_for_status()
        tokens.append(r.json()["token"])
    body = {"kind": "generate", "model": MODEL_NAME, "params": {"n": 64, "format": "npz"}}

    def submit(token: str):
        t = time.perf_counter()
        r = server.post("/v1/jobs", body, token)
        code = r.json().get("error", {}).get("code") if r.status_code != 202 else None
        return token, r.status_code, code, r.headers.get("retry-after"), time.perf_counter() - t, \
            r.json().get("id") if r.status_code == 202 else r.json()["error"]["message"]

    def tally(rows) -> dict:
        accepted = [r for r in rows if r[1] == 202]
        per_token = _count(r[0] for r in accepted)
        rejected = [r for r in rows if r[1] == 429]
        kinds = _count("per_user" if "per user" in r[5] else "queue_full" for r in rejected)
        return {"submitted": len(rows), "accepted": len(accepted), "status_429": len(rejected),
                "status_5xx": sum(500 <= r[1] < 600 for r in rows),
                "other_status": {str(k): v for k, v in _count(r[1] for r in rows if r[1] not in (202, 429)).items()},
                "reasons_429": kinds, "retry_after": {str(k): v for k, v in _count(r[3] for r in rejected).items()},
                "max_accepted_per_principal": max(per_token.values(), default=0),
                "limits_held": len(accepted) <= queue_size and max(per_token.values(), default=0) <= per_user,
                "latency": percentiles([r[4] for r in rows])}

    order = [t for t in tokens for _ in range(per_user + 1)]  # each principal's submissions in a row
    sequential = [submit(t) for t in order]
    out = {"principals": principals, "jobs_per_user": per_user, "queue_size": queue_size,
           "sequential": tally(sequential)}
    # cancel every queued job, then the same submissions all at once (16 threads)
    for token, status, _c, _r, _t, job_id in sequential:
        if status == 202:
            server.post(f"/v1/jobs/{job_id}/cancel", {}, token)
    with ThreadPoolExecutor(16) as pool:
        concurrent = list(pool.map(submit, order))
    out["concurrent_16_threads"] = tally(concurrent)
    return out


# -- main ----------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a small version (under a minute)")
    parser.add_argument("--threads", type=int, default=max(1, (os.cpu_count() or 2) // 2),
                        help="torch threads, here and in the servers (OMP_NUM_THREADS); default: half the CPUs")
    parser.add_argument("--client", choices=("raw", "httpx"), default="raw", help="the load generator's HTTP client")
    parser.add_argument("--concurrency", type=int, default=None, help="concurrent single-image requests (64; quick 32)")
    parser.add_argument("--requests", type=int, default=None, help="requests per batching round (2000; quick 300)")
    parser.add_argument("--rounds", type=int, default=None, help="alternating batching rounds per server (3; quick 1)")
    parser.add_argument("--time-limit", type=float, default=None, help="seconds per load round (60; quick 12)")
    parser.add_argument("--overload-s", type=float, default=None, help="seconds of offered overload (20; quick 4)")
    args = parser.parse_args()
    quick = args.quick
    concurrency = args.concurrency or (32 if quick else 64)
    total = args.requests or (300 if quick else 2000)
    rounds = args.rounds or (1 if quick else 3)
    time_limit = args.time_limit or (12.0 if quick else 60.0)
    overload_s = args.overload_s or (4.0 if quick else 20.0)
    repeats = 5 if quick else 15
    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    load_start = loadavg()

    from atelier.models.registry import create_model
    from atelier.serve.settings import ServeConfig

    defaults = ServeConfig()
    root = Path(tempfile.mkdtemp(prefix="atelier-serve-load-"))
    models = root / "models"
    torch.manual_seed(0)
    model = create_model("dcgan", num_classes=10)
    model_dir = models / MODEL_NAME
    model.save_pretrained(model_dir)
    params = sum(p.numel() for p in model.parameters())
    g_params = sum(p.numel() for n_, p in model.named_parameters() if n_.startswith("generator."))
    del model

    batched = Server("batched", models, root, args.threads, max_batch=64, max_wait_ms=5.0)
    unbatched = Server("unbatched", models, root, args.threads, max_batch=1, max_wait_ms=5.0)
    result: dict = {}
    try:
        for s in (batched, unbatched):
            s.start()
        for s in (batched, unbatched):
            s.wait_ready()
        probe = subprocess.run([sys.executable, "-c", "import torch; print(torch.get_num_threads())"], env=batched.env,
                               capture_output=True, text=True, check=True)
        server_threads = int(probe.stdout.strip())

        # 1. direct, in this process, while both servers are idle
        meter = Meter([batched, unbatched])
        direct_result = direct(model_dir, repeats)
        direct_result["other_processes_cores_busy"] = meter.read(1)["other_processes_cores_busy"]

        # 2. API at n=64, sequential, in blocks alternating with direct calls
        api64 = api_vs_direct_n64(batched, args.client, model_dir, 2 if quick else 6)

        # 3. dynamic batching vs batching off, alternating rounds; sequential n=1 latency floor first
        floor = {}
        for s in (batched, unbatched):
            res, el = run_async(closed_loop(args.client, s.port, s.token, n=1, fmt="png", total=50 if quick else 200,
                                            concurrency=1, time_limit=time_limit, seed0=30_000))
            floor[s.name] = summarize(res, el, 1)
        for s in (batched, unbatched):  # warm-up at full concurrency
            run_async(closed_loop(args.client, s.port, s.token, n=1, fmt="png", total=concurrency * 2,
                                  concurrency=concurrency, time_limit=time_limit, seed0=40_000))
        runs: dict[str, list] = {"batched": [], "unbatched": []}
        for r in range(rounds):
            for s in (batched, unbatched) if r % 2 == 0 else (unbatched, batched):
                other = unbatched if s is batched else batched
                runs[s.name].append(batching_round(s, args.client, total=total, concurrency=concurrency,
                                                   time_limit=time_limit, seed0=100_000 * (r + 1), others=(other,)))
        med = {k: statistics.median(x["images_per_s"] for x in v) for k, v in runs.items()}
        batching = {"concurrency": concurrency, "requests_per_round": total, "rounds": rounds, "format": "png",
                    "sequential_n1": floor, "batched": runs["batched"], "unbatched": runs["unbatched"],
                    "median_images_per_s": med,
                    "speedup": round(med["batched"] / med["unbatched"], 2) if med["unbatched"] else None,
                    "goal": ">= 3x"}
        if not quick:  # how throughput grows with concurrency (batched server)
            sweep = {}
            for c in (1, 4, 16, 32, 64, 128):
                sweep[str(c)] = batching_round(batched, args.client, total=max(100, min(1000, 25 * c)),
                                               concurrency=c, time_limit=20, seed0=900_000 + c, others=(unbatched,))
                sweep[str(c)] = {k: sweep[str(c)][k] for k in ("images_per_s", "latency_ok", "batching",
                                                                "server_cores_busy", "server_event_loop_thread_busy",
                                                                "server_cpu_ms_per_request",
                                                                "other_processes_cores_busy")}
            batching["concurrency_sweep_batched"] = sweep

        # 4. overload: twice the measured capacity, open loop
        capacity = med["batched"]
        rate = 2 * capacity
        count = int(rate * overload_s)
        before, meter = batched.batching(), Meter([batched, unbatched])
        over = run_async(open_loop(args.client, batched.port, batched.token, rate=rate, count=count,
                                   max_connections=512, drain_s=overload_s + 30, seed0=500_000))
        over["batching"] = stats_delta(before, batched.batching())
        over.update(meter.read(over["requests"]))
        over["capacity_per_s_used"] = round(capacity, 1)
        over["note"] = ("quick generation has no admission limit: excess requests wait in the batcher's "
                        "unbounded queue instead of getting 429. At most 512 requests are in flight from the "
                        "client; later ones wait for a connection, and that wait counts in their latency "
                        "(measured from the scheduled start)")

        # 5. job admission
        jobs = job_admission(batched, principals=defaults.queue_size // defaults.jobs_per_user + 8,
                             per_user=defaults.jobs_per_user, queue_size=defaults.queue_size)

        result = {
            "benchmark": "serve_load", "quick": quick, "date": dt.datetime.now().isoformat(timespec="seconds"),
            "machine": {"cpus": os.cpu_count(), "loadavg_1_5_15_at_start": load_start,
                        "loadavg_1_5_15_at_end": loadavg(), "affinity": len(os.sched_getaffinity(0)),
                        "cpu": platform.processor() or platform.machine(), "python": platform.python_version(),
                        "torch": torch.__version__},
            "threads": {"benchmark_process_torch": torch.get_num_threads(), "server_torch": server_threads,
                        "server_env": batched.settings["env"],
                        "server_os_threads_at_end": thread_count(batched.proc.pid) if batched.proc else None},
            "client": args.client,
            "model": {"name": "dcgan", "num_classes": 10, "resolution": 28, "parameters": params,
                      "generator_parameters": g_params, "trained": False,
                      "note": "untrained weights: speed is what is measured; the forward pass costs the same "
                              "whatever the weights, but the untrained model's mid-grey noise compresses slower "
                              "and larger than trained digits (see direct.encode_digit_like)"},
            "servers": {"batched": batched.settings, "unbatched": unbatched.settings,
                        "queue_size": defaults.queue_size, "jobs_per_user": defaults.jobs_per_user,
                        "max_n": defaults.max_n, "uvicorn": _uvicorn_stack()},
            "summary": {
                "api_n64_ratio_to_direct": {"npz": api64["npz"]["ratio_to_direct"],
                                            "png": api64["png"]["ratio_to_direct"], "goal": 0.9},
                "batching_speedup": batching["speedup"], "batching_speedup_goal": 3.0,
                "batched_images_per_s": med["batched"], "unbatched_images_per_s": med["unbatched"],
                "count_5xx": sum(x["count_5xx"] for v in runs.values() for x in v) + over["count_5xx"]
                + api64["count_5xx"],
                "overload_share_429": over["share_429"], "overload_p99_ms": over["latency_ok"]["p99_ms"],
                "job_429s_sequential": jobs["sequential"]["status_429"],
                "job_limits_held_under_concurrency": jobs["concurrent_16_threads"]["limits_held"],
            },
            "direct": direct_result,
            "api_n64_sequential": api64,
            "dynamic_batching": batching,
            "overload": over,
            "jobs": jobs,
        }
    finally:
        for s in (batched, unbatched):
            s.stop()
        # after all that load, the audit trail of each server must still verify
        audit = {}
        for s in (batched, unbatched):
            r = subprocess.run([sys.executable, "-m", "atelier.cli", "serve", "audit", "verify", "--db", str(s.db_path)],
                               capture_output=True, text=True, timeout=300)
            audit[s.name] = {"verified": r.returncode == 0, "said": (r.stdout or r.stderr).strip()}
        shutil.rmtree(root, ignore_errors=True)
    result["audit_trail"] = audit
    result["summary"]["audit_trail_verifies"] = all(v["verified"] for v in audit.values())
    result["total_s"] = round(time.perf_counter() - t_start, 1)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
