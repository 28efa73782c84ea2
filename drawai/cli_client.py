"""``drawai train | jobs | jobs watch | models | generate``: the command line over ``drawai.client``.

They talk to a running API (``--url``, default ``DRAWAI_API_URL``) with ``DRAWAI_API_KEY`` (else the first of
``DRAWAI_API_KEYS``). Tables and the live progress bar use rich; errors print the API's ``detail`` and exit 1.
``drawai jobs watch`` (and ``drawai train --watch``) exit 0 when the job finished, 1 when it failed or was canceled.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape

if TYPE_CHECKING:  # the client (and the API models it imports) loads only when a command runs
    from drawai.client import Client, JobEvent

ENDED_OK = "finished"


def client_for(args: argparse.Namespace) -> Client:
    from drawai.client import Client
    from models.platform.settings import get_settings, split_keys

    settings = get_settings()
    key = settings.api_key.get_secret_value().strip() if settings.api_key is not None else ""
    key = key or next(iter(split_keys(settings.api_keys)), "")
    return Client(args.url or settings.api_url, api_key=key)


def parse_field(text: str) -> tuple[str, Any]:
    """``k=v``: ``v`` read as JSON when it is JSON (``3``, ``0.5``, ``true``, ``null``, ``[1, 2]``), else a string."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"--field takes key=value, not {text!r}")
    try:
        return key.strip(), json.loads(value)
    except ValueError:
        return key.strip(), value


def _fmt(value: Any, spec: str = ".3g") -> str:
    return "-" if value is None else format(value, spec) if isinstance(value, float) else str(value)


def _eta(seconds: Any) -> str:
    if not isinstance(seconds, int | float):
        return "-"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}"


def watch(api: Client, job_id: str, out: Console, err: Console) -> int:
    """A live progress bar of the job's events (phase, epoch, losses, images/s, ETA) until it ends; the exit code."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    columns = (
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("epoch {task.fields[epoch]}  D {task.fields[d]}  G {task.fields[g]}  {task.fields[ips]} img/s"),
        TextColumn("ETA {task.fields[eta]}"),
        TimeElapsedColumn(),
    )
    last: JobEvent | None = None
    with Progress(*columns, console=err, transient=False) as bar:
        task = bar.add_task("queued", total=None, epoch="-", d="-", g="-", ips="-", eta="-")
        for event in api.jobs.watch(job_id):
            last = event
            p = event.progress
            bar.update(
                task,
                description=escape(f"{event.job.status} {p.get('phase', '')}".strip()),
                completed=p.get("step") or 0,
                total=p.get("steps") or None,
                epoch=f"{p.get('epoch', 0)}/{p.get('epochs', 0)}",
                d=_fmt(p.get("d_loss")),
                g=_fmt(p.get("g_loss")),
                ips=_fmt(p.get("images_per_s"), ".0f"),
                eta=_eta(p.get("eta_s")),
            )
    assert last is not None
    job = last.job
    if job.status == ENDED_OK:
        out.print(f"job {escape(job.id)} finished: model version [bold]{escape(str(job.model_version))}[/]")
        return 0
    reason = f": {job.error}" if job.error else ""
    err.print(f"[bold red]job {escape(job.id)} {job.status}[/]{escape(reason)}", highlight=False, soft_wrap=True)
    return 1


def cmd_train(args: argparse.Namespace) -> int:
    out, err = Console(), Console(stderr=True)
    with client_for(args) as api:
        job = api.jobs.train(args.dataset, args.preset, **dict(args.field or []))
        out.print(
            f"job [bold]{escape(job.id)}[/] {job.status}: {escape(str(job.spec and job.spec.get('preset_used')))}"
        )
        return watch(api, job.id, out, err) if args.watch else 0


def cmd_jobs(args: argparse.Namespace) -> int:
    from rich.table import Table

    out, err = Console(), Console(stderr=True)
    with client_for(args) as api:
        if args.action == "watch":
            return watch(api, args.id, out, err)
        jobs = list(api.jobs.iter())
        table = Table("id", "status", "dataset", "phase", "epoch", "model", "created")
        for job in jobs:
            p = job.progress or {}
            epoch = f"{p.get('epoch', 0)}/{p.get('epochs', 0)}" if p else ""
            cells = (job.id, job.status, job.dataset, p.get("phase"), epoch, job.model_version, _when(job.created_at))
            table.add_row(*(escape("" if c is None else str(c)) for c in cells))
        out.print(table if jobs else f"no jobs on {escape(api.base_url)}")
    return 0


def _when(iso: str | None) -> str:
    return (iso or "")[:16].replace("T", " ")


def cmd_models(args: argparse.Namespace) -> int:
    from rich.table import Table

    out = Console()
    with client_for(args) as api:
        models = list(api.models.iter())
        table = Table("", "version", "architecture", "size", "classes", "dataset", "report", "created")
        for m in models:
            classes = ", ".join(f"{k} {v}" for k, v in sorted(m.classes.items())) if m.conditional else "-"
            cells = (m.version, m.architecture, f"{m.image_size}px", classes, m.dataset, "yes" if m.report else "no")
            table.add_row("[bold green]*[/]" if m.active else "", *map(escape, cells), _when(m.created))
        out.print(table if models else f"no model versions on {escape(api.base_url)}")
        if models:
            out.print("* active")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    out = Console()
    folder = Path(args.out)
    with client_for(args) as api:
        result = api.generate(args.count, args.seed, args.label, args.labels, args.model)
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in zip(result.files, result.pngs, strict=True):
        (folder / Path(name).name).write_bytes(data)  # the server's PNGs, with their provenance chunks
    first, last = result.seeds[0], result.seeds[-1]
    classes = f", classes {', '.join(sorted(set(result.labels)))}" if result.labels else ""
    out.print(f"wrote {len(result)} synthetic slices of {escape(result.model_version)} (seeds {first}..{last}"
              f"{escape(classes)}) to {escape(str(folder))}")  # fmt: skip
    return 0


def run(func: Any, args: argparse.Namespace) -> int:
    """``func(args)``, with the API's errors printed as one line (exit 1) and Ctrl-C as 130."""
    from drawai.client import DrawAIError

    err = Console(stderr=True)
    try:
        return int(func(args))
    except DrawAIError as exc:
        err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        return 1
    except KeyboardInterrupt:
        err.print("interrupted", highlight=False)
        return 130


def _url(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", default=None, help="the API (default: DRAWAI_API_URL, http://127.0.0.1:8000)")


def add_commands(sub: Any) -> None:
    """Register ``train``, ``jobs``, ``models`` and ``generate`` on the ``drawai`` parser's subcommands."""
    p = sub.add_parser("train", help="train a model on a dataset (a running API and worker)")
    p.add_argument("dataset", help="dataset id (drawai datasets list)")
    p.add_argument("--preset", default=None, help="quick, standard or report (default: the API's choice)")
    p.add_argument("--field", action="append", type=parse_field, metavar="KEY=VALUE", help="a spec field (repeat)")
    p.add_argument("--watch", action="store_true", help="follow the job's progress until it ends")
    _url(p)
    p.set_defaults(func=lambda a: run(cmd_train, a))

    p = sub.add_parser("jobs", help="list the training jobs, or watch one (drawai jobs watch ID)")
    _url(p)
    p.set_defaults(func=lambda a: run(cmd_jobs, a), action=None)
    actions = p.add_subparsers(dest="action")
    w = actions.add_parser("watch", help="a live progress bar of one job until it ends (exit 1: failed/canceled)")
    w.add_argument("id")
    w.add_argument("--url", default=argparse.SUPPRESS, help=argparse.SUPPRESS)

    p = sub.add_parser("models", help="list the model versions (the active one marked)")
    _url(p)
    p.set_defaults(func=lambda a: run(cmd_models, a))

    p = sub.add_parser("generate", help="write synthetic slices (PNGs with provenance) to a folder")
    p.add_argument("--count", type=int, default=None, help="number of images (default 1, or the sum of --labels)")
    p.add_argument("--seed", type=int, default=None, help="image i uses seed + i (default: drawn by the server)")
    p.add_argument("--label", default=None, help="conditional models: every image of this class")
    p.add_argument("--labels", default=None, help="conditional models: images per class, e.g. yes:48,no:16")
    p.add_argument("--model", default=None, help="model version (default: the active one)")
    p.add_argument("--out", default="drawai-synthetic", help="folder to write the PNGs to")
    _url(p)
    p.set_defaults(func=lambda a: run(cmd_generate, a))
