"""The bottom layer: what every other layer may use, importing nothing of the gateway's above it.

errors, schemas (OpenAI's wire shapes), sse, settings, jsonbody (the one checked body reader),
redaction, money (prices and token arithmetic), principal (who a key is, and its limits).
"""
