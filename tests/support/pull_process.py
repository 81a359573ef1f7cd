"""The real pull path (``ReportPoller.poll``) in a process of its own, so that a test can measure
that process's memory and nothing else's.

    python tests/support/pull_process.py BOOTSTRAP APP_ID POLLS CONNECTION_JSON

Prints one JSON line per poll: the files it fetched and the process's peak RSS so far (VmHWM,
the kernel's high-water mark of this process's memory since its exec), and one after closing.
Not getrusage(RUSAGE_CHILDREN) in the parent: Linux carries the parent's own high-water mark into
a child started by fork or vfork and exec, so that would measure the test process."""
from __future__ import annotations

import asyncio
import json
import sys

from pydantic import TypeAdapter

from connectors import AnyConnectionSettings
from streams.runtime.reports import ReportPoller


def peak_rss_kb() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))


async def main(bootstrap: str, app_id: str, polls: int, connection: str) -> None:
    conn = TypeAdapter(AnyConnectionSettings).validate_python(json.loads(connection))
    poller = ReportPoller([conn], app_id=app_id, kafka={"bootstrap_servers": bootstrap}, state_timeout_s=30)
    try:
        for _ in range(polls):
            fetched = await poller.poll(conn)
            print(json.dumps({"fetched": fetched, "peak_rss_kb": peak_rss_kb()}), flush=True)
    finally:
        await poller.close()
    print(json.dumps({"closed": True, "peak_rss_kb": peak_rss_kb()}), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]))
