"""Requests per second of ``codi2 serve`` with request batching against the same server without.

Two servers run the shipped toy model side by side (``codi2 serve --max-batch 8`` and
``--max-batch 1``, each its own process with ``--threads`` torch threads); each round sends
``--clients`` concurrent clients (32) one chat request each (the toy world's tasks of
``batch_throughput.py``: drawing, captioning, playing, editing; inline PNG where the task takes
an image; fixed seeds) to one server, then to the other (A B, B A, ...). The run first checks
that both servers give the same answers (text and tokens) to the same requests.

Figures: ``requests_per_s_ratio`` = median round time without batching / with it, by the
servers' CPU time (their processes' user + system time during the round: steadier on a shared
machine) and by the wall clock the clients see.

    python benchmarks/server_throughput.py [--json] [--repeats N] [--clients 32] [--max-batch 8]
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # first: it sets the offline environment before any model library loads
from batch_throughput import toy_prompts


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Server:
    """``codi2 serve`` with the toy model in its own process."""

    def __init__(self, max_batch: int, threads: int, clients: int):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "OMP_NUM_THREADS": str(threads or os.cpu_count()), "HF_HUB_OFFLINE": "1"}
        root = Path(__file__).resolve().parent.parent
        env["PYTHONPATH"] = os.pathsep.join([str(root), env.get("PYTHONPATH", "")])
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "codi2", "--quiet", "serve", "--model", "toy", "--port", str(self.port),
             "--max-batch", str(max_batch), "--max-queue", str(max(64, 2 * clients)), "--timeout", "600"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip

    def wait_ready(self) -> Server:
        import httpx

        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"the server exited: {self.proc.stderr.read()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                time.sleep(0.3)
        self.close()
        raise SystemExit("the server did not start in 180 s")

    def health(self) -> dict:
        import httpx

        return httpx.get(f"{self.url}/health", timeout=10).json()

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def requests_for(clients: int) -> list[dict]:
    from codi2.core.media import media_to_bytes

    prompts, media = toy_prompts(clients)
    out = []
    for i, (prompt, items) in enumerate(zip(prompts, media)):
        content: list[dict] = []
        for piece in re.split(r"(\{\w+\})", prompt):
            if re.fullmatch(r"\{\w+\}", piece):
                data = base64.b64encode(media_to_bytes(items[piece[1:-1]], "png")).decode("ascii")
                content.append({"type": "image", "data": data})
            elif piece:
                content.append({"type": "text", "text": piece})
        out.append({"messages": [{"role": "user", "content": content}], "seed": i, "store": False})
    return out


async def _round(url: str, requests: list[dict]) -> list[dict]:
    import httpx

    async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=len(requests))) as client:

        async def one(request: dict) -> dict:
            response = await client.post(f"{url}/v1/chat/completions", json=request)
            response.raise_for_status()
            return response.json()

        return await asyncio.gather(*(one(r) for r in requests))


def main(argv: list[str] | None = None) -> dict:
    parser = _common.base_parser(__doc__.splitlines()[0], repeats=3, warmup=1)
    parser.add_argument("--clients", type=int, default=32, help="concurrent clients, one request each per round (default 32)")
    parser.add_argument("--max-batch", type=int, default=8, help="the batching server's --max-batch (default 8)")
    args = parser.parse_args(argv)
    requests = requests_for(args.clients)
    servers = {"batched": Server(args.max_batch, args.threads, args.clients), "unbatched": Server(1, args.threads, args.clients)}
    for server in servers.values():  # both load at once
        server.wait_ready()
    wall: dict[str, list[float]] = {n: [] for n in servers}
    cpu: dict[str, list[float]] = {n: [] for n in servers}
    answers: dict[str, list[dict]] = {}
    try:
        names = list(servers)
        for i in range(args.warmup + args.repeats):
            for name in names if i % 2 == 0 else names[::-1]:
                server = servers[name]
                started, cpu0 = time.perf_counter(), _cpu_seconds(server.proc.pid)
                answers[name] = asyncio.run(_round(server.url, requests))
                if i >= args.warmup:
                    wall[name].append(time.perf_counter() - started)
                    cpu[name].append(_cpu_seconds(server.proc.pid) - cpu0)
        batching = servers["batched"].health()["batching"]
    finally:
        for server in servers.values():
            server.close()

    def key(answer: dict) -> tuple:
        content = re.sub(r"\(http[^)]*\)", "(URL)", answer["choices"][0]["message"]["content"])  # ports differ
        return content, answer["usage"]["completion_tokens"]

    mismatches = sum(key(a) != key(b) for a, b in zip(answers["batched"], answers["unbatched"]))
    report = _common.Report("server_throughput")
    med = {n: (_common.median(wall[n]), _common.median(cpu[n])) for n in servers}
    report.add("requests_per_s_ratio", med["unbatched"][1] / med["batched"][1], "x", None,
               f"{args.clients} concurrent clients, --max-batch {args.max_batch} vs 1 (servers' CPU time)")  # fmt: skip
    report.add("requests_per_s_ratio_by_wall", med["unbatched"][0] / med["batched"][0], "x")
    report.add("batched_requests_per_s", args.clients / med["batched"][0], "req/s", note="wall")
    report.add("unbatched_requests_per_s", args.clients / med["unbatched"][0], "req/s", note="wall")
    report.details.update({
        "clients": args.clients, "max_batch": args.max_batch, "server_threads": args.threads,
        "mismatched_answers": mismatches, "batching": batching,
        "wall_s": wall, "server_cpu_s": cpu,
        "spread_wall": {n: _common.spread(v) for n, v in wall.items()},
        "paired_ratio_wall": _common.paired_ratio(wall["unbatched"], wall["batched"]),
        "paired_ratio_cpu": _common.paired_ratio(cpu["unbatched"], cpu["batched"]),
    })  # fmt: skip
    if mismatches:
        report.notes.append(f"{mismatches} answers differ between the servers: the figure compares different work")
    return report.emit(args.json)


if __name__ == "__main__":
    main()
