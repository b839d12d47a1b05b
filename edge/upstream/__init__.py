"""Upstreams: the pooled client that sends to origins and shields, and where each request goes."""
