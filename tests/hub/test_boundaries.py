"""The hub is its own room: the core and the PC plugins never import agentd.hub; the
schema the code uses is the one the migrations make; the admin commands work."""

from __future__ import annotations

import ast
import asyncio
import json
import subprocess
import sys
from pathlib import Path

import sqlalchemy as sa

REPO = Path(__file__).resolve().parents[2]


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in ("import_module", "__import__"):
            names.update(a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str))
    return names


def test_core_and_pc_plugins_never_import_the_hub():
    files = [p for p in (REPO / "agentd").rglob("*.py") if "hub" not in p.relative_to(REPO / "agentd").parts]
    files += list((REPO / "plugins").rglob("*.py"))
    assert len(files) > 50
    offenders = {str(p.relative_to(REPO)): sorted(m for m in imported_modules(p) if m == "agentd.hub" or m.startswith("agentd.hub."))
                 for p in files}
    assert {k: v for k, v in offenders.items() if v} == {}
    # and at run time: a PC's daemon-side modules load without the hub's server code
    code = "import sys, agentd.daemon, agentd.delivery, agentd_plugins.hub; print([m for m in sys.modules if m.startswith('agentd.hub')])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_migrations_make_the_schema_the_code_uses(tmp_path):
    from agentd.hub.db import make_engine, metadata
    from agentd.hub.migrate import upgrade

    async def columns():
        engine = make_engine(f"sqlite:///{tmp_path / 'schema.sqlite'}")
        await upgrade(engine)
        await upgrade(engine)  # twice: a second start changes nothing
        async with engine.connect() as conn:
            found = await conn.run_sync(lambda c: {t: {col["name"] for col in sa.inspect(c).get_columns(t)} for t in sa.inspect(c).get_table_names()})
        await engine.dispose()
        return found

    found = asyncio.run(columns())
    wanted = {t.name: {c.name for c in t.columns} for t in metadata.sorted_tables}
    assert {k: v for k, v in found.items() if k != "alembic_version"} == wanted


def test_admin_commands(hub):
    key = hub.admin("enroll-key", "create", "--note", "pilot floor 3")
    assert key.returncode == 0, key.stderr
    assert key.stdout.startswith("agentd-ek.") and "not shown again" in key.stderr
    key_id = key.stdout.split(".")[1]
    added = hub.admin("user", "add", "maria", "--password-stdin", input="correct horse battery\n")
    assert added.returncode == 0, added.stderr
    listing = hub.admin("enroll-key", "list", "--json")
    keys = json.loads(listing.stdout)
    assert [k["id"] for k in keys] == [key_id] and key.stdout.split(".")[2].strip() not in listing.stdout
    revoked = hub.admin("enroll-key", "revoke", key_id)
    assert revoked.returncode == 0 and "revoked" in revoked.stdout
    short = hub.admin("user", "add", "bob", "--password-stdin", input="short\n")
    assert short.returncode == 2 and short.stderr.count("\n") == 1 and "at least 8" in short.stderr
