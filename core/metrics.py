"""A small Prometheus registry: counters, gauges and histograms with labels.

Updating a metric is a dict lookup and an add; nothing is formatted until
`/metrics` is scraped. The text follows the Prometheus exposition format.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

LabelValues = tuple[str, ...]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(names: tuple[str, ...], values: LabelValues, extra: str = "") -> str:
    pairs = [f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True)]
    if extra:
        pairs.append(extra)
    return "{" + ",".join(pairs) + "}" if pairs else ""


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(int(value)) if float(value).is_integer() else repr(value)


class Metric:
    kind = "untyped"

    def __init__(self, name: str, help_text: str, labels: Iterable[str] = ()) -> None:
        self.name = name
        self.help = help_text
        self.label_names = tuple(labels)

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]

    def lines(self) -> list[str]:
        raise NotImplementedError


class Counter(Metric):
    kind = "counter"

    def __init__(self, name: str, help_text: str, labels: Iterable[str] = ()) -> None:
        super().__init__(name, help_text, labels)
        self.values: dict[LabelValues, float] = {}

    def inc(self, *labels: str, amount: float = 1.0) -> None:
        self.values[labels] = self.values.get(labels, 0.0) + amount

    def get(self, *labels: str) -> float:
        return self.values.get(labels, 0.0)

    def lines(self) -> list[str]:
        return [
            f"{self.name}{_labels(self.label_names, k)} {_number(v)}"
            for k, v in sorted(self.values.items())
        ]


class Gauge(Metric):
    """A value read when scraped, from a function or set directly.

    With kind="counter" it exposes a monotonic count kept elsewhere.
    """

    kind = "gauge"

    def __init__(
        self,
        name: str,
        help_text: str,
        read: Callable[[], float] | None = None,
        labels: Iterable[str] = (),
        kind: str = "gauge",
    ) -> None:
        super().__init__(name, help_text, labels)
        self.kind = kind
        self.read = read
        self.values: dict[LabelValues, float] = {}

    def set(self, value: float, *labels: str) -> None:
        self.values[labels] = value

    def lines(self) -> list[str]:
        if self.read is not None:
            return [f"{self.name} {_number(self.read())}"]
        return [
            f"{self.name}{_labels(self.label_names, k)} {_number(v)}"
            for k, v in sorted(self.values.items())
        ]


class Histogram(Metric):
    kind = "histogram"

    def __init__(
        self, name: str, help_text: str, buckets: Iterable[float], labels: Iterable[str] = ()
    ) -> None:
        super().__init__(name, help_text, labels)
        self.bounds = sorted(buckets)
        self.series: dict[LabelValues, list[float]] = {}

    def observe(self, value: float, *labels: str) -> None:
        series = self.series.get(labels)
        if series is None:
            series = self.series[labels] = [0.0] * (len(self.bounds) + 3)
        series[bisect_left(self.bounds, value)] += 1
        series[-2] += value
        series[-1] += 1

    def lines(self) -> list[str]:
        out = []
        for key, series in sorted(self.series.items()):
            running = 0.0
            for bound, count in zip([*self.bounds, math.inf], series, strict=False):
                running += count
                le = f'le="{_number(bound)}"'
                out.append(
                    f"{self.name}_bucket{_labels(self.label_names, key, le)} {_number(running)}"
                )
            out.append(f"{self.name}_sum{_labels(self.label_names, key)} {_number(series[-2])}")
            out.append(f"{self.name}_count{_labels(self.label_names, key)} {_number(series[-1])}")
        return out


M = TypeVar("M", bound=Metric)


class Registry:
    def __init__(self) -> None:
        self.metrics: list[Metric] = []
        # Called before the values are read: code that counts in plain variables on a
        # hot path folds them into its metrics here.
        self.collectors: list[Callable[[], None]] = []

    def collect(self) -> None:
        for collector in self.collectors:
            collector()

    def add(self, metric: M) -> M:
        self.metrics.append(metric)
        return metric

    def render(self) -> str:
        self.collect()
        out: list[str] = []
        for metric in self.metrics:
            out.extend(metric.header())
            out.extend(metric.lines())
        return "\n".join(out) + "\n"


def snapshot(registry: Registry) -> list[dict[str, object]]:
    """The registry's current values as plain data (for another process to add up)."""
    registry.collect()
    out: list[dict[str, object]] = []
    for metric in registry.metrics:
        entry: dict[str, object] = {
            "name": metric.name,
            "help": metric.help,
            "kind": metric.kind,
            "labels": list(metric.label_names),
        }
        if isinstance(metric, Histogram):
            entry["bounds"] = metric.bounds
            entry["values"] = [[list(k), v] for k, v in metric.series.items()]
        elif isinstance(metric, Gauge) and metric.read is not None:
            entry["values"] = [[[], metric.read()]]
        elif isinstance(metric, Counter | Gauge):
            entry["values"] = [[list(k), v] for k, v in metric.values.items()]
        out.append(entry)
    return out


def merge(snapshots: Iterable[list[dict[str, object]]]) -> Registry:
    """One registry whose values are the sums of the snapshots' (per metric and labels)."""
    registry = Registry()
    by_name: dict[str, Metric] = {}
    for shot in snapshots:
        for entry in shot:
            name = str(entry["name"])
            labels: tuple[str, ...] = tuple(entry["labels"])  # type: ignore[arg-type]  # a list of str
            metric = by_name.get(name)
            if metric is None:
                if "bounds" in entry:
                    bounds: Any = entry["bounds"]  # a list of float, as snapshot() wrote it
                    metric = Histogram(name, str(entry["help"]), bounds, labels)
                elif entry["kind"] == "counter":
                    metric = Counter(name, str(entry["help"]), labels)
                else:
                    metric = Gauge(name, str(entry["help"]), labels=labels, kind=str(entry["kind"]))
                by_name[name] = registry.add(metric)
            for key, value in entry["values"]:  # type: ignore[attr-defined]  # a list of pairs
                label_values = tuple(key)
                if isinstance(metric, Histogram):
                    series = metric.series.setdefault(label_values, [0.0] * len(value))
                    for index, count in enumerate(value):
                        series[index] += count
                elif isinstance(metric, Counter | Gauge):
                    metric.values[label_values] = metric.values.get(label_values, 0.0) + value
    return registry
