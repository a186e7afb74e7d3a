"""Security, proven end to end with the real `storefs` command and real mounts.

1. Secrets never leak: a whole session per HTTP provider (s3 on moto, COS, WCS, UFile, the CAS vault)
   with unique secret values, `-vv` logging, real IO, forced server faults, a wrong-credentials mount,
   `status`, `ls`, `flush`, unmount; then every output, log, runtime/cache file and the daemon's
   /proc cmdline/environ (what `ps` shows) is searched for the secrets in raw, base64, hex and URL-encoded
   form, for keys derived from them (SigV4 signing keys, CAS sign keys), and for every signature or
   token the server received.
2. Private files: with umask 022, every directory storefs creates (cache, logs, staging, blocks, vault
   state, runtime) is 0700 and every file it writes there has no group/other bits.
3. TLS: each provider runs behind an HTTPS front with a private CA. Without `ca_file` the mount is
   refused (exit 2, "certificate verification failed", names `ca_file`); with it the session of (1)
   runs over TLS.
4. allow_other: without it another user gets EACCES; with it they get in; with default_permissions the
   kernel enforces modes. Without default_permissions storefs checks nothing itself (see the test).
"""
from __future__ import annotations

import base64
import contextlib
import dataclasses
import datetime
import errno
import hashlib
import hmac
import json
import os
import re
import secrets
import shutil
import signal
import stat
import subprocess
import tempfile
import time
import traceback
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest

from storefs.store.registry import provider_module
from tests.emulators.base import Fault
from tests.fuse.harness import Env, Mount, _daemon_pid
from tests.tlsserver import Front, make_certs

MiB = 1 << 20
PROVIDERS = ["s3", "cos", "wcs", "ufile", "cas"]
BAD_ACCESS_KEY = "AKIDWRONGCREDS0000001"
UPLOAD_OP = {"s3": "PUT", "cos": "upload", "wcs": "upload", "ufile": "put"}  # a small file's upload request


def unique_secret(tag: str) -> str:
    """A secret no program could print by accident, with characters that URL-encoding changes."""
    return f"SECRETzz9q{tag}{secrets.token_hex(6)}/+{secrets.token_hex(5)}"


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_certs(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def umask022():
    old = os.umask(0o022)
    yield
    os.umask(old)


# ------------------------------------------------------------------------------------------------
# One provider behind an HTTPS front


@dataclasses.dataclass
class Site:
    kind: str
    section: dict[str, str]       # a working config section (https endpoint, ca_file)
    bad_section: dict[str, str]   # the same with wrong credentials
    bucket: str
    front: Front
    faults: object                # the FaultInjector that speaks this protocol's error shape
    secrets: list[str]
    public_ids: list[str]         # access key ids etc.: not secret, excluded from signature material
    emulator: object = None


@contextlib.contextmanager
def open_site(kind: str, request, certs) -> Iterator[Site]:
    good, bad = unique_secret("good"), unique_secret("bad")
    tuning = {"ca_file": str(certs.ca_pem), "retries": "3", "retry_base_delay": "0.02"}
    bucket = f"sec{uuid.uuid4().hex[:10]}"
    if kind == "s3":
        server = request.getfixturevalue("moto_server")
        bucket = server.create_bucket()
        # moto checks no signatures: the front refuses the wrong access key the way S3 would.
        with Front(server.endpoint, certs, deny=BAD_ACCESS_KEY) as front:
            access = f"AKIDSEC{secrets.token_hex(6).upper()}"
            section = {"type": "s3", "endpoint": front.url, "access_key": access, "secret_key": good,
                       "region": "us-east-1", **tuning}
            yield Site(kind, section, {**section, "access_key": BAD_ACCESS_KEY, "secret_key": bad}, bucket,
                       front, front.faults, [good, bad], [access, BAD_ACCESS_KEY])
        return
    import importlib
    module, cls_name, key_name, id_name = {
        "cos": ("tests.emulators.cos", "CosEmulator", "secret_key", "secret_id"),
        "wcs": ("tests.emulators.wcs", "WcsEmulator", "secret_key", "access_key"),
        "ufile": ("tests.emulators.ufile", "UfileEmulator", "private_key", "public_key"),
        "cas": ("tests.emulators.cas", "CasEmulator", "secret_key", "secret_id"),
    }[kind]
    extra = {"job_delay": 0.0} if kind == "cas" else {}
    emulator = getattr(importlib.import_module(module), cls_name)(**{key_name: good}, **extra)
    with emulator, Front(emulator.url, certs) as front:
        emulator.create_bucket(bucket)
        section = {k: str(v) for k, v in emulator.config().items()}
        if kind == "wcs":
            section.update(put_url=front.url, mgr_url=front.url, get_url=front.url + "/dl/{bucket}")
        else:
            section["endpoint"] = front.url
        section.update(tuning)
        public = [section[id_name]] + ([section["appid"]] if "appid" in section else [])
        yield Site(kind, section, {**section, key_name: bad}, bucket, front, emulator.faults, [good, bad],
                   public, emulator)


# ------------------------------------------------------------------------------------------------
# What must never be found


def encoded_forms(secret: str) -> set[str]:
    raw = secret.encode()
    forms = {secret, quote(secret, safe=""), quote_plus(secret), raw.hex(), raw.hex().upper(),
             base64.b64encode(raw).decode().rstrip("="), base64.urlsafe_b64encode(raw).decode().rstrip("="),
             json.dumps(secret)[1:-1], repr(secret)[1:-1]}
    return {f for f in forms if len(f) >= 12}


def sigv4_keys(secret: str, region: str = "us-east-1", service: str = "s3") -> set[str]:
    """SigV4's derived keys (kDate … kSigning) for the dates a session can sign with."""
    out = set()
    today = datetime.datetime.now(datetime.UTC).date()
    for day in (today - datetime.timedelta(days=1), today, today + datetime.timedelta(days=1)):
        key = ("AWS4" + secret).encode()
        for part in (day.strftime("%Y%m%d"), region, service, "aws4_request"):
            key = hmac.new(key, part.encode(), hashlib.sha256).digest()
            out |= {key.hex(), base64.b64encode(key).decode().rstrip("=")}
    return out


_SIG_RE = re.compile(r"[A-Za-z0-9+/_-]{20,}")


def seen_material(site: Site) -> set[str]:
    """Signatures, tokens and derived keys the server received: bearer material for a while."""
    out: set[str] = set()
    for seen in site.front.seen:
        for value in (seen.authorization, *seen.secret_params):
            for piece in _SIG_RE.findall(value):
                # Material has digits or mixed case (base64 and hex both; a base64 signature can
                # come out without a digit: the positive control below failed once on one).
                looks_random = any(c.isdigit() for c in piece) or (piece.lower() != piece != piece.upper())
                if looks_random and not any(p in piece for p in site.public_ids) \
                        and not piece.lower().startswith(("x-amz-", "host", "content-")):
                    out.add(piece)
            key_time = re.search(r"q-key-time=([0-9;]+)", value)
            if key_time:  # CAS: SignKey = HMAC-SHA1(secret, KeyTime)
                for secret in site.secrets:
                    out.add(hmac.new(secret.encode(), key_time.group(1).encode(), hashlib.sha1).hexdigest())
    return out


def forbidden(site: Site) -> dict[str, str]:
    """needle -> what it is (for the failure message)."""
    needles: dict[str, str] = {}
    for n, secret in enumerate(site.secrets):
        for form in encoded_forms(secret):
            needles[form] = f"secret #{n} ({'good' if n == 0 else 'wrong'}) as {form[:12]}…"
        if site.kind == "s3":
            for key in sigv4_keys(secret):
                needles[key] = f"SigV4 signing key of secret #{n}"
    for piece in seen_material(site):
        needles.setdefault(piece, f"signature/token sent to the server: {piece[:16]}…")
    return needles


def scan(texts: dict[str, bytes], needles: dict[str, str]) -> list[str]:
    found = []
    for where, blob in texts.items():
        for needle, what in needles.items():
            if needle.encode() in blob:
                found.append(f"{what} in {where}")
    return found


def files_under(root: Path, skip: set[Path]) -> dict[str, bytes]:
    out = {}
    for path in sorted(root.rglob("*")):
        if path in skip or any(parent in skip for parent in path.parents):
            continue
        if path.is_file() and not path.is_symlink():
            with contextlib.suppress(OSError):
                out[str(path.relative_to(root))] = path.read_bytes()
    return out


def private_violations(root: Path) -> list[str]:
    """Directories under root (itself included) that are not 0700, files with group/other bits."""
    bad = []
    if not root.exists():
        return bad
    for path in [root, *sorted(root.rglob("*"))]:
        try:
            st = path.lstat()
        except FileNotFoundError:
            continue  # removed while we looked (a temporary file of the daemon)
        mode = stat.S_IMODE(st.st_mode)
        if stat.S_ISDIR(st.st_mode) and mode != 0o700:
            bad.append(f"dir {path} is {mode:04o}")
        elif stat.S_ISREG(st.st_mode) and mode & 0o077:
            bad.append(f"file {path} is {mode:04o}")
    return bad


def proc_view(pid: int) -> dict[str, bytes]:
    """What `ps` and /proc show anyone about the daemon."""
    out = {}
    for name in ("cmdline", "environ"):
        with contextlib.suppress(OSError):
            out[f"/proc/{pid}/{name}"] = Path(f"/proc/{pid}/{name}").read_bytes()
    out["ps -ww -eo pid,args"] = subprocess.run(["ps", "-ww", "-eo", "pid,args"], capture_output=True, check=False).stdout
    return out


# ------------------------------------------------------------------------------------------------
# A recorded session


class Session:
    def __init__(self, env: Env) -> None:
        self.env = env
        self.outputs: dict[str, bytes] = {}
        self.proc: dict[str, bytes] = {}
        self.modes: list[str] = []

    def run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        result = self.env.run(*args, timeout=timeout)
        self.outputs[f"`storefs {' '.join(args)}` (#{len(self.outputs)})"] = (
            f"exit {result.returncode}\n{result.stdout}\n{result.stderr}").encode()
        return result

    def mount(self, spec: str, name: str, *options: str) -> Mount:
        mountpoint = self.env.tmp / name
        mountpoint.mkdir()
        args = ["mount", spec, str(mountpoint), "-vv"]
        for opt in options:
            args += ["-o", opt]
        result = self.run(*args, timeout=90)
        if result.returncode != 0:
            kill_daemons_of(mountpoint)
            raise AssertionError(f"mount failed ({result.returncode}): {result.stderr}\n{self.env.log_tail()}")
        mount = Mount(self.env, mountpoint, _daemon_pid(self.env.tmp / "run" / "storefs", mountpoint))
        self.env.mounts.append(mount)
        self.proc.update(proc_view(mount.pid))
        return mount

    def unmount(self, mount: Mount) -> None:
        result = self.run("unmount", str(mount.path), timeout=120)
        assert result.returncode == 0, result.stderr
        mount.closed = True

    def check_modes(self) -> None:
        self.modes += private_violations(self.env.tmp / "cache" / "storefs")
        self.modes += private_violations(self.env.tmp / "run" / "storefs")


def kill_daemons_of(mountpoint: Path) -> None:
    """A mount that never became ready may leave its daemon behind: end it by PID (its command line
    names our own temporary mount point, so it is one we started) and clear the mount point."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            args = (entry / "cmdline").read_bytes().split(b"\0")
            if b"--foreground" in args and str(mountpoint).encode() in args:
                os.kill(int(entry.name), signal.SIGKILL)
    subprocess.run(["fusermount", "-uz", str(mountpoint)], capture_output=True, check=False)


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def try_errno(fn) -> int:
    try:
        fn()
    except OSError as exc:
        return exc.errno or -1
    return 0


def bucket_session(site: Site, session: Session) -> None:
    mount = session.mount(f"r:{site.bucket}", "mnt", "write_back=0.2")
    root = mount.path
    small = b"hello storefs " * 100
    big = os.urandom(17 * MiB)  # past single_put_max: the multipart path signs differently
    (root / "small.txt").write_bytes(small)
    (root / "d").mkdir()
    (root / "d" / "big.bin").write_bytes(big)
    with open(root / "synced.txt", "wb") as f:
        f.write(b"fsync uploads now")
        os.fsync(f.fileno())  # an upload inside a syscall
    os.chmod(root / "small.txt", 0o640)
    os.rename(root / "small.txt", root / "d" / "small.txt")
    os.symlink("d/small.txt", root / "link")
    assert session.run("flush", str(root), timeout=60).returncode == 0
    assert (root / "d" / "small.txt").read_bytes() == small
    assert hashlib.sha256((root / "d" / "big.bin").read_bytes()).digest() == hashlib.sha256(big).digest()

    # Server faults: retried ones, then refusals the log reports with the server's answer.
    site.faults.add(Fault(op="*", count=2, status=503))
    assert try_errno(lambda: os.stat(root / "nosuch-1")) == errno.ENOENT
    site.faults.add(Fault(op="*", count=1, status=403))
    try_errno(lambda: os.stat(root / "nosuch-2"))
    site.faults.add(Fault(op="*", count=1, status=400))
    try_errno(lambda: os.listdir(root / "d2-not-cached"))
    # An upload that fails past its retries: `storefs status` shows its last error.
    with open(root / "late.txt", "wb") as f:
        f.write(b"uploaded after a failure")
        # Every try of the upload request fails (only that request, so background reads cannot take
        # the faults) until the failure has been seen: with a few faults it showed in `storefs status`
        # for under a second, which a loaded machine's polling missed.
        upload_fault = site.faults.add(Fault(op=UPLOAD_OP[site.kind], count=10_000, status=500))

    def failed_once():
        result = session.run("status", "--json", str(root))
        report = json.loads(result.stdout or "[]")
        return any(item.get("attempts") for r in report for item in r.get("pending", []))
    wait_for(failed_once, 30, "an upload failure in storefs status")
    session.run("status", str(root))
    session.run("status")
    upload_fault.count = 0   # the next try goes through; flush below waits for it
    session.check_modes()
    assert session.run("flush", str(root), timeout=60).returncode == 0
    assert session.run("ls", f"r:{site.bucket}").returncode == 0
    assert "big.bin" in session.run("ls", "-l", f"r:{site.bucket}/d").stdout
    session.run("ls", "r:")
    session.unmount(mount)


def vault_session(site: Site, session: Session) -> None:
    from storefs.fs.vault.names import encode_mt2
    from storefs.vaults import cas
    # Archives uploaded behind the mount's back, and a finished inventory for the mount to adopt.
    direct = {k: v for k, v in site.section.items() if k != "type"}
    direct["endpoint"] = site.emulator.url
    provider = cas.open_provider("direct", direct)
    try:
        vault = provider.vault(site.bucket)
        data = os.urandom(3 * MiB + 5)
        vault.upload_archive(data, len(data), encode_mt2("docs/a.bin", 1_700_000_000))
        vault.upload_archive(b"second", 6, encode_mt2("docs/b.txt", 1_700_000_000))
        vault.start_inventory()
    finally:
        provider.close()
    site.emulator.clock.advance(6 * 3600)
    mount = session.mount(f"r:{site.bucket}", "mnt", "vault_writes", "vault_wait=20")
    root = mount.path
    assert sorted(os.listdir(root / "docs")) == ["a.bin", "b.txt"]
    assert (root / "docs" / "a.bin").read_bytes() == data   # a retrieval job, then a download
    (root / "docs" / "new.bin").write_bytes(os.urandom(2 * MiB + 3))  # uploaded as an archive at close
    site.faults.add(Fault(op="*", count=2, status=503))
    assert (root / "docs" / "b.txt").read_bytes() == b"second"
    site.faults.add(Fault(op="*", count=1, status=403))
    session.run("jobs", f"r:{site.bucket}")
    session.run("jobs", f"r:{site.bucket}")
    session.run("restore", str(root / "docs"), "--wait", "--timeout", "20")
    session.run("vault", "refresh", f"r:{site.bucket}")
    session.run("status")
    session.run("ls", f"r:{site.bucket}")
    session.check_modes()
    session.unmount(mount)


@pytest.mark.parametrize("kind", PROVIDERS)
def test_session_leaks_no_secret_and_keeps_files_private(kind, request, tmp_path, certs, umask022):
    with open_site(kind, request, certs) as site:
        env = Env(tmp_path, {"r": site.section, "bad": site.bad_section})
        session = Session(env)
        try:
            # Wrong credentials: refused with exit 2 before anything is mounted.
            (tmp_path / "mnt-bad").mkdir()
            refused = session.run("mount", f"bad:{site.bucket}", str(tmp_path / "mnt-bad"), "-vv", timeout=90)
            assert refused.returncode == 2, refused.stderr
            assert session.run("ls", f"bad:{site.bucket}").returncode == 2
            (vault_session if kind == "cas" else bucket_session)(site, session)
        finally:
            env.close()
            kill_daemons_of(tmp_path / "mnt")

        # The same failures in-process: exception text, repr and traceback.
        module = provider_module(kind)
        texts: dict[str, bytes] = {}
        for name, section in (("good", site.section), ("bad", site.bad_section)):
            provider = module.open_provider(name, {k: v for k, v in section.items() if k != "type"})
            texts[f"repr(provider {name})"] = repr(provider).encode()
            try:
                provider.check(site.bucket)
            except Exception as exc:  # noqa: BLE001 - whatever it is, its text must be clean
                texts[f"exception ({name})"] = "".join(traceback.format_exception(exc)).encode() + repr(exc).encode()
            finally:
                provider.close()
        assert "exception (bad)" in texts, "wrong credentials were not refused"

        assert len(site.front.seen) > 10 and site.front.tls, "the session did not run over TLS"
        assert site.faults.fired, "no server fault was injected"
        logs = sorted((tmp_path / "cache" / "storefs" / "logs").glob("*.log"))
        assert logs and any(b" DEBUG " in p.read_bytes() for p in logs), "no debug log was written"
        needles = forbidden(site)
        # Positive controls: the search does find the secret where it must be (the config file), and a
        # signature the server saw when it is written down.
        assert scan({"config": (tmp_path / "storefs.conf").read_bytes()}, needles)
        signed = next(s.authorization for s in site.front.seen if s.authorization)
        assert scan({"a header": f"Authorization: {signed}".encode()}, needles)
        everything = {**session.outputs, **session.proc, **texts,
                      **files_under(tmp_path, {tmp_path / "storefs.conf"})}
        leaks = scan(everything, needles)
        session.check_modes()
        modes = sorted(set(session.modes))
        assert not leaks and not modes, "\n".join(leaks + modes)


# ------------------------------------------------------------------------------------------------
# TLS: verification is on unless a CA is given


@pytest.mark.parametrize("kind", PROVIDERS)
def test_tls_refused_without_ca_file(kind, request, tmp_path, certs):
    with open_site(kind, request, certs) as site:
        section = {k: v for k, v in site.section.items() if k != "ca_file"}
        other = make_certs(tmp_path / "other-ca", "another")
        env = Env(tmp_path, {"r": section, "wrongca": {**site.section, "ca_file": str(other.ca_pem)}})
        try:
            (tmp_path / "mnt").mkdir()
            names = ["r"] + (["wrongca"] if kind == "s3" else [])
            for name in names:
                result = env.run("mount", f"{name}:{site.bucket}", str(tmp_path / "mnt"), timeout=90)
                assert result.returncode == 2, (name, result.returncode, result.stderr)
                assert "certificate verification failed" in result.stderr, result.stderr
                assert "ca_file" in result.stderr, result.stderr
            listing = env.run("jobs" if kind == "cas" else "ls", f"r:{site.bucket}")
            assert listing.returncode == 2 and "ca_file" in listing.stderr, listing.stderr
            assert not os.listdir(tmp_path / "mnt")
            # The client hung up in the handshake: no request ever reached the server.
            assert site.front.seen == []
        finally:
            env.close()
            kill_daemons_of(tmp_path / "mnt")


# ------------------------------------------------------------------------------------------------
# allow_other and default_permissions

NOBODY = 65534
_PROBE = r"""
import errno, json, os, sys
root = sys.argv[1]
def attempt(fn):
    try:
        fn()
        return "ok"
    except OSError as exc:
        return errno.errorcode.get(exc.errno, str(exc.errno))
def write(path):
    with open(path, "wb") as f:
        f.write(b"x")
out = {
    "stat_root": attempt(lambda: os.stat(root)),
    "list_root": attempt(lambda: os.listdir(root)),
    "read_public": attempt(lambda: open(os.path.join(root, "public.txt"), "rb").read()),
    "read_private": attempt(lambda: open(os.path.join(root, "private.txt"), "rb").read()),
    "write_public": attempt(lambda: open(os.path.join(root, "public.txt"), "ab").write(b"y")),
    "create_in_rootdir": attempt(lambda: write(os.path.join(root, "dir", "by-nobody.txt"))),
    "create_in_opendir": attempt(lambda: write(os.path.join(root, "open", "by-nobody.txt"))),
}
print(json.dumps(out))
"""


def as_nobody(root: Path) -> dict[str, str]:
    result = subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                             "/usr/bin/python3", "-c", _PROBE, str(root)],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture
def shared_dir():
    """A directory other users can traverse (pytest's tmp_path is 0700 root)."""
    if not shutil.which("setpriv") or not os.path.exists("/usr/bin/python3"):
        pytest.fail("needs setpriv (Debian util-linux, installed by scripts/install.sh test) and /usr/bin/python3")
    path = Path(tempfile.mkdtemp(prefix="storefs-allow-other-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_allow_other_only_when_asked(tmp_path, shared_dir, umask022):
    buckets = tmp_path / "buckets"
    (buckets / "b").mkdir(parents=True)
    env = Env(tmp_path, {"r": {"type": "local", "root": str(buckets)}})
    try:
        mountpoint = shared_dir / "mnt"
        own = env.mount("r:b", mountpoint, options=("write_back=0",))
        (mountpoint / "public.txt").write_bytes(b"public")
        (mountpoint / "private.txt").write_bytes(b"private")
        os.chmod(mountpoint / "private.txt", 0o600)
        os.chmod(mountpoint / "public.txt", 0o644)
        (mountpoint / "dir").mkdir(mode=0o755)
        (mountpoint / "open").mkdir()
        os.chmod(mountpoint / "open", 0o777)
        assert as_nobody(mountpoint)["stat_root"] == "EACCES"      # the kernel keeps others out
        assert as_nobody(mountpoint)["list_root"] == "EACCES"
        own.close()

        env.mount("r:b", mountpoint, options=("allow_other,default_permissions",))
        enforced = as_nobody(mountpoint)
        assert enforced == {"stat_root": "ok", "list_root": "ok", "read_public": "ok", "read_private": "EACCES",
                            "write_public": "EACCES", "create_in_rootdir": "EACCES",
                            "create_in_opendir": "ok"}, enforced
        created = mountpoint / "open" / "by-nobody.txt"
        assert (created.stat().st_uid, created.stat().st_gid) == (NOBODY, NOBODY)  # the caller owns it
        env.mounts.pop().close()

        # allow_other alone: storefs checks no modes itself, so it implies default_permissions (SEMANTICS.md
        # "Permissions"): otherwise every user could read and write every file.
        env.mount("r:b", mountpoint, options=("allow_other",))
        alone = as_nobody(mountpoint)
        assert alone == enforced, alone
    finally:
        env.close()
        kill_daemons_of(shared_dir / "mnt")


# ------------------------------------------------------------------------------------------------
# The config file (tests/unit/test_config.py covers mode 0644 with an s3 secret; these are the gaps)

SECRET_SECTIONS = {
    "s3": {"endpoint": "http://127.0.0.1:9", "access_key": "AKIDEXAMPLE", "session_token": "{secret}",
           "secret_key": "plain-secret-1"},
    "cos": {"appid": "1250000000", "secret_id": "AKIDEXAMPLE", "secret_key": "{secret}", "region": "sh"},
    "ufile": {"public_key": "PUBEXAMPLE", "private_key": "{secret}"},
    "cas": {"appid": "1250000000", "secret_id": "AKIDEXAMPLE", "secret_key": "{secret}", "region": "ap-chengdu"},
}


@pytest.mark.parametrize("kind", sorted(SECRET_SECTIONS))
def test_config_with_secrets_readable_by_others_is_refused(kind, tmp_path):
    from storefs.config import Config
    from storefs.errors import ConfigError
    secret = unique_secret("cfg")
    section = {"type": kind, **{k: v.replace("{secret}", secret) for k, v in SECRET_SECTIONS[kind].items()}}
    env = Env(tmp_path, {"r": section})
    needles = {f: "secret" for f in encoded_forms(secret)}
    for mode in (0o640, 0o604, 0o620, 0o660, 0o700 | 0o004):
        env.config.chmod(mode)
        with pytest.raises(ConfigError) as info:
            Config.load(env.config)
        assert "chmod 600" in str(info.value) and f"{mode:04o}" in str(info.value)
        assert not scan({"message": str(info.value).encode()}, needles)
    env.config.chmod(0o400)   # private and read-only: fine
    assert Config.load(env.config).remote("r").type == kind
    # Through the command (no network: the refusal comes first), once per provider type.
    env.config.chmod(0o640)
    result = env.run("ls", "r:b")
    assert result.returncode == 2 and "chmod 600" in result.stderr, result.stderr
    assert not scan({"output": (result.stdout + result.stderr).encode()}, needles)
