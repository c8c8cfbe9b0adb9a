"""Infrastructure: the AWS clients (aws, awsjson), the upstream HTTP transport (h1), tracing,
logs and refresh (stale-while-revalidate over a slow source). Imports only ``core``.
"""
