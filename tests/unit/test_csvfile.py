import csv
import io
import random
from datetime import datetime, timedelta, timezone

from streams.core.csvfile import conversion_row, event_date, render

SEED_HEADER = "CampaignId,ActionTrackerId,EventDate,OrderId,ClickId,CustomerId,CurrencyCode,Amount,Category,Sku,Quantity"
ITEM = {"order_id": "01928374", "customer_id": "BCZ2WVSH674563PDPYOTM3AXDQ", "currency": "USD", "amount": "42.50",
        "category": "Blacksmithing", "sku": "A-198237465", "quantity": 1, "occurred_at": "2021-11-23T18:00:22.517Z"}
AT = datetime(2021, 11, 23, 18, 0, 22, 517000, tzinfo=timezone.utc)


def test_seed_example_is_reproduced_byte_for_byte():
    row = conversion_row(1000, 4321, ITEM, AT, "QiiWXOVnrQ3SQHl24jQjyxBGUkmzfJ3i1VHrWM0")
    assert render([row]) == (SEED_HEADER + "\r\n" + "1000,4321,2021-11-23T18:00:22+00:00,01928374,"
                             "QiiWXOVnrQ3SQHl24jQjyxBGUkmzfJ3i1VHrWM0,BCZ2WVSH674563PDPYOTM3AXDQ,USD,42.50,"
                             "Blacksmithing,A-198237465,1\r\n").encode()


def test_event_date_keeps_its_zone():
    at = AT.astimezone(timezone(timedelta(hours=-5)))
    assert conversion_row(1, 2, {**ITEM, "occurred_at": at.isoformat()}, at, "c")[2] == "2021-11-23T13:00:22-05:00"


def test_event_date_is_the_event_text_only_when_that_is_the_same_text():
    for text in ("2021-11-23T13:00:22-05:00", "2021-11-23t13:00:22-05:00", "2021-11-23T13:00:22.5-05:00",
                 "2021-11-23T13:00:22-0500", "2021-11-23T18:00:22Z", "2021-11-23T18:00:22+00:00"):
        at = datetime.fromisoformat(text)
        assert event_date(text, at) == at.isoformat(timespec="seconds"), text


def test_rfc4180_quoting_round_trips():
    item = {**ITEM, "category": 'Tools, "heavy"', "sku": "line\nbreak"}
    data = render([conversion_row(1, 2, item, AT, "c")])
    parsed = list(csv.reader(io.StringIO(data.decode(), newline="")))
    assert parsed[1][8:10] == ['Tools, "heavy"', "line\nbreak"]
    assert b'"Tools, ""heavy"""' in data


def test_every_cell_impact_reads_is_written_as_the_event_carried_it():
    # impact's parser reads the file: a ClickId that begins with '-' is the one impact issued,
    # an OrderId or Sku that begins with '+' or '=' is the one a later modification names.
    item = {**ITEM, "order_id": "+0042", "customer_id": "-C7", "sku": "=A-1", "category": "@Garden"}
    data = render([conversion_row(1, 2, item, AT, "-Qi_x.~9")])
    parsed = list(csv.reader(io.StringIO(data.decode(), newline="")))
    assert parsed[1][3:6] == ["+0042", "-Qi_x.~9", "-C7"]
    assert parsed[1][8:10] == ["@Garden", "=A-1"]
    assert b"'" not in data


def test_render_writes_the_csv_module_s_bytes_for_any_cells():
    """The joined fast path and the csv module's minimal quoting give the same file: cells with
    commas, quotes, line breaks, a lone empty cell, a cell that is not a string."""
    def by_csv(rows, header):
        out = io.StringIO()
        csv.writer(out, lineterminator="\r\n").writerows([header, *rows])
        return out.getvalue().encode()

    rng = random.Random(3)
    plain, special = ["a", "b", "é", " ", "'", ""], [",", '"', "\r", "\n"]
    joined = 0
    for _ in range(3000):
        width, mixed = rng.randint(1, 5), rng.random() < 0.5
        alphabet = plain + special if mixed else plain
        rows = [tuple("".join(rng.choice(alphabet) for _ in range(rng.randint(0, 4))) if rng.random() < 0.97
                      else rng.choice([None, 3, 1.5]) for _ in range(width)) for _ in range(rng.randint(0, 6))]
        header = tuple(f"h{i}" for i in range(width))
        assert render(rows, header) == by_csv(rows, header), rows
        joined += not mixed
    assert joined > 1000  # both paths were taken
