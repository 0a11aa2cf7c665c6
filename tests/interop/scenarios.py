"""mxmedia interop scenarios: a real client library against mxmedia behind nginx, beside Synapse.

run.sh sets everything up and calls `python scenarios.py CONTEXT.json`; the JSON says where
everything listens. One async function per scenario, registered with @scenario, each
independent of the others (its own users, its own media). To add a scenario (thumbnails,
federation, URL previews…), write one more function here.

Prints one `PASS name (time)` or `FAIL name (time): reason` line per scenario and writes the
counts to the results file named in the context; run.sh prints the closing `N passed, M failed`.
Select scenarios with INTEROP_SCENARIOS=name1,name2.
"""

from __future__ import annotations

import asyncio
import io
import hashlib
import hmac
import json
import os
import re
import secrets
import ssl
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable
from urllib.parse import quote, unquote

import aiohttp
from nio import (
    AsyncClient,
    AsyncClientConfig,
    ContentRepositoryConfigResponse,
    LoginResponse,
    LogoutResponse,
    MemoryDownloadResponse,
    UploadResponse,
)

SCENARIO_TIMEOUT_SECS = 120


class Failed(Exception):
    """A check failed; the message says what was expected and what came back."""


# --------------------------------------------------------------------------------------------
# Context: where things are, and HTTP helpers.


@dataclass
class Homeserver:
    name: str
    server_name: str
    base_url: str  # through nginx, https
    synapse_url: str  # Synapse's own plain-http listener on loopback (admin API)
    shared_secret: str


@dataclass
class Response:
    method: str
    url: str
    status: int
    headers: Any  # multidict.CIMultiDictProxy
    body: bytes

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
            raise Failed(f"{self.describe()}: body is not JSON") from None

    def describe(self) -> str:
        text = self.body[:300].decode("utf-8", "replace")
        return f"{self.method} {self.url} -> {self.status} {text!r}"


@dataclass
class Context:
    hs1: Homeserver
    hs2: Homeserver
    mxmedia_url: str  # mxmedia's own listener, bypassing nginx
    mxmedia_upstream: str  # host:port nginx proxies media to, as nginx logs it
    mxmedia_data_dir: Path
    token_cache_secs: float
    max_upload_size: int
    ca_file: str
    nginx_access_log: str
    mxmedia_log: str
    appservice_token: str
    fixtures: Path
    doctor: dict[str, Any]
    # The mxmedia of hs2 and of hs3 (the Synapse on PostgreSQL) and the scripts around them,
    # for the import scenarios.
    hs2_media: dict[str, str] = field(default_factory=dict)
    # An mxmedia for hs1 with its blobs in Garage and redirects on, for the Location scenario.
    s3_media: dict[str, str] = field(default_factory=dict)
    synadm: str = ""  # the synadm executable, in a venv of its own
    hs3: Homeserver | None = None
    hs3_media: dict[str, str] = field(default_factory=dict)
    postgres: dict[str, Any] = field(default_factory=dict)
    ssl: ssl.SSLContext = field(init=False)
    session: aiohttp.ClientSession = field(init=False)

    @classmethod
    def load(cls, path: str) -> "Context":
        raw = json.loads(Path(path).read_text())
        return cls(
            hs1=Homeserver(**raw["hs1"]),
            hs2=Homeserver(**raw["hs2"]),
            mxmedia_url=raw["mxmedia_url"],
            mxmedia_upstream=raw["mxmedia_upstream"],
            mxmedia_data_dir=Path(raw["mxmedia_data_dir"]),
            token_cache_secs=float(raw["token_cache_secs"]),
            max_upload_size=int(raw["max_upload_size"]),
            ca_file=raw["ca_file"],
            nginx_access_log=raw["nginx_access_log"],
            mxmedia_log=raw["mxmedia_log"],
            appservice_token=raw["appservice_token"],
            fixtures=Path(raw["fixtures"]),
            doctor=raw["doctor"],
            hs2_media=raw.get("hs2_media", {}),
            s3_media=raw.get("s3_media", {}),
            synadm=raw.get("synadm", ""),
            hs3=Homeserver(**raw["hs3"]) if "hs3" in raw else None,
            hs3_media=raw.get("hs3_media", {}),
            postgres=raw.get("postgres", {}),
        )

    async def open(self) -> None:
        self.ssl = ssl.create_default_context(cafile=self.ca_file)
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=self.ssl),
            timeout=aiohttp.ClientTimeout(total=60),
            auto_decompress=False,
        )

    async def close(self) -> None:
        await self.session.close()

    async def request(
        self,
        method: str,
        url: str,
        *,
        token: str | None = None,
        body: bytes | None = None,
        json_body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        hdrs = dict(headers or {})
        if token is not None:
            hdrs["Authorization"] = f"Bearer {token}"
        if json_body is not None:
            body = json.dumps(json_body).encode()
            hdrs.setdefault("Content-Type", "application/json")
        async with self.session.request(method, url, data=body, headers=hdrs) as r:
            data = await r.read()
            return Response(method, url, r.status, r.headers, data)

    # ---- homeserver accounts

    async def register(self, hs: Homeserver, prefix: str, displayname: str | None = None,
                       admin: bool = False) -> tuple[str, str]:
        """Creates a user with Synapse's shared-secret registration (admin API, as
        register_new_matrix_user does). Returns (user_id, password)."""
        localpart = f"{prefix}-{secrets.token_hex(4)}"
        password = secrets.token_urlsafe(12)
        url = f"{hs.synapse_url}/_synapse/admin/v1/register"
        r = await self.request("GET", url)
        expect_status(r, 200)
        nonce = r.json()["nonce"]
        mac = hmac.new(hs.shared_secret.encode(), digestmod=hashlib.sha1)
        role = "admin" if admin else "notadmin"
        for part in (nonce, localpart, password):
            mac.update(part.encode())
            mac.update(b"\x00")
        mac.update(role.encode())
        body = {"nonce": nonce, "username": localpart, "password": password, "admin": admin, "mac": mac.hexdigest()}
        if displayname:
            body["displayname"] = displayname
        r = await self.request("POST", url, json_body=body)
        expect_status(r, 200)
        user_id = r.json()["user_id"]
        expect_eq(user_id, f"@{localpart}:{hs.server_name}", "registered user id")
        return user_id, password

    async def login(self, hs: Homeserver, user_id: str, password: str) -> str:
        """Password login through nginx; returns the access token."""
        r = await self.request(
            "POST",
            f"{hs.base_url}/_matrix/client/v3/login",
            json_body={
                "type": "m.login.password",
                "identifier": {"type": "m.id.user", "user": user_id},
                "password": password,
            },
        )
        expect_status(r, 200)
        return r.json()["access_token"]

    async def new_user(self, hs: Homeserver, prefix: str) -> tuple[str, str]:
        user_id, password = await self.register(hs, prefix)
        return user_id, await self.login(hs, user_id, password)

    def nio_client(self, hs: Homeserver, user_id: str) -> "RecordingClient":
        return RecordingClient(hs.base_url, user_id, ssl=self.ssl, config=AsyncClientConfig(max_timeouts=2))

    # ---- media URLs

    def download_url(self, base: str, mxc: str, file_name: str | None = None, prefix: str = "/_matrix/client/v1/media") -> str:
        server_name, media_id = parse_mxc(mxc)
        url = f"{base}{prefix}/download/{quote(server_name, safe='')}/{quote(media_id, safe='')}"
        if file_name is not None:
            url += "/" + quote(file_name, safe="")
        return url

    async def upload(self, hs: Homeserver, token: str, data: bytes, content_type: str, filename: str | None = None) -> str:
        url = f"{hs.base_url}/_matrix/media/v3/upload"
        if filename is not None:
            url += "?filename=" + quote(filename, safe="")
        r = await self.request("POST", url, token=token, body=data, headers={"Content-Type": content_type})
        expect_status(r, 200)
        return r.json()["content_uri"]

    def nginx_log_lines(self, needle: str) -> list[str]:
        with open(self.nginx_access_log, encoding="utf-8", errors="replace") as f:
            return [line.rstrip("\n") for line in f if needle in line]


class RecordingClient(AsyncClient):
    """nio's AsyncClient, keeping the status and headers of every HTTP response it received,
    so scenarios can check what the server really sent to the library."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.exchanges: list[tuple[str, str, int, Any]] = []

    async def send(self, method, path, data=None, headers=None, trace_context=None, timeout=None):
        response = await super().send(method, path, data, headers, trace_context, timeout)
        self.exchanges.append((method, path, response.status, response.headers))
        return response

    def last(self, method: str, path_prefix: str) -> tuple[int, Any]:
        for m, p, status, headers in reversed(self.exchanges):
            if m == method and p.startswith(path_prefix):
                return status, headers
        raise Failed(f"nio sent no {method} {path_prefix}…; it sent {[(m, p) for m, p, _, _ in self.exchanges]}")


def parse_mxc(mxc: str) -> tuple[str, str]:
    m = re.fullmatch(r"mxc://([^/]+)/([A-Za-z0-9_-]+)", mxc)
    if not m:
        raise Failed(f"not an mxc URI: {mxc!r}")
    return m.group(1), m.group(2)


# --------------------------------------------------------------------------------------------
# Checks.


def expect(cond: bool, message: str) -> None:
    if not cond:
        raise Failed(message)


def expect_eq(actual: Any, expected: Any, what: str) -> None:
    if actual != expected:
        raise Failed(f"{what}: expected {expected!r}, got {actual!r}")


def expect_status(r: Response, status: int) -> None:
    if r.status != status:
        raise Failed(f"expected {status}: {r.describe()}")


def expect_error(r: Response, status: int, errcode: str) -> None:
    """A Matrix error: that status, a JSON body with that errcode and an `error` string."""
    expect_status(r, status)
    expect(
        r.headers.get("Content-Type", "").startswith("application/json"),
        f"error answer is not JSON ({r.headers.get('Content-Type')!r}): {r.describe()}",
    )
    body = r.json()
    expect_eq(body.get("errcode"), errcode, f"errcode of {r.method} {r.url}")
    expect(isinstance(body.get("error"), str), f"no `error` string: {r.describe()}")


def disposition_filename(value: str) -> str | None:
    """The file name in a Content-Disposition value (RFC 6266: `filename*` wins over `filename`,
    which may be a token or a quoted string)."""
    m = re.search(r"filename\*\s*=\s*utf-8''([^;\s]+)", value, re.IGNORECASE)
    if m:
        return unquote(m.group(1))
    m = re.search(r'filename\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^;\s]+))', value, re.IGNORECASE)
    if m:
        return re.sub(r"\\(.)", r"\1", m.group(1)) if m.group(1) is not None else m.group(2)
    return None


def expect_media_headers(headers: Any, what: str, content_type: str, length: int, disposition: str, filename: str | None) -> None:
    """The headers mxmedia puts on a download (see README, Endpoints). `content_type` is compared
    without parameters (mxmedia adds `charset=UTF-8` to text types, as Synapse does)."""

    def h(name: str) -> str | None:
        return headers.get(name)

    expect_eq((h("Content-Type") or "").split(";")[0].strip(), content_type, f"{what} Content-Type")
    expect_eq(h("Content-Length"), str(length), f"{what} Content-Length")
    cd = h("Content-Disposition") or ""
    expect_eq(cd.split(";")[0].strip(), disposition, f"{what} Content-Disposition type ({cd!r})")
    if filename is not None:
        expect_eq(disposition_filename(cd), filename, f"{what} Content-Disposition file name ({cd!r})")
    csp = h("Content-Security-Policy") or ""
    expect(csp.startswith("sandbox"), f"{what} Content-Security-Policy {csp!r} does not start with sandbox")
    expect_eq(h("Cross-Origin-Resource-Policy"), "cross-origin", f"{what} Cross-Origin-Resource-Policy")
    expect_eq(h("X-Content-Type-Options"), "nosniff", f"{what} X-Content-Type-Options")
    expect_eq(h("Access-Control-Allow-Origin"), "*", f"{what} Access-Control-Allow-Origin")


# --------------------------------------------------------------------------------------------
# Scenarios.

Scenario = Callable[[Context], Awaitable[None]]
SCENARIOS: list[Scenario] = []


def scenario(fn: Scenario) -> Scenario:
    SCENARIOS.append(fn)
    return fn


@scenario
async def nio_upload_download_config(ctx: Context) -> None:
    """matrix-nio logs in through nginx, uploads a JPEG, downloads it (authenticated v1 endpoint),
    reads the media config; mxmedia (not Synapse) answered all three."""
    hs = ctx.hs1
    user_id, password = await ctx.register(hs, "nio")
    photo = (ctx.fixtures / "photo_640x480.jpg").read_bytes()
    client = ctx.nio_client(hs, user_id)
    try:
        login = await client.login(password, device_name="interop")
        expect(isinstance(login, LoginResponse), f"nio login failed: {login}")

        with open(ctx.fixtures / "photo_640x480.jpg", "rb") as f:
            uploaded, keys = await client.upload(f, content_type="image/jpeg", filename="photo_640x480.jpg", filesize=len(photo))
        expect(isinstance(uploaded, UploadResponse), f"nio upload failed: {uploaded}")
        expect(keys is None, "nio encrypted an upload it was not asked to encrypt")
        mxc = uploaded.content_uri
        server_name, media_id = parse_mxc(mxc)
        expect_eq(server_name, hs.server_name, "server name in the content URI")
        status, _ = client.last("POST", "/_matrix/media/v3/upload")
        expect_eq(status, 200, "status of nio's upload")

        downloaded = await client.download(mxc)
        expect(isinstance(downloaded, MemoryDownloadResponse), f"nio download failed: {downloaded}")
        expect(downloaded.body == photo, f"downloaded {len(downloaded.body)} bytes differ from the {len(photo)} uploaded")
        expect_eq(downloaded.content_type, "image/jpeg", "content type nio saw")
        expect_eq(downloaded.filename, "photo_640x480.jpg", "file name nio saw")
        status, headers = client.last("GET", "/_matrix/client/v1/media/download/")
        expect_eq(status, 200, "status of nio's download (authenticated v1 endpoint)")
        expect_media_headers(headers, "nio download", "image/jpeg", len(photo), "inline", "photo_640x480.jpg")

        config = await client.content_repository_config()
        expect(isinstance(config, ContentRepositoryConfigResponse), f"nio media config failed: {config}")
        expect_eq(config.upload_size, ctx.max_upload_size, "m.upload.size")
        status, _ = client.last("GET", "/_matrix/client/v1/media/config")
        expect_eq(status, 200, "status of nio's media config")

        # A file name outside ASCII, with spaces, survives nio -> nginx -> mxmedia -> nio.
        fancy = "été à la plage 📷.jpg"
        with open(ctx.fixtures / "photo_640x480.jpg", "rb") as f:
            uploaded2, _ = await client.upload(f, content_type="image/jpeg", filename=fancy, filesize=len(photo))
        expect(isinstance(uploaded2, UploadResponse), f"nio upload with a non-ASCII file name failed: {uploaded2}")
        downloaded2 = await client.download(uploaded2.content_uri)
        expect(isinstance(downloaded2, MemoryDownloadResponse), f"nio download failed: {downloaded2}")
        expect(downloaded2.body == photo, "bytes differ for the upload with a non-ASCII file name")
        expect_eq(downloaded2.filename, fancy, "non-ASCII file name nio saw")

        # The same request by hand, with a file name in the path: mxmedia's headers again.
        r = await ctx.request("GET", ctx.download_url(hs.base_url, mxc, "renamed.jpg"), token=client.access_token)
        expect_status(r, 200)
        expect(r.body == photo, "bytes differ when downloading with a file name")
        expect_media_headers(r.headers, "download with file name", "image/jpeg", len(photo), "inline", "renamed.jpg")

        # Who answered: nginx logged mxmedia as the upstream of each media request, mxmedia itself
        # has the bytes, and Synapse's own listener does not know the media.
        for needle in ("POST /_matrix/media/v3/upload", f"GET /_matrix/client/v1/media/download/{server_name}/{media_id}", "GET /_matrix/client/v1/media/config"):
            lines = ctx.nginx_log_lines(needle)
            expect(lines, f"nginx logged no request matching {needle!r}")
            expect(all(f"upstream={ctx.mxmedia_upstream} " in line for line in lines),
                   f"nginx sent {needle!r} elsewhere than mxmedia ({ctx.mxmedia_upstream}): {lines}")
        r = await ctx.request("GET", ctx.download_url(ctx.mxmedia_url, mxc), token=client.access_token)
        expect_status(r, 200)
        expect(r.body == photo, "mxmedia's own listener serves different bytes")
        r = await ctx.request("GET", ctx.download_url(hs.synapse_url, mxc), token=client.access_token)
        expect(r.status == 404, f"Synapse's own listener should not have the media: {r.describe()}")
    finally:
        await client.close()


@scenario
async def async_upload_with_homeserver_token(ctx: Context) -> None:
    """Async upload through nginx with real Synapse tokens: create, download waiting on the upload,
    PUT, download; another user of the homeserver cannot PUT to the id; no second PUT."""
    hs = ctx.hs1
    alice, alice_token = await ctx.new_user(hs, "alice")
    bob, bob_token = await ctx.new_user(hs, "bob")
    png = (ctx.fixtures / "tiny_64x64.png").read_bytes()

    before_ms = int(time.time() * 1000)
    r = await ctx.request("POST", f"{hs.base_url}/_matrix/media/v1/create", token=alice_token, json_body={})
    expect_status(r, 200)
    created = r.json()
    mxc = created["content_uri"]
    server_name, media_id = parse_mxc(mxc)
    expect_eq(server_name, hs.server_name, "server name in the created URI")
    expect(isinstance(created.get("unused_expires_at"), int) and created["unused_expires_at"] > before_ms,
           f"unused_expires_at is not a future timestamp in ms: {created}")

    r = await ctx.request("GET", ctx.download_url(hs.base_url, mxc) + "?timeout_ms=200", token=bob_token)
    expect_error(r, 504, "M_NOT_YET_UPLOADED")

    put_url = f"{hs.base_url}/_matrix/media/v3/upload/{quote(server_name, safe='')}/{media_id}?filename=tiny.png"
    r = await ctx.request("PUT", put_url, token=bob_token, body=png, headers={"Content-Type": "image/png"})
    expect_error(r, 403, "M_FORBIDDEN")

    # A download that starts before the content exists, answered once alice's PUT lands.
    waiting = asyncio.create_task(ctx.request("GET", ctx.download_url(hs.base_url, mxc) + "?timeout_ms=20000", token=bob_token))
    await asyncio.sleep(0.3)
    expect(not waiting.done(), f"download did not wait for the upload: {waiting.done() and waiting.result().describe()}")
    r = await ctx.request("PUT", put_url, token=alice_token, body=png, headers={"Content-Type": "image/png"})
    expect_status(r, 200)
    expect_eq(r.json(), {}, "PUT answer")
    r = await asyncio.wait_for(waiting, 30)
    expect_status(r, 200)
    expect(r.body == png, "long-polled download bytes differ from the upload")
    expect_media_headers(r.headers, "long-polled download", "image/png", len(png), "inline", "tiny.png")

    r = await ctx.request("GET", ctx.download_url(hs.base_url, mxc), token=alice_token)
    expect_status(r, 200)
    expect(r.body == png, "download bytes differ from the upload")

    r = await ctx.request("PUT", put_url, token=alice_token, body=b"again", headers={"Content-Type": "text/plain"})
    expect_error(r, 409, "M_CANNOT_OVERWRITE_MEDIA")
    r = await ctx.request("GET", ctx.download_url(hs.base_url, mxc), token=bob_token)
    expect(r.status == 200 and r.body == png, f"content changed after a refused overwrite: {r.describe()}")


@scenario
async def logged_out_token_refused_after_cache_ttl(ctx: Context) -> None:
    """After a nio logout at the homeserver, once mxmedia's token cache TTL has passed, the old
    token is 401 M_UNKNOWN_TOKEN for download and upload."""
    hs = ctx.hs1
    user_id, password = await ctx.register(hs, "carol")
    client = ctx.nio_client(hs, user_id)
    try:
        login = await client.login(password)
        expect(isinstance(login, LoginResponse), f"nio login failed: {login}")
        token = client.access_token
        mxc = await ctx.upload(hs, token, b"logout scenario\n", "text/plain", "note.txt")
        r = await ctx.request("GET", ctx.download_url(hs.base_url, mxc), token=token)
        expect_status(r, 200)  # the token is now in mxmedia's cache
        expect_media_headers(r.headers, "text download", "text/plain", 16, "inline", "note.txt")

        logout = await client.logout()
        expect(isinstance(logout, LogoutResponse), f"nio logout failed: {logout}")
        logged_out_at = time.monotonic()
        r = await ctx.request("GET", f"{hs.synapse_url}/_matrix/client/v3/account/whoami", token=token)
        expect_error(r, 401, "M_UNKNOWN_TOKEN")  # Synapse forgot the token at once

        await asyncio.sleep(max(0.0, logged_out_at + ctx.token_cache_secs + 0.5 - time.monotonic()))
        r = await ctx.request("GET", ctx.download_url(hs.base_url, mxc), token=token)
        expect_error(r, 401, "M_UNKNOWN_TOKEN")
        r = await ctx.request("POST", f"{hs.base_url}/_matrix/media/v3/upload", token=token, body=b"x", headers={"Content-Type": "text/plain"})
        expect_error(r, 401, "M_UNKNOWN_TOKEN")
    finally:
        await client.close()


@scenario
async def guest_downloads_but_cannot_upload(ctx: Context) -> None:
    """A guest registered on the homeserver (kind=guest) downloads media but gets
    403 M_GUEST_ACCESS_FORBIDDEN for upload and async create."""
    hs = ctx.hs1
    _, owner_token = await ctx.new_user(hs, "owner")
    data = os.urandom(300 * 1024)  # above mxmedia's inline limit: served from a blob file
    mxc = await ctx.upload(hs, owner_token, data, "application/octet-stream", "blob.bin")

    r = await ctx.request("POST", f"{hs.base_url}/_matrix/client/v3/register?kind=guest", json_body={})
    expect_status(r, 200)
    guest = r.json()
    guest_token = guest["access_token"]
    r = await ctx.request("GET", f"{hs.base_url}/_matrix/client/v3/account/whoami", token=guest_token)
    expect_status(r, 200)
    expect_eq(r.json().get("is_guest"), True, "Synapse's whoami is_guest for the guest")

    r = await ctx.request("GET", ctx.download_url(hs.base_url, mxc), token=guest_token)
    expect_status(r, 200)
    expect(r.body == data, "guest download bytes differ from the upload")
    expect_media_headers(r.headers, "guest download", "application/octet-stream", len(data), "attachment", "blob.bin")

    r = await ctx.request("POST", f"{hs.base_url}/_matrix/media/v3/upload?filename=g.txt", token=guest_token, body=b"guest", headers={"Content-Type": "text/plain"})
    expect_error(r, 403, "M_GUEST_ACCESS_FORBIDDEN")
    r = await ctx.request("POST", f"{hs.base_url}/_matrix/media/v1/create", token=guest_token, json_body={})
    expect_error(r, 403, "M_GUEST_ACCESS_FORBIDDEN")


@scenario
async def unauthenticated_download_refused(ctx: Context) -> None:
    """Without an access token, the authenticated download endpoints (stable and MSC3916) and the
    media config are 401 M_MISSING_TOKEN through nginx; the frozen legacy download is 404."""
    hs = ctx.hs1
    _, token = await ctx.new_user(hs, "dave")
    data = b"\x89PNG not really\n"
    mxc = await ctx.upload(hs, token, data, "image/png", "p.png")
    server_name, _ = parse_mxc(mxc)

    for url in (
        ctx.download_url(hs.base_url, mxc),
        ctx.download_url(hs.base_url, mxc, "p.png"),
        ctx.download_url(hs.base_url, mxc, prefix="/_matrix/client/unstable/org.matrix.msc3916/media"),
        ctx.download_url(hs.base_url, f"mxc://{server_name}/doesNotExist"),
        f"{hs.base_url}/_matrix/client/v1/media/config",
    ):
        r = await ctx.request("GET", url)
        expect_error(r, 401, "M_MISSING_TOKEN")
        expect_eq(r.headers.get("Access-Control-Allow-Origin"), "*", f"CORS header on {url}")

    r = await ctx.request("GET", ctx.download_url(hs.base_url, mxc, prefix="/_matrix/media/v3"))
    expect_error(r, 404, "M_NOT_FOUND")

    # and the same media with the token, so the 401s above are about the token only
    r = await ctx.request("GET", ctx.download_url(hs.base_url, mxc), token=token)
    expect_status(r, 200)
    expect(r.body == data, "download bytes differ from the upload")


@scenario
async def cors_preflight_without_token(ctx: Context) -> None:
    """Web clients preflight every media request (it carries Authorization); through nginx the
    preflight is answered without a token and allows the method and the Authorization header."""
    hs = ctx.hs1
    sn = quote(hs.server_name, safe="")
    for method, path in (
        ("POST", "/_matrix/media/v3/upload"),
        ("POST", "/_matrix/media/v1/create"),
        ("PUT", f"/_matrix/media/v3/upload/{sn}/someMediaId"),
        ("GET", f"/_matrix/client/v1/media/download/{sn}/someMediaId"),
        ("GET", "/_matrix/client/v1/media/config"),
    ):
        r = await ctx.request("OPTIONS", hs.base_url + path, headers={
            "Origin": "https://client.example",
            "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": "authorization, content-type",
        })
        expect(r.status in (200, 204), f"preflight refused: {r.describe()}")
        expect_eq(r.headers.get("Access-Control-Allow-Origin"), "*", f"Allow-Origin of OPTIONS {path}")
        methods = [m.strip() for m in r.headers.get("Access-Control-Allow-Methods", "").split(",")]
        expect(method in methods, f"OPTIONS {path} does not allow {method}: {methods}")
        allowed = [h.strip().lower() for h in r.headers.get("Access-Control-Allow-Headers", "").split(",")]
        expect("authorization" in allowed and "content-type" in allowed,
               f"OPTIONS {path} does not allow Authorization and Content-Type: {allowed}")


@scenario
async def range_and_etag_through_nginx(ctx: Context) -> None:
    """Players seek with Range and caches revalidate with ETag: through nginx, single ranges are
    206 with the right bytes, unsatisfiable ones 416, If-None-Match 304, If-Range honoured."""
    hs = ctx.hs1
    _, token = await ctx.new_user(hs, "erin")
    data = os.urandom(400 * 1024)
    n = len(data)
    mxc = await ctx.upload(hs, token, data, "video/mp4", "clip.mp4")
    url = ctx.download_url(hs.base_url, mxc)

    r = await ctx.request("GET", url, token=token)
    expect_status(r, 200)
    expect(r.body == data, "full download differs from the upload")
    expect_media_headers(r.headers, "video download", "video/mp4", n, "inline", "clip.mp4")
    etag = r.headers.get("ETag", "")
    expect(re.fullmatch(r'"[^"]+"', etag) is not None, f"no strong ETag: {etag!r}")
    expect_eq(r.headers.get("Accept-Ranges"), "bytes", "Accept-Ranges")

    for spec, start, end in (("bytes=1000-1999", 1000, 1999), ("bytes=-500", n - 500, n - 1), (f"bytes={n - 10}-", n - 10, n - 1)):
        r = await ctx.request("GET", url, token=token, headers={"Range": spec})
        expect_status(r, 206)
        expect_eq(r.headers.get("Content-Range"), f"bytes {start}-{end}/{n}", f"Content-Range for {spec}")
        expect_eq(r.headers.get("Content-Length"), str(end - start + 1), f"Content-Length for {spec}")
        expect(r.body == data[start:end + 1], f"bytes for {spec} differ")

    r = await ctx.request("GET", url, token=token, headers={"Range": f"bytes={n}-"})
    expect_status(r, 416)
    expect_eq(r.headers.get("Content-Range"), f"bytes */{n}", "Content-Range of a 416")

    r = await ctx.request("GET", url, token=token, headers={"If-None-Match": etag})
    expect_status(r, 304)
    expect_eq(r.body, b"", "body of a 304")
    expect_eq(r.headers.get("ETag"), etag, "ETag of a 304")

    r = await ctx.request("GET", url, token=token, headers={"Range": "bytes=0-9", "If-Range": etag})
    expect_status(r, 206)
    expect(r.body == data[:10], "If-Range with the current ETag: wrong bytes")
    r = await ctx.request("GET", url, token=token, headers={"Range": "bytes=0-9", "If-Range": '"stale"'})
    expect_status(r, 200)
    expect(r.body == data, "If-Range with a stale ETag must send the whole content")


@scenario
async def hs2_up_and_federating_with_hs1(ctx: Context) -> None:
    """The second homeserver answers through its nginx, and hs1 and hs2 federate over TLS on
    loopback (hs1 asks hs2 for a profile; hs2 fetches hs1's signing key to check the request)."""
    hs1, hs2 = ctx.hs1, ctx.hs2
    r = await ctx.request("GET", f"{hs2.base_url}/_matrix/federation/v1/version")
    expect_status(r, 200)
    expect_eq(r.json().get("server", {}).get("name"), "Synapse", "hs2 federation server name")
    r = await ctx.request("GET", f"{hs2.base_url}/_matrix/key/v2/server")
    expect_status(r, 200)
    expect_eq(r.json().get("server_name"), hs2.server_name, "hs2 key server_name")

    remote, _ = await ctx.register(hs2, "remote", displayname="Remote Rita")
    _, token = await ctx.new_user(hs1, "asker")
    r = await ctx.request("GET", f"{hs1.base_url}/_matrix/client/v3/profile/{quote(remote, safe='')}", token=token)
    expect_status(r, 200)
    expect_eq(r.json().get("displayname"), "Remote Rita", "hs2 user's display name seen from hs1")



@scenario
async def hs2_user_fetches_hs1_media_over_federation(ctx: Context) -> None:
    """A user of hs2 downloads and thumbnails hs1 media through hs2: hs2's Synapse fetches it from
    mxmedia over authenticated federation (mxmedia checks hs2's X-Matrix signature against the
    keys hs2 publishes; hs2 parses mxmedia's multipart answer)."""
    hs1, hs2 = ctx.hs1, ctx.hs2
    _, t1 = await ctx.new_user(hs1, "fedsrc")
    data = (ctx.fixtures / "photo_640x480.jpg").read_bytes()
    mxc = await ctx.upload(hs1, t1, data, "image/jpeg", "fed photo.jpg")
    _, media_id = parse_mxc(mxc)
    _, t2 = await ctx.new_user(hs2, "fedget")

    r = await ctx.request("GET", ctx.download_url(hs2.base_url, mxc), token=t2)
    expect_status(r, 200)
    expect(r.body == data, "bytes fetched over federation differ from the upload")
    expect_eq(r.headers.get("Content-Type"), "image/jpeg", "Content-Type relayed by hs2")
    served = [l for l in ctx.nginx_log_lines(f"/_matrix/federation/v1/media/download/{media_id}")
              if f"upstream={ctx.mxmedia_upstream}" in l]
    expect(len(served) >= 1 and " 200 " in served[0], f"hs2's federation download did not reach mxmedia: {served}")

    r = await ctx.request("GET", f"{hs2.base_url}/_matrix/client/v1/media/thumbnail/{quote(hs1.server_name, safe='')}/{media_id}"
                          "?width=96&height=96&method=crop", token=t2)
    expect_status(r, 200)
    ctype = r.headers.get("Content-Type", "")
    expect(ctype.startswith("image/"), f"thumbnail Content-Type {ctype!r}")
    from PIL import Image
    with Image.open(io.BytesIO(r.body)) as im:
        expect(im.width <= 96 and im.height <= 96, f"thumbnail is {im.width}x{im.height}")

    # At start mxmedia asked hs1 whether it publishes the key mxmedia signs with, and it does.
    log = Path(ctx.mxmedia_log).read_text(encoding="utf-8", errors="replace")
    expect("the homeserver publishes our signing key" in log,
           "mxmedia did not confirm at start that hs1 publishes its signing key")

    # An unknown id over federation is a clean 404 through hs2, not a hang or a 500.
    r = await ctx.request("GET", ctx.download_url(hs2.base_url, f"mxc://{hs1.server_name}/NoSuchMediaHere"), token=t2)
    expect_error(r, 404, "M_NOT_FOUND")


@scenario
async def hs1_user_fetches_hs2_media_through_mxmedia(ctx: Context) -> None:
    """A user of hs1 downloads and thumbnails hs2 media through mxmedia: mxmedia fetches it from
    hs2's Synapse with X-Matrix signed by hs1's key, which hs2 checks against hs1's published
    keys. A second download is served from mxmedia's store without a new federation request."""
    hs1, hs2 = ctx.hs1, ctx.hs2
    _, t2 = await ctx.new_user(hs2, "remsrc")
    data = (ctx.fixtures / "photo_640x480.jpg").read_bytes()
    mxc = await ctx.upload(hs2, t2, data, "image/jpeg", "remote photo.jpg")
    server_name, media_id = parse_mxc(mxc)
    expect_eq(server_name, hs2.server_name, "hs2 media server name")
    _, t1 = await ctx.new_user(hs1, "remget")

    url = ctx.download_url(hs1.base_url, mxc)
    r = await ctx.request("GET", url, token=t1)
    expect_status(r, 200)
    expect(r.body == data, "remote bytes differ from hs2's upload")
    expect_eq(r.headers.get("Content-Type"), "image/jpeg", "Content-Type of remote media")
    fetches = ctx.nginx_log_lines(f"/_matrix/federation/v1/media/download/{media_id}")
    expect(len(fetches) == 1 and " 200 " in fetches[0], f"expected one federation download at hs2: {fetches}")

    r = await ctx.request("GET", url, token=t1)
    expect_status(r, 200)
    expect(r.body == data, "second download differs")
    fetches = ctx.nginx_log_lines(f"/_matrix/federation/v1/media/download/{media_id}")
    expect(len(fetches) == 1, f"the second download caused another federation request: {fetches}")

    r = await ctx.request("GET", f"{hs1.base_url}/_matrix/client/v1/media/thumbnail/{quote(hs2.server_name, safe='')}/{media_id}"
                          "?width=96&height=96&method=crop", token=t1)
    expect_status(r, 200)
    from PIL import Image
    with Image.open(io.BytesIO(r.body)) as im:
        expect(im.width <= 96 and im.height <= 96, f"remote thumbnail is {im.width}x{im.height}")

    r = await ctx.request("GET", ctx.download_url(hs1.base_url, f"mxc://{hs2.server_name}/NoSuchRemoteMedia"), token=t1)
    expect_error(r, 404, "M_NOT_FOUND")


@scenario
async def hs2_fetches_hs1_media_from_the_bucket_via_a_location_part(ctx: Context) -> None:
    """With hs1's media on an mxmedia whose blobs are in a Garage bucket and whose downloads are
    redirected there (`REDIRECT=presigned`), a client allowing redirects gets a 307 to a presigned
    URL serving the bytes with mxmedia's headers, and hs2's Synapse fetching the media over
    federation gets a multipart answer whose second part is a `Location`, follows it to the
    bucket, and serves its own user the right bytes."""
    s3 = ctx.s3_media
    if not s3:
        raise Failed("run.sh started no mxmedia on Garage (no s3_media in the context)")
    hs1, hs2 = ctx.hs1, ctx.hs2
    data = (ctx.fixtures / "photo_640x480.jpg").read_bytes()
    hs2_log = Path(s3["hs2_log"])

    async def body() -> None:
        _, t1 = await ctx.new_user(hs1, "bucket")
        mxc = await ctx.upload(hs1, t1, data, "image/jpeg", "bucket photo.jpg")
        _, media_id = parse_mxc(mxc)
        url = ctx.download_url(hs1.base_url, mxc) + "?allow_redirect=true"
        async with ctx.session.get(url, headers={"Authorization": f"Bearer {t1}"}, allow_redirects=False) as r:
            expect_eq(r.status, 307, f"redirect of {url}")
            location = r.headers.get("Location", "")
        expect(location.startswith(s3["garage_url"]), f"Location is not the bucket: {location}")
        async with ctx.session.get(location) as r:
            got = await r.read()
            expect_eq(r.status, 200, "presigned GET")
            expect_eq(r.headers.get("Content-Type"), "image/jpeg", "Content-Type from the bucket")
            expect_eq(r.headers.get("Content-Disposition"), "inline; filename*=utf-8''bucket%20photo.jpg",
                      "Content-Disposition from the bucket")
        expect(got == data, "bytes from the bucket differ from the upload")

        redirected_before = hs2_log.read_text(errors="replace").count("File download redirected")
        _, t2 = await ctx.new_user(hs2, "bucketget")
        r = await ctx.request("GET", ctx.download_url(hs2.base_url, mxc), token=t2)
        expect_status(r, 200)
        expect(r.body == data, "hs2 served other bytes than hs1's upload")
        expect_eq(r.headers.get("Content-Type"), "image/jpeg", "Content-Type hs2 serves")
        fetches = ctx.nginx_log_lines(f"/_matrix/federation/v1/media/download/{media_id}")
        expect(len(fetches) == 1 and " 200 " in fetches[0] and s3["upstream"] in fetches[0],
               f"expected one federation download answered by the bucket-backed mxmedia: {fetches}")
        redirected = hs2_log.read_text(errors="replace").count("File download redirected")
        expect(redirected == redirected_before + 1, "hs2's Synapse did not follow a Location part")

    await with_nginx_variant(ctx, f"proxy_pass http://{ctx.mxmedia_upstream};", f"proxy_pass http://{s3['upstream']};", body)


@scenario
async def appservice_token_as_synapse_treats_it(ctx: Context) -> None:
    """An application service's token works for its sender and, with `user_id`, for users in its
    namespace; masquerading as a user outside it is 403, as Synapse's own media repo answers."""
    hs = ctx.hs1
    token = ctx.appservice_token
    data = os.urandom(2048)
    mxc = await ctx.upload(hs, token, data, "application/octet-stream", "bridged.bin")
    r = await ctx.request("GET", ctx.download_url(hs.base_url, mxc), token=token)
    expect_status(r, 200)
    expect(r.body == data, "appservice download differs")

    localpart = f"bridge_{secrets.token_hex(4)}"
    r = await ctx.request("POST", f"{hs.base_url}/_matrix/client/v3/register", token=token,
                          json_body={"type": "m.login.application_service", "username": localpart})
    expect_status(r, 200)
    user_id = r.json()["user_id"]
    url = f"{hs.base_url}/_matrix/media/v3/upload?user_id={quote(user_id, safe='')}"
    r = await ctx.request("POST", url, token=token, body=data, headers={"Content-Type": "application/octet-stream"})
    expect_status(r, 200)
    expect(r.json().get("content_uri", "").startswith(f"mxc://{hs.server_name}/"), f"upload as {user_id}: {r.describe()}")

    outsider = f"@not_bridged_{secrets.token_hex(4)}:{hs.server_name}"
    url = f"{hs.base_url}/_matrix/media/v3/upload?user_id={quote(outsider, safe='')}"
    r = await ctx.request("POST", url, token=token, body=data, headers={"Content-Type": "application/octet-stream"})
    expect_error(r, 403, "M_FORBIDDEN")


@scenario
async def upload_size_limit_through_nginx(ctx: Context) -> None:
    """An upload of exactly m.upload.size goes through nginx and mxmedia intact; one byte more is
    413, whether announced by Content-Length or sent chunked, every time (the client reads the
    answer, not a reset connection), and stores nothing."""
    hs = ctx.hs1
    _, token = await ctx.new_user(hs, "big")
    data = os.urandom(ctx.max_upload_size)
    mxc = await ctx.upload(hs, token, data, "application/octet-stream", "big.bin")
    r = await ctx.request("HEAD", ctx.download_url(hs.base_url, mxc), token=token)
    expect_status(r, 200)
    expect_eq(r.headers.get("Content-Length"), str(len(data)), "HEAD Content-Length of the largest upload")
    expect_eq(r.body, b"", "HEAD body")
    r = await ctx.request("GET", ctx.download_url(hs.base_url, mxc), token=token)
    expect_status(r, 200)
    expect(r.body == data, "the largest upload came back different")

    async def chunked(total: int):
        for start in range(0, total, 1 << 20):
            yield b"\0" * min(1 << 20, total - start)

    upload_url = f"{hs.base_url}/_matrix/media/v3/upload"
    over = ctx.max_upload_size + 1
    # Repeated: mxmedia answers before the body is in, and a client that is still sending
    # reads the 413 only if the rest of the body is drained rather than the connection reset.
    for attempt in range(1, 6):
        for how, body in (("Content-Length", b"\0" * over), ("chunked", None)):
            hdrs = {"Authorization": f"Bearer {token}", "Content-Type": "application/octet-stream"}
            async with ctx.session.post(upload_url, data=body if body is not None else chunked(over), headers=hdrs) as resp:
                r = Response("POST", f"{upload_url} ({how}, {over} bytes, attempt {attempt})", resp.status,
                             resp.headers, await resp.read())
            expect_too_large(r)

    # Whatever reached mxmedia of the refused bodies is gone from its temp dir.
    tmp = ctx.mxmedia_data_dir / "tmp"
    deadline = time.monotonic() + 5
    while (left := sorted(p.name for p in tmp.iterdir()) if tmp.is_dir() else []) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    expect(not left, f"refused uploads left temp files in {tmp}: {left}")


async def run_import(ctx: Context, m: dict[str, str], *extra: str) -> tuple[dict[str, str], str]:
    """Runs `mxmedia import synapse --remote` for the homeserver of `m` (its Synapse running;
    into its running mxmedia unless `--data-dir` is given); returns the summary's fields and
    the whole output."""
    proc = await asyncio.create_subprocess_exec(
        *import_command(m, *extra), cwd=m["work_dir"], stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await proc.communicate()
    text = out.decode("utf-8", "replace")
    expect_eq(proc.returncode, 0, f"mxmedia import exit status; output:\n{text}")
    fields = {}
    for line in text.splitlines():
        key, sep, value = line.strip().partition(":")
        if sep and value.strip():
            fields[key] = value.split()[0]
    return fields, text


def import_command(m: dict[str, str], *extra: str) -> list[str]:
    return [m["mxmedia"], "import", "synapse", "--media-store", m["media_store"], "--database", m["database"],
            "--remote", *extra]


def blob_files(data_dir: Path) -> list[str]:
    """The names (sha256) of the blob files in a data dir, sorted."""
    return sorted(p.name for p in (data_dir / "blobs").rglob("*") if p.is_file())


def staging_remote_file(data_dir: Path, min_size: int) -> bool:
    """Whether an import is copying a file of at least `min_size` bytes into its staging dir
    (tmp/import-PID/N). The import stages the remote cache's rows only once it has committed
    and flushed the local table's batch."""
    try:
        return any(f.stat().st_size >= min_size for d in (data_dir / "tmp").glob("import-*") for f in d.iterdir())
    except OSError:  # a staged file committed (renamed) between the listing and the stat
        return False


async def killed_import_ends_as_a_whole_one(ctx: Context, m: dict[str, str], whole: dict[str, str],
                                            whole_blobs: list[str], remote_size: int) -> None:
    """An import into a fresh data dir, killed with SIGKILL once it has committed its first
    batch (the local table) and while it copies the remote cache's file of `remote_size`
    bytes, holds only whole blobs, and run again ends with what the uninterrupted import
    `whole` stored: every item in, the same blob files, no staged file left."""
    for attempt in range(3):
        data_dir = Path(m["work_dir"]) / f"killed-{attempt}"
        proc = await asyncio.create_subprocess_exec(
            *import_command(m, "--data-dir", str(data_dir)), cwd=m["work_dir"], stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while proc.returncode is None and time.monotonic() < deadline:
            if staging_remote_file(data_dir, remote_size // 2):
                proc.kill()
                break
            await asyncio.sleep(0.001)
        rc = await proc.wait()
        partial = blob_files(data_dir)
        if rc == -9 and set(partial) < set(whole_blobs):
            break
        # It finished (or was killed after its last commit) before the kill landed: again.
        expect(rc in (0, -9), f"the import to be killed failed on its own (exit {rc})")
    else:
        raise Failed("three imports ended before they could be killed between two batches")
    expect(bool(partial) and set(partial) <= set(whole_blobs),
           f"after the kill, blobs that the whole import does not have: {sorted(set(partial) - set(whole_blobs))}")
    resumed, text = await run_import(ctx, m, "--data-dir", str(data_dir))
    expect_eq(int(resumed["imported"]) + int(resumed["already there"]) + int(resumed["quarantined"]),
              int(whole["imported"]) + int(whole["quarantined"]), f"items in after the resumed run; {text}")
    expect(int(resumed["already there"]) >= 1, f"the resumed run found nothing of the killed one's; {text}")
    for key in ("missing file", "hash mismatch", "failed"):
        expect_eq(resumed[key], "0", f"{key} in the resumed run; {text}")
    expect_eq(blob_files(data_dir), whole_blobs, "blob files after the killed and resumed import")
    staged = sorted(p.name for p in (data_dir / "tmp").iterdir()) if (data_dir / "tmp").is_dir() else []
    expect(not staged, f"staged files left in {data_dir / 'tmp'}: {staged}")


MEDIA_INFO_FIELDS = ("created_ts", "media_length", "media_type", "upload_name", "user_id", "quarantined_by",
                     "safe_from_quarantine")


async def media_info(ctx: Context, base_url: str, mxc: str, admin_token: str) -> dict[str, Any]:
    """The fields of Synapse's admin media_info (from `base_url`) that an import carries over."""
    server_name, media_id = parse_mxc(mxc)
    r = await ctx.request("GET", f"{base_url}/_synapse/admin/v1/media/{quote(server_name, safe='')}/{media_id}",
                          token=admin_token)
    expect_status(r, 200)
    info = r.json()["media_info"]
    fields = {k: info.get(k) for k in MEDIA_INFO_FIELDS}
    # Synapse on SQLite answers its boolean as 0/1, on PostgreSQL as false/true.
    if fields["safe_from_quarantine"] is not None:
        fields["safe_from_quarantine"] = bool(fields["safe_from_quarantine"])
    return fields


async def move_synapse_media(ctx: Context, hs: Homeserver, m: dict[str, str]) -> None:
    """The move, against the real Synapse `hs` running its own media repo, into its own mxmedia
    (`m`): see import_synapse_media_then_switch_the_proxy."""
    hs1 = ctx.hs1
    if not m:
        raise Failed(f"run.sh set up no mxmedia for {hs.name}")
    _, t2 = await ctx.new_user(hs, "mover")
    admin, admin_password = await ctx.register(hs, "moveadmin", admin=True)
    admin_token = await ctx.login(hs, admin, admin_password)
    photo = (ctx.fixtures / "photo_640x480.jpg").read_bytes()
    large = os.urandom(300_000)
    items = [  # (bytes, content type, file name)
        (photo, "image/jpeg", "holiday.jpg"),
        ("a note ✓".encode(), "text/plain; charset=utf-8", "Grüße ☃ 日本.txt"),
        (large, "application/octet-stream", "large.bin"),
    ]
    mxcs = [await ctx.upload(hs, t2, data, ctype, name) for data, ctype, name in items]
    quarantined = await ctx.upload(hs, t2, b"to be quarantined", "text/plain", "bad.txt")
    r = await ctx.request("POST", f"{hs.synapse_url}/_synapse/admin/v1/media/quarantine/"
                          f"{quote(hs.server_name, safe='')}/{parse_mxc(quarantined)[1]}", token=admin_token, json_body={})
    expect_status(r, 200)
    # Protected from quarantine with Synapse's admin API: a boolean Synapse sets true.
    r = await ctx.request("POST", f"{hs.synapse_url}/_synapse/admin/v1/media/protect/{parse_mxc(mxcs[2])[1]}",
                          token=admin_token, json_body={})
    expect_status(r, 200)
    r = await ctx.request("POST", f"{hs.base_url}/_matrix/media/v1/create", token=t2)
    expect_status(r, 200)
    pending = r.json()["content_uri"]
    # hs1 media that the Synapse fetches over federation and keeps in its remote cache; large
    # enough that an import spends a moment on it after committing the local media.
    _, t1 = await ctx.new_user(hs1, "moved")
    remote_bytes = os.urandom(3_000_000)
    remote = await ctx.upload(hs1, t1, remote_bytes, "application/pdf", "remote.pdf")
    r = await ctx.request("GET", ctx.download_url(hs.base_url, remote), token=t2)
    expect_status(r, 200)
    # What Synapse's admin API and its deprecated unauthenticated endpoint say of each item,
    # for mxmedia to say the same after the move. (Quarantined media is imported as a blocked
    # id without its bytes, which mxmedia's admin API does not describe.)
    served = mxcs + [remote]
    synapse_info = [await media_info(ctx, hs.synapse_url, mxc, admin_token) for mxc in served]
    unauthenticated = [(await ctx.request("GET", ctx.download_url(hs.base_url, mxc, prefix="/_matrix/media/v3"))).status
                       for mxc in served + [quarantined]]

    data_dir = Path(m["data_dir"])
    first, text = await run_import(ctx, m)
    expect(int(first["imported"]) >= 4, f"first import: {text}")
    expect(int(first["quarantined"]) >= 1, f"first import: {text}")
    await killed_import_ends_as_a_whole_one(ctx, m, first, blob_files(data_dir), len(remote_bytes))
    between = await ctx.upload(hs, t2, os.urandom(20_000), "image/png", "between.png")
    second, text = await run_import(ctx, m)
    expect_eq(second["imported"], "1", f"second import brings in only the upload made since; {text}")
    third, text = await run_import(ctx, m)
    expect_eq(third["imported"], "0", f"third import; {text}")

    upstream = f"upstream={hs.server_name.rsplit(':', 1)[0]}:8090"
    proc = await asyncio.create_subprocess_exec(m["route"], "mxmedia")
    expect_eq(await proc.wait(), 0, f"route-{hs.name}-media mxmedia")
    try:
        # nginx's new workers take over within moments; until then Synapse still answers.
        deadline = time.monotonic() + 10
        while True:
            mark = secrets.token_hex(4)
            await ctx.request("GET", f"{hs.base_url}/_matrix/client/v1/media/config?{mark}", token=t2)
            if any(upstream in line for line in ctx.nginx_log_lines(mark)):
                break
            expect(time.monotonic() < deadline, f"nginx did not route {hs.name}'s media paths to mxmedia")
            await asyncio.sleep(0.2)
        for (data, ctype, name), mxc in zip(items + [(remote_bytes, "application/pdf", "remote.pdf")], mxcs + [remote]):
            server_name, media_id = parse_mxc(mxc)
            needle = f"/_matrix/client/v1/media/download/{server_name}/{media_id}"
            logged = len(ctx.nginx_log_lines(needle))
            r = await ctx.request("GET", ctx.download_url(hs.base_url, mxc), token=t2)
            expect_status(r, 200)
            expect(r.body == data, f"{name}: bytes differ after the move")
            expect_eq(r.headers.get("Content-Type"), ctype, f"{name}: Content-Type")
            expect_eq(disposition_filename(r.headers.get("Content-Disposition", "")), name, f"{name}: file name")
            # nginx logs a request once it is done, a moment after the client has the answer.
            deadline = time.monotonic() + 5
            while len(lines := ctx.nginx_log_lines(needle)) <= logged and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            expect(len(lines) > logged and upstream in lines[-1], f"{name}: served by mxmedia: {lines[logged:]}")
        r = await ctx.request("GET", ctx.download_url(hs.base_url, between), token=t2)
        expect_status(r, 200)
        for mxc, before in zip(served, synapse_info):
            after = await media_info(ctx, hs.base_url, mxc, admin_token)
            expect_eq(after, before, f"admin media_info of {mxc} from mxmedia vs from Synapse")
        for mxc, status in zip(served + [quarantined], unauthenticated):
            r = await ctx.request("GET", ctx.download_url(hs.base_url, mxc, prefix="/_matrix/media/v3"))
            expect_eq(r.status, status, f"unauthenticated download of {mxc} after the move ({r.describe()})")
        from PIL import Image
        for method, width, height in (("crop", 96, 96), ("scale", 320, 240)):
            r = await ctx.request("GET", f"{hs.base_url}/_matrix/client/v1/media/thumbnail/{quote(hs.server_name, safe='')}/"
                                  f"{parse_mxc(mxcs[0])[1]}?width={width}&height={height}&method={method}", token=t2)
            expect_status(r, 200)
            with Image.open(io.BytesIO(r.body)) as im:
                expect(im.width <= width and im.height <= height, f"{method} thumbnail is {im.width}x{im.height}")
        for what, mxc in (("quarantined", quarantined), ("pending", pending)):
            r = await ctx.request("GET", ctx.download_url(hs.base_url, mxc), token=t2)
            expect_error(r, 404, "M_NOT_FOUND")
        # New uploads now land in mxmedia, under the homeserver's name.
        after = await ctx.upload(hs, t2, b"after the move", "text/plain", "after.txt")
        r = await ctx.request("GET", ctx.download_url(hs.base_url, after), token=t2)
        expect_status(r, 200)
        expect(r.body == b"after the move", "upload after the move")
    finally:
        proc = await asyncio.create_subprocess_exec(m["route"], "synapse")
        await proc.wait()
        await asyncio.sleep(1)


@scenario
async def import_synapse_media_then_switch_the_proxy(ctx: Context) -> None:
    """hs2 runs Synapse's own media repo on SQLite. Its media (a JPEG, a unicode file name, a
    file over the inline threshold, an async upload left pending, an item quarantined with
    Synapse's admin API, hs1 media Synapse cached) is imported into a fresh mxmedia while both
    run; an import killed midway and run again ends as the whole one did; a second run imports
    only what was uploaded in between, a third nothing. With hs2's media paths routed to
    mxmedia (nginx reload), every item downloads with the same bytes, names and types, the JPEG
    has thumbnails, the quarantined item and the pending id answer 404, and routing back works."""
    await move_synapse_media(ctx, ctx.hs2, ctx.hs2_media)


@scenario
async def import_from_synapse_on_postgresql(ctx: Context) -> None:
    """The same move from hs3, a Synapse running on PostgreSQL (`database: psycopg2`), imported
    from its postgresql:// URL while it serves: what Synapse itself wrote there (booleans,
    NULLs, its quarantine and pending rows) comes over as from SQLite."""
    if ctx.hs3 is None:
        raise Failed("run.sh set up no hs3 (the Synapse on PostgreSQL)")
    await move_synapse_media(ctx, ctx.hs3, ctx.hs3_media)


async def start_fresh_synapse(ctx: Context, dir: Path, port: int) -> tuple[asyncio.subprocess.Process, Homeserver]:
    """A third Synapse with hs2's server name and signing key but its own empty SQLite database
    and media store, listening on `port` of hs2's address: the Synapse an admin moves back to."""
    hs2 = ctx.hs2
    config = (Path(ctx.hs2_media["database"]).parent / "homeserver.yaml").read_text()
    secret = secrets.token_hex(24)
    for key, value in (("pid_file", f'"{dir}/homeserver.pid"'), ("media_store_path", f'"{dir}/media_store"'),
                       ("registration_shared_secret", f'"{secret}"'), ("enable_media_repo", "true")):
        config, n = re.subn(rf"(?m)^{key}: .*$", f"{key}: {value}", config)
        expect_eq(n, 1, f"{key} in hs2's homeserver.yaml")
    config, n = re.subn(r'(?m)^    database: ".*"$', f'    database: "{dir}/homeserver.db"', config)
    expect_eq(n, 1, "database path in hs2's homeserver.yaml")
    config, n = re.subn(r"(?m)^  - port: 8008$", f"  - port: {port}", config)
    expect_eq(n, 1, "listener port in hs2's homeserver.yaml")
    # Synapse only serves thumbnails it has rows for, unless it may make them on demand.
    config += "dynamic_thumbnails: true\n"
    (dir / "homeserver.yaml").write_text(config)
    log = open(dir / "homeserver.log", "wb")
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "synapse.app.homeserver", "-c",
                                                str(dir / "homeserver.yaml"), stdout=log, stderr=log)
    log.close()
    host = hs2.synapse_url.rsplit(":", 1)[0]
    url = f"{host}:{port}"
    deadline = time.monotonic() + 90
    while True:
        try:
            r = await ctx.request("GET", f"{url}/health")
            if r.status == 200:
                break
        except aiohttp.ClientError:
            pass
        if proc.returncode is not None or time.monotonic() > deadline:
            tail = (dir / "homeserver.log").read_text(errors="replace")[-2000:]
            raise Failed(f"the fresh Synapse did not come up; its log ends:\n{tail}")
        await asyncio.sleep(0.5)
    return proc, Homeserver(name="hs2-back", server_name=hs2.server_name, base_url=url, synapse_url=url,
                            shared_secret=secret)


@scenario
async def export_to_a_fresh_synapse(ctx: Context) -> None:
    """The way back: media uploaded through hs2's Synapse (imported into mxmedia2) and media
    uploaded to mxmedia2 itself are exported from the running mxmedia2 with `mxmedia export
    synapse`; a fresh Synapse with hs2's server name, given the exported media store and the SQL
    loaded (twice) into its own SQLite database, serves every item through its client API with
    the same bytes, name and type, and a thumbnail of the JPEG."""
    hs2, m = ctx.hs2, ctx.hs2_media
    _, t2 = await ctx.new_user(hs2, "goback")
    photo = (ctx.fixtures / "photo_640x480.jpg").read_bytes()
    items = [  # (bytes, content type, file name)
        (photo, "image/jpeg", "back home.jpg"),
        ("back ✓".encode(), "text/plain; charset=utf-8", "l'été \"☃\" 日本.txt"),
        (os.urandom(300_000), "application/octet-stream", "large back.bin"),
    ]
    mxcs = [await ctx.upload(hs2, t2, data, ctype, name) for data, ctype, name in items]
    _, text = await run_import(ctx, m)
    # One more uploaded to mxmedia2 directly (its own listener): native media goes back too.
    # (Not text/*: Synapse adds a charset to those it serves.)
    native = (os.urandom(5_000), "application/pdf", "native ✓.pdf")
    mxmedia2 = hs2.synapse_url.rsplit(":", 1)[0] + ":8090"
    r = await ctx.request("POST", f"{mxmedia2}/_matrix/media/v3/upload?filename={quote(native[2])}", token=t2,
                          body=native[0], headers={"Content-Type": native[1]})
    expect_status(r, 200)
    items.append(native)
    mxcs.append(r.json()["content_uri"])

    dir = Path(m["work_dir"]).parent / "hs2-back"  # not hs3: that is the Synapse on PostgreSQL
    dir.mkdir(exist_ok=True)
    sql = dir / "media.sql"
    proc = await asyncio.create_subprocess_exec(
        m["mxmedia"], "export", "synapse", "--media-store", str(dir / "media_store"), "--sql", str(sql),
        "--dialect", "sqlite", cwd=m["work_dir"], stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await proc.communicate()
    text = out.decode("utf-8", "replace")
    expect_eq(proc.returncode, 0, f"mxmedia export exit status; output:\n{text}")
    expect("from the running server" in text, f"export from the running mxmedia2: {text}")

    synapse, back_hs = await start_fresh_synapse(ctx, dir, 8018)
    try:
        import sqlite3
        db = sqlite3.connect(dir / "homeserver.db", timeout=30)
        for _ in range(2):
            db.executescript(sql.read_text())
        db.close()
        user, password = await ctx.register(back_hs, "back")
        t3 = await ctx.login(back_hs, user, password)
        for (data, ctype, name), mxc in zip(items, mxcs):
            r = await ctx.request("GET", ctx.download_url(back_hs.base_url, mxc), token=t3)
            expect_status(r, 200)
            expect(r.body == data, f"{name}: bytes differ on the fresh Synapse")
            expect_eq(r.headers.get("Content-Type"), ctype, f"{name}: Content-Type")
            expect_eq(disposition_filename(r.headers.get("Content-Disposition", "")), name, f"{name}: file name")
        r = await ctx.request("GET", f"{back_hs.base_url}/_matrix/client/v1/media/thumbnail/{quote(hs2.server_name, safe='')}/"
                              f"{parse_mxc(mxcs[0])[1]}?width=96&height=96&method=crop", token=t3)
        expect_status(r, 200)
    finally:
        synapse.terminate()
        try:
            await asyncio.wait_for(synapse.wait(), 15)
        except asyncio.TimeoutError:
            synapse.kill()
            await synapse.wait()


def expect_too_large(r: Response) -> None:
    """413 for an upload over the limit: the README's nginx config leaves the limit to mxmedia,
    so clients get the Matrix error (with CORS headers), not an nginx HTML page."""
    expect_error(r, 413, "M_TOO_LARGE")
    expect(r.headers.get("Access-Control-Allow-Origin") == "*", f"413 without CORS: {r.describe()}")

# --------------------------------------------------------------------------------------------
# `mxmedia doctor`: passes on this setup; each proxy or key mistake fails exactly its own check.

DOCTOR_ADMIN = "doctor-admin"  # listed in MXMEDIA_AUTH__ADMINS by run.sh
_doctor_token: list[str] = []


async def doctor_token(ctx: Context) -> str:
    """The access token of @doctor-admin on hs1, registered on first use."""
    if not _doctor_token:
        hs = ctx.hs1
        url = f"{hs.synapse_url}/_synapse/admin/v1/register"
        r = await ctx.request("GET", url)
        expect_status(r, 200)
        nonce, password = r.json()["nonce"], secrets.token_urlsafe(12)
        mac = hmac.new(hs.shared_secret.encode(), digestmod=hashlib.sha1)
        mac.update(f"{nonce}\x00{DOCTOR_ADMIN}\x00{password}\x00notadmin".encode())
        body = {"nonce": nonce, "username": DOCTOR_ADMIN, "password": password, "admin": False, "mac": mac.hexdigest()}
        expect_status(await ctx.request("POST", url, json_body=body), 200)
        _doctor_token.append(await ctx.login(hs, f"@{DOCTOR_ADMIN}:{hs.server_name}", password))
    return _doctor_token[0]


async def run_doctor(ctx: Context, *env: str) -> tuple[int, dict[str, Any]]:
    """Runs `mxmedia doctor --json --token …` with mxmedia's environment (plus `env`)."""
    d = ctx.doctor
    cmd = [d["env"], *env, d["bin"], "--config", d["config"], "doctor", "--json", "--token", await doctor_token(ctx)]
    proc = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    try:
        report = json.loads(out)
    except ValueError:
        raise Failed(f"doctor printed no JSON (exit {proc.returncode}): {out[:500]!r} {err[:500]!r}") from None
    return proc.returncode, report


def doctor_lines(report: dict[str, Any]) -> str:
    return "\n".join(f"  {c['status']:4} {c['id']}: {c['detail']}" + (f" — fix: {c['fix']}" if c.get("fix") else "") for c in report["checks"])


def expect_doctor(rc: int, report: dict[str, Any], failing: str | None, fix_contains: str = "", detail_contains: str = "") -> None:
    """Doctor failed exactly the check `failing` (None: nothing), with the expected fix."""
    failed = [c["id"] for c in report["checks"] if c["status"] == "fail"]
    expect_eq(failed, [failing] if failing else [], f"failed doctor checks\n{doctor_lines(report)}\n")
    expect_eq(rc, 1 if failing else 0, "doctor's exit status")
    if failing:
        check = next(c for c in report["checks"] if c["id"] == failing)
        expect(fix_contains in (check.get("fix") or ""), f"fix of {failing} lacks {fix_contains!r}: {check}")
        expect(detail_contains in check["detail"], f"{failing} does not say {detail_contains!r}: {check}")


async def with_nginx_variant(ctx: Context, old: str, new: str, body: Callable[[], Awaitable[None]]) -> None:
    """Runs `body` with `old` replaced by `new` in hs1's nginx locations, then restores them."""
    path = Path(ctx.doctor["nginx_locations"])
    original = path.read_text()
    expect(old in original, f"{path} has no {old!r}")

    async def reload() -> None:
        proc = await asyncio.create_subprocess_exec(*ctx.doctor["nginx_reload"])
        expect_eq(await proc.wait(), 0, "nginx -s reload")
        await asyncio.sleep(1.0)  # new workers take over; the old ones finish their connections

    path.write_text(original.replace(old, new, 1))
    try:
        await reload()
        await body()
    finally:
        path.write_text(original)
        await reload()


@scenario
async def doctor_passes_on_the_suite_setup(ctx: Context) -> None:
    """On the suite's nginx + Synapse + mxmedia, doctor (with a token) fails nothing: every
    media prefix reaches mxmedia with the right headers, the 1 MiB upload round trip works,
    the published key verifies our own signed federation request."""
    rc, report = await run_doctor(ctx)
    expect_doctor(rc, report, None)
    passed = {c["id"] for c in report["checks"] if c["status"] == "pass"}
    for must in ("route.client_v1", "route.client_msc3916", "route.media_v3", "route.media_r0", "route.federation_v1",
                 "route.headers", "upload", "upload.download", "upload.thumbnail", "upload.delete",
                 "federation.signing_key", "federation.signed_request", "discovery.federation", "local.homeserver"):
        expect(must in passed, f"{must} did not pass:\n{doctor_lines(report)}")


@scenario
async def doctor_media_path_not_routed(ctx: Context) -> None:
    """The MSC3916 prefix left out of nginx's media location: doctor fails that route only,
    naming the regex alternative to add."""
    async def body() -> None:
        rc, report = await run_doctor(ctx)
        expect_doctor(rc, report, "route.client_msc3916", r"client/unstable/org\.matrix\.msc3916/media/")
    await with_nginx_variant(ctx, r"client/unstable/org\.matrix\.msc3916/media/|", "", body)


@scenario
async def doctor_host_header_not_passed(ctx: Context) -> None:
    """nginx's media location without `proxy_set_header Host`: mxmedia sees its upstream
    address; doctor fails the headers check only, naming the line."""
    async def body() -> None:
        rc, report = await run_doctor(ctx)
        expect_doctor(rc, report, "route.headers", "proxy_set_header Host $host;")
    await with_nginx_variant(ctx, "    proxy_set_header Host $host;\n", "", body)


@scenario
async def doctor_federation_media_path_to_homeserver(ctx: Context) -> None:
    """The federation media prefix routed to Synapse: doctor fails that route only (the signed
    self-request is skipped, not failed twice)."""
    async def body() -> None:
        rc, report = await run_doctor(ctx)
        expect_doctor(rc, report, "route.federation_v1", "federation/v1/media/")
    await with_nginx_variant(ctx, "|federation/v1/media/", "", body)


@scenario
async def doctor_nginx_default_body_limit(ctx: Context) -> None:
    """nginx's default client_max_body_size (1m) on the media location: the 1 MiB test upload
    gets nginx's HTML 413; doctor says the proxy caps upload size and names the nginx line."""
    async def body() -> None:
        rc, report = await run_doctor(ctx)
        expect_doctor(rc, report, "upload", "client_max_body_size 0;", "the proxy caps upload size")
    await with_nginx_variant(ctx, "    client_max_body_size 0;\n", "", body)


@scenario
async def doctor_unpublished_signing_key(ctx: Context) -> None:
    """mxmedia configured with a key hs1 does not publish: doctor fails the published-key check
    only, saying where the key line must go."""
    d = ctx.doctor
    key = Path(d["work"]) / f"doctor-unpublished-{secrets.token_hex(4)}.key"
    proc = await asyncio.create_subprocess_exec(d["env"], d["bin"], "generate-key", str(key), stdout=asyncio.subprocess.DEVNULL)
    expect_eq(await proc.wait(), 0, "mxmedia generate-key")
    rc, report = await run_doctor(ctx, f"MXMEDIA_FEDERATION__SIGNING_KEY_PATH={key}")
    expect_doctor(rc, report, "federation.signing_key", "signing key file")


# --------------------------------------------------------------------------------------------
# Runner.


def reason_of(e: BaseException) -> str:
    if isinstance(e, Failed):
        return str(e)
    if isinstance(e, (asyncio.TimeoutError, TimeoutError)) and not str(e):
        return f"timed out after {SCENARIO_TIMEOUT_SECS}s"
    return f"{type(e).__name__}: {e}"


@scenario
async def synapse_admin_quarantines_a_real_room_through_mxmedia(ctx: Context) -> None:
    """Synapse's admin media API through nginx reaches mxmedia: a real Synapse admin (told
    apart by asking Synapse with their own token) quarantines the media of a real room, which
    mxmedia learns from Synapse's room media list; a plain user is refused with 403."""
    hs = ctx.hs1
    admin_id, admin_password = await ctx.register(hs, "modadmin", admin=True)
    admin = await ctx.login(hs, admin_id, admin_password)
    _, poster = await ctx.new_user(hs, "spammer")
    data = os.urandom(5000)
    mxc = await ctx.upload(hs, poster, data, "image/png", "spam.png")
    kept = await ctx.upload(hs, poster, os.urandom(5000), "image/png", "kept.png")
    _, media_id = parse_mxc(mxc)
    r = await ctx.request("POST", f"{hs.base_url}/_matrix/client/v3/createRoom", token=poster,
                          json_body={"preset": "public_chat"})
    expect_status(r, 200)
    room = r.json()["room_id"]
    r = await ctx.request("PUT", f"{hs.base_url}/_matrix/client/v3/rooms/{quote(room, safe='')}/send/m.room.message/t{secrets.token_hex(4)}",
                          token=poster, json_body={"msgtype": "m.image", "body": "spam.png", "url": mxc})
    expect_status(r, 200)

    info = f"{hs.base_url}/_synapse/admin/v1/media/{quote(hs.server_name, safe='')}/{media_id}"
    r = await ctx.request("GET", info, token=poster)
    expect_error(r, 403, "M_FORBIDDEN")
    r = await ctx.request("GET", info, token=admin)
    expect_status(r, 200)
    expect_eq(r.json()["media_info"]["media_length"], 5000, "media_info.media_length")
    served = [l for l in ctx.nginx_log_lines(f"/_synapse/admin/v1/media/{hs.server_name}/{media_id}")
              if f"upstream={ctx.mxmedia_upstream}" in l]
    expect(len(served) >= 1, f"the admin media API did not reach mxmedia: {served}")

    quarantine = f"{hs.base_url}/_synapse/admin/v1/room/{quote(room, safe='')}/media/quarantine"
    r = await ctx.request("POST", quarantine, token=poster, json_body={})
    expect_error(r, 403, "M_FORBIDDEN")
    r = await ctx.request("POST", quarantine, token=admin, json_body={})
    expect_status(r, 200)
    expect_eq(r.json(), {"num_quarantined": 1}, "room quarantine answer")
    r = await ctx.request("GET", ctx.download_url(hs.base_url, mxc), token=poster)
    expect_error(r, 404, "M_NOT_FOUND")
    r = await ctx.request("GET", ctx.download_url(hs.base_url, kept), token=poster)
    expect_status(r, 200)
    r = await ctx.request("GET", info, token=admin)
    expect_eq(r.json()["media_info"]["quarantined_by"], admin_id, "quarantined_by")



class Synadm:
    """synadm, configured non-interactively (a config file, as `synadm config` would write it)
    for one account on one homeserver, run as a subprocess exactly as an admin runs it."""

    def __init__(self, ctx: Context, hs: Homeserver, user_id: str, token: str, home: Path):
        expect(bool(ctx.synadm) and os.access(ctx.synadm, os.X_OK), f"no synadm executable at {ctx.synadm!r}")
        self.exe = ctx.synadm
        home.mkdir(parents=True, exist_ok=True)
        self.config = home / "synadm.yaml"
        # JSON is YAML; every key synadm asks for, so it never prompts.
        self.config.write_text(json.dumps({
            "user": user_id, "token": token, "protocol": "http", "base_url": hs.base_url,
            "admin_path": "/_synapse/admin", "matrix_path": "/_matrix", "timeout": 30,
            "server_discovery": "well-known", "homeserver": hs.server_name, "ssl_verify": True,
            "format": "json",
        }))
        # requests verifies against the suite's CA through its usual variable.
        self.env = {**os.environ, "HOME": str(home), "REQUESTS_CA_BUNDLE": ctx.ca_file}

    async def run(self, *args: str) -> tuple[int, str, str]:
        proc = await asyncio.create_subprocess_exec(
            self.exe, "--no-confirm", "-o", "json", "-c", str(self.config), *args,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=self.env)
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        return proc.returncode or 0, out.decode(), err.decode()

    async def json(self, *args: str) -> Any:
        """Runs synadm, which must succeed, and returns what it printed as JSON."""
        rc, out, err = await self.run(*args)
        cmd = "synadm " + " ".join(args)
        expect(rc == 0, f"{cmd} exited {rc}: {out[-400:]!r} {err[-400:]!r}")
        expect("returned status code" not in err, f"{cmd}: {err[-400:]!r}")
        try:
            return json.loads(out)
        except ValueError:
            raise Failed(f"{cmd} printed no JSON: {out[-400:]!r} {err[-400:]!r}") from None


@scenario
async def synadm_moderates_media_through_mxmedia(ctx: Context) -> None:
    """synadm, a real admin CLI for Synapse's admin API, run unchanged through nginx against
    mxmedia: it lists a user's media, quarantines and releases one item (by server and id, and
    by id alone), protects one, quarantines all of a user's media (the protected one passed by),
    deletes by id and by age and size (refused while keep_profiles is Synapse's default, as
    mxmedia cannot tell avatars), purges the remote media cache (a quarantined remote item kept
    for review); a non-admin's synadm is refused 403. mxmedia's state is checked after each."""
    hs, hs2 = ctx.hs1, ctx.hs2
    admin_id, admin_password = await ctx.register(hs, "synadm", admin=True)
    admin = await ctx.login(hs, admin_id, admin_password)
    user_id, user = await ctx.new_user(hs, "synuser")
    mxcs = [await ctx.upload(hs, user, os.urandom(3000 + i), "image/png", f"s{i}.png") for i in range(3)]
    ids = [parse_mxc(m)[1] for m in mxcs]
    home = Path(ctx.mxmedia_data_dir).parent / f"synadm-{secrets.token_hex(4)}"
    synadm = Synadm(ctx, hs, admin_id, admin, home / "admin")

    async def status(mxc: str) -> int:
        return (await ctx.request("GET", ctx.download_url(hs.base_url, mxc), token=user)).status

    async def info(server: str, media_id: str) -> Response:
        return await ctx.request("GET", f"{hs.base_url}/_synapse/admin/v1/media/{quote(server, safe='')}/{media_id}",
                                 token=admin)

    listed = await synadm.json("media", "list", "-u", user_id, "--ts")
    expect_eq(listed["total"], 3, "synadm media list: total")
    expect_eq(sorted(m["media_id"] for m in listed["media"]), sorted(ids), "synadm media list: ids")
    expect_eq(sorted(m["media_length"] for m in listed["media"]), [3000, 3001, 3002], "synadm media list: lengths")

    expect_eq(await synadm.json("media", "quarantine", "-s", hs.server_name, "-i", ids[0]), {}, "quarantine answer")
    expect_eq(await status(mxcs[0]), 404, "quarantined download")
    expect_eq((await info(hs.server_name, ids[0])).json()["media_info"]["quarantined_by"], admin_id, "quarantined_by")
    expect_eq(await synadm.json("media", "unquarantine", "-i", ids[0]), {}, "unquarantine answer")
    expect_eq(await status(mxcs[0]), 200, "released download")

    expect_eq(await synadm.json("media", "protect", ids[1]), {}, "protect answer")
    expect_eq(await synadm.json("media", "quarantine", "-u", user_id), {"num_quarantined": 2}, "user quarantine answer")
    expect_eq([await status(m) for m in mxcs], [404, 200, 404], "downloads after the user quarantine")
    listed = await synadm.json("media", "list", "-u", user_id, "--ts", "-s", "media_id")
    by_id = {m["media_id"]: m for m in listed["media"]}
    expect_eq([by_id[i]["quarantined_by"] for i in ids], [admin_id, None, admin_id], "listed quarantined_by")
    expect_eq(by_id[ids[1]]["safe_from_quarantine"], True, "listed safe_from_quarantine")

    expect_eq(await synadm.json("media", "delete", "-i", ids[2]), {"deleted_media": [ids[2]], "total": 1},
              "delete by id answer")
    expect_eq((await info(hs.server_name, ids[2])).status, 404, "deleted media info")

    big = await ctx.upload(hs, user, os.urandom(6 * 1024 * 1024), "application/octet-stream", "big.bin")
    small = await ctx.upload(hs, user, os.urandom(1000), "image/png", "small.png")
    await asyncio.sleep(0.01)
    before = str(int(time.time() * 1000))
    refused = await synadm.run("media", "delete", "--before-ts", before, "--size", "5120")
    expect(refused[0] == 0 and "M_INVALID_PARAM" in refused[1] and "keep_profiles" in refused[1],
           f"delete keeping profiles was not refused: {refused}")
    expect_eq(await status(big), 200, "big media after the refused delete")
    deleted = await synadm.json("media", "delete", "--before-ts", before, "--size", "5120", "--delete-profiles")
    # Other scenarios' uploads over 5 MiB go too (the largest upload's): by age and size, as asked.
    expect(parse_mxc(big)[1] in deleted["deleted_media"] and deleted["total"] == len(deleted["deleted_media"])
           and not {parse_mxc(small)[1], *ids} & set(deleted["deleted_media"]),
           f"delete by age and size answer: {deleted}")
    expect_eq([await status(big), await status(small), await status(mxcs[1])], [404, 200, 200],
              "downloads after delete by age and size")

    # Remote media cached by mxmedia: one of two quarantined, then the cache purged.
    _, remote_user = await ctx.new_user(hs2, "synremote")
    remote = [await ctx.upload(hs2, remote_user, os.urandom(2000 + i), "image/png", f"r{i}.png") for i in range(2)]
    for mxc in remote:
        r = await ctx.request("GET", ctx.download_url(hs.base_url, mxc), token=user)
        expect_status(r, 200)
    held = parse_mxc(remote[0])[1]
    expect_eq(await synadm.json("media", "quarantine", "-s", hs2.server_name, "-i", held), {},
              "remote quarantine answer")
    await asyncio.sleep(0.05)
    purged = await synadm.json("media", "purge", "--before-ts", str(int(time.time() * 1000)))
    expect(purged.get("deleted", 0) >= 1, f"purge deleted nothing: {purged}")
    expect_eq((await info(hs2.server_name, parse_mxc(remote[1])[1])).status, 404, "purged remote media info")
    r = await info(hs2.server_name, held)
    expect_status(r, 200)
    expect_eq(r.json()["media_info"]["media_length"], 2000, "quarantined remote media kept by the purge")

    outsider = Synadm(ctx, hs, user_id, user, home / "user")
    rc, out, err = await outsider.run("media", "list", "-u", user_id)
    expect(rc == 0 and "M_FORBIDDEN" in out and "403" in err, f"non-admin synadm not refused: {(rc, out, err)}")
    rc, out, err = await outsider.run("media", "quarantine", "-s", hs.server_name, "-i", parse_mxc(small)[1])
    expect("M_FORBIDDEN" in out and "403" in err, f"non-admin quarantine not refused: {(rc, out, err)}")
    expect_eq(await status(small), 200, "media after the refused quarantine")

async def run(ctx_path: str) -> tuple[int, int]:
    ctx = Context.load(ctx_path)
    wanted = [s for s in os.environ.get("INTEROP_SCENARIOS", "").split(",") if s]
    chosen = [s for s in SCENARIOS if not wanted or s.__name__ in wanted]
    unknown = set(wanted) - {s.__name__ for s in SCENARIOS}
    if unknown:
        print(f"unknown scenarios: {sorted(unknown)}; known: {[s.__name__ for s in SCENARIOS]}")
        return 0, 1
    passed = failed = 0
    await ctx.open()
    try:
        for fn in chosen:
            started = time.monotonic()
            try:
                await asyncio.wait_for(fn(ctx), SCENARIO_TIMEOUT_SECS)
            except Exception as e:  # noqa: BLE001 - every failure is reported, then the next runs
                failed += 1
                print(f"FAIL {fn.__name__} ({time.monotonic() - started:.1f}s): {reason_of(e)}", flush=True)
                if not isinstance(e, Failed):
                    traceback.print_exc(file=sys.stdout)
                else:
                    tb = traceback.extract_tb(e.__traceback__)
                    frames = [f for f in tb if f.filename == __file__ and f.name == fn.__name__]
                    if frames:
                        print(f"     at scenarios.py:{frames[-1].lineno}: {frames[-1].line}", flush=True)
            else:
                passed += 1
                print(f"PASS {fn.__name__} ({time.monotonic() - started:.1f}s)", flush=True)
    finally:
        await ctx.close()
    return passed, failed


def main() -> int:
    if len(sys.argv) != 3:
        print("usage: scenarios.py CONTEXT.json RESULTS_FILE", file=sys.stderr)
        return 2
    passed, failed = asyncio.run(run(sys.argv[1]))
    Path(sys.argv[2]).write_text(f"{passed} {failed}\n")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
