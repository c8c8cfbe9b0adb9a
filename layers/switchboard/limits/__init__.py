"""Virtual keys, budgets and rate limits in DynamoDB: race-free and global across instances.

Modules:
    model        periods, windows, limit definitions and the reservation arithmetic (pure)
    table        the table's item keys, attribute codecs and a count of DynamoDB calls
    keys         the key store (create, list, update, revoke, rotate) and its authenticator
    definitions  team, user and model-alias limits, cached per container
    ledger       reserve, settle, refund and sweep, one transaction each
    settlement   settlements that do not commit at once: background retries, recorded costs
    hook         the lifecycle hook that admits and settles every chat request

The data model and the cost per request are in docs/limits.md. Nothing is imported here, so that
importing one module does not pay for the others.
"""
