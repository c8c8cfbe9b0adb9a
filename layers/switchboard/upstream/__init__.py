"""Calling upstreams: the engine (retries, fallback, streaming failover over a plan), the
providers (one module per upstream family) and the secrets they need. Imports ``routing`` and below.
"""
