"""The HTTP surface: the app (``create_app``), its ASGI front door, CORS, the steps every
endpoint shares (``request``) and the endpoints. The top layer: nothing in the package imports it.
"""
