"""Lambda Web Adapter entry point: uvicorn serves ``app``; the gateway is built in its lifespan."""

from switchboard.http.app import create_app
from switchboard.infra.logs import configure_logging

configure_logging()
app = create_app()
