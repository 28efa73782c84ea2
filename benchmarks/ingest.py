"""Memory and speed of dataset ingestion on a large archive: peak resident memory above the idle process.

Builds a ``--mb`` (500) MiB ``.zip`` (``ZIP_STORED``, as a user's zip of PNGs is: PNGs do not
deflate) of distinct grayscale PNGs of mixed sizes, ``--sides`` 256 to 1024 px a side, each a bright ellipse
under Gaussian noise (the noise keeps them incompressible, so the archive's size is real pixels,
about 0.85 bytes per pixel), in ``brain_tumor_dataset/yes/`` and ``brain_tumor_dataset/no/`` with
a few junk files beside them. Then, per run, in a separate fresh process (so one run's heap and
page tables are not the next one's idle memory):

1. import everything ingestion needs, read ``VmRSS`` from ``/proc/self/status``: the idle RSS;
2. reset the kernel's peak-RSS counter (``echo 5 > /proc/self/clear_refs``) so that ``VmHWM``
   then counts only what ingestion adds (when the kernel refuses, ``VmHWM`` includes import time:
   the figure only gets worse);
3. ingest the archive into an empty store with ``models.data.ingest.ingest`` (``ingest_zip`` when
   ``ingest`` does not exist), while a thread samples ``RssAnon`` (heap: Python, numpy, Pillow)
   and ``RssFile`` (file-backed pages: shared libraries, memory-mapped files) every 5 ms;
4. report images/s, MiB/s of archive, idle, peak (``VmHWM``) and peak minus idle, with the peaks
   of the two kinds of pages to tell where memory went.

With ``--api`` one more run goes through the real API: a ``uvicorn`` process, the archive streamed
to ``POST /datasets`` by ``drawai.upload`` (as ``drawai datasets add`` does), and the server
process's memory read from ``/proc/<pid>/status`` the same way (receiving the body and ingesting).

PASS when every run's peak minus idle is under ``--limit`` (300) MiB.

    python benchmarks/ingest.py [--mb 500] [--sides 256-1024] [--runs 1] [--api] [--archive PATH] [--keep]

The stored dataset grows with the image count (``storage_size``² bytes per image, 64 KiB at 256),
not with the archive's bytes: ``--sides 128-320`` makes many more, smaller images of the same
total size and shows that side of the working set.
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing
import os
import platform
import resource
import socket
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
MIB = 1 << 20
STARTUP_TIMEOUT_S = 120.0
_BATCH = 64  # images generated per round of the build pool
JUNK = {
    "brain_tumor_dataset/README.txt": b"Brain MRI images for brain tumor detection (synthetic benchmark stand-in)\n",
    "brain_tumor_dataset/yes/.DS_Store": b"\0\0\0\1Bud1" + b"\0" * 64,
    "__MACOSX/brain_tumor_dataset/._yes": b"\0\5\26\7" + b"\0" * 64,
}


# -- the archive ------------------------------------------------------------------------------


def slice_png(job: tuple[int, int, int]) -> tuple[str, bytes, tuple[int, int]]:
    """One distinct PNG: a bright ellipse on a dark background under Gaussian noise; class and size."""
    import numpy as np
    from PIL import Image

    seed, low, high = job
    rng = np.random.default_rng(seed)
    h, w = (int(v) for v in rng.integers(low, high + 1, 2))
    yy, xx = np.ogrid[:h, :w]
    a, b = rng.uniform(0.25, 0.45) * w, rng.uniform(0.25, 0.45) * h
    inside = ((xx - w / 2) / a) ** 2 + ((yy - h / 2) / b) ** 2 < 1
    pixels = np.where(inside, rng.uniform(110, 190), rng.uniform(10, 40)) + rng.normal(0, 20, (h, w))
    buf = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(buf, "PNG", compress_level=1)
    return ("yes" if rng.random() < 0.6 else "no"), buf.getvalue(), (w, h)


def build_archive(dest: Path, mib: float, sides: tuple[int, int]) -> dict[str, Any]:
    """Write the archive (PNGs until it reaches ``mib`` MiB, plus junk); what it holds."""
    target = int(mib * MIB)
    t0 = time.perf_counter()
    count, pixels = 0, 0
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_STORED) as zf:
        for name, data in JUNK.items():
            zf.writestr(name, data)
        with multiprocessing.Pool(os.cpu_count()) as pool:
            while zf.fp is not None and zf.fp.tell() < target:  # batches: imap would drain an endless iterator
                for cls, png, (w, h) in pool.imap(
                    slice_png, [(i, *sides) for i in range(count, count + _BATCH)], chunksize=4
                ):
                    zf.writestr(f"brain_tumor_dataset/{cls}/slice_{count:05d}.png", png)
                    count += 1
                    pixels += w * h
                    if zf.fp.tell() >= target:
                        break
    return {
        "images": count,
        "junk": len(JUNK),
        "bytes": dest.stat().st_size,
        "pixels": pixels,
        "build_s": time.perf_counter() - t0,
    }


# -- memory of a process ----------------------------------------------------------------------


def proc_status(pid: int | str = "self") -> dict[str, int]:
    """The ``Vm*``/``Rss*`` lines of ``/proc/<pid>/status``, in bytes."""
    out: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key.startswith(("Vm", "Rss")) and value.strip().endswith("kB"):
            out[key] = int(value.split()[0]) * 1024
    return out


def reset_peak(pid: int | str = "self") -> bool:
    """Reset ``VmHWM`` to the current RSS (Linux >= 4.0); False when the kernel does not allow it."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


class Sampler:
    """Samples a process's RssAnon and RssFile every ``interval`` s in a thread; keeps the peaks."""

    def __init__(self, pid: int | str = "self", interval: float = 0.005) -> None:
        self.pid, self.interval = pid, interval
        self.peak = {"RssAnon": 0, "RssFile": 0, "RssShmem": 0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                status = proc_status(self.pid)
            except OSError:
                return
            for key in self.peak:
                self.peak[key] = max(self.peak[key], status.get(key, 0))
            self._stop.wait(self.interval)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# -- one run in its own process ---------------------------------------------------------------


def ingest_function() -> tuple[str, Callable[..., Any]]:
    import models.data.ingest as datasets

    ingest = getattr(datasets, "ingest", None)
    if ingest is not None:
        return "models.data.ingest.ingest", lambda path, store, settings, name: ingest(
            path, store, settings, name, filename=path.name
        )
    return "models.data.ingest.ingest_zip", datasets.ingest_zip


def child(archive: Path, home: Path) -> None:
    """One measured ingestion; prints one JSON line."""
    import gc

    from models.platform.settings import Settings
    from models.platform.store import Store

    label, ingest = ingest_function()
    settings = Settings(home=home, _env_file=None)  # type: ignore[call-arg]
    store = Store(home).ensure()
    gc.collect()
    idle = proc_status()
    reset = reset_peak()
    with Sampler() as sampler:
        t0 = time.perf_counter()
        info = ingest(archive, store, settings, "bench")
        elapsed = time.perf_counter() - t0
    end = proc_status()
    result = {
        "function": label,
        "images": info.images,
        "skipped": len(info.skipped),
        "seconds": elapsed,
        "idle": idle["VmRSS"],
        "idle_anon": idle.get("RssAnon", 0),
        "idle_file": idle.get("RssFile", 0),
        "peak": end["VmHWM"],
        "peak_reset": reset,
        "ru_maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "peak_anon": sampler.peak["RssAnon"],
        "peak_file": sampler.peak["RssFile"],
        "end": end["VmRSS"],
    }
    print(json.dumps(result), flush=True)


def run_child(archive: Path, work: Path, i: int) -> dict[str, Any]:
    home = work / f"home-{i}"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(archive), str(home)]
    try:
        r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
        if r.returncode != 0:
            raise RuntimeError(f"the ingestion process failed ({r.returncode}):\n{r.stderr[-3000:]}")
        return dict(json.loads(r.stdout.strip().splitlines()[-1]))
    finally:
        subprocess.run(["rm", "-rf", str(home)], check=False)


# -- one run through the API ------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_api(archive: Path, work: Path) -> dict[str, Any]:
    import httpx

    from drawai.upload import TIMEOUT, post_dataset
    from models.platform.redisconn import stop_embedded

    home, port = work / "home-api", free_port()
    env = {
        **os.environ,
        "DRAWAI_HOME": str(home),
        "DRAWAI_MAX_UPLOAD_BYTES": str(archive.stat().st_size + MIB),  # the multipart envelope is a few bytes
        "PYTHONPATH": str(ROOT),
    }
    cmd = [sys.executable, "-m", "uvicorn", "--factory", "service.main:create_app", "--port", str(port)]
    cmd += ["--log-level", "warning", "--no-access-log"]
    log = work / "api.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the API exited with {proc.returncode}:\n{log.read_text(errors='replace')[-3000:]}")
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the API did not start")
            time.sleep(0.2)
        with httpx.Client(base_url=url, timeout=TIMEOUT) as client:
            client.get("/datasets").raise_for_status()  # one request served: lazily loaded code is in
            time.sleep(0.5)
            idle = proc_status(proc.pid)
            reset = reset_peak(proc.pid)
            with Sampler(proc.pid) as sampler:
                t0 = time.perf_counter()
                info = post_dataset(client, archive, archive.name, "bench")
                elapsed = time.perf_counter() - t0
        end = proc_status(proc.pid)
        return {
            "function": "POST /datasets (uvicorn)",
            "images": info["images"],
            "skipped": len(info["skipped"]),
            "seconds": elapsed,
            "idle": idle["VmRSS"],
            "idle_anon": idle.get("RssAnon", 0),
            "idle_file": idle.get("RssFile", 0),
            "peak": end["VmHWM"],
            "peak_reset": reset,
            "peak_anon": sampler.peak["RssAnon"],
            "peak_file": sampler.peak["RssFile"],
            "end": end["VmRSS"],
        }
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        stop_embedded(home / "redis")  # only when the API had to start one
        subprocess.run(["rm", "-rf", str(home)], check=False)


def _sides(text: str) -> tuple[int, int]:
    low, _, high = text.partition("-")
    if not (low.isdigit() and high.isdigit() and 0 < int(low) <= int(high)):
        raise argparse.ArgumentTypeError("expected MIN-MAX, e.g. 256-1024")
    return int(low), int(high)


# -- report -----------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=float, default=500.0, help="archive size in MiB (default 500)")
    parser.add_argument(
        "--sides", type=_sides, default=(256, 1024), help="MIN-MAX side of the PNGs in px (default 256-1024)"
    )
    parser.add_argument("--runs", type=int, default=1, help="measured ingestions, each in a fresh process")
    parser.add_argument("--api", action="store_true", help="also upload the archive through a real API process")
    parser.add_argument("--limit", type=float, default=300.0, help="largest allowed peak minus idle, MiB")
    parser.add_argument("--archive", type=Path, default=None, help="reuse this archive instead of building one")
    parser.add_argument("--keep", action="store_true", help="keep the built archive (its path is printed)")
    parser.add_argument("--child", nargs=2, metavar=("ARCHIVE", "HOME"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(Path(args.child[0]), Path(args.child[1]))
        return

    t_start = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="drawai-bench-ingest-"))
    try:
        if args.archive is not None:
            archive = args.archive.resolve()
            with zipfile.ZipFile(archive) as zf:
                n = sum(1 for i in zf.infolist() if i.filename.endswith(".png"))
            print(f"archive: {archive} ({archive.stat().st_size / MIB:.1f} MiB, {n} PNGs), reused")
        else:
            archive = work / "brain_tumor_dataset.zip"
            built = build_archive(archive, args.mb, args.sides)
            print(
                f"archive: {built['images']} distinct grayscale PNGs, {args.sides[0]}-{args.sides[1]} px a side "
                f"({built['pixels'] / built['images'] / 1e6:.2f} Mpx on average), + {built['junk']} junk files; "
                f"{built['bytes'] / MIB:.1f} MiB stored; built in {built['build_s']:.0f} s"
            )
        print(
            f"machine: {os.cpu_count()} CPUs, {platform.python_implementation()} {platform.python_version()}, "
            f"{platform.system()} {platform.release()}"
        )
        size_mib = archive.stat().st_size / MIB
        results = [run_child(archive, work, i) for i in range(args.runs)]
        if args.api:
            results.append(run_api(archive, work))
    finally:
        if not args.keep:
            subprocess.run(["rm", "-rf", str(work)], check=False)
        else:
            print(f"kept: {work}")

    print(f"ingestion by {results[0]['function']}, each run in a fresh process; MiB = 2^20 bytes")
    head = f"{'run':<28}{'images':>7}{'skipped':>8}{'s':>7}{'img/s':>8}{'MiB/s':>7}"
    head += f"{'idle':>8}{'peak':>8}{'peak-idle':>10}{'anon pk':>9}{'file pk':>9}"
    print(head)
    ok = True
    for i, r in enumerate(results):
        delta = (r["peak"] - r["idle"]) / MIB
        ok &= delta < args.limit
        label = r["function"] if r["function"].startswith("POST") else f"direct #{i + 1}"
        print(
            f"{label:<28}{r['images']:>7}{r['skipped']:>8}{r['seconds']:>7.1f}{r['images'] / r['seconds']:>8.1f}"
            f"{size_mib / r['seconds']:>7.1f}{r['idle'] / MIB:>8.1f}{r['peak'] / MIB:>8.1f}{delta:>10.1f}"
            f"{r['peak_anon'] / MIB:>9.1f}{r['peak_file'] / MIB:>9.1f}"
        )
        if not r["peak_reset"]:
            print("  (the kernel refused to reset the peak counter: peak includes start-up)")
        print(
            f"  idle anon {r['idle_anon'] / MIB:.1f} / file {r['idle_file'] / MIB:.1f} MiB; peak anon +"
            f"{(r['peak_anon'] - r['idle_anon']) / MIB:.1f}, file +{(r['peak_file'] - r['idle_file']) / MIB:.1f} MiB "
            f"(sampled every 5 ms); RSS at the end {r['end'] / MIB:.1f} MiB"
        )
    worst = max((r["peak"] - r["idle"]) / MIB for r in results)
    print(f"peak - idle, worst run: {worst:.1f} MiB (limit {args.limit:g} MiB): {'PASS' if ok else 'FAIL'}")
    print(f"total runtime {time.perf_counter() - t_start:.0f} s")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
