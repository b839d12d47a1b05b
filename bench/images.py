"""Image variants: engine times, what the edge adds, throughput against thumbor, bytes saved.

    .venv/bin/python bench/images.py [--quick] [--only ops,edge,throughput,bytes,demo]
                                     [--md bench/IMAGES.md] [--json FILE]

Four parts, each with its target; see bench/README.md:

1. **ops**: median ms of `transform()` per engine (vips, pillow), output format and
   width on the bundled photos, each engine forced through `Settings.engines`; which
   engine wins per (operation, format), next to the pipeline's `DEFAULT_ENGINES`.
2. **edge**: a 736 px WebP from a cached source, timed at the client through
   `pinedge edge --workers 1` (a fresh node per round, sources warmed first, so each
   timed request is a variant miss and a source hit), against the fastest engine's
   own `transform()` time for the same operation, in this process.
3. **throughput**: variants/s on misses, `pinedge edge --workers 2` against thumbor
   (installed into bench/.thumbor-venv), same photos, widths and formats, driven by an
   aiohttp client at concurrency 8; a fresh pinedge node per round.
4. **bytes**: variant bytes per format and width against the originals, and the demo
   page as headless Chromium loads it.

Everything is printed as Markdown; nothing is asserted. `--quick` is a smoke run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import html.parser
import http.client
import json
import math
import multiprocessing
import os
import platform
import random
import re
import shlex
import shutil
import signal
import struct
import subprocess
import sys
import textwrap
import time
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import PIL
import pyvips
from harness import session
from harness.errors import BenchError
from harness.machine import (
    QUIET_SHARE,
    TICK,
    CpuSample,
    descendants,
    neighbours,
    others_share,
    proc_ticks,
    wait_for_quiet,
)
from harness.report import Report, note, run_line
from harness.servers import (
    REPO,
    Server,
    cache_status,
    free_ports,
    http_get,
    pinedge_argv,
    pinedge_env,
    start_edge,
    start_sample_origin,
    wait_http,
)
from harness.stats import geomean, median, verdict

from pinedge.edge.images import Format, Limits, Result, Settings, Variant, probe, transform
from pinedge.edge.images.model import DEFAULT_ENGINES
from pinedge.edge.images.pipeline import PREPARED

PHOTOS = REPO / "origin" / "photos"
THUMBOR_VENV = REPO / "bench" / ".thumbor-venv"
CHROMIUM = "/usr/bin/chromium"


ENGINE_NAMES = ("vips", "pillow")

# Part 1: a 3996 px and a 1914x2565 (progressive) JPEG, a 1000 px JPEG, a PNG, an
# 800 px CMYK JPEG; then extra rows so that every key of DEFAULT_ENGINES is measured.
OP_PHOTOS = (
    "The_Poppet.jpg",
    "Cerkiew.jpg",
    "hubble_deep_field.jpg",
    "coffee.png",
    "Giunchedi_Filippo_January_2015_01-cmyk.jpg",
)
OP_WIDTHS = (236, 736, 1200)
OP_FORMATS = (Format.JPEG, Format.WEBP, Format.AVIF)
OP_EXTRA = (
    ("resize", "alpha-premultiply-2048x1536-paper.png", Format.PNG, OP_WIDTHS),
    ("animate", "Rotating_earth_large.gif", Format.WEBP, (236,)),
)

# Part 2: the JPEG sources a 736 px variant can be made from; the target is about the
# two 2000-ish px ones.
EDGE_PHOTOS = ("The_Poppet.jpg", "Cerkiew.jpg", "retina.jpg", "hubble_deep_field.jpg")
EDGE_TARGET_PHOTOS = ("The_Poppet.jpg", "Cerkiew.jpg")
EDGE_TARGET = 1.1

# Part 3: every still photo x the breakpoints x two formats. The animated GIFs are left
# out: pinedge makes a 44-frame animated WebP of them, thumbor without gifsicle a still
# image, so the two would not be doing the same work.
TP_WIDTHS = (236, 474, 736, 1200)
TP_FORMATS = (Format.WEBP, Format.JPEG)
TP_CONCURRENCY = 8
TP_TARGET = 2.0

# Part 4
BYTES_WIDTHS = (236, 474, 736, 1200)
BYTES_FORMATS = (Format.AVIF, Format.WEBP, Format.JPEG)
DEMO_TARGET = 0.40
CHROMIUM_ACCEPT = "image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8"
VIEWPORT = (1280, 900)


# ---------------------------------------------------------------------------- output


def ms(value: float) -> str:
    return f"{value:.1f}" if value < 100 else f"{value:.0f}"


def kb(n: float) -> str:
    return f"{n / 1000:.1f} kB" if n < 100_000 else f"{n / 1000:.0f} kB"


def pct(part: float, whole: float) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "-"


# ---------------------------------------------------------------------------- processes


def start_origin(tmp: Path) -> tuple[Server, int]:
    return start_sample_origin(tmp)


def start_node(tmp: Path, origin_port: int, workers: int, tag: str) -> tuple[Server, int]:
    edge = start_edge(tmp, f"edge-{tag}", origin_port, cache_mem="1GiB", workers=workers)
    wait_http(edge.server, edge.port, "/img/horse.png", timeout=30)
    return edge.server, edge.port


def transformed(headers: dict[str, str]) -> bool:
    """Whether this response's variant was made for it (a variant miss). The source
    itself is a hit then: `pinedge-bench; hit; ...; stored; detail=transformed`."""
    return "detail=transformed" in cache_status(headers)


# ---------------------------------------------------------------------------- 1. per operation


def engine_settings(engine: str) -> Settings:
    """The pipeline's default settings with every (operation, format) done by `engine`."""
    engines = {(op, fmt): engine for op in ("resize", "animate") for fmt in Format}
    return Settings(engines=engines)


def run_transform(data: bytes, variant: Variant, settings: Settings) -> Result:
    result = transform(data, variant, Limits(), settings)
    if STOPPING:  # a signal whose KeyboardInterrupt a libvips callback swallowed
        raise KeyboardInterrupt
    return result


def timed_transform(
    data: bytes, variant: Variant, settings: Settings, cold: bool = True
) -> tuple[float, float, int]:
    """Wall ms, process CPU ms (libvips' own threads included) and the body's bytes.
    `cold` empties the pipeline's decoded-source cache first, so the time is one
    operation from the source's bytes."""
    if cold:
        PREPARED.clear()
    wall, cpu = time.perf_counter(), time.process_time()
    result = run_transform(data, variant, settings)
    return (
        (time.perf_counter() - wall) * 1000,
        (time.process_time() - cpu) * 1000,
        len(result.body),
    )


@dataclass
class OpCell:
    op: str
    photo: str
    fmt: Format
    width: int
    out: str  # the output format made, as the pipeline chose it
    wall: dict[str, float] = field(default_factory=dict)  # engine -> median wall ms
    cpu: dict[str, float] = field(default_factory=dict)
    size: dict[str, int] = field(default_factory=dict)


def measure_engines(
    data: bytes, variant: Variant, runs: int, per_engine: dict[str, Settings]
) -> tuple[dict[str, float], dict[str, float], dict[str, int]]:
    """Median wall and CPU ms per engine: one unmeasured run each, then `runs` runs
    each, the engines taking turns so that both see the same moments of the machine."""
    walls: dict[str, list[float]] = {name: [] for name in per_engine}
    cpus: dict[str, list[float]] = {name: [] for name in per_engine}
    sizes: dict[str, int] = {}
    for settings in per_engine.values():
        timed_transform(data, variant, settings)
    for i in range(runs):
        order = list(per_engine) if i % 2 == 0 else list(reversed(per_engine))
        for name in order:
            wall, cpu, size = timed_transform(data, variant, per_engine[name])
            walls[name].append(wall)
            cpus[name].append(cpu)
            sizes[name] = size
    return (
        {n: median(v) for n, v in walls.items()},
        {n: median(v) for n, v in cpus.items()},
        sizes,
    )


def op_plan() -> list[tuple[str, str, Format, int]]:
    plan = [
        ("resize", photo, fmt, width)
        for photo in OP_PHOTOS
        for fmt in OP_FORMATS
        for width in OP_WIDTHS
    ]
    for op, photo, fmt, widths in OP_EXTRA:
        plan += [(op, photo, fmt, width) for width in widths]
    return plan


TIE = 0.05  # pillow/vips within 5% of 1: neither engine is faster on this machine


def faster(ratio: float) -> str:
    """The faster engine for a pillow/vips time ratio, or a tie."""
    if abs(ratio - 1) <= TIE:
        return f"tie (±{TIE:.0%})"
    return "vips" if ratio > 1 else "pillow"


def part_ops(report: Report, args: argparse.Namespace, results: dict) -> None:
    report.add(
        "## 1. Per operation: `transform()` per engine",
        "",
        f"Median wall ms (process CPU ms in brackets, libvips' own threads included) of "
        f"{args.runs} runs of `transform(data, Variant(format, width), Limits(), settings)`, "
        "each engine forced with `Settings(engines={...: engine})`, the engines taking "
        "turns run by run after one unmeasured run each. Default encoder settings "
        "(JPEG q80, WebP q78 effort 2, AVIF q55 effort 1). `—`: the photo is narrower "
        "than the width (never upscaled). `kB` is vips' output; Pillow's is within a few %.",
        "",
    )
    per_engine = {name: engine_settings(name) for name in ENGINE_NAMES}
    cells: list[OpCell] = []
    datas = {name: (PHOTOS / name).read_bytes() for name in {p for _, p, _, _ in op_plan()}}
    infos = {name: probe(data, Limits()) for name, data in datas.items()}
    for op, photo, fmt, width in op_plan():
        info = infos[photo]
        if width >= info.width:
            continue
        variant = Variant(format=fmt, width=width)
        out = run_transform(datas[photo], variant, Settings()).format.value
        note(f"ops: {photo} -> {fmt.value} {width}")
        wall, cpu, size = measure_engines(datas[photo], variant, args.runs, per_engine)
        cells.append(OpCell(op, photo, fmt, width, out, wall, cpu, size))

    rows = []
    for cell in cells:
        winner = min(ENGINE_NAMES, key=lambda n: cell.wall[n])
        ratio = cell.wall["pillow"] / cell.wall["vips"]
        info = infos[cell.photo]
        out = cell.fmt.value if cell.out == cell.fmt.value else f"{cell.fmt.value}→{cell.out}"
        rows.append(
            [
                cell.op,
                f"{cell.photo} ({info.width}x{info.height})",
                out,
                str(cell.width),
                f"{ms(cell.wall['vips'])} ({ms(cell.cpu['vips'])})",
                f"{ms(cell.wall['pillow'])} ({ms(cell.cpu['pillow'])})",
                f"{ratio:.2f}x",
                winner,
                kb(cell.size["vips"]),
            ]
        )
    report.table(
        ["op", "photo", "format", "width", "vips ms", "pillow ms", "pillow/vips", "faster", "kB"],
        rows,
        "llllrrrlr",
    )

    # Who wins per (operation, format), over every photo and width measured.
    report.add(
        "### Which engine per (operation, format)",
        "",
        "`pillow/vips` is the geometric mean over the rows above of Pillow's wall time "
        "divided by libvips' (above 1: libvips is faster); `wins` counts rows won on wall "
        f"time; within ±{TIE:.0%} of 1 it is a tie (run-to-run noise is about that). "
        "The winner on CPU time is given too: under load (both cores busy) CPU time is "
        "what limits throughput.",
        "",
    )
    keys = sorted({(c.op, c.fmt) for c in cells}, key=lambda k: (k[0] != "resize", k[0], k[1]))
    summary_rows, disagree, table = [], [], {}
    for op, fmt in keys:
        group = [c for c in cells if (c.op, c.fmt) == (op, fmt)]
        wall_ratio = geomean([c.wall["pillow"] / c.wall["vips"] for c in group])
        cpu_ratio = geomean([c.cpu["pillow"] / c.cpu["vips"] for c in group])
        wins = sum(c.wall["vips"] <= c.wall["pillow"] for c in group)
        wall_winner = faster(wall_ratio)
        cpu_winner = faster(cpu_ratio)
        default = DEFAULT_ENGINES.get((op, fmt)) or DEFAULT_ENGINES.get(("resize", fmt), "vips")
        agrees = wall_winner.startswith("tie") or default == wall_winner
        table[f"{op}/{fmt.value}"] = wall_winner
        if not agrees:
            disagree.append(f"({op!r}, Format.{fmt.name}): default {default}, faster {wall_winner}")
        summary_rows.append(
            [
                op,
                fmt.value,
                str(len(group)),
                f"{wall_ratio:.2f}x",
                f"{wins} / {len(group) - wins}",
                wall_winner,
                f"{cpu_ratio:.2f}x",
                cpu_winner,
                default,
                ("yes" if default == wall_winner else "yes (tie)") if agrees else "**no**",
            ]
        )
    report.table(
        [
            "op",
            "format",
            "rows",
            "pillow/vips wall",
            "wins vips / pillow",
            "faster (wall)",
            "pillow/vips CPU",
            "faster (CPU)",
            "DEFAULT_ENGINES",
            "agrees",
        ],
        summary_rows,
        "llrrrlrlll",
    )
    if disagree:
        report.add(
            "**`DEFAULT_ENGINES` disagrees with this run on:** " + "; ".join(disagree) + ".", ""
        )
    else:
        report.add(
            "Nothing in this run contradicts `DEFAULT_ENGINES` (edge/images/model.py); "
            "a tie counts as no contradiction.",
            "",
        )

    # The table is keyed by (operation, format) only; show what else moves the choice.
    report.add(
        "The same ratios by output width and by photo (`resize` rows, every format). The "
        "engine table has neither in its key: this says whether either would change "
        "the choice.",
        "",
    )
    by_rows = []
    resize = [c for c in cells if c.op == "resize"]
    groups = [(f"width {w}", [c for c in resize if c.width == w]) for w in OP_WIDTHS]
    groups += [(p, [c for c in resize if c.photo == p]) for p in OP_PHOTOS]
    for label, group in groups:
        if not group:
            continue
        wall_ratio = geomean([c.wall["pillow"] / c.wall["vips"] for c in group])
        cpu_ratio = geomean([c.cpu["pillow"] / c.cpu["vips"] for c in group])
        wins = sum(c.wall["vips"] <= c.wall["pillow"] for c in group)
        by_rows.append(
            [
                label,
                str(len(group)),
                f"{wall_ratio:.2f}x",
                f"{wins} / {len(group) - wins}",
                f"{cpu_ratio:.2f}x",
                faster(wall_ratio),
            ]
        )
    report.table(
        ["rows of", "rows", "pillow/vips wall", "wins vips / pillow", "pillow/vips CPU", "faster"],
        by_rows,
        "lrrrrl",
    )
    results["ops"] = {
        "cells": [
            {
                "op": c.op,
                "photo": c.photo,
                "format": c.fmt.value,
                "out": c.out,
                "width": c.width,
                "wall_ms": c.wall,
                "cpu_ms": c.cpu,
                "bytes": c.size,
            }
            for c in cells
        ],
        "winners": table,
    }


# ---------------------------------------------------------------------------- 2. edge overhead


def timed_get(conn: http.client.HTTPConnection, target: str) -> tuple[float, int, dict, bytes]:
    """Client-observed ms from sending the request to the last byte of the body."""
    start = time.perf_counter()
    conn.request("GET", target)
    resp = conn.getresponse()
    body = resp.read()
    elapsed = (time.perf_counter() - start) * 1000
    return elapsed, resp.status, {k.lower(): v for k, v in resp.getheaders()}, body


EDGE_MODES = ("first", "warmed")
# Variants of the same photo made before the timed one in a "warmed" node: the same
# decoder and resize, another encoder or width, so other keys.
EDGE_WARMERS = ("?w=736&fm=jpeg", "?w=474&fm=webp")


def edge_round(
    tmp: Path, origin_port: int, mode: str, tag: str, photos: tuple[str, ...], datas: dict
) -> tuple[dict[str, float], list[str]]:
    """Client-observed ms of the first GET ?w=736&fm=webp of each photo on a fresh node."""
    edge, port = start_node(tmp, origin_port, 1, tag)
    got: dict[str, float] = {}
    problems: list[str] = []
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        for photo in photos:
            _, status, _, body = timed_get(conn, f"/img/{photo}")
            if status != 200 or body != datas[photo]:
                raise BenchError(f"edge: GET /img/{photo} -> {status}, {len(body)} bytes")
        timed_get(conn, "/img/horse.png?lqip=1")
        if mode == "warmed":
            for photo in photos:
                for query in EDGE_WARMERS:
                    timed_get(conn, f"/img/{photo}{query}")
        for photo in photos:
            elapsed, status, headers, _ = timed_get(conn, f"/img/{photo}?w=736&fm=webp")
            if (
                status != 200
                or headers.get("content-type") != "image/webp"
                or not transformed(headers)
            ):
                entry = headers.get("cache-status", "").split(",")[-1].strip()
                problems.append(f"{tag} {photo}: {status} {entry!r}")
                continue
            got[photo] = elapsed
        conn.close()
    finally:
        edge.stop()
    return got, problems


def first_transforms(photos: tuple[str, ...], engine: str) -> dict[str, float]:
    """Wall ms of each photo's first 736 px WebP in this process, made as a fresh
    node makes it: on a pool thread, after the same unrelated placeholder."""
    settings = engine_settings(engine)
    variant = Variant(format=Format.WEBP, width=736)
    times: dict[str, float] = {}
    with ThreadPoolExecutor(1) as pool:
        horse = (PHOTOS / "horse.png").read_bytes()
        pool.submit(run_transform, horse, Variant(lqip=True), settings).result()
        for photo in photos:
            data = (PHOTOS / photo).read_bytes()
            start = time.perf_counter()
            pool.submit(run_transform, data, variant, settings).result()
            times[photo] = (time.perf_counter() - start) * 1000
    return times


def first_in_fresh_process(photos: tuple[str, ...], engine: str) -> dict[str, float]:
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(first_transforms, (photos, engine))


def part_edge(report: Report, args: argparse.Namespace, tmp: Path, results: dict) -> None:
    report.add(
        "## 2. Edge overhead: a 736 px WebP from a cached source",
        "",
        f"Rounds: {args.rounds}. Each round starts two fresh `pinedge edge --workers 1` "
        "nodes, one after the other, in front of `pinedge origin`. Each GETs every "
        "original once (the sources are then cached) and makes one unrelated variant "
        "(`horse.png?lqip=1`: transform threads and libvips started). The **warmed** node "
        f"also makes {' and '.join(f'`{q}`' for q in EDGE_WARMERS)} of each photo "
        "(other keys: the same decoder and resize, another encoder or width), as a node "
        "that has been serving does; on the **first** node the timed request is the first "
        "transform of that photo in the process. Then, on one kept-alive connection, "
        "each photo's `GET /img/PHOTO?w=736&fm=webp` is timed at the client: a variant "
        "miss on a source hit (`detail=transformed` in Cache-Status, checked). The "
        "engine's own time, each round: for the first node, in a fresh process per "
        "engine, `transform()` on a pool thread after the same placeholder, each photo "
        "once in the same order (the first transform of the photo in the process, as on "
        "the node); for the warmed node, in this process, "
        f"{args.engine_runs} runs per engine after one unmeasured run, the engines taking "
        "turns. `fastest` is the faster engine's median (both columns are the warmed "
        "reference; the first reference is in the per-round figures). Edge ms is "
        "everything the client waited for: the transform on the edge's pool thread, "
        "storing the variant, HTTP on loopback. Ratios are taken per round, each against "
        "the faster engine of that round; the table gives medians.",
        "",
    )
    origin, origin_port = start_origin(tmp)
    per_engine = {name: engine_settings(name) for name in ENGINE_NAMES}
    datas = {name: (PHOTOS / name).read_bytes() for name in EDGE_PHOTOS}
    variant = Variant(format=Format.WEBP, width=736)
    edge_ms: dict[str, dict[str, list[float]]] = {
        m: {p: [] for p in EDGE_PHOTOS} for m in EDGE_MODES
    }
    ratios: dict[str, dict[str, list[float]]] = {
        m: {p: [] for p in EDGE_PHOTOS} for m in EDGE_MODES
    }
    own: dict[str, dict[str, list[float]]] = {p: {n: [] for n in ENGINE_NAMES} for p in datas}
    own_first: dict[str, dict[str, list[float]]] = {p: {n: [] for n in ENGINE_NAMES} for p in datas}
    problems: list[str] = []
    try:
        for rnd in range(args.rounds):
            note(f"edge: round {rnd + 1}/{args.rounds}")
            shift = rnd % len(EDGE_PHOTOS)
            photos = EDGE_PHOTOS[shift:] + EDGE_PHOTOS[:shift]
            modes = EDGE_MODES if rnd % 2 == 0 else tuple(reversed(EDGE_MODES))
            got = {}
            for mode in modes:
                got[mode], bad = edge_round(
                    tmp, origin_port, mode, f"{mode}-{rnd + 1}", photos, datas
                )
                problems += bad
            fresh = {name: first_in_fresh_process(photos, name) for name in ENGINE_NAMES}
            for photo, data in datas.items():
                wall, _, _ = measure_engines(data, variant, args.engine_runs, per_engine)
                reference = {
                    "first": min(fresh[name][photo] for name in ENGINE_NAMES),
                    "warmed": min(wall.values()),
                }
                for name in ENGINE_NAMES:
                    own[photo][name].append(wall[name])
                    own_first[photo][name].append(fresh[name][photo])
                for mode in EDGE_MODES:
                    if photo in got[mode]:
                        edge_ms[mode][photo].append(got[mode][photo])
                        ratios[mode][photo].append(got[mode][photo] / reference[mode])
    finally:
        origin.stop()
    rows = []
    for photo in EDGE_PHOTOS:
        info = probe(datas[photo], Limits())
        vips_ms, pillow_ms = median(own[photo]["vips"]), median(own[photo]["pillow"])
        first, warmed = median(ratios["first"][photo]), median(ratios["warmed"][photo])
        target = "(info)"
        if photo in EDGE_TARGET_PHOTOS:
            target = (
                f"first {verdict(first <= EDGE_TARGET)}, warmed {verdict(warmed <= EDGE_TARGET)}"
            )
        rows.append(
            [
                f"{photo} ({info.width}x{info.height}, {kb(len(datas[photo]))})",
                ms(median(edge_ms["first"][photo])),
                ms(median(edge_ms["warmed"][photo])),
                ms(median(own_first[photo]["vips"])),
                ms(median(own_first[photo]["pillow"])),
                ms(vips_ms),
                ms(pillow_ms),
                "vips" if vips_ms <= pillow_ms else "pillow",
                f"{first:.2f}x",
                f"{warmed:.2f}x",
                " ".join(f"{r:.2f}" for r in ratios["first"][photo]),
                " ".join(f"{r:.2f}" for r in ratios["warmed"][photo]),
                target,
            ]
        )
    report.table(
        [
            "source",
            "edge ms, first",
            "edge ms, warmed",
            "vips ms, first",
            "pillow ms, first",
            "vips ms, warmed",
            "pillow ms, warmed",
            "fastest (warmed)",
            "edge/fastest, first",
            "edge/fastest, warmed",
            "first, per round",
            "warmed, per round",
            f"target ≤ {EDGE_TARGET}x",
        ],
        rows,
        "lrrrrrrlrrlll",
    )
    for line in problems:
        report.add(f"! not a clean variant miss: {line}")
    if problems:
        report.add("")
    results["edge"] = {
        "edge_ms": edge_ms,
        "ratios": ratios,
        "own_ms": own,
        "own_first_ms": own_first,
    }


# ---------------------------------------------------------------------------- 3. throughput


def thumbor_install(report: Report) -> tuple[Path | None, str]:
    """bench/.thumbor-venv/bin/thumbor, installing it if needed; or None and why not."""
    exe = THUMBOR_VENV / "bin" / "thumbor"
    if exe.exists():
        return exe, ""
    python = shutil.which("python3") or sys.executable
    note(f"installing thumbor into {THUMBOR_VENV} ({python} -m venv; pip install thumbor)")
    steps = [
        [python, "-m", "venv", str(THUMBOR_VENV)],
        [str(THUMBOR_VENV / "bin" / "pip"), "install", "--quiet", "thumbor"],
    ]
    for argv in steps:
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-15:]
            return None, f"`{shlex.join(argv)}` failed ({done.returncode}):\n" + "\n".join(tail)
    return (exe, "") if exe.exists() else (None, "pip install thumbor made no `thumbor` script")


def thumbor_version(exe: Path) -> str:
    done = subprocess.run(
        [
            str(exe.parent / "python"),
            "-c",
            "import thumbor, PIL; print(thumbor.__version__, PIL.__version__)",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    parts = done.stdout.split()
    return (
        f"thumbor {parts[0]} (Pillow {parts[1]})"
        if len(parts) == 2
        else "thumbor (version unknown)"
    )


def thumbor_conf(path: Path, threads: int, photos: Path) -> None:
    """File loader on `photos`; no storage of originals, no result storage, no
    AUTO_WEBP; orientation respected and metadata dropped like pinedge; qualities as
    pinedge's defaults (given again in each URL); baseline JPEG, as pinedge makes."""
    path.write_text(
        textwrap.dedent(
            f"""\
            LOADER = "thumbor.loaders.file_loader"
            FILE_LOADER_ROOT_PATH = {str(photos)!r}
            STORAGE = "thumbor.storages.no_storage"
            RESULT_STORAGE = None
            AUTO_WEBP = False
            ALLOW_UNSAFE_URL = True
            QUALITY = 80
            WEBP_QUALITY = 78
            PROGRESSIVE_JPEG = False
            RESPECT_ORIENTATION = True
            PRESERVE_EXIF_INFO = False
            ENGINE_THREADPOOL_SIZE = {threads}
            MAX_AGE = 0
            """
        )
    )


def thumbor_target(photo: str, width: int, fmt: Format) -> str:
    quality = 78 if fmt is Format.WEBP else 80
    filters = f"filters:format({fmt.value}):quality({quality}):no_upscale()"
    return f"/unsafe/{width}x0/{filters}/{photo}"


def pinedge_target(photo: str, width: int, fmt: Format) -> str:
    return f"/img/{photo}?w={width}&fm={fmt.value}"


@dataclass
class Drive:
    elapsed: float
    statuses: dict[int, int]
    types: dict[str, int]
    untransformed: int
    body_bytes: int
    errors: list[str]
    bytes_by_type: dict[str, int] = field(default_factory=dict)
    others: float = math.nan  # share of the CPUs processes not ours used meanwhile
    attempt: int = 1  # earlier attempts were discarded: others used the CPUs
    cpu_s: float = math.nan  # CPU time the server's processes spent on the run

    @property
    def cpu_ms_each(self) -> float:
        return self.cpu_s * 1000 / self.ok if self.ok else math.nan

    @property
    def ok(self) -> int:
        return self.statuses.get(200, 0)

    @property
    def rate(self) -> float:
        return self.ok / self.elapsed if self.elapsed else 0.0

    @property
    def others_label(self) -> str:
        return f"{self.others:.0%}" + (f" (*{self.attempt})" if self.attempt > 1 else "")


async def drive(port: int, targets: list[str], concurrency: int) -> Drive:
    """GET every target once, `concurrency` at a time on kept-alive connections."""
    statuses: dict[int, int] = {}
    types: dict[str, int] = {}
    sizes: dict[str, int] = {}
    errors: list[str] = []
    untransformed = body_bytes = 0
    queue = list(reversed(targets))
    timeout = aiohttp.ClientTimeout(total=120)
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=True)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def worker() -> None:
            nonlocal untransformed, body_bytes
            while queue:
                target = queue.pop()
                try:
                    async with session.get(f"http://127.0.0.1:{port}{target}") as resp:
                        body = await resp.read()
                        statuses[resp.status] = statuses.get(resp.status, 0) + 1
                        kind = resp.headers.get("Content-Type", "?")
                        types[kind] = types.get(kind, 0) + 1
                        sizes[kind] = sizes.get(kind, 0) + len(body)
                        body_bytes += len(body)
                        if not transformed({k.lower(): v for k, v in resp.headers.items()}):
                            untransformed += 1
                        if resp.status != 200 and len(errors) < 5:
                            errors.append(f"{target}: {resp.status} {body[:120]!r}")
                except (aiohttp.ClientError, TimeoutError) as exc:
                    statuses[0] = statuses.get(0, 0) + 1
                    if len(errors) < 5:
                        errors.append(f"{target}: {type(exc).__name__}: {exc}")

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    return Drive(elapsed, statuses, types, untransformed, body_bytes, errors, sizes)


WARM_PREFIX = "warm-"


def warm_copy(data: bytes, kind: str) -> bytes:
    """The same image with one comment added: as costly to decode, but other bytes, so
    neither server can reuse what it decoded for the warm-up (pinedge keys its
    decoded sources by the bytes' CRC)."""
    text = b"pinedge bench: a warm-up copy"
    if kind == "image/jpeg":  # a COM segment right after SOI
        return data[:2] + b"\xff\xfe" + struct.pack(">H", len(text) + 2) + text + data[2:]
    if kind == "image/png":  # a tEXt chunk right after IHDR (8-byte signature, 25-byte IHDR)
        chunk = b"tEXt" + b"Comment\0" + text
        packed = struct.pack(">I", len(chunk) - 4) + chunk + struct.pack(">I", zlib.crc32(chunk))
        return data[:33] + packed + data[33:]
    raise BenchError(f"no warm-up copy for {kind}")


def photo_dir(tmp: Path, photos: list[str]) -> Path:
    """The bundled photos plus a warm-up copy of each still one (`warm-NAME`), with a
    catalog.json listing both, for `pinedge origin --photos` and thumbor's file loader."""
    root = tmp / "photos"
    root.mkdir()
    catalog = json.loads((PHOTOS / "catalog.json").read_text())
    entries = []
    for entry in catalog["photos"]:
        data = (PHOTOS / entry["file"]).read_bytes()
        (root / entry["file"]).write_bytes(data)
        entries.append(entry)
        if entry["file"] not in photos:
            continue
        copy = warm_copy(data, entry["content_type"])
        digest = hashlib.sha256(copy).hexdigest()
        name = WARM_PREFIX + entry["file"]
        (root / name).write_bytes(copy)
        entries.append(
            {
                **entry,
                "file": name,
                "bytes": len(copy),
                "sha256": digest,
                "etag": f'"{digest[:32]}"',
            }
        )
    (root / "catalog.json").write_text(json.dumps({**catalog, "photos": entries}))
    return root


def part_throughput(report: Report, args: argparse.Namespace, tmp: Path, results: dict) -> None:
    photos = [
        p["file"]
        for p in json.loads((PHOTOS / "catalog.json").read_text())["photos"]
        if p.get("frames", 1) == 1
    ]
    rng = random.Random(4)
    variants = [(p, w, f) for p in photos for w in TP_WIDTHS for f in TP_FORMATS]
    rng.shuffle(variants)
    warmers = [(WARM_PREFIX + p, TP_WIDTHS[0], Format.WEBP) for p in photos]
    report.add(
        "## 3. Transform throughput on misses: pinedge against thumbor",
        "",
        f"{len(variants)} distinct variants: {len(photos)} still photos x widths "
        f"{', '.join(map(str, TP_WIDTHS))} x {' and '.join(f.value for f in TP_FORMATS)} "
        "(the two animated GIFs are left out: pinedge makes an animated WebP of every "
        "frame, thumbor without gifsicle a still image). One aiohttp client, "
        f"concurrency {TP_CONCURRENCY}, a new connection per request (so that the "
        "kernel spreads them over the server's processes), each variant requested once, "
        f"same shuffled order for both; {args.rounds} rounds, the servers alternating "
        "which goes first; the ratio is taken per round.",
        "",
        "**Like for like.** Both servers read the same directory: the bundled photos and a "
        f"warm-up copy of each still photo (`{WARM_PREFIX}NAME`: the same image with a "
        "comment added, so it costs the same to decode but is other bytes). Right before "
        f"every timed run, both make the same {len(warmers)} warm-up variants, one "
        f"{TP_WIDTHS[0]} px WebP of each copy, at the same concurrency: processes and "
        "threads started, codecs loaded, but none of the timed sources decoded. (The "
        "earlier method warmed pinedge alone with `?lqip=1` of every timed photo, which "
        "decoded and kept the very sources the timed variants then reuse; it gave "
        "2.29-2.41x.) Inside the timed run each side keeps what it does by design: pinedge "
        "decodes a source once and reuses it for that photo's other variants; thumbor "
        "decodes per request. JPEG is baseline with optimized Huffman tables on both "
        "(`PROGRESSIVE_JPEG = False` for thumbor). WebP is not the same work: thumbor "
        "has no setting for the WebP method and saves with Pillow's default, method 4; "
        "pinedge saves at effort 2, its default. So the output bytes per format are "
        "printed beside the rates.",
        "",
        "- **pinedge**: a fresh `pinedge edge --workers 2` per round (default settings: "
        "2 transform threads per worker; JPEG q80, WebP q78 effort 2), in front of "
        "`pinedge origin --photos` on that directory; every timed photo's original GET "
        "once first (the source bytes cached, as thumbor's file loader has them on disk), "
        "then the warm-up, so every timed request is a variant miss on a cached source; a "
        "response that is a hit is counted and flagged. `GET /img/PHOTO?w=W&fm=F`.",
        f"- **thumbor**: `thumbor --processes {args.thumbor_processes}` with "
        f"`ENGINE_THREADPOOL_SIZE = {args.thumbor_threads}`, the file loader on "
        "that directory (cheaper than pinedge's cached source: no HTTP), "
        "`STORAGE` no_storage, `RESULT_STORAGE` None, `AUTO_WEBP` False, "
        "`RESPECT_ORIENTATION` True, `PROGRESSIVE_JPEG` False, quality 80 (JPEG) / 78 "
        "(WebP); `GET /unsafe/Wx0/filters:format(F):quality(Q):no_upscale()/PHOTO`. The "
        "two alpha PNGs asked as JPEG are PNG from pinedge (alpha never becomes JPEG) and "
        "JPEG from thumbor. One process with a 2-thread engine pool was thumbor's fastest "
        "and steadiest set-up here; `--processes 2` (no pool) gave 23 to 43 variants/s "
        "from round to round, depending on how the connections fell on the two processes "
        "(`--thumbor-processes`, `--thumbor-threads` to try others).",
        "",
    )
    exe, why = thumbor_install(report)
    version = thumbor_version(exe) if exe else ""
    if exe is None:
        report.add(f"**thumbor could not be installed, so pinedge is measured alone.** {why}", "")
    else:
        report.add(f"thumbor: {version}, in bench/.thumbor-venv.", "")
    report.add(f"The machine before the rounds: {neighbours()}.", "")
    root = photo_dir(tmp, photos)
    origin, origin_port = start_sample_origin(tmp, "--photos", str(root))
    thumbor = None
    thumbor_port = 0
    try:
        if exe is not None:
            conf = tmp / "thumbor.conf"
            thumbor_conf(conf, args.thumbor_threads, root)
            (thumbor_port,) = free_ports(1)
            argv = [
                str(exe),
                "--port",
                str(thumbor_port),
                "--ip",
                "127.0.0.1",
                "--conf",
                str(conf),
                "--processes",
                str(args.thumbor_processes),
                "--log-level",
                "error",
            ]
            env = dict(os.environ, PATH=f"{exe.parent}:{os.environ.get('PATH', '')}")
            thumbor = Server("thumbor", argv, tmp, env).start()
            wait_http(thumbor, thumbor_port, "/healthcheck", timeout=60)
        rounds = []
        for rnd in range(args.rounds):
            order = ["pinedge", "thumbor"] if rnd % 2 == 0 else ["thumbor", "pinedge"]
            if thumbor is None:
                order = ["pinedge"]
            got: dict[str, Drive] = {}
            for name in order:
                for attempt in range(1, args.attempts + 1):
                    note(f"throughput: round {rnd + 1}/{args.rounds}, {name}, attempt {attempt}")
                    if name == "thumbor":
                        assert thumbor is not None  # only in the order when it started
                        warm = [thumbor_target(*v) for v in warmers]
                        asyncio.run(drive(thumbor_port, warm, TP_CONCURRENCY))
                        targets = [thumbor_target(*v) for v in variants]
                        got[name] = timed_drive(thumbor, thumbor_port, targets, args.quiet_wait)
                    else:
                        edge, port = start_node(tmp, origin_port, 2, f"throughput-{rnd}-{attempt}")
                        try:
                            for photo in photos:
                                http_get(port, f"/img/{photo}")
                            warm = [pinedge_target(*v) for v in warmers]
                            asyncio.run(drive(port, warm, TP_CONCURRENCY))
                            targets = [pinedge_target(*v) for v in variants]
                            got[name] = timed_drive(edge, port, targets, args.quiet_wait)
                        finally:
                            edge.stop()
                    got[name].attempt = attempt
                    if got[name].others < QUIET_SHARE:
                        break
                    note(f"others used {got[name].others:.0%} of the CPUs meanwhile")
            rounds.append(got)
    finally:
        if thumbor is not None:
            thumbor.stop()
        origin.stop()

    rows, ratios, cpu_ratios = [], [], []
    for i, got in enumerate(rounds):
        p = got["pinedge"]
        t = got.get("thumbor")
        ratio = p.rate / t.rate if t and t.rate else math.nan
        cpu_ratio = t.cpu_ms_each / p.cpu_ms_each if t else math.nan
        if t:
            ratios.append(ratio)
            cpu_ratios.append(cpu_ratio)
        rows.append(
            [
                str(i + 1),
                "pinedge" if i % 2 == 0 or not t else "thumbor",
                f"{p.rate:.1f}",
                f"{t.rate:.1f}" if t else "-",
                f"{ratio:.2f}x" if t else "-",
                f"{p.elapsed:.2f} / {t.elapsed:.2f}" if t else f"{p.elapsed:.2f}",
                str(p.untransformed),
                " / ".join(d.others_label for d in (p, t) if d),
                " / ".join(ms(d.cpu_ms_each) for d in (p, t) if d),
                f"{cpu_ratio:.2f}x" if t else "-",
            ]
        )
    p_rates = [g["pinedge"].rate for g in rounds]
    t_rates = [g["thumbor"].rate for g in rounds if "thumbor" in g]
    rows.append(
        [
            "median",
            "",
            f"{median(p_rates):.1f}",
            f"{median(t_rates):.1f}" if t_rates else "-",
            f"**{median(ratios):.2f}x**" if ratios else "-",
            "",
            "",
            "",
            "",
            f"**{median(cpu_ratios):.2f}x**" if cpu_ratios else "-",
        ]
    )
    report.table(
        [
            "round",
            "first",
            "pinedge variants/s",
            "thumbor variants/s",
            "pinedge/thumbor",
            "seconds (p / t)",
            "pinedge not made (hits)",
            "other CPU (p / t)",
            "server CPU ms per variant (p / t)",
            "thumbor/pinedge CPU",
        ],
        rows,
        "llrrrrrrrr",
    )
    report.add(
        "`other CPU`: the share of the machine's two CPUs that processes this script did "
        "not start (other tenants) used during that timed run. Each timed run waits first, "
        f"up to {args.quiet_wait:g} s, for a second in which they use under "
        f"{QUIET_SHARE:.0%}; a run during which they used more is done again (pinedge on "
        f"a fresh node), up to {args.attempts} attempts in all (`*n`: the figure is from "
        "attempt n). The rounds last seconds, so a pair with a high share on one side "
        "only is not a fair pair. `server CPU ms per variant`: the CPU time (user and "
        "system, /proc) of all the server's processes over the timed run, per variant "
        "made; CPU time moves far less than wall time when other tenants take the CPUs, "
        "so `thumbor/pinedge CPU` (above 1: pinedge spends less per variant) is the "
        "steadier figure of the two when the machine is shared.",
        "",
    )
    last = rounds[-1]
    for name, d in last.items():
        types = ", ".join(f"{k} {v}" for k, v in sorted(d.types.items()))
        report.add(
            f"- {name}, last round: {d.ok}/{len(variants)} answered 200, "
            f"{kb(d.body_bytes / max(1, d.ok))} per variant on average; {types}."
        )
        for err in d.errors:
            report.add(f"  - ! {err}")
    report.add("")
    output_bytes(report, last)
    if ratios:
        ratio = median(ratios)
        report.add(
            f"Target: throughput ≥ {TP_TARGET}x thumbor's: {ratio:.2f}x, "
            f"{verdict(ratio >= TP_TARGET)} (same warm-up, same JPEG settings; WebP at "
            "pinedge's effort 2 against thumbor's method 4, bytes above). CPU time per "
            f"variant, thumbor/pinedge: {median(cpu_ratios):.2f}x.",
            "",
        )
    report.add(f"The machine after the rounds: {neighbours()}.", "")
    ceiling = transform_ceiling(report, args, variants, photos)
    results["throughput"] = {
        "ceiling": ceiling,
        "variants": len(variants),
        "thumbor": version,
        "thumbor_missing": why,
        "rounds": [
            {
                n: {
                    "rate": d.rate,
                    "elapsed": d.elapsed,
                    "untransformed": d.untransformed,
                    "statuses": d.statuses,
                    "bytes_by_type": d.bytes_by_type,
                    "types": d.types,
                    "others": d.others,
                    "attempt": d.attempt,
                    "cpu_s": d.cpu_s,
                }
                for n, d in g.items()
            }
            for g in rounds
        ],
    }


def timed_drive(server: Server, port: int, targets: list[str], quiet_wait: float) -> Drive:
    """drive() once the machine is quiet (or `quiet_wait` s have passed), with the share
    of the CPUs that other tenants used meanwhile and the CPU time the server (all its
    processes) spent."""
    wait_for_quiet(quiet_wait)
    start, ticks = CpuSample.now(), tree_ticks(server.pid)
    done = asyncio.run(drive(port, targets, TP_CONCURRENCY))
    done.cpu_s = (tree_ticks(server.pid) - ticks) / TICK
    done.others = others_share(start, CpuSample.now())
    return done


def tree_ticks(pid: int) -> int:
    return proc_ticks(pid) + sum(proc_ticks(p) for p in descendants(pid))


def output_bytes(report: Report, got: dict[str, Drive]) -> None:
    """What each server sent per content type: the other half of a time (a faster
    encoder setting makes bigger files)."""
    kinds = sorted({k for d in got.values() for k in d.types})
    rows = []
    for kind in kinds:
        row = [kind]
        means = {}
        for name in ("pinedge", "thumbor"):
            d = got.get(name)
            count = d.types.get(kind, 0) if d else 0
            if d is None or not count:
                row.append("-")
                continue
            means[name] = d.bytes_by_type[kind] / count
            row.append(f"{count} x {kb(means[name])}")
        both = len(means) == 2
        row.append(f"{means['pinedge'] / means['thumbor']:.2f}x" if both else "-")
        rows.append(row)
    report.add(
        "Output bytes, last round, by the type served: variants x mean size; a WebP "
        "pinedge makes at effort 2 is a little larger than at method 4.",
        "",
    )
    report.table(["served as", "pinedge", "thumbor", "pinedge/thumbor bytes"], rows, "lrrr")


def transform_ceiling(
    report: Report,
    args: argparse.Namespace,
    variants: list[tuple[str, int, Format]],
    photos: list[str],
) -> dict:
    """CPU seconds of transform() for the whole list, per engine, run here one at a time:
    what two cores doing nothing else would make per second."""
    passes = 1 if args.quick else 3
    datas = {p: (PHOTOS / p).read_bytes() for p in photos}
    totals: dict[str, list[float]] = {name: [] for name in ENGINE_NAMES}
    per_photo: dict[str, dict[str, float]] = {name: {} for name in ENGINE_NAMES}
    for _ in range(passes):
        for name in ENGINE_NAMES:
            settings = engine_settings(name)
            total = 0.0
            spent: dict[str, float] = {}
            PREPARED.clear()  # each pass starts as a node does: nothing decoded yet
            for photo, width, fmt in variants:
                _, cpu, _ = timed_transform(
                    datas[photo], Variant(format=fmt, width=width), settings, cold=False
                )
                total += cpu
                spent[photo] = spent.get(photo, 0.0) + cpu
            totals[name].append(total)
            for photo, cpu in spent.items():
                best = per_photo[name].get(photo, math.inf)
                per_photo[name][photo] = min(best, cpu)
    cores = os.cpu_count() or 2
    report.add(
        "The ceiling: process CPU time of `transform()` for the same "
        f"{len(variants)} variants in the same order, one at a time in this process "
        f"({passes} pass(es), median, each starting with no decoded source kept), per "
        f"engine forced; `{cores} x variants / CPU s` is what {cores} cores "
        "doing nothing but transforms would make per second. Per photo: CPU ms for its "
        f"{len(TP_WIDTHS) * len(TP_FORMATS)} variants (best pass).",
        "",
    )
    rows = []
    for photo in photos:
        vips_ms, pillow_ms = per_photo["vips"][photo], per_photo["pillow"][photo]
        rows.append([photo, ms(vips_ms), ms(pillow_ms), f"{pillow_ms / vips_ms:.2f}x"])
    ceilings = {}
    total_row = ["**all, CPU s (median)**"]
    for name in ENGINE_NAMES:
        total = median(totals[name]) / 1000
        ceilings[name] = cores * len(variants) / total
        total_row.append(f"**{total:.2f} s**")
    total_row.append(f"{median(totals['pillow']) / median(totals['vips']):.2f}x")
    rows.append(total_row)
    rows.append(["**ceiling, variants/s**", *(f"**{ceilings[n]:.1f}**" for n in ENGINE_NAMES), ""])
    report.table(["photo", "vips CPU ms", "pillow CPU ms", "pillow/vips"], rows, "lrrr")
    return {"cpu_ms": totals, "per_photo_ms": per_photo, "ceiling_per_s": ceilings}


# ---------------------------------------------------------------------------- 4. bytes


def part_bytes(report: Report, args: argparse.Namespace, results: dict) -> None:
    report.add(
        "## 4. Bytes saved",
        "",
        "Each photo at each breakpoint width in each format, made by `transform()` with "
        "the edge's default `Settings()` (so the same choices as served: alpha never "
        "JPEG, animations WebP, AVIF only up to 1200 px, the source itself when a "
        "variant in its own format would be larger, never upscaled). `%` is of the "
        "original's bytes. A format in brackets is what was made instead of the one "
        "asked; `src` means the original is served.",
        "",
    )
    photos = json.loads((PHOTOS / "catalog.json").read_text())["photos"]
    rows = []
    totals = {fmt: 0 for fmt in BYTES_FORMATS}
    total_original = 0
    cells = []
    for entry in photos:
        name = entry["file"]
        data = (PHOTOS / name).read_bytes()
        info = probe(data, Limits())
        note(f"bytes: {name}")
        for width in BYTES_WIDTHS:
            label = str(width) if width < info.width else f"{width} (at {info.width})"
            row = [f"{name}", label, kb(len(data))]
            total_original += len(data)
            for fmt in BYTES_FORMATS:
                result = run_transform(data, Variant(format=fmt, width=width), Settings())
                totals[fmt] += len(result.body)
                mark = ""
                if result.served_source:
                    mark = " (src)"
                elif result.format is not fmt:
                    mark = f" ({result.format.value})"
                row.append(f"{kb(len(result.body))}{mark}")
                row.append(pct(len(result.body), len(data)))
                cells.append(
                    {
                        "photo": name,
                        "width": width,
                        "format": fmt.value,
                        "made": result.format.value,
                        "bytes": len(result.body),
                        "original": len(data),
                        "source": result.served_source,
                    }
                )
            rows.append(row)
    rows.append(
        ["**total**", "", kb(total_original)]
        + [
            x
            for fmt in BYTES_FORMATS
            for x in (f"**{kb(totals[fmt])}**", f"**{pct(totals[fmt], total_original)}**")
        ]
    )
    report.table(
        ["photo", "width", "original"] + [x for f in BYTES_FORMATS for x in (f.value, "%")],
        rows,
        "llr" + "rr" * len(BYTES_FORMATS),
    )
    results["bytes"] = {
        "cells": cells,
        "original": total_original,
        "totals": {f.value: v for f, v in totals.items()},
    }


class ImgParser(html.parser.HTMLParser):
    """Every <img>'s attributes in a dumped DOM."""

    def __init__(self) -> None:
        super().__init__()
        self.images: list[dict[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "img":
            self.images.append({k: v or "" for k, v in attrs})


_MEDIA = re.compile(r"^\(\s*(min|max)-width\s*:\s*(\d+(?:\.\d+)?)px\s*\)\s*(.+)$")


def slot_width(sizes: str, viewport: int) -> float:
    """The CSS px width `sizes` gives at `viewport` (the subset the demo uses: optional
    (min|max)-width conditions, lengths in px or vw); 100vw when there is none."""
    for part in (p.strip() for p in sizes.split(",")):
        length = part
        match = _MEDIA.match(part)
        if match:
            kind, limit, length = match.group(1), float(match.group(2)), match.group(3)
            if (kind == "max" and viewport > limit) or (kind == "min" and viewport < limit):
                continue
        length = length.strip()
        if length.endswith("vw"):
            return viewport * float(length[:-2]) / 100
        if length.endswith("px"):
            return float(length[:-2])
    return float(viewport)


def pick_from_srcset(srcset: str, slot: float, dpr: float = 1.0) -> str:
    """The candidate a browser takes: the narrowest whose density covers the DPR."""
    candidates = []
    for item in srcset.split(","):
        parts = item.split()
        if len(parts) == 2 and parts[1].endswith("w"):
            candidates.append((int(parts[1][:-1]), parts[0]))
    candidates.sort()
    for width, url in candidates:
        if width / slot >= dpr:
            return url
    return candidates[-1][1]


_BG_URL = re.compile(r"background-image:\s*url\(['\"]?([^'\")]+)['\"]?\)")


def part_demo(report: Report, args: argparse.Namespace, tmp: Path, results: dict) -> None:
    report.add(
        "### The demo page in headless Chromium",
        "",
        "How it was measured: `pinedge demo` started; its home page loaded by "
        f"`{CHROMIUM} --headless ... --window-size={VIEWPORT[0]},{VIEWPORT[1]} "
        "--virtual-time-budget=8000 --dump-dom URL`. For each `<img>` in the dumped DOM, "
        "the URL Chromium takes from `srcset` (the slot width from `sizes` at a "
        f"{VIEWPORT[0]} px viewport, DPR 1: the narrowest candidate at least that wide), "
        "plus each placeholder URL the page's script set as a `background-image`, each "
        "URL once; then those exact URLs GET from the edge with Chromium's image "
        f"`Accept: {CHROMIUM_ACCEPT}` and their bodies summed, against the originals' "
        "bytes (from the demo's origin, once per photo on the page). As a cross-check, "
        "the edge's `pinedge_response_body_bytes_total` before and after Chromium's load: "
        "everything the edge sent for the page (HTML, CSS, JS and icon included).",
        "",
    )
    if not Path(CHROMIUM).exists():
        report.add(f"**{CHROMIUM} is missing: the demo page was not measured.**", "")
        return
    (port,) = free_ports(1)
    demo = Server("demo", [*pinedge_argv(), "demo", "--port", str(port)], tmp, pinedge_env())
    demo.start()
    try:
        urls = wait_demo_urls(demo)
        page = urls[0]
        metrics = next(u for u in urls if u.endswith("/metrics"))
        origin = next(u for u in urls[1:] if not u.endswith("/metrics") and "/_origin" not in u)
        page_port = urlsplit(page).port or 80
        wait_http(demo, page_port, "/", timeout=30)
        before = body_bytes_total(metrics)
        profile = tmp / "chromium-profile"
        argv = [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            f"--window-size={VIEWPORT[0]},{VIEWPORT[1]}",
            "--virtual-time-budget=8000",
            "--dump-dom",
            page,
        ]
        note("demo: loading the page in headless Chromium")
        dom = run_chromium(argv, tmp)
        time.sleep(0.5)
        after = body_bytes_total(metrics)
        parser = ImgParser()
        parser.feed(dom)
        chosen: dict[str, str] = {}  # url -> photo path
        placeholders: dict[str, str] = {}
        for img in parser.images:
            src = img.get("src", "")
            if not src.startswith("/img/"):
                continue
            url = src
            if img.get("srcset"):
                slot = slot_width(img.get("sizes", "100vw"), VIEWPORT[0])
                url = pick_from_srcset(img["srcset"], slot)
            chosen[url] = url.split("?", 1)[0]
            match = _BG_URL.search(img.get("style", ""))
            if match:
                placeholders[match.group(1)] = match.group(1).split("?", 1)[0]
        if not chosen:
            raise BenchError("the dumped DOM has no <img> under /img/:\n" + dom[:2000])
        originals = {}
        for path in set(chosen.values()):
            status, _, body = http_get(urlsplit(origin).port or 80, path)
            if status != 200:
                raise BenchError(f"origin: GET {path} -> {status}")
            originals[path] = len(body)
        kinds: dict[str, int] = {}
        rows, served = [], 0
        for url in sorted(chosen):
            status, headers, body = http_get(page_port, url, {"Accept": CHROMIUM_ACCEPT})
            kind = headers.get("content-type", "?")
            kinds[kind] = kinds.get(kind, 0) + 1
            served += len(body)
            rows.append(
                [
                    f"`{url}`",
                    str(status),
                    kind,
                    kb(len(body)),
                    kb(originals[chosen[url]]),
                    pct(len(body), originals[chosen[url]]),
                ]
            )
        lqip = 0
        for url in placeholders:
            _, _, body = http_get(page_port, url, {"Accept": CHROMIUM_ACCEPT})
            lqip += len(body)
        original = sum(originals[p] for p in set(chosen.values()))
        report.table(
            ["URL taken from srcset", "status", "type", "served", "original", "%"], rows, "llllrr"
        )
        both = served + lqip
        report.table(
            ["", "bytes", "% of originals"],
            [
                [f"originals ({len(originals)} photos)", kb(original), "100%"],
                [f"variants from srcset ({len(chosen)} URLs)", kb(served), pct(served, original)],
                [
                    f"placeholders `?lqip=1` ({len(placeholders)} URLs)",
                    kb(lqip),
                    pct(lqip, original),
                ],
                ["**images Chromium fetched**", f"**{kb(both)}**", f"**{pct(both, original)}**"],
                [
                    "cross-check: all the edge sent for the page load (metrics delta)",
                    kb(after - before),
                    pct(after - before, original),
                ],
            ],
            "lrr",
        )
        ratio = both / original
        report.add(
            f"Target: the demo page's images ≤ {DEMO_TARGET:.0%} of the originals: "
            f"{ratio:.1%}, {verdict(ratio <= DEMO_TARGET)}. Formats served: "
            + ", ".join(f"{k} x{v}" for k, v in sorted(kinds.items()))
            + ".",
            "",
        )
        results["demo"] = {
            "originals": original,
            "variants": served,
            "placeholders": lqip,
            "metrics_delta": after - before,
            "urls": sorted(chosen),
        }
    finally:
        demo.stop()


def wait_demo_urls(demo: Server, timeout: float = 60.0) -> list[str]:
    """The URLs `pinedge demo` prints, in order (the page first), once it has printed them."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = demo.output(20000)
        if "Ctrl-C" in text:
            return re.findall(r"http://[^\s)]+", text.split("Open", 1)[-1])
        if demo.exited() is not None:
            break
        time.sleep(0.2)
    raise BenchError(
        "pinedge demo did not print its URLs:\n" + textwrap.indent(demo.output(), "    ")
    )


def body_bytes_total(metrics_url: str) -> int:
    parts = urlsplit(metrics_url)
    _, _, body = http_get(parts.port or 80, parts.path)
    total = 0
    for line in body.decode().splitlines():
        if line.startswith("pinedge_response_body_bytes_total"):
            total += int(float(line.rsplit(" ", 1)[1]))
    return total


def run_chromium(argv: list[str], tmp: Path, timeout: float = 120.0) -> str:
    """The DOM Chromium dumps; its whole process group is killed if it overruns."""
    err = (tmp / "chromium.stderr").open("wb")
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        raise BenchError(f"Chromium did not finish within {timeout:.0f}s") from None
    finally:
        err.close()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    if proc.returncode != 0:
        raise BenchError(
            f"Chromium exited with {proc.returncode}: "
            + (tmp / "chromium.stderr").read_text(errors="replace")[-2000:]
        )
    return out.decode(errors="replace")


# ---------------------------------------------------------------------------- main


PARTS = ("ops", "edge", "throughput", "bytes", "demo")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs and rounds: a smoke test")
    parser.add_argument("--runs", type=int, help="transform() runs per engine per cell (7)")
    parser.add_argument("--engine-runs", type=int, help="transform() runs per engine in part 2 (5)")
    parser.add_argument("--rounds", type=int, help="rounds of parts 2 and 3 (5 each)")
    parser.add_argument(
        "--only", default=",".join(PARTS), help=f"parts to run, of {','.join(PARTS)}"
    )
    parser.add_argument("--thumbor-processes", type=int, default=1, help="thumbor --processes (1)")
    parser.add_argument("--thumbor-threads", type=int, default=2, help="ENGINE_THREADPOOL_SIZE (2)")
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=60.0,
        help="part 3: before each timed run, wait up to S s for other processes to leave "
        "the CPUs (under 10%% for 1 s); 0: don't (60)",
    )
    parser.add_argument(
        "--attempts",
        type=int,
        default=3,
        help="part 3: runs during which other processes used over 10%% of the CPUs are done "
        "again, up to this many times in all (3)",
    )
    parser.add_argument("--md", help="also write the report to this file (e.g. bench/IMAGES.md)")
    parser.add_argument("--json", help="every number as JSON to this file")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (server logs)")
    args = parser.parse_args(argv)
    args.parts = [p.strip() for p in args.only.split(",") if p.strip()]
    unknown = set(args.parts) - set(PARTS)
    if unknown:
        parser.error(
            f"unknown part(s) {', '.join(sorted(unknown))}; choose from {', '.join(PARTS)}"
        )
    args.runs = args.runs or (2 if args.quick else 7)
    args.engine_runs = args.engine_runs or (2 if args.quick else 5)
    args.rounds_given = args.rounds
    args.rounds = args.rounds or (1 if args.quick else 0)
    return args


STOPPING = False


def interrupt(signum: int, frame: object) -> None:
    # The exception may land inside a libvips callback, where cffi swallows it: the flag
    # makes the next timed transform raise it again (see timed_transform).
    global STOPPING
    STOPPING = True
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    report = Report()
    results: dict = {}
    report.add(
        "# Image variants: benchmark results",
        "",
        f"{run_line('images.py')}: one run on a 2-core shared "
        f"machine ({os.cpu_count()} CPUs seen), Python {platform.python_version()}, "
        f"libvips {pyvips.version(0)}.{pyvips.version(1)}.{pyvips.version(2)} "
        f"(pyvips {pyvips.__version__}), Pillow {PIL.__version__}."
        + (" **`--quick`: a smoke run, its numbers are not a result.**" if args.quick else ""),
        "",
    )

    def body(tmp: Path) -> None:
        parts: dict[str, Callable[[], None]] = {
            "ops": lambda: part_ops(report, args, results),
            "edge": lambda: part_edge(report, with_rounds(args, 5), tmp, results),
            "throughput": lambda: part_throughput(report, with_rounds(args, 5), tmp, results),
            "bytes": lambda: part_bytes(report, args, results),
            "demo": lambda: part_demo(report, args, tmp, results),
        }
        for name in PARTS:
            if name in args.parts:
                parts[name]()

    return session.run(
        body,
        prefix="pinedge-images-",
        keep=args.keep,
        report=report,
        md=args.md,
        json_path=args.json,
        results=lambda: results,
        signals=(signal.SIGTERM, signal.SIGINT),
        handler=interrupt,
    )


def with_rounds(args: argparse.Namespace, default: int) -> argparse.Namespace:
    copy = argparse.Namespace(**vars(args))
    copy.rounds = args.rounds or default
    return copy


if __name__ == "__main__":
    sys.exit(main())
