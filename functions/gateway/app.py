"""Lambda Web Adapter entry point: uvicorn serves ``app``; the gateway is built in its lifespan."""

from switchboard.api import create_app

app = create_app()
