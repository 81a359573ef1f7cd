"""The one place every setting is declared: type, default, bound and doc.

Loaded from one YAML file at start-up; any invalid value stops start-up with a message that
names the key (``ConfigError``). Cross-field checks live in ``Settings._cross_checks``.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from connectors import TRANSPORTS, AnyConnectionSettings
from connectors.credentials import SecretRef
from schemas import CSV_HEADER, load

ORDER_ITEM_FIELDS = frozenset(load("order-item.schema.json")["properties"])

# impact: "keep the maximum entries per file under 10000" (FTP online-sale implementation guide).
IMPACT_MAX_ROWS = 9_999
# impact's reason codes for batch modifications (its Batch Modifications & Reversals reference; RESET
# belongs to reset files, APPROVED needs a custom disposition code: list those in custom_reasons).
IMPACT_REASON_CODES = frozenset({
    "CONS_FRAUD", "CONS_ERROR", "ITEM_RETURNED", "ORDER_ERROR", "ORDER_UPDATE", "PUB_ACT_DISPUTE",
    "ADV_ACT_DISPUTE", "NOT_COMPLIANCE_TERMS", "ITEM_OUT_OF_STOCK", "TEST_ACTION", "PARTNER_NOT_ACTIVE"})


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class KafkaSettings(_Section):
    brokers: list[str] = Field(["kafka://localhost:9092"], min_length=1,
                               description="Bootstrap servers, kafka://host:port.")
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="SSL always verifies the broker certificate.")
    ca_file: Path | None = Field(None, description="CA bundle for SSL; the system store when unset.")
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", None] = Field(None, description="With SASL_*.")
    username: str | None = Field(None, description="SASL user name.")
    password: SecretRef | None = Field(None, description="SASL password: `{file: PATH}` or `{env: NAME}`.")
    session_timeout_s: float = Field(10.0, ge=1, description="Group session timeout.")
    heartbeat_interval_s: float = Field(2.0, gt=0, description="Group heartbeat; below the session timeout.")
    rebalance_timeout_s: float = Field(10.0, ge=1, description="How long the group waits for members to rejoin.")
    instance_id: str | None = Field(
        default_factory=lambda: os.environ.get("IMREF_INSTANCE_ID"),
        description="Static group membership id, stable across restarts (a StatefulSet pod name).")
    commit_interval_s: float = Field(1.0, gt=0, description="How often delivered (acked) offsets are committed.")
    max_poll_records: int | None = Field(
        None, ge=1, description="Most records Faust's consumer takes from its fetches at a time (null: all it has "
        "fetched). The worker hands them to its handlers 500 at a time with a turn of the event loop between either "
        "way, so uploads and the health endpoints never wait behind a large fetch; a cap only costs throughput "
        "(docs/performance.md).")

    @model_validator(mode="after")
    def _sasl_complete(self) -> "KafkaSettings":
        if self.security_protocol.startswith("SASL") and not (self.sasl_mechanism and self.username and self.password):
            raise ValueError("SASL needs sasl_mechanism, username and password")
        if self.heartbeat_interval_s >= self.session_timeout_s:
            raise ValueError("heartbeat_interval_s must be below session_timeout_s")
        return self


class TopicSettings(_Section):
    clicks: str = Field("imref.clicks", description="Click events, keyed by customer id.")
    order_items: str = Field("imref.order-items", description="Order-item events, keyed by customer id.")
    unattributed: str = Field("imref.unattributed", description="Items without a click after the grace period.")
    dead_letter: str = Field("imref.dead-letter", description="Invalid events, with reason and origin headers.")
    audit: str = Field("imref.audit", description="Order records not written because their order is in a file "
                       "already (`duplicate`, `order_already_reported`), with reason, origin and the file.")
    order_changes: str = Field("imref.order-changes", description="Cancellations and returns, keyed by customer id "
                               "(co-partitioned with order items).")
    unmatched_changes: str = Field("imref.unmatched-changes",
                                   description="Order changes that match no reported conversion, with the reason.")
    partitions: int = Field(4, ge=1, description="Partitions of clicks and order items (co-partitioned).")
    replicas: int = Field(1, ge=1, description="Replication factor of the topics the worker creates.")


# Optional columns from impact's conversion field reference (order-level and item-level data)
# that a file may carry after the 11 base columns.
EXTRA_COLUMN_NAMES = frozenset({
    "OrderPromoCode", "PromoCode", "OrderDiscount", "OrderSubtotal", "OrderShipping", "OrderTax", "OrderRebate",
    "PaymentType", "CustomerStatus", "CustomerCity", "CustomerRegion", "CustomerCountry", "CustomerPostCode",
    "Note", "Text1", "Text2", "Text3", "Numeric1", "Numeric2", "Numeric3",
    "ItemSubCategory", "SubCategory", "Name", "ItemName", "Brand", "ItemBrand", "Price", "ItemPrice",
    "Discount", "ItemDiscount", "ItemPromoCode",
})


class ExtraColumn(_Section):
    column: str = Field(description="impact column name, e.g. OrderPromoCode.")
    field: str = Field(description="Order-item field whose value fills it, e.g. promo_code.")

    @field_validator("column")
    @classmethod
    def _known_column(cls, column: str) -> str:
        if column in CSV_HEADER:
            raise ValueError(f"{column} is one of the base columns, always present")
        if column not in EXTRA_COLUMN_NAMES:
            raise ValueError(f"{column!r} is not in impact's field reference: {', '.join(sorted(EXTRA_COLUMN_NAMES))}")
        return column

    @field_validator("field")
    @classmethod
    def _declared_field(cls, name: str) -> str:
        # Only declared fields: the schema then guarantees a scalar that fits in one cell.
        if name not in ORDER_ITEM_FIELDS:
            raise ValueError(f"{name!r} is not a field of schemas/order-item.schema.json")
        return name


class ImpactSettings(_Section):
    campaign_id: int = Field(gt=0, description="CampaignId from the Tech Plan.")
    action_tracker_id: int = Field(gt=0, description="ActionTrackerId (event type) from the Tech Plan.")
    max_event_age_days: int = Field(88, ge=1, le=88, description="impact does not process older EventDates. With a "
                                    "connection impact pulls from (it picks files up within 24 hours), items are "
                                    "refused one day earlier.")
    extra_columns: list[ExtraColumn] = Field(
        default_factory=list,
        description="`{column, field}` pairs: impact columns written after the 11 base ones, in this order.")

    @field_validator("extra_columns")
    @classmethod
    def _unique_columns(cls, columns: list[ExtraColumn]) -> list[ExtraColumn]:
        names = [c.column for c in columns]
        if len(set(names)) != len(names):
            raise ValueError(f"extra column names must be unique: {names}")
        return columns

    @property
    def extra_fields(self) -> tuple[str, ...]:
        return tuple(c.field for c in self.extra_columns)

    @property
    def csv_header(self) -> tuple[str, ...]:
        return CSV_HEADER + tuple(c.column for c in self.extra_columns)


class AttributionSettings(_Section):
    window_days: float = Field(30.0, gt=0, description="A click older than this before the order does not attribute.")
    grace_s: float = Field(30.0, ge=0, description="How long an item waits for its click before it is unattributed (and at "
                           "least until the clicks that were in the topic when it was read are read).")
    clicks_per_customer: int = Field(4, ge=1, le=64, description="Recent clicks kept per customer.")
    keep_late_days: float = Field(
        1.0, ge=0, le=88, description="Clicks stay in the table this long beyond `window_days` (plus `grace_s`) "
        "before the sweep deletes them, for order items that reach the worker after they occurred (consumer lag, "
        "a late producer); an item later than that can miss a click near the start of its window.")


class BatchSettings(_Section):
    max_rows: int = Field(IMPACT_MAX_ROWS, ge=1, le=IMPACT_MAX_ROWS, description="Rows per file at most "
                          "(impact: under 10 000).")
    max_age_s: float = Field(60.0, gt=0, description="Flush a batch this long after its first row (orders that may "
                             "still grow stay for the next one).")
    order_settle_s: float = Field(
        2.0, gt=0, description="An order without `items_in_order` may still grow until none of its items came for "
        "this long: a time cut leaves it for the next batch, and a batch of `max_rows` rows is cut once its "
        "partition brought no record for this long.")
    order_wait_s: float = Field(
        300.0, gt=0, description="How long a batch holds an order whose items carry `items_in_order` until all of "
        "them are in; after that it goes as it is, and its later items are refused (`order_already_reported`).")
    file_title: str = Field("conversions", description="Leading part of every file name.")

    @field_validator("file_title")
    @classmethod
    def _impact_safe_title(cls, title: str) -> str:
        return impact_safe_title(title)


def impact_safe_title(title: str) -> str:
    # impact's batch file name requirements: no period but the extension's.
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}", title):
        raise ValueError("use 1-64 letters, digits, '_' or '-', starting with a letter or digit (impact refuses "
                         "periods in file names)")
    if title.lower().startswith(("receipt_", "result_")):
        raise ValueError("impact reserves names starting with receipt_ and result_")
    return title


# impact locks an action per its template term: at most 27 days with a days-only period, and
# "M months and D days after the end of the month" otherwise; its standard terms (0 months 27
# days, or 1 month 0 days, after the month end) lock within 62 days of the event.
class ModificationSettings(_Section):
    file_title: str = Field("modifications", description="Leading part of every action-modification file name; "
                            "sizes and ages as in `batch`.")
    keep_days: float = Field(
        90.0, gt=0, le=730, description="A reported order leaves `reported-orders` this long after it was "
        "reported or last changed: impact's action locking period, after which impact accepts no modification. "
        "90 covers every locking period up to 1 month and 27 days after the end of the month (at most 89 days "
        "after the event); set it to your template term's period if that is longer (open-ended locking: 730).")

    custom_reasons: list[str] = Field(
        default_factory=list, description="Reason codes besides impact's own (the custom disposition codes set up "
        "in the impact account, e.g. APPROVED); a change with any other reason goes to the dead-letter topic.")

    @field_validator("file_title")
    @classmethod
    def _impact_safe_title(cls, title: str) -> str:
        return impact_safe_title(title)

    @field_validator("custom_reasons")
    @classmethod
    def _reason_codes(cls, reasons: list[str]) -> list[str]:
        for reason in reasons:
            if not re.fullmatch(r"[A-Z0-9_]{1,64}", reason):
                raise ValueError(f"{reason!r} is not a reason code: 1-64 of A-Z, 0-9 and '_'")
        return reasons

    @property
    def reasons(self) -> frozenset[str]:
        return IMPACT_REASON_CODES | frozenset(self.custom_reasons)


class WebSettings(_Section):
    enabled: bool = Field(True, description="Serve the worker's HTTP endpoints.")
    host: str = Field("0.0.0.0", description="Bind address.")
    port: int = Field(6066, ge=0, le=65535, description="HTTP port.")
    stalled_after_s: float = Field(
        600.0, ge=5, description="/healthz fails (and Kubernetes restarts the worker) when a step of delivery other "
        "than an upload -- making a file, recording a confirmation, acking -- or a seek has been held this long "
        "beyond `attribution.grace_s` (a file may wait that long for its items' clicks): an internal stall. An "
        "upload is bounded by its attempt timeout, and a failing connection is an alert, not ill health.")

    @model_validator(mode="before")
    @classmethod
    def _readiness_no_longer_follows_connections(cls, data):
        if isinstance(data, dict) and "unready_after_failing_s" in data:
            raise ValueError("`unready_after_failing_s` is gone: /readyz no longer follows the connections (an outage "
                             "at impact is no reason to take workers out of service); a failing connection is an "
                             "alert (deploy/base/prometheusrule.yaml). Remove the key.")
        return data


class CollectorSettings(_Section):
    """The click collector, its own process (`imref-stream collector`): beacons in, clicks out."""
    host: str = Field("0.0.0.0", description="The collector's bind address.")
    port: int = Field(6067, ge=0, le=65535, description="The collector's HTTP port (beacons, snippet, probes, metrics).")
    base_path: str = Field(
        "/imref", pattern=r"^(/[A-Za-z0-9._~-]+)*$",
        description="Path under which the public routes are served (`{base_path}/collect`, `{base_path}/imref.js`): "
        "the path the shop's ingress routes to the collector, unchanged. `\"\"`: at the root.")
    allowed_origins: list[str] = Field(
        default_factory=list,
        description="Origins (`https://shop.example`) whose pages may send click beacons; another Origin gets 403.")
    max_body_bytes: int = Field(4096, ge=256, le=65536, description="Larger beacon bodies are refused (413).")
    client_rate_per_s: float = Field(
        2.0, gt=0, description="Beacons a second one client (address, IPv6 /64) may send on average; "
        "more are refused (429 with Retry-After).")
    client_burst: int = Field(20, ge=1, description="Beacons one client may send at once before "
                              "`client_rate_per_s` applies.")
    global_rate_per_s: float = Field(500.0, gt=0, description="Beacons a second one collector process takes from "
                                     "all clients together; more are refused (429 with Retry-After).")
    global_burst: int = Field(1000, ge=1, description="Beacons all clients together may send at once.")
    proxy_hops: int = Field(0, ge=0, le=8, description="Trusted reverse proxies in front of the collector, each "
                            "appending to X-Forwarded-For; 0: the header is ignored, the peer address is the client.")
    cookie_name: str = Field("im_ref", pattern=r"^[A-Za-z0-9_-]{1,64}$",
                             description="The click id cookie the collector sets on an accepted beacon (and "
                             "`<name>_sent`, the snippet's sent-marker); the snippet's `cookieName`.")
    cookie_domains: list[str] = Field(
        default_factory=list,
        description="Domains the cookies may cover (`Domain=`), e.g. `shop.example` to share them with every "
        "subdomain: the one the request's host is under is used; none: a cookie for the request's host only. "
        "The snippet's `cookieDomain` must be the same.")
    require_consent: bool = Field(False, description="Refuse (403) beacons that do not say `\"consent\": true`; "
                                  "a beacon saying `false` is refused either way.")

    @model_validator(mode="before")
    @classmethod
    def _moved_out_of_the_worker(cls, data):
        if isinstance(data, dict) and "enabled" in data:
            raise ValueError("`enabled` is gone: the collector is its own process now (`imref-stream collector "
                             "--config FILE`); the worker no longer serves /collect. Remove the key.")
        return data

    @field_validator("allowed_origins")
    @classmethod
    def _origins(cls, origins: list[str]) -> list[str]:
        # Browsers send the Origin header as scheme://host[:port], lower case, no path.
        normalised = [o.strip().rstrip("/").lower() for o in origins]
        for origin in normalised:
            if not re.fullmatch(r"https?://[a-z0-9.-]+(:[0-9]{1,5})?", origin):
                raise ValueError(f"{origin!r} is not an origin like https://shop.example")
        return normalised

    @field_validator("cookie_domains")
    @classmethod
    def _domains(cls, domains: list[str]) -> list[str]:
        normalised = [d.strip().lstrip(".").lower() for d in domains]
        for domain in normalised:
            # A cookie's Domain is a host name with at least two labels; browsers refuse a public suffix.
            if not re.fullmatch(r"([a-z0-9]([a-z0-9-]*[a-z0-9])?\.)+[a-z0-9]([a-z0-9-]*[a-z0-9])?", domain):
                raise ValueError(f"{domain!r} is not a domain like shop.example")
        return normalised


class LoggingSettings(_Section):
    format: Literal["text", "json"] = Field(
        "text", description="`json`: every log record as one JSON object a line (`time`, `level`, `logger`, "
        "`message`, and `exception` with its traceback) for log pipelines; `text`: Faust's readable lines.")


class Settings(_Section):
    app_id: str = Field("imref-stream", pattern=r"^[A-Za-z0-9._-]+$", description="Consumer group and prefix of internal topics.")
    data_dir: Path = Field(Path("./data"), description="Local state (RocksDB tables).")
    store: Literal["memory://", "rocksdb://"] = Field("memory://", description="Table store; rocksdb:// in production.")
    standby_replicas: int = Field(
        1, ge=0, description="Other workers that keep a standby copy of each table partition (Faust's "
        "`table_standby_replicas`). A standby is kept warm, so a worker that takes a partition over (failover, "
        "rebalance) has little to recover; the cost is that every worker replays the other workers' changelog "
        "writes as they happen, one record at a time. 0: no standbys; a partition that moves is recovered from "
        "its changelog, from the start for a worker that never held it. No effect with one worker.")
    stop_timeout_s: float = Field(20.0, gt=0, description="SIGTERM: flush and commit within this bound.")
    sweep_interval_s: float = Field(3600.0, gt=0, description="How often clicks past the attribution window and "
                                    "orders past `modifications.keep_days` are deleted from the tables (store and "
                                    "changelog).")
    kafka: KafkaSettings = KafkaSettings()
    topics: TopicSettings = TopicSettings()
    impact: ImpactSettings
    attribution: AttributionSettings = AttributionSettings()
    batch: BatchSettings = BatchSettings()
    modifications: ModificationSettings = ModificationSettings()
    web: WebSettings = WebSettings()
    collector: CollectorSettings = CollectorSettings()
    logging: LoggingSettings = LoggingSettings()
    connections: list[AnyConnectionSettings] = Field(min_length=1)

    @model_validator(mode="after")
    def _cross_checks(self) -> "Settings":
        names = [c.name for c in self.connections]
        if len(set(names)) != len(names):
            raise ValueError(f"connection names must be unique: {names}")
        if not self.pushes("conversions"):
            raise ValueError("at least one connection must carry conversions into impact")
        if self.modifications.file_title == self.batch.file_title:
            raise ValueError("modifications.file_title must differ from batch.file_title: the files must not collide")
        return self


    def pushes(self, data_type: str) -> list:
        """The connections that carry files of ``data_type`` into impact."""
        return [c for c in self.connections if c.direction == "into_impact" and c.data_type == data_type]

    @property
    def max_event_age_days(self) -> float:
        """The oldest EventDate a conversion may be written with: impact's limit, a day less when
        impact pulls the file (it picks it up within 24 hours) so it is still inside it then."""
        pulled = any(c.methodology == "pull_from_3rd_party" for c in self.pushes("conversions"))
        return self.impact.max_event_age_days - (1 if pulled else 0)


class CollectorProcessSettings(_Section):
    """What `imref-stream collector` reads: the worker's config file as it is, of which it takes only
    these sections (the connections and their secret files stay with the worker: the collector's pod
    does not hold them), or a file with just these."""
    kafka: KafkaSettings = KafkaSettings()
    topics: TopicSettings = TopicSettings()
    impact: ImpactSettings | None = None  # only max_event_age_days is read
    attribution: AttributionSettings = AttributionSettings()  # window_days: the cookies' Max-Age
    collector: CollectorSettings = CollectorSettings()
    logging: LoggingSettings = LoggingSettings()

    @model_validator(mode="before")
    @classmethod
    def _the_workers_sections(cls, data):
        # The worker's other sections are not read; an unknown key is still an error.
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if k in cls.model_fields or k not in Settings.model_fields}
        return data

    @property
    def max_event_age_days(self) -> int:
        if self.impact is not None:
            return self.impact.max_event_age_days
        return ImpactSettings.model_fields["max_event_age_days"].default


class ConfigError(Exception):
    """Invalid configuration; the message names every offending key."""


def _key(loc: tuple) -> str:
    # pydantic puts the discriminator tag into the location of union members; users never wrote it.
    parts = [str(p) for p in loc if not (isinstance(p, str) and p in TRANSPORTS)]
    return ".".join(parts) or "(top level)"


Model = TypeVar("Model", bound=BaseModel)


def parse_settings(data: object, source: str = "config", model: type[Model] = Settings) -> Model:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        lines = [f"{_key(e['loc'])}: {e['msg']}" for e in exc.errors()]
        raise ConfigError(f"invalid {source}:\n  " + "\n  ".join(lines)) from None


def load_settings(path: str | os.PathLike, model: type[Model] = Settings) -> Model:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    return parse_settings(data, source=f"config file {path}", model=model)
