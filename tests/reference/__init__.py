"""The conformance suite's reference ERP: simulator, connector and deliberately broken variants.

Test-only; never shipped or registered in ``connectors.registry``. The reference connector
passes the whole suite with no skips; each broken variant must fail the tests named for it
(``test_broken.py``), which is how we know the suite catches those bugs.
"""
