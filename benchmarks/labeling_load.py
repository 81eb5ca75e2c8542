"""Load test of the label screen: N simulated annotators over real HTTP.

    python benchmarks/labeling_load.py [--n 1 8 32] [--cycles 25]
        [--postgres-url postgres://postgres@127.0.0.1:55432/postgres] [--no-sqlite]

For each backend (PostgreSQL, then SQLite as the named peer) it creates a fresh
database, migrates it, seeds a project (overlap 3) with real AlpacaEval texts
from fixtures/, starts gunicorn (gthread, DEBUG off) on a free port of
127.0.0.1, and runs N concurrent annotators. Each logs in through the login
form (session cookie + CSRF token), opens the label page, then does `--cycles`
cycles of "submit a judgment -> receive the next comparison" exactly as the
browser does with htmx: one POST with the CSRF header whose response is the
next item. Printed per N: cycles/s over the phase's wall time and the
p50/p95/p99 latency of a cycle; then the PostgreSQL/SQLite throughput ratio.
The load generator shares the machine (and its cores) with the server.
Every cycle's answer is checked ("Saved." and a new assignment id), and the
judgments in the database are counted at the end.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FIXTURE = (
    REPO
    / "fixtures"
    / "alpaca-eval-demo"
    / "Mixtral-8x7B-Instruct-v0.1.alpaca_eval_gpt4_turbo_fn.annotations.json.gz"
)
PASSWORD = "bench-password-1"
SLUG = "bench"
ASSIGNMENT_RE = re.compile(r'data-assignment="(\d+)"')


# --- server side: run inside a subprocess with the bench database's env ------


def _django(env_db: str) -> None:
    os.environ["DATABASE_URL"] = env_db
    sys.path.insert(0, str(REPO))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()


def seed(comparisons: int, users: int) -> None:
    """Project, comparisons (real texts, cycled) and annotators; one password hash for all."""
    from django.contrib.auth.hashers import make_password

    from annotate.models import Comparison, Membership, Project, User

    records = json.loads(gzip.open(FIXTURE).read())
    project = Project.objects.create(slug=SLUG, name="Load test", overlap=3, time_budget_s=60)
    Comparison.objects.bulk_create(
        (
            Comparison(
                project=project,
                external_id=f"b{i}",
                content_hash=f"bench-{i}",
                prompt=records[i % len(records)]["instruction"],
                response_a=records[i % len(records)]["output_1"],
                response_b=records[i % len(records)]["output_2"],
            )
            for i in range(comparisons)
        ),
        batch_size=500,
    )
    hashed = make_password(PASSWORD)
    people = User.objects.bulk_create(
        User(username=f"bench{i}", password=hashed) for i in range(users)
    )
    Membership.objects.bulk_create(
        Membership(project=project, user=u, role=Membership.Role.ANNOTATOR) for u in people
    )


def count_judgments() -> None:
    from annotate.models import Comparison, Judgment

    over = Comparison.objects.filter(project__slug=SLUG, slots_taken__gt=3).count()
    print(
        json.dumps(
            {
                "judgments": Judgment.objects.filter(project__slug=SLUG).count(),
                "over_capacity": over,
            }
        )
    )


# --- client side --------------------------------------------------------------


@dataclass
class Phase:
    n: int
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    wall: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)


class Annotator:
    def __init__(self, base: str, username: str) -> None:
        import requests

        self.base = base
        self.username = username
        self.http = requests.Session()

    def csrf(self) -> str:
        return self.http.cookies.get("csrftoken", "")

    def login(self) -> str:
        """Log in through the form; returns the first assignment id from the label page."""
        page = self.http.get(f"{self.base}/login/")
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
        r = self.http.post(
            f"{self.base}/login/",
            data={
                "csrfmiddlewaretoken": token,
                "username": self.username,
                "password": PASSWORD,
                "next": f"/projects/{SLUG}/label/",
            },
            headers={"Referer": f"{self.base}/login/"},
            allow_redirects=True,
        )
        match = ASSIGNMENT_RE.search(r.text)
        if r.status_code != 200 or not match:
            raise RuntimeError(f"{self.username}: login/label failed ({r.status_code})")
        return match.group(1)

    def cycle(self, assignment: str, i: int) -> str:
        """Submit a judgment for `assignment`; the response is the next item (htmx partial)."""
        body = {
            "axis-helpful": "A",
            "axis-truthful": "tie",
            "axis-harmless": "B",
            "overall": str(1 + i % 7),
            "active_ms": "4200",
            "flags": ["hallucination"] if i % 5 == 0 else [],
        }
        r = self.http.post(
            f"{self.base}/projects/{SLUG}/label/{assignment}/submit/",
            data=body,
            headers={"HX-Request": "true", "X-CSRFToken": self.csrf(), "Referer": f"{self.base}/"},
        )
        match = ASSIGNMENT_RE.search(r.text)
        if r.status_code != 200 or "Saved" not in r.text or not match:
            raise RuntimeError(f"{self.username}: cycle {i} got {r.status_code}: {r.text[:120]!r}")
        return match.group(1)


def run_phase(base: str, n: int, first_user: int, cycles: int) -> Phase:
    phase = Phase(n=n)
    clients = [Annotator(base, f"bench{first_user + k}") for k in range(n)]
    current: list[str] = [""] * n
    ready = threading.Barrier(n + 1)

    def work(k: int) -> None:
        try:
            current[k] = clients[k].login()
        except Exception as exc:  # reported after the phase
            with phase.lock:
                phase.errors.append(str(exc))
        ready.wait()  # everybody is logged in: the timed part starts together
        ready.wait()
        for i in range(cycles):
            if not current[k]:
                return
            t0 = time.perf_counter()
            try:
                current[k] = clients[k].cycle(current[k], i)
            except Exception as exc:
                with phase.lock:
                    phase.errors.append(str(exc))
                return
            with phase.lock:
                phase.latencies.append(time.perf_counter() - t0)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    ready.wait()
    start = time.perf_counter()
    ready.wait()
    for t in threads:
        t.join()
    phase.wall = time.perf_counter() - start
    return phase


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_up(base: str, proc: subprocess.Popen, timeout: float = 60) -> None:
    import requests

    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gunicorn exited with {proc.returncode}")
        try:
            if requests.get(f"{base}/login/", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.3)
    raise RuntimeError("gunicorn did not come up")


def bench_backend(
    name: str, db_url: str, args: argparse.Namespace, workdir: Path
) -> dict[int, Phase]:
    env = {
        **os.environ,
        "DATABASE_URL": db_url,
        "DEBUG": "0",
        "SECRET_KEY": "bench-only-secret-key-0123456789",
        "ALLOWED_HOSTS": "127.0.0.1",
        "VAR_DIR": str(workdir / name),
        "LOG_LEVEL": "WARNING",
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "PYTHONPATH": str(REPO),
    }
    (workdir / name / "static").mkdir(
        parents=True, exist_ok=True
    )  # whitenoise warns when STATIC_ROOT is missing
    py = sys.executable
    users = sum(args.n)
    comparisons = max(args.comparisons, users * (args.cycles + 2))
    subprocess.run(
        [py, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=REPO, env=env, check=True
    )
    subprocess.run(
        [py, __file__, "_seed", db_url, str(comparisons), str(users)], cwd=REPO, env=env, check=True
    )
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [
            py,
            "-m",
            "gunicorn",
            "config.wsgi:application",
            "--bind",
            f"127.0.0.1:{port}",
            "--worker-class",
            "gthread",
            "--workers",
            str(args.workers),
            "--threads",
            str(args.threads),
            "--log-level",
            "warning",
            # Annotators wait at a barrier between login and the timed cycles;
            # with gunicorn's default 2 s keep-alive the server could close an
            # idle connection just as its client reused it ("Connection reset
            # by peer"). 75 s is nginx's default keepalive_timeout.
            "--keep-alive",
            "75",
        ],
        cwd=REPO,
        env=env,
    )
    phases: dict[int, Phase] = {}
    try:
        wait_until_up(base, server)
        first = 0
        for n in args.n:
            phases[n] = run_phase(base, n, first, args.cycles)
            first += n
            report(name, phases[n])
    finally:
        server.terminate()
        server.wait(timeout=30)
    out = subprocess.run(
        [py, __file__, "_count", db_url],
        cwd=REPO,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    counts = json.loads(out.strip().splitlines()[-1])
    done = sum(len(p.latencies) for p in phases.values())
    print(
        f"  {name}: {counts['judgments']} judgments stored for {done} successful cycles; "
        f"comparisons above capacity: {counts['over_capacity']}"
    )
    if counts["judgments"] != done or counts["over_capacity"]:
        raise SystemExit(f"{name}: database does not match the cycles run")
    return phases


def report(name: str, p: Phase) -> None:
    ms = [x * 1000 for x in p.latencies]
    rate = len(ms) / p.wall if p.wall else 0.0
    print(
        f"  {name:<10} N={p.n:<3} cycles={len(ms):<5} {rate:8.1f} cycles/s   "
        f"p50={percentile(ms, 50):7.1f} ms  p95={percentile(ms, 95):7.1f} ms  "
        f"p99={percentile(ms, 99):7.1f} ms"
        f"  errors={len(p.errors)}",
        flush=True,
    )
    for e in p.errors[:3]:
        print(f"    error: {e}")


def create_pg_database(admin_url: str) -> tuple[str, str]:
    import psycopg

    name = f"pairwise_bench_{os.getpid()}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    parts = urllib.parse.urlsplit(admin_url)
    return name, urllib.parse.urlunsplit(parts._replace(path=f"/{name}"))


def drop_pg_database(admin_url: str, name: str) -> None:
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--n", type=int, nargs="+", default=[1, 8, 32], help="concurrent annotators per phase"
    )
    parser.add_argument("--cycles", type=int, default=25, help="submit->next cycles per annotator")
    parser.add_argument("--comparisons", type=int, default=3000)
    parser.add_argument("--workers", type=int, default=3, help="gunicorn processes")
    parser.add_argument("--threads", type=int, default=8, help="gunicorn threads per process")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("TEST_POSTGRES_URL")
        or "postgres://postgres@127.0.0.1:55432/postgres",
        help="a server where the benchmark may create and drop its own database",
    )
    parser.add_argument("--no-sqlite", action="store_true", help="skip the SQLite peer")
    args = parser.parse_args()

    print(
        f"labeling load: N={args.n}, {args.cycles} cycles each, gunicorn gthread "
        f"{args.workers}x{args.threads}, {os.cpu_count()} CPUs shared with the load generator"
    )
    results: dict[str, dict[int, Phase]] = {}
    with tempfile.TemporaryDirectory(prefix="labeling-load-") as tmp:
        workdir = Path(tmp)
        name, url = create_pg_database(args.postgres_url)
        try:
            results["postgres"] = bench_backend("postgres", url, args, workdir)
        finally:
            drop_pg_database(args.postgres_url, name)
        if not args.no_sqlite:
            results["sqlite"] = bench_backend(
                "sqlite", f"sqlite:///{workdir / 'bench.sqlite3'}", args, workdir
            )

    if "sqlite" in results:
        print("throughput ratio postgres / sqlite:")
        for n in args.n:
            pg, sq = results["postgres"][n], results["sqlite"][n]
            ratio = (len(pg.latencies) / pg.wall) / (len(sq.latencies) / sq.wall)
            print(f"  N={n:<3} {ratio:5.2f}x")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_seed":
        _django(sys.argv[2])
        seed(int(sys.argv[3]), int(sys.argv[4]))
    elif len(sys.argv) > 1 and sys.argv[1] == "_count":
        _django(sys.argv[2])
        count_judgments()
    else:
        main()
