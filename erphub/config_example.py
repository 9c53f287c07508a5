"""The commented example configuration that ``erphub`` writes for a new installation.

Prose comments start with ``# ``; settings that are commented out start with ``#`` directly
followed by the key or table (``#url = …``, ``#[connections.kingdee_prod]``), so removing that
one ``#`` turns them on. The connection and flow blocks stay commented out: a connection can
only be checked once its platform's connector is installed, and a flow needs its connections.
The file as written loads without errors.
"""
from __future__ import annotations

from pathlib import Path

__all__ = ["example_config", "write_example"]

_EXAMPLE = '''\
# erphub configuration.
#
# Read from ./erphub.toml, or from the file named by $ERPHUB_CONFIG.
# Environment variables override three settings:
#   ERPHUB_STORE_URL   -> [store] url
#   ERPHUB_BROKER_URL  -> [broker] url
#   ERPHUB_LOG_LEVEL   -> [logging] level
#
# Secrets (passwords, app secrets, API keys) are never written in this file. Give them as a
# reference instead, and erphub reads them when it starts:
#   password = { env = "KINGDEE_PASSWORD" }          # from an environment variable
#   password = { file = "/run/secrets/kingdee" }     # from a file (a trailing newline is dropped;
#                                                    # a relative path is relative to this file)
# Durations are written 30s, 5m, 1h, 1d or combined, e.g. 1h30m.

[store]
# Where erphub keeps its state (id maps, watermarks, outbox, error queue): any SQLAlchemy URL.
# The default is an SQLite file in the working directory. For workers on several machines use
# PostgreSQL, e.g. "postgresql+psycopg://erphub@db.example.com/erphub"
# (pass a password through ERPHUB_STORE_URL rather than writing it here).
url = "sqlite:///erphub.db"

[broker]
# How work is handed to workers. "memory://" runs everything inside one process
# (`erphub sync run`). For `erphub worker` on several machines use Redis or RabbitMQ:
# "redis://redis.example.com:6379/0" or "amqp://rabbitmq.example.com:5672".
url = "memory://"

[logging]
# DEBUG, INFO, WARNING, ERROR or CRITICAL.
level = "INFO"
# "text" for people, "json" for log collectors.
format = "text"

# ----------------------------------------------------------------------------------------------
# Connections: one table per ERP system, [connections.<name>]. The name (letters, digits, _ and
# -) is how flows refer to it. `platform` picks the connector; the other keys belong to that
# connector. Keys every connection has, with their defaults:
#   url                    base URL of the vendor API (http:// or https://)
#   connect_timeout = 5.0  seconds to wait for a TCP connection
#   read_timeout = 30.0    seconds to wait for an answer
#   page_size = 500        records per read request
#   rate_limit_per_second  stay below the vendor's limit (no limit when left out)
#   verify_tls = true      or the path of a CA bundle for a private CA (false is refused)
# Remove the leading "#" of a block to turn it on.

# Kingdee K3Cloud (金蝶云星空), WebAPI.
#[connections.kingdee_prod]
#platform = "kingdee"
#url = "https://erp.example.com/k3cloud/"
# Data centre (account set) id, from the K3Cloud login page or the management centre.
#acct_id = "62f1d3e8a1b2c3"
# The integration user.
#username = "api"
# Third-party authorisation (第三方系统登录授权): app id and app secret.
#app_id = "204399_72epxxxxxxxxxxxx"
#app_secret = { env = "KINGDEE_APP_SECRET" }
# Or a password login, for tenants that still use it:
#password = { env = "KINGDEE_PASSWORD" }
# Language id (2052 = Simplified Chinese) and the stock organisation documents belong to.
#lcid = 2052
#stock_org = "100"

# SAP Business One, Service Layer.
#[connections.sap_prod]
#platform = "sap_b1"
#url = "https://b1.example.com:50000/b1s/v1/"
# The company database, e.g. SBODEMOUS.
#company_db = "SBODEMOUS"
#username = "manager"
#password = { env = "SAP_B1_PASSWORD" }
# A private CA for the Service Layer certificate:
#verify_tls = "/etc/ssl/certs/b1-ca.pem"

# Yonyou U8 (用友), U8 OpenAPI.
#[connections.u8_prod]
#platform = "yonyou"
#url = "https://api.yonyouup.com"
# The developer account (from_account) and the enterprise account that holds the data (to_account).
#from_account = "devacct"
#to_account = "acme"
#app_key = "opa0123456789abcdef"
#app_secret = { env = "YONYOU_APP_SECRET" }
# The account set (数据源) sequence number.
#ds_sequence = 1

# Jiandaoyun (简道云), API v5. Forms differ per tenant: name each form by its entry id and its
# fields by alias, widget ID (_widget_...) or label; the connector resolves them through
# widget/list. The defaults are the reference inventory app: 物料, 仓库, 出入库单 (明细 subform)
# and 库存台账 with their labels.
#[connections.jdy_prod]
#platform = "jiandaoyun"
#url = "https://api.jiandaoyun.com/api"
#api_key = { env = "JIANDAOYUN_API_KEY" }
#app_id = "5e0dca0cc9a2790006c11e02"
# Zone of date-only values (a document date is stored as local midnight).
#timezone = "Asia/Shanghai"
# Secret of the forms' data push (数据推送); pushes older than this many seconds are refused.
#webhook_secret = { env = "JIANDAOYUN_WEBHOOK_SECRET" }
#webhook_max_age_seconds = 300
# Client-side calls per second per endpoint class; Jiandaoyun allows 30/20/10 and 50 a second per
# company across all keys.
#rate_limits = { read = 25, write = 15, batch = 8, company = 45 }
#[connections.jdy_prod.items]
#entry_id = "56fcab0f02c4675e3fe9694a"
#sku = "物料编码"
#[connections.jdy_prod.movements]
#entry_id = "56fcab0f02c4675e3fe9694c"
# The text field that carries erphub's idempotency key.
#key = "外部单号"
#[connections.jdy_prod.ledger]
#entry_id = "56fcab0f02c4675e3fe9694d"

# ----------------------------------------------------------------------------------------------
# Flows: what moves where, and how often. Each [[flows]] entry has
#   name      unique, used in logs and by `erphub sync run --flow <name>`
#   kind      master_data (items, warehouses, locations, partners),
#             movements (stock movements) or balances (balance snapshots for reconciliation)
#   source    the connection records are read from
#   targets   the connections they are written to (never the source itself;
#             a balances flow may have none)
#   entities  which records; all of the kind's entities when left out
#   every     how often the flow runs
# Turn flows on once the connections they name are on.

#[[flows]]
#name = "master-data"
#kind = "master_data"
#source = "kingdee_prod"
#targets = ["sap_prod"]
#entities = ["items", "warehouses"]
#every = "5m"

#[[flows]]
#name = "movements"
#kind = "movements"
#source = "kingdee_prod"
#targets = ["sap_prod", "u8_prod"]
#every = "1m"

#[[flows]]
#name = "stock-check"
#kind = "balances"
#source = "kingdee_prod"
#targets = ["sap_prod"]
#every = "1h"
'''


def example_config() -> str:
    """The commented example configuration, as text. It loads as it is."""
    return _EXAMPLE


def write_example(path: str | Path, *, overwrite: bool = False) -> Path:
    """Write the example to ``path`` and return it. An existing file is left alone and
    ``FileExistsError`` raised, unless ``overwrite`` is true."""
    target = Path(path)
    mode = "w" if overwrite else "x"
    try:
        with target.open(mode, encoding="utf-8", newline="\n") as fh:
            fh.write(_EXAMPLE)
    except FileExistsError:
        raise FileExistsError(f"{target} already exists; pass overwrite=True to replace it") from None
    return target
