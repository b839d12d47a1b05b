"""The node's store: objects in shared memory, the index and its owner, eviction, tags and purge."""
