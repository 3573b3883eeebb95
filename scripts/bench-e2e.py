#!/usr/bin/env python3
"""End-to-end benchmark harness for sluice.

Generates N lines shaped like `llm_inference` events (about 260 bytes each) under
target/bench-data/ (never committed), runs each scenario through the release binary with the
lines on stdin, and prints events/s, MiB/s, CPU seconds and peak RSS (from wait4, so only the
sluice process is measured). Every run is checked: the sink must have received every event,
the ledger must balance and the exit code must be 0.

`stdin_elasticsearch` and `stdin_loki` send to examples/api_intake.rs (always OK; build it
with `cargo build --release --example api_intake`), beside `stdin_file_json`, the same events
written as JSON lines to a file: the cost of an API sink's encoding next to the file sink's.

`stdin_https` is `stdin_http` over TLS (the harness makes a CA with openssl); `stdin_s3`
writes gzip objects to moto's S3 (started by the harness; `pip install 'moto[server]'`) and
is followed by `gzip -6` alone on the same data, for comparison.

The `fanout_*` scenarios measure isolation (G4): stdin → a file sink and an http sink to a
healthy local intake, without (`fanout_healthy`) and with (`fanout_one_stuck`) a third http
sink whose destination accepts connections and never answers. There, events/s is N over the
time until both healthy sinks delivered all N (read from `/metrics` every 20 ms), and
`after stall` is the healthy sinks' rate from the moment the stuck sink was diverted
(`component_stalled` = 1) to the end; the stuck sink's events must all be in its DLQ.

The `*_hop` scenarios are two sluice processes: A (stdin → a sink) sends to B (a source →
blackhole). `kafka_hop` goes through a 6-partition topic of tansu (the Kafka-protocol broker
`scripts/test` installs; started by the harness), `vector_hop` over Vector's protocol, and
`http_hop` as newline-delimited JSON from the `http` sink to `http_server`. events/s is N over
the time from B's start until B's blackhole has all N; CPU seconds are A's and B's together
(not the broker's), RSS the larger of the two.

The `stdin_blackhole_*` tap scenarios measure `sluice tap`'s cost beside `stdin_blackhole`:
`_api` has the API on and nobody tapping, `_tapped` has a client reading a tap of 1,900 events
per 100 ms on the source's output (about 1 in 100 at this machine's rate; the share actually
tapped is printed), and `_tap_stuck` a client that asked for the same and never reads.

With `--rate N` stdin is fed at N lines per second instead of as fast as sluice reads: the
`fanout_*` scenarios then compare the healthy sinks' rate at an offered load below what the
machine can do, where a diverted sink's extra work is not taken from its siblings.

    cargo build --release
    python3 scripts/bench-e2e.py --events 2000000 --runs 3
"""

import argparse
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "target" / "bench-data"

ENRICH = r'''
. = parse_json!(string!(.message))
.total_tokens = int!(.prompt_tokens) + int!(.completion_tokens)
.is_high_latency = int!(.latency_ms) > 5000
.user_id = sha2(string!(.user_id), variant: "SHA-256")
'''

TAPPED = """
api.enabled = true
api.address = "127.0.0.1:{tap_port}"
[sources.in]
type = "stdin"
{acks}
[sinks.out]
type = "blackhole"
inputs = ["in"]
"""

# What tapping costs on stdin → blackhole: the API on and nobody tapping; a tap taking 1,900
# events per 100 ms (about 1 in 100 at this machine's rate); a tap client that never reads.
TAP_MODES = {"stdin_blackhole_api": None, "stdin_blackhole_tapped": "read", "stdin_blackhole_tap_stuck": "stuck"}
TAP_QUERY = "/tap?outputs_of=in&limit=1900&interval_ms=100"

SCENARIOS = {
    "stdin_blackhole": """
[sources.in]
type = "stdin"
{acks}
[sinks.out]
type = "blackhole"
inputs = ["in"]
""",
    "stdin_blackhole_api": TAPPED,
    "stdin_blackhole_tapped": TAPPED,
    "stdin_blackhole_tap_stuck": TAPPED,
    "stdin_remap_file": """
[sources.in]
type = "stdin"
{acks}
[transforms.enrich]
type = "remap"
inputs = ["in"]
source = '''{enrich}'''

[sinks.out]
type = "file"
inputs = ["enrich"]
path = "{dir}/out.jsonl"
encoding.codec = "json"
""",
    "stdin_remap_blackhole": """
[sources.in]
type = "stdin"
{acks}
[transforms.enrich]
type = "remap"
inputs = ["in"]
source = '''{enrich}'''

[sinks.out]
type = "blackhole"
inputs = ["enrich"]
""",
    "stdin_remap_three_sinks": """
[sources.in]
type = "stdin"
{acks}
[transforms.enrich]
type = "remap"
inputs = ["in"]
source = '''{enrich}'''

[sinks.out]
type = "file"
inputs = ["enrich"]
path = "{dir}/out.jsonl"
encoding.codec = "json"

[sinks.csv]
type = "file"
inputs = ["enrich"]
path = "{dir}/out.csv"
encoding.codec = "csv"
encoding.csv.fields = ["log_id", "model", "total_tokens", "is_high_latency"]

[sinks.hole]
type = "blackhole"
inputs = ["enrich"]
""",
    # The intake is a second sluice (http_server -> blackhole) started by the harness; only
    # the sender is measured.
    "stdin_http": """
[sources.in]
type = "stdin"
{acks}
[sinks.out]
type = "http"
inputs = ["in"]
uri = "http://127.0.0.1:{port}/"
encoding.codec = "text"
batch.max_events = 1000
""",
    "stdin_http_disk": """
data_dir = "{dir}"
[sources.in]
type = "stdin"
{acks}
[sinks.out]
type = "http"
inputs = ["in"]
uri = "http://127.0.0.1:{port}/"
encoding.codec = "text"
batch.max_events = 1000
buffer.type = "disk"
buffer.max_size = 536870912
""",
    # The incident's own shape: senders post NDJSON (examples/http_load.rs, 32 connections of
    # 100-line bodies, like wrk), sluice forwards to a plain intake (examples/api_intake.rs,
    # 204); with acknowledgements a sender's 2xx waits for its events' delivery.
    "http_http": """
[sources.in]
type = "http_server"
address = "127.0.0.1:{listen}"
decoding.codec = "json"
{acks}
[sinks.out]
type = "http"
inputs = ["in"]
uri = "http://127.0.0.1:{api_intake}/ingest"
encoding.codec = "json"
framing.method = "newline_delimited"
""",
    # The same as stdin_http, over TLS: the intake serves HTTPS with a CA the harness makes.
    "stdin_https": """
[sources.in]
type = "stdin"
{acks}
[sinks.out]
type = "http"
inputs = ["in"]
uri = "https://localhost:{port}/"
encoding.codec = "text"
batch.max_events = 1000
tls.ca_file = "{dir}/ca.pem"
""",
    # The baseline of the API sinks below: the same events written as JSON lines to a file.
    "stdin_file_json": """
[sources.in]
type = "stdin"
{acks}
[sinks.out]
type = "file"
inputs = ["in"]
path = "{dir}/out.jsonl"
encoding.codec = "json"
""",
    # stdin -> elasticsearch and -> loki against examples/api_intake.rs (always OK, started
    # by the harness; build it with `cargo build --release --example api_intake`).
    "stdin_elasticsearch": """
[sources.in]
type = "stdin"
{acks}
[sinks.out]
type = "elasticsearch"
inputs = ["in"]
endpoints = ["http://127.0.0.1:{api_intake}"]
bulk.index = "logs"
""",
    "stdin_loki": """
[sources.in]
type = "stdin"
{acks}
[sinks.out]
type = "loki"
inputs = ["in"]
endpoint = "http://127.0.0.1:{api_intake}"
labels.source = "bench"
encoding.codec = "json"
""",
    # stdin -> aws_s3 (gzip, 10 MB batches) against moto, started by the harness.
    "stdin_s3": """
[sources.in]
type = "stdin"
{acks}
[sinks.out]
type = "aws_s3"
inputs = ["in"]
bucket = "{bucket}"
endpoint = "{s3_endpoint}"
region = "us-east-1"
auth.access_key_id = "bench"
auth.secret_access_key = "bench"
encoding.codec = "text"
compression = "gzip"
""",
}

FANOUT = """
data_dir = "{dir}"
api.enabled = true
api.address = "127.0.0.1:{api_port}"
[sources.in]
type = "stdin"
{acks}
[sinks.archive]
type = "file"
inputs = ["in"]
path = "{dir}/archive.log"
encoding.codec = "text"

[sinks.good]
type = "http"
inputs = ["in"]
uri = "http://127.0.0.1:{port}/"
encoding.codec = "text"
batch.max_events = 1000
"""

STUCK = """
[sinks.stuck]
type = "http"
inputs = ["in"]
uri = "http://127.0.0.1:{silent_port}/"
encoding.codec = "text"
batch.max_events = 1000
request.concurrency = 2
request.timeout_secs = 600
buffer.stall_timeout_secs = 1
"""

# The file source reads files the harness splits the data into (under target/bench-data/);
# acknowledgements and checkpoints on. sluice never finishes reading files on its own: the
# run ends when the blackhole has all N events (polled from /metrics), then SIGTERM.
FILES = """
data_dir = "{dir}"
api.enabled = true
api.address = "127.0.0.1:{api_port}"
[sources.in]
type = "file"
include = ["{files}/*.log"]
glob_minimum_cooldown_ms = 100
{acks}
[sinks.out]
type = "blackhole"
inputs = ["in"]
"""
# http_http with http_server's default decoding: each line one event, its text the message.
SCENARIOS["http_http_raw"] = SCENARIOS["http_http"].replace('decoding.codec = "json"\n', "")
SCENARIOS["file_blackhole"] = FILES
SCENARIOS["file_blackhole_100"] = FILES
FILE_COUNTS = {"file_blackhole": 1, "file_blackhole_100": 100, "kubernetes_blackhole": 0}

# The same lines as one container's CRI log (`<time> stdout F <line>`) under a pod log root.
SCENARIOS["kubernetes_blackhole"] = """
data_dir = "{dir}"
api.enabled = true
api.address = "127.0.0.1:{api_port}"
[sources.in]
type = "kubernetes_logs"
pod_logs_root = "{files}"
glob_minimum_cooldown_ms = 100
{acks}
[sinks.out]
type = "blackhole"
inputs = ["in"]
"""

for hop in ("kafka_hop", "vector_hop", "http_hop"):
    SCENARIOS[hop] = "two sluice processes: see run_hop"
SCENARIOS["fanout_healthy"] = FANOUT
SCENARIOS["fanout_one_stuck"] = FANOUT + STUCK

INTAKE = """
[sources.in]
type = "http_server"
address = "127.0.0.1:{port}"
{tls}

[sinks.out]
type = "blackhole"
inputs = ["in"]
"""

MODELS = ["llama-3-70b", "mistral-large", "gpt-4o", "qwen2.5-72b"]
TYPES = ["chat", "completion", "embedding"]
REGIONS = ["us-east-1", "eu-west-1", "ap-south-1"]


def generate(n: int) -> Path:
    path = DATA / f"llm-{n}.jsonl"
    if path.exists():
        return path
    DATA.mkdir(parents=True, exist_ok=True)
    rng = random.Random(42)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as f:
        for i in range(n):
            f.write(json.dumps({
                "log_id": f"{rng.getrandbits(64):016x}{i:016x}",
                "timestamp": f"2026-11-22T01:{i // 60000 % 60:02d}:{i // 1000 % 60:02d}.{i % 1000:03d}Z",
                "model": rng.choice(MODELS),
                "prompt_tokens": rng.randrange(5, 4000),
                "completion_tokens": rng.randrange(1, 2000),
                "latency_ms": rng.randrange(80, 9000),
                "user_id": f"user-{rng.randrange(50000):05d}",
                "is_fine_tune": rng.random() < 0.1,
                "inference_type": rng.choice(TYPES),
                "region": rng.choice(REGIONS),
            }, separators=(",", ":")) + "\n")
    tmp.rename(path)
    return path


def pod_logs(data: Path) -> Path:
    """The data as one container's CRI log under a pod log root (made once)."""
    root = DATA / f"{data.stem}-pods"
    if root.exists():
        return root
    tmp = root.with_suffix(".tmp")
    log = tmp / "bench_pod-0_0000-1111" / "app" / "0.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(data, "rb") as f, open(log, "wb") as out:
        for i, line in enumerate(f):
            out.write(f"2026-11-30T10:{i // 60000 % 60:02d}:{i // 1000 % 60:02d}.{i % 1000:03d}000000Z stdout F ".encode())
            out.write(line)
    tmp.rename(root)
    return root


def split(data: Path, parts: int) -> Path:
    """The data as `parts` files of whole lines under target/bench-data/ (made once)."""
    out = DATA / f"{data.stem}-in-{parts}"
    if out.exists():
        return out
    tmp = out.with_suffix(".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    files = [open(tmp / f"part-{i:03}.log", "wb") for i in range(parts)]
    with open(data, "rb") as f:
        for i, line in enumerate(f):
            files[i % parts].write(line)
    for f in files:
        f.close()
    tmp.rename(out)
    return out


def sent_by(api_port: int, sink: str) -> float:
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{api_port}/metrics", timeout=1).read().decode()
    except OSError:
        return 0
    for line in text.splitlines():
        if line.startswith("component_sent_events_total{") and f'component_id="{sink}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0


def run_files(binary: Path, scenario: str, data: Path, acks: bool, events: int):
    """A file scenario: time until the blackhole has every event, then SIGTERM."""
    import signal
    files = pod_logs(data) if scenario == "kubernetes_blackhole" else split(data, FILE_COUNTS[scenario])
    with tempfile.TemporaryDirectory() as d:
        config = Path(d) / "config.toml"
        api_port = free_port()
        config.write_text(SCENARIOS[scenario].format(
            dir=d, files=files, api_port=api_port, acks="" if acks else "acknowledgements = false\n"))
        ledger_path = Path(d) / "ledger.json"
        start = time.perf_counter()
        proc = subprocess.Popen(
            [str(binary), "--config", str(config), "--ledger-json", str(ledger_path), "--quiet"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wall = None
        while proc.poll() is None:
            if sent_by(api_port, "out") >= events:
                wall = time.perf_counter() - start
                proc.send_signal(signal.SIGTERM)
                break
            time.sleep(0.01)
        _, status, usage = os.wait4(proc.pid, 0)
        stderr = proc.stderr.read().decode(errors="replace")
        code = os.waitstatus_to_exitcode(status)
        if wall is None or code != 0:
            sys.exit(f"{scenario}: exit {code}\n{stderr}")
        ledger = json.loads(ledger_path.read_text())
        if not ledger["balanced"]:
            sys.exit(f"{scenario}: ledger does not balance: {ledger}")
        return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, ledger, None


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_ca(d: str):
    """A CA and a server certificate for localhost, made with openssl, for `stdin_https`."""
    def run(*args):
        subprocess.run(["openssl", *args], cwd=d, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
        "-subj", "/CN=bench CA")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost")
    Path(d, "ext.cnf").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "server.pem", "-days", "2", "-extfile", "ext.cnf")
    return (f'tls.enabled = true\ntls.crt_file = "{d}/server.pem"\ntls.key_file = "{d}/server.key"\n')


class Moto:
    """moto's S3 on a loopback port, for `stdin_s3` (scripts/test installs moto)."""

    def __init__(self):
        self.port = free_port()
        self.proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.1)
        sys.exit("moto did not start: pip install 'moto[server]'")

    def endpoint(self):
        return f"http://127.0.0.1:{self.port}"

    def create_bucket(self, name):
        urllib.request.urlopen(urllib.request.Request(f"{self.endpoint()}/{name}", method="PUT")).read()


def start_intake(binary: Path, d: str, port: int, tls: bool = False):
    config = Path(d) / "intake.toml"
    config.write_text(INTAKE.format(port=port, tls=make_ca(d) if tls else ""))
    proc = subprocess.Popen(
        [str(binary), "--config", str(config), "--ledger-json", str(Path(d) / "intake-ledger.json"), "--quiet"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    import socket
    deadline = time.time() + 20
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    sys.exit("the intake did not start")


def start_api_intake(binary: Path, port: int):
    """examples/api_intake.rs, next to the release binary."""
    path = binary.parent / "examples" / "api_intake"
    if not path.exists():
        sys.exit(f"{path} is missing: cargo build --release --example api_intake")
    proc = subprocess.Popen([str(path), f"127.0.0.1:{port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 20
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    sys.exit("the API intake did not start")


def stop_intake(proc, d: str, events: int, sender: dict | None = None):
    proc.terminate()
    if proc.wait(timeout=120) != 0:
        sys.exit(f"intake: exit {proc.returncode}\n{proc.stderr.read().decode(errors='replace')}")
    ledger = json.loads((Path(d) / "intake-ledger.json").read_text())
    if not ledger["balanced"]:
        sys.exit(f"intake: ledger does not balance: {ledger}")
    received = next(c for c in ledger["components"] if c["id"] == "out")["sent"]
    if received != events:
        # A sender past its drain limit (`--graceful-shutdown-limit-secs`) keeps what is left
        # on disk or dead-letters it: accounted for, but the run did not finish in time.
        sinks = [c for c in (sender or {}).get("components", []) if c.get("kind") == "sink"]
        kept = sum(c.get("buffer_on_disk_events") or 0 for c in sinks)
        dead = sum(c.get("dead_lettered") or 0 for c in sinks)
        sys.exit(f"intake received {received} of {events} events; the sender kept {kept:,} on disk "
                 f"and dead-lettered {dead:,}; the intake's ledger: {ledger}")


def silent_listener():
    """Accepts connections and never answers; returns (port, stop)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    listener.settimeout(0.1)
    held, stop = [], threading.Event()

    def serve():
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                pass
        for conn in held:
            conn.close()
        listener.close()

    threading.Thread(target=serve, daemon=True).start()
    return listener.getsockname()[1], stop


def poll_metrics(api_port: int, samples: list, done: threading.Event):
    """Records (seconds, {sink: sent}, stalled) every 20 ms from /metrics."""
    start = time.perf_counter()
    while not done.is_set():
        try:
            text = urllib.request.urlopen(f"http://127.0.0.1:{api_port}/metrics", timeout=1).read().decode()
        except OSError:
            time.sleep(0.02)
            continue
        sent, stalled = {}, False
        for line in text.splitlines():
            if line.startswith("component_sent_events_total{") and 'component_kind="sink"' in line:
                sink = line.split('component_id="')[1].split('"')[0]
                sent[sink] = float(line.rsplit(" ", 1)[1])
            if line.startswith("component_stalled{") and line.rsplit(" ", 1)[1] == "1":
                stalled = True
        samples.append((time.perf_counter() - start, sent, stalled))
        time.sleep(0.02)


def healthy_times(samples: list, events: int, wall: float):
    """(seconds until archive and good delivered everything, rate after the stall or None).
    When the process ended before a sample saw everything delivered, its end counts."""
    done = next((t for t, sent, _ in samples
                 if sent.get("archive", 0) >= events and sent.get("good", 0) >= events), wall)
    stall = next(((t, min(sent.get("archive", 0), sent.get("good", 0))) for t, sent, stalled in samples if stalled),
                 None)
    after = (events - stall[1]) / (done - stall[0]) if done and stall and done > stall[0] else None
    return done, after


def feed(pipe, data: Path, rate: int):
    """Writes the lines of `data` to `pipe` at `rate` lines per second (10 ms slices)."""
    import itertools
    per_slice = max(1, rate // 100)
    start = time.perf_counter()
    try:
        with open(data, "rb") as f:
            for i in itertools.count():
                block = b"".join(itertools.islice(f, per_slice))
                if not block:
                    break
                pipe.write(block)
                pause = start + (i + 1) / 100 - time.perf_counter()
                if pause > 0:
                    time.sleep(pause)
    finally:
        pipe.close()


MOTO = None


# Two-process hops: sluice A (stdin → a sink) sends to sluice B (a source → blackhole).
HOP_SENDERS = {
    "kafka_hop": """
[sinks.out]
type = "kafka"
inputs = ["in"]
bootstrap_servers = "127.0.0.1:{port}"
topic = "bench"
encoding.codec = "text"
""",
    "vector_hop": """
[sinks.out]
type = "vector"
inputs = ["in"]
address = "127.0.0.1:{port}"
""",
    "http_hop": """
[sinks.out]
type = "http"
inputs = ["in"]
uri = "http://127.0.0.1:{port}/"
encoding.codec = "json"
framing.method = "newline_delimited"
""",
}

HOP_RECEIVERS = {
    "kafka_hop": """
[sources.in]
type = "kafka"
bootstrap_servers = "127.0.0.1:{port}"
group_id = "bench"
topics = ["bench"]
auto_offset_reset = "earliest"
{acks}""",
    "vector_hop": """
[sources.in]
type = "vector"
address = "127.0.0.1:{port}"
{acks}""",
    "http_hop": """
[sources.in]
type = "http_server"
address = "127.0.0.1:{port}"
decoding.codec = "json"
framing.method = "newline_delimited"
{acks}""",
}

TANSU = os.environ.get("SLUICE_TANSU", "/var/tmp/sluice-tools/bin/tansu")


def start_tansu(d: str, port: int):
    broker = subprocess.Popen(
        [TANSU, "broker", "--storage-engine", "memory://tansu/",
         "--listener-url", f"tcp://127.0.0.1:{port}", "--advertised-listener-url", f"tcp://127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=d)
    deadline = time.time() + 30
    while subprocess.run([TANSU, "topic", "create", "bench", "--partitions", "6",
                          "--broker", f"tcp://127.0.0.1:{port}"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode != 0:
        if time.time() > deadline:
            sys.exit("kafka_hop: tansu did not start")
        time.sleep(0.2)
    return broker


def run_hop(binary: Path, scenario: str, data: Path, acks: bool, events: int):
    """stdin -> sluice A -> (a broker) -> sluice B -> blackhole; timed until B has every event."""
    import signal
    acks_line = "" if acks else "acknowledgements = false\n"
    with tempfile.TemporaryDirectory() as d:
        port = free_port()
        broker = start_tansu(d, port) if scenario == "kafka_hop" else None
        sender, receiver = Path(d) / "sender.toml", Path(d) / "receiver.toml"
        api_port = free_port()
        for side in ("a", "b"):
            (Path(d) / side).mkdir()
        sender.write_text(f'data_dir = "{d}/a"\n[sources.in]\ntype = "stdin"\n{acks_line}'
                          + HOP_SENDERS[scenario].format(port=port))
        receiver.write_text(f'data_dir = "{d}/b"\napi.enabled = true\napi.address = "127.0.0.1:{api_port}"\n'
                            + HOP_RECEIVERS[scenario].format(port=port, acks=acks_line)
                            + '\n[sinks.out]\ntype = "blackhole"\ninputs = ["in"]\n')
        ledger_path = Path(d) / "ledger.json"
        start = time.perf_counter()
        consumer = subprocess.Popen(
            [str(binary), "--config", str(receiver), "--ledger-json", str(ledger_path), "--quiet"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if scenario != "kafka_hop":
            while sent_by(api_port, "out") == 0 and consumer.poll() is None:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    break
                except OSError:
                    time.sleep(0.02)
        with open(data, "rb") as stdin:
            producer = subprocess.Popen([str(binary), "--config", str(sender), "--quiet"],
                                        stdin=stdin, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wall = None
        while consumer.poll() is None and time.perf_counter() - start < 600:
            if sent_by(api_port, "out") >= events:
                wall = time.perf_counter() - start
                consumer.send_signal(signal.SIGTERM)
                break
            time.sleep(0.01)
        _, p_status, p_usage = os.wait4(producer.pid, 0)
        _, c_status, c_usage = os.wait4(consumer.pid, 0)
        if broker:
            broker.kill()
            broker.wait()
        stderr = consumer.stderr.read().decode(errors="replace") + producer.stderr.read().decode(errors="replace")
        codes = (os.waitstatus_to_exitcode(p_status), os.waitstatus_to_exitcode(c_status))
        if wall is None or codes != (0, 0):
            sys.exit(f"{scenario}: exit codes {codes}\n{stderr}")
        ledger = json.loads(ledger_path.read_text())
        if not ledger["balanced"]:
            sys.exit(f"{scenario}: ledger does not balance: {ledger}")
        cpu = sum(u.ru_utime + u.ru_stime for u in (p_usage, c_usage))
        return wall, cpu, max(p_usage.ru_maxrss, c_usage.ru_maxrss) / 1024, ledger, None


def tap_client(port: int, mode: str, tapped: list, done: threading.Event):
    """Connects to /tap once the API answers; reads every sampled line (counting them into
    `tapped`), or never reads at all (`stuck`)."""
    deadline = time.time() + 10
    while time.time() < deadline and not done.is_set():
        try:
            conn = socket.create_connection(("127.0.0.1", port), timeout=1)
            break
        except OSError:
            time.sleep(0.005)
    else:
        return
    conn.sendall(f"GET {TAP_QUERY} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    if mode == "stuck":
        done.wait()
        conn.close()
        return
    conn.settimeout(0.2)
    lines = 0
    while not done.is_set():
        try:
            chunk = conn.recv(1 << 20)
        except socket.timeout:
            continue
        except OSError:
            break
        if not chunk:
            break
        lines += chunk.count(b'"event":')
    tapped.append(lines)
    conn.close()


# p50 and p99 of the senders' requests (ms) per (scenario, acks, binary), from run_http_load.
LATENCIES = {}


def run_http_load(binary: Path, scenario: str, data: Path, acks: bool, events: int):
    """http_server -> http sink: examples/http_load.rs posts, examples/api_intake.rs takes.
    Timed from the first post until the intake has every event; then SIGTERM."""
    import signal
    load = binary.parent / "examples" / "http_load"
    if not load.exists():
        sys.exit(f"{load} is missing: cargo build --release --example http_load --example api_intake")
    with tempfile.TemporaryDirectory() as d:
        config = Path(d) / "config.toml"
        listen, api_intake_port = free_port(), free_port()
        api_intake = start_api_intake(binary, api_intake_port)
        config.write_text(SCENARIOS[scenario].format(
            listen=listen, api_intake=api_intake_port, acks="" if acks else "acknowledgements = false\n"))
        ledger_path = Path(d) / "ledger.json"
        proc = subprocess.Popen(
            [str(binary), "--config", str(config), "--ledger-json", str(ledger_path), "--quiet"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.time() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", listen), timeout=1).close()
                break
            except OSError:
                if time.time() > deadline:
                    proc.kill()
                    sys.exit(f"{scenario}: sluice did not listen")
                time.sleep(0.05)
        start = time.perf_counter()
        sent = subprocess.run([str(load), f"127.0.0.1:{listen}", str(data), str(events), "32", "100"],
                              capture_output=True, text=True)
        if sent.returncode != 0:
            proc.kill()
            sys.exit(f"{scenario}: the load generator failed: {sent.stderr}")
        result = json.loads(sent.stdout)
        received, deadline = 0, time.time() + 60
        while time.time() < deadline:
            with urllib.request.urlopen(f"http://127.0.0.1:{api_intake_port}/count") as answer:
                received = int(answer.read())
            if received >= result["events"]:
                break
            time.sleep(0.005)
        wall = time.perf_counter() - start
        proc.send_signal(signal.SIGTERM)
        _, status, usage = os.wait4(proc.pid, 0)
        api_intake.kill()
        stderr = proc.stderr.read().decode(errors="replace")
        code = os.waitstatus_to_exitcode(status)
        if code != 0:
            sys.exit(f"{scenario}: exit {code}\n{stderr}")
        if received != result["events"]:
            sys.exit(f"{scenario}: the intake received {received} of {result['events']} events")
        ledger = json.loads(ledger_path.read_text())
        if not ledger["balanced"]:
            sys.exit(f"{scenario}: ledger does not balance: {ledger}")
        LATENCIES.setdefault((scenario, acks, binary), []).append((result["p50_ms"], result["p99_ms"]))
        print(f"  {scenario}: {result['requests']:,} requests, {result['resent']} sent again, "
              f"p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms, max {result['max_ms']} ms", file=sys.stderr)
        return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, ledger, None


def run(binary: Path, scenario: str, data: Path, acks: bool, events: int, rate: int = 0):
    global MOTO
    if "{listen}" in SCENARIOS[scenario]:
        return run_http_load(binary, scenario, data, acks, events)
    if scenario in FILE_COUNTS:
        return run_files(binary, scenario, data, acks, events)
    if scenario in HOP_SENDERS:
        return run_hop(binary, scenario, data, acks, events)
    with tempfile.TemporaryDirectory() as d:
        config = Path(d) / "config.toml"
        port = free_port()
        tls = "tls.ca_file" in SCENARIOS[scenario]
        intake = start_intake(binary, d, port, tls) if "{port}" in SCENARIOS[scenario] else None
        silent_port, silent_stop = silent_listener() if "{silent_port}" in SCENARIOS[scenario] else (0, None)
        api_port = free_port()
        bucket, s3_endpoint = f"bench-{random.randrange(1 << 30)}", ""
        api_intake_port, api_intake = free_port(), None
        if "{api_intake}" in SCENARIOS[scenario]:
            api_intake = start_api_intake(binary, api_intake_port)
        if "{s3_endpoint}" in SCENARIOS[scenario]:
            MOTO = MOTO or Moto()
            MOTO.create_bucket(bucket)
            s3_endpoint = MOTO.endpoint()
        tap_port, tapped, tap_done = free_port(), [], threading.Event()
        config.write_text(SCENARIOS[scenario].format(
            dir=d, enrich=ENRICH, port=port, silent_port=silent_port, api_port=api_port, tap_port=tap_port,
            bucket=bucket, s3_endpoint=s3_endpoint, api_intake=api_intake_port,
            acks="" if acks else "acknowledgements = false\n"))
        ledger_path = Path(d) / "ledger.json"
        samples, polled = [], threading.Event()
        if "{api_port}" in SCENARIOS[scenario]:
            threading.Thread(target=poll_metrics, args=(api_port, samples, polled), daemon=True).start()
        with open(data, "rb") as stdin:
            start = time.perf_counter()
            proc = subprocess.Popen(
                [str(binary), "--config", str(config), "--ledger-json", str(ledger_path), "--quiet",
                 "--graceful-shutdown-limit-secs", "3"],
                stdin=subprocess.PIPE if rate else stdin, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            if rate:
                threading.Thread(target=feed, args=(proc.stdin, data, rate), daemon=True).start()
            tap_thread = None
            if TAP_MODES.get(scenario):
                tap_thread = threading.Thread(target=tap_client, args=(tap_port, TAP_MODES[scenario], tapped, tap_done))
                tap_thread.start()
            _, status, usage = os.wait4(proc.pid, 0)
            wall = time.perf_counter() - start
            tap_done.set()
            if tap_thread:
                tap_thread.join()
                if tapped:
                    print(f"  {scenario}: {tapped[0]:,} events tapped ({tapped[0] / events:.2%})", file=sys.stderr)
        polled.set()
        if silent_stop:
            silent_stop.set()
        after = None
        if samples:
            wall, after = healthy_times(samples, events, wall)
        stderr = proc.stderr.read().decode(errors="replace")
        code = os.waitstatus_to_exitcode(status)
        if code != 0:
            sys.exit(f"{scenario}: exit {code}\n{stderr}")
        ledger = json.loads(ledger_path.read_text())
        if not ledger["balanced"]:
            sys.exit(f"{scenario}: ledger does not balance: {ledger}")
        if intake:
            stop_intake(intake, d, events, ledger)
        if api_intake:
            with urllib.request.urlopen(f"http://127.0.0.1:{api_intake_port}/count") as answer:
                received = int(answer.read())
            api_intake.kill()
            if received != events:
                sys.exit(f"{scenario}: the API intake received {received} of {events} events")
        return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, ledger, after


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=2_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--binary", type=Path, action="append",
                        help="the sluice binary (default target/release/sluice); given several times, "
                             "runs alternate between them and each gets its own line")
    parser.add_argument("--scenario", action="append", choices=sorted(SCENARIOS))
    parser.add_argument("--acks-off", action="store_true", help="also run each scenario with acknowledgements off")
    parser.add_argument("--rate", type=int, default=0,
                        help="feed stdin at this many lines per second instead of as fast as sluice reads")
    args = parser.parse_args()
    binaries = args.binary or [ROOT / "target" / "release" / "sluice"]
    data = generate(args.events)
    size = data.stat().st_size
    offered = f"; offered at {args.rate:,} lines/s" if args.rate else ""
    print(f"{args.events} events, {size / args.events:.0f} bytes/line, {size / 2**20:.0f} MiB; "
          f"median of {args.runs} runs; {os.cpu_count()} CPUs{offered}")
    print(f"{'scenario':<28}{'acks':>5}{'events/s':>12}{'MiB/s':>9}{'CPU s':>8}{'wall s':>8}{'RSS MiB':>9}"
          f"{'best ev/s':>12}")
    scenarios = args.scenario or list(SCENARIOS)
    modes = [True, False] if args.acks_off else [True]
    # Runs alternate between scenarios, modes and binaries so drift on a shared machine hits
    # all alike.
    by_mode = {(scenario, acks, b): [] for scenario in scenarios for acks in modes for b in binaries}
    for _ in range(args.runs):
        for scenario in scenarios:
            for acks in modes:
                for binary in binaries:
                    by_mode[(scenario, acks, binary)].append(
                        run(binary, scenario, data, acks, args.events, args.rate))
    for scenario in scenarios:
        for acks in modes:
            for binary in binaries:
                results = by_mode[(scenario, acks, binary)]
                wall = statistics.median(r[0] for r in results)
                cpu = statistics.median(r[1] for r in results)
                rss = max(r[2] for r in results)
                sinks = [c for c in results[0][3]["components"] if c["kind"] == "sink"]
                for c in sinks:
                    # The stuck sink of `fanout_one_stuck` delivers nothing: all of it is in its DLQ.
                    handled = c["dead_lettered"] if c["id"] == "stuck" else c["sent"]
                    if handled != args.events:
                        sys.exit(f"{scenario}: sink {c['id']} handled {handled} of {args.events}: {c}")
                best = min(r[0] for r in results)
                afters = [r[4] for r in results if r[4]]
                after = f"   after stall {statistics.median(afters):,.0f} events/s" if afters else ""
                if (scenario, acks, binary) in LATENCIES:
                    latencies = LATENCIES[(scenario, acks, binary)]
                    after += (f"   p50 {statistics.median(l[0] for l in latencies):.2f} ms"
                              f"   p99 {statistics.median(l[1] for l in latencies):.2f} ms")
                which = f"   {binary}" if len(binaries) > 1 else ""
                print(f"{scenario:<28}{'on' if acks else 'off':>5}{args.events / wall:>12,.0f}"
                      f"{size / wall / 2**20:>9.1f}{cpu:>8.2f}{wall:>8.2f}{rss:>9.1f}{args.events / best:>12,.0f}"
                      f"{after}{which}")
    if "stdin_s3" in scenarios:
        # What compression alone costs on this machine: gzip -6 (one core) on the same data.
        walls = []
        for _ in range(args.runs):
            with open(data, "rb") as stdin:
                start = time.perf_counter()
                subprocess.run(["gzip", "-6", "-c"], stdin=stdin, stdout=subprocess.DEVNULL, check=True)
                walls.append(time.perf_counter() - start)
        wall = statistics.median(walls)
        print(f"{'gzip -6 alone':<28}{'':>5}{args.events / wall:>12,.0f}{size / wall / 2**20:>9.1f}{'':>8}{wall:>8.2f}")
    if MOTO:
        MOTO.proc.kill()


if __name__ == "__main__":
    main()
