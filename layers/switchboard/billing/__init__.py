"""Money counted: the price book, the meter, cost events and the spend ledger. Never imports
``limits`` (nor ``limits`` billing): the two hooks meet only on the exchange.
"""
