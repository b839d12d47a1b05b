"""The store's owner: one per node, holding what every worker must agree on."""

from __future__ import annotations

from pathlib import Path

from pinedge.edge.store.compactor import Compactor
from pinedge.edge.store.generations import Generations
from pinedge.edge.store.index import Index
from pinedge.edge.store.loader import StoreLoader
from pinedge.edge.store.purge import Selection
from pinedge.edge.store.purged import Cleaner


class StoreOwner:
    """The node's store over the object files under `root`, within `budget` bytes.

    It holds the parts and hands each message to the part it is for:
    - the index (index.py): which variants of which keys are stored, in which
      files, within the budget, and which of them purges hid;
    - the cleaner (purged.py): settles what purges left, when the CPU is idle;
    - the generations (generations.py): counters in shared memory that tell each
      worker, on every hit, whether its own copy is still the stored one, and
      whether a key is stored at all.

    Workers reach it over a Unix socket (link.py) or, in a one-process node,
    directly; the operator's purges come from the admin listener."""

    def __init__(self, root: Path, budget: int, policy: str = "s3fifo") -> None:
        self.root = root
        self.generations = Generations()
        self.index = Index(root, budget, policy, self.generations)
        self.cleaner = Cleaner(self.index.purged, self.index.settle_some)
        self.compactor = Compactor(self.index)
        # What the workers ask, bound to the part that answers it rather than
        # wrapped: one of these runs for every miss.
        self.lookup = self.index.lookup
        self.admit = self.index.admit
        self.hits = self.index.hits
        self.remove_key = self.index.remove_key
        self.drop = self.index.drop

    def loader(self) -> StoreLoader:
        """What indexes the files a warm directory already holds (loader.py)."""
        return StoreLoader(self.index)

    def start(self) -> None:
        """Begin the owner's background work that runs for as long as it does: the
        segments' compaction (compactor.py). In the owner's event loop."""
        self.compactor.start()

    def purge(self, selection: Selection, soft: bool) -> int:
        """The operator's purge (see Index.purge); the number of stored responses covered."""
        count = self.index.purge(selection, soft)
        self.cleaner.start()
        return count

    def close(self, keep_files: bool = True) -> None:
        """Stop; if the files are kept (a --cache-dir), first remove what a hard purge
        left, so that scanning them again cannot bring it back."""
        self.cleaner.stop()
        self.compactor.stop()
        if keep_files:
            self.cleaner.settle_all()
        self.index.space.close()
        self.generations.close()
