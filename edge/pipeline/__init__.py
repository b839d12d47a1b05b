"""The request pipeline: a request's steps from the listener to the store and back
(steps.py, driven over one Transaction), the fetch side, pass, and the hit path."""
