"""Money counted: the meter, cost events and the spend ledger (the price lookup both billing
and ``limits`` use is ``routing.pricing``). Never imports
``limits`` (nor ``limits`` billing): the two hooks meet only on the exchange.
"""
