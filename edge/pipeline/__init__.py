"""The request pipeline: what happens to a request between the listener and the store."""
