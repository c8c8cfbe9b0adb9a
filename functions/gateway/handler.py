"""Buffered-mode Lambda entry point: the same app through Mangum, wired during Lambda init."""

from mangum import Mangum
from switchboard.api import create_app
from switchboard.gateway import Gateway
from switchboard.logs import configure_logging

configure_logging()
handler = Mangum(create_app(Gateway.from_env()), lifespan="off")
