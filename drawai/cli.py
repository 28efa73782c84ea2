"""``drawai``: the command line. The only module that prints."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from drawai.cli_client import add_commands
from models.platform.settings import Settings, get_settings


def _logging(level: str = "INFO") -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per poll would bury the progress bar


def cmd_worker(args: argparse.Namespace) -> int:
    from worker.main import run_worker

    return run_worker(get_settings(), burst=args.burst, name=args.name)


def _multiprocess_metrics_dir(settings: Settings) -> Path:
    """The multiprocess folder of prometheus_client for several API workers: created, stale ``*.db`` removed."""
    folder = Path(settings.metrics_dir or Path(settings.home) / "metrics")
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.db"):  # files of processes that are gone would be summed in forever
        stale.unlink(missing_ok=True)
    return folder


def cmd_api(args: argparse.Namespace) -> int:
    import os

    import uvicorn

    from service.auth import ListenRefused, check_listen_allowed

    settings = get_settings()
    try:
        check_listen_allowed(args.host, settings)
    except ListenRefused as exc:
        print(f"drawai api: {exc}", file=sys.stderr)
        return 2
    if settings.api_workers > 1:  # set before uvicorn starts: its worker processes inherit it
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(_multiprocess_metrics_dir(settings))
    uvicorn.run("service.main:create_app", factory=True, host=args.host, port=args.port, workers=settings.api_workers)
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    from drawai.stack import Stack
    from service.auth import ListenRefused, check_listen_allowed

    settings = get_settings()
    try:
        check_listen_allowed(args.host, settings)  # the same rule as `drawai api`
    except ListenRefused as exc:
        print(f"drawai up: {exc}", file=sys.stderr)
        return 2
    stack = Stack(settings, args.host, args.port)
    stack.handle_signals()
    stack.start()
    try:
        stack.wait_ready()
        print(f"Draw.AI is up on {stack.url} (Ctrl-C stops it)", flush=True)
        return stack.wait()
    finally:
        stack.stop()


def cmd_demo(args: argparse.Namespace) -> int:
    from drawai.demo import run_demo

    return run_demo(args, get_settings())


# Report fields printed in the header and the class table; any other field (the held-out split,
# statistics, duplicates...) is printed generically, so new server fields show up without a CLI change.
_REPORT_HEADER = ("id", "name", "images", "classes", "image_size", "sha256", "created", "skipped")
_MAX_ROWS = 50  # rows of a list (skipped files...) printed before "and N more"
_SPARK = "▁▂▃▄▅▆▇█"
_SPARK_WIDTH = 64


def _sparkline(values: list[float]) -> str:
    """A histogram as one line of block characters (bins merged down to ``_SPARK_WIDTH``)."""
    if len(values) > _SPARK_WIDTH:
        step = len(values) / _SPARK_WIDTH
        values = [sum(values[int(i * step) : int((i + 1) * step)]) for i in range(_SPARK_WIDTH)]
    top = max(values) or 1
    return "".join(_SPARK[min(len(_SPARK) - 1, int(v / top * (len(_SPARK) - 1) + 0.5))] for v in values)


def _scalar(value: Any) -> str:
    """A value as rich markup that shows it literally (file names like ``a.dcm [frame 1]`` included)."""
    from rich.markup import escape

    return escape(f"{value:.4g}" if isinstance(value, float) else str(value))


def _rows_table(rows: list[dict[str, Any]], title: str | None = None) -> Any:
    from rich.table import Table

    columns = list(dict.fromkeys(k for row in rows for k in row))
    table = Table(*map(_scalar, columns), title=title, title_justify="left", show_lines=False)
    for row in rows[:_MAX_ROWS]:
        table.add_row(*(_scalar(row.get(c, "")) for c in columns))
    if len(rows) > _MAX_ROWS:
        table.add_row(f"… and {len(rows) - _MAX_ROWS} more", *([""] * (len(columns) - 1)))
    return table


def _tree(label: str, value: Any) -> Any:
    """A nested report field as a rich tree: dicts branch, numeric lists become sparklines."""
    from rich.tree import Tree

    if isinstance(value, dict) and 0 < len(value) <= 8 and not any(isinstance(v, dict | list) for v in value.values()):
        return Tree(f"[bold]{_scalar(label)}[/]: " + ", ".join(f"{_scalar(k)} {_scalar(v)}" for k, v in value.items()))
    if isinstance(value, dict):
        tree = Tree(f"[bold]{_scalar(label)}[/]")
        for k, v in value.items():
            if isinstance(v, dict | list) and v:
                tree.add(_tree(str(k), v))
            else:
                tree.add(f"{_scalar(k)}: {_scalar(v)}")
        return tree
    if isinstance(value, list) and len(value) > 8 and all(isinstance(v, int | float) for v in value):
        return Tree(f"[bold]{_scalar(label)}[/] ({len(value)} values, sum {_scalar(sum(value))}) {_sparkline(value)}")
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        tree = Tree(f"[bold]{_scalar(label)}[/] ({len(value)})")
        tree.add(_rows_table(value))
        return tree
    if isinstance(value, list):
        shown = ", ".join(_scalar(v) for v in value[:_MAX_ROWS])
        return Tree(f"[bold]{_scalar(label)}[/]: {shown}{' …' if len(value) > _MAX_ROWS else ''}")
    return Tree(f"[bold]{_scalar(label)}[/]: {_scalar(value)}")


def _print_report(console: Any, ds: dict[str, Any]) -> None:
    """The server's dataset report: header, classes, extra fields (split, statistics...), skipped files."""
    from rich.table import Table

    size = f", {_scalar(ds['image_size'])} px" if ds.get("image_size") else ""
    name, images = _scalar(repr(ds.get("name", ""))), _scalar(ds.get("images", "?"))
    console.print(f"dataset [bold]{_scalar(ds['id'])}[/] {name}: {images} images{size}")
    classes = ds.get("classes") or {}
    extra = {k: v for k, v in ds.items() if k not in _REPORT_HEADER and v not in (None, {}, [])}
    split = extra.get("split")
    per_class: dict[str, Any] = {}
    if isinstance(split, dict) and isinstance(split.get("classes"), dict):
        per_class = split["classes"]  # the held-out split per class goes into the class table
        extra["split"] = {k: v for k, v in split.items() if k != "classes"}
    table = Table("class", "images", title="classes", title_justify="left")
    if per_class:
        table.add_column("train")
        table.add_column("held out")
    for name, count in sorted(classes.items()):
        parts = per_class.get(name) or {}
        cells = [_scalar(parts.get("train", "")), _scalar(parts.get("heldout", ""))] if per_class else []
        table.add_row(_scalar(name), _scalar(count), *cells)
    console.print(table)
    for key, value in extra.items():
        console.print(_tree(key, value))
    skipped = ds.get("skipped") or []
    if skipped:
        console.print(_rows_table(skipped, title=f"skipped: {len(skipped)} file{'' if len(skipped) == 1 else 's'}"))
    else:
        console.print("skipped: none")


def _zip_with_bar(folder: Path, dest: Path, err: Any) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from drawai.upload import folder_files, zip_folder

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err) as bar:
        task = bar.add_task(f"zipping {_scalar(folder)}", total=len(folder_files(folder)))
        zip_folder(folder, dest, on_file=lambda _: bar.advance(task))


def _datasets_add(client: Any, args: argparse.Namespace, err: Any) -> dict[str, Any]:
    """Zip (a folder) and stream the upload with a progress bar of bytes sent; the server's report."""
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    from drawai.upload import post_dataset, upload_source

    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with upload_source(Path(args.path), lambda folder, dest: _zip_with_bar(folder, dest, err)) as (file, filename):
        total = file.stat().st_size
        with Progress(*columns, console=err) as bar:
            task = bar.add_task(f"uploading {_scalar(filename)}", total=total)

            def on_position(pos: int) -> None:
                bar.update(task, completed=pos)
                if pos >= total:  # every byte handed to the socket: the server now ingests, then answers
                    bar.update(task, description="sent; the server is ingesting it")

            return post_dataset(client, file, filename, args.name, on_position)


def cmd_datasets(args: argparse.Namespace) -> int:
    import httpx
    from rich.console import Console
    from rich.table import Table

    from drawai.upload import TIMEOUT, UploadError, auth_headers, list_all, request_json

    out, err = Console(), Console(stderr=True)
    settings = get_settings()
    url = args.url or settings.api_url
    try:
        with httpx.Client(base_url=url, timeout=TIMEOUT, headers=auth_headers(settings)) as client:
            if args.action == "add":
                _print_report(out, _datasets_add(client, args, err))
            elif args.action == "show":
                _print_report(out, request_json(client, "GET", f"/datasets/{args.id}"))
            else:
                datasets = list_all(client, "/datasets")
                table = Table()
                table.add_column("id", no_wrap=True, min_width=max((len(d["id"]) for d in datasets), default=2))
                table.add_column("name", overflow="fold")
                table.add_column("images", justify="right")
                table.add_column("classes", no_wrap=True)
                table.add_column("created", no_wrap=True)
                for ds in datasets:
                    classes = ", ".join(f"{k} {v}" for k, v in sorted((ds.get("classes") or {}).items()))
                    created = str(ds.get("created", ""))[:16].replace("T", " ")
                    cells = (ds["id"], ds.get("name", ""), ds.get("images", ""), classes, created)
                    table.add_row(*map(_scalar, cells))
                out.print(table if datasets else f"no datasets on {_scalar(url)}")
    except UploadError as exc:
        err.print(f"[bold red]error:[/] {_scalar(exc)}", highlight=False, soft_wrap=True)
        return 1
    except KeyboardInterrupt:
        err.print("interrupted", highlight=False)
        return 130
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from rich.console import Console

    from drawai.evaluate import EvaluateError, print_summary, run

    out, err = Console(), Console(stderr=True)
    try:
        report = run(args, get_settings(), err)
    except EvaluateError as exc:
        err.print(f"[bold red]error:[/] {_scalar(exc)}", highlight=False, soft_wrap=True)
        return 1
    print_summary(out, report)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="drawai", description=__doc__)
    parser.add_argument("--log-level", default="INFO")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("worker", help="run a training worker on the Redis queue")
    p.add_argument("--burst", action="store_true", help="exit when the queue is empty")
    p.add_argument("--name", default=None)
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("api", help="run the HTTP API")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.set_defaults(func=cmd_api)

    p = sub.add_parser("up", help="run Redis, a worker and the API together")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.set_defaults(func=cmd_up)

    p = sub.add_parser("demo", help="train on the bundled real MRI slices and write samples")
    p.add_argument("--out", default="drawai-demo")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--epochs", type=int, default=None, help="train this many epochs (default: the preset's length)")
    p.add_argument(
        "--conditional",
        action="store_true",
        help="train one class-conditional model on the labelled demo (slices with simulated lesions as 'yes')",
    )
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("evaluate", help="write a model version's quality report against real images to a folder")
    p.add_argument("--model", required=True, help="version in DRAWAI_HOME (v3), or a version folder")
    p.add_argument(
        "--real",
        default=None,
        help="real images: folder, archive, NIfTI or DICOM (default: the held-out split of the model's dataset)",
    )
    p.add_argument("--out", default=None, help="folder for report.html, report.json, plots/ (default: drawai-report-V)")
    p.add_argument("--count", type=int, default=None, help="synthetic images (default: DRAWAI_EVAL_SYNTHETIC_COUNT)")
    p.add_argument("--seed", type=int, default=0, help="synthetic image i uses seed + i, as POST /generate does")
    p.add_argument("--metrics", default=None, help="comma-separated subset (default: all)")
    p.add_argument("--max-real", type=int, default=1000, help="real images kept (a seeded sample beyond that)")
    p.add_argument("--fid-weights", default=None, help="TorchScript Inception for FID/KID (DRAWAI_FID_WEIGHTS)")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("datasets", help="upload, list and show datasets on a running API")
    p.add_argument("--url", default=None, help="the API (default: DRAWAI_API_URL, http://127.0.0.1:8000)")
    p.set_defaults(func=cmd_datasets)
    actions = p.add_subparsers(dest="action", required=True)
    a = actions.add_parser("add", help="upload a folder, archive, NIfTI volume or DICOM folder; print the report")
    a.add_argument("path", help="folder (zipped on the fly), .zip, .tar, .tar.gz, .tgz, .nii, .nii.gz or .dcm")
    a.add_argument("--name", default=None, help="dataset name (default: the file or folder name)")
    a.add_argument("--url", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    s = actions.add_parser("show", help="print one dataset's report")
    s.add_argument("id")
    s.add_argument("--url", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    ls = actions.add_parser("list", help="list the datasets")
    ls.add_argument("--url", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    add_commands(sub)  # train, jobs, jobs watch, models, generate (drawai.cli_client, over drawai.client)

    args = parser.parse_args(argv)
    _logging(args.log_level)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
