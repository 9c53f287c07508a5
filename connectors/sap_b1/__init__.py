"""SAP Business One: Service Layer connector (a DI Server transport comes later).

``client.py`` is the Service Layer wire protocol, ``odata.py`` the safe ``$filter`` builder,
``mapping.py`` the pure SAP ⇄ canonical mapping (transport-independent plain dicts), and
``connector.py`` wires them to the contract. Importing this package registers ``sap_b1``.
"""
from connectors.sap_b1.connector import SapB1Connector, SapB1Settings

__all__ = ["SapB1Connector", "SapB1Settings"]
