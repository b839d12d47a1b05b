"""One benchmark run from start to teardown: signals, the temp dir, errors, --md and --json."""

from __future__ import annotations

import shutil
import signal
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType

from harness.errors import BenchError
from harness.report import Report, write_json
from harness.servers import Server


def interrupt(signum: int, frame: FrameType | None) -> None:
    """SIGTERM behaves like Ctrl-C: unwind through the teardown and stop every server."""
    raise KeyboardInterrupt


def run(
    body: Callable[[Path], int | None],
    *,
    prefix: str,
    keep: bool = False,
    report: Report | None = None,
    md: str | Path | None = None,
    json_path: str | Path | None = None,
    results: Callable[[], object] | None = None,
    failed: str = "",
    keep_failed: bool = False,
    kept: str = "temp dir kept: {tmp}",
    signals: Sequence[signal.Signals] = (signal.SIGTERM,),
    handler: Callable[[int, FrameType | None], None] = interrupt,
) -> int:
    """`body(tmp)` in a fresh temp dir; its return is the exit status (None: 0).

    A BenchError ends it with status 1: said in the report as `**Stopped: ...**`, or,
    with `failed` (the script's name), on stderr. Ctrl-C (and `signals`) end it with
    130. Whatever happens, every Server still running is stopped, the temp dir is
    removed unless `keep` (or `keep_failed` and the status is 1), the report is
    written to `md` unless interrupted, and `results()` to `json_path`.
    """
    for signum in signals:
        signal.signal(signum, handler)
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    status = 0
    try:
        status = body(tmp) or 0
    except BenchError as exc:
        if report is not None and not failed:
            report.add("", f"**Stopped: {exc}**", "")
        else:
            print(f"\n{failed}: {exc}", file=sys.stderr)
        status = 1
    except KeyboardInterrupt:
        print("\ninterrupted; stopping servers", file=sys.stderr)
        status = 130
    finally:
        Server.stop_all()
        if keep or (keep_failed and status == 1):
            print(kept.format(tmp=tmp), file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    if md and report is not None and status != 130:
        report.write(md)
        print(f"written: {md}", file=sys.stderr)
    if json_path and results is not None:
        data = results()
        if data is not None:
            try:
                write_json(json_path, data)
            except OSError as exc:
                print(f"--json {json_path}: {exc}", file=sys.stderr)
    return status
