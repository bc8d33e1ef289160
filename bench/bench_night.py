"""Benchmark: one whole nightly run at scale, stage by stage, as the scheduler runs it.

    .work/venv-jobs/bin/python bench/bench_night.py                  # 1,000,000 users
    .work/venv-jobs/bin/python bench/bench_night.py --users 20000 --keep

**Setup (timed, not part of the night).** Under ``.work/bench/night-<users>``: the synthetic
data set (``metaprofile.datasets.synthetic``, one landing day past the window), a full
encode of the window and its snapshot, and a model with the demo's shape (width 0.125,
64-d embeddings; untrained: a night costs the same whatever the weights) published as the
one the nightly jobs use. Reused when present with ``--keep``.

**The night** for ``ds`` = the day after the window, each stage a fresh ``metaprofile``
process, as the lookalike DAG's tasks run (``dags/metaprofile_lookalike.py``): encode the
landing day and snapshot the window (updating the previous one; one task, one Spark
session), embed every user, check and
embed the campaigns' support sets (8 campaigns), score every user against them, export the
segments. Printed per stage: wall time, peak resident memory of the stage's whole process
tree (the Python driver, Spark's JVM and its Python workers, polled every 0.2 s), and what
the stage reports; then the total. Every stage must succeed, or the benchmark stops with the
stage's output.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common.workdir import PROJECT_ROOT, configure_environment  # noqa: E402

CONFIG = PROJECT_ROOT / "conf" / "synthetic.yaml"
METAPROFILE = Path(sys.executable).with_name("metaprofile")


class Poller:
    """Calls ``poll()`` every 0.2 s on a thread while the ``with`` block runs."""

    def __init__(self):
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def _run(self):
        while not self._stop.is_set():
            self.poll()
            self._stop.wait(0.2)

    def poll(self) -> None:
        raise NotImplementedError


class TreeMemory(Poller):
    """Peak summed RSS of a process and all its descendants, polled from /proc."""

    def __init__(self, pid: int):
        super().__init__()
        self.pid, self.peak_mib = pid, 0.0

    def _tree(self) -> list[int]:
        children: dict[int, list[int]] = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                children.setdefault(int(fields[1]), []).append(int(entry))
        tree, frontier = [], [self.pid]
        while frontier:
            pid = frontier.pop()
            tree.append(pid)
            frontier += children.get(pid, [])
        return tree

    def poll(self) -> None:
        total = 0
        for pid in self._tree():
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
            except OSError:
                continue
        self.peak_mib = max(self.peak_mib, total / 1024)


def stage(name: str, args: list[str], root: Path, log_dir: Path) -> dict:
    """Run ``metaprofile ARGS --config C --set storage.root=ROOT``; wall time, peak memory
    and the JSON report it prints last."""
    command = [str(METAPROFILE), *args, "--config", str(CONFIG),
               "--set", f"storage.root={root}", "--set", "raw.max_reject_ratio=0.5"]
    log = log_dir / f"{name}.log"
    started = time.perf_counter()
    with open(log, "w") as out:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=out, text=True)
        with TreeMemory(process.pid) as memory:
            stdout, _ = process.communicate()
    seconds = time.perf_counter() - started
    if process.returncode != 0:
        raise SystemExit(f"{name}: `{' '.join(command)}` exited {process.returncode}; "
                         f"its log: {log}")
    report = parsed_report(stdout)
    return {"seconds": seconds, "peak_mib": memory.peak_mib, "report": report}


def parsed_report(stdout: str) -> dict:
    """The JSON object a command printed: all of stdout, else its last line that is one."""
    for text in [stdout, *reversed(stdout.strip().splitlines())]:
        try:
            report = json.loads(text)
        except ValueError:
            continue
        if isinstance(report, dict):
            return report
    return {}


def demo_size_model(root: Path) -> str:
    """An untrained model of the demo's shape for the data set's config, saved under root."""
    import keras

    from model.artifact import save_artifact
    from model.network import build_meta_model
    from model.settings import ModelConfig
    from schemas.config import load_config
    from schemas.input_spec import InputSpec
    from schemas.tfrecord_spec import spec_document

    config = load_config(CONFIG, overrides=[f"storage.root={root}"])
    keras.utils.set_random_seed(0)
    spec = InputSpec.from_config(config)
    settings = ModelConfig(width=0.125, embedding_dim=64)
    return save_artifact(build_meta_model(spec, settings), settings, spec,
                         spec_document(config), {}, "0" * 64, str(root / "bench-models"),
                         version="demo-size-untrained", normalisation={})


def setup(root: Path, users: int, log_dir: Path) -> tuple[dt.date, dict]:
    from metaprofile.datasets.synthetic import GeneratorOptions, generate
    from schemas.config import load_config

    config = load_config(CONFIG, overrides=[f"storage.root={root}"])
    ds = config.window.end
    done = root / "_bench_setup.json"
    if done.exists():
        print(f"setup: reusing {root}")
        return ds, json.loads(done.read_text())
    shutil.rmtree(root, ignore_errors=True)
    figures = {}
    started = time.perf_counter()
    made = generate(config, GeneratorOptions(users=users, extra_days=1),
                    progress=lambda message: None)
    figures["generate"] = {"seconds": time.perf_counter() - started, "rows": sum(
        c["rows_written"] for c in made["sources"].values())}
    print(f"setup: generated {figures['generate']['rows']:,} raw rows for {users:,} users in "
          f"{figures['generate']['seconds']:.0f} s", flush=True)
    full = stage("setup-full-encode", ["encode", "--ds", ds.isoformat(), "--full"], root,
                 log_dir)
    figures["full_encode"] = {"seconds": full["seconds"], "peak_mib": full["peak_mib"]}
    print(f"setup: full encode + snapshot of ds={ds} in {full['seconds']:.0f} s "
          f"(encode {full['report'].get('encode_seconds', 0):.0f} s), peak "
          f"{full['peak_mib']:,.0f} MiB", flush=True)
    model = demo_size_model(root)
    stage("setup-publish", ["publish", "--model", model], root, log_dir)
    done.write_text(json.dumps(figures))
    return ds, figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1_000_000,
                        help="synthetic users (~140 raw rows each; default 1,000,000)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the data set (and reuse it next time)")
    args = parser.parse_args(argv)
    work = configure_environment()
    root = work / "bench" / f"night-{args.users}"
    log_dir = work / "bench" / f"night-{args.users}-logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    ds, _ = setup(root, args.users, log_dir)
    night = (ds + dt.timedelta(days=1)).isoformat()
    stages = [
        ("encode", ["encode", "--ds", night]),  # and the snapshot: one DAG task
        ("embed", ["embed", "--ds", night]),
        ("campaigns", ["campaigns", "--ds", night]),
        ("score", ["score", "--ds", night]),
        ("export", ["export", "--ds", night]),
    ]
    print(f"night ds={night}: {args.users:,} users, 8 campaigns; each stage a fresh process")
    total, peak = 0.0, 0.0
    for name, command in stages:
        result = stage(name, command, root, log_dir)
        total += result["seconds"]
        peak = max(peak, result["peak_mib"])
        print(f"  {name:<10} {result['seconds']:7.1f} s  peak {result['peak_mib']:7,.0f} MiB  "
              f"{summary(name, result['report'])}", flush=True)
    print(f"night total: {total:.1f} s = {total / 60:.1f} min; peak of any stage "
          f"{peak:,.0f} MiB (logs: {log_dir})")
    if not args.keep:
        shutil.rmtree(root)
    return 0


def summary(name: str, report: dict) -> str:
    """The stage's own figures, from the report it printed."""
    if name == "encode":
        rows = sum(s["rows_read"] for s in report.get("sources", {}).values())
        snapshot = report.get("snapshot", {})
        return (f"{rows:,} raw rows, {report.get('engine')} engine; in the job: encode "
                f"{report.get('encode_seconds', 0):.1f} s, snapshot "
                f"{snapshot.get('seconds', 0):.1f} s "
                f"({snapshot.get('assembly', {}).get('mode', '?')})")
    if name == "embed":
        return f"{report.get('users', 0):,} users, {report.get('users_per_second', 0):,.0f} users/s"
    keys = ("campaigns", "users", "exported", "failed", "failed_campaigns", "seconds")
    # a list or a mapping (campaigns by id, say) is shown by its length
    shown = {k: len(report[k]) if isinstance(report[k], (dict, list)) else report[k]
             for k in keys if k in report}
    return json.dumps(shown) if shown else json.dumps(report)[:160]


if __name__ == "__main__":
    sys.exit(main())
