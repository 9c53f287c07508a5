"""The vendors' world: simulators of the ERP APIs our connectors talk to over real HTTP.

Imports nothing of erphub's own packages. The harness: ``server`` (threaded keep-alive WSGI
server on loopback), ``ledger`` (true stock), ``faults`` (fault plans), ``base`` (the
``Simulator`` class every vendor simulator extends), ``admin`` (``/_admin/`` routes),
``registry`` (name → simulator, ``serve_all``).
"""
