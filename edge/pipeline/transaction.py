"""A request's way through the pipeline: the steps it can take and the one record
that carries its state from step to step."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum, auto

from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from pinedge.edge.http.cachecontrol import Directives
from pinedge.edge.http.status import CacheStatus
from pinedge.edge.node.config import SiteConfig
from pinedge.edge.pipeline.collapse import Fill, Role
from pinedge.edge.pipeline.errors import EdgeError
from pinedge.edge.pipeline.judge import Verdict
from pinedge.edge.store.entry import Entry
from pinedge.edge.upstream.client import Interim, UpstreamResponse


class Step(Enum):
    """Where a transaction stands; each step names the next (steps.py's table)."""

    RECV = auto()  # is this a request this node serves at all?
    HASH = auto()  # its cache key
    LOOKUP = auto()  # the stored response it selects, if any
    JUDGE = auto()  # fresh, stale but allowed, or to validate
    FETCH = auto()  # one upstream fetch per key, collapsed: lead it or wait for it
    JOINED = auto()  # how the request got its fill (led, followed, shared...)
    FETCHED = auto()  # what the fetch came back with decides the answer
    STREAM = auto()  # send the fill's body as it arrives
    DELIVER = auto()  # answer from a stored response (or its variant)
    PASS = auto()  # straight to the upstream and back, nothing stored
    ERROR = auto()  # the answer is an error of the edge's own
    DONE = auto()


@dataclass(frozen=True, slots=True)
class Route:
    """Where recv sends a request: its site, normalised host and origin-form target."""

    site: SiteConfig
    host: str
    target: str
    params: dict[str, str] = field(default_factory=dict)  # the edge's own image parameters


@dataclass(slots=True)
class FetchPlan:
    """An upstream fetch that fills the cache, prepared before any waiting."""

    key: str
    route: Route
    target: str  # path and query sent upstream
    headers: CIMultiDict[str]
    request_headers: CIMultiDictProxy[str]
    stale: Entry | None
    interim: Interim | None = None  # passes interim responses on to the client who asked
    upstream: str = ""  # the label of the upstream that answered


@dataclass(slots=True)
class Transaction:
    """One client request and everything the steps have learnt about it."""

    request: web.Request
    status: CacheStatus = field(default_factory=CacheStatus)
    route: Route | None = None
    key: str = ""
    directives: Directives | None = None  # the request's cache directives this node honours
    entry: Entry | None = None  # the stored response the request selects, then serves from
    now: float = 0.0  # when `entry` was judged: its Age is counted to this moment
    as_stored: bool = False  # deliver `entry` itself, never a variant of it (stale on error)
    other_variants: bool = False  # the URL has stored responses, none for this request
    verdict: Verdict | None = None
    plan: FetchPlan | None = None
    fill: Fill | None = None
    role: Role | None = None  # how this request got `fill`
    handed_over: bool = False  # the miss path led `fill` for it (and kept its body)
    led: bool = False  # this request led its fill (a follower did not)
    passed: UpstreamResponse | None = None  # a response not to be stored, to stream
    refetched: bool = False  # a fill broke off once and was fetched again
    error: EdgeError | None = None
    response: web.StreamResponse | None = None
