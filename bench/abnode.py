"""pinedge against itself: the same misspath.py scenario on the node's code at two
or more git revisions, alternating run by run, so that a change is measured
within the same minutes of a shared, noisy machine.

    .venv/bin/python bench/abnode.py REV,REV[,...] [--scenario miss|mix|zipf] [--rounds 3]
        [--miss-share 0.05]

Before each run the node's code (`edge/`) is checked out at that run's revision;
the checkout is put back at HEAD when the script ends, however it ends. It
refuses to start while `edge/` has uncommitted changes (they would be lost).
Each run: `edge --workers 1 --cache-mem 2GiB` on CPU 0, fresh, against the
nginx origin of misspath.py; wrk and the origin on CPU 1. `mix` warms the
1,000 URLs first, as misspath.py does; `zipf` starts cold, as there. Printed
per run and as medians: req/s, and the worker's and the supervisor's user and
system CPU µs per request (from /proc). Nothing is asserted.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import misspath
from harness import session
from harness.errors import BenchError
from harness.machine import TICK, code_state, neighbours, user_system_ticks
from harness.report import Report, run_line
from harness.stats import median

REPO = Path(__file__).resolve().parent.parent


@dataclass
class Run:
    revision: str
    rps: float
    cpu_us: dict[str, tuple[float, float]]  # role -> (user, system) µs per request


def git(*argv: str) -> str:
    return subprocess.run(
        ["git", "-C", str(REPO), *argv], check=True, capture_output=True, text=True
    ).stdout


def checkout(revision: str) -> None:
    """edge/ as it is at `revision`: files it does not have are removed too (git
    checkout would leave a newer revision's new modules behind, staged)."""
    git("restore", f"--source={revision}", "--staged", "--worktree", "--", "edge")


def one_run(
    lab: misspath.Lab, tmp: Path, scenario: str, revision: str, index: int, share: float
) -> Run:
    checkout(revision)
    proxy = lab.start("pinedge")
    try:
        if scenario == "mix":
            misspath.warm(proxy, misspath.WARM_URLS)
            script = misspath.lua(
                tmp,
                "mix",
                misspath.MIX_LUA,
                seed=1000 + index,
                warm=misspath.WARM_URLS,
                share=share,
            )
        elif scenario == "zipf":
            args = lab.args
            script = misspath.lua(
                tmp,
                "zipf",
                misspath.ZIPF_LUA,
                seed=1000 + index,
                urls=args.zipf_urls,
                s=args.zipf_s,
            )
        else:
            script = misspath.lua(tmp, "miss", misspath.MISS_LUA)
        roles = proxy.processes()
        before = {role: user_system_ticks(pid) for role, pid in roles.items()}
        result = misspath.measure(lab, proxy, script, lab.args.duration)
        after = {role: user_system_ticks(pid) for role, pid in roles.items()}
    finally:
        proxy.stop()
    per = 1e6 / TICK / max(result.requests, 1)
    cpu = {
        role: ((after[role][0] - before[role][0]) * per, (after[role][1] - before[role][1]) * per)
        for role in roles
    }
    return Run(revision, result.rps, cpu)


def report_runs(report: Report, runs: list[Run], revisions: list[str]) -> None:
    def cell(mine: list[Run], role: str, which: int) -> str:
        return f"{median(r.cpu_us.get(role, (0.0, 0.0))[which] for r in mine):,.1f}"

    rows = []
    for revision in revisions:
        mine = [r for r in runs if r.revision == revision]
        rows.append(
            [
                revision,
                f"{median(r.rps for r in mine):,.0f}",
                ", ".join(f"{r.rps:,.0f}" for r in mine),
                cell(mine, "worker", 0),
                cell(mine, "worker", 1),
                cell(mine, "supervisor", 0),
                cell(mine, "supervisor", 1),
            ]
        )
    report.table(
        "revision | req/s (median) | each run | worker user µs/req | worker system µs/req "
        "| supervisor user µs/req | supervisor system µs/req",
        rows,
        "lrlrrrr",
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("revisions", help="git revisions, comma-separated")
    parser.add_argument("--scenario", choices=("miss", "mix", "zipf"), default="miss")
    parser.add_argument(
        "--miss-share", type=float, default=0.05, help="mix: the share of new URLs (0.05)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="runs per revision (3)")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per wrk run (8)")
    parser.add_argument(
        "--browser", action="store_true", help="requests carry a browser's fields (misspath.py)"
    )
    parser.add_argument("--md", metavar="FILE", help="also write the report to FILE")
    args = parser.parse_args(argv)
    revisions = args.revisions.split(",")
    if git("status", "--porcelain", "--", "edge").strip():
        print("abnode.py: edge/ has uncommitted changes; commit or stash them", file=sys.stderr)
        return 2
    for revision in revisions:
        git("rev-parse", "--verify", f"{revision}^{{commit}}")
    report = Report()
    runs: list[Run] = []
    lab_args = misspath.parse_args(
        ["--quick", "--duration", str(args.duration)] + (["--browser"] if args.browser else [])
    )

    def body(tmp: Path) -> None:
        lab = misspath.Lab(lab_args, tmp, tmp)  # the second: nginx's cache, unused here
        report.add(
            run_line("abnode.py", argv)
            + f": {args.scenario}"
            + (f" ({args.miss_share:.0%} new URLs)" if args.scenario == "mix" else "")
            + f", {args.rounds} run(s) per revision of {args.duration:g} s, "
            f"alternating; main at {code_state()}. {neighbours()}",
            "",
        )
        lab.start_origin()
        try:
            for index in range(args.rounds):
                order = revisions if index % 2 == 0 else revisions[::-1]
                for revision in order:
                    run = one_run(lab, tmp, args.scenario, revision, index, args.miss_share)
                    runs.append(run)
                    worker = run.cpu_us.get("worker", (0.0, 0.0))
                    print(
                        f"run {index + 1} {revision}: {run.rps:,.0f} req/s, worker "
                        f"{worker[0]:.1f} + {worker[1]:.1f} µs per request",
                        file=sys.stderr,
                        flush=True,
                    )
        except subprocess.CalledProcessError as exc:
            raise BenchError(f"git: {exc.stderr}") from exc
        finally:
            checkout("HEAD")
        report_runs(report, runs, revisions)

    return session.run(body, prefix="abnode-", report=report, md=args.md)


if __name__ == "__main__":
    sys.exit(main())
