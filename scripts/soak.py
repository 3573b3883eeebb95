#!/usr/bin/env python3
"""Soak test for sluice: a mixed pipeline at a fixed offered load for a long time, with faults
injected on a schedule. Not part of the default test run; see docs/soak.md.

The pipeline (written to WORK/sluice.toml):

    http_server (32 senders, NDJSON, retried until 2xx) ─┐
    file (WORK/logs/app.log*, rotated every minute)  ───┴─ remap ─┬─ file sink (all.ndjson)
                                                                   ├─ http sink → destination A (memory buffer)
                                                                   └─ http sink → destination B (disk buffer)

Faults, every `--cycle` seconds (default 600), at fixed offsets in the cycle:
destination A answers 503 (60 s in, for 30 s), destination B hangs (150 s, 30 s), sluice is
killed with SIGKILL and restarted (240 s and 510 s, first half of the run only, so the second
half is one process whose memory and descriptors can be watched), the data_dir's filesystem
fills up (330 s, 30 s: the data_dir is a tmpfs of `--data-mib` MiB, so this needs root), both
destinations fail at once (420 s: A hangs, B answers 503, 20 s). Log rotation every 60 s.

At the end the load stops, the pipeline drains, sluice gets SIGTERM, and starts once more
with no load until its outputs stop moving (log lines whose delivery failed, say a dead letter
that could not be stored on the full disk, are read again at the next start). The report says,
per sink: events in (acknowledged to a sender, or written to a log file), events out,
duplicates, events in the sink's dead-letter queue, and acknowledged events missing (must be
0); sluice's RSS and open descriptors over time (sampled every 10 s; flat means the last
process's samples after warm-up stay within 10% of their median, and descriptors do not
grow), and the RSS at the start of each round, before its faults (a leak grows from round to
round; an outage's backlog is live data and goes when it drains). `--settle --work DIR` does only that last start and report, for an earlier run's
directory (its data_dir must still be mounted).

    cargo build --release
    python3 scripts/soak.py --binary target/release/sluice --duration 3600
"""

import argparse
import json
import os
import random
import re
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

SENDERS = 32
BATCH = 100

CONFIG = """
data_dir = "{work}/data"

[api]
enabled = true
address = "127.0.0.1:{api}"

[sources.http_in]
type = "http_server"
address = "127.0.0.1:{http_port}"
decoding.codec = "json"
framing.method = "newline_delimited"
ack_timeout_secs = 20

[sources.files]
type = "file"
include = ["{work}/logs/app.log*"]
read_from = "beginning"

[transforms.shape]
type = "remap"
inputs = ["http_in", "files"]
source = '''
if exists(.message) {{
  parsed, err = parse_json(string!(.message))
  if err == null && is_object(parsed) {{ . = merge(., object!(parsed)) }}
  del(.message)
}}
.soaked_at = now()
'''

[sinks.all]
type = "file"
inputs = ["shape"]
path = "{work}/out/all.ndjson"
encoding.codec = "json"

{sink_a}
{sink_b}"""

# The two http sinks differ only in their destination and buffer.
HTTP_SINK = """
[sinks.{id}]
type = "http"
inputs = ["shape"]
uri = "http://127.0.0.1:{port}/ingest"
encoding.codec = "json"
framing.method = "newline_delimited"
batch.max_events = 500
batch.timeout_secs = 0.5
request.timeout_secs = 10
request.retry_initial_backoff_secs = 1
request.retry_max_duration_secs = 5
request.retry_deadline_secs = 120
{buffer}"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def log(msg: str):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Destination:
    """A local HTTP intake that records the ids it receives; its mode is "ok", "503" or "hang"
    (the request is held until the mode changes, then answered 503)."""

    def __init__(self, name: str, out: Path, port: int = 0):
        self.name, self.mode, self.lock = name, "ok", threading.Lock()
        self.file = open(out, "a", buffering=1 << 20)
        dest = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                while dest.mode == "hang":
                    time.sleep(0.2)
                if dest.mode == "503":
                    return self.answer(503)
                ids = []
                for line in body.splitlines():
                    try:
                        ids.append(json.loads(line)["id"])
                    except (ValueError, KeyError, TypeError):
                        ids.append("?")
                with dest.lock:
                    dest.file.write("\n".join(ids) + "\n")
                    dest.file.flush()
                self.answer(200)

            def do_GET(self):
                self.answer(200)

            def answer(self, status: int):
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.mode = "ok"
        self.server.shutdown()
        with self.lock:
            self.file.close()


class Soak:
    def __init__(self, args):
        self.args = args
        self.work = Path(args.work).resolve()
        self.config = self.work / "sluice.toml"
        self.tmpfs = False
        if args.settle:
            # An earlier run's directory: the same ports, data_dir and outputs.
            ports = [int(p) for p in re.findall(r"127\.0\.0\.1:(\d+)", self.config.read_text())]
            self.api_port, self.http_port, port_a, port_b = ports[:4]
            self.tmpfs = os.path.ismount(self.work / "data")
        else:
            for sub in ("data", "logs", "out"):
                (self.work / sub).mkdir(parents=True, exist_ok=True)
            if os.geteuid() == 0:
                subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={args.data_mib}m", "tmpfs",
                                str(self.work / "data")], check=True)
                self.tmpfs = True
            else:
                log("not root: the data_dir is not a small filesystem, so the full-disk fault is left out")
            self.http_port, self.api_port, port_a, port_b = free_port(), free_port(), 0, 0
        self.dest_a = Destination("dest_a", self.work / "out" / "dest_a.ids", port_a)
        self.dest_b = Destination("dest_b", self.work / "out" / "dest_b.ids", port_b)
        if not args.settle:
            sink_a = HTTP_SINK.format(id="dest_a", port=self.dest_a.port, buffer="")
            sink_b = HTTP_SINK.format(id="dest_b", port=self.dest_b.port,
                                      buffer='buffer.type = "disk"\nbuffer.max_size = 67108864\n')
            self.config.write_text(CONFIG.format(work=self.work, api=self.api_port, http_port=self.http_port,
                                                 sink_a=sink_a, sink_b=sink_b))
        self.proc = None
        self.stop = threading.Event()
        self.acked = set()
        self.acked_lock = threading.Lock()
        self.lines_written = 0
        self.samples = []  # (seconds, pid, rss_kib, fds)
        self.faults = []  # (seconds, what)
        self.settled = {}
        self.start_time = time.time()

    def elapsed(self) -> float:
        return time.time() - self.start_time

    def fault(self, what: str):
        self.faults.append((round(self.elapsed()), what))
        log(what)

    def start_sluice(self):
        stderr = open(self.work / "sluice.log", "ab")
        self.proc = subprocess.Popen([str(self.args.binary), "--config", str(self.config)],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr)
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.http_port), timeout=1).close()
                return
            except OSError:
                if self.proc.poll() is not None:
                    sys.exit(f"sluice exited with {self.proc.returncode}; see {self.work}/sluice.log")
                time.sleep(0.1)
        sys.exit("sluice did not start listening")

    # The offered load.

    def sender(self, index: int, rate: float):
        """Posts batches of 100 events at `rate` events/s; a batch is retried until 2xx (each
        sender waits for its answer: with acknowledgements, that is delivery to every sink)."""
        seq, interval = 0, BATCH / rate
        next_at = time.time()
        while not self.stop.is_set():
            ids = [f"h{index}-{seq + i}" for i in range(BATCH)]
            seq += BATCH
            body = "".join(json.dumps({"id": i, "kind": "llm_inference", "model": "m-7b", "tokens": 512,
                                       "latency_ms": random.randint(5, 900)}) + "\n" for i in ids).encode()
            while not self.stop.is_set():
                try:
                    req = urllib.request.Request(f"http://127.0.0.1:{self.http_port}/", data=body, method="POST")
                    with urllib.request.urlopen(req, timeout=60) as answer:
                        if 200 <= answer.status < 300:
                            with self.acked_lock:
                                self.acked.update(ids)
                            break
                except OSError:
                    pass
                time.sleep(0.5)
            next_at += interval
            time.sleep(max(0.0, next_at - time.time()))

    def writer(self, rate: float):
        """Appends JSON lines to logs/app.log at `rate` lines/s; renames it every 60 s."""
        path = self.work / "logs" / "app.log"
        out, n, rotated, last_rotation = open(path, "a"), 0, 0, time.time()
        next_at = time.time()
        while not self.stop.is_set():
            for _ in range(10):
                out.write(json.dumps({"id": f"f-{n}", "kind": "access", "path": "/v1/complete", "status": 200}) + "\n")
                n += 1
            out.flush()
            self.lines_written = n
            if time.time() - last_rotation >= 60:
                out.close()
                rotated += 1
                os.rename(path, self.work / "logs" / f"app.log.{rotated}")
                out, last_rotation = open(path, "a"), time.time()
            next_at += 10 / rate
            time.sleep(max(0.0, next_at - time.time()))
        out.close()

    def sampler(self):
        while not self.stop.wait(10):
            proc = self.proc
            if proc is None or proc.poll() is not None:
                continue
            try:
                status = Path(f"/proc/{proc.pid}/status").read_text()
                rss = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")))
                fds = len(os.listdir(f"/proc/{proc.pid}/fd"))
            except (OSError, StopIteration, ValueError):
                continue
            self.samples.append((round(self.elapsed()), proc.pid, rss, fds))

    # Faults.

    def fill_disk(self, seconds: float):
        """Fills the data_dir's filesystem and keeps it full (space sluice frees is taken
        again every half second) for `seconds`."""
        ballast = self.work / "data" / "ballast"
        self.fault(f"data_dir full for {seconds:.0f} s")
        end = time.time() + seconds
        with open(ballast, "ab", buffering=0) as f:
            while time.time() < end and not self.stop.is_set():
                for size in (1 << 20, 1 << 12):
                    try:
                        while True:
                            f.write(b"\0" * size)
                    except OSError:
                        pass
                time.sleep(0.5)
        ballast.unlink(missing_ok=True)

    def kill(self):
        self.fault("kill -9")
        self.proc.kill()
        self.proc.wait()
        time.sleep(2)
        self.start_sluice()

    def set_mode(self, dest: Destination, mode: str, seconds: float):
        self.fault(f"{dest.name} {mode} for {seconds:.0f} s")
        dest.mode = mode
        threading.Timer(seconds, lambda: setattr(dest, "mode", "ok")).start()

    def schedule(self):
        cycle, duration = self.args.cycle, self.args.duration
        plan = [(60, lambda: self.set_mode(self.dest_a, "503", 30)),
                (150, lambda: self.set_mode(self.dest_b, "hang", 30)),
                (240, "kill"),
                (330, "disk"),
                (420, lambda: (self.set_mode(self.dest_a, "hang", 20), self.set_mode(self.dest_b, "503", 20))),
                (510, "kill")]
        events = sorted((c + at * cycle / 600, what) for c in range(0, int(duration), int(cycle)) for at, what in plan)
        for at, what in events:
            if at >= duration - 30:
                break
            if self.stop.wait(max(0.0, at - self.elapsed())):
                return
            if what == "kill":
                if at < duration / 2:
                    self.kill()
            elif what == "disk":
                if self.tmpfs:
                    self.fill_disk(30)
            else:
                what()

    # The end.

    def dead_lettered(self, sink: str) -> set:
        out = subprocess.run([str(self.args.binary), "dlq", "show", "--config", str(self.config), "--sink", sink,
                              "--json"], capture_output=True, text=True)
        ids = set()
        for line in out.stdout.splitlines():
            try:
                ids.add(json.loads(line)["event"]["id"])
            except (ValueError, KeyError, TypeError):
                pass
        return ids

    def received(self, sink: str) -> list:
        if sink == "all":
            ids = []
            with open(self.work / "out" / "all.ndjson") as f:
                for line in f:
                    try:
                        ids.append(json.loads(line)["id"])
                    except (ValueError, KeyError):
                        ids.append("?")
            return ids
        return (self.work / "out" / f"{sink}.ids").read_text().split()

    def count(self, sink: str) -> int:
        return self.count_lines(self.work / "out" / ("all.ndjson" if sink == "all" else f"{sink}.ids"))

    @staticmethod
    def count_lines(path: Path) -> int:
        with open(path, "rb") as f:
            return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))

    def wait_drained(self, expected: int):
        """Until every sink has at least `expected` lines out and nothing moved for 15 s, or
        nothing moved for 120 s (what is missing then is in the report)."""
        last, still_since = None, time.time()
        while True:
            counts = tuple(self.count(s) for s in ("all", "dest_a", "dest_b"))
            if counts != last:
                last, still_since = counts, time.time()
            still = time.time() - still_since
            if (min(counts) >= expected and still >= 15) or still >= 120:
                return
            time.sleep(5)

    def settle(self):
        """Starts sluice once more with no load and lets it drain: lines whose delivery failed
        (for example, a dead letter that could not be stored on the full disk) keep their file
        position before them and are read again at the next start, as documented."""
        before = {s: self.count(s) for s in ("all", "dest_a", "dest_b")}
        log("settling: one more start with no load, until the outputs stop moving for 30 s")
        self.start_sluice()
        last, still_since = None, time.time()
        while time.time() - still_since < 30:
            counts = tuple(self.count(s) for s in ("all", "dest_a", "dest_b"))
            if counts != last:
                last, still_since = counts, time.time()
            time.sleep(2)
        self.proc.terminate()
        code = self.proc.wait(timeout=120)
        self.settled = {s: self.count(s) - before[s] for s in before}
        return code

    def report(self, name: str = "report.txt"):
        acked_file = self.work / "acked.ids"
        if self.acked:
            acked_file.write_text("\n".join(sorted(self.acked)) + "\n")
        elif acked_file.exists():
            self.acked = set(acked_file.read_text().split())
        self.lines_written = sum(self.count_lines(p) for p in (self.work / "logs").glob("app.log*"))
        expected = set(self.acked) | {f"f-{n}" for n in range(self.lines_written)}
        lines = [f"offered: {len(self.acked):,} acknowledged http events"
                 + ("" if self.acked else " (not recorded by this run: only log lines are checked)")
                 + f", {self.lines_written:,} log lines; {self.elapsed():.0f} s in all; {len(self.faults)} faults"]
        if self.settled:
            lines.append("delivered at the settling start (lines read again): "
                         + ", ".join(f"{s} {n:,}" for s, n in self.settled.items()))
        lost_total = 0
        for sink in ("all", "dest_a", "dest_b"):
            got = self.received(sink)
            unique = set(got)
            dlq = self.dead_lettered(sink) if sink != "all" else set()
            lost = expected - unique - dlq
            lost_total += len(lost)
            lines.append(f"{sink}: out {len(got):,}, unique {len(unique):,}, duplicates {len(got) - len(unique):,}, "
                         f"dead-lettered {len(dlq):,}, acknowledged and missing {len(lost):,}"
                         + (f" (e.g. {sorted(lost)[:5]})" if lost else ""))
        last_pid = self.samples[-1][1] if self.samples else None
        mine = [s for s in self.samples if s[1] == last_pid]
        warm = [s for s in mine if s[0] - mine[0][0] >= 300] if mine else []
        if warm:
            rss = [s[2] for s in warm]
            median = statistics.median(rss)
            spread = max(abs(r - median) for r in rss) / median
            quarter = max(1, len(rss) // 4)
            fds = [s[3] for s in warm]
            lines.append(f"last process ({len(mine)} samples, {warm[-1][0] - warm[0][0]} s after warm-up): RSS median "
                         f"{median / 1024:.1f} MiB, min {min(rss) / 1024:.1f}, max {max(rss) / 1024:.1f}, widest "
                         f"distance from the median {spread:.1%}; first quarter mean "
                         f"{statistics.mean(rss[:quarter]) / 1024:.1f} MiB, last quarter "
                         f"{statistics.mean(rss[-quarter:]) / 1024:.1f} MiB; descriptors first {fds[0]}, "
                         f"max {max(fds)}, last {fds[-1]}")
            # The same moment of every round: its start, before the round's first fault and
            # once the last round's backlog drained. A leak grows from round to round; the
            # backlog of an outage (live data) does not.
            first_fault = 60 * self.args.cycle / 600
            quiet = {}
            for t, _, r, _ in mine:
                round_no, offset = divmod(t, self.args.cycle)
                if 10 <= offset < first_fault - 5:
                    quiet.setdefault(int(round_no), []).append(r)
            if quiet:
                per_round = [statistics.median(v) for _, v in sorted(quiet.items())]
                middle = statistics.median(per_round)
                lines.append("RSS at the start of each round (last process, before its faults): "
                             + ", ".join(f"{r / 1024:.1f}" for r in per_round) + " MiB; widest distance from "
                             f"their median {max(abs(r - middle) for r in per_round) / middle:.1%}")
        lines.append("faults: " + ", ".join(f"{t} s {w}" for t, w in self.faults))
        report = "\n".join(lines)
        (self.work / name).write_text(report + "\n")
        if self.samples:
            with open(self.work / "samples.csv", "w") as f:
                f.write("seconds,pid,rss_kib,fds\n")
                f.writelines(f"{t},{p},{r},{n}\n" for t, p, r, n in self.samples)
        print(report, flush=True)
        return lost_total

    def settle_only(self) -> int:
        code = self.settle()
        self.dest_a.close()
        self.dest_b.close()
        lost = self.report("report-settled.txt")
        return 1 if lost or code else 0

    def run(self) -> int:
        log(f"soak in {self.work} for {self.args.duration} s: {self.args.http_rate} http events/s, "
            f"{self.args.file_rate} log lines/s")
        self.start_sluice()
        threads = [threading.Thread(target=self.sender, args=(i, self.args.http_rate / SENDERS), daemon=True)
                   for i in range(SENDERS)]
        threads.append(threading.Thread(target=self.writer, args=(self.args.file_rate,), daemon=True))
        threads.append(threading.Thread(target=self.sampler, daemon=True))
        for t in threads:
            t.start()
        scheduler = threading.Thread(target=self.schedule, daemon=True)
        scheduler.start()
        while self.elapsed() < self.args.duration:
            time.sleep(min(30, max(0.1, self.args.duration - self.elapsed())))
            if self.proc.poll() is not None and scheduler.is_alive():
                # Between a kill and its restart; anything else is a crash.
                time.sleep(5)
                if self.proc.poll() is not None:
                    sys.exit(f"sluice exited with {self.proc.returncode}; see {self.work}/sluice.log")
            with self.acked_lock:
                acked = len(self.acked)
            log(f"{self.elapsed():.0f} s: {acked:,} http events acknowledged, {self.lines_written:,} lines written")
        self.stop.set()
        for t in threads:
            t.join(timeout=90)
        scheduler.join(timeout=90)
        log("load stopped; waiting for the sinks to drain")
        self.wait_drained(len(self.acked) + self.lines_written)
        self.proc.terminate()
        code = self.proc.wait(timeout=120)
        with self.acked_lock:
            (self.work / "acked.ids").write_text("\n".join(sorted(self.acked)) + "\n")
        code = self.settle() or code
        self.dest_a.close()
        self.dest_b.close()
        lost = self.report()
        if self.tmpfs:
            subprocess.run(["umount", str(self.work / "data")], check=False)
        if code != 0:
            log(f"sluice exited with {code} at SIGTERM")
            return 1
        return 1 if lost else 0


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--binary", type=Path, default=Path("target/release/sluice"))
    parser.add_argument("--work", default=f"/var/tmp/sluice-soak-{time.strftime('%Y%m%d-%H%M%S')}")
    parser.add_argument("--duration", type=float, default=3600, help="seconds of offered load")
    parser.add_argument("--cycle", type=float, default=600, help="seconds per round of faults")
    parser.add_argument("--http-rate", type=float, default=2000, help=f"http events/s, over {SENDERS} senders")
    parser.add_argument("--file-rate", type=float, default=500, help="log lines/s")
    parser.add_argument("--data-mib", type=int, default=256, help="size of the data_dir's tmpfs")
    parser.add_argument("--settle", action="store_true",
                        help="only the end of an earlier run in --work: one more start with no load, and the report")
    args = parser.parse_args()
    if not args.binary.exists():
        sys.exit(f"{args.binary} is missing: cargo build --release")
    sys.exit(Soak(args).settle_only() if args.settle else Soak(args).run())


if __name__ == "__main__":
    main()
