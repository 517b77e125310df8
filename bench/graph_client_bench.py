"""Microsoft Graph client libraries compared (issue 21, point 7): worker memory and
first-sync speed.

Against the suite's Graph fake (tests/servers/graph.py, not Microsoft's service) on
loopback, over HTTPS with a CA of its own, each arm runs in fresh processes (the median
of --repeat runs) and measures:
- import: seconds to import what the arm needs to talk to Graph, sign-in (msal) included,
  and the resident memory that added over a bare interpreter;
- delta: seconds to page through one folder's first delta round of --messages messages
  ($select of the sync's fields, Prefer: odata.maxpagesize=100), and the growth of the
  peak resident memory while doing it (the peak is reset first, /proc/self/clear_refs);
- mime: seconds to download the first --mime messages' sources (/$value).

Arms:
- requests: mail.graph.client.GraphClient (requests + msal), in this interpreter's venv;
- httpx: a bare loop on httpx.Client + msal, in the SDK's venv (httpx comes with it);
- msgraph-sdk: the official GraphServiceClient (kiota, httpx, azure-core), given an
  access token by a credential shim as msal would, in the SDK's venv.

The SDK is not a dependency of the app: install it into a throwaway venv,
  python -m venv /tmp/graphsdk && /tmp/graphsdk/bin/pip install msgraph-sdk
and pass --sdk-python /tmp/graphsdk/bin/python (the default). Without it the SDK and
httpx arms are skipped, and say so.

    python bench/graph_client_bench.py [--messages 5000] [--mime 500] [--repeat 3]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

ADDRESS, TOKEN = "bench@m365.test", "bench-token"
SELECT = (
    "id,internetMessageId,isRead,receivedDateTime,parentFolderId,subject,from,"
    "hasAttachments,lastModifiedDateTime"
)

COMMON = r"""
import json, sys, time
def status(name):
    for line in open("/proc/self/status"):
        if line.startswith(name):
            return int(line.split()[1]) / 1024
def reset_peak():
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
args = json.loads(sys.argv[1])
base_rss = status("VmRSS")
"""

REQUESTS_ARM = r"""
t = time.perf_counter()
import msal, requests
import_s = time.perf_counter() - t
import_mb = status("VmRSS") - base_rss
import django
from django.conf import settings
settings.configure(
    INSTALLED_APPS=["systemsettings"], MAIL_CONNECT_TIMEOUT=30,
    MAIL_EXTRA_CA_FILE=args["ca"], MAIL_DEV_CA_FILE=None, USE_TZ=True,
)
django.setup()
t = time.perf_counter()
from mail.graph.client import GraphClient
module_s = time.perf_counter() - t
client = GraphClient(args["token"], base_url=args["base"], allow_internal=True)
def first_round():
    ids = []
    for page in client.delta_pages(
        f"mailFolders/{args['folder']}/messages/delta", params={"$select": args["select"]},
        page_size=100,
    ):
        ids.extend(row["id"] for row in page.changed)
    return ids
before = status("VmRSS"); reset_peak()
t = time.perf_counter()
ids = first_round()
delta_s = time.perf_counter() - t
t = time.perf_counter()
first_round()
warm_s = time.perf_counter() - t
delta_mb = status("VmHWM") - before
t = time.perf_counter()
size = sum(len(client.message_mime(i, limit=1 << 24)) for i in ids[: args["mime"]])
mime_s = time.perf_counter() - t
print(json.dumps({"import_s": import_s, "import_mb": import_mb, "delta_s": delta_s,
                  "delta_mb": delta_mb, "warm_s": warm_s, "mime_s": mime_s, "count": len(ids), "bytes": size,
                  "module_s": module_s}))
"""

HTTPX_ARM = r"""
t = time.perf_counter()
import msal, httpx, ssl
import_s = time.perf_counter() - t
import_mb = status("VmRSS") - base_rss
context = ssl.create_default_context(cafile=args["ca"])
client = httpx.Client(verify=context, timeout=30,
                      headers={"Authorization": f"Bearer {args['token']}"})
def first_round():
    ids = []
    url = f"{args['base']}/me/mailFolders/{args['folder']}/messages/delta"
    params = {"$select": args["select"]}
    while url:
        r = client.get(url, params=params, headers={"Prefer": "odata.maxpagesize=100"})
        r.raise_for_status()
        doc = r.json()
        ids.extend(row["id"] for row in doc["value"] if "@removed" not in row)
        url, params = doc.get("@odata.nextLink"), None
    return ids
before = status("VmRSS"); reset_peak()
t = time.perf_counter()
ids = first_round()
delta_s = time.perf_counter() - t
t = time.perf_counter()
first_round()
warm_s = time.perf_counter() - t
delta_mb = status("VmHWM") - before
t = time.perf_counter()
size = 0
for i in ids[: args["mime"]]:
    r = client.get(f"{args['base']}/me/messages/{i}/$value")
    r.raise_for_status()
    size += len(r.content)
mime_s = time.perf_counter() - t
print(json.dumps({"import_s": import_s, "import_mb": import_mb, "delta_s": delta_s,
                  "delta_mb": delta_mb, "warm_s": warm_s, "mime_s": mime_s, "count": len(ids), "bytes": size}))
"""

SDK_ARM = r"""
t = time.perf_counter()
import msal, ssl, asyncio, httpx
from azure.core.credentials import AccessToken
from kiota_abstractions.base_request_configuration import RequestConfiguration
from kiota_authentication_azure.azure_identity_authentication_provider import (
    AzureIdentityAuthenticationProvider,
)
from msgraph import GraphRequestAdapter, GraphServiceClient
from msgraph.graph_request_adapter import options as sdk_options
from msgraph.generated.users.item.mail_folders.item.messages.delta.delta_request_builder import (
    DeltaRequestBuilder,
)
from msgraph_core import GraphClientFactory
import_s = time.perf_counter() - t
import_mb = status("VmRSS") - base_rss

class Token:  # what msal's answer would be handed over as
    async def get_token(self, *scopes, **kwargs):
        return AccessToken(args["token"], int(time.time()) + 3600)
    async def close(self):
        pass
    async def __aexit__(self, *a):
        pass

async def main():
    context = ssl.create_default_context(cafile=args["ca"])
    http = GraphClientFactory.create_with_default_middleware(
        client=httpx.AsyncClient(verify=context, timeout=30), options=sdk_options
    )
    auth = AzureIdentityAuthenticationProvider(
        Token(), scopes=["https://graph.microsoft.com/.default"], allowed_hosts=["localhost"]
    )
    adapter = GraphRequestAdapter(auth, client=http)
    adapter.base_url = args["base"]
    client = GraphServiceClient(request_adapter=adapter)
    builder = client.me.mail_folders.by_mail_folder_id(args["folder"]).messages.delta
    query = DeltaRequestBuilder.DeltaRequestBuilderGetQueryParameters(
        select=args["select"].split(",")
    )
    first = RequestConfiguration(query_parameters=query)
    first.headers.add("Prefer", "odata.maxpagesize=100")
    more = RequestConfiguration()
    more.headers.add("Prefer", "odata.maxpagesize=100")
    async def first_round():
        ids = []
        page = await builder.get(request_configuration=first)
        while True:
            ids.extend(m.id for m in page.value)
            if not page.odata_next_link:
                break
            page = await builder.with_url(page.odata_next_link).get(request_configuration=more)
        return ids
    before = status("VmRSS"); reset_peak()
    t = time.perf_counter()
    ids = await first_round()
    delta_s = time.perf_counter() - t
    t = time.perf_counter()
    await first_round()
    warm_s = time.perf_counter() - t
    delta_mb = status("VmHWM") - before
    t = time.perf_counter()
    size = 0
    for i in ids[: args["mime"]]:
        size += len(await client.me.messages.by_message_id(i).content.get())
    mime_s = time.perf_counter() - t
    return {"import_s": import_s, "import_mb": import_mb, "delta_s": delta_s,
            "delta_mb": delta_mb, "warm_s": warm_s, "mime_s": mime_s, "count": len(ids), "bytes": size}

print(json.dumps(asyncio.run(main())))
"""


def mime(number: int) -> bytes:
    body = "".join(f"Line {n} of message {number}, some ordinary text.\r\n" for n in range(40))
    return (
        f"From: Sender {number % 97} <s{number % 97}@example.test>\r\n"
        f"To: {ADDRESS}\r\nSubject: Message {number}\r\n"
        f"Message-ID: <bench{number}@example.test>\r\n"
        f"Date: Mon, 03 Jun 2024 10:{number % 60:02}:00 +0200\r\n"
        f"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}"
    ).encode()


def run_arm(python: str, code: str, args: dict) -> dict:
    result = subprocess.run(
        [python, "-c", COMMON + code, json.dumps(args)],
        capture_output=True, text=True, timeout=900, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "PYTHONDONTWRITEBYTECODE": "1"},
    )  # fmt: skip
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-3000:])
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--mime", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--sdk-python", default="/tmp/graphsdk/bin/python")  # noqa: S108
    options = parser.parse_args()

    import trustme

    from tests.servers.graph import GraphServer

    ca = trustme.CA()
    server = GraphServer(token_user=lambda t: ADDRESS if t == TOKEN else None, ca=ca).start()
    server.add_user(ADDRESS, name="Bench")
    server.add_messages("inbox", [mime(n) for n in range(options.messages)], mailbox=ADDRESS)
    with tempfile.NamedTemporaryFile("wb", suffix=".pem", delete=False) as ca_file:
        ca_file.write(ca.cert_pem.bytes())
    args = {
        "ca": ca_file.name, "token": TOKEN, "base": server.graph_url, "select": SELECT,
        "folder": server.folder_id("inbox", ADDRESS), "mime": options.mime,
    }  # fmt: skip
    arms = [("requests", sys.executable, REQUESTS_ARM)]
    if Path(options.sdk_python).exists():
        arms += [("httpx", options.sdk_python, HTTPX_ARM), ("msgraph-sdk", options.sdk_python,
                 SDK_ARM)]  # fmt: skip
    else:
        print(f"# {options.sdk_python} not found: the httpx and msgraph-sdk arms are skipped")
    print(f"# {options.messages} messages in one folder's delta, {options.mime} MIME downloads,"
          f" median of {options.repeat} fresh processes per arm")  # fmt: skip
    print(f"{'arm':<12} {'import_s':>9} {'import_MB':>10} {'delta_s':>8} {'again_s':>8} "
          f"{'delta_MB':>9} {'mime_s':>7} {'count':>6}")  # fmt: skip
    try:
        results = {}
        for name, python, code in arms:
            runs = [run_arm(python, code, args) for _ in range(options.repeat)]
            median = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
            results[name] = median
            assert median["count"] == options.messages, (name, median["count"])
            print(
                f"{name:<12} {median['import_s']:>9.3f} {median['import_mb']:>10.1f} "
                f"{median['delta_s']:>8.2f} {median['warm_s']:>8.2f} {median['delta_mb']:>9.1f} "
                f"{median['mime_s']:>7.2f} {int(median['count']):>6}"
            )
        if "requests" in results:
            print(f"# mail.graph.client itself, on top of Django: "
                  f"{results['requests']['module_s']:.3f} s to import")  # fmt: skip
        base = results["requests"]
        for name, median in results.items():
            if name != "requests":
                print(
                    f"# {name} / requests: import {median['import_s'] / base['import_s']:.1f}x, "
                    f"import memory {median['import_mb'] / max(base['import_mb'], 0.1):.1f}x, "
                    f"delta {median['delta_s'] / base['delta_s']:.2f}x "
                    f"(again {median['warm_s'] / base['warm_s']:.2f}x), "
                    f"mime {median['mime_s'] / base['mime_s']:.2f}x"
                )
    finally:
        server.stop()
        os.unlink(ca_file.name)


if __name__ == "__main__":
    main()
