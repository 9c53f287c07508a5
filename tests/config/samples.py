"""Shared configuration texts for the tests."""

# Two connections and a flow between them: the smallest file that exercises every section.
VALID = """
[store]
url = "postgresql+psycopg://erphub@db.example.com/erphub"

[broker]
url = "redis://redis.example.com:6379/0"

[logging]
level = "debug"
format = "json"

[connections.kingdee_prod]
platform = "fakeerp"
url = "https://erp.example.com/k3cloud/"
acct_id = "62f1d3e8"
username = "api"
password = { env = "KINGDEE_PASSWORD" }

[connections.sap_prod]
platform = "fakeerp"
url = "https://b1.example.com:50000/b1s/v1/"
acct_id = "SBODEMOUS"
username = "manager"
password = { env = "SAP_PASSWORD" }
read_timeout = 60

[[flows]]
name = "master-data"
kind = "master_data"
source = "kingdee_prod"
targets = ["sap_prod"]
entities = ["items", "warehouses"]
every = "5m"

[[flows]]
name = "movements"
kind = "movements"
source = "kingdee_prod"
targets = ["sap_prod"]
every = "30s"
"""

VALID_ENV = {"KINGDEE_PASSWORD": "kd-pass-5521-alpha", "SAP_PASSWORD": "sap-pass-9034-bravo"}
