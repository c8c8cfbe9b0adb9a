"""Buffered-mode Lambda entry point: the same app through Mangum, wired during Lambda init."""

import gc

from mangum import Mangum
from switchboard.core.settings import Settings
from switchboard.http.app import create_app
from switchboard.infra.logs import configure_logging
from switchboard.wiring import Gateway

configure_logging()
# The spend ledger writes before each response ends: nothing signals this mode's shutdown.
handler = Mangum(create_app(Gateway.from_env(Settings.from_env(spend_flush_s=0.0))), lifespan="off")
gc.freeze()  # init's objects stay out of the cyclic GC's full passes (see switchboard.http.app's lifespan)
